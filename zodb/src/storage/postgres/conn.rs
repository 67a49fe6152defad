//! One connection to the server: connecting (host after host), checking
//! that the database is a history-preserving RelStorage we may read,
//! preparing our statements, and the queries themselves.
//!
//! Everything here is async and runs on the storage's runtime; the
//! connection itself is driven by a task of its own (`Conn::task`),
//! which also turns `NOTIFY`s on [`NOTIFY_CHANNEL`] into wake-ups of the
//! poller. Queries from many threads share the one connection: the client
//! sends each as it comes, so they are pipelined.
//!
//! # The schema (RelStorage, keep-history true)
//!
//! Facts read from RelStorage's own schema installer (`adapters/schema.py`,
//! `adapters/postgresql/`):
//!
//! - `"transaction" (tid BIGINT PRIMARY KEY, packed BOOLEAN, is_empty
//!   BOOLEAN, username BYTEA, description BYTEA, extension BYTEA)`: one row
//!   per committed transaction, and a special row with tid 0 ("special
//!   transaction for object creation") that is no commit;
//! - `object_state (zoid BIGINT, tid BIGINT, prev_tid BIGINT, md5,
//!   state_size, state BYTEA NULL, PRIMARY KEY (zoid, tid))`, indexed by
//!   tid too: every revision of every object; a NULL state is an undone
//!   creation (RelStorage's undo copies the state before the undone
//!   transaction forward, and there is none);
//! - `current_object (zoid, tid)`: the latest revision of each object (we do
//!   not need it; its presence, with `transaction`, tells the
//!   history-preserving schema from the history-free one, which has
//!   `object_state (zoid PRIMARY KEY, tid, state)` alone);
//! - `pack_state_tid (tid)`: while a pack runs, the transactions it will
//!   pack.
//!
//! Tids and oids are stored as signed 64-bit integers; ours are unsigned.
//! Every tid RelStorage makes is below 2⁶³ (a tid's high bits count
//! minutes since 1900: 2⁶³ is in the 10th millennium), so the two agree;
//! a tid or oid above `i64::MAX` asked for is clamped or absent.

use super::dsn::{self, ConnSpec, Host, Target};
use super::tls;
use crate::types::{Oid, Tid};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, Statement};

/// The channel we `LISTEN` on (primary only: a standby cannot listen). An
/// administrator may add a trigger that notifies it on every commit (see
/// the README); without one, polling alone finds new transactions.
pub const NOTIFY_CHANNEL: &str = "wcfs_commit";

/// How a query failed, as far as what to do next goes.
#[derive(Debug, Clone)]
pub(crate) enum Trouble {
    /// The connection is unusable (closed, I/O, the server shutting down
    /// or terminating us, too many connections): reconnect.
    Conn(String),
    /// This query only: a standby cancelled it for a conflict with
    /// recovery, or it was cancelled. Try it again.
    Again(String),
    /// An answer: the query cannot work (permissions, a missing table).
    Hard(String),
}

impl Trouble {
    pub(crate) fn why(&self) -> &str {
        match self {
            Trouble::Conn(s) | Trouble::Again(s) | Trouble::Hard(s) => s,
        }
    }
}

/// A tokio-postgres error as one line: the server's message when it sent
/// one, else the kind and its cause.
pub(crate) fn text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (hint: {h})"));
        }
        return s.replace('\n', " ");
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s.replace('\n', " ")
}

pub(crate) fn classify(e: &tokio_postgres::Error) -> Trouble {
    let why = text(e);
    if e.is_closed() {
        return Trouble::Conn(why);
    }
    let Some(code) = e.code() else {
        // I/O, a protocol error, a timeout: the connection is suspect.
        return Trouble::Conn(why);
    };
    let code = code.code();
    match code {
        // serialization_failure (a standby's conflict with recovery),
        // deadlock_detected, query_canceled.
        "40001" | "40P01" | "57014" => Trouble::Again(why),
        _ if code.starts_with("08")     // connection exception
            || code.starts_with("57P")  // shutdown, terminated, cannot connect now
            || code.starts_with("53")   // insufficient resources
            || code.starts_with("58") =>
        {
            Trouble::Conn(why)
        }
        _ => Trouble::Hard(why),
    }
}

/// Our prepared statements.
pub(crate) struct Stmts {
    /// (zoid, at) → the latest revision with tid ≤ at: (tid, state).
    load: Statement,
    /// zoid → its first tid (NULL: no revision at all).
    first: Statement,
    /// (after, upto, limit) → (tid, packed, signature, zoid) of the first
    /// `limit` transactions in (after, upto], one row per object (zoid
    /// NULL for a transaction that changed none), in tid order.
    commits: Statement,
    /// The last transaction: (tid, signature).
    last: Statement,
    /// tid → its signature.
    sig: Statement,
    /// x → (tid, packed) of the first transaction with tid ≥ x.
    first_from: Statement,
    /// The highest tid a running pack is about to pack (NULL: none).
    pack_running: Option<Statement>,
}

/// A transaction's signature: the md5 of its user, description and
/// extension — what tells the transaction at a tid of our history from
/// another one at the same tid (see the module doc of [`super`]).
const SIG: &str = r#"md5(t.username || '\x00'::bytea || t.description || '\x00'::bytea || coalesce(t.extension, ''::bytea))"#;

/// A live connection and what we know of its server.
pub(crate) struct Conn {
    pub(crate) client: Client,
    stmts: Stmts,
    /// Drives the connection; aborted when the connection is dropped or
    /// given up.
    task: TaskGuard,
    /// Woken by every NOTIFY on [`NOTIFY_CHANNEL`].
    pub(crate) notified: Arc<Notify>,
    /// Which connection this is (the storage counts them).
    pub(crate) gen: u64,
    /// The host, for messages.
    pub(crate) server: String,
    /// Which of the zurl's hosts ([`ConnSpec::hosts`]) it reached.
    pub(crate) host: usize,
    /// The server process behind the connection: its address and port as
    /// it sees them and its postmaster's start time. Two connections with
    /// the same identity are served by the same running server (the same
    /// snapshot of the replayed or committed history); a name that resolves
    /// to several servers, a proxy, or a restart since gives another.
    pub(crate) identity: String,
    /// Over TLS.
    pub(crate) tls: bool,
    /// A standby (hot standby, read replica).
    pub(crate) standby: bool,
    /// `LISTEN` is on.
    pub(crate) listening: bool,
}

impl Conn {
    /// Stops driving the connection: queries in flight fail at once.
    pub(crate) fn kill(&self) {
        if let Some(t) = &self.task.0 {
            t.abort();
        }
    }
}

/// Why opening a connection failed.
#[derive(Debug, Clone)]
pub(crate) enum ConnectError {
    /// Every host refused or failed (why, per host): try again later.
    Unreachable(String),
    /// Connected, but the database is no history-preserving RelStorage
    /// (or we may not read it): an answer, not a passing failure.
    Schema(SchemaError),
}

#[derive(Debug, Clone)]
pub(crate) enum SchemaError {
    /// No `object_state` table: not a RelStorage database.
    NotRelStorage(String),
    /// RelStorage's history-free schema.
    HistoryFree,
    /// A table we read is there but a query on it fails (permissions).
    Unreadable(String),
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaError::NotRelStorage(db) => write!(
                f,
                "database {db:?} holds no RelStorage data (no table object_state; \
                 RelStorage creates its tables when it first opens the database)"
            ),
            SchemaError::HistoryFree => write!(
                f,
                "RelStorage history-free schema (keep-history false): wcfs needs old revisions, \
                 i.e. the history-preserving schema (keep-history true, RelStorage's default)"
            ),
            SchemaError::Unreadable(why) => write!(
                f,
                "{why} (wcfsd needs SELECT on the tables \"transaction\" and object_state)"
            ),
        }
    }
}

/// Connects to the first host of `spec` that answers, checks the schema
/// and prepares our statements.
pub(crate) async fn connect(
    spec: &ConnSpec,
    default_connect_timeout: Duration,
    gen: u64,
) -> Result<Conn, ConnectError> {
    let mut failures = Vec::new();
    for host in 0..spec.hosts.len() {
        match connect_host(spec, host, default_connect_timeout, gen, true).await {
            Ok(c) => return Ok(c),
            Err(ConnectError::Unreachable(why)) => failures.push(why),
            Err(e @ ConnectError::Schema(_)) => return Err(e),
        }
    }
    Err(ConnectError::Unreachable(failures.join("; ")))
}

/// Connects to the zurl's host number `index` only (and `LISTEN`s on a
/// primary if `listen`).
pub(crate) async fn connect_host(
    spec: &ConnSpec,
    index: usize,
    default_connect_timeout: Duration,
    gen: u64,
    listen: bool,
) -> Result<Conn, ConnectError> {
    let host: &Host = &spec.hosts[index];
    let shown = host.shown();
    let unreachable = |why: String| ConnectError::Unreachable(format!("{shown}: {why}"));
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(&spec.user)
        .dbname(&spec.dbname)
        .port(host.port)
        .application_name(spec.application_name.as_deref().unwrap_or("wcfsd"))
        .connect_timeout(spec.connect_timeout.unwrap_or(default_connect_timeout));
    let tcp_host = match &host.target {
        Target::Tcp(h) => {
            cfg.host(h);
            Some(h.as_str())
        }
        Target::Unix(d) => {
            cfg.host_path(d);
            None
        }
    };
    match spec.keepalives_idle {
        Some(idle) => cfg.keepalives(true).keepalives_idle(idle),
        None => cfg.keepalives(false),
    };
    if spec.read_write {
        cfg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    if let Some(o) = &spec.options {
        cfg.options(o);
    }
    if let Some(pw) = dsn::password_for(spec, host, &dsn::ProcessEnv) {
        cfg.password(pw);
    }
    if spec.tls.direct {
        cfg.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
    }
    // The attempts libpq makes (tls.rs): plain, TLS if the server offers it
    // (plain when it does not), TLS or nothing. Over a Unix socket, plain.
    use tls::SslMode as M;
    use tokio_postgres::config::SslMode as Pg;
    let attempts: &[Pg] = match (tcp_host, spec.tls.mode) {
        (None, _) | (_, M::Disable) => &[Pg::Disable],
        (_, M::Allow) => &[Pg::Disable, Pg::Require],
        (_, M::Prefer) => &[Pg::Prefer, Pg::Disable],
        (_, M::Require | M::VerifyCa | M::VerifyFull) => &[Pg::Require],
    };
    let mut failed: Vec<String> = Vec::new();
    let mut connected = None;
    let notified = Arc::new(Notify::new());
    for (i, &mode) in attempts.iter().enumerate() {
        cfg.ssl_mode(mode);
        let last = i + 1 == attempts.len();
        let r = if mode == Pg::Disable {
            cfg.connect(tokio_postgres::NoTls)
                .await
                .map(|(c, conn)| (c, drive(conn, notified.clone()), false))
                .map_err(|e| (e, false))
        } else {
            let config = match tls::client_config(&spec.tls) {
                Ok(c) => c,
                Err(why) if last => {
                    failed.push(why);
                    break;
                }
                Err(why) => {
                    // (allow/prefer: libpq too goes on without TLS.)
                    failed.push(format!("TLS: {why}"));
                    continue;
                }
            };
            let tracked = tls::Tracked::new(config);
            let started = tracked.started.clone();
            let r = cfg.connect(tracked).await;
            let tls = started.load(std::sync::atomic::Ordering::Relaxed);
            r.map(|(c, conn)| (c, drive(conn, notified.clone()), tls))
                .map_err(|e| (e, tls))
        };
        match r {
            Ok(c) => {
                connected = Some(c);
                break;
            }
            Err((e, tls)) => {
                let why = match tls::cause(&e, &spec.tls, tcp_host.unwrap_or(""), tls) {
                    Some(cause) => format!("{cause}: {}", text(&e)),
                    None => text(&e),
                };
                let over = match (attempts.len() > 1, tls) {
                    (false, _) => "",
                    (true, true) => "over TLS: ",
                    (true, false) => "without TLS: ",
                };
                failed.push(format!("{over}{why}"));
                // Another attempt only when the server answered this one
                // (refused the login or the handshake), and for prefer's
                // plain retry only if this one was over TLS, as libpq.
                let answered = e.as_db_error().is_some() || tls;
                let retry = match mode {
                    Pg::Prefer => tls,
                    _ => answered,
                };
                if last || !retry {
                    break;
                }
            }
        }
    }
    let Some((client, task, tls)) = connected else {
        return Err(unreachable(failed.join("; ")));
    };
    // From here on, dropping `guard` (an error) aborts the task.
    let guard = TaskGuard(Some(task));
    let q = |e: tokio_postgres::Error| match classify(&e) {
        Trouble::Hard(why) => ConnectError::Schema(SchemaError::Unreadable(why)),
        t => unreachable(t.why().to_string()),
    };
    // We only read: say so to the server too.
    client
        .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        .await
        .map_err(q)?;
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), to_regclass('object_state') IS NOT NULL, \
             to_regclass('\"transaction\"') IS NOT NULL, to_regclass('current_object') IS NOT NULL, \
             to_regclass('pack_state_tid') IS NOT NULL, current_database(), \
             coalesce(host(inet_server_addr()), 'local') || ':' || coalesce(inet_server_port()::text, '') \
             || ' since ' || pg_postmaster_start_time()::text",
            &[],
        )
        .await
        .map_err(q)?;
    let schema = |t: Trouble| ConnectError::Schema(SchemaError::Unreadable(t.why().to_string()));
    let standby: bool = col(&row, 0).map_err(schema)?;
    let (state, txn, current, pack_state): (bool, bool, bool, bool) = (
        col(&row, 1).map_err(schema)?,
        col(&row, 2).map_err(schema)?,
        col(&row, 3).map_err(schema)?,
        col(&row, 4).map_err(schema)?,
    );
    let db: String = col(&row, 5).map_err(schema)?;
    let identity: String = col(&row, 6).map_err(schema)?;
    if !state {
        return Err(ConnectError::Schema(SchemaError::NotRelStorage(db)));
    }
    if !txn || !current {
        return Err(ConnectError::Schema(SchemaError::HistoryFree));
    }
    let stmts = prepare(&client, pack_state).await.map_err(q)?;
    let mut conn = Conn {
        client,
        stmts,
        task: guard,
        notified,
        gen,
        server: shown.clone(),
        host: index,
        identity,
        tls,
        standby,
        listening: false,
    };
    // Prepared statements are checked for permissions only when they run:
    // run the two that read our tables once now, for a clear error.
    let checked = |t: Trouble| match t {
        Trouble::Hard(why) => ConnectError::Schema(SchemaError::Unreadable(why)),
        t => unreachable(t.why().to_string()),
    };
    conn.last().await.map_err(checked)?;
    conn.load(Oid(0), Tid::ZERO).await.map_err(checked)?;
    if listen && !conn.standby {
        // Works for any role; a no-op unless someone notifies the channel.
        match conn
            .client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
        {
            Ok(()) => conn.listening = true,
            Err(e) => log::debug!(
                "{shown}: LISTEN {NOTIFY_CHANNEL}: {} (polling only)",
                text(&e)
            ),
        }
    }
    Ok(conn)
}

/// Starts the task that drives `connection`, turning our notifications
/// into wake-ups of `notified`.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notified: Arc<Notify>,
) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == NOTIFY_CHANNEL => {
                    notified.notify_one()
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    log::debug!("postgres connection: {}", text(&e));
                    break;
                }
                None => break,
            }
        }
    })
}

/// The task driving a connection, aborted when dropped.
pub(crate) struct TaskGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

async fn prepare(client: &Client, pack_state: bool) -> Result<Stmts, tokio_postgres::Error> {
    let load = client
        .prepare(
            "SELECT tid, state FROM object_state WHERE zoid = $1 AND tid <= $2 \
             ORDER BY tid DESC LIMIT 1",
        )
        .await?;
    let first = client
        .prepare("SELECT min(tid) FROM object_state WHERE zoid = $1")
        .await?;
    let commits = client
        .prepare(&format!(
            "WITH t AS (SELECT t.tid, t.packed, {SIG} AS sig FROM \"transaction\" t \
             WHERE t.tid > $1 AND t.tid <= $2 ORDER BY t.tid LIMIT $3) \
             SELECT t.tid, t.packed, t.sig, s.zoid FROM t LEFT JOIN object_state s ON s.tid = t.tid \
             ORDER BY t.tid, s.zoid"
        ))
        .await?;
    let last = client
        .prepare(&format!(
            "SELECT t.tid, {SIG} FROM \"transaction\" t WHERE t.tid > 0 ORDER BY t.tid DESC LIMIT 1"
        ))
        .await?;
    let sig = client
        .prepare(&format!(
            "SELECT {SIG} FROM \"transaction\" t WHERE t.tid = $1"
        ))
        .await?;
    let first_from = client
        .prepare(
            "SELECT tid, packed FROM \"transaction\" WHERE tid >= $1 AND tid > 0 \
             ORDER BY tid LIMIT 1",
        )
        .await?;
    let pack_running = if pack_state {
        match client.prepare("SELECT max(tid) FROM pack_state_tid").await {
            Ok(s) => Some(s),
            Err(e) => {
                log::debug!("pack_state_tid: {} (not consulted)", text(&e));
                None
            }
        }
    } else {
        None
    };
    Ok(Stmts {
        load,
        first,
        commits,
        last,
        sig,
        first_from,
        pack_running,
    })
}

fn i64_of_tid(t: Tid) -> i64 {
    t.0.min(i64::MAX as u64) as i64
}

fn tid_of(v: i64) -> Result<Tid, Trouble> {
    u64::try_from(v)
        .map(Tid)
        .map_err(|_| Trouble::Hard(format!("negative tid {v} in the database")))
}

fn oid_of(v: i64) -> Result<Oid, Trouble> {
    u64::try_from(v)
        .map(Oid)
        .map_err(|_| Trouble::Hard(format!("negative oid {v} in the database")))
}

fn map(e: tokio_postgres::Error) -> Trouble {
    classify(&e)
}

/// Column `i` of a row as a `T`, or a clear error (a column of another
/// type than RelStorage's: not a panic).
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    r: &'a tokio_postgres::Row,
    i: usize,
) -> Result<T, Trouble> {
    r.try_get(i).map_err(|e| {
        let name = r.columns().get(i).map_or("?", |c| c.name());
        Trouble::Hard(format!("column {name}: {}", text(&e)))
    })
}

/// What a load found.
#[derive(Debug)]
pub(crate) enum Found {
    Data {
        data: Bytes,
        serial: Tid,
    },
    /// The latest revision ≤ at is an undone creation.
    Deleted {
        serial: Tid,
    },
    /// No revision ≤ at: the first is `first` (None: no revision at all).
    Missing {
        first: Option<Tid>,
    },
}

/// One transaction of the commit stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnRow {
    pub tid: Tid,
    pub packed: bool,
    pub sig: String,
    pub oids: Vec<Oid>,
}

impl Conn {
    pub(crate) async fn load(&self, oid: Oid, at: Tid) -> Result<Found, Trouble> {
        let Ok(zoid) = i64::try_from(oid.0) else {
            return Ok(Found::Missing { first: None });
        };
        let row = self
            .client
            .query_opt(&self.stmts.load, &[&zoid, &i64_of_tid(at)])
            .await
            .map_err(map)?;
        if let Some(row) = row {
            let serial = tid_of(col(&row, 0)?)?;
            let state: Option<&[u8]> = row
                .try_get(1)
                .map_err(|e| Trouble::Hard(format!("object_state.state: {}", text(&e))))?;
            return Ok(match state {
                None => Found::Deleted { serial },
                // Copied into a recycled buffer (bufpool), and the row is
                // dropped at once: keeping rows (a `Bytes` made of the row)
                // was measured slower — the client's read buffer then
                // cannot be reused, and every block's buffer is fresh
                // memory to fault in.
                Some(s) => {
                    let mut v = crate::bufpool::take(s.len());
                    v.extend_from_slice(s);
                    Found::Data {
                        data: crate::bufpool::freeze(v),
                        serial,
                    }
                }
            });
        }
        let row = self
            .client
            .query_one(&self.stmts.first, &[&zoid])
            .await
            .map_err(map)?;
        let first: Option<i64> = col(&row, 0)?;
        Ok(Found::Missing {
            first: first.map(tid_of).transpose()?,
        })
    }

    /// The last transaction and its signature (None: no transaction yet).
    pub(crate) async fn last(&self) -> Result<Option<(Tid, String)>, Trouble> {
        let row = self
            .client
            .query_opt(&self.stmts.last, &[])
            .await
            .map_err(map)?;
        row.map(|r| Ok((tid_of(col(&r, 0)?)?, col(&r, 1)?)))
            .transpose()
    }

    /// The signature of the transaction at `tid` (None: there is none).
    pub(crate) async fn sig(&self, tid: Tid) -> Result<Option<String>, Trouble> {
        let row = self
            .client
            .query_opt(&self.stmts.sig, &[&i64_of_tid(tid)])
            .await
            .map_err(map)?;
        row.map(|r| col(&r, 0)).transpose()
    }

    /// The first `limit` transactions in `(after, upto]`, in tid order,
    /// with the objects each changed (in oid order).
    pub(crate) async fn commits(
        &self,
        after: Tid,
        upto: Tid,
        limit: i64,
    ) -> Result<Vec<TxnRow>, Trouble> {
        let rows = self
            .client
            .query(
                &self.stmts.commits,
                &[&i64_of_tid(after), &i64_of_tid(upto), &limit],
            )
            .await
            .map_err(map)?;
        let mut out: Vec<TxnRow> = Vec::new();
        for r in rows {
            let tid = tid_of(col(&r, 0)?)?;
            let zoid: Option<i64> = col(&r, 3)?;
            if out.last().is_none_or(|t| t.tid != tid) {
                if out.last().is_some_and(|t| t.tid > tid) || tid <= after {
                    return Err(Trouble::Hard(format!(
                        "transactions out of order: @{tid} after @{}",
                        out.last().map_or(after, |t| t.tid)
                    )));
                }
                out.push(TxnRow {
                    tid,
                    packed: col(&r, 1)?,
                    sig: col(&r, 2)?,
                    oids: Vec::new(),
                });
            }
            if let (Some(z), Some(t)) = (zoid, out.last_mut()) {
                t.oids.push(oid_of(z)?);
            }
        }
        Ok(out)
    }

    /// Every object that has a current revision, in oid order (for
    /// listing a database; not a query the daemon makes).
    pub(crate) async fn object_ids(&self) -> Result<Vec<Oid>, Trouble> {
        let rows = self
            .client
            .query("SELECT zoid FROM current_object ORDER BY zoid", &[])
            .await
            .map_err(map)?;
        rows.iter().map(|r| oid_of(col(r, 0)?)).collect()
    }

    /// The first transaction with tid ≥ `x`: (tid, packed).
    async fn first_from(&self, x: Tid) -> Result<Option<(Tid, bool)>, Trouble> {
        let row = self
            .client
            .query_opt(&self.stmts.first_from, &[&i64_of_tid(x)])
            .await
            .map_err(map)?;
        row.map(|r| Ok((tid_of(col(&r, 0)?)?, col(&r, 1)?)))
            .transpose()
    }

    /// The database's pack point: the last transaction a pack reached (or,
    /// while a pack runs, will reach), at least `known` (it only grows).
    /// Packs mark transactions packed oldest first, so the packed ones are
    /// the oldest: one probe when nothing changed, a binary search over
    /// tids up to `head` when it did.
    pub(crate) async fn pack_point(&self, known: Tid, head: Tid) -> Result<Tid, Trouble> {
        let mut lo = known;
        if let Some((t, true)) = self.first_from(Tid(known.0.saturating_add(1))).await? {
            lo = t;
            // Largest packed tid in [lo, head]: f(x) = first txn ≥ x.
            let mut hi = Tid(head.0.max(t.0).saturating_add(1));
            while hi.0 - lo.0 > 1 {
                let mid = Tid(lo.0 + (hi.0 - lo.0) / 2);
                match self.first_from(mid).await? {
                    Some((t, true)) if t < hi => lo = t,
                    _ => hi = mid,
                }
            }
        }
        if let Some(s) = &self.stmts.pack_running {
            match self.client.query_one(s, &[]).await {
                Ok(r) => {
                    let running: Option<i64> = col(&r, 0)?;
                    if let Some(t) = running {
                        lo = lo.max(tid_of(t)?);
                    }
                }
                Err(e) => match classify(&e) {
                    Trouble::Hard(why) => log::debug!("pack_state_tid: {why}"),
                    t => return Err(t),
                },
            }
        }
        Ok(lo)
    }
}
