//! Unmounting our own mount, and only ours.
//!
//! A mount point is a name, and names are reused. Once someone else has
//! unmounted us (`fusermount3 -u`, upstream's test teardown, an admin), a
//! daemon started right after may already be mounted at the same path —
//! upstream's `test_join_after_crash` does exactly that. An unmount by path
//! from us after that moment would take down the newer daemon's mount. So:
//!
//! - every unmount we do goes through [`OwnMount`], which first checks that
//!   the path still leads to our mount: that our FUSE connection is still
//!   alive (a plain unmount ends it before `umount` returns, so before
//!   anyone can mount again), and that the path is on the device our
//!   mount got (after a lazy unmount the connection may live on while the
//!   path already shows another mount; the device number of a live mount
//!   is not reused — that of a dead one is, at once);
//! - fuser's own unmount when its mount handle is dropped, which it does by
//!   path even after the kernel has ended the session, is never let run
//!   (see `serve`);
//! - once the session has ended, the daemon is stopping, and the autoexit
//!   and signal threads do not unmount any more.
//!
//! The check and the unmount are two steps; a newer daemon that mounts in
//! the microseconds between them is not covered. An `O_PATH` descriptor on
//! our root would close that gap for `umount2`, but holding it would make
//! every plain unmount from outside fail with EBUSY.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Our mount: its path, the device it got, and our FUSE connection.
#[derive(Clone, Debug)]
pub(crate) struct OwnMount {
    path: PathBuf,
    dev: (u32, u32),
    /// A duplicate of our `/dev/fuse` descriptor, to ask whether the
    /// connection is still alive.
    conn: Arc<OwnedFd>,
}

impl OwnMount {
    /// Right after the mount: whatever `path` shows now is ours, served
    /// through `conn`.
    pub(crate) fn new(path: &Path, conn: OwnedFd) -> io::Result<OwnMount> {
        Ok(OwnMount {
            path: path.to_path_buf(),
            dev: device(path)?,
            conn: Arc::new(conn),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still shows our mount.
    pub(crate) fn is_ours(&self) -> bool {
        connected(&self.conn) && device(&self.path).ok() == Some(self.dev)
    }

    /// Plain unmount, refused (EBUSY) while the mount is in use. Ok(false):
    /// not ours any more — someone else unmounted us; nothing done.
    pub(crate) fn unmount(&self) -> io::Result<bool> {
        self.umount(false)
    }

    /// Lazy unmount (detach): for when the plain one was refused and we
    /// were asked to stop.
    pub(crate) fn detach(&self) -> io::Result<bool> {
        self.umount(true)
    }

    fn umount(&self, lazy: bool) -> io::Result<bool> {
        if !self.is_ours() {
            return Ok(false);
        }
        let flags = if lazy {
            nix::mount::MntFlags::MNT_DETACH
        } else {
            nix::mount::MntFlags::empty()
        };
        match nix::mount::umount2(&self.path, flags) {
            Ok(()) => Ok(true),
            // Not root: through the setuid helper, which is not lazy
            // without -z either.
            Err(nix::errno::Errno::EPERM) => {
                let mut cmd = Command::new("fusermount3");
                cmd.arg(if lazy { "-uzq" } else { "-uq" }).arg(&self.path);
                let st = cmd.status()?;
                if st.success() {
                    Ok(true)
                } else {
                    Err(io::Error::other(format!("fusermount3 -u: {st}")))
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a FUSE connection is alive: the kernel marks the device
/// descriptor of an ended (unmounted or aborted) connection with POLLERR.
fn connected(conn: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(conn.as_fd(), PollFlags::empty())];
    loop {
        return match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => true,
            Ok(_) => !fds[0].revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
            }),
            Err(nix::errno::Errno::EINTR) => continue,
            // Cannot tell: say no, so that nothing is unmounted blindly.
            Err(_) => false,
        };
    }
}

/// The device `path` is on, without asking any FUSE server for attributes
/// (`AT_STATX_DONT_SYNC`): the check must not wait for our own request
/// loop, which may be busy or gone.
fn device(path: &Path) -> io::Result<(u32, u32)> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: cpath is a NUL-terminated string and stx a valid, writable
    // statx that outlives the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            cpath.as_ptr(),
            libc::AT_STATX_DONT_SYNC | libc::AT_NO_AUTOMOUNT,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stx.stx_dev_major, stx.stx_dev_minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tells_mounts_apart() {
        // /proc is a mount of its own in every Linux we run on.
        assert_ne!(
            device(Path::new("/")).unwrap(),
            device(Path::new("/proc")).unwrap()
        );
        assert_eq!(
            device(Path::new("/proc")).unwrap(),
            device(Path::new("/proc/self")).unwrap()
        );
        assert!(device(Path::new("/nonexistent/wcfs")).is_err());
    }

    #[test]
    fn not_ours_is_left_alone() {
        // A live "connection": a pipe's write end polls with no events
        // while its reader is open; with the reader gone it shows POLLERR,
        // as a dead /dev/fuse does.
        let (r, w) = nix::unistd::pipe().unwrap();
        let m = OwnMount::new(Path::new("/proc"), w).unwrap();
        assert!(m.is_ours());
        let other_dev = OwnMount {
            dev: device(Path::new("/")).unwrap(),
            ..m.clone()
        };
        assert!(!other_dev.is_ours());
        // Not ours: nothing is unmounted, and that is no error.
        assert!(!other_dev.unmount().unwrap());
        drop(r);
        assert!(!m.is_ours(), "a dead connection is not ours");
        assert!(!m.unmount().unwrap());
    }
}
