//! What a forked child inherits, and how it detaches from it.
//!
//! A child created by `fork()` shares the parent's head/watch links (same
//! open file descriptions) and a copy of its mappings, but none of its
//! threads: no pinner serves the child. If the child wrote to a link it
//! would speak in the parent's name (acks, `bye`); if it kept reading its
//! mappings it would see data that nobody keeps isolated any more. So at
//! fork the child *detaches* (SPEC §7):
//!
//! - every head/watch descriptor is closed in the child — never written.
//!   (The close makes the kernel send FUSE `flush`, which the daemon answers
//!   by interrupting the parent's parked read of that link with `EINTR`;
//!   the parent's pinner just reads again, see [`crate::watchlink`].)
//! - every mapping of the library is re-mapped, whole, from
//!   `@<at>/bigfile/<oid>` — the frozen view of its Conn's `at`, which is
//!   exactly what the memory showed (pins are only a way to share head's
//!   cache). The child keeps reading its view, correct, with no pinner
//!   needed; it just never moves. Memory that faulted (file or Conn closed
//!   or down) stays inaccessible;
//! - the fork *generation* moves on, so every handle created before the
//!   fork knows it belongs to the parent: its calls fail with `ENOTCONN`,
//!   without taking any lock (a lock may have been held by a parent thread
//!   that does not exist in the child), and releasing it only frees the
//!   child's own copy of its memory.
//!
//! The handler needs to know every mapping (with the descriptor and size of
//! its `@<at>` file) and link without the locks of the Conns and files:
//! they live in the [`REGISTRY`], a leaf lock held only for short updates
//! (and across `fork()` itself: the prepare handler takes it, so the child
//! finds it consistent). A file updates its entries under its own lock
//! whenever `at` changes or it goes down, before it closes the old `@<at>`
//! descriptor.

use crate::fileh::FileInner;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, Weak};

/// Incremented in every forked child.
static GENERATION: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
pub(crate) struct Registry {
    /// Address → every live mapping of this process.
    pub(crate) maps: BTreeMap<usize, MapEntry>,
    /// head/watch descriptors of this process.
    pub(crate) links: HashSet<RawFd>,
}

/// One mapping, as the fork and SIGBUS handlers need it.
#[derive(Clone)]
pub(crate) struct MapEntry {
    pub(crate) len: usize,
    pub(crate) gen: u64,
    pub(crate) file: Weak<FileInner>,
    pub(crate) blk_start: u64,
    pub(crate) blksize: usize,
    /// `@<at>` file of the view (descriptor, size), None once it faults.
    pub(crate) frozen: Option<(RawFd, u64)>,
}

/// Sets the frozen view of the mapping at `addr` (see the module doc).
pub(crate) fn set_frozen(addr: usize, frozen: Option<(RawFd, u64)>) {
    with_registry(|r| {
        if let Some(e) = r.maps.get_mut(&addr) {
            e.frozen = frozen;
        }
    });
}

pub(crate) static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// The current fork generation: a handle whose generation differs belongs
/// to an ancestor process.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Runs `f` on the registry (creating it).
pub(crate) fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut g = REGISTRY.lock();
    f(g.get_or_insert_with(Registry::default))
}

/// Installs the fork handlers (once per process).
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions that only
        // lock/unlock the registry and make syscalls.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        assert_eq!(rc, 0, "pthread_atfork failed");
    });
}

extern "C" fn prepare() {
    // Held across fork(): the child gets the registry in a consistent state.
    std::mem::forget(REGISTRY.lock());
}

extern "C" fn parent() {
    // SAFETY: locked by `prepare` in this very thread, guard forgotten.
    unsafe { REGISTRY.force_unlock() };
}

extern "C" fn child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    // SAFETY: `prepare` locked it in this thread (the only thread of the
    // child); we have exclusive access until the force_unlock below.
    let reg = unsafe { &mut *REGISTRY.data_ptr() };
    if let Some(reg) = reg.as_mut() {
        for (&addr, e) in &reg.maps {
            freeze(addr, e);
        }
        for &fd in &reg.links {
            // SAFETY: the child's copy of a head/watch descriptor; no handle
            // of the child uses it again (their generation is stale).
            unsafe { libc::close(fd) };
        }
        // The child's own memory is still reserved and freed by its handles'
        // release; the descriptors are gone.
        reg.links.clear();
    }
    // SAFETY: locked by `prepare` before fork, in the thread that is now
    // the child's only thread.
    unsafe { REGISTRY.force_unlock() };
}

/// Re-maps a mapping in a forked child from its `@<at>` file (or makes it
/// inaccessible): only system calls, no lock, no allocation.
fn freeze(addr: usize, e: &MapEntry) {
    let anon = |a: usize, len: usize, prot: i32| {
        // SAFETY: inside a range this library reserved (registry entry).
        unsafe {
            libc::mmap(
                a as *mut libc::c_void,
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        }
    };
    let Some((fd, size)) = e.frozen else {
        anon(addr, e.len, libc::PROT_NONE);
        return;
    };
    let off = e.blk_start.saturating_mul(e.blksize as u64);
    let page = crate::mapping::page_size() as u64;
    let n = if size > off {
        ((size - off).div_ceil(page) * page).min(e.len as u64) as usize
    } else {
        0
    };
    if n > 0 {
        // SAFETY: inside our range, from the open `@<at>` descriptor.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                n,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            anon(addr, e.len, libc::PROT_NONE);
            return;
        }
    }
    if n < e.len {
        anon(addr + n, e.len - n, libc::PROT_READ);
    }
}
