//! libwcfs — the client half of WCFS.
//!
//! This crate will hold the client library of the isolation protocol (join a
//! wcfsd, open a connection as of a transaction, mmap ZBigFiles that show the
//! database as of that transaction) behind a C ABI. For now it only re-exports
//! the ZODB access layer that the daemon and the tests share.

pub use zodb;

/// The library version.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
