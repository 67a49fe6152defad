//! `FileH`: one ZBigFile opened under a Conn.

use crate::{Mapping, Oid, Result};

/// A file handle. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct FileH {}

impl FileH {
    pub fn oid(&self) -> Oid {
        todo!("libwcfs: FileH::oid")
    }

    pub fn blksize(&self) -> usize {
        todo!("libwcfs: FileH::blksize")
    }

    /// Maps blocks `[blk_start, blk_start + blk_len)` read-only.
    pub fn mmap(&self, _blk_start: i64, _blk_len: i64) -> Result<Mapping> {
        todo!("libwcfs: FileH::mmap")
    }

    pub fn close(&self) -> Result<()> {
        todo!("libwcfs: FileH::close")
    }
}
