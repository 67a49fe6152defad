//! PostgreSQL storage (RelStorage, history-preserving), read-only
//! (`postgresql://…`, `postgres://…`).
//!
//! RelStorage keeps a ZODB in PostgreSQL: every revision of every object is
//! a row of `object_state`, every transaction a row of `"transaction"` (the
//! schema facts are in [`conn`]; the zurl and what the libpq environment
//! adds are in [`dsn`]; TLS, with libpq's `sslmode`s, is in [`tls`]). The
//! server can be the primary or any streaming
//! replica (hot standby): we only `SELECT`, so a role that may do nothing
//! else is enough.
//!
//! # Design
//!
//! - **The protocol** comes from `tokio-postgres`, a maintained client that
//!   pipelines: every thread's query goes to the one connection as soon as
//!   it is made, and the server answers them in order. Its connection runs
//!   on a small tokio runtime of ours (one worker thread); callers are
//!   plain threads that block on their own query (`Shared::run`).
//! - **Loads** are one indexed query, the latest revision with tid ≤ `at`
//!   (`ORDER BY tid DESC LIMIT 1` on the primary key `(zoid, tid)`). Only
//!   when there is none a second query tells "no such object" from "not
//!   yet created". A NULL state is an undone creation: deleted, as
//!   FileStorage says of a deletion record.
//! - **New transactions are found by polling** `"transaction"` for tids
//!   above the last one reported, every [`PgOptions::poll`] (2 ms), with
//!   each transaction's objects in the same statement. On a primary we
//!   also `LISTEN` on [`conn::NOTIFY_CHANNEL`]: if the administrator added
//!   the trigger of the README, a commit wakes the poller at once, and once
//!   notifications are seen to announce commits the timer relaxes to
//!   [`PgOptions::notified_poll`]; a commit found by the timer first makes
//!   it fast again. A standby cannot `LISTEN`: it is polled.
//! - **`last_tid` is the stream's position**: the last transaction handed
//!   to watchers, with no round trip; a load as of it sees exactly the
//!   transactions reported.
//! - **Reading ahead**: one server process answers a connection's queries
//!   in turn, so the daemon keeps a few loads queued for a sequential
//!   reader ([`Storage::prefetch_depth`]: 3 per connection that carries
//!   loads) — with one, the server sat idle between a reader's requests.
//! - Our connections say `application_name=wcfsd` (unless the zurl says
//!   otherwise) and `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`;
//!   the runtime's threads (`pg-client`) block every signal, which are for
//!   the program's own threads.
//!
//! # Several connections for loads
//!
//! PostgreSQL serves a connection with one server process, which answers
//! its queries one after the other: over TLS that process's encryption is
//! the ceiling of a cold read (measured: 1.7 ms of its CPU per MiB, against
//! 1.0 without TLS). So loads take turns over [`PgOptions::load_connections`]
//! connections (2 by default): the poller's and "loaders".
//!
//! - A load as of `at` is right only on a server that has every
//!   transaction up to `at`: one the poller saw there. So a loader goes to
//!   the very server the poller's connection reached — the same host of the
//!   zurl, and checked to be the same running server ([`Conn::identity`]:
//!   its address and port as it sees them and its start time; a name that
//!   resolves to several servers, a proxy choosing one, or a restart in
//!   between make another, and that loader is not used). A server's
//!   commits (or a standby's replay) are visible to every later snapshot,
//!   whichever of its processes takes it, so what the poller has seen a
//!   loader sees too, and what is remembered (below) stays exact.
//! - Loaders are opened by the poller, in the background, once its own
//!   connection is up (and checked to be the same database), and are
//!   dropped with it: after a reconnect they follow the server it reached.
//! - A loader's loss alone is no outage: it is dropped, a load that failed
//!   on it is run again on another connection, and the poller opens a new
//!   one (a failure to open one is logged, and tried again 5 s later;
//!   loads share the poller's connection meanwhile).
//!
//! # Why polling `tid > last` never skips a commit
//!
//! RelStorage chooses a transaction's tid inside its commit, under the
//! commit lock (`lock_and_choose_tid`: `pg_advisory_xact_lock(-1)`, then
//! max(tid)+ or the clock, whichever is later, then the `"transaction"`
//! row), and the lock is held until that database transaction ends. So
//! for two commits with tids t₁ < t₂: t₂ was chosen after the lock was
//! released by t₁'s transaction, which PostgreSQL does only after t₁ is
//! visible to new snapshots (commit record written, then the transaction
//! leaves the proc array, then locks are released) — and if t₁'s
//! transaction aborted there is no t₁. Hence any snapshot that sees t₂
//! sees t₁: the visible transactions are always a prefix, in tid order, of
//! all that will ever be committed, and one statement (one snapshot)
//! reading `tid > last` returns the next ones with no gap. On a standby the
//! same holds: commit records are replayed in WAL order, t₁'s before t₂'s,
//! and a standby's snapshot sees exactly the commits replayed. (RelStorage's
//! `restore`, used by zodbconvert to copy transactions with given tids,
//! takes another lock: copying into a database that is being committed to
//! at the same time is outside this guarantee.)
//!
//! # Servers that go away
//!
//! The contract of [`crate::storage`]'s module doc, kept so:
//!
//! - One task of ours, the poller, owns (re)connecting. Whoever sees the
//!   connection fail — a load or the poller: a closed connection, an I/O
//!   error, the server shutting down or terminating us, a query
//!   unanswered for [`PgOptions::request_timeout`] — drops it
//!   (`Shared::lost`); the poller then reconnects with exponential
//!   backoff (50 ms up to [`Resilience::backoff_max`]), for as long as it
//!   takes.
//! - **Same database?** Before a new connection is used, the transaction at
//!   our position (the last tid reported) must be there with the same
//!   signature (md5 of its user, description and extension — tids come
//!   from the clock, so another database with a transaction at exactly
//!   that tid and the same metadata is not a case to fear). If it is
//!   missing: on a standby whose last transaction is older than ours, the
//!   standby is behind (restarted and replaying, or lagging): not ready yet,
//!   we try again; if a pack removed it (a packed transaction after it
//!   exists: packs delete emptied transactions) we go on; otherwise —
//!   another database behind the address, a restore of an older backup, a
//!   failover to a replica that had not received it — the storage fails
//!   for good with [`Error::NotSameDatabase`]. A database without our
//!   tables any more fails the same way.
//! - **Catch-up** is the poller's next poll from our position: every
//!   transaction committed meanwhile is reported once, in order, like any
//!   other. A transaction already packed when we get to it may have lost
//!   the revisions its objects had (superseded ones are deleted): the
//!   packed transactions at the head of a poll are reported as one, at the
//!   last of them, with all their objects — history below a pack point
//!   cannot be served anyway (see Pack below).
//! - A load that finds no connection waits (on `Shared::cond`) up to
//!   [`Resilience::wait`], then fails with [`Error::Unavailable`]; a load
//!   whose connection failed under it is retried on the next one.
//! - **A silent server** (frozen, a stalled network: the connection open,
//!   nothing answered) is an outage too. A query waits for its answer only
//!   until [`Resilience::reply_wait`] from the load's start, then the load
//!   fails with [`Error::Unavailable`], alone. A connection left without an
//!   answer for [`PgOptions::request_timeout`] (no longer than
//!   `reply_wait`) is given up — a pipelined connection whose query was cut
//!   off midway is in a state we cannot vouch for — and so is one whose
//!   poll goes unanswered for [`PgOptions::poll_timeout`] (likewise
//!   bounded): the poller, which polls every few ms, is what notices a
//!   frozen server with no load pending. A reconnect attempt is bounded as
//!   a whole (connect timeout + reply timeout): a frozen postmaster's
//!   kernel still completes TCP handshakes.
//! - Losses, reconnects, catch-ups and give-ups are logged (once each per
//!   outage) and counted ([`counter`]).
//!
//! # Remembering current records
//!
//! A read of a head block walks the file's tree (root, inner nodes,
//! bucket) before it loads the block: a round trip per node, for records
//! that rarely change. So small records (< 64 KiB) loaded as of the
//! stream's position are kept ([`Current`]) and answer later loads without
//! a query, exactly: a record is kept only if the position did not move
//! between the query and keeping it (the query saw every commit up to that
//! position — the poller had seen them on the same server before we asked
//! — so no revision lies between the record's serial and the position);
//! from then on every commit reported is also applied to what is kept,
//! under the same lock, ending the record's validity at the first commit
//! that changes its object. A load is answered from it only for an `at` at
//! or before the position, inside that validity. A catch-up that reports
//! packed transactions as one (above) forgets everything kept. (Measured:
//! a cold 512 MiB read made three queries per 2 MiB block — two tree nodes
//! and the block — and one with this.)
//!
//! # Pack
//!
//! A pack (zodbpack) deletes the revisions superseded before the pack point
//! and, with garbage collection, every revision of unreachable objects;
//! it marks the transactions up to the pack point `packed`, and deletes
//! those left empty. A revision still there is exact for every `at` it
//! answers (a pack deletes all revisions of an object older than the one it
//! keeps), so loads that find data are served whatever `at`; but "no
//! revision ≤ at" for an `at` before the pack point may be a deleted past:
//! that answer becomes [`Error::PackedAway`], never "not yet created". The
//! pack point ([`Storage::oldest_tid`], for refusing watches below it) is
//! the last packed transaction — or, while a pack runs, the last one it
//! will pack (`pack_state_tid`) — refreshed every
//! [`PgOptions::pack_every`] and on such a load.
//!
//! # Locking
//!
//! `Shared::st` (connections, position, watchers, outage) is held only to
//! read or change them — never across a query, and released while a load
//! waits on `Shared::cond` for a connection; a watcher queue's lock is
//! taken under it, never the other way round. Queries run with no lock
//! held. The connection (`Arc<Conn>`) is cloned out of `st` for a query;
//! a connection given up (`Shared::lost`) is aborted, so queries still
//! on it fail at once and are retried on the next one.

pub mod conn;
pub mod dsn;
pub mod tls;

use super::commit_queue::{CommitQueue, QueueWatcher};
use super::{counter, Commit, Error, Loaded, Resilience, Storage, Watcher};
use crate::types::{Oid, Tid};
use conn::{Conn, ConnectError, Found, Trouble, TxnRow};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Tuning of the driver.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How often the poller asks for new transactions.
    pub poll: Duration,
    /// How often, once `NOTIFY`s are seen to announce commits.
    pub notified_poll: Duration,
    /// A query unanswered this long fails its connection (but never
    /// longer than [`Resilience::reply_wait`]).
    pub request_timeout: Duration,
    /// A poll unanswered this long fails the connection (an idle
    /// connection to a server that vanished or froze without a word; never
    /// longer than [`Resilience::reply_wait`]).
    pub poll_timeout: Duration,
    /// Connecting, unless the zurl says (`connect_timeout`).
    pub connect_timeout: Duration,
    /// Transactions fetched per poll at most.
    pub batch: i64,
    /// How often the pack point is refreshed.
    pub pack_every: Duration,
    /// Connections that carry loads, the poller's one included (1: every
    /// query on the poller's connection). See "Several connections for
    /// loads" in the module doc.
    pub load_connections: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            poll: Duration::from_millis(2),
            notified_poll: Duration::from_millis(250),
            request_timeout: Duration::from_secs(60),
            poll_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            batch: 1000,
            pack_every: Duration::from_secs(1),
            load_connections: 2,
        }
    }
}

/// Why the storage is done.
#[derive(Debug, Clone)]
enum Failure {
    NotSame(String),
    /// Our own poller is gone (a bug): nothing follows the database any
    /// more, so nothing may be served as current.
    Broken(String),
    Closed,
}

/// The current outage.
struct Down {
    since: Instant,
    why: String,
    /// A give-up was logged in this outage.
    logged_giveup: bool,
}

struct State {
    conn: Option<Arc<Conn>>,
    /// The other connections loads use: to the same running server as
    /// `conn` (the same [`Conn::identity`]), dropped with it.
    loaders: Vec<Arc<Conn>>,
    /// A loader is being opened; none before this instant (backoff).
    loader_opening: bool,
    loader_next: Instant,
    /// Why the last loader could not be opened (logged once while the same).
    loader_failed: Option<String>,
    /// Connections made so far (the generation of the next one).
    gens: u64,
    down: Option<Down>,
    failed: Option<Failure>,
    /// The stream's position: the last transaction reported, and its
    /// signature.
    head: Tid,
    head_sig: Option<String>,
    watchers: Vec<Weak<CommitQueue>>,
    /// The pack point ([`Tid::ZERO`]: never packed).
    packed: Tid,
    /// Small records current at the position (see [`Current`]).
    current: Current,
}

/// Small records (tree nodes, file objects — not block data) as loaded at
/// the stream's position, each valid from its serial until the first
/// reported commit that changes its object: so that a head read does not
/// cost a round trip per tree node. Exact by construction (see
/// "Remembering current records" in the module doc); bounded (forgotten
/// whole past [`Current::MAX_BYTES`]).
#[derive(Default)]
struct Current {
    map: std::collections::HashMap<Oid, Remembered>,
    bytes: usize,
}

struct Remembered {
    /// None: the revision is an undone creation.
    data: Option<bytes::Bytes>,
    serial: Tid,
    /// The first commit after it that changed the object (None: none yet).
    until: Option<Tid>,
}

impl Current {
    /// Records larger than this are not kept.
    const MAX_RECORD: usize = 64 << 10;
    /// All kept records together, at most.
    const MAX_BYTES: usize = 32 << 20;

    /// The answer for `oid` as of `at` (≤ the position), if known.
    fn get(&self, oid: Oid, at: Tid) -> Option<Result<Loaded, Error>> {
        let r = self.map.get(&oid)?;
        if r.serial > at || r.until.is_some_and(|u| at >= u) {
            return None;
        }
        Some(match &r.data {
            Some(data) => Ok(Loaded {
                data: data.clone(),
                serial: r.serial,
            }),
            None => Err(Error::Deleted {
                oid,
                at,
                serial: r.serial,
            }),
        })
    }

    /// Remembers what a load at the position found.
    fn put(&mut self, oid: Oid, data: Option<bytes::Bytes>, serial: Tid) {
        let len = data.as_ref().map_or(0, |d| d.len());
        if len > Self::MAX_RECORD {
            return;
        }
        if self.bytes + len > Self::MAX_BYTES {
            self.clear();
        }
        let old = self.map.insert(
            oid,
            Remembered {
                data,
                serial,
                until: None,
            },
        );
        self.bytes += len;
        if let Some(o) = old {
            self.bytes -= o.data.map_or(0, |d| d.len());
        }
    }

    /// Commit `tid` changed `oids`.
    fn changed(&mut self, tid: Tid, oids: &[Oid]) {
        for oid in oids {
            if let Some(r) = self.map.get_mut(oid) {
                r.until.get_or_insert(tid);
            }
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

/// What the storage's threads share.
struct Shared {
    /// The zurl, redacted: every message shows this.
    url: String,
    spec: dsn::ConnSpec,
    res: Resilience,
    opts: PgOptions,
    rt: tokio::runtime::Handle,
    st: Mutex<State>,
    /// Signalled when a connection is up again, or the storage fails.
    cond: Condvar,
    /// Wakes the poller (a connection was lost, the storage closes).
    kick: Notify,
    closing: AtomicBool,
    counts: [AtomicU64; 4],
    /// The connection (generation) whose silence was last logged.
    late_logged: AtomicU64,
    /// Round robin of loads over the connections.
    next_load: AtomicU64,
}

/// See [`Storage::prefetch_depth`].
const PREFETCH_DEPTH: usize = 3;

const LOST: usize = 0;
const RECONNECT: usize = 1;
const CATCHUP: usize = 2;
const GIVEUP: usize = 3;

/// A RelStorage database in PostgreSQL, opened read-only.
pub struct PgStorage {
    sh: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
    instance: u64,
}

impl PgStorage {
    /// Opens `zurl` with the default [`Resilience`] and options.
    pub fn open(zurl: &str) -> Result<PgStorage, Error> {
        Self::open_with(zurl, &Resilience::default(), PgOptions::default())
    }

    /// Connects (trying the zurl's hosts in order), checks the schema, and
    /// starts following the database from its last transaction. Unlike a
    /// reconnect later, a failure to connect here is an error at once.
    pub fn open_with(zurl: &str, res: &Resilience, opts: PgOptions) -> Result<PgStorage, Error> {
        let url = dsn::redacted(zurl).into_owned();
        let spec = dsn::resolve(zurl, &dsn::ProcessEnv).map_err(|why| Error::BadUrl {
            zurl: url.clone(),
            why,
        })?;
        // One worker drives every connection: their server processes,
        // not our decoding (or decryption), are what a cold read waits for
        // (measured: a second worker made a cold read over TLS cost 1.8
        // ms of our CPU per MiB instead of 1.6, and read no faster).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .thread_name("pg-client")
            .enable_all()
            // Process signals are for the program's own threads (wcfsd
            // waits for them on one after opening the storage).
            .on_thread_start(|| {
                let _ = nix::sys::signal::SigSet::all().thread_block();
            })
            .build()
            .map_err(|e| Error::Io {
                storage: url.clone(),
                op: "start the connection's runtime".into(),
                source: e,
            })?;
        let c = rt
            .block_on(conn::connect(&spec, opts.connect_timeout, 1))
            .map_err(|e| open_error(&url, e))?;
        let (head, head_sig, packed) = rt
            .block_on(async {
                let last = c.last().await?;
                let head = last.as_ref().map_or(Tid::ZERO, |l| l.0);
                let packed = c.pack_point(Tid::ZERO, head).await?;
                Ok::<_, Trouble>((head, last.map(|l| l.1), packed))
            })
            .map_err(|t| Error::Io {
                storage: url.clone(),
                op: "read the last transaction".into(),
                source: std::io::Error::other(t.why().to_string()),
            })?;
        log::info!(
            "{url}: connected to {}{}{} (RelStorage, history-preserving); last transaction @{head}{}",
            c.server,
            if c.tls { " over TLS" } else { "" },
            if c.standby { " (standby)" } else { "" },
            if packed > Tid::ZERO {
                format!("; packed at @{packed}")
            } else {
                String::new()
            }
        );
        let sh = Arc::new(Shared {
            url,
            spec,
            res: res.clone(),
            opts,
            rt: rt.handle().clone(),
            st: Mutex::new(State {
                conn: Some(Arc::new(c)),
                loaders: Vec::new(),
                loader_opening: false,
                loader_next: Instant::now(),
                loader_failed: None,
                gens: 1,
                down: None,
                failed: None,
                head,
                head_sig,
                watchers: Vec::new(),
                packed,
                current: Current::default(),
            }),
            cond: Condvar::new(),
            kick: Notify::new(),
            closing: AtomicBool::new(false),
            counts: Default::default(),
            late_logged: AtomicU64::new(0),
            next_load: AtomicU64::new(0),
        });
        {
            // Should the poller ever die (a bug: it does not return but on
            // close or a final failure), fail loudly rather than serve a
            // head that no longer moves.
            let sh = sh.clone();
            rt.spawn(async move {
                if let Err(e) = tokio::spawn(poller(sh.clone())).await {
                    if !e.is_cancelled() {
                        log::error!("{}: the poller died: {e}", sh.url);
                        sh.fail(Failure::Broken(format!("the poller died: {e}")));
                    }
                }
            });
        }
        Ok(PgStorage {
            sh,
            rt: Some(rt),
            instance: super::new_instance_id(),
        })
    }

    /// Loads several objects at once: every query is sent before the first
    /// answer is awaited, in turn over the connections that carry loads
    /// (for benchmarks and prefetching).
    pub fn load_many(&self, reqs: &[(Oid, Tid)]) -> Vec<Result<Loaded, Error>> {
        let sh = &self.sh;
        let conns = match sh.wait_conn(&mut None, &|| "load".to_string(), false) {
            Ok(c) => {
                let mut v = vec![c];
                v.extend(sh.st.lock().loaders.iter().cloned());
                v
            }
            Err(e) => return reqs.iter().map(|_| Err(e.clone_err())).collect(),
        };
        // Polled together: each query is sent when its future first runs.
        let start = Instant::now();
        let found = sh.rt.block_on(async {
            tokio::time::timeout(
                sh.reply_timeout(),
                futures_util::future::join_all(
                    reqs.iter()
                        .enumerate()
                        .map(|(i, &(oid, at))| conns[i % conns.len()].load(oid, at)),
                ),
            )
            .await
        });
        let Ok(found) = found else {
            for c in &conns {
                sh.lost(c.gen, &format!("no answer within {:?}", sh.reply_timeout()));
            }
            let e = sh.late(&|| "load".to_string(), conns[0].gen, start.elapsed());
            return reqs.iter().map(|_| Err(e.clone_err())).collect();
        };
        found
            .into_iter()
            .zip(reqs)
            .map(|(f, &(oid, at))| match f {
                Ok(f) => sh.answer(oid, at, f),
                // Whatever went wrong, the one-by-one path knows what to do.
                Err(_) => self.load(oid, at),
            })
            .collect()
    }

    /// Every object of the database that has a current revision, in oid
    /// order (`wcfsd ls`; needs SELECT on `current_object` too).
    pub fn object_ids(&self) -> Result<Vec<Oid>, Error> {
        self.sh
            .run(&|| "list objects".to_string(), false, |c| async move {
                c.object_ids().await
            })
    }

    /// How many connections carry loads now (0 while the server is away).
    pub fn load_connections(&self) -> usize {
        let st = self.sh.st.lock();
        st.conn.as_ref().map_or(0, |_| 1 + st.loaders.len())
    }

    /// Whether the server is a standby (as of the current connection).
    pub fn is_standby(&self) -> bool {
        self.sh.st.lock().conn.as_ref().is_some_and(|c| c.standby)
    }
}

fn open_error(url: &str, e: ConnectError) -> Error {
    match e {
        ConnectError::Unreachable(why) => Error::Io {
            storage: url.to_string(),
            op: "connect".into(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why),
        },
        ConnectError::Schema(s) => Error::NotSupported(format!("{url}: {s}")),
    }
}

impl Error {
    /// A copy, for answering several callers with one error.
    fn clone_err(&self) -> Error {
        match self {
            Error::Unavailable {
                storage,
                what,
                waited,
            } => Error::Unavailable {
                storage: storage.clone(),
                what: what.clone(),
                waited: *waited,
            },
            Error::NotSameDatabase { storage, why } => Error::NotSameDatabase {
                storage: storage.clone(),
                why: why.clone(),
            },
            Error::Closed(s) => Error::Closed(s.clone()),
            other => Error::NotSupported(other.to_string()),
        }
    }
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        self.sh.close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Shared {
    fn fail_error(&self, f: &Failure) -> Error {
        match f {
            Failure::NotSame(why) => Error::NotSameDatabase {
                storage: self.url.clone(),
                why: why.clone(),
            },
            Failure::Broken(why) => Error::Io {
                storage: self.url.clone(),
                op: "follow the database".into(),
                source: std::io::Error::other(why.clone()),
            },
            Failure::Closed => Error::Closed(self.url.clone()),
        }
    }

    /// The connection to use, waiting for one while the server is away —
    /// until `deadline` (set to now + the resilience wait when first
    /// needed), then [`Error::Unavailable`].
    /// A load (`for_load`) takes the connections in turn, the poller's and
    /// the loaders.
    fn wait_conn(
        &self,
        deadline: &mut Option<Instant>,
        what: &dyn Fn() -> String,
        for_load: bool,
    ) -> Result<Arc<Conn>, Error> {
        let mut st = self.st.lock();
        loop {
            if let Some(f) = &st.failed {
                return Err(self.fail_error(f));
            }
            if let Some(c) = &st.conn {
                if for_load && !st.loaders.is_empty() {
                    let i = self.next_load.fetch_add(1, Ordering::Relaxed) as usize
                        % (st.loaders.len() + 1);
                    if i > 0 {
                        return Ok(st.loaders[i - 1].clone());
                    }
                }
                return Ok(c.clone());
            }
            let dl = *deadline.get_or_insert_with(|| Instant::now() + self.res.wait);
            if Instant::now() >= dl {
                self.counts[GIVEUP].fetch_add(1, Ordering::Relaxed);
                let why = st.down.as_ref().map_or("?".into(), |d| d.why.clone());
                if let Some(d) = st.down.as_mut().filter(|d| !d.logged_giveup) {
                    d.logged_giveup = true;
                    log::warn!(
                        "{}: server away for {:.1?}: requests give up after {:?} ({}: {why})",
                        self.url,
                        d.since.elapsed(),
                        self.res.wait,
                        what()
                    );
                }
                return Err(Error::Unavailable {
                    storage: self.url.clone(),
                    what: format!("{}: {why}", what()),
                    waited: self.res.wait,
                });
            }
            self.cond.wait_until(&mut st, dl);
        }
    }

    /// Connection `gen` failed: drop it (once), log and count the loss,
    /// and have the poller reconnect.
    /// A loader's loss is not an outage: it is dropped alone, and loads go
    /// on over the other connections while the poller opens another.
    fn lost(&self, gen: u64, why: &str) {
        let (conn, loaders) = {
            let mut st = self.st.lock();
            if st.failed.is_some() {
                return;
            }
            if let Some(i) = st.loaders.iter().position(|c| c.gen == gen) {
                let c = st.loaders.swap_remove(i);
                drop(st);
                if !self.closing.load(Ordering::Acquire) {
                    log::warn!(
                        "{}: a load connection to {} was lost: {why}; loads go on over the others",
                        self.url,
                        c.server
                    );
                }
                c.kill();
                return;
            }
            if st.conn.as_ref().is_none_or(|c| c.gen != gen) {
                return;
            }
            st.down = Some(Down {
                since: Instant::now(),
                why: why.to_string(),
                logged_giveup: false,
            });
            // They follow the server the poller's connection reached: the
            // next one may be another.
            (st.conn.take(), std::mem::take(&mut st.loaders))
        };
        for l in loaders {
            l.kill();
        }
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        self.counts[LOST].fetch_add(1, Ordering::Relaxed);
        if let Some(c) = conn {
            log::warn!(
                "{}: connection lost ({}): {why}; reconnecting (requests wait up to {:?})",
                self.url,
                c.server,
                self.res.wait
            );
            c.kill();
        }
        self.kick.notify_one();
    }

    /// Fails the storage for good: every waiter and watcher gets the error.
    fn fail(&self, f: Failure) {
        let watchers = {
            let mut st = self.st.lock();
            if st.failed.is_some() {
                return;
            }
            st.failed = Some(f.clone());
            st.conn = None;
            for l in st.loaders.drain(..) {
                l.kill();
            }
            std::mem::take(&mut st.watchers)
        };
        for w in watchers.iter().filter_map(Weak::upgrade) {
            w.end(self.fail_error(&f));
        }
        self.cond.notify_all();
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.fail(Failure::Closed);
        self.kick.notify_one();
    }

    /// A query (or poll) unanswered this long fails its connection.
    fn reply_timeout(&self) -> Duration {
        self.opts.request_timeout.min(self.res.reply_wait())
    }

    /// A poll unanswered this long fails its connection.
    fn poll_timeout(&self) -> Duration {
        self.opts.poll_timeout.min(self.res.reply_wait())
    }

    /// How long opening a connection may take as a whole: a server that
    /// accepts the TCP connection but then says nothing (frozen: its
    /// kernel still completes handshakes) would hold it forever.
    fn connect_bound(&self) -> Duration {
        self.spec
            .connect_timeout
            .unwrap_or(self.opts.connect_timeout)
            + self.reply_timeout()
    }

    /// `what` got no answer within `waited` from connection `gen`, which
    /// may still be up: it gives up, alone (counted; logged once per
    /// connection).
    fn late(&self, what: &dyn Fn() -> String, gen: u64, waited: Duration) -> Error {
        self.counts[GIVEUP].fetch_add(1, Ordering::Relaxed);
        if self.late_logged.swap(gen, Ordering::Relaxed) != gen {
            log::warn!(
                "{}: the server does not answer: requests give up after {:?} ({})",
                self.url,
                self.res.reply_wait(),
                what()
            );
        }
        Error::Unavailable {
            storage: self.url.clone(),
            what: format!("{}: the server did not answer", what()),
            waited,
        }
    }

    /// Runs `f` on the connection, riding through losses: a query whose
    /// connection fails is run again on the next one — all within the
    /// resilience wait from now: waiting for a connection up to
    /// [`Resilience::wait`], for the answer up to
    /// [`Resilience::reply_wait`] (a query left unanswered because of that
    /// is dropped; its connection is given up if it went unanswered for
    /// [`Shared::reply_timeout`]).
    fn run<T, F, Fut>(&self, what: &dyn Fn() -> String, for_load: bool, f: F) -> Result<T, Error>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Trouble>>,
    {
        let start = Instant::now();
        let mut deadline = Some(start + self.res.wait);
        let reply_deadline = start + self.res.reply_wait();
        let mut again = 0;
        loop {
            let c = self.wait_conn(&mut deadline, what, for_load)?;
            let gen = c.gen;
            let sent = Instant::now();
            let limit = self.reply_timeout();
            let left = reply_deadline.saturating_duration_since(sent);
            let r = self
                .rt
                .block_on(async { tokio::time::timeout(limit.min(left), f(c)).await });
            match r {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(Trouble::Conn(why))) => {
                    self.lost(gen, &why);
                }
                Ok(Err(Trouble::Again(why))) if again < 5 => {
                    again += 1;
                    log::debug!("{}: {}: {why}; again", self.url, what());
                }
                Ok(Err(t)) => {
                    return Err(Error::Io {
                        storage: self.url.clone(),
                        op: what(),
                        source: std::io::Error::other(t.why().to_string()),
                    })
                }
                Err(_) => {
                    // A query cut off midway leaves its pipelined
                    // connection in a state we cannot vouch for: one
                    // silent for the whole reply timeout is given up.
                    if sent.elapsed() >= limit {
                        self.lost(gen, &format!("no answer within {limit:?}"));
                    }
                    if Instant::now() >= reply_deadline {
                        return Err(self.late(what, gen, start.elapsed()));
                    }
                }
            }
        }
    }

    /// The answer to a load from what the database has.
    fn answer(&self, oid: Oid, at: Tid, f: Found) -> Result<Loaded, Error> {
        match f {
            Found::Data { data, serial } => {
                if serial > at {
                    return Err(Error::Corrupt {
                        storage: self.url.clone(),
                        why: format!("load {oid}@{at}: the server answered with @{serial}"),
                    });
                }
                Ok(Loaded { data, serial })
            }
            Found::Deleted { serial } => Err(Error::Deleted { oid, at, serial }),
            Found::Missing { first } => {
                let packed = self.st.lock().packed;
                if at < packed {
                    return Err(Error::PackedAway { oid, at, packed });
                }
                match first {
                    None => Err(Error::NoObject { oid }),
                    Some(_) => Err(Error::NotYetCreated { oid, at }),
                }
            }
        }
    }

    /// Hands transactions to the watchers and moves the position.
    fn publish(&self, rows: Vec<TxnRow>) -> Option<(Tid, Tid, usize)> {
        let (commits, collapsed) = collapse_packed(rows);
        let (first, last) = (commits.first()?.0.tid, commits.last()?.0.tid);
        let n = commits.len();
        let mut st = self.st.lock();
        if st.failed.is_some() {
            return None;
        }
        if collapsed {
            // Their objects changed at tids we do not report: forget all.
            st.current.clear();
        }
        for (c, sig) in commits {
            if c.tid <= st.head {
                continue; // already reported
            }
            st.head = c.tid;
            st.head_sig = Some(sig);
            st.current.changed(c.tid, &c.oids);
            st.watchers.retain(|w| match w.upgrade() {
                Some(q) => {
                    q.push(c.clone());
                    true
                }
                None => false,
            });
        }
        Some((first, last, n))
    }
}

/// Commits from transaction rows: the packed ones at the head (whose
/// superseded revisions a pack may have deleted) as one commit at the last
/// of them with all their objects; the others one each.
fn collapse_packed(rows: Vec<TxnRow>) -> (Vec<(Commit, String)>, bool) {
    let npacked = rows.iter().take_while(|r| r.packed).count();
    let mut out = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter();
    if npacked > 1 {
        let packed: Vec<TxnRow> = rows.by_ref().take(npacked).collect();
        let last = &packed[packed.len() - 1];
        let (tid, sig) = (last.tid, last.sig.clone());
        let mut oids: Vec<Oid> = packed.into_iter().flat_map(|r| r.oids).collect();
        oids.sort_unstable();
        oids.dedup();
        log::warn!(
            "transactions up to @{tid} were packed before we could read them: \
             {npacked} reported as one at @{tid}"
        );
        out.push((Commit { tid, oids }, sig));
    }
    out.extend(rows.map(|r| {
        (
            Commit {
                tid: r.tid,
                oids: r.oids,
            },
            r.sig,
        )
    }));
    (out, npacked > 1)
}

/// The poller: follows the database, and reconnects when the connection is
/// lost (see the module doc).
async fn poller(sh: Arc<Shared>) {
    let mut trusted_notify = false;
    let mut woke = Wake::Other;
    let mut last_pack_check = Instant::now();
    // After a reconnect, until caught up.
    let mut catching_up: Option<CatchUp> = None;
    loop {
        if sh.closing.load(Ordering::Acquire) {
            return;
        }
        let current = {
            let st = sh.st.lock();
            if st.failed.is_some() {
                return;
            }
            st.conn.clone()
        };
        let c = match current {
            Some(c) => c,
            None => match reconnect(&sh).await {
                Some(c) => {
                    catching_up = Some(CatchUp {
                        since: Instant::now(),
                        count: 0,
                        range: None,
                    });
                    trusted_notify = false;
                    woke = Wake::Other;
                    c
                }
                None => return,
            },
        };
        maybe_open_loader(&sh, &c);
        let head = sh.st.lock().head;
        let polled = tokio::time::timeout(
            sh.poll_timeout(),
            c.commits(head, Tid(i64::MAX as u64), sh.opts.batch),
        )
        .await;
        let rows = match polled {
            Ok(Ok(rows)) => rows,
            Ok(Err(t)) => {
                // Whatever it is (even a table gone), the connection is
                // suspect: reconnecting checks the database again.
                sh.lost(c.gen, t.why());
                continue;
            }
            Err(_) => {
                sh.lost(
                    c.gen,
                    &format!("no answer to a poll within {:?}", sh.poll_timeout()),
                );
                continue;
            }
        };
        let full = rows.len() as i64 >= sh.opts.batch;
        let found = !rows.is_empty();
        if let Some((first, last, n)) = sh.publish(rows) {
            if let Some(cu) = catching_up.as_mut() {
                cu.count += n as u64;
                cu.range = Some((cu.range.map_or(first, |r| r.0), last));
                sh.counts[CATCHUP].fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        if !full {
            if let Some(cu) = catching_up.take() {
                log::info!(
                    "{}: caught up {} transaction(s){} in {:.0} ms after the reconnect",
                    sh.url,
                    cu.count,
                    cu.range
                        .map_or(String::new(), |(a, b)| format!(" (@{a} … @{b})")),
                    cu.since.elapsed().as_secs_f64() * 1e3
                );
            }
        }
        if last_pack_check.elapsed() >= sh.opts.pack_every {
            last_pack_check = Instant::now();
            let (known, head) = {
                let st = sh.st.lock();
                (st.packed, st.head)
            };
            match tokio::time::timeout(sh.poll_timeout(), c.pack_point(known, head)).await {
                Ok(Ok(p)) if p > known => {
                    sh.st.lock().packed = p;
                    log::info!("{}: packed at @{p}", sh.url);
                }
                Ok(Ok(_)) => {}
                Ok(Err(t)) => {
                    sh.lost(c.gen, t.why());
                    continue;
                }
                Err(_) => {
                    sh.lost(c.gen, "no answer to a pack probe");
                    continue;
                }
            }
        }
        if full {
            woke = Wake::Other;
            continue;
        }
        // What woke us and what the poll found teaches whether NOTIFYs
        // announce commits (see the module doc).
        match (woke, found) {
            (Wake::Notify, true) if c.listening && !trusted_notify => {
                trusted_notify = true;
                log::info!(
                    "{}: commits are announced on NOTIFY {}; polling every {:?} besides",
                    sh.url,
                    conn::NOTIFY_CHANNEL,
                    sh.opts.notified_poll
                );
            }
            (Wake::Timer, true) if trusted_notify => {
                trusted_notify = false;
                log::info!(
                    "{}: a commit came without NOTIFY {}; polling every {:?}",
                    sh.url,
                    conn::NOTIFY_CHANNEL,
                    sh.opts.poll
                );
            }
            _ => {}
        }
        // Wait for the next poll: the timer, a NOTIFY, or a kick.
        let interval = if c.listening && trusted_notify {
            sh.opts.notified_poll
        } else {
            sh.opts.poll
        };
        woke = tokio::select! {
            _ = tokio::time::sleep(interval) => Wake::Timer,
            _ = c.notified.notified() => Wake::Notify,
            _ = sh.kick.notified() => Wake::Other,
        };
    }
}

/// The catch-up after a reconnect: since when, how many transactions, the
/// first and last.
struct CatchUp {
    since: Instant,
    count: u64,
    range: Option<(Tid, Tid)>,
}

/// What ended the poller's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Timer,
    Notify,
    Other,
}

/// Connects again (with backoff) and checks that the database is still
/// ours; None when the storage is closing or failed for good.
async fn reconnect(sh: &Shared) -> Option<Arc<Conn>> {
    let mut backoff = Duration::from_millis(50);
    let mut last_why = String::new();
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        if sh.closing.load(Ordering::Acquire) || sh.st.lock().failed.is_some() {
            return None;
        }
        let gen = {
            let mut st = sh.st.lock();
            st.gens += 1;
            st.gens
        };
        // The whole attempt is bounded (see connect_bound).
        let bound = sh.connect_bound();
        let attempt = tokio::time::timeout(bound, async {
            let c = conn::connect(&sh.spec, sh.opts.connect_timeout, gen).await?;
            let checked = same_database(sh, &c).await;
            Ok::<_, ConnectError>((c, checked))
        })
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::Unreachable(format!(
                "the server did not finish connecting within {bound:?}"
            )))
        });
        let why = match attempt {
            Ok((c, checked)) => match checked {
                Ok(()) => {
                    let c = Arc::new(c);
                    let outage = {
                        let mut st = sh.st.lock();
                        if st.failed.is_some() {
                            return None;
                        }
                        st.conn = Some(c.clone());
                        st.down.take().map(|d| d.since.elapsed())
                    };
                    sh.cond.notify_all();
                    sh.counts[RECONNECT].fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "{}: reconnected to {}{} after {:.1?} ({attempts} attempt(s)); \
                         the same database (@{} is there); catching up",
                        sh.url,
                        c.server,
                        if c.standby { " (standby)" } else { "" },
                        outage.unwrap_or_default(),
                        sh.st.lock().head
                    );
                    return Some(c);
                }
                Err(Check::NotYet(why)) => why,
                Err(Check::Other(why)) => {
                    log::error!("{}: not the same database any more: {why}", sh.url);
                    sh.fail(Failure::NotSame(why));
                    return None;
                }
            },
            Err(ConnectError::Unreachable(why)) => why,
            Err(ConnectError::Schema(conn::SchemaError::Unreadable(why))) => why,
            Err(ConnectError::Schema(s)) => {
                let why = s.to_string();
                log::error!("{}: not the same database any more: {why}", sh.url);
                sh.fail(Failure::NotSame(why));
                return None;
            }
        };
        if why != last_why {
            log::info!("{}: reconnect: {why}; trying again", sh.url);
            if let Some(d) = sh.st.lock().down.as_mut() {
                d.why = why.clone();
            }
            last_why = why;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = sh.kick.notified() => {}
        }
        backoff = (backoff * 2).min(sh.res.backoff_max.max(Duration::from_millis(50)));
    }
}

/// Has another load connection opened, in the background, if fewer than
/// [`PgOptions::load_connections`] carry loads and none is being opened
/// (after a failure, not before a backoff).
fn maybe_open_loader(sh: &Arc<Shared>, primary: &Arc<Conn>) {
    // A loader the server closed (its backend terminated, say) is dropped
    // here, without waiting for a load to fail on it.
    let closed = sh
        .st
        .lock()
        .loaders
        .iter()
        .find(|c| c.client.is_closed())
        .map(|c| c.gen);
    if let Some(gen) = closed {
        sh.lost(gen, "the server closed it");
    }
    {
        let mut st = sh.st.lock();
        if st.loader_opening
            || st.loaders.len() + 1 >= sh.opts.load_connections
            || Instant::now() < st.loader_next
            || st.conn.as_ref().is_none_or(|c| c.gen != primary.gen)
        {
            return;
        }
        st.loader_opening = true;
    }
    let (sh, primary) = (sh.clone(), primary.clone());
    tokio::spawn(async move {
        let r = open_loader(&sh, &primary).await;
        let mut st = sh.st.lock();
        st.loader_opening = false;
        match r {
            Ok(c)
                if st.failed.is_none()
                    && st.conn.as_ref().is_some_and(|p| p.gen == primary.gen) =>
            {
                log::debug!("{}: load connection {} to {}", sh.url, c.gen, c.server);
                st.loaders.push(Arc::new(c));
                st.loader_next = Instant::now();
                st.loader_failed = None;
            }
            Ok(c) => c.kill(), // the poller's connection is gone meanwhile
            Err(why) => {
                // Loads go on over the poller's connection; a later try.
                if st.loader_failed.as_ref() != Some(&why) {
                    log::info!(
                        "{}: another load connection: {why} (loads share one meanwhile; \
                         trying again every 5 s)",
                        sh.url
                    );
                    st.loader_failed = Some(why);
                }
                st.loader_next = Instant::now() + Duration::from_secs(5);
            }
        }
    });
}

/// A load connection to the very server `primary` reached: the same host
/// of the zurl, checked to be the same running server (a host name may
/// resolve to several; a proxy may choose).
async fn open_loader(sh: &Shared, primary: &Conn) -> Result<Conn, String> {
    let gen = {
        let mut st = sh.st.lock();
        st.gens += 1;
        st.gens
    };
    let bound = sh.connect_bound();
    let c = tokio::time::timeout(
        bound,
        conn::connect_host(&sh.spec, primary.host, sh.opts.connect_timeout, gen, false),
    )
    .await
    .map_err(|_| {
        format!(
            "{} did not finish connecting within {bound:?}",
            primary.server
        )
    })?
    .map_err(|e| match e {
        ConnectError::Unreachable(why) => why,
        ConnectError::Schema(s) => s.to_string(),
    })?;
    if c.identity != primary.identity {
        c.kill();
        return Err(format!(
            "{} reached another server ({}) than the poller's connection ({})",
            primary.server, c.identity, primary.identity
        ));
    }
    Ok(c)
}

/// The outcome of the same-database check.
enum Check {
    /// Not ready: try again later.
    NotYet(String),
    /// Another database: fail for good.
    Other(String),
}

/// Whether the server reached has our history (see the module doc).
async fn same_database(sh: &Shared, c: &Conn) -> Result<(), Check> {
    let (head, sig) = {
        let st = sh.st.lock();
        (st.head, st.head_sig.clone())
    };
    if head == Tid::ZERO {
        return Ok(()); // nothing served yet: any database is ours
    }
    let t = |t: Trouble| Check::NotYet(t.why().to_string());
    match c.sig(head).await.map_err(t)? {
        Some(s) if sig.as_ref().is_none_or(|ours| *ours == s) => Ok(()),
        Some(_) => Err(Check::Other(format!(
            "the transaction at @{head}, the last one we served, is another transaction there \
             (user, description or extension differ)"
        ))),
        None => {
            let last = c.last().await.map_err(t)?.map_or(Tid::ZERO, |l| l.0);
            if c.standby && last < head {
                return Err(Check::NotYet(format!(
                    "{} is a standby that has not replayed up to @{head} yet (it is at @{last})",
                    c.server
                )));
            }
            let packed = c.pack_point(Tid::ZERO, last).await.map_err(t)?;
            if packed >= head {
                log::warn!(
                    "{}: @{head}, the last transaction we served, was packed away meanwhile \
                     (packed at @{packed}); going on",
                    sh.url
                );
                return Ok(());
            }
            Err(Check::Other(format!(
                "the transaction at @{head}, the last one we served, is not in its history \
                 (its last transaction is @{last})"
            )))
        }
    }
}

impl Storage for PgStorage {
    fn url(&self) -> &str {
        &self.sh.url
    }

    fn instance_id(&self) -> u64 {
        self.instance
    }

    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        let what = || format!("load {oid}@{at}");
        let sh = &self.sh;
        let h0 = {
            let st = sh.st.lock();
            if at <= st.head && st.failed.is_none() {
                if let Some(r) = st.current.get(oid, at) {
                    return r;
                }
            }
            st.head
        };
        let found = sh.run(&what, true, |c| async move { c.load(oid, at).await })?;
        if at >= h0 {
            // As of the position when we asked, and nothing reported since:
            // current until a commit says otherwise.
            let kept = match &found {
                Found::Data { data, serial } => Some((Some(data.clone()), *serial)),
                Found::Deleted { serial } => Some((None, *serial)),
                Found::Missing { .. } => None,
            };
            if let Some((data, serial)) = kept {
                let mut st = sh.st.lock();
                if st.head == h0 && st.failed.is_none() && serial <= h0 {
                    st.current.put(oid, data, serial);
                }
            }
        }
        if matches!(found, Found::Missing { .. }) && at < sh.st.lock().head {
            // Missing as of an old tid: make sure a pack since our last
            // look is known before answering "not yet created".
            let (known, head) = {
                let st = sh.st.lock();
                (st.packed, st.head)
            };
            let p = sh.run(
                &what,
                false,
                |c| async move { c.pack_point(known, head).await },
            )?;
            let mut st = sh.st.lock();
            st.packed = st.packed.max(p);
        }
        sh.answer(oid, at, found)
    }

    fn last_tid(&self) -> Result<Tid, Error> {
        let st = self.sh.st.lock();
        match &st.failed {
            Some(f) => Err(self.sh.fail_error(f)),
            None => Ok(st.head),
        }
    }

    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>, Error> {
        let q = Arc::new(CommitQueue::default());
        let from = {
            let mut st = self.sh.st.lock();
            if let Some(f) = &st.failed {
                return Err(self.sh.fail_error(f));
            }
            st.watchers.push(Arc::downgrade(&q));
            st.head
        };
        let mut backlog = VecDeque::new();
        let mut pos = after;
        while pos < from {
            let what = || format!("list transactions ({pos}, {from}]");
            let batch = self.sh.opts.batch;
            let rows = self.sh.run(&what, false, |c| async move {
                c.commits(pos, from, batch).await
            })?;
            let Some(last) = rows.last().map(|r| r.tid) else {
                break;
            };
            backlog.extend(collapse_packed(rows).0.into_iter().map(|(c, _)| c));
            pos = last;
        }
        Ok(Box::new(QueueWatcher::new(q, after, backlog)))
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = |i: usize| self.sh.counts[i].load(Ordering::Relaxed);
        vec![
            (counter::LOST, c(LOST)),
            (counter::RECONNECT, c(RECONNECT)),
            (counter::CATCHUP, c(CATCHUP)),
            (counter::GIVEUP, c(GIVEUP)),
        ]
    }

    fn prefetch_depth(&self) -> usize {
        // One server process per connection answers queries in turn: with
        // a few queued it goes from one block to the next without waiting
        // for the reader (measured: 2 MiB blocks, pg_read bench).
        PREFETCH_DEPTH * self.sh.opts.load_connections.max(1)
    }

    fn oldest_tid(&self) -> Option<Tid> {
        let p = self.sh.st.lock().packed;
        (p > Tid::ZERO).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tid: u64, packed: bool, oids: &[u64]) -> TxnRow {
        TxnRow {
            tid: Tid(tid),
            packed,
            sig: format!("s{tid}"),
            oids: oids.iter().map(|&o| Oid(o)).collect(),
        }
    }

    #[test]
    fn current_records_answer_inside_their_validity_only() {
        let mut c = Current::default();
        let d = bytes::Bytes::from_static(b"state");
        c.put(Oid(1), Some(d.clone()), Tid(10));
        c.put(Oid(2), None, Tid(12));
        let data = |r: Option<Result<Loaded, Error>>| match r {
            Some(Ok(l)) => Some((l.serial, l.data)),
            Some(Err(e)) => panic!("{e}"),
            None => None,
        };
        assert_eq!(data(c.get(Oid(1), Tid(9))), None, "before its serial");
        assert_eq!(data(c.get(Oid(1), Tid(10))), Some((Tid(10), d.clone())));
        assert_eq!(data(c.get(Oid(1), Tid(99))), Some((Tid(10), d.clone())));
        assert!(matches!(
            c.get(Oid(2), Tid(12)),
            Some(Err(Error::Deleted {
                serial: Tid(12),
                ..
            }))
        ));
        assert!(c.get(Oid(3), Tid(12)).is_none());
        // A commit changing it ends the validity there (and only the first).
        c.changed(Tid(20), &[Oid(1), Oid(3)]);
        c.changed(Tid(30), &[Oid(1)]);
        assert_eq!(data(c.get(Oid(1), Tid(19))), Some((Tid(10), d.clone())));
        assert_eq!(data(c.get(Oid(1), Tid(20))), None);
        assert_eq!(data(c.get(Oid(1), Tid(25))), None);
        // Loaded again at the new position: valid from there.
        let e = bytes::Bytes::from_static(b"new");
        c.put(Oid(1), Some(e.clone()), Tid(30));
        assert_eq!(data(c.get(Oid(1), Tid(31))), Some((Tid(30), e)));
        assert_eq!(data(c.get(Oid(1), Tid(19))), None, "the older one is gone");
        // Big records are not kept; too many bytes: forgotten whole.
        c.put(
            Oid(5),
            Some(vec![0u8; Current::MAX_RECORD + 1].into()),
            Tid(40),
        );
        assert!(c.get(Oid(5), Tid(40)).is_none());
        for i in 0..(Current::MAX_BYTES / Current::MAX_RECORD) as u64 + 1 {
            c.put(
                Oid(100 + i),
                Some(vec![0u8; Current::MAX_RECORD].into()),
                Tid(40),
            );
        }
        assert!(c.bytes <= Current::MAX_BYTES);
        assert!(c.get(Oid(2), Tid(12)).is_none());
    }

    #[test]
    fn packed_transactions_are_reported_as_one() {
        let (got, collapsed) = collapse_packed(vec![
            row(1, true, &[3, 1]),
            row(2, true, &[]),
            row(3, true, &[1, 7]),
            row(4, false, &[2]),
            row(5, false, &[]),
        ]);
        let want = vec![
            (
                Commit {
                    tid: Tid(3),
                    oids: vec![Oid(1), Oid(3), Oid(7)],
                },
                "s3".to_string(),
            ),
            (
                Commit {
                    tid: Tid(4),
                    oids: vec![Oid(2)],
                },
                "s4".to_string(),
            ),
            (
                Commit {
                    tid: Tid(5),
                    oids: vec![],
                },
                "s5".to_string(),
            ),
        ];
        assert_eq!(got, want);
        assert!(collapsed);
        // One packed transaction stays as it is.
        let (got, collapsed) = collapse_packed(vec![row(1, true, &[2, 1]), row(2, false, &[])]);
        assert_eq!(got[0].0.oids, vec![Oid(2), Oid(1)]);
        assert_eq!(got.len(), 2);
        assert!(!collapsed);
        assert!(collapse_packed(vec![]).0.is_empty());
    }
}
