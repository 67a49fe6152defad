//! The queue between a networked storage's follower and its watchers.
//!
//! A ZEO, NEO or PostgreSQL storage learns of commits in one place (the
//! invalidation stream, the poller) and hands each to every [`Watcher`]
//! subscribed at that moment. Each watcher owns a [`CommitQueue`]; the
//! storage keeps only weak references to the queues (a dropped watcher
//! unsubscribes itself) and pushes under its own state lock, so that a
//! watcher created at head `h` gets every commit after `h` and none at or
//! before it. Commits from before the subscription are fetched by the
//! storage when the watcher is made and handed over as its backlog (for
//! ZEO and NEO: [`super::session::watch`]).
//!
//! When the storage is done for good (another database behind the address,
//! a broken follower, closed), [`CommitQueue::end`] records the error every
//! later [`Watcher::next_timeout`] returns, once the commits queued before
//! it are drained. A transient loss of the server is never reported here:
//! the storage catches up after reconnecting and the queue just goes on.
//!
//! Locking: a queue's mutex is taken last (after the storage's state lock)
//! and held only to push, end or pop.

use super::{Commit, Error, Watcher};
use crate::Tid;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One watcher's queue of commits, filled by its storage.
#[derive(Default)]
pub(crate) struct CommitQueue {
    st: Mutex<QueueState>,
    cond: Condvar,
}

#[derive(Default)]
struct QueueState {
    commits: VecDeque<Commit>,
    /// The storage is done: the error to return once `commits` is empty.
    end: Option<Error>,
}

impl CommitQueue {
    /// Queues `c` and wakes the watcher.
    pub(crate) fn push(&self, c: Commit) {
        self.st.lock().commits.push_back(c);
        self.cond.notify_all();
    }

    /// The storage failed for good, or was closed: the watcher returns
    /// `err` from now on (after what is already queued).
    pub(crate) fn end(&self, err: Error) {
        self.st.lock().end = Some(err);
        self.cond.notify_all();
    }
}

/// A [`Watcher`] reading a [`CommitQueue`]: its backlog first, then what
/// the storage queues, each commit after `after` exactly once.
pub(crate) struct QueueWatcher {
    q: Arc<CommitQueue>,
    /// Nothing at or before this is reported.
    after: Tid,
    /// Transactions from before the subscription, reported first.
    backlog: VecDeque<Commit>,
}

impl QueueWatcher {
    pub(crate) fn new(q: Arc<CommitQueue>, after: Tid, backlog: VecDeque<Commit>) -> QueueWatcher {
        QueueWatcher { q, after, backlog }
    }
}

impl Watcher for QueueWatcher {
    fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Commit>, Error> {
        if let Some(c) = self.backlog.pop_front() {
            self.after = c.tid;
            return Ok(Some(c));
        }
        let deadline = Instant::now() + timeout;
        let mut st = self.q.st.lock();
        loop {
            while let Some(c) = st.commits.pop_front() {
                if c.tid > self.after {
                    self.after = c.tid;
                    return Ok(Some(c));
                }
            }
            if let Some(e) = &st.end {
                return Err(again(e));
            }
            if self.q.cond.wait_until(&mut st, deadline).timed_out() && st.commits.is_empty() {
                return Ok(None);
            }
        }
    }
}

/// The same error once more (a watcher may be asked again after its end;
/// `Error` is not `Clone` because of the `io::Error` it may carry).
fn again(e: &Error) -> Error {
    match e {
        Error::NotSameDatabase { storage, why } => Error::NotSameDatabase {
            storage: storage.clone(),
            why: why.clone(),
        },
        Error::Closed(storage) => Error::Closed(storage.clone()),
        Error::Io {
            storage,
            op,
            source,
        } => Error::Io {
            storage: storage.clone(),
            op: op.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::Closed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Oid;

    fn commit(tid: u64) -> Commit {
        Commit {
            tid: Tid(tid),
            oids: vec![Oid(tid)],
        }
    }

    #[test]
    fn backlog_then_queue_each_once_then_the_end() {
        let q = Arc::new(CommitQueue::default());
        let mut w = QueueWatcher::new(q.clone(), Tid(1), VecDeque::from([commit(2), commit(3)]));
        // Queued while the backlog was fetched: 3 again must not repeat.
        q.push(commit(3));
        q.push(commit(4));
        let mut seen = Vec::new();
        while let Some(c) = w.next_timeout(Duration::ZERO).unwrap() {
            seen.push(c.tid.0);
        }
        assert_eq!(seen, [2, 3, 4]);
        q.push(commit(5));
        q.end(Error::Closed("zeo://x".into()));
        assert_eq!(w.next_timeout(Duration::ZERO).unwrap().unwrap().tid, Tid(5));
        for _ in 0..2 {
            match w.next_timeout(Duration::ZERO) {
                Err(Error::Closed(s)) => assert_eq!(s, "zeo://x"),
                r => panic!("want Closed, got {r:?}"),
            }
        }
    }

    #[test]
    fn a_parked_watcher_wakes_for_a_push() {
        let q = Arc::new(CommitQueue::default());
        let mut w = QueueWatcher::new(q.clone(), Tid(0), VecDeque::new());
        let t = std::thread::spawn(move || w.next_timeout(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        q.push(commit(7));
        assert_eq!(t.join().unwrap().unwrap().unwrap().tid, Tid(7));
    }
}
