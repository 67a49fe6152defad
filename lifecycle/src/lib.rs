//! Where the wcfsd serving a zurl lives, and how to start, check and stop it.
//!
//! Shared by the client library (`wcfs_join`) and by `wcfsd serve|status|stop`,
//! so that both agree on the one place a zurl is served: the mountpoint
//! `/dev/shm/wcfs/<sha1 hex of the zurl>` (SPEC §7), its parent created with
//! mode 1777 so that every user can join.

use std::path::PathBuf;

/// The directory under which joined daemons are mounted.
pub const MOUNT_ROOT: &str = "/dev/shm/wcfs";

/// The mountpoint at which the daemon serving `zurl` is expected.
pub fn mountpoint_for(zurl: &str) -> PathBuf {
    let hex = sha1_smol::Sha1::from(zurl.as_bytes()).digest().to_string();
    PathBuf::from(MOUNT_ROOT).join(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoint_is_sha1_of_zurl() {
        // sha1("abc") is the FIPS 180 test vector.
        assert_eq!(
            mountpoint_for("abc"),
            PathBuf::from("/dev/shm/wcfs/a9993e364706816aba3e25717850c26c9cd0d89d")
        );
    }
}
