//! ZODB side of the daemon: which blocks of the served files changed in a
//! transaction, and the short history that answers `blkrev`.
//!
//! # What is tracked
//!
//! A transaction names the objects it changed; the kernel caches blocks. The
//! [`Tracker`] translates one into the other, for the files opened under
//! head/ ([`Tracker::open_file`]) and, in them, only for the blocks that were
//! ever read ([`Tracker::load_block`]) plus the size. Per file it keeps:
//!
//! - every tracked block with its blktab entry (hole or ZBlk oid) and, for
//!   a ZBlk1, the oids of its chunk-table nodes and ZData ("parts");
//! - the tracked part of the blktab BTree: every node on the path of a
//!   tracked block, with the key range it covers, its parent and its tracked
//!   children. A tracked hole has a path like any block (down to the bucket
//!   where its key would be), so hole → data is seen there;
//! - an index ZBlk/part oid → blocks using it (a shared ZBlk has several);
//! - the nodes that decide the size: the rightmost path and the empty nodes
//!   `zodb::btree::BTree::rightmost` passed over.
//!
//! # Applying a transaction
//!
//! Only changed oids that are in these indexes matter; everything else in
//! the transaction costs one hash lookup per oid and file.
//!
//! - Tree: the changed tracked nodes and their ancestors are "dirty". We walk
//!   from the root down the dirty nodes only. A node that did not change and
//!   still covers the same range has the same children: we just descend into
//!   its dirty children. A node that changed (or now covers another range, or
//!   is new) is decoded as of the new head and compared: a bucket's entries
//!   are looked up for the tracked keys in its range (an entry pointing to a
//!   different ZBlk, or to none, changes the block); an inner node's children
//!   are visited when tracked keys fall in their range, each again by the
//!   same rule — so an unchanged child in its old place is not even decoded.
//!   Old children not placed again are dropped. Bucket splits and merges,
//!   keys moving between buckets and levels coming and going all reduce to
//!   this rule, and the work is bounded by the changed nodes' sizes, not by
//!   the number of tracked blocks. Nodes and ZBlk parts are decoded at most
//!   once per transaction (`node::ApplyCtx`).
//! - ZBlks and parts: every block using a changed one changed (wendelin gives
//!   a ZBlk a new revision whenever its data changes; a ZBlk1 part is counted
//!   too so we need not rely on it). Their parts are reloaded.
//! - Size: when a node deciding it changed, it is recomputed. Blocks beyond a
//!   new smaller end were tracked in the rightmost bucket and became holes:
//!   the tree rule reports them.
//! - The ZBigFile object itself in the transaction: `reset` — everything is
//!   reloaded and the tracked set starts empty.
//!
//! A node or ZBlk that cannot be loaded or decoded as of the new head never
//! makes us report less: the blocks it decides are reported changed and
//! their entry becomes "unknown" (reported again whenever their region is
//! re-read, until a read through `load_block` succeeds and re-tracks them).
//! `apply` fails only for a transaction out of order.
//!
//! # History
//!
//! Each file keeps, per block, the sorted tids that changed it, and the
//! tids of its resets (every block changed): `blkrev` is two binary
//! searches. The tracker also keeps the oid lists of the transactions in the
//! history window. A block tracked later than the history start gets its
//! past rebuilt from them when first loaded: walking the window backwards,
//! a transaction that touches none of the objects the block depended on at
//! that point left it unchanged; one that does is decided by loading the
//! block just before it. So `blkrev` is exact over the whole kept history
//! for every tracked block (see [`Tracker::blkrev`] for the rest).
//!
//! # Locking
//!
//! The filesystem holds an `RwLock<Tracker>`: `open_file`, `load_block`,
//! `file_info`, `blkrev` run under its read side in parallel; `apply` and
//! `trim` under its write side, so head and the transaction window never
//! move under a reader. Inside, the file map is a `RwLock` (write-locked only
//! to insert a newly opened file) and each file's state is behind its own
//! `Mutex`. Order: file map, then one file; never two files at once. Storage
//! loads (the block itself, the history rebuild) happen with no lock held
//! but the filesystem's read side; the file mutex is taken only to look up
//! or record, so readers of different blocks do not serialize on loads.

mod history;
mod node;
mod track;

use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use track::FileTrack;
use zodb::bigfile::{Block, ZBigFile};
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
/// Concurrency: see the module prose. `open_file`, `load_block`,
/// `file_info` and `blkrev` take `&self` (reads call them in parallel, under
/// the filesystem's read side); `apply` and `trim` take `&mut self` (under
/// the filesystem's write side).
pub struct Tracker {
    storage: Arc<dyn Storage>,
    head: Tid,
    start: Tid,
    files: RwLock<HashMap<Oid, Arc<Mutex<FileTrack>>>>,
    /// Transactions in (start, head]: tid and sorted changed oids.
    txns: VecDeque<(Tid, Arc<[Oid]>)>,
}

impl Tracker {
    /// A tracker whose head is `head` and whose history starts there.
    pub fn new(storage: Arc<dyn Storage>, head: Tid) -> Tracker {
        Tracker {
            storage,
            head,
            start: head,
            files: RwLock::new(HashMap::new()),
            txns: VecDeque::new(),
        }
    }

    /// The tid of the database state the tracker reflects.
    pub fn head(&self) -> Tid {
        self.head
    }

    /// The storage the tracker reads.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn file(&self, file: Oid) -> Option<Arc<Mutex<FileTrack>>> {
        self.files.read().get(&file).cloned()
    }

    /// Starts tracking `file` (idempotent): loads the ZBigFile and its size
    /// path as of head.
    pub fn open_file(&self, file: Oid) -> Result<FileInfo, Error> {
        if let Some(f) = self.file(file) {
            let f = f.lock();
            if f.zf.is_some() {
                return Ok(f.info());
            }
            // Broken since a reset: report why.
            drop(f);
            ZBigFile::load(&*self.storage, file, self.head)?;
        }
        let ft = FileTrack::open(&*self.storage, file, self.head)?;
        let mut files = self.files.write();
        let f = files
            .entry(file)
            .or_insert_with(|| Arc::new(Mutex::new(ft)));
        let info = f.lock().info();
        Ok(info)
    }

    /// Current information about a tracked file.
    pub fn file_info(&self, file: Oid) -> Option<FileInfo> {
        Some(self.file(file)?.lock().info())
    }

    /// Files being tracked.
    pub fn files(&self) -> Vec<Oid> {
        let mut v: Vec<Oid> = self.files.read().keys().copied().collect();
        v.sort();
        v
    }

    /// The tracked files a transaction changing `oids` may change (a
    /// superset of those [`Tracker::apply`] will report).
    pub fn files_depending_on(&self, oids: &[Oid]) -> Vec<Oid> {
        let files: Vec<_> = self
            .files
            .read()
            .iter()
            .map(|(o, f)| (*o, f.clone()))
            .collect();
        let mut v: Vec<Oid> = files
            .into_iter()
            .filter(|(_, f)| f.lock().depends_on_any(oids))
            .map(|(o, _)| o)
            .collect();
        v.sort();
        v
    }

    /// Whether block `blk` of `file` is tracked (with a known state).
    pub fn is_tracked(&self, file: Oid, blk: u64) -> bool {
        self.file(file).is_some_and(|f| f.lock().is_tracked(blk))
    }

    /// Tracked blocks and tracked blktab nodes of `file` (diagnostics).
    pub fn tracked_counts(&self, file: Oid) -> Option<(usize, usize)> {
        Some(self.file(file)?.lock().counts())
    }

    /// Loads block `blk` of a tracked file as of head and starts tracking
    /// it. Reads of head/bigfile go through here. A file not opened yet is
    /// opened.
    pub fn load_block(&self, file: Oid, blk: u64) -> Result<Block, Error> {
        let f = match self.file(file) {
            Some(f) => f,
            None => {
                self.open_file(file)?;
                self.file(file).expect("just opened")
            }
        };
        let (zf, tracked) = {
            let g = f.lock();
            (g.zf, g.is_tracked(blk))
        };
        let zf = match zf {
            Some(zf) => zf,
            None => ZBigFile::load(&*self.storage, file, self.head)?,
        };
        let b = zf.load_block(&*self.storage, blk, self.head)?;
        if tracked {
            return Ok(b);
        }
        let (past, known_from) = self.rebuild(&zf, blk, &b);
        let mut g = f.lock();
        if g.zf == Some(zf) && !g.is_tracked(blk) {
            g.track_block(blk, &b, known_from);
            for t in past {
                g.hist.record(blk, t);
            }
        }
        Ok(b)
    }

    /// The changes of block `blk` (as `b` at head) within the history
    /// window, found backwards through the window's transactions; and the
    /// tid from which that list is exact.
    fn rebuild(&self, zf: &ZBigFile, blk: u64, b: &Block) -> (Vec<Tid>, Tid) {
        let st = &*self.storage;
        let deps_of = |b: &Block| -> Vec<Oid> {
            let mut d: Vec<Oid> = b.path.iter().map(|n| n.oid).collect();
            d.extend(b.zblk.map(|z| z.oid));
            d.extend(b.parts.iter().map(|p| p.oid));
            d
        };
        let mut past = Vec::new();
        let mut cur = b.clone();
        let mut deps = deps_of(&cur);
        for (tid, oids) in self.txns.iter().rev() {
            let has = |o: &Oid| oids.binary_search(o).is_ok();
            if has(&zf.oid()) {
                // The file object changed (or was created) here: every block
                // changed; before it we know nothing.
                past.push(*tid);
                return (past, *tid);
            }
            if !deps.iter().any(has) {
                continue;
            }
            let before = Tid(tid.0 - 1);
            match zf.load_block(st, blk, before) {
                Ok(p) => {
                    let changed = match (p.zblk, cur.zblk) {
                        (None, None) => false,
                        (Some(a), Some(z)) if a.oid == z.oid => {
                            has(&z.oid) || cur.parts.iter().any(|x| has(&x.oid))
                        }
                        _ => true,
                    };
                    if changed {
                        past.push(*tid);
                    }
                    deps = deps_of(&p);
                    cur = p;
                }
                Err(_) => {
                    // Cannot tell: count it as a change (a pin then names a
                    // revision with the same data), and stop here.
                    past.push(*tid);
                    return (past, *tid);
                }
            }
        }
        (past, self.start)
    }

    /// Applies one committed transaction: advances head to `commit.tid` and
    /// returns what changed in each tracked file (files without changes are
    /// not listed). Records the changes in the history.
    pub fn apply(&mut self, commit: &Commit) -> Result<Vec<FileDelta>, Error> {
        if commit.tid <= self.head {
            return Err(Error::OutOfOrder {
                head: self.head,
                got: commit.tid,
            });
        }
        let changed: HashSet<Oid> = commit.oids.iter().copied().collect();
        let mut sorted: Vec<Oid> = changed.iter().copied().collect();
        sorted.sort();
        let mut ctx = node::ApplyCtx::new(&*self.storage, commit.tid);
        let mut out = Vec::new();
        for f in self.files.get_mut().values() {
            if let Some(d) = f.lock().apply(&mut ctx, &changed, &sorted) {
                out.push(d);
            }
        }
        out.sort_by_key(|d| d.file);
        self.head = commit.tid;
        self.txns.push_back((commit.tid, sorted.into()));
        Ok(out)
    }

    /// The last revision ≤ `at` that changed block `blk` of `file`, exact
    /// within the kept history; for a block unchanged since the history
    /// starts, the history start. `at` must be within [history start, head].
    ///
    /// Where the history cannot be exact — a block not tracked, or one whose
    /// past could only be rebuilt up to some tid (its file object was
    /// replaced then, or its old state could not be loaded) and `at` is
    /// before that — the answer is `at` itself: the block's data as of it is
    /// by definition right.
    pub fn blkrev(&self, file: Oid, blk: u64, at: Tid) -> Tid {
        let Some(f) = self.file(file) else { return at };
        let f = f.lock();
        let Some(b) = f.known(blk) else { return at };
        if at < b.known_from {
            return at;
        }
        f.hist
            .last(blk, at)
            .map_or(self.start, |t| t.max(self.start))
    }

    /// The first transaction in `(at, head]` that changed the ZBigFile
    /// object `file` itself — created it, or replaced its blksize or
    /// blktab: a file *epoch*, across which a view cannot be moved block
    /// by block. `at` must be ≥ the history start (the window's oid lists
    /// answer it exactly).
    pub fn epoch_after(&self, file: Oid, at: Tid) -> Option<Tid> {
        self.txns
            .iter()
            .find(|(tid, oids)| *tid > at && oids.binary_search(&file).is_ok())
            .map(|(tid, _)| *tid)
    }

    /// Oldest tid the history answers for.
    pub fn history_start(&self) -> Tid {
        self.start
    }

    /// Forgets history before `keep_from`: the history start becomes
    /// `max(history_start, min(keep_from, head))`. (Any tid is a valid
    /// answer of `blkrev` for a block unchanged since then: `@<tid>/` views
    /// exist for every tid.)
    pub fn trim(&mut self, keep_from: Tid) {
        let start = self.start.max(keep_from.min(self.head));
        if start == self.start {
            return;
        }
        self.start = start;
        while self.txns.front().is_some_and(|(t, _)| *t <= start) {
            self.txns.pop_front();
        }
        for f in self.files.get_mut().values() {
            f.lock().hist.trim(start);
        }
    }
}
