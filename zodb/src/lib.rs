//! Read-only access to ZODB data as wendelin.core stores it.
//!
//! This crate is the layer below the WCFS daemon. It knows nothing about
//! FUSE; its job is to read what Python's ZODB wrote, exactly as Python would
//! read it, and to refuse (with an error that says why) anything it cannot
//! read exactly.
//!
//! The layers, bottom up:
//!
//! - [`types`]: `Tid` and `Oid`, their 16-hex-digit text form and the time a
//!   tid encodes.
//! - [`storage`]: the [`storage::Storage`] trait (load an object as of a tid,
//!   last committed tid, watch for new commits) and its drivers, chosen by
//!   [`zurl::open`]: FileStorage (`data.fs`) and ZEO (`zeo://`).
//! - [`pickle`]: a decoder for the pickle byte code written by Python 2 and 3,
//!   built to survive hostile input (no panics, bounded allocation and depth).
//! - [`serialize`]: ZODB's record format on top of pickles: class
//!   descriptions and persistent references in all their historical forms.
//! - [`btree`]: `LOBTree`/`IOBTree` state decoding and lookups that report
//!   the path they took, which change tracking needs.
//! - [`bigfile`]: `ZBigFile`, `ZBlk0`, `ZBlk1`, `ZData`: block loading with
//!   everything the daemon needs to know about where a block came from.
//!
//! Nothing here caches objects between calls: every load goes to the storage
//! as of an explicit tid, so there is no hidden state to go stale. Callers
//! that want caching build it on top, where they know what is still valid.
//! One exception, in a driver that knows exactly what is still valid: the
//! PostgreSQL storage keeps small records loaded as of its own commit
//! stream's position until that stream reports a change of them (a round
//! trip per tree node otherwise; see `storage::postgres`).

pub mod bigfile;
pub mod btree;
mod bufpool;
pub mod pickle;
pub mod serialize;
pub mod storage;
pub mod types;
pub mod zurl;

pub use storage::{Commit, Loaded, Storage, Watcher};
pub use types::{Oid, Tid};
