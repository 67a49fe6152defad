//! What the ZEO and NEO drivers share: a session with a server that can be
//! lost and re-established, and the invalidation stream that runs across
//! sessions.
//!
//! Both drivers keep, under their client's state lock, a [`Session`]: the
//! [`Phase`] (serving through a connection, down and reconnecting, failed
//! for good, closed), the stream position `last_tid` with the objects of
//! the transaction there (for the same-database check after a reconnect),
//! the subscribed watchers, and `live_at`, the point the serving
//! connection's start already covers. The contract they share (see
//! [`crate::storage`] and each driver's module doc):
//!
//! - **`last_tid` is the stream position**: it only moves by handing a
//!   transaction to every watcher ([`Session::deliver`]), never moves back,
//!   and stays put while the server is away. A watcher subscribes at it
//!   ([`watch`]), under the same lock, and gets older transactions as a
//!   backlog from the driver's history query: so "last tid" and "watch
//!   from it" never disagree.
//! - **Live invalidations** at or before `live_at` are the start-up race's
//!   duplicates and are dropped; any other that does not increase the
//!   position is a protocol violation ([`Session::invalidated`]).
//! - **Failed and Closed are for good**: every later call returns
//!   [`Error::NotSameDatabase`] or [`Error::Closed`], and the watchers'
//!   queues end with that error ([`Session::finish`]). While `Down`, calls
//!   wait for the reconnect up to [`Resilience::wait`] ([`wait_up`]), then
//!   give up alone with [`Error::Unavailable`].
//!
//! What a connection is, how a session is set up, checked and caught up,
//! stays with each driver: only the bookkeeping above is here.
//!
//! Locking: these are plain data and functions run under (or taking) the
//! driver's state lock; none calls into a connection.

use super::commit_queue::{CommitQueue, QueueWatcher};
use super::{counter, Commit, Error, Resilience, Watcher};
use crate::types::{Oid, Tid};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Where a storage stands with its server; `C` is the serving connection.
pub(crate) enum Phase<C> {
    /// Serving through this connection.
    Up(C),
    /// Lost the server at `since`; reconnecting.
    Down {
        since: Instant,
        /// Why the connection was lost.
        lost: String,
        /// Why the last reconnect attempt failed.
        attempt: String,
        /// The first giving-up of this outage was logged.
        gaveup_logged: bool,
    },
    /// For good: not the same database any more.
    Failed(String),
    /// Dropped.
    Closed,
}

impl<C> Phase<C> {
    /// Down since now: lost for `lost`, no attempt yet.
    pub(crate) fn down(lost: String, gaveup_logged: bool) -> Self {
        Phase::Down {
            since: Instant::now(),
            lost,
            attempt: "not yet tried".into(),
            gaveup_logged,
        }
    }
}

/// The phase and the invalidation stream of a storage (see the module doc).
pub(crate) struct Session<C> {
    pub(crate) phase: Phase<C>,
    pub(crate) last_tid: Tid,
    /// The objects the transaction at `last_tid` changed, for the
    /// same-database check (None: unknown — no transaction reported yet).
    pub(crate) last_oids: Option<Vec<Oid>>,
    pub(crate) watchers: Vec<Weak<CommitQueue>>,
    /// Where the serving connection started: its invalidations up to it
    /// are already counted.
    pub(crate) live_at: Tid,
    next_conn: u64,
}

impl<C> Session<C> {
    pub(crate) fn new(phase: Phase<C>) -> Self {
        Session {
            phase,
            last_tid: Tid::ZERO,
            last_oids: None,
            watchers: Vec::new(),
            live_at: Tid::ZERO,
            next_conn: 1,
        }
    }

    /// A new connection id (never 0, never reused).
    pub(crate) fn next_conn(&mut self) -> u64 {
        self.next_conn += 1;
        self.next_conn
    }

    /// The error of a storage that is done for good, if it is.
    pub(crate) fn done(&self, url: &str) -> Result<(), Error> {
        match &self.phase {
            Phase::Failed(why) => Err(Error::NotSameDatabase {
                storage: url.to_string(),
                why: why.clone(),
            }),
            Phase::Closed => Err(Error::Closed(url.to_string())),
            _ => Ok(()),
        }
    }

    /// [`Storage::last_tid`](super::Storage::last_tid): the stream
    /// position, also while the server is away.
    pub(crate) fn last_tid(&self, url: &str) -> Result<Tid, Error> {
        self.done(url)?;
        Ok(self.last_tid)
    }

    /// Hands `c` to every watcher and advances the stream.
    pub(crate) fn deliver(&mut self, c: Commit) {
        self.last_tid = c.tid;
        self.last_oids = Some(c.oids.clone());
        self.watchers.retain(|w| match w.upgrade() {
            Some(q) => {
                q.push(c.clone());
                true
            }
            None => false,
        });
    }

    /// A live invalidation of the serving connection: dropped if its start
    /// covers it, delivered if it advances the stream, else a violation.
    pub(crate) fn invalidated(&mut self, c: Commit) -> Result<(), String> {
        if c.tid <= self.live_at {
            return Ok(()); // the start-up race: counted already
        }
        if c.tid <= self.last_tid {
            return Err(format!(
                "protocol error: invalidation of {} after {}: tids must increase",
                c.tid, self.last_tid
            ));
        }
        self.deliver(c);
        Ok(())
    }

    /// Records why the last reconnect attempt failed (while down).
    pub(crate) fn note_attempt(&mut self, why: String) {
        if let Phase::Down { attempt, .. } = &mut self.phase {
            *attempt = why;
        }
    }

    /// Why the storage is not serving now, if it is not (`lost`: how the
    /// driver names a lost connection).
    pub(crate) fn failure(&self, lost: &str) -> Option<String> {
        match &self.phase {
            Phase::Up(_) => None,
            Phase::Down {
                lost: why, attempt, ..
            } => Some(format!("{lost}: {why}; reconnecting: {attempt}")),
            Phase::Failed(why) => Some(why.clone()),
            Phase::Closed => Some("closed".into()),
        }
    }

    /// The storage is done for (`phase`: Failed or Closed): every watcher
    /// ends with `err`. The connection that was serving, to fail (outside
    /// the lock).
    pub(crate) fn finish(&mut self, phase: Phase<C>, err: impl Fn() -> Error) -> Option<C> {
        let old = std::mem::replace(&mut self.phase, phase);
        for w in std::mem::take(&mut self.watchers) {
            if let Some(q) = w.upgrade() {
                q.end(err());
            }
        }
        match old {
            Phase::Up(c) => Some(c),
            _ => None,
        }
    }
}

/// How a driver's messages name what it lost, for [`wait_up`].
pub(crate) struct Names {
    /// "connection lost", "master connection lost".
    pub(crate) lost: &'static str,
    /// "server", "cluster".
    pub(crate) peer: &'static str,
}

/// The serving connection of the session in `st` (reached by `session`),
/// waiting for a reconnect until `start` + the resilience wait. Err:
/// Unavailable past the wait (counted in `giveup`, the first of an outage
/// logged), NotSameDatabase or Closed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn wait_up<S, C: Clone>(
    st: &Mutex<S>,
    changed: &Condvar,
    session: impl Fn(&mut S) -> &mut Session<C>,
    url: &str,
    names: &Names,
    resilience: &Resilience,
    giveup: &AtomicU64,
    op: &str,
    start: Instant,
) -> Result<C, Error> {
    let deadline = start + resilience.wait;
    let mut st = st.lock();
    loop {
        let s = session(&mut st);
        if let Phase::Up(c) = &s.phase {
            return Ok(c.clone());
        }
        s.done(url)?;
        if let Phase::Down {
            lost,
            attempt,
            gaveup_logged,
            since,
        } = &mut s.phase
        {
            if Instant::now() >= deadline {
                let waited = start.elapsed();
                let what = format!("{op}: {}: {lost}; reconnecting: {attempt}", names.lost);
                if !*gaveup_logged {
                    *gaveup_logged = true;
                    log::warn!(
                        "{url}: {} away for {:?}: requests give up after {:?} ({what})",
                        names.peer,
                        since.elapsed(),
                        resilience.wait
                    );
                }
                giveup.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Unavailable {
                    storage: url.to_string(),
                    what,
                    waited,
                });
            }
        }
        changed.wait_until(&mut st, deadline);
    }
}

/// [`Storage::watch`](super::Storage::watch): subscribes a new queue at the
/// stream position (under the lock), then fetches the backlog `(after,
/// position]` with `history` (without it) if `after` is older.
pub(crate) fn watch<S, C>(
    st: &Mutex<S>,
    session: impl FnOnce(&mut S) -> &mut Session<C>,
    url: &str,
    after: Tid,
    history: impl FnOnce(Tid, Tid) -> Result<Vec<Commit>, Error>,
) -> Result<Box<dyn Watcher>, Error> {
    let q = Arc::new(CommitQueue::default());
    let from = {
        let mut st = st.lock();
        let s = session(&mut st);
        s.done(url)?;
        s.watchers.push(Arc::downgrade(&q));
        s.last_tid
    };
    let backlog = if after < from {
        history(after, from)?.into()
    } else {
        VecDeque::new()
    };
    Ok(Box::new(QueueWatcher::new(q, after, backlog)))
}

/// For the supervisor: waits until the session in `st` (reached by
/// `session`) is lost — Some(since when) — or over for good (None).
pub(crate) fn wait_lost<S, C>(
    st: &Mutex<S>,
    changed: &Condvar,
    session: impl Fn(&mut S) -> &mut Session<C>,
) -> Option<Instant> {
    let mut st = st.lock();
    loop {
        match &session(&mut st).phase {
            Phase::Down { since, .. } => return Some(*since),
            Phase::Failed(_) | Phase::Closed => return None,
            Phase::Up(_) => {
                // Wake now and then to notice the storage going.
                changed.wait_for(&mut st, Duration::from_secs(1));
            }
        }
    }
}

/// The supervisor's pause between reconnect attempts: from 50 ms, doubling
/// up to a maximum (never below 50 ms).
pub(crate) struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);

    pub(crate) fn new() -> Self {
        Backoff(Self::FIRST)
    }

    /// The pause to sleep now; the next one doubles, up to `max`.
    pub(crate) fn next(&mut self, max: Duration) -> Duration {
        let now = self.0;
        self.0 = (now * 2).min(max.max(Self::FIRST));
        now
    }
}

/// Indices of the counters every session-keeping driver has, first in its
/// array (a driver may add its own after them).
pub(crate) const LOST: usize = 0;
pub(crate) const RECONNECT: usize = 1;
pub(crate) const CATCHUP: usize = 2;
pub(crate) const GIVEUP: usize = 3;

/// Names of the counters at [`LOST`], [`RECONNECT`], [`CATCHUP`],
/// [`GIVEUP`].
pub(crate) const COMMON: [&str; 4] = [
    counter::LOST,
    counter::RECONNECT,
    counter::CATCHUP,
    counter::GIVEUP,
];

/// [`Storage::counters`](super::Storage::counters): `values[i]` named
/// `names[i]`.
pub(crate) fn counters(values: &[AtomicU64], names: &[&'static str]) -> Vec<(&'static str, u64)> {
    names
        .iter()
        .zip(values)
        .map(|(&n, v)| (n, v.load(Ordering::Relaxed)))
        .collect()
}
