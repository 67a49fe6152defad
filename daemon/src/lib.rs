//! wcfsd as a library: the parts of the daemon, so that tests and benches
//! can drive them directly.
//!
//! - [`zdata`]: ZODB side — change tracking of served files and history.
//! - [`fs`]: FUSE side — the filesystem tree, reads, cache invalidation.
//! - `isolation`: the isolation protocol of `head/watch` (links, watches,
//!   pins, killing faulty clients).
//! - [`cli`]: the command line; [`log`]: timestamped logging on stderr.

pub mod cli;
pub mod fs;
mod isolation;

/// The head/watch line parsers, public for the fuzz targets only.
#[doc(hidden)]
pub mod protocol {
    pub use crate::isolation::{parse_frame, parse_request, Request};
}
pub mod log;
pub mod zdata;
