//! FUSE over io_uring: requests served on the CPU that made them.
//!
//! # Why
//!
//! On /dev/fuse the kernel hands each request to whichever worker has
//! waited longest, often on the other CPU, which may be halted: every
//! small read then pays the wake-up of an idle CPU twice (the worker, then
//! the reader). With FUSE over io_uring (Linux ≥ 6.14, the `fuse` module's
//! `enable_uring` parameter on) the kernel keeps one queue per CPU and puts
//! a request in the queue of the CPU its caller runs on. We serve each
//! queue from threads bound to that CPU, so the reader and its server take
//! turns on one CPU.
//!
//! # How
//!
//! INIT still comes over /dev/fuse ([`super::super::dev`]): it asks for
//! FUSE_OVER_IO_URING and tells us the largest request (max_write), which
//! sizes the payload buffers. Then [`start`] registers entries: each entry
//! is a header area (the in/out header, the op's first argument, the
//! entry's sizes) and a payload buffer, given to the kernel once with
//! REGISTER. When every CPU's queue has an entry the kernel switches the
//! connection to the rings; until then, and for FORGET and INTERRUPT
//! always, fuser's workers serve /dev/fuse as before.
//!
//! An entry carries one request at a time, from the completion that brings
//! it to the COMMIT_AND_FETCH that returns the reply and waits for the next.
//! Each entry has its own thread and ring (SINGLE_ISSUER, DEFER_TASKRUN: no
//! locks, no task work on other threads):
//!
//! - the thread decodes the request ([`super::wire`]), copies out what it
//!   needs, and calls the handler with a [`RingReply`];
//! - a handler may answer at once, or keep the reply and answer later from
//!   another thread (head/watch and .wcfs/zhead reads wait for a line; a
//!   read may wait for pin acks on this very thread);
//! - an answer on the entry's own thread is committed right there, inside
//!   the handler: a head read's data must reach the page cache while the
//!   handler still holds the tracker's read side, as on /dev/fuse;
//! - an answer from another thread is written into the entry's buffers and
//!   the entry's thread, woken, commits it. Only direct-I/O replies (watch
//!   and zhead lines) are made that way, so nothing of the page cache
//!   depends on when.
//!
//! So a request that waits ties up its entry, and a queue whose entries
//! are all taken leaves new requests waiting in the kernel — possibly the
//! very pin ack a waiting read needs. Each queue therefore keeps at least
//! [`SPARE`] entries free: a thread that takes a request and sees fewer
//! free starts another entry, up to [`MAX_PER_QUEUE`]. The kernel hands a
//! request to the entry that came back last, so the spares stay cold and
//! one hot thread per CPU serves a sequential reader. A request that found
//! no free entry is given only to an entry that commits, never to one
//! registered later: a queue that ran low is kicked ([`Transport::kicker`]).
//!
//! When the connection ends the kernel cancels every entry: its thread sees
//! the error and exits. If REGISTER is refused (the kernel did not agree to
//! io_uring at INIT), nothing changes: /dev/fuse serves everything.
//!
//! Locks: an entry's buffers (`Slot::bufs`) are taken alone, briefly, by
//! its thread to decode and by the replier to encode; never while calling
//! a handler, so a handler may answer on its own thread.

use super::wire::{self, Op};
use crate::fs::ops::Fs;
use crate::fs::reply::{
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
};
use fuser::{Errno, OpenFlags};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use parking_lot::{Condvar, Mutex};
use std::cell::RefCell;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// `fuse_uring_cmd`: the two commands of the FUSE ring protocol.
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `struct fuse_uring_req_header`: in/out header, first argument, then
/// `fuse_uring_ent_in_out` {flags, commit_id, payload_sz, padding, reserved}.
const HDR_IN_OUT: usize = 0;
const HDR_OP_IN: usize = 128;
const HDR_ENT: usize = 256;
const HDR_COMMIT_ID: usize = HDR_ENT + 8;
const HDR_PAYLOAD_SZ: usize = HDR_ENT + 16;
const HDR_SIZE: usize = 288;

/// Free entries a queue keeps (see the module doc).
const SPARE: usize = 4;
/// Entries a queue may grow to: a bound on requests one CPU's callers can
/// keep waiting at once (parked watch reads, pin waits) before the next
/// waits in the kernel.
const MAX_PER_QUEUE: usize = 128;
/// How many times a queue that ran out of entries is kicked, one request
/// each (see [`Transport::kicker`]).
const KICKS: usize = 64;
/// How long REGISTER may say "not yet" (EAGAIN: INIT not answered).
const REGISTER_PATIENCE: Duration = Duration::from_secs(10);

/// What INIT decided, handed from fuser's INIT to [`start`].
#[derive(Default)]
pub(crate) struct Negotiated {
    state: Mutex<Option<(bool, u32)>>,
    cv: Condvar,
}

impl Negotiated {
    /// Called by INIT: whether the kernel agreed to io_uring, and the
    /// largest write it will send.
    pub(crate) fn set(&self, uring: bool, max_write: u32) {
        *self.state.lock() = Some((uring, max_write));
        self.cv.notify_all();
    }

    fn wait(&self, timeout: Duration) -> Option<(bool, u32)> {
        let mut s = self.state.lock();
        let deadline = Instant::now() + timeout;
        while s.is_none() {
            if self.cv.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
        *s
    }
}

/// The transport: the /dev/fuse descriptor and the queues' counts.
struct Transport {
    fd: OwnedFd,
    fs: Fs,
    /// Where the kicker's requests go: a file whose attributes are never
    /// cached.
    kick_path: PathBuf,
    payload_sz: usize,
    queues: Vec<Queue>,
    /// Set when a REGISTER failed for good: stop growing.
    refused: AtomicBool,
    /// A queue ran out of entries: wake the kicker.
    kick: (Mutex<bool>, Condvar),
    /// The connection has ended (seen by a kick).
    ended: AtomicBool,
}

#[derive(Default)]
struct Queue {
    /// Entries the kernel may hand a request to now.
    free: Arc<AtomicUsize>,
    /// Entries started and not yet registered.
    starting: AtomicUsize,
    /// Entries of this queue, with their threads.
    total: AtomicUsize,
    /// The queue had no free entry: requests may wait in the kernel.
    exhausted: AtomicBool,
}

/// The number of queues the kernel keeps: one per possible CPU.
fn possible_cpus() -> usize {
    let parse = |s: &str| -> Option<usize> {
        // "0-3", "0", "0-1,4-5": the last number + 1.
        let last = s.trim().rsplit([',', '-']).next()?;
        last.parse::<usize>().ok().map(|n| n + 1)
    };
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse(&s))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Starts serving the connection of `fd` over io_uring once INIT says the
/// kernel agreed, in the background. Without agreement (or when REGISTER is
/// refused) it logs why and leaves everything to /dev/fuse.
pub(crate) fn start(fd: OwnedFd, fs: Fs, negotiated: Arc<Negotiated>) {
    let spawned = std::thread::Builder::new()
        .name("fuse-ring-kick".into())
        .spawn(move || {
            // INIT comes right after the mount; a session that never gets
            // it has no requests to serve anyway.
            let Some((agreed, max_write)) = negotiated.wait(Duration::from_secs(60)) else {
                return;
            };
            if !agreed {
                log::info!(
                    "FUSE over io_uring: not offered by the kernel \
                     (/sys/module/fuse/parameters/enable_uring); serving /dev/fuse"
                );
                return;
            }
            let ncpu = possible_cpus();
            let t = Arc::new(Transport {
                fd,
                kick_path: fs.mountpoint().join(".wcfs/stats"),
                fs,
                payload_sz: (max_write as usize).max(8192),
                queues: (0..ncpu).map(|_| Queue::default()).collect(),
                refused: AtomicBool::new(false),
                kick: (Mutex::new(false), Condvar::new()),
                ended: AtomicBool::new(false),
            });
            for qid in 0..ncpu {
                for _ in 0..SPARE {
                    t.start_entry(qid);
                }
            }
            log::info!(
                "FUSE over io_uring: {ncpu} queues, {SPARE} entries each to start, \
                 {} KiB payload",
                t.payload_sz / 1024
            );
            t.kicker();
        });
    if let Err(e) = spawned {
        log::warn!("FUSE over io_uring: cannot start: {e}; serving /dev/fuse");
    }
}

impl Transport {
    /// Adds an entry (and its thread) to queue `qid`, unless at the bound.
    fn start_entry(self: &Arc<Self>, qid: usize) {
        if self.refused.load(Ordering::Relaxed) {
            return;
        }
        let q = &self.queues[qid];
        if q.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_PER_QUEUE).then_some(n + 1)
            })
            .is_err()
        {
            return;
        }
        q.starting.fetch_add(1, Ordering::AcqRel);
        let t = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("fuse-ring{qid}"))
            .stack_size(256 << 10)
            .spawn(move || t.serve_entry(qid));
        if let Err(e) = spawned {
            log::warn!("FUSE over io_uring: queue {qid}: no thread for an entry: {e}");
            q.total.fetch_sub(1, Ordering::AcqRel);
            q.starting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// One entry's life: register, then serve one request per completion.
    fn serve_entry(self: Arc<Self>, qid: usize) {
        let q = &self.queues[qid];
        let registered = std::cell::Cell::new(false);
        let starting = std::cell::Cell::new(true);
        // The entry leaves the queue (never free here: its last command
        // has completed).
        let end = || {
            if starting.get() {
                q.starting.fetch_sub(1, Ordering::AcqRel);
            }
            q.total.fetch_sub(1, Ordering::AcqRel);
            if registered.get() {
                self.fs.ring_entry(false);
            }
        };
        bind_to_cpu(qid);
        let ring = match new_ring() {
            Ok(r) => r,
            Err(e) => {
                log::warn!("FUSE over io_uring: queue {qid}: io_uring_setup: {e}");
                return end();
            }
        };
        let slot = Arc::new(Slot::new(self.payload_sz));
        OWN_RING.with(|own| {
            *own.borrow_mut() = Some(OwnRing {
                ring,
                fd: self.fd.as_raw_fd(),
                qid: qid as u16,
                iov: slot.iovecs(),
                free: q.free.clone(),
            })
        });
        let mut next = Some((CMD_REGISTER, 0u64));
        let registering_since = Instant::now();
        loop {
            if let Some((cmd, id)) = next.take() {
                let submitted = own_ring(|r| r.submit(cmd, id));
                if starting.replace(false) {
                    q.starting.fetch_sub(1, Ordering::AcqRel);
                }
                if let Err(e) = submitted {
                    log::error!("FUSE over io_uring: queue {qid}: submit: {e}");
                    return end();
                }
            }
            let res = own_ring(|r| r.complete());
            // The command is done: the entry is not free until the next.
            let free_before = q.free.fetch_sub(1, Ordering::AcqRel);
            let res = match res {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("FUSE over io_uring: queue {qid}: io_uring_enter: {e}");
                    return end();
                }
            };
            if res < 0 {
                let err = -res;
                if registered.get() || err == libc::ENOTCONN {
                    // The connection ended (ENOTCONN, ECANCELED…).
                    log::debug!(
                        "FUSE over io_uring: queue {qid}: entry ends: {}",
                        std::io::Error::from_raw_os_error(err)
                    );
                    return end();
                }
                if err == libc::EAGAIN && registering_since.elapsed() < REGISTER_PATIENCE {
                    // INIT not answered yet.
                    starting.set(true);
                    q.starting.fetch_add(1, Ordering::AcqRel);
                    std::thread::sleep(Duration::from_millis(1));
                    next = Some((CMD_REGISTER, 0));
                    continue;
                }
                if !self.refused.swap(true, Ordering::AcqRel) {
                    log::warn!(
                        "FUSE over io_uring: REGISTER refused: {}; serving /dev/fuse",
                        std::io::Error::from_raw_os_error(err)
                    );
                }
                return end();
            }
            if !registered.replace(true) {
                self.fs.ring_entry(true);
            }
            // A request. Keep spares (see the module doc). Running low,
            // the queue may have been out of free entries for a moment —
            // our count lags the kernel's — and requests may wait in the
            // kernel: kick it (see `kicker`).
            if free_before + q.starting.load(Ordering::Acquire) <= SPARE {
                self.start_entry(qid);
                q.exhausted.store(true, Ordering::Release);
                *self.kick.0.lock() = true;
                self.kick.1.notify_one();
            }
            match slot.take_request() {
                Ok((h, req)) => {
                    let reply = RingReply {
                        slot: Some(slot.clone()),
                        unique: h.unique,
                    };
                    dispatch(&self.fs, &h, req, reply)
                }
                Err((unique, why)) => {
                    log::error!("FUSE over io_uring: request {unique}: {why}");
                    RingReply {
                        slot: Some(slot.clone()),
                        unique,
                    }
                    .error(Errno::EIO);
                }
            }
            if !slot.committed.swap(false, Ordering::AcqRel) {
                // Answered, or to be answered, on another thread.
                slot.wait_answered();
                next = Some((CMD_COMMIT_AND_FETCH, slot.commit_id.load(Ordering::Acquire)));
            }
            if slot.lost.load(Ordering::Acquire) {
                return end();
            }
        }
    }

    /// Gets requests out of the kernel's queue of a CPU that ran out of
    /// entries. The kernel hands a new request to a free entry, but one
    /// that found none waits in its queue until an entry of that queue
    /// commits: an entry registered later does not take it. If every entry
    /// then waits (parked watch reads), it would wait forever. So a queue
    /// that ran out is kicked: a request of ours from its CPU (the
    /// attributes of `.wcfs/stats`, never cached), which a free entry serves
    /// and whose commit takes the next waiting request, and so on until one
    /// that parks. [`KICKS`] kicks, a millisecond apart, follow the last
    /// time the queue ran out, and entries are started meanwhile if none
    /// are free: no entry of ours would see a request to start one. A kick runs on a thread of its own: one sent
    /// while the queue had no free entry waits there itself, until a later
    /// kick's commit takes it. This thread sleeps while no queue runs out.
    fn kicker(self: &Arc<Self>) {
        const IN_FLIGHT: usize = 4;
        let mut owed = vec![0usize; self.queues.len()];
        let in_flight: Vec<Arc<AtomicUsize>> = self.queues.iter().map(|_| Arc::default()).collect();
        loop {
            {
                let mut woken = self.kick.0.lock();
                while !*woken && owed.iter().all(|&n| n == 0) {
                    self.kick.1.wait(&mut woken);
                }
                *woken = false;
            }
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            // Time for the entries started meanwhile to register.
            std::thread::sleep(Duration::from_millis(1));
            for (qid, q) in self.queues.iter().enumerate() {
                if q.exhausted.swap(false, Ordering::AcqRel) {
                    owed[qid] = KICKS;
                }
                if owed[qid] == 0 {
                    continue;
                }
                // No entry takes a request while they all wait in the
                // kernel: nothing would start new ones.
                let free = q.free.load(Ordering::Acquire);
                if free + q.starting.load(Ordering::Acquire) < SPARE {
                    self.start_entry(qid);
                }
                if free == 0 || in_flight[qid].load(Ordering::Acquire) >= IN_FLIGHT {
                    continue;
                }
                owed[qid] -= 1;
                in_flight[qid].fetch_add(1, Ordering::AcqRel);
                let (t, n) = (self.clone(), in_flight[qid].clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("fuse-ring{qid}-kick"))
                    .stack_size(64 << 10)
                    .spawn(move || {
                        bind_to_cpu(qid);
                        if let Err(e) = std::fs::metadata(&t.kick_path) {
                            if e.raw_os_error() == Some(libc::ENOTCONN) {
                                t.ended.store(true, Ordering::Release);
                            }
                        }
                        n.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    in_flight[qid].fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

/// The ring of the entry this thread serves, where a reply made on this
/// thread is committed at once (see [`RingReply`]).
struct OwnRing {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    fd: i32,
    qid: u16,
    iov: [libc::iovec; 2],
    /// The queue's count of free entries: one more per submitted command.
    free: Arc<AtomicUsize>,
}

thread_local! {
    static OWN_RING: RefCell<Option<OwnRing>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's ring; an error if the thread has none (or it
/// is in use further up the stack).
fn own_ring<T>(f: impl FnOnce(&mut OwnRing) -> std::io::Result<T>) -> std::io::Result<T> {
    OWN_RING.with(|own| match own.try_borrow_mut() {
        Ok(mut own) => match own.as_mut() {
            Some(r) => f(r),
            None => Err(std::io::Error::other("not an entry's thread")),
        },
        Err(_) => Err(std::io::Error::other("ring in use")),
    })
}

impl OwnRing {
    /// Submits `cmd`: the kernel runs it now (a commit delivers the reply
    /// before this returns); its completion comes with the next request.
    fn submit(&mut self, cmd: u32, commit_id: u64) -> std::io::Result<()> {
        let sqe = ring_cmd(self.fd, cmd, self.qid, commit_id, &self.iov);
        // SAFETY: the SQE points at `self.iov`, which lives as long as this
        // thread, and through it at the slot's buffers, which the slot
        // keeps allocated while this thread runs; the kernel uses them
        // only while the entry is its own (from this command until the
        // completion that brings the next request), when nothing of ours
        // touches them.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| std::io::Error::other("submission queue full"))?;
        loop {
            match self.ring.submit() {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(_) => {
                    // Free from now on (or busy with a request that waited:
                    // its completion takes it off again).
                    self.free.fetch_add(1, Ordering::AcqRel);
                    return Ok(());
                }
            }
        }
    }

    /// Waits for the completion of the command in flight: its result.
    fn complete(&mut self) -> std::io::Result<i32> {
        loop {
            if let Some(c) = self.ring.completion().next() {
                return Ok(c.result());
            }
            match self.ring.submit_and_wait(1) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
    }
}

fn new_ring() -> std::io::Result<IoUring<squeue::Entry128, cqueue::Entry>> {
    // Each ring carries one command at a time.
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(2)
}

/// Keeps the thread on the CPU whose queue it serves: the caller of a
/// request is there. A CPU that cannot be had (offline) is left to the
/// scheduler.
fn bind_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// A FUSE ring command on `fd`. `fuse_uring_cmd_req` {flags, commit_id,
/// qid, padding} goes in the command area; `addr` points at the entry's
/// two iovecs and `len` says two.
fn ring_cmd(
    fd: i32,
    cmd_op: u32,
    qid: u16,
    commit_id: u64,
    iov: &[libc::iovec; 2],
) -> squeue::Entry128 {
    let mut area = [0u8; 80];
    area[8..16].copy_from_slice(&commit_id.to_le_bytes());
    area[16..18].copy_from_slice(&qid.to_le_bytes());
    let sqe = opcode::UringCmd80::new(types::Fd(fd), cmd_op)
        .cmd(area)
        .addr(Some(iov.as_ptr() as u64))
        .build();
    // The builder has no `len`; it is the u32 at byte 24 of the SQE.
    // SAFETY: `Entry128` is `#[repr(C)]`, a 64-byte `io_uring_sqe` and 64
    // bytes of command area, with no padding: a plain 128-byte image.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[24..28].copy_from_slice(&2u32.to_le_bytes());
    // SAFETY: the same image back, with a valid `len`.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// An entry's buffers, and the state of the request in it.
struct Slot {
    bufs: Mutex<Bufs>,
    /// The kernel's id of the request, to commit its reply with.
    commit_id: AtomicU64,
    /// The reply is written (by any thread).
    answered: AtomicBool,
    /// The reply is written and committed, by the entry's thread.
    committed: AtomicBool,
    /// A commit failed: the entry is the kernel's no more.
    lost: AtomicBool,
    /// The entry's thread, to wake when another thread answers.
    owner: Thread,
}

struct Bufs {
    hdr: Box<[u8]>,
    payload: Box<[u8]>,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Slot {
    fn new(payload_sz: usize) -> Slot {
        Slot {
            bufs: Mutex::new(Bufs {
                hdr: vec![0u8; HDR_SIZE].into_boxed_slice(),
                payload: vec![0u8; payload_sz].into_boxed_slice(),
            }),
            commit_id: AtomicU64::new(0),
            answered: AtomicBool::new(false),
            committed: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            owner: std::thread::current(),
        }
    }

    /// The iovecs REGISTER gives the kernel: the boxes never move.
    fn iovecs(&self) -> [libc::iovec; 2] {
        let mut b = self.bufs.lock();
        [
            libc::iovec {
                iov_base: b.hdr.as_mut_ptr().cast(),
                iov_len: b.hdr.len(),
            },
            libc::iovec {
                iov_base: b.payload.as_mut_ptr().cast(),
                iov_len: b.payload.len(),
            },
        ]
    }

    /// The request the kernel just put in the entry, copied out (the reply
    /// overwrites it); if it cannot be decoded, its unique and why.
    fn take_request(&self) -> Result<(wire::InHeader, Request), (u64, String)> {
        let b = self.bufs.lock();
        self.commit_id
            .store(le_u64(&b.hdr, HDR_COMMIT_ID), Ordering::Release);
        self.answered.store(false, Ordering::Release);
        self.committed.store(false, Ordering::Release);
        let unique = le_u64(&b.hdr, HDR_IN_OUT + 8);
        let psz = le_u32(&b.hdr, HDR_PAYLOAD_SZ) as usize;
        if psz > b.payload.len() {
            return Err((
                unique,
                format!(
                    "payload of {psz} bytes in a {}-byte buffer",
                    b.payload.len()
                ),
            ));
        }
        let (h, op) = wire::decode(
            &b.hdr[HDR_IN_OUT..HDR_OP_IN],
            &b.hdr[HDR_OP_IN..HDR_ENT],
            &b.payload[..psz],
        )
        .map_err(|e| (unique, e.to_string()))?;
        // -trace.fuse, as fuser's own lines for /dev/fuse.
        log::debug!(target: "fuse_trace", "ring {unique}: {op:?} ino {}", h.nodeid);
        Ok((h, Request::from(op)))
    }

    fn wait_answered(&self) {
        while !self.answered.load(Ordering::Acquire) {
            std::thread::park();
        }
    }
}

/// The reply to a request that came over the ring: written into its
/// entry, committed by the entry's thread. Dropped unanswered, it answers
/// EIO, as fuser's replies do.
pub(crate) struct RingReply {
    slot: Option<Arc<Slot>>,
    unique: u64,
}

impl RingReply {
    pub(crate) fn ok(mut self, body: &[u8]) {
        self.send(0, body)
    }

    pub(crate) fn error(mut self, err: Errno) {
        self.send(-err.code(), &[])
    }

    fn send(&mut self, error: i32, body: &[u8]) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        {
            let mut b = slot.bufs.lock();
            let (error, n) = if body.len() > b.payload.len() {
                log::error!(
                    "FUSE over io_uring: request {}: a {}-byte reply exceeds the {}-byte buffer",
                    self.unique,
                    body.len(),
                    b.payload.len()
                );
                (-libc::EIO, 0)
            } else {
                (error, body.len())
            };
            b.payload[..n].copy_from_slice(&body[..n]);
            // fuse_out_header {len, error, unique}.
            let h = &mut b.hdr[HDR_IN_OUT..];
            h[0..4].copy_from_slice(&((16 + n) as u32).to_le_bytes());
            h[4..8].copy_from_slice(&error.to_le_bytes());
            h[8..16].copy_from_slice(&self.unique.to_le_bytes());
            b.hdr[HDR_PAYLOAD_SZ..HDR_PAYLOAD_SZ + 4].copy_from_slice(&(n as u32).to_le_bytes());
        }
        if std::thread::current().id() == slot.owner.id() {
            // Committed now, not when the handler returns: a head read's
            // data must reach the page cache while the handler still holds
            // the tracker's read side (see the module doc of `fs`).
            let id = slot.commit_id.load(Ordering::Acquire);
            match own_ring(|r| r.submit(CMD_COMMIT_AND_FETCH, id)) {
                Ok(()) => slot.committed.store(true, Ordering::Release),
                Err(e) => {
                    log::error!("FUSE over io_uring: request {}: commit: {e}", self.unique);
                    slot.lost.store(true, Ordering::Release);
                    slot.committed.store(true, Ordering::Release);
                }
            }
            slot.answered.store(true, Ordering::Release);
        } else {
            slot.answered.store(true, Ordering::Release);
            slot.owner.unpark();
        }
    }
}

impl Drop for RingReply {
    fn drop(&mut self) {
        if self.slot.is_some() {
            log::warn!("reply not sent for request {}: answering EIO", self.unique);
            self.send(-libc::EIO, &[]);
        }
    }
}

/// A request with its arguments copied out of the entry.
enum Request {
    Lookup(OsString),
    Forget(u64),
    Getattr,
    Setattr {
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        other: bool,
    },
    Readlink,
    Open(i32),
    Opendir,
    Read {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Write {
        fh: u64,
        data: Vec<u8>,
    },
    Release(u64),
    Releasedir,
    Flush(u64),
    Readdir {
        offset: u64,
        size: u32,
    },
    Ok,
    Statfs,
    NoReply,
    Fail(Errno),
    Malformed(String),
}

impl From<Op<'_>> for Request {
    fn from(op: Op<'_>) -> Request {
        match op {
            Op::Lookup { name } => Request::Lookup(name.to_owned()),
            Op::Forget { nlookup } => Request::Forget(nlookup),
            Op::BatchForget { .. } | Op::Interrupt { .. } => Request::NoReply,
            Op::Getattr { .. } => Request::Getattr,
            Op::Setattr {
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                ..
            } => Request::Setattr {
                mode,
                uid,
                gid,
                size,
                other: atime || mtime,
            },
            Op::Readlink => Request::Readlink,
            Op::Open { flags } => Request::Open(flags),
            Op::Opendir { .. } => Request::Opendir,
            Op::Read {
                fh, offset, size, ..
            } => Request::Read { fh, offset, size },
            Op::Write { fh, data, .. } => Request::Write {
                fh,
                data: data.to_vec(),
            },
            Op::Release { fh, .. } => Request::Release(fh),
            Op::Releasedir { .. } => Request::Releasedir,
            Op::Flush { fh, .. } => Request::Flush(fh),
            Op::Readdir { offset, size, .. } => Request::Readdir { offset, size },
            Op::Fsync | Op::Fsyncdir | Op::Destroy => Request::Ok,
            Op::Statfs => Request::Statfs,
            Op::ReadOnlyFs => Request::Fail(Errno::EROFS),
            Op::Ioctl => Request::Fail(Errno::ENOTTY),
            Op::Unsupported { .. } => Request::Fail(Errno::ENOSYS),
            Op::Malformed { opcode, why } => Request::Malformed(format!("opcode {opcode}: {why}")),
        }
    }
}

/// Calls the handler of [`super::super::ops`] that /dev/fuse would
/// (see `super::super::dev`), or answers as it does for what needs none.
fn dispatch(fs: &Fs, h: &wire::InHeader, req: Request, r: RingReply) {
    let ino = h.nodeid;
    match req {
        Request::Lookup(name) => fs.lookup(ino, &name, ReplyEntry::from(r)),
        Request::Forget(n) => {
            // The kernel sends these over /dev/fuse; here, taken as such
            // (and the entry returned with an empty answer).
            fs.forget(ino, n);
            r.ok(&[]);
        }
        Request::Getattr => fs.getattr(ino, ReplyAttr::from(r)),
        Request::Setattr {
            mode,
            uid,
            gid,
            size,
            other,
        } => fs.setattr(ino, mode, uid, gid, size, other, ReplyAttr::from(r)),
        Request::Readlink => r.error(Errno::EINVAL),
        Request::Open(flags) => fs.open(h.pid, ino, OpenFlags(flags), ReplyOpen::from(r)),
        Request::Opendir => fs.opendir(ReplyOpen::from(r)),
        // May wait for pin acks right here: the queue's spares serve on.
        Request::Read { fh, offset, size } => {
            fs.read(h.pid, ino, fh, offset, size, true, ReplyData::from(r))
        }
        Request::Write { fh, data } => fs.write(ino, fh, &data, ReplyWrite::from(r)),
        Request::Release(fh) => fs.release(ino, fh, ReplyEmpty::from(r)),
        Request::Releasedir => fs.releasedir(ReplyEmpty::from(r)),
        Request::Flush(fh) => fs.flush(h.pid, ino, fh, ReplyEmpty::from(r)),
        Request::Readdir { offset, size } => fs.readdir(ino, offset, ReplyDirectory::ring(r, size)),
        Request::Ok | Request::NoReply => r.ok(&[]),
        Request::Statfs => {
            // As fuser's default: nothing to count, 512-byte blocks.
            let mut body = Vec::with_capacity(80);
            wire::statfs_out(&mut body, 0, 0, 0, 0, 0, 512, 255, 0);
            r.ok(&body)
        }
        Request::Fail(e) => r.error(e),
        Request::Malformed(why) => {
            log::error!("FUSE over io_uring: request {}: {why}", h.unique);
            r.error(Errno::EIO)
        }
    }
}
