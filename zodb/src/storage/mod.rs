//! Storage drivers.
//!
//! A [`Storage`] answers three questions: what did object `oid` look like as
//! of transaction `at` ([`Storage::load`]), what is the last committed
//! transaction ([`Storage::last_tid`]), and what was committed after a given
//! transaction ([`Storage::watch`]). Everything the daemon knows about the
//! database comes through these three calls.
//!
//! Errors distinguish the cases a caller must treat differently: the object
//! never existed, it did not exist yet (or was deleted) as of `at`, the
//! storage is corrupt, or the storage could not be reached.
//!
//! # Servers that go away (networked storages)
//!
//! A storage behind a server (ZEO, PostgreSQL, NEO) keeps serving across a
//! restart of that server or a dropped connection, exactly — the contract
//! every such driver keeps, and what the daemon relies on:
//!
//! - it reconnects by itself, with backoff, for as long as it takes;
//! - before serving again it checks that the server still has *our*
//!   history (the transaction at the last tid we reported exists, and
//!   nothing is missing before it). If not — another database behind the
//!   same address, a restore from an older backup — the storage fails for
//!   good with [`Error::NotSameDatabase`]: loads and watchers return it,
//!   and the daemon switches to EIO mode. Never stale data;
//! - the [`Watcher`] never reports a transient loss: it catches up from the
//!   last transaction it reported and goes on, so every transaction is
//!   reported exactly once, in order, as if nothing had happened;
//! - a call that needs the server ([`Storage::load`]) during an outage waits
//!   for the reconnect up to [`Resilience::wait`], then fails with
//!   [`Error::Unavailable`] — that call alone;
//! - **a silent server is an outage too**: a connection that stays open but
//!   answers nothing (a frozen server, a stalled network, a reply cut off
//!   midway) cannot be told from a dead one. A call gives up with
//!   [`Error::Unavailable`] once [`Resilience::reply_wait`] has passed since
//!   it started — whether it was waiting for a reconnect, for its reply, or
//!   for the rest of its reply — never later; and a connection with a
//!   request (or keep-alive probe) unanswered that long is declared lost
//!   and replaced like any lost one (reconnect, same-database check,
//!   catch-up). A reply that arrives after its call gave up is dropped:
//!   nothing of a stalled exchange is ever half-used. An idle connection is
//!   probed often enough that a silent server is noticed within about
//!   twice the wait, even with no call pending. (Each call is bounded
//!   alone: a caller that makes several for one request of its own bounds
//!   the sum itself — the daemon keeps the kernel's retry of a failed read
//!   from waiting again);
//! - [`Storage::last_tid`] needs no round trip: it is the position of the
//!   watch stream, which stays where it was during an outage;
//! - every loss, reconnect, catch-up and giving-up is logged once, as one
//!   line (the `log` crate), and counted ([`Storage::counters`]).

mod commit_queue;
pub mod demo;
pub mod filestorage;
pub mod neo;
pub mod postgres;
mod requests;
mod session;
pub mod tls;
pub mod zeo;

use crate::types::{Oid, Tid};
use bytes::Bytes;
use std::time::Duration;

/// An object's data as of some tid.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The record: class pickle followed by state pickle.
    pub data: Bytes,
    /// The tid of the transaction that wrote this data (for an undo or copy
    /// record: the tid of the transaction that wrote the record pointing to
    /// the data, not the one that first wrote the bytes).
    pub serial: Tid,
}

/// One committed transaction, as a watcher reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub tid: Tid,
    /// Oids changed by the transaction, in the order the storage lists them.
    pub oids: Vec<Oid>,
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object has no record at all.
    #[error("{oid}: no such object")]
    NoObject { oid: Oid },
    /// The object exists, but its first record is newer than `at`.
    #[error("{oid}: no data as of @{at} (object created later)")]
    NotYetCreated { oid: Oid, at: Tid },
    /// The object's latest record as of `at` is a deletion (or an undone
    /// creation).
    #[error("{oid}: deleted as of @{at} (by @{serial})")]
    Deleted { oid: Oid, at: Tid, serial: Tid },
    /// The storage holds something that cannot be valid.
    #[error("{storage}: corrupt: {why}")]
    Corrupt { storage: String, why: String },
    /// An I/O error talking to the storage.
    #[error("{storage}: {op}: {source}")]
    Io {
        storage: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// A zurl that cannot be parsed.
    #[error("invalid zurl {zurl:?}: {why}")]
    BadUrl { zurl: String, why: String },
    /// A recognised feature that is not implemented.
    #[error("{0}")]
    NotSupported(String),
    /// The storage is closed or the watcher was stopped.
    #[error("{0}: closed")]
    Closed(String),
    /// The server could not be reached within [`Resilience::wait`]: this
    /// request failed; the storage keeps trying to reconnect.
    #[error("{storage}: {what} (server unavailable for {waited:?})")]
    Unavailable {
        storage: String,
        /// The request and why the server is away (`load 0000…@…: connection
        /// refused`).
        what: String,
        waited: Duration,
    },
    /// The storage was packed past `at`: the revisions that would answer a
    /// load as of `at` may be gone (never "not yet created" for them).
    #[error("{oid}: no answer as of @{at}: the database was packed at @{packed}, its history before that is gone")]
    PackedAway { oid: Oid, at: Tid, packed: Tid },
    /// The server reached after a reconnect does not serve the history we
    /// served: final, nothing from it can be trusted.
    #[error("{storage}: not the same database any more: {why}")]
    NotSameDatabase { storage: String, why: String },
}

impl Error {
    /// True when the error says "this object has no data as of that tid"
    /// (never existed, not yet created, or deleted), as opposed to a
    /// failure of the storage itself.
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            Error::NoObject { .. } | Error::NotYetCreated { .. } | Error::Deleted { .. }
        )
    }
}

/// How a networked storage rides through losing its server (see the
/// module doc). File storages ignore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resilience {
    /// How long a call that needs the server waits for a reconnect before
    /// it fails with [`Error::Unavailable`].
    pub wait: Duration,
    /// Reconnect attempts back off exponentially from 50 ms up to this.
    pub backoff_max: Duration,
}

impl Resilience {
    /// How long a call waits for its server's answer, all told (a
    /// reconnect, then the reply): [`Resilience::wait`], but at least a
    /// second — a server is never expected to answer faster than that, so
    /// a wait of 0 ("do not wait for a reconnect") does not fail every
    /// call.
    pub fn reply_wait(&self) -> Duration {
        self.wait.max(Duration::from_secs(1))
    }
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            wait: Duration::from_secs(30),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Names of [`Storage::counters`] (cumulative, for `.wcfs/stats`).
pub mod counter {
    /// Connections to the server lost.
    pub const LOST: &str = "zconnlost";
    /// Successful reconnects (registered again, history checked).
    pub const RECONNECT: &str = "zreconnect";
    /// Transactions caught up after reconnects.
    pub const CATCHUP: &str = "zcatchup";
    /// Calls that failed because the server stayed away past the wait.
    pub const GIVEUP: &str = "zgiveup";
    /// Connections to single nodes of a cluster (NEO storage nodes) lost:
    /// their replicas served meanwhile.
    pub const STORAGE_LOST: &str = "znodelost";
    /// Reads sent to another replica (a node lost, a cell not readable, a
    /// checksum mismatch).
    pub const REPLICA_RETRY: &str = "zreplicaretry";
}

/// A read-only ZODB storage.
pub trait Storage: Send + Sync {
    /// The zurl this storage was opened from.
    fn url(&self) -> &str;

    /// A number no other storage opened by this process has: caches of
    /// decoded objects key on it together with (oid, serial). Use
    /// [`new_instance_id`] to get one when the storage is opened.
    fn instance_id(&self) -> u64;

    /// Loads object `oid` as of `at`: its latest data record with tid ≤ `at`.
    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded, Error>;

    /// The serial [`load`](Storage::load) would return for `oid` at `at`,
    /// when the storage can tell it without reading the data: a cache of
    /// decoded objects keyed by serial then skips the load. `None`: no
    /// cheaper way than a load (a server), or anything a load would report
    /// or treat specially (no such object, deleted, not yet created,
    /// damage) — the caller loads, and the load says what is wrong.
    fn serial_at(&self, _oid: Oid, _at: Tid) -> Option<Tid> {
        None
    }

    /// The tid of the last committed transaction ([`Tid::ZERO`] for an empty
    /// database). A transaction still being committed is not counted.
    fn last_tid(&self) -> Result<Tid, Error>;

    /// Starts watching for commits after `after`: the watcher reports every
    /// transaction with tid > `after`, in order, each exactly once.
    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>, Error>;

    /// Cumulative counters of the storage's life with its server (names
    /// in [`counter`]); nothing for storages without one.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// How many blocks past a sequential reader's it is worth loading ahead
    /// (the daemon keeps that many loads in flight for such a reader): 1
    /// for a local file; more for a server whose loads pipeline, so that
    /// it is never idle between a reader's requests.
    fn prefetch_depth(&self) -> usize {
        1
    }

    /// The oldest tid whose view the storage still answers exactly, when
    /// a pack removed history before it (None: all history is there, or
    /// the storage does not know). No round trip: what the storage knows
    /// already.
    fn oldest_tid(&self) -> Option<Tid> {
        None
    }
}

/// A fresh [`Storage::instance_id`].
pub fn new_instance_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A stream of committed transactions.
pub trait Watcher: Send {
    /// Waits up to `timeout` for the next commit. `Ok(None)` means none
    /// arrived in time; an error is final (the watcher is broken: the storage
    /// was truncated, corrupted or went away).
    fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Commit>, Error>;

    /// Waits for the next commit.
    fn next(&mut self) -> Result<Commit, Error> {
        loop {
            if let Some(c) = self.next_timeout(Duration::from_secs(3600))? {
                return Ok(c);
            }
        }
    }
}
