//! Threads for the head reads that wait for pin acks.
//!
//! A read of a watched head file may have to wait for pin acks, and acks
//! arrive as FUSE writes: were FUSE workers to wait for them, enough such
//! reads would leave no worker to take the acks. Those reads run here.
//!
//! Starting a thread per read cost tens of microseconds on every such
//! read, a fixed cost of every pin. Here a thread that finished its job
//! waits to be reused: a job goes to an idle thread if there is one, else
//! to a new thread. Jobs never queue behind each other — each may wait up
//! to the pin timeout — so there is no cap on threads, as before; a thread
//! idle for [`IDLE_EXIT`] exits.
//!
//! Hand-over without lost jobs: an idle thread is on the idle list with the
//! sending end of its own channel. A submitter takes it off the list and
//! then sends; a thread whose wait timed out leaves only if it can still
//! take itself off the list — if a submitter got there first, its job is
//! on the way, and the thread waits for it.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// How long a thread stays for reuse without work.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub(crate) struct Offload {
    idle: Mutex<Vec<(u64, mpsc::Sender<Job>)>>,
    next_id: AtomicU64,
    /// Threads started so far (for tests and stats).
    started: AtomicU64,
}

impl Offload {
    /// Runs `job` on an idle thread, or on a new one.
    pub(crate) fn run(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        let mut job: Job = Box::new(job);
        loop {
            let Some((_, tx)) = self.idle.lock().pop() else {
                break;
            };
            match tx.send(job) {
                Ok(()) => return,
                // That thread is gone (it panicked in its last job): try
                // the next.
                Err(mpsc::SendError(j)) => job = j,
            }
        }
        let me = self.clone();
        self.started.fetch_add(1, Ordering::Relaxed);
        let r = std::thread::Builder::new()
            .name("read-pin".into())
            .spawn(move || me.worker(job));
        if let Err(e) = r {
            // The job (and the reply it owns) is dropped: fuser answers
            // the request with an error.
            log::error!("read-pin: spawn: {e}");
        }
    }

    fn worker(self: Arc<Self>, first: Job) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<Job>();
        let mut job = first;
        loop {
            job();
            self.idle.lock().push((id, tx.clone()));
            job = match rx.recv_timeout(IDLE_EXIT) {
                Ok(j) => j,
                Err(_) => {
                    let mut idle = self.idle.lock();
                    if let Some(i) = idle.iter().position(|(x, _)| *x == id) {
                        idle.remove(i);
                        return;
                    }
                    drop(idle);
                    // A submitter took us off the list: its job comes.
                    match rx.recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    }
                }
            };
        }
    }

    /// Threads started so far.
    #[cfg(test)]
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Threads waiting for work now.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Instant;

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn reuses_idle_threads_and_never_queues() {
        let o = Arc::new(Offload::default());
        let (tx, rx) = mpsc::channel();
        for i in 0..50 {
            let tx = tx.clone();
            o.run(move || tx.send(i).unwrap());
            assert_eq!(rx.recv().unwrap(), i);
            // The thread is back on the idle list before the next job.
            wait_until("idle again", || o.idle() == 1);
        }
        assert_eq!(o.started(), 1, "one thread did all the sequential jobs");

        // Jobs that block each other's progress must all run at once: 8
        // jobs meet at a barrier (with 1 idle thread, 7 new ones).
        let b = Arc::new(Barrier::new(8));
        for _ in 0..8 {
            let (b, tx) = (b.clone(), tx.clone());
            o.run(move || {
                b.wait();
                tx.send(0).unwrap();
            });
        }
        for _ in 0..8 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a job queued behind a blocked one");
        }
        assert_eq!(o.started(), 8);
        wait_until("all idle", || o.idle() == 8);
    }

    #[test]
    fn a_panicking_job_costs_its_thread_only() {
        let o = Arc::new(Offload::default());
        o.run(|| panic!("job panics (expected in this test)"));
        let (tx, rx) = mpsc::channel();
        o.run(move || tx.send(1).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
    }
}
