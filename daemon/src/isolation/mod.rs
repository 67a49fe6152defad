//! The isolation protocol, server side (SPEC §6): `head/watch` links,
//! watches, and the pins that keep every client's view as of its own `at`
//! while all of them share the page cache of `head/`.
//!
//! # Parts
//!
//! - [`link`]: one open of `head/watch` = one [`Link`]: framing of lines,
//!   parsing of client messages, the outgoing queue and the parked read
//!   that delivers it, shutting a link down.
//! - [`watch`]: watches (link × file: `at` and the blocks pinned on it),
//!   setting one up or moving it (`watch <oid> @<at>`), and the pins a
//!   read of `head/` must send before it is answered.
//! - [`pin`]: sending one pin, waiting for acks with the pin timeout, and
//!   what happens to a client that fails a pin (SIGBUS, SIGKILL, `pinkill`)
//!   — or that merely exited (nothing).
//!
//! # Design
//!
//! A watch `(link, file)` holds `at` and `pinned`: blk → the revision the
//! client was told to take that block from (absent: head). The invariant,
//! for every block the kernel may hold for the file (every block ever read
//! through `head/`, kept per file in [`FileWatches::read`]):
//!
//! > block changed in `(at, head]`  ⇒  `pinned[blk] = blkrev(blk, at)`,
//! > acknowledged before any reply of that block's head data is sent.
//!
//! - Watch setup (under the tracker's read side, so head cannot move)
//!   re-establishes it for the new `at` over read ∪ pinned blocks: pins
//!   `@blkrev(blk, at)` where needed, `@head` for pins no longer needed,
//!   waits for all acks, then answers `ok`.
//! - A read of `head/bigfile` (also under the read side, which it holds
//!   until after its reply) first records its blocks as read, then for
//!   every watch of the file whose `at` is older than the block's last
//!   change sends the pin (once per revision: a pin already sent — even
//!   still in flight — is waited for, not sent again) and waits for acks.
//! - A commit (the write side) moves head, which can only break the
//!   invariant for blocks that changed — and those the kernel no longer
//!   holds (exact invalidation, see [`crate::fs`]): their next read pins.
//!
//! Ordering between a new watch and a concurrent read of a new block: the
//! read records the block in `read` *before* it looks for watches, the
//! setup registers the watch *before* it enumerates `read`; both under the
//! file's mutex. So either the read finds the watch, or the setup finds
//! the block (or both: the second one sees the pin already sent and waits
//! for it).
//!
//! # Threads
//!
//! A read that pins blocks on a FUSE worker until acks arrive — and acks
//! are FUSE writes, which need a free worker. So a head read of a file with
//! watchers is served on a thread of its own (SPEC §9 "Reads that pin");
//! a `watch` request is handled on its own thread too (it may wait for
//! head and for acks; `bye`, acks and watch requests for other files on
//! the same link must still get through — requests for the same file are
//! serialized by [`Link::setup_lock`]). Parked reads of links cost no
//! thread: their reply is kept and answered when a line is queued, on
//! flush/release, on shutdown, or by the reaper when the reading thread is
//! dying (fuser has no FUSE interrupts, SPEC §9).
//!
//! # Faulty clients
//!
//! A pin not acked within the pin timeout, answered with anything but
//! `ack`, or in flight when the link breaks (malformed line, close while
//! alive) makes the client faulty: its link is shut down (its watches go,
//! its other pins fail at once — nobody waits for it longer than the
//! timeout), and its process (the opener's thread group) gets SIGBUS, then
//! SIGKILL if still alive shortly after; `pinkill` counts it. Its reads
//! of the link get the last line (`0 fatal: …`) but no EOF until it is
//! dying ([`Link::hold_eof`]). A process
//! that is exiting or gone when that is decided simply exited: no signal,
//! not counted. If the process cannot be killed, the filesystem goes to
//! EIO mode (the same path as a failed database watcher).
//!
//! # Locking order
//!
//! [`Link::setup_lock`] (one per link × file) → `tracker` (fs, RwLock) →
//! [`Link::watches`] →
//! `Watch::st` → [`FileWatches`] / `Isolation::files` → [`Link::pins`] →
//! `Link::io`. No lock of this module is held while waiting for an ack or
//! replying to the kernel, except a watch's state mutex while a parked
//! read is answered (a direct-I/O reply: it touches no page cache). The
//! tree and the block cache of [`crate::fs`] are never taken here. The
//! kill of a faulty client runs on its own thread, holding nothing.

mod link;
pub use link::{parse_frame, parse_request, Request};
mod pin;
mod text;
mod watch;

pub(crate) use link::Link;
pub(crate) use pin::thread_dying;

use crate::fs::reply::ReplyData;
use crate::zdata::Tracker;
use fuser::Errno;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use zodb::{Oid, Tid};

/// What the isolation protocol needs from the filesystem.
pub(crate) trait Host: Send + Sync {
    /// The change tracker: the state of head/.
    fn tracker(&self) -> &RwLock<Tracker>;
    /// Waits until head/at ≥ `at` or `timeout` passes; whether it got there.
    fn wait_head(&self, at: Tid, timeout: Duration) -> bool;
    /// EIO mode.
    fn failed(&self) -> bool;
    /// How long a request that needs the storage server waits for it.
    fn storage_wait(&self) -> Duration;
    /// The storage's pack point: history before it is gone
    /// ([`zodb::Storage::oldest_tid`]).
    fn oldest_tid(&self) -> Option<Tid> {
        None
    }
    /// Switches to EIO mode (and exits): a faulty client could not be
    /// killed, so isolation can no longer be guaranteed.
    fn fail(&self, why: &str);
}

/// Per served file: which blocks were read through head/, and the watches.
#[derive(Default)]
pub(crate) struct FileWatches {
    inner: Mutex<FileInner>,
}

#[derive(Default)]
struct FileInner {
    /// Blocks ever read through head/ (a bitmap: dense, small).
    read: Vec<u64>,
    watches: Vec<Arc<watch::Watch>>,
}

impl FileInner {
    fn mark_read(&mut self, blk: u64) {
        let (i, b) = ((blk / 64) as usize, blk % 64);
        if i >= self.read.len() {
            self.read.resize(i + 1, 0);
        }
        self.read[i] |= 1 << b;
    }

    fn read_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.read.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u64 * 64 + b)
        })
    }
}

/// All links and watches of the filesystem.
pub(crate) struct Isolation {
    host: OnceLock<Weak<dyn Host>>,
    pintimeout: Duration,
    links: Mutex<HashMap<u64, Arc<Link>>>,
    next_fh: AtomicU64,
    files: RwLock<HashMap<Oid, Arc<FileWatches>>>,
    npin: AtomicU64,
    npinkill: AtomicU64,
}

/// How often parked reads are checked for dying readers (SPEC §9: ≤ 200 ms).
pub(crate) const REAP_EVERY: Duration = Duration::from_millis(100);

impl Isolation {
    pub(crate) fn new(pintimeout: Duration) -> Isolation {
        Isolation {
            host: OnceLock::new(),
            pintimeout,
            links: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            files: RwLock::new(HashMap::new()),
            npin: AtomicU64::new(0),
            npinkill: AtomicU64::new(0),
        }
    }

    /// Connects to the filesystem (once, before serving).
    pub(crate) fn set_host(&self, host: Weak<dyn Host>) {
        let _ = self.host.set(host);
    }

    fn host(&self) -> Option<Arc<dyn Host>> {
        self.host.get()?.upgrade()
    }

    fn file(&self, file: Oid) -> Arc<FileWatches> {
        if let Some(f) = self.files.read().get(&file) {
            return f.clone();
        }
        self.files.write().entry(file).or_default().clone()
    }

    /// Whether a head read of `file` may have to pin (and so should be
    /// served off the FUSE worker).
    pub(crate) fn has_watchers(&self, file: Oid) -> bool {
        self.files
            .read()
            .get(&file)
            .is_some_and(|f| !f.inner.lock().watches.is_empty())
    }

    /// A new link opened by thread `pid`; its handle.
    pub(crate) fn open(&self, pid: u32) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let tgid = pin::tgid_of(pid);
        self.links.lock().insert(fh, Arc::new(Link::new(fh, tgid)));
        fh
    }

    fn link(&self, fh: u64) -> Option<Arc<Link>> {
        self.links.lock().get(&fh).cloned()
    }

    /// A read of link `fh` by thread `tid`.
    pub(crate) fn read(&self, fh: u64, size: u32, tid: u32, reply: ReplyData) {
        match self.link(fh) {
            Some(l) => l.read(size as usize, tid, reply),
            None => reply.error(Errno::EBADF),
        }
    }

    /// A write of link `fh`: client lines.
    pub(crate) fn write(self: &Arc<Self>, fh: u64, data: &[u8]) -> Result<u32, Errno> {
        let l = self.link(fh).ok_or(Errno::EBADF)?;
        link::write(self, &l, data)?;
        Ok(data.len() as u32)
    }

    /// Flush of link `fh`: thread `pid` closes one of its descriptors. By
    /// the opener: its parked read is answered, the link stays. By another
    /// process — a forked child closing, exiting or exec'ing with its copy —
    /// nothing: the link is not that process's (SPEC §6), and its opener's
    /// reader would take an interrupted read for a broken link.
    pub(crate) fn flush(&self, fh: u64, pid: u32) {
        let Some(l) = self.link(fh) else { return };
        let closer = pin::tgid_of(pid);
        if closer != l.pid {
            log::debug!(
                "head/watch link {fh} (pid {}): closed by pid {closer}: not its opener, nothing to do",
                l.pid
            );
            return;
        }
        l.flush();
    }

    /// Release of link `fh`: the last descriptor is gone.
    pub(crate) fn release(&self, fh: u64) {
        let Some(l) = self.links.lock().remove(&fh) else {
            return;
        };
        l.unpark(Errno::EINTR);
        let inflight = self.shutdown(&l, None);
        if inflight > 0 {
            // Closed in the middle of a pin: faulty — unless it exited.
            self.fault(
                &l,
                &format!("link closed with {inflight} pin(s) in flight"),
                false,
            );
        }
    }

    /// Answers the parked reads of dying readers (call every [`REAP_EVERY`]).
    pub(crate) fn reap(&self) {
        let links: Vec<_> = self.links.lock().values().cloned().collect();
        for l in links {
            l.reap();
        }
    }

    /// EIO mode: every link down, parked reads answered with EIO.
    pub(crate) fn fail_all(&self) {
        let links: Vec<_> = self.links.lock().values().cloned().collect();
        for l in links {
            l.unpark(Errno::EIO);
            self.shutdown(&l, Some("0 fatal: filesystem switched to EIO mode".into()));
        }
    }

    /// The oldest `at` any watch holds: history must be kept back to it.
    pub(crate) fn oldest_at(&self) -> Option<Tid> {
        self.all_watches().iter().map(|w| w.at()).min()
    }

    fn all_watches(&self) -> Vec<Arc<watch::Watch>> {
        let files: Vec<_> = self.files.read().values().cloned().collect();
        files
            .iter()
            .flat_map(|f| f.inner.lock().watches.clone())
            .collect()
    }

    /// `WatchLink`: links open and not shut down.
    pub(crate) fn nlinks(&self) -> usize {
        self.links.lock().values().filter(|l| !l.is_down()).count()
    }

    /// `Watch`: active watches.
    pub(crate) fn nwatch(&self) -> usize {
        self.all_watches().len()
    }

    /// `PinnedBlk`: blocks pinned to a revision, over all watches.
    pub(crate) fn npinned(&self) -> usize {
        self.all_watches().iter().map(|w| w.npinned()).sum()
    }

    /// `pin`: pins sent.
    pub(crate) fn npin(&self) -> u64 {
        self.npin.load(Ordering::Relaxed)
    }

    /// `pinkill`: faulty clients killed.
    pub(crate) fn npinkill(&self) -> u64 {
        self.npinkill.load(Ordering::Relaxed)
    }
}
