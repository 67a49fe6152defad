//! FUSE request handlers.
//!
//! Every handler first checks EIO mode. Head requests follow the rule of
//! the module doc of [`super`]: take the tracker's read side before looking
//! at head and keep it until the reply is sent. `@<tid>` requests never
//! touch the tracker: they load from storage as of their tid.

use super::cache::Key;
use super::reply::{
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
};
use super::tree::{self, Node};
use super::{retain, upload};
use super::{Wcfs, FUTURE_TID_WAIT};
use crate::zdata;
use bytes::Bytes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, OpenAccMode, OpenFlags,
};
use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zodb::bigfile::ZBigFile;
use zodb::{Oid, Tid};

/// Entries and attributes that only change with an explicit invalidation
/// (head files) or never (`@<tid>` views, fixed names).
const TTL_LONG: Duration = Duration::from_secs(3600);
/// Attributes that change with head without invalidation (head/, head/at,
/// stats…): always ask.
const TTL_NONE: Duration = Duration::ZERO;

pub(crate) struct Fs(pub(crate) Arc<Wcfs>);

impl Fs {
    /// Where the filesystem is mounted.
    pub(crate) fn mountpoint(&self) -> &std::path::Path {
        &self.0.mnt
    }

    /// Counts an entry of FUSE over io_uring in or out of service.
    pub(crate) fn ring_entry(&self, serving: bool) {
        if serving {
            self.0.ring_entries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.0.ring_entries.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Time a tid encodes, to the microsecond.
fn tid_time(t: Tid) -> SystemTime {
    let us = (t.unix_time() * 1e6).round();
    if us <= 0.0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::from_micros(us as u64)
}

fn attr(ino: u64, kind: FileType, size: u64, mtime: SystemTime, blksize: u64) -> FileAttr {
    let dir = kind == FileType::Directory;
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind,
        perm: if dir { 0o555 } else { 0o444 },
        nlink: if dir { 2 } else { 1 },
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        rdev: 0,
        blksize: blksize.clamp(512, u32::MAX as u64) as u32,
        flags: 0,
    }
}

/// Whether a failed open of a ZBigFile means "not a ZBigFile here"
/// (EINVAL) rather than trouble with the storage (EIO).
fn is_not_a_file(e: &zdata::Error) -> bool {
    match e {
        zdata::Error::BigFile(e) => e.is_missing() || e.is_class(),
        zdata::Error::Storage(e) => e.is_missing(),
        zdata::Error::OutOfOrder { .. } => false,
    }
}

/// Serves `[off, off+size)` of a file of `fsize` bytes in blocks of
/// `blksize`, each block from `block(blk)`. A request inside one block is
/// answered with a slice of it, without copying.
fn read_blocks<E>(
    off: u64,
    size: u32,
    fsize: u64,
    blksize: u64,
    mut block: impl FnMut(u64) -> Result<Bytes, E>,
) -> Result<Bytes, E> {
    if off >= fsize || size == 0 || blksize == 0 {
        return Ok(Bytes::new());
    }
    let end = fsize.min(off + size as u64);
    let (first, last) = (off / blksize, (end - 1) / blksize);
    let slice = |data: &Bytes, blk: u64, from: u64, to: u64| {
        let base = blk * blksize;
        let (a, b) = ((from - base) as usize, (to - base) as usize);
        // A block is exactly blksize; stay in bounds even if not.
        data.slice(a.min(data.len())..b.min(data.len()))
    };
    if first == last {
        return Ok(slice(&block(first)?, first, off, end));
    }
    let mut buf = Vec::with_capacity((end - off) as usize);
    for blk in first..=last {
        let data = block(blk)?;
        let from = off.max(blk * blksize);
        let to = end.min((blk + 1) * blksize);
        let part = slice(&data, blk, from, to);
        buf.extend_from_slice(&part);
        // Zero-fill if a block came back short.
        buf.resize((to - off) as usize, 0);
    }
    Ok(Bytes::from(buf))
}

impl Fs {
    fn w(&self) -> &Wcfs {
        &self.0
    }

    /// Content of a fixed text file.
    fn text(&self, ino: u64) -> Option<Vec<u8>> {
        let w = self.w();
        Some(match ino {
            tree::HEAD_AT => w.head_at().to_string().into_bytes(),
            tree::ZURL => w.zurl.clone().into_bytes(),
            tree::PINTIMEOUT => format!("{:.1}", w.opts.pintimeout.as_secs_f64()).into_bytes(),
            tree::STATS => {
                let (nbigfile, nrev) = {
                    let t = w.tree.lock();
                    (t.nbigfile(), t.nrevhead())
                };
                let stats = [
                    ("BigFile", nbigfile),
                    ("RevHead", nrev),
                    ("ZHeadLink", w.zhead.count()),
                    ("WatchLink", w.iso.nlinks()),
                    ("Watch", w.iso.nwatch()),
                    ("PinnedBlk", w.iso.npinned()),
                    ("pin", w.iso.npin() as usize),
                    ("pinkill", w.iso.npinkill() as usize),
                    ("FuseRingEntry", w.ring_entries.load(Ordering::Relaxed)),
                ];
                // The storage's life with its server (networked ones).
                let storage = w.storage.counters();
                stats
                    .iter()
                    .map(|(k, v)| (*k, *v as u64))
                    .chain(storage)
                    .map(|(k, v)| format!("{k}\t: {v}\n"))
                    .collect::<String>()
                    .into_bytes()
            }
            _ => return None,
        })
    }

    /// Attributes of a node that does not need the tracker.
    fn plain_attr(&self, ino: u64) -> Option<(FileAttr, Duration)> {
        let w = self.w();
        let head_time = || tid_time(w.head_at());
        let tree = w.tree.lock();
        if let Some(kind) = tree.fixed_kind(ino) {
            drop(tree);
            let size = match kind {
                FileType::Directory => 0,
                _ => self.text(ino).map_or(0, |t| t.len() as u64),
            };
            let mut a = attr(ino, kind, size, head_time(), 4096);
            if ino == tree::HEAD_WATCH {
                a.perm = 0o666; // every client opens it read-write
            }
            return Some((a, TTL_NONE));
        }
        match tree.get(ino)? {
            Node::RevDir { at, .. } | Node::RevBigfileDir { at, .. } => Some((
                attr(ino, FileType::Directory, 0, tid_time(*at), 4096),
                TTL_LONG,
            )),
            Node::RevFile {
                file, size, rev, ..
            } => Some((
                attr(
                    ino,
                    FileType::RegularFile,
                    *size,
                    tid_time(*rev),
                    file.blksize(),
                ),
                TTL_LONG,
            )),
            Node::HeadFile { .. } | Node::Fixed => None,
        }
    }

    fn lookup_head_file(&self, name: &str, reply: ReplyEntry) {
        let w = self.w();
        let Ok(oid) = name.parse::<Oid>() else {
            return reply.error(Errno::EINVAL);
        };
        let t = w.tracker.read();
        if w.failed() {
            return reply.error(Errno::EIO);
        }
        let info = match t.open_file(oid) {
            Ok(info) => info,
            Err(e) if is_not_a_file(&e) => {
                log::debug!("lookup head/bigfile/{name}: {e}");
                return reply.error(Errno::EINVAL);
            }
            Err(e) => {
                log::error!("lookup head/bigfile/{name}: {e}");
                return reply.error(Errno::EIO);
            }
        };
        let ino = {
            let mut tree = w.tree.lock();
            let ino = tree.head_file(oid);
            tree.looked_up(ino);
            ino
        };
        let a = attr(
            ino,
            FileType::RegularFile,
            info.size,
            tid_time(info.rev),
            info.blksize,
        );
        reply.entry(&TTL_LONG, &a, Generation(0));
        drop(t); // only after the reply: see the module doc
    }

    fn lookup_rev_dir(&self, name: &str, reply: ReplyEntry) {
        let w = self.w();
        let Ok(at) = name.parse::<Tid>() else {
            return reply.error(Errno::EINVAL);
        };
        // A view newer than head would change under the client's feet as
        // transactions ≤ its tid arrive: wait for head to get there.
        if at > w.head_at() && !w.wait_head(at, FUTURE_TID_WAIT) {
            log::warn!("lookup @{name}: newer than head @{} (waited)", w.head_at());
            return reply.error(Errno::EINVAL);
        }
        if w.failed() {
            return reply.error(Errno::EIO);
        }
        let ino = {
            let mut tree = w.tree.lock();
            let ino = tree.rev_dir(at);
            tree.looked_up(ino);
            ino
        };
        let a = attr(ino, FileType::Directory, 0, tid_time(at), 4096);
        reply.entry(&TTL_LONG, &a, Generation(0));
    }

    fn lookup_rev_file(&self, dir: u64, at: Tid, name: &str, reply: ReplyEntry) {
        let w = self.w();
        let Ok(oid) = name.parse::<Oid>() else {
            return reply.error(Errno::EINVAL);
        };
        let existing = {
            let mut tree = w.tree.lock();
            tree.rev_file_ino(dir, oid)
                .inspect(|&ino| tree.looked_up(ino))
        };
        if let Some(ino) = existing {
            return match self.plain_attr(ino) {
                Some((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            };
        }
        let st = &*w.storage;
        let loaded = ZBigFile::load(st, oid, at).and_then(|f| Ok((f, f.size(st, at)?)));
        let (file, size) = match loaded {
            Ok(x) => x,
            Err(e) if e.is_missing() || e.is_class() => {
                log::debug!("lookup @{at}/bigfile/{name}: {e}");
                return reply.error(Errno::EINVAL);
            }
            Err(e) => {
                log::error!("lookup @{at}/bigfile/{name}: {e}");
                return reply.error(Errno::EIO);
            }
        };
        let rev = file.serial().max(size.max_serial);
        let ino = {
            let mut tree = w.tree.lock();
            let ino = tree.rev_file(dir, oid, file, size.size, rev);
            tree.looked_up(ino);
            ino
        };
        let a = attr(
            ino,
            FileType::RegularFile,
            size.size,
            tid_time(rev),
            file.blksize(),
        );
        reply.entry(&TTL_LONG, &a, Generation(0));
    }

    fn read_head(&self, ino: u64, oid: Oid, off: u64, size: u32, reply: ReplyData) {
        let w = self.w();
        let t = w.tracker.read();
        if w.failed() {
            return reply.error(Errno::EIO);
        }
        let Some(info) = t.file_info(oid) else {
            log::error!("read head/bigfile/{oid}: file not tracked");
            return reply.error(Errno::EIO);
        };
        // Under the read side: the head these loads see.
        let epoch = w.uploads.epoch();
        w.prefetch
            .touched(ino, oid, None, off, info.size, info.blksize);
        let mut served = Vec::new();
        let r = read_blocks(off, size, info.size, info.blksize, |blk| {
            let key = Key {
                file: oid,
                blk,
                at: None,
            };
            let data = w
                .cache
                .get(key, || t.load_block(oid, blk).map(|b| b.data))
                .map_err(|e| (blk, e))?;
            served.push((blk, data.clone()));
            Ok(data)
        });
        if r.is_ok() && size > 0 && info.blksize > 0 {
            // Before the reply: watchers must not see this head data. Past
            // head's end too: while a shrink is being applied, the kernel
            // still has the old size, zero-fills what we do not return and
            // maps it — a watcher whose `at` has data there must be pinned
            // first (an untracked block pins `@<at>`, always right).
            let end = off.saturating_add(size as u64);
            w.iso
                .pin_read(&t, oid, off / info.blksize..=(end - 1) / info.blksize);
        }
        match r {
            Ok(data) => {
                // After the pins: the rest of the blocks is head data too.
                self.upload_rest(ino, off, size, info.size, info.blksize, served, Some(epoch));
                reply.data(&data)
            }
            Err((blk, e)) => {
                log::error!("read head/bigfile/{oid} blk #{blk}: {e}");
                reply.error(Errno::EIO);
            }
        }
        drop(t); // only after the reply: see the module doc
    }

    /// Whether a read of head/bigfile/`oid` would now wait for a pin ack:
    /// a watcher must not see the head data of a block the read touches,
    /// and is not pinned there yet.
    fn read_would_pin(&self, oid: Oid, off: u64, size: u32) -> bool {
        let w = self.w();
        if !w.iso.has_watchers(oid) {
            return false;
        }
        let t = w.tracker.read();
        let Some(info) = t.file_info(oid) else {
            return false; // read_head answers the error
        };
        if size == 0 || info.blksize == 0 {
            return false;
        }
        let end = off.saturating_add(size as u64);
        w.iso
            .would_pin(&t, oid, off / info.blksize..=(end - 1) / info.blksize)
    }

    /// Queues, for the page cache, the parts of the blocks a request
    /// touched that it did not cover (see [`super::upload`]): the kernel
    /// asked for a page it lacks, so it likely lacks the rest of the block.
    #[allow(clippy::too_many_arguments)]
    fn upload_rest(
        &self,
        ino: u64,
        off: u64,
        size: u32,
        fsize: u64,
        blksize: u64,
        blocks: Vec<(u64, Bytes)>,
        head_epoch: Option<u64>,
    ) {
        let req_end = off.saturating_add(size as u64);
        for (blk, data) in blocks {
            let base = blk * blksize;
            let end = fsize.min(base + blksize).min(base + data.len() as u64);
            let parts = upload::outside(base, end, off, req_end)
                .into_iter()
                .map(|(o, len)| {
                    let from = (o - base) as usize;
                    (o, data.slice(from..from + len as usize))
                })
                .collect();
            self.w().uploads.upload(
                self.w(),
                upload::Job {
                    ino,
                    blk_off: base,
                    parts,
                    head_epoch,
                },
            );
        }
    }

    fn read_rev(&self, ino: u64, off: u64, size: u32, reply: ReplyData) {
        let w = self.w();
        let node = w.tree.lock().get(ino).cloned();
        let Some(Node::RevFile {
            at,
            oid,
            file,
            size: fsize,
            ..
        }) = node
        else {
            return reply.error(Errno::EIO);
        };
        let st = &*w.storage;
        w.prefetch
            .touched(ino, oid, Some(at), off, fsize, file.blksize());
        let mut served = Vec::new();
        let r = read_blocks(off, size, fsize, file.blksize(), |blk| {
            let key = Key {
                file: oid,
                blk,
                at: Some(at),
            };
            let data = w
                .cache
                .get(key, || file.load_block(st, blk, at).map(|b| b.data))
                .map_err(|e| (blk, e))?;
            served.push((blk, data.clone()));
            Ok(data)
        });
        match r {
            Ok(data) => {
                self.upload_rest(ino, off, size, fsize, file.blksize(), served, None);
                reply.data(&data)
            }
            Err((blk, e)) => {
                log::error!("read @{at}/bigfile/{oid} blk #{blk}: {e}");
                reply.error(Errno::EIO);
            }
        }
    }
}

/// The handlers, one per request kind, whichever transport brought it
/// ([`super::dev`] or [`super::uring`]).
impl Fs {
    pub(crate) fn lookup(&self, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let w = self.w();
        let _busy = w.activity.request();
        if w.failed() {
            return reply.error(Errno::EIO);
        }
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        let fixed = {
            let tree = w.tree.lock();
            tree.fixed_children(parent)
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, ino)| ino)
        };
        if let Some(ino) = fixed {
            let Some((a, ttl)) = self.plain_attr(ino) else {
                return reply.error(Errno::ENOENT);
            };
            w.tree.lock().looked_up(ino);
            // Fixed names never go away; their attributes are re-asked.
            return reply.entry_with_ttls(&TTL_LONG, &ttl, &a, Generation(0));
        }
        if parent == tree::ROOT {
            return match name.strip_prefix('@') {
                Some(tid) => self.lookup_rev_dir(tid, reply),
                None => reply.error(Errno::ENOENT),
            };
        }
        if parent == tree::HEAD_BIGFILE {
            return self.lookup_head_file(name, reply);
        }
        let node = w.tree.lock().get(parent).cloned();
        match node {
            Some(Node::RevDir { .. }) if name == "bigfile" => {
                let ino = {
                    let mut tree = w.tree.lock();
                    let ino = tree.rev_bigfile_dir(parent);
                    if let Some(ino) = ino {
                        tree.looked_up(ino);
                    }
                    ino
                };
                match ino.and_then(|ino| self.plain_attr(ino)) {
                    Some((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                    None => reply.error(Errno::ENOENT),
                }
            }
            Some(Node::RevBigfileDir { at, .. }) => self.lookup_rev_file(parent, at, name, reply),
            Some(Node::HeadFile { .. } | Node::RevFile { .. }) => reply.error(Errno::ENOTDIR),
            _ => reply.error(Errno::ENOENT),
        }
    }

    pub(crate) fn forget(&self, ino: u64, nlookup: u64) {
        let _busy = self.w().activity.request();
        self.w().tree.lock().forget(ino, nlookup);
    }

    pub(crate) fn getattr(&self, ino: u64, reply: ReplyAttr) {
        let w = self.w();
        let _busy = w.activity.request();
        if w.failed() {
            return reply.error(Errno::EIO);
        }
        let node = w.tree.lock().get(ino).cloned();
        if let Some(Node::HeadFile { oid }) = node {
            let t = w.tracker.read();
            if w.failed() {
                return reply.error(Errno::EIO);
            }
            let Some(info) = t.file_info(oid) else {
                return reply.error(Errno::EIO);
            };
            let a = attr(
                ino,
                FileType::RegularFile,
                info.size,
                tid_time(info.rev),
                info.blksize,
            );
            reply.attr(&TTL_LONG, &a);
            drop(t); // only after the reply: see the module doc
            return;
        }
        match self.plain_attr(ino) {
            Some((a, ttl)) => reply.attr(&ttl, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    pub(crate) fn open(&self, pid: u32, ino: u64, flags: OpenFlags, reply: ReplyOpen) {
        let w = self.w();
        let _busy = w.activity.request();
        if w.failed() {
            return reply.error(Errno::EIO);
        }
        if ino == tree::HEAD_WATCH {
            // One open, one link: a stream, never cached.
            let fh = w.iso.open(pid);
            w.activity.opened();
            return reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO
                    | FopenFlags::FOPEN_NONSEEKABLE
                    | FopenFlags::FOPEN_STREAM,
            );
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EPERM);
        }
        let node = w.tree.lock().get(ino).cloned();
        let own = pid as i32 == w.watcher_tid.load(std::sync::atomic::Ordering::Acquire);
        let (fh, fflags) = match (ino, node) {
            // Opening again must not drop what the kernel caches.
            (_, Some(Node::HeadFile { .. } | Node::RevFile { .. })) => (
                if own { retain::OWN_FH } else { 0 },
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            (tree::ZHEAD, Some(_)) if w.opts.debug => (
                w.zhead.open(),
                FopenFlags::FOPEN_DIRECT_IO
                    | FopenFlags::FOPEN_NONSEEKABLE
                    | FopenFlags::FOPEN_STREAM,
            ),
            // Small text files: always fresh, never cached.
            (tree::HEAD_AT | tree::ZURL | tree::PINTIMEOUT | tree::STATS, _) => {
                (0, FopenFlags::FOPEN_DIRECT_IO)
            }
            (_, Some(_)) => return reply.error(Errno::EISDIR),
            (_, None) => return reply.error(Errno::ENOENT),
        };
        // Counted before the reply: the release cannot come before it.
        w.activity.opened();
        reply.opened(FileHandle(fh), fflags);
    }

    pub(crate) fn opendir(&self, reply: ReplyOpen) {
        let w = self.w();
        let _busy = w.activity.request();
        // A directory handle is a client too (-autoexit), as fuser's default.
        w.activity.opened();
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    pub(crate) fn releasedir(&self, reply: ReplyEmpty) {
        let w = self.w();
        let _busy = w.activity.request();
        w.activity.released();
        reply.ok();
    }

    /// `may_block`: the caller's thread may wait for pin acks (a ring
    /// thread: another entry takes the next request), else such a read
    /// goes to the offload pool.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read(
        &self,
        pid: u32,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        may_block: bool,
        reply: ReplyData,
    ) {
        let w = self.w();
        if fh == retain::OWN_FH {
            // The watcher reading old data from the page cache: what is not
            // there is not loaded (it may be waiting for the write side).
            return reply.error(Errno::EIO);
        }
        let _busy = w.activity.request();
        if w.failed() {
            return reply.error(Errno::EIO);
        }
        if ino == tree::ZHEAD {
            return w.zhead.read(fh, size as usize, pid, reply);
        }
        if ino == tree::HEAD_WATCH {
            return w.iso.read(fh, size, pid, reply);
        }
        if let Some(text) = self.text(ino) {
            let off = (offset as usize).min(text.len());
            let end = (off + size as usize).min(text.len());
            return reply.data(&text[off..end]);
        }
        let node = w.tree.lock().get(ino).cloned();
        match node {
            Some(Node::HeadFile { oid })
                if !may_block && self.read_would_pin(oid, offset, size) =>
            {
                // It waits for pin acks: not on a FUSE worker (see the
                // module doc of `super`). A commit or a watch right after
                // this check makes a read pin on the worker: still
                // correct, bounded by the pin timeout.
                let fs = Fs(self.0.clone());
                w.offload
                    .run(move || fs.read_head(ino, oid, offset, size, reply));
            }
            Some(Node::HeadFile { oid }) => self.read_head(ino, oid, offset, size, reply),
            Some(Node::RevFile { .. }) => self.read_rev(ino, offset, size, reply),
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    pub(crate) fn flush(&self, pid: u32, ino: u64, fh: u64, reply: ReplyEmpty) {
        let _busy = self.w().activity.request();
        if ino == tree::ZHEAD {
            self.w().zhead.unpark(Some(fh), Errno::EINTR);
        }
        if ino == tree::HEAD_WATCH {
            self.w().iso.flush(fh, pid);
        }
        reply.ok();
    }

    pub(crate) fn release(&self, ino: u64, fh: u64, reply: ReplyEmpty) {
        let w = self.w();
        let _busy = w.activity.request();
        if ino == tree::ZHEAD {
            w.zhead.release(fh);
        }
        if ino == tree::HEAD_WATCH {
            w.iso.release(fh);
        }
        w.activity.released();
        reply.ok();
    }

    pub(crate) fn write(&self, ino: u64, fh: u64, data: &[u8], reply: ReplyWrite) {
        let w = self.w();
        let _busy = w.activity.request();
        if w.failed() {
            return reply.error(Errno::EIO);
        }
        if ino != tree::HEAD_WATCH {
            return reply.error(Errno::EBADF);
        }
        match w.iso.write(fh, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    pub(crate) fn readdir(&self, ino: u64, offset: u64, mut reply: ReplyDirectory) {
        let w = self.w();
        let _busy = w.activity.request();
        if w.failed() {
            return reply.error(Errno::EIO);
        }
        let tree = w.tree.lock();
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ino, FileType::Directory, ".".into()),
            (tree::ROOT, FileType::Directory, "..".into()),
        ];
        match tree.get(ino) {
            Some(Node::Fixed) => {
                for (name, child) in tree.fixed_children(ino) {
                    let kind = tree.fixed_kind(child).unwrap_or(FileType::RegularFile);
                    entries.push((child, kind, name.into()));
                }
            }
            Some(Node::RevDir { bigfile, .. }) => {
                // Not looked up yet: any number will do, the kernel looks
                // the name up before using it.
                entries.push((
                    bigfile.unwrap_or(u64::MAX),
                    FileType::Directory,
                    "bigfile".into(),
                ));
            }
            // head/bigfile/ and @<tid>/bigfile/: entries appear on lookup.
            Some(Node::RevBigfileDir { .. }) => {}
            Some(_) => return reply.error(Errno::ENOTDIR),
            None => return reply.error(Errno::ENOENT),
        }
        drop(tree);
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    /// `other`: any change besides mode, owner and size (times…).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        other: bool,
        reply: ReplyAttr,
    ) {
        let _busy = self.w().activity.request();
        // O_TRUNC of head/watch (a stream, always empty) changes nothing.
        let only_trunc = size == Some(0) && [mode, uid, gid].iter().all(Option::is_none) && !other;
        if ino == tree::HEAD_WATCH && only_trunc {
            if let Some((a, ttl)) = self.plain_attr(ino) {
                return reply.attr(&ttl, &a);
            }
        }
        reply.error(Errno::EPERM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_blocks_ranges() {
        // 3 blocks of 4 bytes: "aaaa" "bbbb" "cc" (file size 10).
        let blocks = [b"aaaa", b"bbbb", b"cc\0\0"];
        let rd = |off, size| {
            read_blocks(off, size, 10, 4, |blk| {
                Ok::<_, ()>(Bytes::from_static(blocks[blk as usize]))
            })
            .unwrap()
        };
        assert_eq!(&rd(0, 4)[..], b"aaaa");
        assert_eq!(&rd(1, 2)[..], b"aa");
        assert_eq!(&rd(2, 4)[..], b"aabb");
        assert_eq!(&rd(0, 100)[..], b"aaaabbbbcc");
        assert_eq!(&rd(9, 100)[..], b"c");
        assert_eq!(&rd(10, 100)[..], b"");
        assert_eq!(&rd(1000, 1)[..], b"");
    }

    #[test]
    fn tid_times() {
        // 2024-01-01 00:00:00 UTC: minutes since 1900 in the tid encoding.
        let minutes = (((2024 - 1900) * 12) * 31) * 24 * 60;
        let t = Tid((minutes as u64) << 32 | (1u64 << 31)); // +30 s
        let d = tid_time(t).duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_micros(), 1_704_067_230_000_000);
    }
}
