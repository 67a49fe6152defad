//! Head shrinking under a Mapping: repairing the kernel's SIGBUS.
//!
//! A Mapping takes the blocks inside head's size from head (sampled at
//! open/resync). When a later commit shrinks the file, the kernel drops
//! head's pages past the new end, and the next touch of such a block
//! raises SIGBUS right in the page-fault path: past `i_size` the kernel
//! does not ask the daemon, so no pin can come. The data as of our `at`
//! still exists — in `@<at>/bigfile/<oid>`.
//!
//! So the library installs a SIGBUS handler (once, at the first Conn). For
//! a fault (`BUS_ADRERR`) inside one of our Mappings, on a block whose
//! source is head, it lowers the file's sampled head size to that block
//! (sizes are whole blocks, so head ends at or before it) and re-maps every
//! Mapping block of the file whose source changed — from `@<at>` — then
//! returns: the faulting access is retried and reads the data as of `at`.
//! A fault on a block that is no longer from head (another thread's fault
//! on the same block, or a pin, re-mapped it meanwhile) is simply retried
//! — at most a few times in a row per address, so that a source that
//! really fails (an I/O error) is not retried forever. Anything else
//! (another kind of SIGBUS, memory not ours, a signal sent by `kill` —
//! the daemon's way to kill a faulty client) goes to the handler that was
//! installed before ours, or to the default action.
//!
//! Safety of running this in a signal handler: the interrupted thread was
//! reading Mapping memory. Library code never touches Mapping memory, so
//! that thread holds none of the locks taken here (`fork::REGISTRY`, the
//! file's lock), nor is it inside the allocator because of us; other
//! threads hold those locks only for short system calls. No FUSE request
//! is made here (only `mmap`).

use crate::fileh::Repair;
use crate::fork;
use std::cell::Cell;
use std::sync::{Once, OnceLock};

/// The disposition of SIGBUS before ours.
static OLD: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the handler (once per process).
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain sigaction calls on valid structs. OLD is set before
        // our handler is installed, so the handler always finds it.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old);
            let _ = OLD.set(old);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

/// Retries allowed for one address before the fault is someone else's.
const MAX_RETRIES: u32 = 8;

thread_local! {
    /// The page of this thread's last fault that found its block already
    /// re-mapped, and how many times in a row that happened: a source that
    /// really fails (an I/O error of `@<rev>`) must not loop forever.
    static LAST: Cell<(usize, u32)> = const { Cell::new((0, 0)) };
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == libc::BUS_ADRERR {
        let page = addr & !(crate::mapping::page_size() - 1);
        match repair(addr) {
            Repair::Remapped => {
                LAST.with(|l| l.set((page, 0)));
                return; // the access is retried
            }
            Repair::Retry => {
                let n = LAST.with(|l| {
                    let (p, n) = l.get();
                    let n = if p == page { n + 1 } else { 1 };
                    l.set((page, n));
                    n
                });
                if n <= MAX_RETRIES {
                    return;
                }
            }
            Repair::NotOurs => {}
        }
    }
    chain(sig, info, ctx);
}

/// Re-maps the block at `addr` if it is a head block of one of our
/// Mappings.
fn repair(addr: usize) -> Repair {
    let hit = {
        let reg = fork::REGISTRY.lock();
        reg.as_ref().and_then(|r| {
            r.maps
                .range(..=addr)
                .next_back()
                .filter(|(&a, e)| addr < a + e.len)
                .map(|(&a, e)| (a, e.clone()))
        })
    };
    let Some((start, entry)) = hit else {
        return Repair::NotOurs;
    };
    if entry.gen != fork::generation() {
        return Repair::NotOurs;
    }
    let Some(file) = entry.file.upgrade() else {
        return Repair::NotOurs;
    };
    file.head_gone(start, entry.blk_start, addr)
}

fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let h = OLD.get().map_or(libc::SIG_DFL, |o| o.sa_sigaction);
    let flags = OLD.get().map_or(0, |o| o.sa_flags);
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // SAFETY: restoring the default action; a fault re-executes and
        // gets it, a sent signal is raised again (delivered on return).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
            // SAFETY: info is valid (see handler).
            if (*info).si_code <= 0 {
                libc::raise(sig);
            }
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler expects exactly these arguments.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a classic one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}
