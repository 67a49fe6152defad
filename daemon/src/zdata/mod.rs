//! ZODB side of the daemon: which blocks of the served files changed in a
//! transaction, and the short history that answers `blkrev`.
//!
//! (Module prose to be written with the implementation: design, invariants,
//! locking.)

use std::collections::BTreeSet;
use std::sync::Arc;
use zodb::bigfile::{Block, FileSize};
use zodb::{Commit, Oid, Storage, Tid};

/// What one transaction changed in one tracked file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileDelta {
    pub file: Oid,
    /// Tracked blocks whose data changed (their ZBlk was replaced, moved,
    /// added, removed, or got a new revision — ZBlk1 parts included).
    pub blocks: BTreeSet<u64>,
    /// The new file size, when it changed.
    pub size: Option<u64>,
    /// The ZBigFile object itself changed (blksize or blktab replaced):
    /// every block of the file must be treated as changed, and the file
    /// reloaded. `blocks` is then empty and `size` is the new size.
    pub reset: bool,
}

/// Why a file could not be tracked, or a transaction not applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BigFile(#[from] zodb::bigfile::Error),
    #[error("{0}")]
    Storage(#[from] zodb::storage::Error),
    #[error("transaction @{got} is not after head @{head}")]
    OutOfOrder { head: Tid, got: Tid },
}

/// Per-file information the filesystem needs, as of the tracker's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub blksize: u64,
    pub size: u64,
    /// Revision of the file: the ZBigFile's serial at first, then the tid
    /// of the last transaction that changed a tracked block or the size.
    pub rev: Tid,
}

/// Change tracking for every file opened under head/, and its history.
///
/// Concurrency: `track_block` takes `&self` (reads call it in parallel,
/// under the filesystem's read side); `apply` and `trim` take `&mut self`
/// (under the filesystem's write side).
pub struct Tracker {
    _storage: Arc<dyn Storage>,
}

impl Tracker {
    /// A tracker whose head is `head` and whose history starts there.
    pub fn new(storage: Arc<dyn Storage>, head: Tid) -> Tracker {
        let _ = head;
        Tracker { _storage: storage }
    }

    /// The tid of the database state the tracker reflects.
    pub fn head(&self) -> Tid {
        todo!()
    }

    /// Starts tracking `file` (idempotent): loads the ZBigFile and its size
    /// path as of head.
    pub fn open_file(&self, file: Oid) -> Result<FileInfo, Error> {
        let _ = file;
        todo!()
    }

    /// Current information about a tracked file.
    pub fn file_info(&self, file: Oid) -> Option<FileInfo> {
        let _ = file;
        todo!()
    }

    /// Loads block `blk` of a tracked file as of head and starts tracking
    /// it. Reads of head/bigfile go through here.
    pub fn load_block(&self, file: Oid, blk: u64) -> Result<Block, Error> {
        let _ = (file, blk);
        todo!()
    }

    /// Applies one committed transaction: advances head to `commit.tid` and
    /// returns what changed in each tracked file (files without changes are
    /// not listed). Records the changes in the history.
    pub fn apply(&mut self, commit: &Commit) -> Result<Vec<FileDelta>, Error> {
        let _ = commit;
        todo!()
    }

    /// The last revision ≤ `at` that changed block `blk` of `file`, exact
    /// within the kept history; for a block unchanged since the history
    /// starts, the history start. `at` must be within [history start, head].
    pub fn blkrev(&self, file: Oid, blk: u64, at: Tid) -> Tid {
        let _ = (file, blk, at);
        todo!()
    }

    /// Oldest tid the history answers for.
    pub fn history_start(&self) -> Tid {
        todo!()
    }

    /// Forgets history before `keep_from`: the history start becomes
    /// `max(history_start, min(keep_from, head))`. (Any tid is a valid
    /// answer of `blkrev` for a block unchanged since then: `@<tid>/` views
    /// exist for every tid.)
    pub fn trim(&mut self, keep_from: Tid) {
        let _ = keep_from;
        todo!()
    }

    #[doc(hidden)]
    pub fn _unused(_: &FileSize) {}
}
