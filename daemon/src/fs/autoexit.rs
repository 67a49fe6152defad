//! `-autoexit`: unmount and exit once no client has been active for a while.
//!
//! A client is active while it holds a handle on the filesystem (an open
//! file or directory, including a mapping whose file was closed: the kernel
//! releases the handle only at munmap) or has a request in flight, and it
//! was active at the moment any request started or ended. The daemon is
//! idle when no handle is open, no request is in flight, and no request has
//! started or ended for the idle period.
//!
//! Idle is only a hint: a client may open a file right after we decide. So
//! the unmount is the plain (not lazy) one, which the kernel refuses while
//! anything on the mount is in use — a process with its working directory
//! there, a file opened meanwhile. Then we keep serving and count the
//! refusal as activity. Once the unmount succeeds the kernel ends the FUSE
//! session and `serve` returns.

use super::unmount::OwnMount;
use super::Wcfs;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client activity: open handles, requests in flight, time of the last
/// request start or end. Lock-free: every request touches it.
pub(crate) struct Activity {
    t0: Instant,
    /// Milliseconds since `t0` of the last request start or end.
    last_ms: AtomicU64,
    handles: AtomicUsize,
    inflight: AtomicUsize,
}

/// Marks a request in flight until dropped.
pub(crate) struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            t0: Instant::now(),
            last_ms: AtomicU64::new(0),
            handles: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.fetch_max(self.now_ms(), Ordering::AcqRel);
    }

    /// A request starts; it ends when the guard is dropped.
    pub(crate) fn request(&self) -> Busy<'_> {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self)
    }

    pub(crate) fn opened(&self) {
        self.handles.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn released(&self) {
        // Saturating: a release we did not count an open for (the kernel
        // sends one per successful open, but stay safe) must not wrap.
        let _ = self
            .handles
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub(crate) fn handles(&self) -> usize {
        self.handles.load(Ordering::Acquire)
    }

    /// For how long nobody has been active (zero while someone is).
    pub(crate) fn idle_for(&self) -> Duration {
        if self.handles() > 0 || self.inflight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = self.last_ms.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

/// Runs in its own thread: unmounts our mount once idle for `idle`.
/// Returns after a successful unmount (the session then ends), when
/// stopping, or when someone else has unmounted us.
pub(crate) fn run(w: Arc<Wcfs>, mnt: &OwnMount, idle: Duration) {
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        std::thread::sleep(tick);
        if w.stopping.load(Ordering::Acquire) {
            return;
        }
        let quiet = w.activity.idle_for();
        if quiet < idle {
            continue;
        }
        log::info!(
            "autoexit: no client activity for {:.1}s: unmounting {}",
            quiet.as_secs_f64(),
            mnt.path().display()
        );
        match mnt.unmount() {
            Ok(true) => {
                w.stop();
                return;
            }
            Ok(false) => {
                log::info!("autoexit: {} is no longer our mount", mnt.path().display());
                return;
            }
            Err(e) => {
                log::info!(
                    "autoexit: unmount {}: {e}; still serving",
                    mnt.path().display()
                );
                w.activity.touch();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_accounting() {
        let a = Activity::new();
        std::thread::sleep(Duration::from_millis(30));
        assert!(a.idle_for() >= Duration::from_millis(20));
        let busy = a.request();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(a.idle_for(), Duration::ZERO);
        drop(busy);
        assert!(a.idle_for() < Duration::from_millis(20));
        a.opened();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(a.idle_for(), Duration::ZERO);
        a.released();
        a.released(); // extra release: no wrap
        assert_eq!(a.handles(), 0);
        std::thread::sleep(Duration::from_millis(30));
        assert!(a.idle_for() >= Duration::from_millis(20));
    }
}
