//! FUSE side of the daemon: the filesystem tree of SPEC §5, reads, and
//! keeping the kernel page cache of `head/` exact.
//!
//! # The tree
//!
//! ```text
//! head/at  head/watch  head/bigfile/<oid>  @<tid>/bigfile/<oid>
//! .wcfs/{zurl,pintimeout,stats}  .wcfs/debug/zhead (-debug)
//! ```
//!
//! Fixed nodes have fixed inode numbers; `head/bigfile/<oid>` nodes are
//! created on first lookup and kept (there is one per served file, and the
//! change tracker keeps tracking the file anyway); `@<tid>/…` nodes are
//! created on lookup and dropped, with everything under them, when the
//! kernel forgets them — memory stays bounded by what the kernel holds.
//! Inode numbers are never reused, so generation 0 is always right.
//! See [`tree`].
//!
//! # head/: serving reads vs applying transactions
//!
//! The state of `head/` is the change tracker ([`crate::zdata::Tracker`])
//! behind one `RwLock`:
//!
//! - a FUSE request about head (lookup, getattr, read of head/bigfile)
//!   takes the *read* side before it looks at the tracker and keeps it
//!   until *after its reply has been written to the kernel*. Reads of
//!   different blocks therefore run in parallel, and whatever a request
//!   learned as of the old head has reached the kernel before the head can
//!   move;
//! - the watcher ([`zwatch`]) takes the *write* side only to apply one
//!   transaction (and to drop changed head blocks from our own block cache),
//!   releases it, then — holding no lock at all — invalidates in the kernel
//!   exactly the changed blocks of every head file, then the attributes of
//!   the changed files, and only then publishes the new tid in `head/at`.
//!
//! Why the invalidation runs with no lock held: the kernel keeps the pages
//! of an in-flight FUSE read locked until that read is answered, and an
//! invalidation of a range waits for those page locks. If the watcher
//! invalidated while holding the write lock, a read of the same range
//! would wait for the read lock while the kernel makes the invalidation
//! wait for that read: deadlock. For the same reason no read handler ever
//! sends a notification.
//!
//! Why this is exact: a read that loaded old data held the read lock until
//! it replied, so its pages are in the cache before the write lock is
//! granted, and the invalidation that follows drops them. A read that runs
//! after the apply sees the new head. So once `head/at` shows a tid, no
//! page of `head/` older than it survives and no reply older than it is
//! still in flight. Only blocks the kernel may hold need invalidation, and
//! those are exactly the blocks ever read through head, which the tracker
//! tracks.
//!
//! # Blocks
//!
//! Access to one block caches that block only (SPEC §5): a reader that
//! touches block N must not make the kernel read pages of N±1 — for a
//! watched file that would make us pin blocks nobody touched. Kernel
//! readahead crosses block boundaries whatever its window (measured: with
//! the FUSE default of 128 KiB a read(2) of one whole block leaves 32–48
//! pages of the next one cached, and an mmap fault at a block's first page
//! under `MADV_NORMAL` reads 64 KiB of the previous block), so INIT turns
//! it off for the mount ([`ops`]): the kernel asks only for pages a reader
//! touches. A ZODB block is loaded whole anyway, so the request that
//! touches a block stores the rest of it into the page cache before it
//! replies ([`upload`]) — one byte read caches exactly its block, and the
//! reader goes on in the cache. What readahead gave in speed — the next
//! block loading while the reader works on this one — [`prefetch`] gives
//! without touching the page cache: blocks asked for in order make the
//! daemon load the next one into its own block cache.
//!
//! [`cache`] makes every block be loaded once even when several requests
//! want it at the same time (single flight), and keeps a few recently
//! loaded blocks. A reply is a slice of the loaded block, written to the
//! kernel with no further copy. Head blocks are dropped from the cache
//! under the write lock when they change; `@<tid>` blocks never change.
//!
//! Where a cold read's time goes (perf, 2 MiB blocks, data.fs in the page
//! cache): in the daemon, the `pread` copy out of data.fs and the kernel's
//! copy of the stored block into the page cache of our file; in the reader,
//! copying the pages out. The zodb crate alone does only the `pread`, so a
//! cold read through FUSE cannot come near it; a warm read does not
//! involve us at all.
//!
//! # Keeping old data
//!
//! When a commit changes a block the kernel caches whole for a head file
//! (watched or not), its old data goes into the page cache of `@<blkrev>`
//! before head drops it, for the clients pinned or looking there
//! ([`retain`]).
//!
//! # -autoexit
//!
//! See [`autoexit`]: idle = no open handle, no request in flight, no
//! request for the idle period; then a plain unmount, which the kernel
//! refuses while the mount is in use (we then keep serving).
//!
//! # Failure
//!
//! When the database watcher fails (data.fs truncated or corrupt, storage
//! gone), we can no longer know what head is: the watcher takes the write
//! lock (so no read is in flight), switches the filesystem to EIO mode —
//! every operation then fails with EIO —, drops the page cache of every
//! head file, and exits the process, after which the kernel answers every
//! access with ENOTCONN. Stale data is never served. A corrupt object
//! behind one block only fails the reads touching that block.
//!
//! # head/watch
//!
//! The isolation protocol lives in [`crate::isolation`]; the hooks here
//! are small: open/read/write/flush/release of `head/watch` go to it, a
//! read of `head/bigfile` calls `Isolation::pin_read` after loading its
//! blocks and before replying — still under the tracker's read side, so a
//! commit waits for the pins (bounded by the pin timeout) — and is served
//! off the FUSE workers ([`offload`]) when it would wait for a pin (acks
//! are FUSE writes: workers blocked on pins must not starve them); over
//! io_uring it waits on its own entry's thread, the queue growing spare
//! entries instead ([`uring`]). The watcher
//! trims history no further than the oldest watched `at`. [`reaper`]
//! answers parked stream reads (zhead, watch) of dying readers.
//!
//! # Transports
//!
//! Requests come over /dev/fuse through fuser ([`dev`]) or, where the
//! kernel offers it, over FUSE over io_uring ([`uring`]); the handlers
//! ([`ops`]) answer both through [`reply`]. "Until the reply is sent"
//! above means until the kernel has it: on the ring, a reply made on the
//! entry's thread is committed before the handler goes on.
//!
//! # Locking order
//!
//! The upload gate ([`upload`]) before `tracker`'s write side (the
//! watcher closes it, then takes the lock);
//! `tracker` (RwLock) → `tree` (Mutex) → `cache` (Mutex) → `zhead` (Mutex);
//! `tracker` → the locks of [`crate::isolation`] (never together with
//! `tree`, `cache` or `zhead`); `published` (head/at) is taken alone. No
//! lock but `tracker`'s read side is held while loading from storage or
//! waiting for pin acks, and none while notifying the kernel.

mod autoexit;
mod cache;
mod dev;
mod offload;
mod ops;
mod prefetch;
pub(crate) mod reply;
mod retain;
mod tree;
mod unmount;
mod upload;
// Public only for the fuzz target (fuzz/fuzz_targets/fuse_ring.rs).
#[doc(hidden)]
pub mod uring;
mod zhead;
mod zwatch;

use crate::cli::Options;
use parking_lot::{Condvar, Mutex, RwLock};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use zodb::{Storage, Tid};

use crate::isolation::{Host, Isolation};
use crate::zdata::Tracker;

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Storage(#[from] zodb::storage::Error),
    #[error("mountpoint {path}: {why}")]
    Mountpoint { path: String, why: String },
    #[error("mount {path}: {source}")]
    Mount {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// FUSE worker threads. Loads block a worker for the time of one storage
/// read; a few more than cores keep the kernel's request queue moving while
/// some wait on I/O.
const N_THREADS: usize = 12;

/// How long a lookup of `@<tid>` with a tid newer than head waits for head
/// to reach it (a client that just committed may be a little ahead of us).
const FUTURE_TID_WAIT: Duration = Duration::from_secs(10);

/// State shared by the FUSE handlers and the watcher.
pub(crate) struct Wcfs {
    /// What `.wcfs/zurl` reads: the zurl without its password
    /// ([`wcfs_lifecycle::public_zurl`]).
    zurl: String,
    storage: Arc<dyn Storage>,
    opts: Options,
    /// The change tracker: the state of head/. See the module doc.
    tracker: RwLock<Tracker>,
    /// EIO mode: set once, under the tracker's write lock.
    failed: AtomicBool,
    /// Unmounting: lookups waiting for head give up.
    stopping: AtomicBool,
    /// The tid `head/at` shows, advanced after invalidation.
    published: Mutex<Tid>,
    published_cond: Condvar,
    tree: Mutex<tree::Tree>,
    cache: cache::BlockCache,
    /// Whole blocks pushed into the page cache after a load.
    uploads: upload::Uploads,
    /// Blocks loaded ahead of sequential readers, into `cache` only.
    prefetch: prefetch::Prefetch,
    /// Threads for head reads that may wait for pin acks.
    offload: Arc<offload::Offload>,
    zhead: zhead::ZHeads,
    /// head/watch links and watches.
    iso: Arc<Isolation>,
    notifier: OnceLock<fuser::Notifier>,
    /// Where we are mounted (canonical).
    mnt: PathBuf,
    /// Client activity, for -autoexit.
    activity: autoexit::Activity,
    /// The watcher thread: its opens of our files get [`retain::OWN_FH`].
    watcher_tid: AtomicI32,
    /// Entries of FUSE over io_uring that have carried a request
    /// (`.wcfs/stats` FuseRingEntry; 0: /dev/fuse serves everything).
    ring_entries: AtomicUsize,
}

impl Wcfs {
    /// Unmounting: lookups waiting for head give up.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _g = self.published.lock();
        self.published_cond.notify_all();
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn head_at(&self) -> Tid {
        *self.published.lock()
    }

    /// Waits until head/at ≥ `at` or the deadline passes; whether it got there.
    fn wait_head(&self, at: Tid, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut head = self.published.lock();
        while *head < at {
            if self.failed()
                || self.stopping.load(Ordering::Acquire)
                || self
                    .published_cond
                    .wait_until(&mut head, deadline)
                    .timed_out()
            {
                return *head >= at;
            }
        }
        true
    }
}

impl Host for Wcfs {
    fn tracker(&self) -> &RwLock<Tracker> {
        &self.tracker
    }
    fn wait_head(&self, at: Tid, timeout: Duration) -> bool {
        Wcfs::wait_head(self, at, timeout)
    }
    fn failed(&self) -> bool {
        Wcfs::failed(self)
    }
    fn storage_wait(&self) -> Duration {
        self.opts.storage_wait
    }
    fn oldest_tid(&self) -> Option<Tid> {
        self.storage.oldest_tid()
    }
    fn fail(&self, why: &str) {
        zwatch::fail(self, why)
    }
}

/// Answers the parked reads of stream files (zhead, head/watch) whose
/// reading thread is dying, forever: fuser cannot receive FUSE interrupts
/// (SPEC §9), so the kernel would keep a killed reader waiting for us.
fn reaper(wcfs: Arc<Wcfs>) {
    loop {
        std::thread::sleep(crate::isolation::REAP_EVERY);
        wcfs.zhead.reap();
        wcfs.iso.reap();
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread, and so in
/// every thread it starts from then on; returns the set. [`serve`] takes
/// them with `sigwait` on a thread of its own and unmounts cleanly.
///
/// A process that serves must call this before it starts *any* thread —
/// first thing in `main`: a process-directed signal goes to any thread
/// that does not block it, and its default action ends the whole process.
/// (`wcfsd serve ZURL` starts the lifecycle's `serve-lock` thread, and
/// ZEO/PostgreSQL storages start theirs, before `serve` mounts: a SIGTERM
/// right after the mount answered was once delivered to such a thread and
/// killed the daemon by signal instead of unmounting it.) A signal that
/// comes before `serve` waits for it stays pending and is taken then.
pub fn block_stop_signals() -> io::Result<nix::sys::signal::SigSet> {
    let mut sigs = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        sigs.add(s);
    }
    sigs.thread_block().map_err(io::Error::from)?;
    Ok(sigs)
}

/// Serves `zurl` at `mountpoint` until unmounted or signalled (SIGINT,
/// SIGTERM: clean unmount, `Ok`). A watcher failure exits the process.
/// Call [`block_stop_signals`] before starting any thread.
pub fn serve(zurl: &str, mountpoint: &Path, opts: Options) -> Result<(), Error> {
    check_mountpoint(mountpoint)?;
    let resilience = zodb::storage::Resilience {
        wait: opts.storage_wait,
        ..Default::default()
    };
    let storage = zodb::zurl::open_with(zurl, &resilience)?;
    let head = storage.last_tid()?;
    // Watch from the very tid the tracker starts at: no commit is missed
    // between opening and serving.
    let watcher = storage.watch(head)?;
    log::info!(
        "serving {} at {} @{head}",
        wcfs_lifecycle::shown(zurl),
        mountpoint.display()
    );

    let prefetch_depth = storage.prefetch_depth();
    let wcfs = Arc::new(Wcfs {
        zurl: wcfs_lifecycle::public_zurl(zurl).into_owned(),
        tracker: RwLock::new(Tracker::new(storage.clone(), head)),
        storage,
        failed: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        published: Mutex::new(head),
        published_cond: Condvar::new(),
        tree: Mutex::new(tree::Tree::new(opts.debug)),
        cache: cache::BlockCache::new(cache::CAPACITY, cache::CAPACITY_BYTES),
        uploads: upload::Uploads::default(),
        prefetch: prefetch::Prefetch::new(prefetch_depth),
        offload: Arc::default(),
        zhead: zhead::ZHeads::default(),
        iso: Arc::new(Isolation::new(opts.pintimeout)),
        notifier: OnceLock::new(),
        mnt: mountpoint
            .canonicalize()
            .unwrap_or_else(|_| mountpoint.to_path_buf()),
        activity: autoexit::Activity::new(),
        watcher_tid: AtomicI32::new(0),
        ring_entries: AtomicUsize::new(0),
        opts,
    });

    // Signals go to a thread of ours (see `block_stop_signals`; blocked
    // again here for callers that did not do it first).
    let sigs = block_stop_signals()?;

    let root = nix::unistd::geteuid().is_root();
    let mut options = vec![
        fuser::MountOption::FSName(fsname(&wcfs_lifecycle::public_zurl(zurl), root)),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    // fuser's direct mount(2) path (root) gives the kernel only "kernel"
    // options, so the subtype must be one of them there; fusermount3 (non
    // root) takes it as its own option.
    if root {
        options.push(fuser::MountOption::CUSTOM("subtype=wcfs".into()));
    } else {
        options.push(fuser::MountOption::Subtype("wcfs".into()));
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.n_threads = Some(N_THREADS);
    config.clone_fd = true;

    // Once more right before the mount: in a shared directory the
    // mountpoint must still be our own (wcfs_lifecycle::check_mountpoint).
    wcfs_lifecycle::check_mountpoint(mountpoint).map_err(|e| Error::Mountpoint {
        path: mountpoint.display().to_string(),
        why: e.to_string(),
    })?;
    let negotiated = Arc::new(uring::Negotiated::default());
    let dev = dev::DevFs {
        fs: ops::Fs(wcfs.clone()),
        uring: wcfs.opts.uring.then(|| negotiated.clone()),
    };
    let session = fuser::Session::new(dev, mountpoint, &config).map_err(|source| Error::Mount {
        path: mountpoint.display().to_string(),
        source,
    })?;
    let _ = wcfs.notifier.set(session.notifier());
    let host: Arc<dyn Host> = wcfs.clone();
    wcfs.iso.set_host(Arc::downgrade(&host));
    let own = unmount::OwnMount::new(
        &wcfs.mnt,
        std::os::fd::AsFd::as_fd(&session).try_clone_to_owned()?,
    )?;
    mount_fusectl();
    if wcfs.opts.uring {
        let fd = std::os::fd::AsFd::as_fd(&session).try_clone_to_owned()?;
        uring::start(fd, ops::Fs(wcfs.clone()), negotiated);
    }

    {
        let wcfs = wcfs.clone();
        std::thread::Builder::new()
            .name("zwatcher".into())
            .spawn(move || zwatch::run(wcfs, watcher))?;
    }
    {
        let wcfs = wcfs.clone();
        std::thread::Builder::new()
            .name("upload".into())
            .spawn(move || upload::run(wcfs))?;
    }
    for _ in 0..wcfs.prefetch.depth {
        let wcfs = wcfs.clone();
        std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || prefetch::run(wcfs))?;
    }
    {
        let wcfs = wcfs.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reaper(wcfs))?;
    }
    let (w, mnt) = (wcfs.clone(), own.clone());
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = sigs.wait() {
                let shown = mnt.path().display();
                log::info!("{sig:?}: unmounting {shown}");
                // Already stopping: the session has ended, and the path
                // may be another daemon's by now (see `unmount`).
                if w.stopping.swap(true, Ordering::AcqRel) {
                    return;
                }
                w.stop();
                match mnt.unmount() {
                    Ok(true) => {}
                    Ok(false) => log::info!("{shown} is no longer our mount"),
                    Err(e) => {
                        log::warn!("unmount {shown}: {e}; detaching");
                        let _ = mnt.detach();
                    }
                }
            }
        })?;
    if wcfs.opts.autoexit {
        let idle = wcfs.opts.autoexit_idle;
        log::info!(
            "autoexit: exit after {:.1}s without open handles or requests",
            idle.as_secs_f64()
        );
        let (w, mnt) = (wcfs.clone(), own.clone());
        std::thread::Builder::new()
            .name("autoexit".into())
            .spawn(move || autoexit::run(w, &mnt, idle))?;
    }

    // fuser unmounts by path when its mount handle is dropped, even after
    // the kernel has ended the session — when the path may already hold
    // the mount of a daemon started after us (see `unmount`). So that
    // handle is never dropped: the session runs on fuser's thread, we join
    // that thread and forget the handle (its /dev/fuse descriptor, dead by
    // then, goes with the process). Every unmount of ours is `OwnMount`'s.
    let mut background = session.spawn()?;
    let session_thread = std::mem::replace(&mut background.guard, std::thread::spawn(|| Ok(())));
    std::mem::forget(background);
    // Returns when the kernel ends the session: the mount is gone.
    let ended = session_thread
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("FUSE session thread panicked")));
    // From here on no thread of ours unmounts anything.
    let asked_to_stop = wcfs.stopping.swap(true, Ordering::AcqRel);
    wcfs.stop();
    match ended {
        Ok(()) => {}
        // Asked to stop (SIGTERM), the unmount found the mount busy and
        // detached it, and then the connection was aborted (fusectl)
        // rather than released: still the end we were asked for.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) && asked_to_stop => {
            log::info!("connection aborted while stopping");
        }
        Err(e) => return Err(e.into()),
    }
    log::info!("unmounted; bye");
    Ok(())
}

/// Refuses a mountpoint that is not a directory or already has something
/// mounted on it: mounting over a mount would hide it and leave two
/// daemons fighting for one name.
fn check_mountpoint(mnt: &Path) -> Result<(), Error> {
    let bad = |why: String| Error::Mountpoint {
        path: mnt.display().to_string(),
        why,
    };
    // In a directory others can write to (the mount root), only our own
    // directory will do (see wcfs_lifecycle::check_mountpoint).
    wcfs_lifecycle::check_mountpoint(mnt).map_err(|e| bad(e.to_string()))?;
    let meta = std::fs::metadata(mnt).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    let canon = mnt.canonicalize().map_err(|e| bad(e.to_string()))?;
    if let Ok(Some(_)) = wcfs_lifecycle::sys::mount_at(&canon) {
        return Err(bad("busy: already a mount point".into()));
    }
    Ok(())
}

/// The mount source: the zurl exactly (SPEC §4) — the public zurl, no
/// password (our caller passes it). fusermount3 (non-root)
/// takes it inside its `-o` list, where a `,` would end the option and
/// start another taken from the zurl: it reads `\,` and `\\` inside
/// `fsname=` as the plain characters, so those are escaped there.
fn fsname(zurl: &str, root: bool) -> String {
    if root {
        return zurl.to_string();
    }
    let mut s = String::with_capacity(zurl.len());
    for c in zurl.chars() {
        if c == ',' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// Clients abort a stuck daemon through `/sys/fs/fuse/connections/<N>/abort`
/// (SPEC §4): mount fusectl there when it is not. Best effort, and only
/// tried as root (nobody else may mount it).
fn mount_fusectl() {
    const DIR: &str = "/sys/fs/fuse/connections";
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(DIR));
    if mounted || !Path::new(DIR).is_dir() || !nix::unistd::geteuid().is_root() {
        return;
    }
    match nix::mount::mount(
        Some("fusectl"),
        DIR,
        Some("fusectl"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        Ok(()) => log::info!("mounted fusectl at {DIR}"),
        Err(e) => log::debug!("mount fusectl at {DIR}: {e} (ignored)"),
    }
}
