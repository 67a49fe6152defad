//! Recycled buffers for large object records.
//!
//! A ZBigFile block is one large record (2 MiB for wendelin's default), read
//! into a buffer that lives as long as someone holds the block — the daemon's
//! block cache, a FUSE reply — and is then dropped. Fresh buffers cost: the
//! kernel must fault in and zero every page before `pread` can fill it, and
//! the allocator either returns the memory at once (and we pay again next
//! time) or keeps it in per-thread arenas that nothing else reuses. So large
//! record buffers come from, and go back to, one small process-wide pool.
//!
//! Invariants: only buffers of at least [`MIN_POOLED`] bytes are pooled; the
//! pool never holds more than [`MAX_POOLED`] bytes of capacity; a buffer is
//! handed out for a request of `n` bytes only if its capacity is in
//! `[n, 2n]`, so a small request never pins a huge buffer. The pool's lock is
//! a leaf: nothing else is taken while it is held.

use bytes::Bytes;
use parking_lot::Mutex;

/// Records smaller than this are allocated the ordinary way.
pub const MIN_POOLED: usize = 256 << 10;
/// Capacity the pool keeps at most: eight 2 MiB blocks.
pub const MAX_POOLED: usize = 16 << 20;

struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

/// An empty buffer with capacity for at least `n` bytes.
pub(crate) fn take(n: usize) -> Vec<u8> {
    if n >= MIN_POOLED {
        let mut pool = POOL.lock();
        let fits = |v: &Vec<u8>| v.capacity() >= n && v.capacity() / 2 <= n;
        if let Some(i) = pool.free.iter().position(fits) {
            let v = pool.free.swap_remove(i);
            pool.bytes -= v.capacity();
            return v;
        }
    }
    Vec::with_capacity(n)
}

/// Freezes a filled buffer; a large one returns to the pool once the last
/// `Bytes` (or slice of it) is dropped.
pub(crate) fn freeze(v: Vec<u8>) -> Bytes {
    if v.capacity() >= MIN_POOLED {
        Bytes::from_owner(Recycled(v))
    } else {
        Bytes::from(v)
    }
}

struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut v = std::mem::take(&mut self.0);
        v.clear();
        let mut pool = POOL.lock();
        if pool.bytes + v.capacity() <= MAX_POOLED {
            pool.bytes += v.capacity();
            pool.free.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_and_the_pool_stays_bounded() {
        // Other tests of this crate may use the pool concurrently: only
        // check what holds regardless of them.
        let n = 3 << 20; // a size no other test asks for
        let mut v = take(n);
        v.extend(std::iter::repeat_n(7u8, n));
        let ptr = v.as_ptr();
        let b = freeze(v);
        let half = b.slice(n / 2..);
        drop(b);
        assert_eq!(half[0], 7, "a slice keeps the buffer alive");
        drop(half);
        let again = take(n);
        assert_eq!(again.as_ptr(), ptr, "the freed buffer is reused");
        assert!(again.is_empty() && again.capacity() >= n);
        // A request of less than half its capacity does not take it.
        let small = take(n / 4);
        assert_ne!(small.as_ptr(), ptr);
        assert!(POOL.lock().bytes <= MAX_POOLED);
        // Filling beyond the bound drops the excess.
        let many: Vec<Bytes> = (0..(MAX_POOLED / n + 3))
            .map(|_| {
                let mut v = take(n);
                v.resize(n, 1);
                freeze(v)
            })
            .collect();
        drop(many);
        assert!(POOL.lock().bytes <= MAX_POOLED);
    }
}
