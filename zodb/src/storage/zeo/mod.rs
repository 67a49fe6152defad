//! ZEO client storage, read-only (`zeo://HOST:PORT`, `zeo:///SOCKET`, with
//! `?storage=NAME`), that rides through restarts of its server.
//!
//! The server is `runzeo` of the `ZEO` Python package: protocol 5, pickle
//! or msgpack marshalling — whichever it announces ([`wire`] has the
//! format). After the handshake we `register` read-only with storage
//! `"1"` (or the zurl's `?storage=NAME`: one `runzeo` may serve several);
//! the reply is the server's last tid, and from then on the server
//! pushes every committed transaction to us as
//! `invalidateTransaction(tid, oids)`. One connection is a [`conn::Conn`];
//! this module keeps the storage going across connections.
//!
//! Over TLS (`zeos://…?ca=…`, [`ZeoOptions::tls`] made by [`tls_config`])
//! every connection starts with a TLS handshake, as ZEO's
//! `ClientStorage(ssl=…)` does: the server's certificate checked against
//! the CA and for its host name, ours presented when the server
//! authenticates clients (`runzeo`'s `<ssl>` always does). Everything
//! below holds the same over TLS.
//!
//! # The stream
//!
//! - **`last_tid` is the position of the invalidation stream**: the
//!   register reply at first, then each transaction handed to the
//!   watchers. It needs no round trip, never moves back, and stays where it
//!   is while the server is away. Every watcher has been (or will be) told
//!   every transaction up to it, so "last tid" and "watch from it" never
//!   disagree, and a load as of it sees exactly the transactions reported.
//! - **Watchers** subscribe at the current `last_tid` T; a watch from
//!   `after < T` first fetches `(after, T]` with the server's storage
//!   iterator (`iterator_start`/`iterator_next`/`iterator_record_*`).
//! - **Register race.** The server adds us to its list of clients to
//!   notify before it reads its last tid for the register reply: a
//!   transaction finishing in between is in the reply and invalidated to us
//!   afterwards. A connection holds its invalidations until it goes live,
//!   and drops those not after the point the stream has reached then; a
//!   live connection whose tids do not increase violates the protocol.
//!
//! # Losing the server (the contract of [`crate::storage`])
//!
//! Any failure of the connection — closed, reset, timed out, the server
//! killed or restarted, a protocol violation — is a *loss*: logged once,
//! counted, and the supervisor thread reconnects, backing off from 50 ms
//! to [`Resilience::backoff_max`], for as long as it takes. After the
//! handshake and `register` (reply R) on the new connection, and before
//! anything is served from it, it checks that the server still has our
//! history, then catches up:
//!
//! - **Same database.** With H our `last_tid`: R ≥ H (nothing we saw may be
//!   missing), and the server's iterator has a transaction at exactly H
//!   changing the same objects as the one we reported at H. A restore from
//!   an older backup fails
//!   the first test; another database behind the same address fails the
//!   second (tids are times to the 14 ns, and the oid sets must agree). A
//!   server that fails either is not ours: the storage fails for good with
//!   [`Error::NotSameDatabase`] — loads and watchers return it, the daemon
//!   switches to EIO mode; never stale data. (An empty database, H = 0,
//!   has nothing to compare.)
//! - **Catch-up.** The transactions in (H, R] from the iterator, one
//!   `(tid, oids)` each, go to the watchers exactly as invalidations
//!   would have; then the connection goes live, handing over the
//!   invalidations it held meanwhile that are after R. None missed, none
//!   doubled, in order.
//!
//! A call that needs the server ([`Storage::load`], a watch's backlog)
//! during an outage waits for the reconnect up to [`Resilience::wait`] from
//! its start, and is retried on the new connection (loads are as of a tid:
//! repeatable); past the wait it fails with [`Error::Unavailable`], that
//! call alone. The first such giving-up of an outage is logged.
//!
//! # A silent server
//!
//! A server that keeps the connection open and answers nothing (frozen, a
//! stalled network, a reply cut off midway) is an outage too. A call waits
//! for its reply only until [`Resilience::reply_wait`] from its start (a
//! reconnect wait included), then fails with [`Error::Unavailable`] — alone;
//! the request stays pending on the connection, whose reader fails it once
//! a request has been unanswered for the reply timeout (the request
//! timeout, but no longer than `reply_wait`): a loss like any other,
//! reconnected, checked and caught up. An idle connection is pinged every
//! keep-alive (no longer than the reply timeout), so that a silent idle
//! server is noticed within twice that. The watchers see nothing of it but
//! a pause: the invalidations the silent server held back are caught up
//! through the iterator after the reconnect, once each, in order.
//!
//! # Locking
//!
//! `Client::st` (connection, phase, stream position, watchers) is never
//! held while calling into a connection: a connection calls back into the
//! storage (invalidations under its own state lock, losses without it),
//! so the order is connection state → `Client::st` → a watcher queue.

mod conn;
pub mod wire;

use super::session::{self, Backoff, Names, Phase, Session, CATCHUP, GIVEUP, LOST, RECONNECT};
use super::tls::{NameCheck, TlsClient};
use super::{Commit, Error, Loaded, Resilience, Storage, Watcher};
use crate::pickle::Value;
use crate::types::{Oid, Tid};
use crate::zurl::ZeoAddr;
use conn::{oid_of, oid_value, tid_of, tid_value, CallError, CallResult, Conn, Sink};
use parking_lot::{Condvar, Mutex};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Connection parameters.
#[derive(Debug, Clone)]
pub struct ZeoOptions {
    /// Storage name on the server (`runzeo` serves its FileStorage as "1").
    pub storage: String,
    /// Limit for connecting and for the handshake.
    pub connect_timeout: Duration,
    /// A request not answered within this fails the connection (no longer
    /// than [`Resilience::reply_wait`] is used).
    pub request_timeout: Duration,
    /// An idle connection is probed (`ping`) this often (no longer than
    /// the request timeout in use).
    pub keepalive: Duration,
    /// Largest frame accepted from the server.
    pub max_frame: usize,
    /// Riding through outages.
    pub resilience: Resilience,
    /// TLS (`zeos://`, made by [`tls_config`]), or none.
    pub tls: Option<TlsClient>,
    /// With TLS, the name the server's certificate must be valid for
    /// (None: the host of a TCP address; a Unix socket needs one).
    pub server_hostname: Option<String>,
}

impl Default for ZeoOptions {
    fn default() -> Self {
        ZeoOptions {
            storage: "1".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(10),
            max_frame: 256 << 20,
            resilience: Resilience::default(),
            tls: None,
            server_hostname: None,
        }
    }
}

/// The TLS setup of a `zeos://` zurl, as ZEO's client makes it: trust
/// `ca`, present `client` (`(cert, key)`) if given, check the server's
/// host name. Err: which file is wrong, and why.
pub fn tls_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<TlsClient, String> {
    super::tls::client_config(ca, client, NameCheck::Yes)
}

/// How messages name a loss.
const NAMES: Names = Names {
    lost: "connection lost",
    peer: "server",
};

struct Client {
    url: String,
    addr: ZeoAddr,
    opts: ZeoOptions,
    /// Connection, phase, stream position, watchers. `live_at` is the
    /// register reply of the serving connection: its invalidations up to it
    /// are the register race's duplicates.
    st: Mutex<Session<Arc<Conn>>>,
    /// Signalled on every change of phase.
    changed: Condvar,
    counters: [AtomicU64; 4],
    /// The connection whose silence was last logged.
    late_logged: AtomicU64,
}

/// A ZEO server, opened read-only.
pub struct ZeoStorage {
    client: Arc<Client>,
    instance: u64,
}

fn io_err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

impl ZeoStorage {
    /// Connects to `host:port` with default options; `url` is the zurl (for
    /// messages).
    pub fn open(host: &str, port: u16, url: &str) -> Result<ZeoStorage, Error> {
        Self::open_with(host, port, url, ZeoOptions::default())
    }

    /// Connects, handshakes and registers. A server that cannot be reached
    /// now is an error (later losses are ridden through).
    pub fn open_with(
        host: &str,
        port: u16,
        url: &str,
        opts: ZeoOptions,
    ) -> Result<ZeoStorage, Error> {
        let addr = ZeoAddr::Tcp {
            host: host.to_string(),
            port,
        };
        Self::open_addr(addr, url, opts)
    }

    /// Connects to a server at `addr` (TCP or a Unix socket), handshakes
    /// and registers storage `opts.storage`. A server that cannot be
    /// reached now, or that has no such storage, is an error (later losses
    /// are ridden through).
    pub fn open_addr(addr: ZeoAddr, url: &str, opts: ZeoOptions) -> Result<ZeoStorage, Error> {
        let client = Arc::new(Client {
            url: url.to_string(),
            addr,
            opts,
            st: Mutex::new(Session::new(Phase::Closed)),
            changed: Condvar::new(),
            counters: Default::default(),
            late_logged: AtomicU64::new(0),
        });
        let (conn, r) = client.dial().map_err(|(op, e)| client.io_error(&op, e))?;
        {
            let mut st = client.st.lock();
            st.last_tid = r;
            st.live_at = r;
            st.phase = Phase::Up(conn.clone());
        }
        if let Err(why) = conn.go_live(r) {
            conn.fail(why.clone());
            return Err(client.io_error("register", io_err(io::ErrorKind::ConnectionAborted, why)));
        }
        let weak = Arc::downgrade(&client);
        std::thread::Builder::new()
            .name("zeo-supervisor".into())
            .spawn(move || supervise(weak))
            .map_err(|e| client.io_error("spawn supervisor thread", e))?;
        Ok(ZeoStorage {
            client,
            instance: super::new_instance_id(),
        })
    }

    /// Why the storage is not serving now (lost and reconnecting, or failed
    /// for good), if it is not.
    pub fn failure(&self) -> Option<String> {
        self.client.st.lock().failure(NAMES.lost)
    }

    /// Loads several objects at once: all requests are sent before the
    /// first reply is awaited (for benchmarks and prefetching). Those that
    /// meet a lost connection are retried as [`Storage::load`] would.
    pub fn load_many(&self, reqs: &[(Oid, Tid)]) -> Vec<Result<Loaded, Error>> {
        let c = &self.client;
        let start = Instant::now();
        let conn = match c.wait_conn("load", start) {
            Ok(conn) => conn,
            Err(e) => return reqs.iter().map(|_| Err(c.clone_err(&e))).collect(),
        };
        let sent: Vec<_> = reqs
            .iter()
            .map(|&(oid, at)| conn.send("loadBefore", load_args(oid, at)))
            .collect();
        sent.into_iter()
            .zip(reqs)
            .map(|(s, &(oid, at))| {
                let r = s.and_then(|s| conn.wait(s, Some(c.reply_deadline(start))));
                match load_result(c, &conn, oid, at, r, start) {
                    Err(Retry) => c.load_retrying(oid, at, start),
                    Ok(r) => r,
                }
            })
            .collect()
    }
}

/// A call met a lost connection: try again on the next one.
struct Retry;

impl Client {
    fn io_error(&self, op: &str, e: io::Error) -> Error {
        Error::Io {
            storage: self.url.clone(),
            op: op.to_string(),
            source: e,
        }
    }

    fn call_error(&self, op: &str, e: CallError) -> Error {
        match e {
            CallError::Server(se) => {
                self.io_error(op, io_err(io::ErrorKind::Other, se.to_string()))
            }
            CallError::Conn(why) => {
                self.io_error(op, io_err(io::ErrorKind::ConnectionAborted, why))
            }
            CallError::Late(_) => self.late(op, &e),
        }
    }

    /// A call started at `start` may wait for its reply until this (see
    /// "A silent server" in the module doc).
    fn reply_deadline(&self, start: Instant) -> Instant {
        start + self.opts.resilience.reply_wait()
    }

    /// A call `op` got no reply in time (`e`: [`CallError::Late`]) from a
    /// connection still open: it gives up, alone; the connection is failed
    /// by its reader once the request is overdue for it too.
    fn late(&self, op: &str, e: &CallError) -> Error {
        let waited = match e {
            CallError::Late(d) => *d,
            _ => Duration::ZERO,
        };
        self.count(GIVEUP, 1);
        let conn = match &self.st.lock().phase {
            Phase::Up(c) => c.id,
            _ => 0,
        };
        // One line per silent connection.
        if self.late_logged.swap(conn, Ordering::Relaxed) != conn {
            log::warn!(
                "{}: the server does not answer: requests give up after {:?} ({op})",
                self.url,
                self.opts.resilience.reply_wait()
            );
        }
        Error::Unavailable {
            storage: self.url.clone(),
            what: format!("{op}: the server did not answer"),
            waited,
        }
    }

    /// A copy of an error returned by [`Client::wait_conn`].
    fn clone_err(&self, e: &Error) -> Error {
        match e {
            Error::Unavailable { what, waited, .. } => Error::Unavailable {
                storage: self.url.clone(),
                what: what.clone(),
                waited: *waited,
            },
            Error::NotSameDatabase { why, .. } => Error::NotSameDatabase {
                storage: self.url.clone(),
                why: why.clone(),
            },
            other => Error::Closed(format!("{}: {other}", self.url)),
        }
    }

    fn count(&self, which: usize, n: u64) {
        self.counters[which].fetch_add(n, Ordering::Relaxed);
    }

    /// A new connection, registered: (connection, the register reply).
    /// Err: (what failed, why).
    fn dial(self: &Arc<Self>) -> Result<(Arc<Conn>, Tid), (String, io::Error)> {
        let id = self.st.lock().next_conn();
        let sink: Weak<dyn Sink> = Arc::downgrade(self) as Weak<dyn Sink>;
        let conn = Conn::connect(&self.addr, &self.url, &self.opts, id, sink)
            .map_err(|(op, e)| (op.to_string(), e))?;
        let name = self.opts.storage.clone();
        let op = format!("register storage {name:?}");
        let reply = conn
            .call(
                "register",
                Value::Tuple(vec![Value::Str(name.clone()), Value::Bool(true)]),
                None,
            )
            .map_err(|e| {
                conn.fail(format!("{op} failed"));
                let kind = match e {
                    CallError::Server(_) => io::ErrorKind::Other,
                    CallError::Conn(_) | CallError::Late(_) => io::ErrorKind::ConnectionAborted,
                };
                (op.clone(), io_err(kind, e.why()))
            })?;
        let Some(r) = tid_of(&reply) else {
            let why = format!("protocol error: register: reply is {reply:?}, want a tid");
            conn.fail(why.clone());
            return Err(("register".into(), io_err(io::ErrorKind::InvalidData, why)));
        };
        Ok((conn, r))
    }

    /// The serving connection, waiting for a reconnect until `start` +
    /// the resilience wait. Err: Unavailable past the wait, NotSameDatabase
    /// or Closed.
    fn wait_conn(&self, op: &str, start: Instant) -> Result<Arc<Conn>, Error> {
        session::wait_up(
            &self.st,
            &self.changed,
            |s| s,
            &self.url,
            &NAMES,
            &self.opts.resilience,
            &self.counters[GIVEUP],
            op,
            start,
        )
    }

    /// A load as of `at`, retried across reconnects until `start` + wait.
    fn load_retrying(&self, oid: Oid, at: Tid, start: Instant) -> Result<Loaded, Error> {
        loop {
            let conn = self.wait_conn(&format!("load {oid}@{at}"), start)?;
            let r = conn.call(
                "loadBefore",
                load_args(oid, at),
                Some(self.reply_deadline(start)),
            );
            if let Ok(r) = load_result(self, &conn, oid, at, r, start) {
                return r;
            }
        }
    }

    /// Transactions in `(after, upto]`, retried across reconnects until
    /// `start` + wait.
    fn history_retrying(
        &self,
        after: Tid,
        upto: Tid,
        start: Instant,
    ) -> Result<Vec<Commit>, Error> {
        let op = format!("iterate transactions ({after}, {upto}]");
        loop {
            let conn = self.wait_conn(&op, start)?;
            match history_commits(&conn, after, upto, Some(self.reply_deadline(start))) {
                Ok(v) => return Ok(v),
                Err(CallError::Conn(_)) => continue,
                Err(e) => return Err(self.call_error(&op, e)),
            }
        }
    }

    /// The storage is done for (`err` for everyone from now on).
    fn finish(&self, phase: Phase<Arc<Conn>>, err: impl Fn() -> Error) {
        let conn = self.st.lock().finish(phase, err);
        self.changed.notify_all();
        if let Some(c) = conn {
            c.fail("storage closed".into());
        }
    }

    /// One reconnect attempt after a loss at `since`: Ok(true) when serving
    /// again, Ok(false) when the attempt failed (try later), Err when the
    /// server turned out not to be ours.
    fn reconnect(self: &Arc<Self>, since: Instant, attempts: u32) -> Result<bool, String> {
        let (conn, r) = match self.dial() {
            Ok(x) => x,
            Err((op, e)) => {
                self.note_attempt(format!("{op}: {e}"));
                return Ok(false);
            }
        };
        let (h, oids) = {
            let st = self.st.lock();
            (st.last_tid, st.last_oids.clone())
        };
        let give_up = |why: String| {
            conn.fail("not the same database".into());
            Err(why)
        };
        if r < h {
            return give_up(format!(
                "the server's last transaction is {r}, older than {h} we served (restored from an older backup?)"
            ));
        }
        let mut catchup = Vec::new();
        if h != Tid::ZERO {
            // The transaction at h, then everything after it up to r.
            match history_commits(&conn, Tid(h.0 - 1), r, None) {
                Ok(v) => {
                    let mut v = v.into_iter();
                    match v.next() {
                        Some(c) if c.tid == h => {
                            if let Some(want) = &oids {
                                let (mut a, mut b) = (c.oids.clone(), want.clone());
                                a.sort();
                                b.sort();
                                if !c.oids.is_empty() && !want.is_empty() && a != b {
                                    return give_up(format!(
                                        "its transaction {h} changed other objects than the one we served"
                                    ));
                                }
                            }
                        }
                        _ => {
                            return give_up(format!(
                                "transaction {h}, which we served, is not in its history"
                            ))
                        }
                    }
                    catchup.extend(v);
                }
                Err(e) => {
                    let why = e.why();
                    conn.fail(format!("catch-up failed: {why}"));
                    self.note_attempt(format!("catch-up: {why}"));
                    return Ok(false);
                }
            }
        }
        // Serve through it: catch up, then the invalidations it held.
        let n = catchup.len();
        {
            let mut st = self.st.lock();
            if !matches!(st.phase, Phase::Down { .. }) {
                drop(st);
                conn.fail("storage closed".into());
                return Ok(true);
            }
            // Counted before anyone can be served through it or a watcher
            // sees the catch-up (who sees either sees it counted).
            self.count(RECONNECT, 1);
            self.count(CATCHUP, n as u64);
            for c in catchup {
                st.deliver(c);
            }
            st.live_at = r;
            st.phase = Phase::Up(conn.clone());
        }
        if let Err(why) = conn.go_live(r) {
            conn.fail(why);
            return Ok(false); // lost again (the sink saw it): keep trying
        }
        self.changed.notify_all();
        log::info!(
            "{}: reconnected after {:.1?} ({attempts} attempt(s)); caught up {n} transaction(s) ({h}, {r}]",
            self.url,
            since.elapsed()
        );
        Ok(true)
    }

    fn note_attempt(&self, why: String) {
        self.st.lock().note_attempt(why);
    }
}

impl Sink for Client {
    fn invalidated(&self, conn: u64, c: Commit) -> Result<(), String> {
        let mut st = self.st.lock();
        if !matches!(&st.phase, Phase::Up(cur) if cur.id == conn) {
            return Ok(()); // a connection being replaced: dropped
        }
        st.invalidated(c)
    }

    fn lost(&self, conn: u64, why: String) {
        {
            let mut st = self.st.lock();
            if !matches!(&st.phase, Phase::Up(cur) if cur.id == conn) {
                return;
            }
            st.phase = Phase::down(why.clone(), false);
        }
        self.count(LOST, 1);
        log::warn!("{}: connection lost: {why}; reconnecting", self.url);
        self.changed.notify_all();
    }
}

/// The supervisor: reconnects after every loss, until the storage goes.
fn supervise(client: Weak<Client>) {
    let _ = nix::sys::signal::SigSet::all().thread_block();
    loop {
        // Wait for a loss (or the end).
        let since = {
            let Some(c) = client.upgrade() else { return };
            let Some(since) = session::wait_lost(&c.st, &c.changed, |s| s) else {
                return;
            };
            since
        };
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            let Some(c) = client.upgrade() else { return };
            attempts += 1;
            match c.reconnect(since, attempts) {
                Ok(true) => break,
                Ok(false) => {}
                Err(why) => {
                    log::error!("{}: not the same database any more: {why}", c.url);
                    let url = c.url.clone();
                    c.finish(Phase::Failed(why.clone()), || Error::NotSameDatabase {
                        storage: url.clone(),
                        why: why.clone(),
                    });
                    return;
                }
            }
            let pause = backoff.next(c.opts.resilience.backoff_max);
            drop(c);
            std::thread::sleep(pause);
        }
    }
}

/// Outcome of a load on one connection; Err(Retry): the connection was
/// lost under it.
fn load_result(
    c: &Client,
    conn: &Conn,
    oid: Oid,
    at: Tid,
    r: CallResult,
    start: Instant,
) -> Result<Result<Loaded, Error>, Retry> {
    let op = || format!("load {oid}@{at}");
    let proto = |why: String| -> Result<Result<Loaded, Error>, Retry> {
        conn.protocol_error(why);
        Err(Retry)
    };
    match r {
        Ok(Value::None) => Ok(Err(Error::NotYetCreated { oid, at })),
        Ok(Value::Tuple(t)) if t.len() == 3 => {
            let (Value::Bytes(data), Some(serial)) = (&t[0], tid_of(&t[1])) else {
                return proto(format!("{}: reply {t:?}", op()));
            };
            if serial > at {
                return proto(format!(
                    "{}: server returned data of @{serial}, newer than asked",
                    op()
                ));
            }
            Ok(Ok(Loaded {
                data: data.clone(),
                serial,
            }))
        }
        Ok(other) => proto(format!("{}: reply {other:?}", op())),
        Err(CallError::Server(e)) if e.name() == "POSKeyError" => {
            match missing(c, conn, oid, at, start) {
                Err(Retry) => Err(Retry),
                Ok(r) => Ok(r),
            }
        }
        Err(CallError::Conn(_)) => Err(Retry),
        Err(e) => Ok(Err(c.call_error(&op(), e))),
    }
}

/// `loadBefore` raised POSKeyError: the object never existed, or its
/// record as of `at` is a deletion. The object's history tells which (and
/// the deletion's tid).
fn missing(
    c: &Client,
    conn: &Conn,
    oid: Oid,
    at: Tid,
    start: Instant,
) -> Result<Result<Loaded, Error>, Retry> {
    for size in [16i64, 1024, 65536] {
        let args = Value::Tuple(vec![oid_value(oid), Value::Int(size)]);
        let recs = match conn.call("history", args, Some(c.reply_deadline(start))) {
            Ok(Value::List(v)) | Ok(Value::Tuple(v)) => v,
            Ok(other) => {
                conn.protocol_error(format!("history {oid}: reply {other:?}"));
                return Err(Retry);
            }
            Err(CallError::Server(e)) if e.name() == "POSKeyError" => {
                return Ok(Err(Error::NoObject { oid }))
            }
            Err(CallError::Conn(_)) => return Err(Retry),
            Err(e) => return Ok(Err(c.call_error(&format!("history {oid}"), e))),
        };
        let n = recs.len();
        for r in &recs {
            let Value::Dict(items) = r else { continue };
            let tid = items
                .iter()
                .find(|(k, _)| k.as_str() == Some("tid"))
                .and_then(|(_, v)| tid_of(v));
            if let Some(tid) = tid {
                if tid <= at {
                    return Ok(Err(Error::Deleted {
                        oid,
                        at,
                        serial: tid,
                    }));
                }
            }
        }
        if (n as i64) < size {
            break;
        }
    }
    // Deleted, by a record we could not find in a reasonable history.
    Ok(Err(Error::Deleted {
        oid,
        at,
        serial: Tid::ZERO,
    }))
}

/// Transactions in `(after, upto]` from the server's iterator on `conn`,
/// every reply by `deadline`.
fn history_commits(
    conn: &Conn,
    after: Tid,
    upto: Tid,
    deadline: Option<Instant>,
) -> Result<Vec<Commit>, CallError> {
    let start = Tid(after.0.saturating_add(1));
    let iid = conn.call(
        "iterator_start",
        Value::Tuple(vec![tid_value(start), tid_value(upto)]),
        deadline,
    )?;
    let mut out: Vec<Commit> = Vec::new();
    loop {
        let t = conn.call("iterator_next", Value::Tuple(vec![iid.clone()]), deadline)?;
        let t = match t {
            Value::None => break,
            Value::Tuple(t) if t.len() >= 2 => t,
            other => return Err(conn.protocol_error(format!("iterator_next: {other:?}"))),
        };
        let Some(tid) = tid_of(&t[0]) else {
            return Err(conn.protocol_error(format!("iterator_next: tid {:?}", t[0])));
        };
        if out.last().map_or(tid <= after, |c| tid <= c.tid) || tid > upto {
            return Err(
                conn.protocol_error(format!("iterator_next: transaction {tid} out of order"))
            );
        }
        let undone = match &t[1] {
            Value::Str(s) => s == "u",
            Value::Bytes(b) => &b[..] == b"u",
            _ => false,
        };
        let rid = conn.call(
            "iterator_record_start",
            Value::Tuple(vec![iid.clone(), tid_value(tid)]),
            deadline,
        )?;
        let mut oids = Vec::new();
        loop {
            match conn.call(
                "iterator_record_next",
                Value::Tuple(vec![rid.clone()]),
                deadline,
            )? {
                Value::None => break,
                Value::Tuple(r) if !r.is_empty() => match oid_of(&r[0]) {
                    Some(o) => oids.push(o),
                    None => {
                        return Err(conn.protocol_error(format!("iterator_record_next: {:?}", r[0])))
                    }
                },
                other => {
                    return Err(conn.protocol_error(format!("iterator_record_next: {other:?}")))
                }
            }
        }
        if undone {
            oids.clear();
        }
        out.push(Commit { tid, oids });
    }
    Ok(out)
}

/// `loadBefore(oid, at+1)`: the latest record with tid < at+1.
fn load_args(oid: Oid, at: Tid) -> Value {
    Value::Tuple(vec![oid_value(oid), tid_value(Tid(at.0.saturating_add(1)))])
}

impl Drop for ZeoStorage {
    fn drop(&mut self) {
        let url = self.client.url.clone();
        self.client
            .finish(Phase::Closed, || Error::Closed(url.clone()));
    }
}

impl Storage for ZeoStorage {
    fn url(&self) -> &str {
        &self.client.url
    }

    fn instance_id(&self) -> u64 {
        self.instance
    }

    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        self.client.load_retrying(oid, at, Instant::now())
    }

    fn last_tid(&self) -> Result<Tid, Error> {
        self.client.st.lock().last_tid(&self.client.url)
    }

    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>, Error> {
        let c = &self.client;
        session::watch(
            &c.st,
            |s| s,
            &c.url,
            after,
            |after, from| c.history_retrying(after, from, Instant::now()),
        )
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        session::counters(&self.client.counters, &session::COMMON)
    }
}
