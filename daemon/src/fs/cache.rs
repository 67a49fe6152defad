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
//! Failed loads are not cached: each waiter then tries itself and gets its
//! own error (failures are rare, and a transient one should not stick).

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeSet, HashSet, VecDeque};
use zodb::{Oid, Tid};

/// Blocks kept: 16 × 2 MiB = 32 MiB for wendelin's block size.
pub(crate) const CAPACITY: usize = 16;

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
    loading: HashSet<Key>,
    cap: usize,
}

impl BlockCache {
    pub(crate) fn new(cap: usize) -> BlockCache {
        BlockCache {
            inner: Mutex::new(Inner {
                lru: VecDeque::new(),
                loading: HashSet::new(),
                cap,
            }),
            loaded: Condvar::new(),
        }
    }

    /// The block for `key`, loading it with `load` unless it is cached or
    /// another request is loading it already (then waits for that one).
    pub(crate) fn get<E>(
        &self,
        key: Key,
        load: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        let mut g = self.inner.lock();
        loop {
            if let Some(i) = g.lru.iter().position(|(k, _)| *k == key) {
                let e = g.lru.remove(i).expect("index from position");
                let data = e.1.clone();
                g.lru.push_front(e);
                return Ok(data);
            }
            if !g.loading.contains(&key) {
                break;
            }
            self.loaded.wait(&mut g);
        }
        g.loading.insert(key);
        drop(g);

        // Clears the in-flight mark even if `load` panics, so that waiters
        // do not hang forever.
        struct Done<'a>(&'a BlockCache, Key, Option<Bytes>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut g = self.0.inner.lock();
                g.loading.remove(&self.1);
                if let Some(data) = self.2.take() {
                    g.lru.push_front((self.1, data));
                    let cap = g.cap;
                    g.lru.truncate(cap);
                }
                self.0.loaded.notify_all();
            }
        }
        let mut done = Done(self, key, None);
        let r = load();
        if let Ok(data) = &r {
            done.2 = Some(data.clone());
        }
        drop(done);
        r
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
        debug_assert!(!g.loading.iter().any(|k| k.at.is_none() && k.file == file));
        let mut dropped = Vec::new();
        g.lru.retain(|(k, data)| {
            let drop =
                k.at.is_none() && k.file == file && blocks.is_none_or(|b| b.contains(&k.blk));
            if drop {
                dropped.push((k.blk, data.clone()));
            }
            !drop
        });
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
        let c = Arc::new(BlockCache::new(2));
        let nload = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, nload) = (c.clone(), nload.clone());
                std::thread::spawn(move || {
                    c.get(key(0), || {
                        nload.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, ()>(Bytes::from_static(b"zero"))
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(&t.join().unwrap()[..], b"zero");
        }
        assert_eq!(nload.load(Ordering::SeqCst), 1);
        let load = |b: &'static [u8]| move || Ok::<_, ()>(Bytes::from_static(b));
        c.get(key(1), load(b"one")).unwrap();
        c.get(key(2), load(b"two")).unwrap(); // evicts blk 0
        assert_eq!(&c.get(key(0), load(b"again")).unwrap()[..], b"again");
        c.forget_head(Oid(1), Some(&BTreeSet::from([0])));
        assert_eq!(&c.get(key(0), load(b"new")).unwrap()[..], b"new");
        assert!(c.get(key(9), || Err::<Bytes, _>("boom")).is_err());
        assert_eq!(&c.get(key(9), load(b"ok")).unwrap()[..], b"ok");
    }
}
