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

pub mod filestorage;
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

    /// The tid of the last committed transaction ([`Tid::ZERO`] for an empty
    /// database). A transaction still being committed is not counted.
    fn last_tid(&self) -> Result<Tid, Error>;

    /// Starts watching for commits after `after`: the watcher reports every
    /// transaction with tid > `after`, in order, each exactly once.
    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>, Error>;
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
