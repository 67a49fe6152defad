//! `Conn`: a view of the database as of `at`, its watch link and pinner.
//!
//! # Design
//!
//! A Conn owns one head/watch link (`crate::watchlink`) and one *pinner*
//! thread that reads it. Every file opened under the Conn
//! ([`crate::fileh`]) is watched on that link as of the Conn's `at`; the
//! daemon then sends `pin <oid> #<blk> @<rev>` whenever a block the kernel
//! is about to serve from head changed after `at` (or, on `watch`, for
//! blocks that changed in between). The pinner records the pin in the
//! file's state, re-maps that one block in every Mapping of the file
//! (`MAP_FIXED` over the block, from `@<rev>/bigfile/<oid>`, or back from
//! head for `@head`) and only then acks. The faulting reader — possibly a
//! thread of this very process, sleeping in the kernel while the daemon
//! waits for our ack — then finds the block re-mapped when it retries.
//!
//! Invariant, per Mapping block, under the file's lock: the memory is
//! mapped from the source that [`crate::fileh`]'s `src` computes from the
//! file's state (closed, size as of `at`, head size, pins, `at`). Every
//! change of that state re-maps the blocks whose source changed.
//!
//! `resync(at2)` (forward only) re-watches each open file at `at2`: the
//! daemon pins what changed and un-pins (`@head`) what no longer needs it,
//! all acknowledged before its `ok`; then the file's size and head size
//! are switched to their `at2` values and the blocks whose source changed
//! re-mapped. Going back, or any failure half-way, takes the Conn down.
//!
//! *Down* (closed, its WCFS closed, link lost, `0 error`/`0 fatal`, a pin
//! we could not apply, going back): every file of the Conn is closed with
//! the reason, every Mapping re-mapped `PROT_NONE` (it faults), calls fail
//! with `ENOTCONN`, and `bye` is sent. A pin that arrives after that is
//! still acked: the memory it is about faults, so it shows nothing stale.
//!
//! *Closing* (the Conn's or its WCFS's close, or dropping the last handle)
//! is synchronous: it takes the Conn down, waits for operations in flight,
//! then for the pinner to read the daemon's EOF (its answer to `bye`),
//! close the descriptor and exit, and joins it. When close returns nothing
//! of the Conn refers to the mount: an unmount right after it succeeds.
//! The pinner itself never joins (it may drop the last handle it upgraded);
//! a daemon that never ends the link is waited for `PINNER_WAIT` at most.
//!
//! # Locking order
//!
//! `ConnInner::op` (serializes open / resync / file close of this Conn;
//! the only lock held while waiting for the daemon) → `ConnInner::st` →
//! `FileInner::st` (one per file: pins, sizes, Mappings) →
//! `fork::REGISTRY` (leaf). The link's own locks are leaves below all of
//! them, and [`crate::wcfs`]'s state is taken before any of them and never
//! held while calling into a Conn.
//!
//! The pinner never takes `op`: it takes `st` just to find the file, drops
//! it, opens `@<rev>` files with no lock held (a FUSE request), then holds
//! the file's lock only for `mmap` system calls. So a user thread that
//! holds `op` while waiting for `ok`, or that is blocked in a page fault
//! on the very block being pinned (the kernel drops the address-space lock
//! while it waits for the FUSE read), never stops the pinner. No FUSE
//! request to head (stat of head files) is made while a lock of ours is held
//! either: the daemon serves head requests under its tracker lock, which a
//! commit may be waiting for behind a read that waits for our ack.
//!
//! # Fork
//!
//! See `crate::fork`: in a child every handle made before the fork is
//! detached — its calls fail with `ENOTCONN` without touching any lock,
//! releasing it only frees the child's copy of its memory, and that memory
//! shows the view frozen at `at`. The child never writes to the link; its
//! copy of the descriptor is closed at fork, which makes the daemon answer
//! the parent's parked read with `EINTR` (flush): the pinner reads again.

use crate::fileh::FileInner;
use crate::watchlink::{parse_frame, parse_msg, LineReader, Link, Msg};
use crate::wcfs::WcfsInner;
use crate::{fork, Error, FileH, Oid, Result, Tid};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// A view as of `at()`. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Conn {
    pub(crate) inner: Arc<ConnInner>,
}

pub(crate) struct ConnInner {
    pub(crate) wcfs: Arc<WcfsInner>,
    gen: u64,
    pub(crate) link: Arc<Link>,
    op: Mutex<()>,
    pub(crate) st: Mutex<ConnState>,
    /// `st.at`, readable without the lock (a forked child must not lock).
    at: AtomicU64,
    /// The pinner, until joined (see [`ConnInner::close`]). The pinner never
    /// takes this lock, so it may be held while joining.
    pinner: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) struct ConnState {
    at: Tid,
    released: bool,
    down: Option<Error>,
    /// Open files (weak: a file lives as long as its FileH/Mapping handles).
    files: HashMap<Oid, Weak<FileInner>>,
}

/// How long closing a Conn waits for its pinner to end (see
/// [`ConnInner::close`]); our daemon ends the link within milliseconds.
const PINNER_WAIT: Duration = Duration::from_secs(10);

fn forked() -> Error {
    Error::not_connected("wcfs: forked child: handle belongs to the parent")
}

impl ConnInner {
    pub(crate) fn connect(wcfs: Arc<WcfsInner>, at: Tid) -> Result<Arc<ConnInner>> {
        let link = Arc::new(Link::open(&wcfs.mountpoint.join("head/watch"))?);
        let conn = Arc::new(ConnInner {
            wcfs,
            gen: fork::generation(),
            link: link.clone(),
            op: Mutex::new(()),
            at: AtomicU64::new(at.0),
            st: Mutex::new(ConnState {
                at,
                released: false,
                down: None,
                files: HashMap::new(),
            }),
            pinner: Mutex::new(None),
        });
        let weak = Arc::downgrade(&conn);
        let spawned = std::thread::Builder::new()
            .name("wcfs-pinner".into())
            .spawn(move || pinner(link, weak));
        match spawned {
            Ok(h) => *conn.pinner.lock() = Some(h),
            Err(e) => {
                let err = Error::io("wcfs: start pinner thread", e);
                conn.shutdown(err.clone());
                conn.link.close(); // no reader: ours to close
                return Err(err);
            }
        }
        Ok(conn)
    }

    pub(crate) fn detached(&self) -> bool {
        self.gen != fork::generation()
    }

    /// Ok if the Conn can be used.
    pub(crate) fn check(&self) -> Result<()> {
        if self.detached() {
            return Err(forked());
        }
        let st = self.st.lock();
        if let Some(e) = &st.down {
            return Err(Error::not_connected(e.message()));
        }
        Ok(())
    }

    /// Takes the Conn down (first reason wins): files closed, memory
    /// faults, link told `bye`.
    pub(crate) fn shutdown(&self, why: Error) {
        if self.detached() {
            return;
        }
        let files: Vec<Arc<FileInner>> = {
            let mut st = self.st.lock();
            if st.down.is_some() {
                return;
            }
            st.down = Some(why.clone());
            st.files.values().filter_map(Weak::upgrade).collect()
        };
        for f in files {
            f.fault(why.clone());
        }
        self.link.set_down(why.message());
        let _ = self.link.bye();
    }

    /// Takes the Conn down (see [`ConnInner::shutdown`]) and returns only
    /// once nothing of it refers to the mount any more: an unmount right
    /// after it does not find the mount busy because of us.
    ///
    /// - `bye` makes the daemon end the link: its answer to the pinner's
    ///   parked read is EOF, and the pinner exits, closing the descriptor;
    ///   we join it. (Pins still queued are read and acked first: the
    ///   pinner never stops half-way through the stream.) Never from the
    ///   pinner itself, which does not call this.
    /// - Operations in flight (open, resync, file close) hold `op`; the
    ///   link is down, so each ends without waiting for the daemon, and
    ///   with it the descriptors it holds (a file being opened, the
    ///   `@<at>` files a resync probed). Taking `op` waits for them.
    /// - The files' descriptors were closed and their Mappings re-mapped
    ///   from anonymous memory by the shutdown.
    ///
    /// A daemon that never ends the link (a broken one: ours answers `bye`
    /// at once) cannot hold the caller forever: after [`PINNER_WAIT`] the
    /// pinner is left to end by itself, with the descriptor.
    ///
    /// Callers hold no lock of ours.
    pub(crate) fn close(&self, why: Error) {
        if self.detached() {
            return;
        }
        self.shutdown(why);
        drop(self.op.lock());
        let mut pinner = self.pinner.lock(); // a second closer waits too
        if pinner
            .as_ref()
            .is_some_and(|h| h.thread().id() != std::thread::current().id())
        {
            let h = pinner.take().expect("just checked");
            if self.link.wait_reader(PINNER_WAIT) {
                let _ = h.join();
            }
        }
        // (The pinner closed the descriptor on its way out.)
    }

    /// Forgets file `oid` if it is `f`.
    pub(crate) fn forget(&self, oid: Oid, f: &Arc<FileInner>) {
        let mut st = self.st.lock();
        if st
            .files
            .get(&oid)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(f)))
        {
            st.files.remove(&oid);
        }
    }

    /// Serializes open/resync/close of files.
    pub(crate) fn op_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.op.lock()
    }

    fn apply_pin(&self, oid: Oid, blk: u64, rev: Option<Tid>) -> Result<()> {
        let f = self.st.lock().files.get(&oid).and_then(Weak::upgrade);
        match f {
            Some(f) => f.pin(blk, rev),
            None => Ok(()), // not (or no longer) open here: nothing shows it
        }
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        let pinner = self.pinner.get_mut().take();
        if self.detached() {
            // A forked child: the thread is the parent's, not ours to
            // join or detach.
            std::mem::forget(pinner);
            return;
        }
        // The last handle is gone without close: let the daemon end the
        // link, so the pinner sees EOF and exits; wait for it like close
        // does — unless this is the pinner itself, dropping the last
        // reference it had upgraded (it is on its way out anyway).
        if self.st.get_mut().down.is_none() {
            self.link.set_down("conn dropped");
            let _ = self.link.bye();
        }
        if let Some(h) = pinner {
            if h.thread().id() != std::thread::current().id() && self.link.wait_reader(PINNER_WAIT)
            {
                let _ = h.join();
            }
        }
    }
}

impl Conn {
    pub(crate) fn from_inner(inner: Arc<ConnInner>) -> Conn {
        Conn { inner }
    }

    pub fn at(&self) -> Tid {
        Tid(self.inner.at.load(Ordering::Acquire))
    }

    /// Moves the view forward to `at`; going back is an error that takes the
    /// Conn down.
    pub fn resync(&self, at: Tid) -> Result<()> {
        let c = &self.inner;
        c.check()?;
        let _op = c.op.lock();
        c.check()?;
        let (old, files) = {
            let st = c.st.lock();
            let files: Vec<Arc<FileInner>> = st.files.values().filter_map(Weak::upgrade).collect();
            (st.at, files)
        };
        if at < old {
            let e = Error::invalid(format!(
                "wcfs: resync {at} < current at {old}: a view cannot move back"
            ));
            c.shutdown(Error::not_connected(format!(
                "wcfs: conn down: {}",
                e.message()
            )));
            return Err(e);
        }
        if at == old {
            return Ok(());
        }
        // What each file looks like as of `at` — before anything changes,
        // so that a failure here leaves the view as it was.
        let mut probed = Vec::with_capacity(files.len());
        for f in files {
            if f.is_closed() {
                continue;
            }
            let p = f.probe(at)?;
            probed.push((f, p));
        }
        for (f, p) in probed {
            let r = c.link.request(&format!("watch {} @{at}", f.oid));
            let r = match r {
                Ok(ok) if ok == "ok" => f.advance(at, p),
                Ok(other) => Err(Error::new(
                    libc::EIO,
                    format!("wcfs: resync: watch {} @{at}: {other}", f.oid),
                )),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                c.shutdown(Error::not_connected(format!(
                    "wcfs: conn down: {}",
                    e.message()
                )));
                return Err(e);
            }
        }
        c.st.lock().at = at;
        c.at.store(at.0, Ordering::Release);
        Ok(())
    }

    /// Opens ZBigFile `foid` under this view.
    pub fn open(&self, foid: Oid) -> Result<FileH> {
        let c = &self.inner;
        c.check()?;
        let _op = c.op.lock();
        c.check()?;
        let (at, existing) = {
            let st = c.st.lock();
            (st.at, st.files.get(&foid).and_then(Weak::upgrade))
        };
        if let Some(f) = existing {
            if f.reopen() {
                return Ok(FileH::new(f));
            }
        }
        let f = FileInner::open(c.clone(), foid, at)?;
        {
            let mut st = c.st.lock();
            if let Some(e) = &st.down {
                return Err(Error::not_connected(e.message()));
            }
            st.files.insert(foid, Arc::downgrade(&f));
        }
        let err = match c.link.request(&format!("watch {foid} @{at}")) {
            Ok(ok) if ok == "ok" => return Ok(FileH::new(f)),
            Ok(other) => Error::invalid(format!("wcfs: open {foid} @{at}: {other}")),
            Err(e) => e,
        };
        c.forget(foid, &f);
        f.fault(err.clone());
        Err(err)
    }

    /// Releases the Conn: its files close and their memory faults.
    pub fn close(&self) -> Result<()> {
        let c = &self.inner;
        if c.detached() {
            return Ok(());
        }
        {
            let mut st = c.st.lock();
            if st.released {
                return Err(Error::invalid("wcfs: conn already closed"));
            }
            st.released = true;
        }
        c.close(Error::not_connected("wcfs: conn closed"));
        Ok(())
    }
}

/// The pinner: reads the link until EOF, delivers replies, applies pins.
fn pinner(link: Arc<Link>, conn: Weak<ConnInner>) {
    // Signals meant for the application go to its own threads, not to a
    // thread it does not know about (faults are synchronous: unaffected).
    // SAFETY: sets this thread's signal mask from a filled set.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
    let mut rd = LineReader::new();
    let trace = std::env::var_os("WCFS_TRACE_PINNER").is_some();
    let why = loop {
        let line = match rd.next_line(&link) {
            Ok(Some(l)) => l,
            Ok(None) => break "daemon closed the link".to_string(),
            Err(e) => break e,
        };
        if trace {
            eprintln!("wcfs pinner {}: < {line}", std::process::id());
        }
        let (stream, msg) = match parse_frame(&line) {
            Ok(x) => x,
            Err(e) => break format!("protocol error: {e}"),
        };
        if stream == 0 {
            // `0 error <why>` / `0 fatal <why>`: the daemon ends the link.
            let why = format!("daemon: {msg}");
            link.set_down(&why);
            if let Some(c) = conn.upgrade() {
                c.shutdown(Error::not_connected(format!("wcfs: conn down: {why}")));
            }
            continue; // EOF follows
        }
        if stream % 2 == 1 {
            if !link.deliver(stream, msg) {
                // Every request waits for its reply until the link is down.
                break format!("protocol error: {line:?}: no request waits on stream {stream}");
            }
            continue;
        }
        match parse_msg(msg) {
            Ok(Msg::Pin { oid, blk, rev }) => {
                if let Some(c) = conn.upgrade() {
                    if let Err(e) = c.apply_pin(oid, blk, rev) {
                        // Memory of the Conn now faults: acking is truthful.
                        c.shutdown(Error::not_connected(format!(
                            "wcfs: conn down: pin {oid} #{blk}: {}",
                            e.message()
                        )));
                    }
                }
                let _ = link.send(&format!("{stream} ack"));
            }
            Err(e) => break format!("protocol error: {e}"),
        }
    };
    link.set_down(&why);
    if let Some(c) = conn.upgrade() {
        c.shutdown(Error::not_connected(format!(
            "wcfs: conn down: head/watch: {why}"
        )));
    }
    // Pins still in flight are dropped, not failed, once we said bye.
    let _ = link.bye();
    link.close();
    link.reader_stopped();
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}
