//! Keeping the old data of a changed block in memory (SPEC §5 "The page
//! cache is precious").
//!
//! When a transaction changes a block the kernel caches for
//! `head/bigfile/<oid>`, the invalidation drops the only copy of the old
//! data in memory — and the clients that stay at an older `at` are exactly
//! the ones that need it: they are pinned to `@<blkrev>/bigfile/<oid>`
//! (blkrev as of the old head) and would load it from the storage again.
//! So before invalidating, the watcher copies the old data of the changed
//! blocks and stores it into the page cache of that `@<blkrev>` file.
//!
//! This is done for every head file the kernel holds, watched or not (as
//! upstream does): a client may open `@<rev>` on its own, and one that
//! starts watching later at an older `at` is pinned there too. Only blocks
//! cached whole move: a partly cached block would have to be completed
//! from the storage, which is what the client's own read does anyway.
//!
//! # Moved, not doubled
//!
//! The bytes move from head's page cache to the `@<rev>` file's; the daemon
//! holds them only between the copy and the store, one commit at a time:
//!
//! - a block still in the daemon's block cache is taken out of it (the
//!   head entry goes anyway, it is stale): no copy at all, and nothing is
//!   put back under `@<rev>` keys — the kernel holds it now;
//! - otherwise it is read from head's page cache into a buffer that is
//!   dropped as soon as it is stored.
//!
//! Until head is invalidated right after, the kernel holds both copies: one
//! commit's changed blocks, for a moment. Reads are capped per commit at
//! [`READ_BUDGET`] bytes (and by the deadline below), so that a commit
//! changing a large cached part of the database cannot make the daemon
//! allocate as much: the blocks past the cap are not kept, their clients
//! load them from the storage (correct, only slower).
//!
//! The cost to a commit: before the lock, one open of each head file the
//! kernel holds that the transaction may change; under the write side, a
//! `mincore` per changed block of those and the copies above (bounded by
//! the deadline and the budget); after it, one open of each `@<rev>` file
//! that receives blocks (its lookup may load the file object at that
//! revision) and the stores. A commit changing no block the kernel holds
//! costs the opens only.
//!
//! # Where the old bytes come from
//!
//! fuser cannot retrieve the kernel's cache (no `FUSE_NOTIFY_RETRIEVE`),
//! so the watcher reads it like any process would — with `pread` on its own
//! descriptor of the head file — or takes the block from the daemon's
//! block cache when it is still there. Both are exact only while head has
//! not moved for anyone: under the tracker's write side, right after the
//! apply, with head uploads paused. Then no read can be answered (handlers
//! wait for the read side) and nothing is stored into head: every page in
//! the cache is as of the old head.
//!
//! Reading there must not wait for our own handlers:
//!
//! - a page missing from the cache would make the kernel ask *us*. The
//!   descriptor is opened by the watcher thread, so its opens get a handle
//!   of their own ([`OWN_FH`]) whose reads are refused with `EIO` at once,
//!   without any lock: the `pread` then fails and the block is skipped.
//!   `mincore` first skips blocks not cached whole;
//! - a page evicted and re-requested by another reader between `mincore`
//!   and `pread` is locked until that reader's request is answered — which
//!   waits for the read side we hold. So the `pread`s run on a helper
//!   thread and the watcher waits for them with a deadline; what is not
//!   read by then is given up (the helper's late results are thrown away:
//!   they may already be new data).
//!
//! The descriptors are opened before the apply, holding no lock (the open
//! looks the file up, which takes the read side): for the files the
//! transaction may change ([`crate::zdata::Tracker::files_depending_on`])
//! whose head inode the kernel holds (a forgotten inode has no pages).
//!
//! # Storing
//!
//! After the write side is released, with no lock held: the watcher opens
//! `@<blkrev>/bigfile/<oid>` through the mount (so that the kernel knows
//! its inode; `FUSE_NOTIFY_STORE` only fills inodes the kernel has), stores
//! the block — never past that file's size, which would grow it — and
//! closes it. The stored pages wait only for reads of `@<rev>` files in
//! flight, which do not involve the tracker's lock nor any client. A
//! commit thus never waits for a client here, and at most for the deadline
//! above for a page read.

use super::tree::Node;
use super::Wcfs;
use crate::zdata::{FileDelta, Tracker};
use bytes::Bytes;
use fuser::INodeNo;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

/// File handle of the daemon's own opens: reads of it are refused (EIO).
pub(crate) const OWN_FH: u64 = u64::MAX;

/// How long the watcher waits, under the write side, for old pages.
const READ_DEADLINE: Duration = Duration::from_millis(100);

/// Bytes read from head's page cache per commit, at most (64 blocks of
/// wendelin's 2 MiB): bounds the daemon's transient copy.
const READ_BUDGET: u64 = 128 << 20;

/// The daemon's descriptor of a head file, opened before the apply.
pub(crate) struct HeadFd {
    oid: Oid,
    file: Arc<File>,
    /// Size of the file when opened (the kernel's).
    size: u64,
}

/// Old data of one block and where it goes.
pub(crate) struct Kept {
    oid: Oid,
    blk: u64,
    blksize: u64,
    rev: Tid,
    data: Bytes,
}

/// Before the apply, holding no lock: descriptors of the head files the
/// kernel holds that the transaction changing `oids` may change.
pub(crate) fn open_heads(wcfs: &Wcfs, oids: &[Oid]) -> Vec<HeadFd> {
    let files = wcfs.tracker.read().files_depending_on(oids);
    let mut out = Vec::new();
    for oid in files {
        // A head inode the kernel does not hold has no pages.
        if wcfs.tree.lock().head_file_held(oid).is_none() {
            continue;
        }
        let path = wcfs.mnt.join(format!("head/bigfile/{oid}"));
        match File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((size, f)) => out.push(HeadFd {
                oid,
                file: Arc::new(f),
                size,
            }),
            Err(e) => log::debug!("keep old data: open {}: {e}", path.display()),
        }
    }
    out
}

/// Whether every page of `[off, off+len)` of `f` is in the page cache.
fn cached_whole(f: &File, size: u64, off: u64, len: u64) -> bool {
    if len == 0 || off + len > size {
        return false;
    }
    let page = 4096u64;
    let (a, b) = (off / page * page, (off + len).div_ceil(page) * page);
    // SAFETY: a private read-only mapping of a range inside the file's
    // size, never touched: only mincore looks at it; unmapped on drop.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(a)
            .len((b - a) as usize)
            .map(f)
    };
    let Ok(map) = map else { return false };
    let mut vec = vec![0u8; ((b - a) / page) as usize];
    // SAFETY: `map` is a live mapping of exactly vec.len() pages.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            vec.as_mut_ptr(),
        )
    };
    rc == 0 && vec.iter().all(|v| v & 1 != 0)
}

/// Under the write side, right after `Tracker::apply` moved head from
/// `old_head` (head uploads paused): the old data of every changed block
/// of `heads`' files — from `from_cache` (the block cache's old head
/// entries) or read from the page cache.
pub(crate) fn collect(
    t: &Tracker,
    old_head: Tid,
    deltas: &[FileDelta],
    heads: &[HeadFd],
    mut from_cache: HashMap<(Oid, u64), Bytes>,
) -> Vec<Kept> {
    let mut kept = Vec::new();
    let mut reads = Vec::new();
    let (mut budget, mut over) = (READ_BUDGET, 0usize);
    for d in deltas.iter().filter(|d| !d.reset) {
        let Some(h) = heads.iter().find(|h| h.oid == d.file) else {
            continue;
        };
        let Some(blksize) = t.file_info(d.file).map(|i| i.blksize) else {
            continue;
        };
        for &blk in &d.blocks {
            let off = blk * blksize;
            let len = blksize.min(h.size.saturating_sub(off));
            // Only what the kernel holds: the block cache may have blocks
            // loaded ahead that no reader got.
            if !cached_whole(&h.file, h.size, off, len) {
                continue;
            }
            let rev = t.blkrev(d.file, blk, old_head);
            match from_cache.remove(&(d.file, blk)) {
                Some(data) => kept.push(Kept {
                    oid: d.file,
                    blk,
                    blksize,
                    rev,
                    data,
                }),
                None if budget >= len => {
                    budget -= len;
                    reads.push((h.file.clone(), d.file, blk, blksize, rev, off, len));
                }
                None => over += 1,
            }
        }
    }
    if over > 0 {
        log::debug!("keep old data: {over} block(s) past the {READ_BUDGET}-byte budget not kept");
    }
    if reads.is_empty() {
        return kept;
    }
    // The reads, on a helper we wait for no longer than the deadline.
    let n = reads.len();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("keep-old".into())
        .spawn(move || {
            for (f, oid, blk, blksize, rev, off, len) in reads {
                let mut buf = vec![0u8; len as usize];
                let ok = f.read_exact_at(&mut buf, off).is_ok();
                let k = ok.then(|| Kept {
                    oid,
                    blk,
                    blksize,
                    rev,
                    data: Bytes::from(buf),
                });
                if tx.send(k).is_err() {
                    return; // given up on: these may be new data now
                }
            }
        });
    if let Err(e) = spawned {
        log::debug!("keep old data: spawn: {e}");
        return kept;
    }
    let deadline = Instant::now() + READ_DEADLINE;
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(k)) => kept.push(k),
            Ok(None) => {} // not cached any more: skipped
            Err(_) => {
                log::debug!("keep old data: page reads past {READ_DEADLINE:?}; rest given up");
                break;
            }
        }
    }
    kept
}

/// With no lock held: stores the kept blocks into their `@<rev>` files.
pub(crate) fn store(wcfs: &Wcfs, kept: Vec<Kept>) {
    let Some(n) = wcfs.notifier.get() else { return };
    let mut by_file: BTreeMap<(Tid, Oid), Vec<Kept>> = BTreeMap::new();
    for k in kept {
        by_file.entry((k.rev, k.oid)).or_default().push(k);
    }
    for ((rev, oid), blocks) in by_file {
        let path = wcfs.mnt.join(format!("@{rev}/bigfile/{oid}"));
        // Held open while storing: the kernel keeps the inode.
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                log::debug!("keep old data: open {}: {e}", path.display());
                continue;
            }
        };
        let Some((ino, size)) = rev_file(wcfs, rev, oid) else {
            continue;
        };
        for k in blocks {
            let off = k.blk * k.blksize;
            let len = (k.data.len() as u64).min(size.saturating_sub(off));
            if len == 0 {
                continue;
            }
            match n.store(INodeNo(ino), off, &k.data[..len as usize]) {
                Ok(()) => log::debug!("keep old data: @{rev}/bigfile/{oid} blk #{} stored", k.blk),
                Err(e) => log::debug!(
                    "keep old data: store {} blk #{}: {e}",
                    path.display(),
                    k.blk
                ),
            }
        }
        drop(f);
    }
}

/// Inode and size of `@<rev>/bigfile/<oid>` in our tree.
fn rev_file(wcfs: &Wcfs, rev: Tid, oid: Oid) -> Option<(u64, u64)> {
    let tree = wcfs.tree.lock();
    let dir = tree.rev_dir_ino(rev)?;
    let bigfile = match tree.get(dir)? {
        Node::RevDir { bigfile, .. } => (*bigfile)?,
        _ => return None,
    };
    let ino = tree.rev_file_ino(bigfile, oid)?;
    match tree.get(ino)? {
        Node::RevFile { size, .. } => Some((ino, *size)),
        _ => None,
    }
}
