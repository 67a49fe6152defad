//! The database watcher: applies every commit to head/, in the order the
//! module doc of [`super`] explains —
//!
//! 1. with head uploads paused ([`super::upload`]), under the tracker's
//!    write lock: `Tracker::apply`, drop the changed head blocks from the
//!    block cache, trim history;
//!    the old data of changed blocks the kernel caches is copied on the
//!    way ([`super::retain`]) and stored into `@<blkrev>` files after the
//!    lock;
//! 2. with no lock held: invalidate in the kernel the changed blocks of
//!    every head file it may cache (the whole file on a reset), then their
//!    attributes (size, mtime);
//! 3. publish the tid in `head/at` (and to zhead streams).
//!
//! Any failure — of the watcher, of applying, of a notification — means we
//! can no longer vouch for what the kernel caches: EIO mode, then exit.

use super::{retain, Wcfs};
use crate::zdata::FileDelta;
use fuser::INodeNo;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use zodb::{Commit, Oid, Tid, Watcher};

/// History the tracker keeps behind head (SPEC §5: at least a minute; and
/// back to the oldest `at` a watch holds).
/// A tid's high 32 bits count minutes.
const KEEP_MINUTES: u64 = 2;

pub(crate) fn run(wcfs: Arc<Wcfs>, mut w: Box<dyn Watcher>) {
    // Our own opens of files on the mount come from this thread.
    wcfs.watcher_tid
        .store(nix::unistd::gettid().as_raw(), Ordering::Release);
    loop {
        let commit = match w.next_timeout(Duration::from_secs(1)) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => return fail(&wcfs, &e.to_string()),
        };
        if let Err(why) = handle(&wcfs, &commit) {
            return fail(&wcfs, &why);
        }
    }
}

fn handle(wcfs: &Wcfs, c: &Commit) -> Result<(), String> {
    // Descriptors to read the old data of changed head files from (before
    // any lock: opening looks the files up).
    let heads = retain::open_heads(wcfs, &c.oids);

    // 1. Apply, excluding every head request and every head upload.
    let gate = wcfs.uploads.close();
    let (changes, old_sizes, kept) = {
        let mut t = wcfs.tracker.write();
        let old_head = t.head();
        let old_sizes: HashMap<Oid, u64> = t
            .files()
            .into_iter()
            .filter_map(|f| Some((f, t.file_info(f)?.size)))
            .collect();
        let deltas = t.apply(c).map_err(|e| format!("apply @{}: {e}", c.tid))?;
        wcfs.uploads.bump_epoch();
        let mut old_blocks = HashMap::new();
        for d in &deltas {
            let dropped = wcfs
                .cache
                .forget_head(d.file, if d.reset { None } else { Some(&d.blocks) });
            old_blocks.extend(dropped.into_iter().map(|(blk, b)| ((d.file, blk), b)));
        }
        // Before trim: blkrev as of the old head.
        let kept = if heads.is_empty() {
            Vec::new()
        } else {
            retain::collect(&t, old_head, &deltas, &heads, old_blocks)
        };
        // Keep history back to the oldest watched at (SPEC §5).
        let keep = Tid(c.tid.0.saturating_sub(KEEP_MINUTES << 32));
        t.trim(wcfs.iso.oldest_at().map_or(keep, |o| o.min(keep)));
        let changes: Vec<(u64, FileDelta)> = deltas
            .into_iter()
            .map(|d| (t.file_info(d.file).map_or(0, |i| i.blksize), d))
            .collect();
        (changes, old_sizes, kept)
    };
    drop(gate);

    // The old data of changed cached blocks into their @<rev> files,
    // before head drops it (and before anyone is pinned there by a read).
    retain::store(wcfs, kept);
    drop(heads);

    // 2. Invalidate, holding no lock (in-flight reads hold page locks).
    let inos: Vec<Option<u64>> = {
        let tree = wcfs.tree.lock();
        changes
            .iter()
            .map(|(_, d)| tree.head_file_ino(d.file))
            .collect()
    };
    if let Some(n) = wcfs.notifier.get() {
        let inval = |ino: u64, off: i64, len: i64| {
            n.inval_inode(INodeNo(ino), off, len)
                .map_err(|e| format!("invalidate inode {ino} [{off}+{len}]: {e}"))
        };
        for ((blksize, d), ino) in changes.iter().zip(&inos) {
            let Some(ino) = *ino else { continue };
            if d.reset || *blksize == 0 {
                inval(ino, 0, 0)?;
                continue;
            }
            for &blk in &d.blocks {
                inval(ino, (blk * blksize) as i64, *blksize as i64)?;
            }
            // When the size changes, the page holding the old end of file
            // may be cached with zeros past that end (blocks smaller than a
            // page, or any size not page-aligned); the blocks that now fill
            // it were never read, so they are not tracked. Drop everything
            // from the old (or new, when shrinking) end on: only data
            // beyond the shorter size, which no reader could have seen.
            if let Some(new) = d.size {
                let old = old_sizes.get(&d.file).copied().unwrap_or(0);
                inval(ino, old.min(new) as i64, 0)?;
            }
        }
        for ino in inos.iter().flatten() {
            inval(*ino, -1, 0)?;
        }
    }
    log::debug!(
        "@{}: {} file(s) changed: {}",
        c.tid,
        changes.len(),
        changes
            .iter()
            .map(|(_, d)| format!(
                "{}{}{}",
                d.file,
                if d.reset { " reset" } else { "" },
                d.size.map(|s| format!(" size={s}")).unwrap_or_default()
            ) + &format!(" blocks={:?}", d.blocks))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // 3. Only now may head/at show the new tid.
    *wcfs.published.lock() = c.tid;
    wcfs.published_cond.notify_all();
    wcfs.zhead.push(c.tid);
    Ok(())
}

/// EIO mode, drop every head page the kernel holds, exit.
pub(super) fn fail(wcfs: &Wcfs, why: &str) {
    log::error!("zwatcher failed: {why}");
    log::error!("switching filesystem to EIO mode");
    {
        // Wait out in-flight head requests and uploads: after this no old
        // data can reach the kernel.
        let _gate = wcfs.uploads.close();
        let _t = wcfs.tracker.write();
        wcfs.failed.store(true, Ordering::Release);
    }
    wcfs.published_cond.notify_all();
    wcfs.zhead.unpark(None, fuser::Errno::EIO);
    wcfs.iso.fail_all();
    if let Some(n) = wcfs.notifier.get() {
        let inos = wcfs.tree.lock().head_file_inos();
        for ino in inos {
            if let Err(e) = n.inval_inode(INodeNo(ino), 0, 0) {
                log::error!("invalidate inode {ino}: {e}");
            }
        }
    }
    log::error!("exiting: the mount now answers ENOTCONN");
    std::process::exit(1);
}
