//! `FileH`: one ZBigFile opened under a Conn.
//!
//! The file's state (under `FileInner::st`) decides, for every block, where
//! a Mapping takes that block's memory from (`Src`):
//!
//! - closed (file closed, Conn down, …) → inaccessible (`PROT_NONE`);
//! - at or beyond the file's size as of `at` → anonymous zeros (never
//!   SIGBUS: head may be longer or shorter than the file as of `at`);
//! - pinned to `@<rev>` → `@<rev>/bigfile/<oid>`;
//! - inside head's size → `head/bigfile/<oid>` (the shared page cache);
//! - otherwise (head shrank below the size as of `at`: a block of ours that
//!   head no longer has, never read by us, so the daemon does not pin it)
//!   → `@<at>/bigfile/<oid>`, the frozen view of our own `at`.
//!
//! A file source is mapped only up to the file's page-rounded size, the
//! rest of the block is anonymous zeros: a mapping of a file past its end
//! would SIGBUS. The size as of `at` is the size of `@<at>/bigfile/<oid>`.
//!
//! Remaining gap: head's size is sampled when the file is opened or
//! resynced. If a later commit shrinks head below a block that the process
//! maps from head and has never touched, touching it raises SIGBUS in the
//! kernel without the daemon being asked (so no pin can prevent it):
//! `crate::sigbus` catches that fault and re-maps the block from `@<at>`.
//!
//! Locking: see [`crate::conn`]. `st` is taken after the Conn's locks; while
//! it is held only `mmap`-family system calls are made (no FUSE request).

use crate::conn::ConnInner;
use crate::mapping::{self, MapRec};
use crate::{fork, Error, Mapping, Oid, Result, Tid};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A file handle. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct FileH {
    pub(crate) inner: Arc<FileInner>,
    /// This open (shared by clones): `close` releases it once.
    open: Arc<AtomicBool>,
}

pub(crate) struct FileInner {
    pub(crate) conn: Arc<ConnInner>,
    pub(crate) oid: Oid,
    pub(crate) blksize: usize,
    pub(crate) st: Mutex<FileState>,
}

/// A frozen view of the file: `@<rev>/bigfile/<oid>`.
pub(crate) struct RevFile {
    file: File,
    size: u64,
    blksize: u64,
}

pub(crate) struct FileState {
    /// Opens not yet closed.
    nopen: usize,
    /// head/bigfile/<oid>; None once closed (descriptors are given back
    /// at close, not when the last handle goes).
    head: Option<Arc<File>>,
    /// Why the file can no longer be used (its memory faults).
    pub(crate) closed: Option<Error>,
    at: Tid,
    /// Size as of `at`.
    size: u64,
    /// Size of head when last sampled.
    head_size: u64,
    /// blk → rev the daemon pinned it to (absent: head).
    pinned: HashMap<u64, Tid>,
    /// Open `@<rev>` files: every pinned rev, and `at`.
    revs: HashMap<Tid, Arc<RevFile>>,
    pub(crate) maps: HashMap<u64, MapRec>,
    next_map: u64,
}

/// Where the memory of one block comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    Fault,
    Zero,
    Head,
    Rev(Tid),
}

/// What a SIGBUS repair did (see `crate::sigbus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repair {
    /// The block was re-mapped from `@<at>`.
    Remapped,
    /// The block had been re-mapped already: retry the access.
    Retry,
    /// Not a fault we can do anything about.
    NotOurs,
}

/// What the file looks like as of a new `at` (see [`FileInner::probe`]).
pub(crate) struct Probe {
    at_file: Arc<RevFile>,
    head_size: u64,
}

/// The parameters of [`FileState::src`] that resync changes.
#[derive(Clone, Copy)]
struct View {
    closed: bool,
    at: Tid,
    size: u64,
    head_size: u64,
}

impl FileState {
    fn view(&self) -> View {
        View {
            closed: self.closed.is_some(),
            at: self.at,
            size: self.size,
            head_size: self.head_size,
        }
    }

    fn src_in(&self, v: View, blk: u64, blksize: usize) -> Src {
        let off = blk.saturating_mul(blksize as u64);
        if v.closed {
            Src::Fault
        } else if off >= v.size {
            Src::Zero
        } else if let Some(&rev) = self.pinned.get(&blk) {
            Src::Rev(rev)
        } else if off < v.head_size {
            Src::Head
        } else {
            Src::Rev(v.at)
        }
    }

    pub(crate) fn src(&self, blk: u64, blksize: usize) -> Src {
        self.src_in(self.view(), blk, blksize)
    }

    /// The `@<at>` file (descriptor, size): what a forked child maps.
    fn frozen(&self) -> Option<(std::os::fd::RawFd, u64)> {
        let f = self.revs.get(&self.at)?;
        Some((f.file.as_raw_fd(), f.size))
    }

    fn head_fd(&self) -> Result<std::os::fd::RawFd> {
        self.head
            .as_ref()
            .map(|h| h.as_raw_fd())
            .ok_or_else(|| Error::not_connected("wcfs: file closed"))
    }

    /// Takes out the `@<rev>` files nothing refers to any more, for the
    /// caller to close after releasing the lock (a close is a FUSE request).
    fn prune(&mut self, always: bool) -> Vec<Arc<RevFile>> {
        if !always && self.revs.len() <= 16 {
            return Vec::new();
        }
        let at = self.at;
        let unused: Vec<Tid> = self
            .revs
            .keys()
            .copied()
            .filter(|r| *r != at && !self.pinned.values().any(|p| p == r))
            .collect();
        unused.iter().filter_map(|r| self.revs.remove(r)).collect()
    }
}

/// Blocks are mapped one by one at `blk * blksize`: a view cannot span a
/// change of the file's block size.
fn blksize_changed(oid: Oid, at: Tid, then: u64, now: usize) -> Error {
    Error::invalid(format!(
        "wcfs: file {oid}: blksize {then} as of {at} differs from {now}: \
         the block size changed, this view cannot be mapped"
    ))
}

fn stat_err(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    Error::io(format!("wcfs: {what} {}", path.display()), e)
}

impl RevFile {
    fn open(path: PathBuf) -> Result<RevFile> {
        let file = File::open(&path).map_err(|e| stat_err("open", &path, e))?;
        let meta = file.metadata().map_err(|e| stat_err("stat", &path, e))?;
        Ok(RevFile {
            file,
            size: meta.len(),
            blksize: meta.blksize(),
        })
    }
}

impl FileInner {
    /// Opens head/bigfile/<oid> and @<at>/bigfile/<oid>; no lock held.
    pub(crate) fn open(conn: Arc<ConnInner>, oid: Oid, at: Tid) -> Result<Arc<FileInner>> {
        let mnt = conn.wcfs.mountpoint.clone();
        let hpath = mnt.join(format!("head/bigfile/{oid}"));
        let head = File::open(&hpath).map_err(|e| stat_err("open", &hpath, e))?;
        let meta = head.metadata().map_err(|e| stat_err("stat", &hpath, e))?;
        let blksize = meta.blksize() as usize;
        let page = mapping::page_size();
        if blksize == 0 || !blksize.is_multiple_of(page) {
            return Err(Error::invalid(format!(
                "wcfs: {}: blksize {blksize} is not a multiple of the page size {page}: \
                 blocks cannot be mapped one by one",
                hpath.display()
            )));
        }
        let at_file = Arc::new(RevFile::open(mnt.join(format!("@{at}/bigfile/{oid}")))?);
        if at_file.blksize != blksize as u64 {
            return Err(blksize_changed(oid, at, at_file.blksize, blksize));
        }
        let mut revs = HashMap::new();
        let size = at_file.size;
        revs.insert(at, at_file);
        Ok(Arc::new(FileInner {
            conn,
            oid,
            blksize,
            st: Mutex::new(FileState {
                nopen: 1,
                head: Some(Arc::new(head)),
                closed: None,
                at,
                size,
                head_size: meta.len(),
                pinned: HashMap::new(),
                revs,
                maps: HashMap::new(),
                next_map: 1,
            }),
        }))
    }

    fn rev_path(&self, rev: Tid) -> PathBuf {
        self.conn
            .wcfs
            .mountpoint
            .join(format!("@{rev}/bigfile/{}", self.oid))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.st.lock().closed.is_some()
    }

    /// Another open of the same file; false if it is closed.
    pub(crate) fn reopen(&self) -> bool {
        let mut st = self.st.lock();
        if st.closed.is_some() {
            return false;
        }
        st.nopen += 1;
        true
    }

    /// The `@<rev>` file, opened if needed (with no lock held: a FUSE lookup).
    fn rev_file(&self, rev: Tid) -> Result<Arc<RevFile>> {
        if let Some(rf) = self.st.lock().revs.get(&rev) {
            return Ok(rf.clone());
        }
        Ok(Arc::new(RevFile::open(self.rev_path(rev))?))
    }

    /// Applies a pin from the daemon: `rev` None is `@head`.
    pub(crate) fn pin(&self, blk: u64, rev: Option<Tid>) -> Result<()> {
        let rf = match rev {
            Some(r) => Some(self.rev_file(r)?),
            None => None,
        };
        let mut st = self.st.lock();
        if st.closed.is_some() {
            return Ok(());
        }
        // A descriptor opened twice (a race) is closed after the lock too.
        let mut spare = None;
        match (rev, rf) {
            (Some(r), Some(rf)) => {
                match st.revs.entry(r) {
                    std::collections::hash_map::Entry::Occupied(_) => spare = Some(rf),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(rf);
                    }
                }
                st.pinned.insert(blk, r);
            }
            _ => {
                st.pinned.remove(&blk);
            }
        }
        let unused = (st.prune(false), spare);
        let bs = self.blksize;
        let covering: Vec<usize> = st
            .maps
            .values()
            .filter_map(|m| m.block_addr(blk, bs))
            .collect();
        let r = covering
            .into_iter()
            .try_for_each(|addr| self.map_block(&st, addr, blk));
        drop(st);
        drop(unused);
        r
    }

    /// Maps block `blk` at `addr` from its source.
    pub(crate) fn map_block(&self, st: &FileState, addr: usize, blk: u64) -> Result<()> {
        let bs = self.blksize;
        let off = blk * bs as u64;
        match st.src(blk, bs) {
            Src::Fault => mapping::fixed_anon(addr, bs, libc::PROT_NONE),
            Src::Zero => mapping::fixed_anon(addr, bs, libc::PROT_READ),
            Src::Head => mapping::fixed_file(addr, bs, st.head_fd()?, off, st.head_size),
            Src::Rev(r) => {
                let rf = st.revs.get(&r).ok_or_else(|| {
                    Error::new(
                        libc::EIO,
                        format!("wcfs: {}: @{r} not open for #{blk}", self.oid),
                    )
                })?;
                mapping::fixed_file(addr, bs, rf.file.as_raw_fd(), off, rf.size)?;
                mapping::advise_overlay(addr, bs);
                Ok(())
            }
        }
    }

    /// Lays out blocks `[blk_start, blk_start+n)` at `addr` (reserved zeros):
    /// runs of head blocks in one `mmap` each, the others one by one.
    fn layout(&self, st: &FileState, addr: usize, blk_start: u64, n: u64) -> Result<()> {
        let bs = self.blksize;
        let mut blk = blk_start;
        let end = blk_start + n;
        let whole_head = |st: &FileState, b: u64| {
            st.src(b, bs) == Src::Head && (b + 1) * bs as u64 <= st.head_size
        };
        while blk < end {
            let a = addr + ((blk - blk_start) as usize) * bs;
            if whole_head(st, blk) {
                let mut run_end = blk + 1;
                while run_end < end && whole_head(st, run_end) {
                    run_end += 1;
                }
                let len = (run_end - blk) as usize * bs;
                mapping::fixed_file(a, len, st.head_fd()?, blk * bs as u64, st.head_size)?;
                blk = run_end;
                continue;
            }
            if st.src(blk, bs) != Src::Zero {
                self.map_block(st, a, blk)?;
            }
            blk += 1;
        }
        Ok(())
    }

    /// Closes the file with reason `why`: its memory faults from now on.
    pub(crate) fn fault(&self, why: Error) {
        let mut st = self.st.lock();
        if st.closed.is_some() {
            return;
        }
        st.closed = Some(why);
        for m in st.maps.values() {
            let _ = mapping::fixed_anon(m.addr, m.len, libc::PROT_NONE);
            fork::set_frozen(m.addr, None);
        }
        // Nothing maps from them any more; closed after the lock is
        // released (a close is a FUSE request).
        let head = st.head.take();
        let revs = std::mem::take(&mut st.revs);
        drop(st);
        drop((head, revs));
    }

    /// SIGBUS at `addr` in the Mapping at `map_addr` (first block
    /// `blk_start`): if that block comes from head, head shrank below it —
    /// take it, and every block after it, from `@<at>` (see
    /// `crate::sigbus`).
    pub(crate) fn head_gone(&self, map_addr: usize, blk_start: u64, addr: usize) -> Repair {
        let bs = self.blksize;
        let blk = blk_start + ((addr - map_addr) / bs) as u64;
        let mut st = self.st.lock();
        match st.src(blk, bs) {
            Src::Head => {}
            // Re-mapped since the fault (another thread's repair, a pin):
            // retry with the new source. (Zero never faults; a Mapping
            // being unmapped or faulting is not ours to repair.)
            Src::Rev(_) if st.maps.values().any(|m| m.addr == map_addr) => return Repair::Retry,
            _ => return Repair::NotOurs,
        }
        let old = st.view();
        st.head_size = st.head_size.min(blk * bs as u64);
        let new = st.view();
        match self.remap_changed(&st, old, new) {
            Ok(()) => Repair::Remapped,
            Err(_) => Repair::NotOurs,
        }
    }

    /// Re-maps the Mapping blocks whose source differs between views.
    fn remap_changed(&self, st: &FileState, old: View, new: View) -> Result<()> {
        let bs = self.blksize;
        let bs64 = bs as u64;
        // Below every size and head size both views take a block from its
        // pin or from head; past both sizes both give zeros: only blocks in
        // between can differ (unless closing, which changes all).
        let (lo, hi) = if old.closed != new.closed {
            (0, u64::MAX)
        } else {
            let lo = old.size.min(new.size).min(old.head_size).min(new.head_size) / bs64;
            (lo, old.size.max(new.size).div_ceil(bs64))
        };
        for m in st.maps.values() {
            let from = lo.max(m.blk_start);
            let to = hi.min(m.blk_start + m.blk_len);
            for blk in from..to {
                if st.src_in(old, blk, bs) != st.src_in(new, blk, bs) {
                    let addr = m.addr + (blk - m.blk_start) as usize * bs;
                    self.map_block(st, addr, blk)?;
                }
            }
        }
        Ok(())
    }

    /// Samples the file as of `at` (no lock held: FUSE requests).
    pub(crate) fn probe(&self, at: Tid) -> Result<Probe> {
        let at_file = self.rev_file(at)?;
        let head = self
            .st
            .lock()
            .head
            .clone()
            .ok_or_else(|| Error::not_connected("wcfs: file closed"))?;
        let head_size = head
            .metadata()
            .map_err(|e| Error::io(format!("wcfs: stat head/bigfile/{}", self.oid), e))?
            .len();
        Ok(Probe { at_file, head_size })
    }

    /// Switches the file to `at` once the daemon acknowledged the watch
    /// (all its pins applied): sizes change, blocks whose source changed
    /// are re-mapped.
    pub(crate) fn advance(&self, at: Tid, p: Probe) -> Result<()> {
        let mut st = self.st.lock();
        if st.closed.is_some() {
            return Ok(());
        }
        if p.at_file.blksize != self.blksize as u64 {
            return Err(blksize_changed(
                self.oid,
                at,
                p.at_file.blksize,
                self.blksize,
            ));
        }
        let old = st.view();
        st.revs.entry(at).or_insert_with(|| p.at_file.clone());
        st.at = at;
        st.size = p.at_file.size;
        st.head_size = p.head_size;
        let new = st.view();
        self.remap_changed(&st, old, new)?;
        // Before the old @<at> descriptor may be closed below.
        let frozen = st.frozen();
        for m in st.maps.values() {
            fork::set_frozen(m.addr, frozen);
        }
        let unused = st.prune(true);
        drop(st);
        drop(unused);
        Ok(())
    }

    /// Maps `[blk_start, blk_start+blk_len)`.
    fn mmap(self: &Arc<Self>, blk_start: i64, blk_len: i64) -> Result<Mapping> {
        if self.conn.detached() {
            return Err(Error::not_connected(
                "wcfs: forked child: handle belongs to the parent",
            ));
        }
        if blk_start < 0 || blk_len <= 0 {
            return Err(Error::invalid(format!(
                "wcfs: mmap: bad block range [{blk_start}, +{blk_len})"
            )));
        }
        let bs = self.blksize as u64;
        let (start, n) = (blk_start as u64, blk_len as u64);
        let len = n
            .checked_mul(bs)
            .filter(|l| {
                start
                    .checked_add(n)
                    .and_then(|e| e.checked_mul(bs))
                    .is_some_and(|e| e <= i64::MAX as u64)
                    && *l <= isize::MAX as u64
            })
            .ok_or_else(|| {
                Error::invalid(format!(
                    "wcfs: mmap: block range [{blk_start}, +{blk_len}) too large"
                ))
            })? as usize;
        let mut st = self.st.lock();
        if let Some(e) = &st.closed {
            return Err(Error::not_connected(e.message()));
        }
        let frozen = st.frozen();
        let addr = mapping::reserve(len, Arc::downgrade(self), start, self.blksize, frozen)?;
        let id = st.next_map;
        st.next_map += 1;
        let rec = MapRec {
            addr,
            len,
            blk_start: start,
            blk_len: n,
        };
        st.maps.insert(id, rec);
        if let Err(e) = self.layout(&st, addr, start, n) {
            st.maps.remove(&id);
            mapping::release(addr, len);
            return Err(e);
        }
        drop(st);
        Ok(Mapping::new(self.clone(), id, rec))
    }

    /// Releases one open; the last one closes the file.
    fn close_one(self: &Arc<Self>) -> Result<()> {
        let conn = self.conn.clone();
        let _op = conn.op_lock();
        {
            let mut st = self.st.lock();
            st.nopen = st.nopen.saturating_sub(1);
            if st.nopen > 0 {
                return Ok(());
            }
        }
        self.fault(Error::not_connected(format!(
            "wcfs: file {} closed",
            self.oid
        )));
        conn.forget(self.oid, self);
        if conn.check().is_ok() {
            // Best effort: the daemon stops pinning it; failure is harmless
            // (pins for files we do not have are acked).
            let _ = conn.link.request(&format!("watch {} -", self.oid));
        }
        Ok(())
    }
}

impl FileH {
    pub(crate) fn new(inner: Arc<FileInner>) -> FileH {
        FileH {
            inner,
            open: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn oid(&self) -> Oid {
        self.inner.oid
    }

    pub fn blksize(&self) -> usize {
        self.inner.blksize
    }

    /// Maps blocks `[blk_start, blk_start + blk_len)` read-only.
    pub fn mmap(&self, blk_start: i64, blk_len: i64) -> Result<Mapping> {
        if !self.open.load(Ordering::Acquire) {
            return Err(Error::not_connected("wcfs: file handle closed"));
        }
        self.inner.mmap(blk_start, blk_len)
    }

    /// Releases this open of the file; when it was the last, the file is
    /// closed and its Mappings fault until they are unmapped.
    pub fn close(&self) -> Result<()> {
        if self.inner.conn.detached() {
            return Ok(());
        }
        if !self.open.swap(false, Ordering::AcqRel) {
            return Err(Error::invalid("wcfs: file handle already closed"));
        }
        self.inner.close_one()
    }
}

impl std::fmt::Debug for FileH {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileH")
            .field("oid", &self.inner.oid)
            .field("blksize", &self.inner.blksize)
            .finish_non_exhaustive()
    }
}
