//! Whole blocks into the kernel page cache (`FUSE_NOTIFY_STORE`).
//!
//! # Why
//!
//! Kernel readahead is off on our mount (see "Blocks" in [`super`]): the
//! kernel asks for the pages a reader actually touches, one at a time, so
//! that touching block N never makes it read pages of another block. But
//! the first request that touches a block makes us load that block whole —
//! ZODB stores it as one object. So once that request is answered, the rest
//! of the block goes into the page cache right away, pushed by us: a read of
//! one byte caches exactly its block (as upstream wcfs does), and the reader
//! finds the pages it goes on to touch already there instead of asking for
//! them one by one.
//!
//! # In the request, before its reply
//!
//! The handler of the request that touched the block stores the rest of
//! it before it replies, so that the reader, once its page arrives, finds
//! the rest of the block cached instead of asking for it page by page.
//! A store locks the pages it fills, and the kernel keeps the pages of a
//! FUSE read locked until that read is answered; so:
//!
//! - the request's own range is never stored (its reply fills it);
//! - one upload per block at a time (`pending`): two handlers storing the
//!   same block would each wait for the other's request pages;
//! - at most [`INLINE_MAX`] handlers store at once, so that FUSE workers
//!   stay free to answer the reads whose pages a store waits for; past
//!   that, and while the gate below is closed, the upload goes to a thread
//!   of its own, after the reply. Its queue is bounded; an upload that does
//!   not fit is dropped — it is only an optimization.
//!
//! # Never stale: the gate for head/
//!
//! `@<tid>` data never changes, so its uploads need nothing more. Head data
//! is data as of the head the load saw, and a transaction applied after the
//! load and invalidated before the upload would leave it stale in the cache.
//! Holding the tracker's read side alone would not prevent it from a
//! deadlock: a store waits for page locks of in-flight reads, whose
//! handlers may be waiting for that lock behind a watcher queued for the
//! write side. Hence a gate:
//!
//! - every head load notes the *epoch* (under the tracker's read side);
//! - the watcher, before it takes the write side, closes the gate and waits
//!   until no head upload is in flight; it bumps the epoch under the write
//!   side; it reopens the gate once the write side is released;
//! - a head upload starts only through the open gate and only if the epoch
//!   is still the one of its load; otherwise it is dropped. A handler (which
//!   holds the read side) never waits at the gate: while it is closed, its
//!   upload is queued for the upload thread, which may wait.
//!
//! So a head upload either completes before a transaction is applied —
//! the invalidation that follows the apply then drops what it stored if
//! the block changed — or carries data as of the new head.
//!
//! No deadlock: while the watcher waits for uploads in flight it holds no
//! lock and is not queued for the write side, so the reads whose page locks
//! an upload waits for can take the tracker's read side and be answered;
//! new uploads do not start meanwhile. The only other writer, EIO mode,
//! closes the gate the same way first.
//!
//! # Locking
//!
//! The gate's and the queue's mutexes are leaves: nothing else is taken
//! while holding them.

use super::Wcfs;
use bytes::Bytes;
use fuser::INodeNo;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Uploads waiting at most; more are dropped.
const QUEUE_MAX: usize = 64;

/// Request handlers storing at once, at most (see "In the request" in the
/// module doc); the others queue their uploads.
const INLINE_MAX: usize = 4;

/// The rest of one block to store: `parts` (offset, data) of inode `ino`.
pub(crate) struct Job {
    pub ino: u64,
    /// Offset of the block: with `ino`, what identifies the job.
    pub blk_off: u64,
    pub parts: Vec<(u64, Bytes)>,
    /// For head data: the epoch of the load.
    pub head_epoch: Option<u64>,
}

#[derive(Default)]
struct Gate {
    /// Holders of [`Closed`] (the watcher; EIO mode too).
    closed: usize,
    inflight: usize,
}

#[derive(Default)]
pub(crate) struct Uploads {
    gate: Mutex<Gate>,
    gate_cond: Condvar,
    /// Bumped under the tracker's write side by every applied transaction.
    epoch: AtomicU64,
    queue: Mutex<Queue>,
    queued: Condvar,
    /// Handlers storing right now.
    inline: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// (ino, blk_off) of the jobs queued or being stored: a block is not
    /// queued twice (every page request of a block being uploaded would
    /// queue it again).
    pending: HashSet<(u64, u64)>,
}

/// Keeps the gate closed until dropped (see the module doc).
pub(crate) struct Closed<'a>(&'a Uploads);

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.0.gate.lock().closed -= 1;
        self.0.gate_cond.notify_all();
    }
}

impl Uploads {
    /// The current epoch; read under the tracker's read side.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Under the tracker's write side: a transaction was applied.
    pub(crate) fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Closes the gate and waits until no head upload is in flight. Call
    /// holding no lock.
    pub(crate) fn close(&self) -> Closed<'_> {
        let mut g = self.gate.lock();
        g.closed += 1;
        while g.inflight > 0 {
            self.gate_cond.wait(&mut g);
        }
        Closed(self)
    }

    /// Stores `job` — now, from the request handler that loaded or served
    /// the block, before it replies; or, when too many handlers do already
    /// or the gate is closed, through the upload thread. Nothing when that
    /// block is being uploaded already (see the module doc).
    pub(crate) fn upload(&self, wcfs: &Wcfs, job: Job) {
        if job.parts.iter().all(|(_, d)| d.is_empty()) {
            return;
        }
        if !self.queue.lock().pending.insert((job.ino, job.blk_off)) {
            return;
        }
        let inline = self
            .inline
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < INLINE_MAX).then_some(n + 1)
            })
            .is_ok();
        if inline {
            let go = match job.head_epoch {
                None => Some(true),
                Some(epoch) => self.try_begin_head(epoch),
            };
            match go {
                Some(true) => {
                    store(wcfs, &job);
                    if job.head_epoch.is_some() {
                        self.end_head();
                    }
                    self.done(&job);
                }
                Some(false) => self.done(&job), // stale already
                None => self.enqueue(job),      // gate closed: later
            }
            self.inline.fetch_sub(1, Ordering::AcqRel);
        } else {
            self.enqueue(job);
        }
    }

    /// Queues a job already marked pending (dropped when the queue is full).
    fn enqueue(&self, job: Job) {
        let mut q = self.queue.lock();
        if q.jobs.len() >= QUEUE_MAX {
            q.pending.remove(&(job.ino, job.blk_off));
            return;
        }
        q.jobs.push_back(job);
        drop(q);
        self.queued.notify_one();
    }

    fn pop(&self) -> Job {
        let mut q = self.queue.lock();
        loop {
            if let Some(j) = q.jobs.pop_front() {
                return j;
            }
            self.queued.wait(&mut q);
        }
    }

    fn done(&self, job: &Job) {
        self.queue.lock().pending.remove(&(job.ino, job.blk_off));
    }

    /// A head upload of epoch `epoch` may start: waits for an open gate;
    /// false if a transaction came in between (then it must not run).
    fn begin_head(&self, epoch: u64) -> bool {
        let mut g = self.gate.lock();
        while g.closed > 0 {
            self.gate_cond.wait(&mut g);
        }
        if self.epoch() != epoch {
            return false;
        }
        g.inflight += 1;
        true
    }

    /// [`Uploads::begin_head`] without waiting: None while the gate is
    /// closed (a handler holding the tracker's read side must not wait for
    /// the watcher, which waits for that lock).
    fn try_begin_head(&self, epoch: u64) -> Option<bool> {
        let mut g = self.gate.lock();
        if g.closed > 0 {
            return None;
        }
        if self.epoch() != epoch {
            return Some(false);
        }
        g.inflight += 1;
        Some(true)
    }

    fn end_head(&self) {
        let mut g = self.gate.lock();
        g.inflight -= 1;
        if g.inflight == 0 {
            self.gate_cond.notify_all();
        }
    }
}

/// The upload thread: stores queued blocks, forever.
pub(crate) fn run(wcfs: Arc<Wcfs>) {
    let up = &wcfs.uploads;
    loop {
        let job = up.pop();
        if let Some(epoch) = job.head_epoch {
            if !up.begin_head(epoch) {
                log::debug!(
                    "upload inode {} @{}: head moved since the load; dropped",
                    job.ino,
                    job.blk_off
                );
                up.done(&job);
                continue;
            }
        }
        store(&wcfs, &job);
        if job.head_epoch.is_some() {
            up.end_head();
        }
        up.done(&job);
    }
}

fn store(wcfs: &Wcfs, job: &Job) {
    if let (false, Some(n)) = (wcfs.failed(), wcfs.notifier.get()) {
        for (off, data) in &job.parts {
            // ENOENT (the kernel forgot the inode) is no error here;
            // anything else only costs the reader round trips.
            if let Err(e) = n.store(INodeNo(job.ino), *off, data) {
                log::debug!("upload inode {} [{off}+{}]: {e}", job.ino, data.len());
            }
        }
    }
}

/// The parts of block `[blk_off, blk_end)` outside the request range
/// `[req_off, req_end)`, as (offset, length) pairs.
pub(crate) fn outside(blk_off: u64, blk_end: u64, req_off: u64, req_end: u64) -> Vec<(u64, u64)> {
    let mut v = Vec::with_capacity(2);
    let a = req_off.clamp(blk_off, blk_end);
    let b = req_end.clamp(blk_off, blk_end);
    if a > blk_off {
        v.push((blk_off, a - blk_off));
    }
    if b < blk_end {
        v.push((b, blk_end - b));
    }
    if a == b && v.len() == 2 {
        // The request missed the block: one range.
        return vec![(blk_off, blk_end - blk_off)];
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_ranges() {
        // Block [100, 200).
        assert_eq!(outside(100, 200, 100, 200), vec![]);
        assert_eq!(outside(100, 200, 100, 104), vec![(104, 96)]);
        assert_eq!(outside(100, 200, 196, 300), vec![(100, 96)]);
        assert_eq!(outside(100, 200, 120, 130), vec![(100, 20), (130, 70)]);
        assert_eq!(outside(100, 200, 0, 50), vec![(100, 100)]);
        assert_eq!(outside(100, 200, 300, 400), vec![(100, 100)]);
    }

    #[test]
    fn gate_orders_uploads_and_transactions() {
        let up = Arc::new(Uploads::default());
        let e0 = up.epoch();
        assert!(up.begin_head(e0));
        // The watcher waits for the upload in flight.
        let (up2, done) = (up.clone(), Arc::new(AtomicU64::new(0)));
        let d2 = done.clone();
        let w = std::thread::spawn(move || {
            let g = up2.close();
            d2.store(1, Ordering::SeqCst);
            up2.bump_epoch();
            drop(g);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(done.load(Ordering::SeqCst), 0, "close waits for inflight");
        up.end_head();
        w.join().unwrap();
        // A load of the old epoch may no longer upload; one of the new may.
        assert!(!up.begin_head(e0));
        assert!(up.begin_head(up.epoch()));
        up.end_head();
    }
}
