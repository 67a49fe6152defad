//! FileStorage (`data.fs`, format FS21), read-only.
//!
//! A FileStorage is one append-only file: the magic (`FS21` from Python 2,
//! `FS30` from Python 3; same layout), then
//! transaction records, each holding the data records of the objects it
//! changed. Every data record points to the previous record of the same
//! object, so the only thing a reader has to build is an index
//! oid → position of the object's latest data record. A load walks the
//! `prev` chain from there back to the first record with tid ≤ `at`, and
//! follows back-pointers (records written by undo, with no data of their
//! own) to the record that holds the bytes.
//!
//! Opening builds the index either by scanning every transaction (headers
//! only: whole transactions and payloads are jumped over using their
//! lengths), or, much faster for a big file, from the `.index` file Python's
//! FileStorage writes on close ([`index_file`]) plus a scan of the
//! transactions committed after it was written. The `.index` file is checked
//! the way Python checks it before it is trusted, and ignored when it does
//! not pass.
//!
//! Another process (Python) may be committing while we read. The writer
//! appends a transaction with status `c`, flushes, then overwrites the status
//! with a blank. So anything past the last complete transaction that is not
//! `c` is "not committed yet": a trailing `c` transaction or a short tail is
//! waited for, never reported as an error. Corruption before that point is
//! an error ([`Error::Corrupt`], with the file offset).
//!
//! Invariants and locking:
//!
//! - `Index::pos` is the end of the last committed transaction indexed, and
//!   every position in `Index::oid2pos` lies before it. The file below
//!   `Index::pos` never changes (the writer only appends), so a position read
//!   from the index stays valid after the lock is released: loads hold the
//!   read lock only to look the oid up, then `pread` without any lock.
//! - Catching up with new commits (a load or `last_tid` asking about a tid
//!   newer than the index, or a watch) scans the new tail under the write
//!   lock and applies each transaction's records only once the whole
//!   transaction was checked, so the index always ends at a transaction
//!   boundary.
//! - A load copies the data once: `pread` into the vector that becomes the
//!   returned `Bytes`.
//! - A load reads two or three small things: the data record's header,
//!   its transaction's header (records reached through the `.index` file
//!   were never checked by a scan), and the data. Transaction headers that
//!   passed the check are remembered by position ([`CheckedTxns`]: they
//!   never change either), so with small objects — a BTree bucket, a 4 KiB
//!   block — a load is two `pread`s, not three. [`Storage::serial_at`]
//!   reads only the header: a decoded-object cache keyed by serial then
//!   needs one `pread`.
//!
//! All parsing goes through [`ReadAt`], which a file and an in-memory buffer
//! both implement: tests and the fuzzer run the same code as production.

mod format;
pub mod index_file;
mod watch;

pub use format::{DataHeader, ReadAt, TxnHeader, MAGIC, MAGIC_PY3};
pub use watch::FsWatcher;

use super::{Error, Loaded, Storage, Watcher};
use crate::types::{Oid, Tid};
use bytes::Bytes;
use format::{Ctx, FileReader, TxnAt, Window, DATA_HDR_LEN};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to open a FileStorage.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Reuse `<path>.index` when it is valid (else scan the whole file).
    pub use_index_file: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            use_index_file: true,
        }
    }
}

/// oid → position of the latest data record, up to `pos`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    pub(crate) oid2pos: HashMap<Oid, u64>,
    /// End of the last committed transaction indexed.
    pub(crate) pos: u64,
    /// Its tid ([`Tid::ZERO`] if none).
    pub(crate) last_tid: Tid,
}

impl Index {
    fn empty() -> Index {
        Index {
            oid2pos: HashMap::new(),
            pos: MAGIC.len() as u64,
            last_tid: Tid::ZERO,
        }
    }
}

/// How the index was built at open, for tools and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexSource {
    /// Whole file scanned.
    Scan,
    /// `.index` file used; transactions after `pos` scanned.
    IndexFile { pos: u64 },
}

/// A FileStorage opened read-only.
pub struct FileStorage {
    url: String,
    instance: u64,
    r: Arc<dyn ReadAt>,
    index: RwLock<Index>,
    source: IndexSource,
    checked: CheckedTxns,
}

/// Transaction headers a load already checked: position → (tid, length).
/// Only headers with a valid status get in; the checks that depend on the
/// record (its tid, its end within the transaction) still run every time.
/// Bounded: forgotten all at once when full (re-reading a header is cheap;
/// this only saves the common case of many loads from few transactions).
#[derive(Default)]
struct CheckedTxns(Mutex<HashMap<u64, (Tid, u64)>>);

const CHECKED_TXNS_MAX: usize = 16384;

impl CheckedTxns {
    fn get(&self, tloc: u64) -> Option<(Tid, u64)> {
        self.0.lock().get(&tloc).copied()
    }

    fn put(&self, tloc: u64, tid: Tid, tlen: u64) {
        let mut m = self.0.lock();
        if m.len() >= CHECKED_TXNS_MAX {
            m.clear();
        }
        m.insert(tloc, (tid, tlen));
    }
}

/// One data record, as iteration reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    pub oid: Oid,
    pub tid: Tid,
    /// File position of this record.
    pub pos: u64,
    /// Position of the object's previous record (0: none).
    pub prev: u64,
    /// For a record without data: position of the record holding it (0:
    /// deleted).
    pub back: u64,
    pub data_len: u64,
    /// Position of the data (meaningful when `data_len > 0`).
    pub data_pos: u64,
}

/// One committed transaction, as iteration reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnInfo {
    pub tid: Tid,
    /// `b' '`, `b'p'` (packed) or `b'u'`.
    pub status: u8,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    /// The extension bytes (a pickled dict, as written).
    pub extension: Vec<u8>,
    /// File position of the transaction record.
    pub pos: u64,
    pub records: Vec<RecordInfo>,
}

/// Reads the committed transaction at `pos`; `None` when nothing committed
/// starts there. Returns the transaction and the position of the next one.
fn read_txn_info(
    w: &mut Window,
    ctx: &Ctx,
    pos: u64,
    prev_tid: Tid,
) -> Result<Option<(TxnInfo, u64)>, Error> {
    let th = match format::read_txn(w, ctx, pos, prev_tid)? {
        TxnAt::End => return Ok(None),
        TxnAt::Txn(th) => th,
    };
    let (u, d, e) = (th.ulen as usize, th.dlen as usize, th.elen as usize);
    let hpos = pos + format::TXN_HDR_LEN;
    let ude = w
        .get(hpos, u + d + e)
        .map_err(|err| ctx.io(hpos, (u + d + e) as u64, err))?;
    let mut info = TxnInfo {
        tid: th.tid,
        status: th.status,
        user: ude[..u].to_vec(),
        description: ude[u..u + d].to_vec(),
        extension: ude[u + d..].to_vec(),
        pos,
        records: Vec::new(),
    };
    format::read_txn_records(w, ctx, &th, pos, |rpos, h| {
        info.records.push(RecordInfo {
            oid: h.oid,
            tid: h.tid,
            pos: rpos,
            prev: h.prev,
            back: h.back,
            data_len: h.plen,
            data_pos: rpos + DATA_HDR_LEN,
        });
        Ok(())
    })?;
    Ok(Some((info, pos + th.tlen + 8)))
}

/// Iterator over committed transactions, oldest first. It stops at the end
/// of what was committed when it got there; an error ends it.
pub struct TxnIter {
    r: Arc<dyn ReadAt>,
    name: String,
    pos: u64,
    last_tid: Tid,
    done: bool,
}

impl Iterator for TxnIter {
    type Item = Result<TxnInfo, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let ctx = Ctx { name: &self.name };
        let res = self.r.size().map_err(|e| ctx.io(0, 0, e)).and_then(|size| {
            read_txn_info(
                &mut Window::new(&*self.r, size),
                &ctx,
                self.pos,
                self.last_tid,
            )
        });
        match res {
            Ok(Some((info, next))) => {
                self.pos = next;
                self.last_tid = info.tid;
                Some(Ok(info))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl FileStorage {
    /// Opens `path`; `url` is the zurl it was named by (kept for messages).
    pub fn open(path: &Path, url: &str) -> Result<FileStorage, Error> {
        Self::open_with(path, url, OpenOptions::default())
    }

    /// Opens `path` with explicit options.
    pub fn open_with(path: &Path, url: &str, opts: OpenOptions) -> Result<FileStorage, Error> {
        let file = std::fs::File::open(path).map_err(|e| Error::Io {
            storage: url.to_string(),
            op: format!("open {}", path.display()),
            source: e,
        })?;
        let r = Arc::new(FileReader {
            file,
            path: path.to_path_buf(),
        });
        let index_path = opts.use_index_file.then(|| {
            let mut p = path.as_os_str().to_owned();
            p.push(".index");
            PathBuf::from(p)
        });
        Self::open_reader(r, url, index_path.as_deref())
    }

    /// Opens a FileStorage held in memory (tests, fuzzing).
    pub fn from_bytes(data: Bytes, url: &str) -> Result<FileStorage, Error> {
        Self::open_reader(Arc::new(data), url, None)
    }

    /// Opens a FileStorage over any [`ReadAt`], using `index_path` as the
    /// `.index` file if given and valid.
    pub fn open_reader(
        r: Arc<dyn ReadAt>,
        url: &str,
        index_path: Option<&Path>,
    ) -> Result<FileStorage, Error> {
        let ctx = Ctx { name: url };
        let mut magic = [0u8; 4];
        r.read_exact_at(&mut magic, 0)
            .map_err(|e| ctx.io(0, 4, e))?;
        if &magic != MAGIC && &magic != MAGIC_PY3 {
            return Err(ctx.corrupt(
                0,
                format!(
                    "not a FileStorage: magic {:?}, want \"FS21\" or \"FS30\"",
                    String::from_utf8_lossy(&magic)
                ),
            ));
        }
        let (index, source) = match index_path.and_then(|p| index_file::load(p, &*r, &ctx)) {
            Some(idx) => {
                let pos = idx.pos;
                (idx, IndexSource::IndexFile { pos })
            }
            None => (Index::empty(), IndexSource::Scan),
        };
        let fs = FileStorage {
            instance: super::new_instance_id(),
            url: url.to_string(),
            r,
            index: RwLock::new(index),
            source,
            checked: CheckedTxns::default(),
        };
        fs.catch_up(&mut fs.index.write())?;
        Ok(fs)
    }

    /// How the index was built at open.
    pub fn index_source(&self) -> IndexSource {
        self.source
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx { name: &self.url }
    }

    /// Scans the transactions committed after `idx.pos` into `idx`.
    fn catch_up(&self, idx: &mut Index) -> Result<(), Error> {
        let ctx = self.ctx();
        let size = self.r.size().map_err(|e| ctx.io(0, 0, e))?;
        if size < idx.pos {
            return Err(ctx.corrupt(
                size,
                format!("file shrank below committed data (ending at {})", idx.pos),
            ));
        }
        let mut w = Window::new(&*self.r, size);
        let mut changed: Vec<(Oid, u64)> = Vec::new();
        loop {
            let tpos = idx.pos;
            let th = match format::read_txn(&mut w, &ctx, tpos, idx.last_tid)? {
                TxnAt::End => return Ok(()),
                TxnAt::Txn(th) => th,
            };
            // Records of a `u` transaction are not indexed (Python's
            // read_index skips them the same way).
            if th.status != b'u' {
                changed.clear();
                format::read_txn_records(&mut w, &ctx, &th, tpos, |pos, h| {
                    let cur = idx.oid2pos.get(&h.oid).copied().unwrap_or(0);
                    // Python only warns about prev == 0 for a known object;
                    // we refuse it: such a record would silently become the
                    // object's latest one, and loads of older tids would
                    // stop at it. ZODB itself never writes it (store, undo,
                    // restore and pack all chain records).
                    if h.prev != cur {
                        return Err(ctx.corrupt(
                            pos,
                            format!("data record of {}: previous-record pointer {} != {} (latest record of the object)", h.oid, h.prev, cur),
                        ));
                    }
                    if h.plen == 0 && h.back != 0 {
                        let b = format::read_data_header(&*self.r, &ctx, h.back)?;
                        if b.oid != h.oid {
                            return Err(ctx.corrupt(
                                pos,
                                format!(
                                    "data record of {}: back-pointer {} points to a record of {}",
                                    h.oid, h.back, b.oid
                                ),
                            ));
                        }
                    }
                    changed.push((h.oid, pos));
                    Ok(())
                })?;
                idx.oid2pos.extend(changed.iter().copied());
            }
            idx.pos = tpos + th.tlen + 8;
            idx.last_tid = th.tid;
        }
    }

    /// Catches up if the file grew since the index was last updated.
    fn refresh(&self) -> Result<(), Error> {
        let size = self.r.size().map_err(|e| self.ctx().io(0, 0, e))?;
        if size == self.index.read().pos {
            return Ok(());
        }
        self.catch_up(&mut self.index.write())
    }

    /// Iterates over all committed transactions, oldest first.
    pub fn iter(&self) -> TxnIter {
        self.iter_from(MAGIC.len() as u64, Tid::ZERO)
    }

    /// Iterates over committed transactions from the one at `pos`; `prev_tid`
    /// is the tid of the transaction before it (tids must increase).
    pub fn iter_from(&self, pos: u64, prev_tid: Tid) -> TxnIter {
        TxnIter {
            r: self.r.clone(),
            name: self.url.clone(),
            pos,
            last_tid: prev_tid,
            done: false,
        }
    }

    /// Position right after the last committed transaction indexed.
    pub fn committed_end(&self) -> u64 {
        self.index.read().pos
    }

    /// Number of objects in the index.
    pub fn object_count(&self) -> usize {
        self.index.read().oid2pos.len()
    }

    /// The position of the latest data record of every object (as indexed).
    pub fn index_snapshot(&self) -> Vec<(Oid, u64)> {
        let mut v: Vec<_> = self
            .index
            .read()
            .oid2pos
            .iter()
            .map(|(&o, &p)| (o, p))
            .collect();
        v.sort_unstable();
        v
    }

    /// The header of `oid`'s latest record with tid ≤ `at`, its position,
    /// checked against its transaction, and the index end it was found
    /// under: the `prev` walk shared by a load and [`Storage::serial_at`].
    fn record_at(&self, oid: Oid, at: Tid) -> Result<(DataHeader, u64, u64), Error> {
        let (mut pos, limit) = {
            let idx = self.index.read();
            let pos = idx.oid2pos.get(&oid).copied();
            (pos.ok_or(Error::NoObject { oid })?, idx.pos)
        };
        let ctx = self.ctx();
        let mut newer = Tid::MAX;
        let h = loop {
            let h = format::read_data_header(&*self.r, &ctx, pos)?;
            if h.oid != oid {
                return Err(ctx.corrupt(
                    pos,
                    format!("record of {} found while loading {oid}", h.oid),
                ));
            }
            if h.tid >= newer {
                return Err(ctx.corrupt(
                    pos,
                    format!(
                        "record of {oid} with tid {} not older than the record after it ({newer})",
                        h.tid
                    ),
                ));
            }
            if h.tid <= at {
                break h;
            }
            if h.prev == 0 {
                return Err(Error::NotYetCreated { oid, at });
            }
            newer = h.tid;
            pos = h.prev;
        };
        self.check_in_txn(&h, pos, limit)?;
        Ok((h, pos, limit))
    }

    fn load_at(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        let (mut h, mut hpos, limit) = self.record_at(oid, at)?;
        let ctx = self.ctx();
        let r = &*self.r;
        let serial = h.tid;
        while h.plen == 0 {
            if h.back == 0 {
                return Err(Error::Deleted { oid, at, serial });
            }
            let b = h.back;
            let bh = format::read_data_header(r, &ctx, b)?;
            if bh.oid != oid {
                return Err(ctx.corrupt(
                    hpos,
                    format!("back-pointer {b} of {oid} points to a record of {}", bh.oid),
                ));
            }
            if bh.tid >= h.tid {
                return Err(ctx.corrupt(hpos, format!("back-pointer {b} of {oid} points to a record with tid {} not older than {}", bh.tid, h.tid)));
            }
            self.check_in_txn(&bh, b, limit)?;
            (h, hpos) = (bh, b);
        }
        let data = format::read_bytes(r, &ctx, hpos + DATA_HDR_LEN, h.plen, limit)?;
        Ok(Loaded {
            data: crate::bufpool::freeze(data),
            serial,
        })
    }

    /// Checks a record against its transaction header: records reached
    /// through the `.index` file were never seen by a scan.
    fn check_in_txn(&self, h: &DataHeader, pos: u64, limit: u64) -> Result<(), Error> {
        let ctx = self.ctx();
        let tid_mismatch = |tid: Tid| {
            ctx.corrupt(
                pos,
                format!(
                    "data record tid {} != tid {tid} of its transaction at {}",
                    h.tid, h.tloc
                ),
            )
        };
        let tlen = match self.checked.get(h.tloc) {
            Some((tid, _)) if tid != h.tid => return Err(tid_mismatch(tid)),
            Some((_, tlen)) => tlen,
            None => {
                let th = format::read_txn_header(&*self.r, &ctx, h.tloc)?;
                if th.tid != h.tid {
                    return Err(tid_mismatch(th.tid));
                }
                if !matches!(th.status, b' ' | b'p' | b'u') {
                    return Err(ctx.corrupt(
                        h.tloc,
                        format!(
                            "transaction {}: invalid status {:?}",
                            th.tid, th.status as char
                        ),
                    ));
                }
                self.checked.put(h.tloc, th.tid, th.tlen);
                th.tlen
            }
        };
        let rend = h.record_len().and_then(|l| pos.checked_add(l));
        let tend = h.tloc.checked_add(tlen);
        match (rend, tend) {
            (Some(re), Some(te)) if re <= te && te < limit => Ok(()),
            _ => Err(ctx.corrupt(
                pos,
                format!(
                    "data record of {} (length {}) exceeds its transaction at {}",
                    h.oid, h.plen, h.tloc
                ),
            )),
        }
    }

    /// [`Storage::serial_at`]: the walk of a load over headers alone;
    /// `None` for whatever a load would report (a deleted object's record
    /// has neither data nor a back-pointer), and past the index (a load
    /// catches up first).
    fn header_serial_at(&self, oid: Oid, at: Tid) -> Option<Tid> {
        if at > self.index.read().last_tid {
            return None;
        }
        let (h, _, _) = self.record_at(oid, at).ok()?;
        (h.plen > 0 || h.back != 0).then_some(h.tid)
    }
}

impl Storage for FileStorage {
    fn url(&self) -> &str {
        &self.url
    }

    fn instance_id(&self) -> u64 {
        self.instance
    }

    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        if at > self.index.read().last_tid {
            self.refresh()?;
        }
        self.load_at(oid, at)
    }

    fn serial_at(&self, oid: Oid, at: Tid) -> Option<Tid> {
        self.header_serial_at(oid, at)
    }

    fn last_tid(&self) -> Result<Tid, Error> {
        self.refresh()?;
        Ok(self.index.read().last_tid)
    }

    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>, Error> {
        self.refresh()?;
        let end = self.index.read().pos;
        let ctx = self.ctx();
        // Walk back from the end over the redundant lengths to the first
        // transaction after `after`: watchers start near the end. Each step
        // looks at the transaction ending at `pos`.
        let (mut pos, mut prev_tid) = (end, Tid::ZERO);
        let mut newer = Tid::MAX;
        while pos > MAGIC.len() as u64 {
            let lpos = pos - 8;
            let mut b = [0u8; 8];
            self.r
                .read_exact_at(&mut b, lpos)
                .map_err(|e| ctx.io(lpos, 8, e))?;
            let tl = u64::from_be_bytes(b);
            let tpos = match lpos.checked_sub(tl) {
                Some(t) if t >= MAGIC.len() as u64 => t,
                _ => {
                    return Err(ctx.corrupt(
                        lpos,
                        format!("redundant transaction length {tl} points before the file start"),
                    ))
                }
            };
            let th = format::read_txn_header(&*self.r, &ctx, tpos)?;
            if th.tlen != tl || th.tid >= newer {
                return Err(ctx.corrupt(
                    tpos,
                    format!("transaction header inconsistent with redundant length {tl} at {lpos}"),
                ));
            }
            if th.tid <= after {
                prev_tid = th.tid;
                break;
            }
            newer = th.tid;
            pos = tpos;
        }
        Ok(Box::new(FsWatcher::new(
            self.r.clone(),
            self.url.clone(),
            pos,
            prev_tid,
            after,
        )))
    }
}
