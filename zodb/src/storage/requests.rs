//! A connection's requests awaiting their answers: the bookkeeping the
//! ZEO and NEO connections share.
//!
//! Both protocols multiplex requests over one connection: each carries an
//! id, and the connection's reader thread matches every answer to its
//! request by that id and hands it to the caller waiting on the request's
//! [`Slot`]. The rules both connections keep with it:
//!
//! - an answer to an id that is not pending is a protocol violation (the
//!   reader fails the connection);
//! - when the connection fails, every pending request is answered at once
//!   with the failure ([`Pending::drain`]): no caller waits on a dead
//!   connection;
//! - a request unanswered for longer than the connection's timeout
//!   ([`Pending::overdue`]) fails the connection; an idle connection with
//!   nothing pending is probed, so that a silent peer shows up as such.
//!
//! What an id, a request's tag (method name, packet code) and an answer
//! are is the protocol's. `Pending` lives under the connection's state
//! lock; a slot is answered after that lock is released.

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a caller waits for its answer.
pub(crate) struct Slot<R> {
    result: Mutex<Option<R>>,
    cond: Condvar,
}

impl<R> Default for Slot<R> {
    fn default() -> Self {
        Slot {
            result: Mutex::new(None),
            cond: Condvar::new(),
        }
    }
}

impl<R> Slot<R> {
    /// Answers the request and wakes its caller.
    pub(crate) fn put(&self, r: R) {
        *self.result.lock() = Some(r);
        self.cond.notify_all();
    }

    /// The answer, waiting for it until `until`; None if it has not come
    /// by then.
    pub(crate) fn wait_until(&self, until: Instant) -> Option<R> {
        let mut r = self.result.lock();
        loop {
            if let Some(res) = r.take() {
                return Some(res);
            }
            let timed_out = self.cond.wait_until(&mut r, until).timed_out();
            if timed_out && r.is_none() {
                return None;
            }
        }
    }
}

struct Request<T, R> {
    slot: Arc<Slot<R>>,
    tag: T,
    sent: Instant,
}

/// The requests of a connection not answered yet, by id; `T` names a
/// request in messages, `R` is its answer.
pub(crate) struct Pending<K, T, R> {
    map: HashMap<K, Request<T, R>>,
}

impl<K: Hash + Eq, T: Copy, R> Pending<K, T, R> {
    pub(crate) fn new() -> Self {
        Pending {
            map: HashMap::new(),
        }
    }

    /// Request `id` (`tag`) is being sent now: where its answer will land.
    pub(crate) fn add(&mut self, id: K, tag: T) -> Arc<Slot<R>> {
        let slot = Arc::new(Slot::default());
        self.map.insert(
            id,
            Request {
                slot: slot.clone(),
                tag,
                sent: Instant::now(),
            },
        );
        slot
    }

    /// The request `id` answers, no longer pending: its tag and slot.
    pub(crate) fn take(&mut self, id: &K) -> Option<(T, Arc<Slot<R>>)> {
        self.map.remove(id).map(|r| (r.tag, r.slot))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A request unanswered for longer than `timeout` at `now`, if any.
    pub(crate) fn overdue(&self, now: Instant, timeout: Duration) -> Option<T> {
        self.map
            .values()
            .find(|r| now.duration_since(r.sent) > timeout)
            .map(|r| r.tag)
    }

    /// Every pending request's slot, none pending any more (the
    /// connection failed: answer them all).
    pub(crate) fn drain(&mut self) -> Vec<Arc<Slot<R>>> {
        self.map.drain().map(|(_, r)| r.slot).collect()
    }
}
