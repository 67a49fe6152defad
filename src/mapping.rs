//! `Mapping`: a range of a FileH's blocks in memory, as of the Conn's `at`.
//!
//! The range is first reserved as anonymous read-only zeros, then laid out
//! block by block from each block's source (see [`crate::fileh`]); later
//! changes replace single blocks with `MAP_FIXED`. Replacing a mapping
//! atomically swaps the pages a range shows — there is no moment where the
//! range is unmapped, so another thread reading it sees either the old or
//! the new block, or waits in the kernel.
//!
//! Every range lives in `crate::fork::REGISTRY` from its reservation to
//! its release, so a forked child can make it inaccessible.
//!
//! The helpers below only ever operate on ranges this module reserved
//! (their callers hold the file's lock, under which a range cannot be
//! released).

use crate::fileh::FileInner;
use crate::{fork, Error, Result};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// A mapping. Cheap to clone (shared handle); `unmap` releases it.
#[derive(Clone)]
pub struct Mapping {
    inner: Arc<MapInner>,
}

struct MapInner {
    file: Arc<FileInner>,
    id: u64,
    rec: MapRec,
    gen: u64,
    released: AtomicBool,
}

/// A Mapping as its file's state knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapRec {
    pub(crate) addr: usize,
    pub(crate) len: usize,
    pub(crate) blk_start: u64,
    pub(crate) blk_len: u64,
}

impl MapRec {
    /// The address of block `blk`, if this mapping covers it.
    pub(crate) fn block_addr(&self, blk: u64, blksize: usize) -> Option<usize> {
        (blk >= self.blk_start && blk - self.blk_start < self.blk_len)
            .then(|| self.addr + (blk - self.blk_start) as usize * blksize)
    }
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn mmap_at(addr: usize, len: usize, prot: i32, flags: i32, fd: RawFd, off: u64) -> Result<()> {
    // SAFETY: [addr, addr+len) lies inside a range reserved by `reserve`
    // and not yet released (module invariant); MAP_FIXED replaces only it.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            flags | libc::MAP_FIXED,
            fd,
            off as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::io(
            format!("wcfs: mmap {len} bytes at {addr:#x}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Anonymous memory at `[addr, addr+len)`: zeros (`PROT_READ`) or
/// inaccessible (`PROT_NONE`).
pub(crate) fn fixed_anon(addr: usize, len: usize, prot: i32) -> Result<()> {
    mmap_at(
        addr,
        len,
        prot,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    )
}

/// `[addr, addr+len)` from file `fd` at `off`, but only up to the file's
/// page-rounded `fsize` (beyond it a file mapping would SIGBUS): the rest
/// is zeros.
pub(crate) fn fixed_file(addr: usize, len: usize, fd: RawFd, off: u64, fsize: u64) -> Result<()> {
    let page = page_size() as u64;
    let n = if fsize > off {
        ((fsize - off).div_ceil(page) * page).min(len as u64) as usize
    } else {
        0
    };
    if n > 0 {
        mmap_at(addr, n, libc::PROT_READ, libc::MAP_SHARED, fd, off)?;
    }
    if n < len {
        fixed_anon(addr + n, len - n, libc::PROT_READ)?;
    }
    Ok(())
}

/// Hints that `[addr, addr+len)`, a one-block overlay from an `@<rev>`
/// file, will be read front to back and nothing around it: without the
/// hint the kernel's fault read-around also loads the pages before the
/// faulting one and readahead after the block — measured 2.8× the block in
/// `@<rev>` page cache that nobody shares. Advice only: a failure changes
/// nothing that is visible, so it is ignored.
pub(crate) fn advise_overlay(addr: usize, len: usize) {
    // SAFETY: madvise on a range we mapped; MADV_SEQUENTIAL does not change
    // the contents.
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len, libc::MADV_SEQUENTIAL);
    }
}

/// Reserves `len` bytes of zeros somewhere for blocks from `blk_start`
/// of `file`; registered for the fork and SIGBUS handlers.
pub(crate) fn reserve(
    len: usize,
    file: Weak<FileInner>,
    blk_start: u64,
    blksize: usize,
    frozen: Option<(RawFd, u64)>,
) -> Result<usize> {
    fork::with_registry(|r| {
        // SAFETY: a new anonymous mapping at an address the kernel picks.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::io(
                format!("wcfs: reserve {len} bytes"),
                std::io::Error::last_os_error(),
            ));
        }
        r.maps.insert(
            p as usize,
            fork::MapEntry {
                len,
                gen: fork::generation(),
                file,
                blk_start,
                blksize,
                frozen,
            },
        );
        Ok(p as usize)
    })
}

/// Unmaps a reserved range and forgets it.
pub(crate) fn release(addr: usize, len: usize) {
    fork::with_registry(|r| {
        r.maps.remove(&addr);
        // SAFETY: the range was reserved by `reserve` and is released once
        // (callers check their `released` flag).
        unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    });
}

impl Mapping {
    pub(crate) fn new(file: Arc<FileInner>, id: u64, rec: MapRec) -> Mapping {
        Mapping {
            inner: Arc::new(MapInner {
                file,
                id,
                rec,
                gen: fork::generation(),
                released: AtomicBool::new(false),
            }),
        }
    }

    pub fn mem_start(&self) -> *const u8 {
        self.inner.rec.addr as *const u8
    }

    pub fn mem_stop(&self) -> *const u8 {
        (self.inner.rec.addr + self.inner.rec.len) as *const u8
    }

    pub fn blk_start(&self) -> i64 {
        self.inner.rec.blk_start as i64
    }

    /// Number of blocks mapped.
    pub fn blk_len(&self) -> i64 {
        self.inner.rec.blk_len as i64
    }

    /// The memory, as a slice.
    ///
    /// # Safety
    ///
    /// The caller must not use the slice after `unmap` (or after the last
    /// handle is dropped), and must expect a fault (SIGSEGV) when touching it
    /// after the Mapping's file or Conn was closed or went down.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the range is mapped readable (or PROT_NONE, see above) for
        // as long as the caller promises to use it.
        unsafe { std::slice::from_raw_parts(self.mem_start(), self.inner.rec.len) }
    }

    fn check(&self) -> Result<()> {
        if self.inner.gen != fork::generation() {
            return Err(Error::not_connected(
                "wcfs: forked child: mapping belongs to the parent",
            ));
        }
        if self.inner.released.load(Ordering::Acquire) {
            return Err(Error::not_connected("wcfs: mapping already unmapped"));
        }
        Ok(())
    }

    /// Re-establishes the base mapping (head, or the `@<rev>` the block is
    /// pinned to) of block `blk`.
    pub fn remmap_blk(&self, blk: i64) -> Result<()> {
        self.check()?;
        let rec = self.inner.rec;
        let addr = u64::try_from(blk)
            .ok()
            .and_then(|b| rec.block_addr(b, self.inner.file.blksize))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "wcfs: remmap_blk: #{blk} outside the mapping [{}, +{})",
                    rec.blk_start, rec.blk_len
                ))
            })?;
        let f = &self.inner.file;
        let st = f.st.lock();
        if !st.maps.contains_key(&self.inner.id) {
            return Err(Error::not_connected("wcfs: mapping already unmapped"));
        }
        if let Some(e) = &st.closed {
            return Err(Error::not_connected(e.message()));
        }
        f.map_block(&st, addr, blk as u64)
    }

    /// Releases the mapping: its memory is unmapped.
    pub fn unmap(&self) -> Result<()> {
        if self.inner.released.swap(true, Ordering::AcqRel) {
            return Err(Error::invalid("wcfs: mapping already unmapped"));
        }
        self.inner.release();
        Ok(())
    }
}

impl MapInner {
    fn release(&self) {
        if self.gen == fork::generation() {
            let mut st = self.file.st.lock();
            st.maps.remove(&self.id);
            release(self.rec.addr, self.rec.len);
        } else {
            // A forked child: the file's lock may be held forever by a
            // thread that did not survive the fork; only the memory is ours.
            release(self.rec.addr, self.rec.len);
        }
    }
}

impl Drop for MapInner {
    fn drop(&mut self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.release();
        }
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("addr", &self.mem_start())
            .field("blk_start", &self.inner.rec.blk_start)
            .field("blk_len", &self.inner.rec.blk_len)
            .finish()
    }
}
