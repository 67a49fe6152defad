//! `Mapping`: a range of a FileH's blocks in memory, as of the Conn's `at`.

use crate::Result;

/// A mapping. Cheap to clone (shared handle); `unmap` releases it.
#[derive(Clone)]
pub struct Mapping {}

impl Mapping {
    pub fn mem_start(&self) -> *const u8 {
        todo!("libwcfs: Mapping::mem_start")
    }

    pub fn mem_stop(&self) -> *const u8 {
        todo!("libwcfs: Mapping::mem_stop")
    }

    pub fn blk_start(&self) -> i64 {
        todo!("libwcfs: Mapping::blk_start")
    }

    /// Re-establishes the base mapping (head, or the `@<rev>` the block is
    /// pinned to) of block `blk`.
    pub fn remmap_blk(&self, _blk: i64) -> Result<()> {
        todo!("libwcfs: Mapping::remmap_blk")
    }

    pub fn unmap(&self) -> Result<()> {
        todo!("libwcfs: Mapping::unmap")
    }
}
