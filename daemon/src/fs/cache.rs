//! Loaded blocks: single flight and a small cache.
//!
//! The kernel reads a 2 MiB block in several requests (max_pages is 1 MiB
//! by default, readahead asks for less), often at the same time from
//! several workers. A block wanted by several requests at once is loaded by
//! the first of them while the others wait for that load; a loaded block
//! stays in a small LRU so the requests that follow (the other halves of
//! the block, the next readahead window) are served from memory.
//!
//! Keys carry the revision: `at = None` is head, `Some(tid)` an `@<tid>`
//! view. Head entries are only created by loads that hold the tracker's read
//! lock, and dropped by the watcher under its write lock when the block
//! changes — so a head entry is always the block as of the current head.
//! `@<tid>` entries never go stale; they only age out.
//!
//! Failed loads are not cached: a request that comes later tries again
//! (failures are rare, and a transient one should not stick) — except
//! right after: the requests that waited for the failed load itself, and
//! those for the same block within [`FAILURE_ECHO`] of its failure, get its
//! error ([`Failed::Shared`]) rather than trying in turn. Each would wait
//! for the storage as long again, and the kernel does ask again at once:
//! when the read it issues for a read(2) (its forced readahead) fails, it
//! reads the first page once more before failing the call — with a server
//! that does not answer, one read(2) would take twice the storage's wait
//! (`-storagewait`) to fail.

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a failed load answers the requests for its block that follow.
pub(crate) const FAILURE_ECHO: Duration = Duration::from_secs(1);
use zodb::{Oid, Tid};

/// Blocks kept, at most: enough for the prefetcher's look-ahead of a few
/// sequential readers of small blocks…
pub(crate) const CAPACITY: usize = 64;
/// …and at most this many bytes of them: 16 × 2 MiB for wendelin's block
/// size (the newest block is kept whatever its size).
pub(crate) const CAPACITY_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub file: Oid,
    pub blk: u64,
    pub at: Option<Tid>,
}

pub(crate) struct BlockCache {
    inner: Mutex<Inner>,
    loaded: Condvar,
}

struct Inner {
    /// Most recently used first.
    lru: VecDeque<(Key, Bytes)>,
    loading: HashMap<Key, Arc<Flight>>,
    /// Loads that failed lately: when, and why.
    failed: HashMap<Key, (Instant, String)>,
    cap: usize,
    /// The bytes in `lru`, and their bound.
    bytes: usize,
    max_bytes: usize,
}

/// One load in flight: how it failed, for those waiting for it.
#[derive(Default)]
struct Flight {
    failed: OnceLock<String>,
}

/// Why [`BlockCache::get`] has no block.
#[derive(Debug)]
pub(crate) enum Failed<E> {
    /// This request's own load failed.
    Own(E),
    /// The load this request waited for failed (its error, as text).
    Shared(String),
}

impl<E: std::fmt::Display> std::fmt::Display for Failed<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Own(e) => e.fmt(f),
            Failed::Shared(why) => f.write_str(why),
        }
    }
}

impl BlockCache {
    /// A cache of at most `cap` blocks and `max_bytes` bytes.
    pub(crate) fn new(cap: usize, max_bytes: usize) -> BlockCache {
        BlockCache {
            inner: Mutex::new(Inner {
                lru: VecDeque::new(),
                loading: HashMap::new(),
                failed: HashMap::new(),
                cap,
                bytes: 0,
                max_bytes,
            }),
            loaded: Condvar::new(),
        }
    }

    /// The block for `key`, loading it with `load` unless it is cached or
    /// another request is loading it already (then waits for that one, and
    /// shares its failure).
    pub(crate) fn get<E: std::fmt::Display>(
        &self,
        key: Key,
        load: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, Failed<E>> {
        let mut g = self.inner.lock();
        loop {
            if let Some(i) = g.lru.iter().position(|(k, _)| *k == key) {
                let e = g.lru.remove(i).expect("index from position");
                let data = e.1.clone();
                g.lru.push_front(e);
                return Ok(data);
            }
            if let Some((when, why)) = g.failed.get(&key) {
                if when.elapsed() < FAILURE_ECHO {
                    return Err(Failed::Shared(why.clone()));
                }
                g.failed.remove(&key);
            }
            let Some(flight) = g.loading.get(&key).cloned() else {
                break;
            };
            while g.loading.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                self.loaded.wait(&mut g);
            }
            if let Some(why) = flight.failed.get() {
                return Err(Failed::Shared(why.clone()));
            }
        }
        let flight = Arc::new(Flight::default());
        g.loading.insert(key, flight.clone());
        drop(g);

        // Clears the in-flight mark even if `load` panics, so that waiters
        // do not hang forever.
        struct Done<'a>(&'a BlockCache, Key, Option<Bytes>, Arc<Flight>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut g = self.0.inner.lock();
                g.loading.remove(&self.1);
                if let Some(why) = self.3.failed.get() {
                    g.failed
                        .retain(|_, (when, _)| when.elapsed() < FAILURE_ECHO);
                    g.failed.insert(self.1, (Instant::now(), why.clone()));
                }
                if let Some(data) = self.2.take() {
                    g.bytes += data.len();
                    g.lru.push_front((self.1, data));
                    while g.lru.len() > g.cap || (g.bytes > g.max_bytes && g.lru.len() > 1) {
                        let (_, old) = g.lru.pop_back().expect("not empty");
                        g.bytes -= old.len();
                    }
                }
                self.0.loaded.notify_all();
            }
        }
        let mut done = Done(self, key, None, flight.clone());
        let r = load();
        match &r {
            Ok(data) => done.2 = Some(data.clone()),
            Err(e) => {
                let _ = flight.failed.set(e.to_string());
            }
        }
        drop(done);
        r.map_err(Failed::Own)
    }

    /// Drops head blocks of `file`: the given ones, or all (`None`); returns
    /// them (their data as of the head before). Called under the tracker's
    /// write lock, so no head load is in flight.
    pub(crate) fn forget_head(
        &self,
        file: Oid,
        blocks: Option<&BTreeSet<u64>>,
    ) -> Vec<(u64, Bytes)> {
        let mut g = self.inner.lock();
        debug_assert!(!g.loading.keys().any(|k| k.at.is_none() && k.file == file));
        let mut dropped = Vec::new();
        // A failure as of the head before says nothing of the new one.
        g.failed.retain(|k, _| {
            !(k.at.is_none() && k.file == file && blocks.is_none_or(|b| b.contains(&k.blk)))
        });
        g.lru.retain(|(k, data)| {
            let drop =
                k.at.is_none() && k.file == file && blocks.is_none_or(|b| b.contains(&k.blk));
            if drop {
                dropped.push((k.blk, data.clone()));
            }
            !drop
        });
        g.bytes -= dropped.iter().map(|(_, d)| d.len()).sum::<usize>();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn key(blk: u64) -> Key {
        Key {
            file: Oid(1),
            blk,
            at: None,
        }
    }

    #[test]
    fn single_flight_and_lru() {
        let c = Arc::new(BlockCache::new(2, usize::MAX));
        let nload = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, nload) = (c.clone(), nload.clone());
                std::thread::spawn(move || {
                    c.get(key(0), || {
                        nload.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, &str>(Bytes::from_static(b"zero"))
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(&t.join().unwrap()[..], b"zero");
        }
        assert_eq!(nload.load(Ordering::SeqCst), 1);
        let load = |b: &'static [u8]| move || Ok::<_, &str>(Bytes::from_static(b));
        c.get(key(1), load(b"one")).unwrap();
        c.get(key(2), load(b"two")).unwrap(); // evicts blk 0
        assert_eq!(&c.get(key(0), load(b"again")).unwrap()[..], b"again");
        c.forget_head(Oid(1), Some(&BTreeSet::from([0])));
        assert_eq!(&c.get(key(0), load(b"new")).unwrap()[..], b"new");
        assert!(c.get(key(9), || Err::<Bytes, _>("boom")).is_err());
        c.inner.lock().failed.clear(); // past the echo
        assert_eq!(&c.get(key(9), load(b"ok")).unwrap()[..], b"ok");
    }

    /// The byte bound evicts the oldest blocks, keeps the newest whatever
    /// its size, and a forgotten block gives its bytes back.
    #[test]
    fn bytes_bound_evicts_oldest() {
        let c = BlockCache::new(100, 10);
        let load = |n: usize| move || Ok::<_, &str>(Bytes::from(vec![n as u8; n]));
        let cached = |c: &BlockCache| -> Vec<u64> {
            let g = c.inner.lock();
            assert_eq!(g.bytes, g.lru.iter().map(|(_, d)| d.len()).sum::<usize>());
            g.lru.iter().map(|(k, _)| k.blk).collect()
        };
        c.get(key(0), load(4)).unwrap();
        c.get(key(1), load(4)).unwrap();
        assert_eq!(cached(&c), [1, 0]);
        c.get(key(2), load(4)).unwrap(); // 12 bytes > 10: blk 0 goes
        assert_eq!(cached(&c), [2, 1]);
        c.get(key(3), load(30)).unwrap(); // alone over the bound: kept
        assert_eq!(cached(&c), [3]);
        c.get(key(4), load(2)).unwrap();
        assert_eq!(cached(&c), [4]);
        c.get(key(5), load(3)).unwrap();
        c.forget_head(Oid(1), Some(&BTreeSet::from([4])));
        assert_eq!(cached(&c), [5]);
        c.get(key(6), load(7)).unwrap(); // 10 bytes: both stay
        assert_eq!(cached(&c), [6, 5]);
    }

    /// A request right after a failed load gets its error; past
    /// FAILURE_ECHO, or once head moved on for the block, it loads again.
    #[test]
    fn failure_echoes_briefly() {
        let c = BlockCache::new(2, usize::MAX);
        let ok = || Ok::<_, &str>(Bytes::from_static(b"ok"));
        assert!(matches!(
            c.get(key(3), || Err::<Bytes, _>("silent")),
            Err(Failed::Own("silent"))
        ));
        match c.get(key(3), ok) {
            Err(Failed::Shared(why)) => assert_eq!(why, "silent"),
            other => panic!("{other:?}"),
        }
        assert_eq!(&c.get(key(4), ok).unwrap()[..], b"ok", "another block");
        c.forget_head(Oid(1), Some(&BTreeSet::from([3])));
        assert_eq!(
            &c.get(key(3), ok).unwrap()[..],
            b"ok",
            "after the head moved"
        );
        assert!(c.get(key(5), || Err::<Bytes, _>("silent")).is_err());
        std::thread::sleep(FAILURE_ECHO);
        assert_eq!(&c.get(key(5), ok).unwrap()[..], b"ok", "past the echo");
    }

    /// The requests waiting for a load that fails get its error at once
    /// (no load of their own); a request after it loads again.
    #[test]
    fn waiters_share_a_failure() {
        let c = Arc::new(BlockCache::new(2, usize::MAX));
        let nload = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let (c, nload) = (c.clone(), nload.clone());
            std::thread::spawn(move || {
                c.get(key(0), || {
                    nload.fetch_add(1, Ordering::SeqCst);
                    rx.recv().unwrap(); // until the waiters wait
                    Err::<Bytes, _>("server silent")
                })
            })
        };
        let count = || c.inner.lock().loading.get(&key(0)).map(Arc::strong_count);
        let base = loop {
            if let Some(n) = count() {
                break n;
            }
            std::thread::yield_now();
        };
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (c, nload) = (c.clone(), nload.clone());
                std::thread::spawn(move || {
                    c.get(key(0), || {
                        nload.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, &str>(Bytes::from_static(b"late"))
                    })
                })
            })
            .collect();
        // The waiters are parked on the load once each holds it too.
        while count() != Some(base + 4) {
            std::thread::yield_now();
        }
        tx.send(()).unwrap();
        assert!(matches!(
            first.join().unwrap(),
            Err(Failed::Own("server silent"))
        ));
        c.inner.lock().failed.clear(); // past the echo
        for w in waiters {
            match w.join().unwrap() {
                Err(Failed::Shared(why)) => assert_eq!(why, "server silent"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(nload.load(Ordering::SeqCst), 1);
        assert_eq!(
            &c.get(key(0), || Ok::<_, &str>(Bytes::from_static(b"ok")))
                .unwrap()[..],
            b"ok"
        );
    }
}
