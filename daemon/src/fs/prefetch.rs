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

const QUEUE_MAX: usize = 16;
const STREAMS_MAX: usize = 1024;

/// A block to load ahead: of head/bigfile/`file` (`at` None) or of
/// `@<at>/bigfile/<file>` (inode `ino`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Job {
    ino: u64,
    file: Oid,
    at: Option<Tid>,
    blk: u64,
}

pub(crate) struct Prefetch {
    /// Blocks loaded ahead of a sequential reader (≥ 1); as many threads.
    pub(crate) depth: usize,
    /// Per inode: the last block a request touched.
    last: Mutex<HashMap<u64, u64>>,
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

    /// A request of inode `ino` (`file` at `at`) touched block `blk` of a
    /// file of `nblk` blocks: if it follows the previous one, load the
    /// next `depth`.
    pub(crate) fn touched(&self, ino: u64, file: Oid, at: Option<Tid>, blk: u64, nblk: u64) {
        let seq = {
            let mut last = self.last.lock();
            if last.len() >= STREAMS_MAX && !last.contains_key(&ino) {
                last.clear();
            }
            let prev = last.insert(ino, blk);
            prev.is_some_and(|p| p + 1 == blk)
        };
        if !seq {
            return;
        }
        let mut q = self.queue.lock();
        let mut n = 0;
        for next in blk + 1..(blk + 1 + self.depth as u64).min(nblk) {
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
