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
//! # Semantics in short
//!
//! - Handles are cheap shared clones; `close`/`unmap` releases (once; a
//!   second release is `EINVAL`). Closing a parent first is allowed: the
//!   children then fail with `ENOTCONN` and their memory is `PROT_NONE`
//!   (touching it raises SIGSEGV) until they are released.
//! - Memory past the file's size as of `at` reads as zeros; blocks that
//!   head no longer has (the file shrank after `at`) come from `@<at>`,
//!   also when the kernel's SIGBUS is the first to say so (module `sigbus`).
//! - `Conn::resync(at2)` moves forward only; going back, or a failure
//!   half-way, takes the Conn down. Do not read a Conn's memory while it
//!   resyncs: blocks switch to `at2` one by one.
//! - A forked child is detached: its inherited handles answer `ENOTCONN`,
//!   the parent's links are never written by it, and its copy of every
//!   Mapping stays readable, frozen at the Conn's `at` (re-mapped from
//!   `@<at>`; see module `fork`). Memory that faulted in the parent faults there.
//!
//! Modules: [`conn`] (design, invariants, locking order, pinner),
//! [`fileh`] (where each block's memory comes from), [`mapping`],
//! `watchlink` (the head/watch client), `fork`, `sigbus` (private).

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
