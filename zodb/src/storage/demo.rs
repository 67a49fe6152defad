//! DemoStorage (`demo:(BASE)/(DELTA)`): changes kept in one storage (the
//! delta) over another that stays read-only (the base), as ZODB's
//! `DemoStorage(base=…, changes=…)` keeps them — the database a client of
//! that Python storage sees, served from the two storages underneath.
//!
//! # What a load answers
//!
//! Exactly what Python's `DemoStorage.loadBefore` answers (the oracle
//! tests compare every object at every tid):
//!
//! - the delta has a record of the object as of `at`: that;
//! - the delta never had the object, or its record as of `at` is a
//!   deletion (an undone creation, or an undone change of a base object —
//!   the delta's FileStorage has no older record to go back to): the
//!   base's answer. So undoing, in the delta, the change of a base object
//!   shows the base's data again, as in Python;
//! - the delta has the object only after `at`: the base's data, or "not
//!   yet created" when the base never had it.
//!
//! # Transactions
//!
//! The last tid and the commit stream are the delta's (until the delta has
//! a transaction, the base's head). The delta's tids are above the base's
//! head — Python's DemoStorage commits only to the delta, which gives each
//! transaction a tid after its own last one, and a delta made over this
//! base starts after the base's head. A delta that does not (its last tid,
//! or a transaction it reports, at or before the base's head) is refused:
//! it was not made over this base. A watch from before the base's head
//! reports the base's transactions up to its head first.
//!
//! # The base must not change
//!
//! Nothing may commit to the base while it is served: Python's
//! DemoStorage would show the new base data under the delta's changes
//! that were made without it, a database no transaction ever produced. We
//! read the base as of its head when we opened it (so no load mixes in
//! newer base data), and a thread watches it: a transaction committed to
//! the base (or its watcher failing: truncated, replaced) fails the
//! storage for good with [`Error::NotSameDatabase`] — every later load and
//! the watcher return it, and the daemon switches to EIO mode. Never data
//! of a database that does not exist.

use super::{Commit, Error, Loaded, Storage, Watcher};
use crate::types::{Oid, Tid};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What the storage and its watchers share.
struct Shared {
    url: String,
    base_head: Tid,
    /// Set once: why the storage cannot be trusted any more.
    broken: Mutex<Option<String>>,
    /// The storage was dropped: the guard thread ends.
    closed: AtomicBool,
}

impl Shared {
    fn check(&self) -> Result<(), Error> {
        match &*self.broken.lock() {
            None => Ok(()),
            Some(why) => Err(Error::NotSameDatabase {
                storage: self.url.clone(),
                why: why.clone(),
            }),
        }
    }

    fn fail(&self, why: String) {
        let mut b = self.broken.lock();
        if b.is_none() {
            log::error!("{}: {why}", crate::zurl::redacted(&self.url));
            *b = Some(why);
        }
    }

    fn base_changed(&self, tid: Tid) -> String {
        format!(
            "base changed: transaction @{tid} committed to it after its head @{} \
             (a DemoStorage's base must stay read-only while served)",
            self.base_head
        )
    }
}

/// A DemoStorage over two open storages.
pub struct DemoStorage {
    shared: Arc<Shared>,
    base: Arc<dyn Storage>,
    delta: Arc<dyn Storage>,
    instance: u64,
}

impl DemoStorage {
    /// Composes `delta` over `base`; `url` is the `demo:` zurl (for
    /// messages). Err: the delta was not made over this base (its last
    /// transaction is not after the base's head).
    pub fn new(
        url: &str,
        base: Arc<dyn Storage>,
        delta: Arc<dyn Storage>,
    ) -> Result<DemoStorage, Error> {
        let base_head = base.last_tid()?;
        let delta_last = delta.last_tid()?;
        if delta_last != Tid::ZERO && delta_last <= base_head {
            return Err(Error::Corrupt {
                storage: crate::zurl::redacted(url).into_owned(),
                why: format!(
                    "the changes' last transaction @{delta_last} is not after the base's \
                     head @{base_head}: they were not made over this base"
                ),
            });
        }
        let shared = Arc::new(Shared {
            url: url.to_string(),
            base_head,
            broken: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let guard = base.watch(base_head)?;
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("demo-base-guard".into())
            .spawn(move || guard_base(weak, guard))
            .map_err(|e| Error::Io {
                storage: crate::zurl::redacted(url).into_owned(),
                op: "spawn base guard thread".into(),
                source: e,
            })?;
        Ok(DemoStorage {
            shared,
            base,
            delta,
            instance: super::new_instance_id(),
        })
    }

    /// The base's head when the storage was opened: the base is read as
    /// of it.
    pub fn base_head(&self) -> Tid {
        self.shared.base_head
    }

    /// The base's answer as of `at` (as of its head at the latest).
    fn load_base(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        let r = self.base.load(oid, at.min(self.shared.base_head));
        self.shared.check()?;
        match r {
            Err(Error::NotYetCreated { oid, .. }) => Err(Error::NotYetCreated { oid, at }),
            other => other,
        }
    }
}

impl Drop for DemoStorage {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// Watches the base for what must not happen, until the storage is gone.
fn guard_base(shared: Weak<Shared>, mut w: Box<dyn Watcher>) {
    loop {
        let r = w.next_timeout(Duration::from_millis(500));
        let Some(s) = shared.upgrade() else { return };
        if s.closed.load(Ordering::Acquire) {
            return;
        }
        match r {
            Ok(None) => continue,
            Ok(Some(c)) => return s.fail(s.base_changed(c.tid)),
            Err(e) => return s.fail(format!("base: {e}")),
        }
    }
}

impl Storage for DemoStorage {
    fn url(&self) -> &str {
        &self.shared.url
    }

    fn instance_id(&self) -> u64 {
        self.instance
    }

    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        self.shared.check()?;
        match self.delta.load(oid, at) {
            Ok(l) => Ok(l),
            Err(Error::NoObject { .. } | Error::Deleted { .. }) => self.load_base(oid, at),
            Err(Error::NotYetCreated { .. }) => match self.load_base(oid, at) {
                Err(Error::NoObject { oid }) => Err(Error::NotYetCreated { oid, at }),
                other => other,
            },
            Err(e) => Err(e),
        }
    }

    fn last_tid(&self) -> Result<Tid, Error> {
        self.shared.check()?;
        let t = self.delta.last_tid()?;
        Ok(if t == Tid::ZERO {
            self.shared.base_head
        } else {
            t
        })
    }

    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>, Error> {
        self.shared.check()?;
        let base_head = self.shared.base_head;
        let base = if after < base_head {
            Some(self.base.watch(after)?)
        } else {
            None
        };
        let delta = self.delta.watch(after.max(base_head))?;
        Ok(Box::new(DemoWatcher {
            shared: self.shared.clone(),
            base,
            delta,
        }))
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut out = self.base.counters();
        for (name, n) in self.delta.counters() {
            match out.iter_mut().find(|(k, _)| *k == name) {
                Some((_, m)) => *m += n,
                None => out.push((name, n)),
            }
        }
        out
    }

    fn prefetch_depth(&self) -> usize {
        self.base.prefetch_depth().max(self.delta.prefetch_depth())
    }

    fn oldest_tid(&self) -> Option<Tid> {
        // History is whole only where both parts still have theirs.
        match (self.base.oldest_tid(), self.delta.oldest_tid()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The base's transactions up to its head (when watching from before it),
/// then the delta's.
struct DemoWatcher {
    shared: Arc<Shared>,
    base: Option<Box<dyn Watcher>>,
    delta: Box<dyn Watcher>,
}

impl Watcher for DemoWatcher {
    fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Commit>, Error> {
        self.shared.check()?;
        let base_head = self.shared.base_head;
        if let Some(b) = &mut self.base {
            return match b.next_timeout(timeout)? {
                None => Ok(None),
                Some(c) if c.tid <= base_head => {
                    if c.tid == base_head {
                        self.base = None;
                    }
                    Ok(Some(c))
                }
                Some(c) => {
                    let why = self.shared.base_changed(c.tid);
                    self.shared.fail(why);
                    Err(self.shared.check().unwrap_err())
                }
            };
        }
        let r = self.delta.next_timeout(timeout)?;
        self.shared.check()?;
        match r {
            Some(c) if c.tid <= base_head => Err(Error::Corrupt {
                storage: crate::zurl::redacted(&self.shared.url).into_owned(),
                why: format!(
                    "the changes' transaction @{} is not after the base's head @{base_head}: \
                     they were not made over this base",
                    c.tid
                ),
            }),
            r => Ok(r),
        }
    }
}
