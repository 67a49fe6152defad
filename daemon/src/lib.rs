//! wcfsd as a library: the parts of the daemon, so that tests and benches
//! can drive them directly.
//!
//! - [`zdata`]: ZODB side — change tracking of served files and history.
//! - [`fs`]: FUSE side — the filesystem tree, reads, cache invalidation.

pub mod fs;
pub mod zdata;
