//! libwcfs — the client half of WCFS.
//!
//! An application joins the wcfsd serving a database (`Wcfs::join`, or
//! `Wcfs::attach` to a known mountpoint), opens a view of the database as of
//! its transaction (`Wcfs::connect(at)` → `Conn`), opens ZBigFiles under it
//! (`Conn::open(oid)` → `FileH`) and maps ranges of their blocks into memory
//! (`FileH::mmap` → `Mapping`). The memory always shows the file as of
//! `Conn::at()`, while sharing the one page cache of `head/bigfile/<oid>`
//! with every other process: when the daemon tells the Conn's pinner thread
//! that a block changed after `at`, the pinner re-maps that single block from
//! the frozen `@<rev>/bigfile/<oid>` view (SPEC §6–§7).
//!
//! The C ABI over this API lives in `ffi` (header `include/wcfs.h`).
//!
//! (Design, invariants and locking order: see the module docs of `conn`.)

pub mod conn;
pub mod error;
pub mod ffi;
pub mod fileh;
mod fork;
pub mod mapping;
mod sigbus;
mod watchlink;
pub mod wcfs;

pub use conn::Conn;
pub use error::{Error, Result};
pub use fileh::FileH;
pub use mapping::Mapping;
pub use wcfs::Wcfs;
pub use zodb;
pub use zodb::{Oid, Tid};

/// The library version.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
