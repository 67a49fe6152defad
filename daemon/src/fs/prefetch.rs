//! Loading the next block ahead of a sequential reader — into our own
//! memory only.
//!
//! With kernel readahead off (see "Blocks" in [`super`]) nothing overlaps
//! a reader's work on block N with the load of block N+1: the kernel asks
//! for N+1 only when the reader gets there. Reading ahead into the page
//! cache is exactly what must not happen (it would cache, and for watched
//! files pin, blocks nobody touched). So the daemon reads ahead for itself:
//! when a file's blocks are asked for in order (N right after N-1), block
//! N+1 is loaded in the background into the block cache ([`super::cache`]),
//! where the request for it then finds it.
//!
//! Head blocks are loaded under the tracker's read side like any head
//! load, so they are as of the current head (the watcher drops changed ones
//! from the block cache); a prefetched head block is tracked for changes
//! like any block loaded, but it is neither pinned nor given to the kernel
//! until a request asks for it.
//!
//! A storage whose loads pipeline (a server) asks for more blocks ahead
//! ([`zodb::Storage::prefetch_depth`]): then N+1 … N+depth are queued, and
//! as many threads load them, so that the server always has the next one
//! to send. Threads, a small queue (a full queue drops the hint), a small
//! table of streams (one entry per file view, forgotten past its size).

use super::cache::Key;
use super::tree::Node;
use super::Wcfs;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use zodb::{Oid, Tid};

const QUEUE_MAX: usize = 32;
const STREAMS_MAX: usize = 1024;
/// How far ahead of a sequential reader blocks are queued: about
/// [`AHEAD_BYTES`], at least 2 blocks and at most [`AHEAD_MAX`] (and never
/// fewer than the storage's depth).
///
/// With only N+1 queued when N is asked for, the load of N+1 starts as the
/// reader gets N, and is often not done when the reader asks for N+1,
/// which then waits for it or loads it itself: the load is not hidden.
/// Queued further ahead, the thread stays in front of the reader (N+1 is
/// usually cached already, and its job costs a lookup), and with small
/// blocks it takes several jobs per wake-up — at 4 KiB blocks the wake-up
/// costs more than the load. Measured (`compare` bench, 2 cores): 4 KiB
/// blocks 1.6–1.7× faster with 8 ahead than with 1, 2 MiB blocks best
/// with 2 (more only loads blocks the page cache is not ready for).
const AHEAD_BYTES: u64 = 512 << 10;
const AHEAD_MAX: u64 = 8;

fn ahead(depth: usize, blksize: u64) -> u64 {
    (AHEAD_BYTES / blksize.max(1))
        .clamp(2, AHEAD_MAX)
        .max(depth as u64)
}

/// A block to load ahead: of head/bigfile/`file` (`at` None) or of
/// `@<at>/bigfile/<file>` (inode `ino`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Job {
    ino: u64,
    file: Oid,
    at: Option<Tid>,
    blk: u64,
}

/// A file view's sequential reader.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// The last block a request touched.
    last: u64,
    /// Blocks below this one were queued (or touched) already.
    queued_to: u64,
}

pub(crate) struct Prefetch {
    /// Loads in flight at once for sequential readers (≥ 1): as many
    /// threads.
    pub(crate) depth: usize,
    /// Per inode: where its sequential reader is.
    last: Mutex<HashMap<u64, Stream>>,
    queue: Mutex<VecDeque<Job>>,
    queued: Condvar,
}

impl Prefetch {
    pub(crate) fn new(depth: usize) -> Prefetch {
        Prefetch {
            depth: depth.clamp(1, 8),
            last: Mutex::default(),
            queue: Mutex::default(),
            queued: Condvar::new(),
        }
    }

    /// A request of inode `ino` (`file` at `at`, `fsize` bytes in blocks of
    /// `blksize`) started at byte `off`: if its block follows the previous
    /// one, load the next few (see [`AHEAD_BYTES`]).
    pub(crate) fn touched(
        &self,
        ino: u64,
        file: Oid,
        at: Option<Tid>,
        off: u64,
        fsize: u64,
        blksize: u64,
    ) {
        if blksize == 0 {
            return;
        }
        let (blk, nblk) = (off / blksize, fsize.div_ceil(blksize));
        // The blocks to queue: none unless this request follows the
        // previous one of its stream; then, once fewer than half the
        // look-ahead is queued past it, up to the whole — in batches, so
        // that the loading thread takes several jobs per wake-up.
        let ahead = ahead(self.depth, blksize);
        let (from, to) = {
            let mut last = self.last.lock();
            if last.len() >= STREAMS_MAX && !last.contains_key(&ino) {
                last.clear();
            }
            let prev = last.insert(
                ino,
                Stream {
                    last: blk,
                    queued_to: blk + 1,
                },
            );
            let Some(prev) = prev.filter(|p| p.last + 1 == blk) else {
                return;
            };
            let s = last.get_mut(&ino).expect("just inserted");
            s.queued_to = prev.queued_to.max(blk + 1);
            if s.queued_to >= blk + 1 + ahead / 2 {
                return;
            }
            let to = (blk + 1 + ahead).min(nblk);
            let from = s.queued_to;
            s.queued_to = to.max(from);
            (from, to)
        };
        let mut q = self.queue.lock();
        let mut n = 0;
        for next in from..to {
            let job = Job {
                ino,
                file,
                at,
                blk: next,
            };
            if q.len() >= QUEUE_MAX {
                break;
            }
            if !q.contains(&job) {
                q.push_back(job);
                n += 1;
            }
        }
        drop(q);
        for _ in 0..n {
            self.queued.notify_one();
        }
    }

    fn pop(&self) -> Job {
        let mut q = self.queue.lock();
        loop {
            if let Some(j) = q.pop_front() {
                return j;
            }
            self.queued.wait(&mut q);
        }
    }
}

/// The prefetch thread: loads queued blocks into the block cache, forever.
pub(crate) fn run(wcfs: Arc<Wcfs>) {
    loop {
        let job = wcfs.prefetch.pop();
        if wcfs.failed() {
            continue;
        }
        let key = Key {
            file: job.file,
            blk: job.blk,
            at: job.at,
        };
        let r = match job.at {
            None => {
                let t = wcfs.tracker.read();
                match t.file_info(job.file) {
                    Some(i) if job.blk.saturating_mul(i.blksize) < i.size => wcfs
                        .cache
                        .get(key, || t.load_block(job.file, job.blk).map(|b| b.data))
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    _ => Ok(()),
                }
            }
            Some(at) => {
                let node = wcfs.tree.lock().get(job.ino).cloned();
                match node {
                    Some(Node::RevFile { file, .. }) => wcfs
                        .cache
                        .get(key, || {
                            file.load_block(&*wcfs.storage, job.blk, at).map(|b| b.data)
                        })
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    _ => Ok(()),
                }
            }
        };
        if let Err(e) = r {
            // The request for it, if one comes, reports the error.
            log::debug!("prefetch {} blk #{}: {e}", job.file, job.blk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(p: &Prefetch) -> Vec<u64> {
        p.queue.lock().drain(..).map(|j| j.blk).collect()
    }

    #[test]
    fn look_ahead_by_bytes_in_batches() {
        assert_eq!(ahead(1, 4 << 10), AHEAD_MAX);
        assert_eq!(ahead(1, 64 << 10), 8);
        assert_eq!(ahead(1, 2 << 20), 2);
        assert_eq!(ahead(3, 2 << 20), 3, "never less than the depth");

        // 64 KiB blocks: 8 ahead, refilled once fewer than 4 are queued.
        let p = Prefetch::new(1);
        let bs = 64 << 10;
        p.touched(7, Oid(1), None, 10 * bs, 100 * bs, bs);
        assert!(queued(&p).is_empty(), "a first request is not a stream");
        p.touched(7, Oid(1), None, 11 * bs, 100 * bs, bs);
        assert_eq!(queued(&p), (12..20).collect::<Vec<_>>());
        for blk in 12..16 {
            p.touched(7, Oid(1), None, blk * bs, 100 * bs, bs);
            assert!(queued(&p).is_empty(), "#{blk}: still ≥ 4 ahead");
        }
        p.touched(7, Oid(1), None, 16 * bs, 100 * bs, bs);
        assert_eq!(queued(&p), (20..25).collect::<Vec<_>>(), "topped up");
        // Another file view is its own stream; the end of the file bounds.
        p.touched(8, Oid(2), None, 96 * bs, 100 * bs, bs);
        p.touched(8, Oid(2), None, 97 * bs, 100 * bs, bs);
        assert_eq!(queued(&p), [98, 99]);
        // A jump starts over; no block size, nothing.
        p.touched(7, Oid(1), None, 50 * bs, 100 * bs, bs);
        assert!(queued(&p).is_empty());
        p.touched(7, Oid(1), None, 51 * bs, 100 * bs, bs);
        assert_eq!(queued(&p), (52..60).collect::<Vec<_>>());
        p.touched(9, Oid(3), None, 0, 100, 0);
        p.touched(9, Oid(3), None, 0, 100, 0);
        assert!(queued(&p).is_empty());
    }
}
