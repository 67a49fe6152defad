//! NEO client storage, read-only (`neo://CLUSTER@MASTER[,MASTER…]`), that
//! rides through outages of its nodes.
//!
//! NEO spreads a database over a cluster: *masters* (one primary, the
//! others waiting to take over) keep the node list and the partition
//! table and tell clients about commits; *storage nodes* hold the data,
//! partition `oid % num_partitions` on `replicas + 1` of them. [`wire`]
//! has the packet format, [`conn`] one connection to one node; this
//! module is the client: a session with the primary master, connections
//! to storage nodes made when first needed, and the watch stream.
//!
//! # A session with the primary master
//!
//! We try the masters of the zurl in turn (and those a master names).
//! A secondary answers `NotPrimaryMaster` naming the primary: we go there
//! next. The primary answers our read-only identification with our node
//! id, then sends the node list and the partition table, which we keep
//! current from its notifications (`NotifyNodeInformation`,
//! `NotifyPartitionChanges`); we then ask its last transaction `R`. A
//! cluster that is not RUNNING answers `NOT_READY`: we wait (a loss until
//! it is). Storage nodes accept a client the master told them about: we
//! identify with the node id and id timestamp the master gave us. Each
//! session starts with no storage connection: a new session is a new
//! client node for the cluster.
//!
//! # Loads
//!
//! `AskObject(oid, before = at+1)` goes to a storage node with a readable
//! cell (UP_TO_DATE or FEEDING, node RUNNING) of the oid's partition,
//! chosen in turn among the replicas so that readers spread over them; any
//! number of loads are in flight on one connection at once. The answer's
//! SHA-1 is checked against its data (as sent, before zlib inflation). A
//! checksum mismatch, `NON_READABLE_CELL`, `NOT_READY` or a lost
//! connection makes the load try another replica; when every replica was
//! tried it waits for the cluster to change (a node back, a cell readable
//! again) up to [`Resilience::wait`], then fails with
//! [`Error::Unavailable`] — that load alone. Every replica answering a
//! wrong checksum is [`Error::Corrupt`]. `OID_DOES_NOT_EXIST` is
//! [`Error::NoObject`], `OID_NOT_FOUND` (no revision before `at+1`)
//! [`Error::NotYetCreated`]; an answer with no data and a zero checksum is
//! a deletion or an undone creation, [`Error::Deleted`]. A record made by
//! undo (with `data_serial`) still carries its data: served as is, with
//! the undo's tid as serial.
//!
//! # The stream
//!
//! As for ZEO: `last_tid` is the position of the invalidation stream —
//! `R` at first, then each transaction handed to the watchers. The
//! master's `InvalidateObjects(tid, oids)` become the commits (its oid
//! lists leave out deleted objects). A watch from before the current
//! position, and every catch-up, lists transactions with the storage
//! nodes' queries: `AskTIDsFrom(first, last, n, partition)` for each
//! partition (a transaction is stored in partition `tid % n`), merged,
//! then `AskTransactionInformation(tid)` for each one's oids (these
//! include deleted objects: a catch-up may name a few more oids than the
//! live stream would have — harmless for a reader, which only
//! invalidates more).
//!
//! # Losing the master (the contract of [`crate::storage`])
//!
//! A lost master connection (the master killed, failed over, the cluster
//! stopped) is a *loss*: logged, counted, and the supervisor opens a new
//! session, backing off, for as long as it takes. Before serving from it:
//!
//! - **Same database.** With `H` our position: `R ≥ H`, and the
//!   transaction at `H` exists on the storage nodes
//!   (`AskTransactionInformation`) and changed at least the objects we
//!   reported for it. Else the storage fails for good with
//!   [`Error::NotSameDatabase`] (EIO mode for the daemon).
//! - **Catch-up.** The transactions in `(H, R]` go to the watchers, then
//!   the invalidations the new session held after `R`.
//!
//! Losing a storage node's connection is not a loss of the storage: loads
//! move to another replica (logged and counted as
//! [`counter::STORAGE_LOST`]).
//!
//! # TLS
//!
//! `neos://…?ca=&cert=&key=`: every connection is TLS with both sides
//! authenticated against the cluster's CA, as NEO does it (the storage
//! crate's `tls` module, shared with ZEO's `zeos://`).
//!
//! # Locking
//!
//! `Client::st` is never held while calling into a connection (a
//! connection calls back into the client under its own state lock): the
//! order is connection state → `Client::st` → a watcher queue.

mod conn;
pub mod wire;

use super::tls::{NameCheck, TlsClient};

/// The TLS setup of a `neos://` zurl: trust `ca`, present `cert` with
/// `key`; host names are not checked (NEO does not). Err: which file is
/// wrong, and why.
pub fn tls_config(ca: &Path, cert: &Path, key: &Path) -> Result<TlsClient, String> {
    super::tls::client_config(ca, Some((cert, key)), NameCheck::No)
}

use super::session::{self, Backoff, Names, Phase, Session, CATCHUP, GIVEUP, LOST, RECONNECT};
use super::{counter, Commit, Error, Loaded, Resilience, Storage, Watcher};
use crate::types::{Oid, Tid};
use bytes::Bytes;
use conn::{CallError, Conn, ConnOpts, Sink};
use parking_lot::{Condvar, Mutex};
use rmpv::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use wire::{code, errcode, Packet};

/// Connection parameters.
#[derive(Debug, Clone)]
pub struct NeoOptions {
    /// Limit for connecting and for the handshake.
    pub connect_timeout: Duration,
    /// A request not answered within this fails the connection.
    pub request_timeout: Duration,
    /// An idle connection is probed (`Ping`) this often.
    pub keepalive: Duration,
    /// Largest packet accepted from a node (NEO/py's own limit is 64 MiB).
    pub max_packet: usize,
    /// Riding through outages.
    pub resilience: Resilience,
    /// TLS (`neos://`, made by [`tls_config`]), or plain TCP.
    pub tls: Option<TlsClient>,
}

impl Default for NeoOptions {
    fn default() -> Self {
        NeoOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(10),
            max_packet: 128 << 20,
            resilience: Resilience::default(),
            tls: None,
        }
    }
}

/// The cluster as the primary master describes it.
#[derive(Default)]
struct Cluster {
    nodes: HashMap<i32, wire::NodeInfo>,
    /// `rows[partition]`: (storage nid, cell state).
    rows: Vec<Vec<(i32, i64)>>,
    state: Option<i64>,
}

impl Cluster {
    /// Applies a notification of the master; Err: malformed.
    fn apply(&mut self, p: &Packet) -> Result<(), String> {
        let bad = || format!("malformed packet 0x{:04x}: {:?}", p.code, p.args);
        match p.code {
            code::NOTIFY_NODE_INFORMATION => {
                for n in wire::node_information_of(&p.args).ok_or_else(bad)? {
                    if let Some(nid) = n.nid {
                        self.nodes.insert(nid, n);
                    }
                }
            }
            code::SEND_PARTITION_TABLE => {
                self.rows = wire::partition_table_of(&p.args).ok_or_else(bad)?.1;
            }
            code::NOTIFY_PARTITION_CHANGES => {
                for (off, nid, state) in wire::partition_changes_of(&p.args).ok_or_else(bad)?.1 {
                    let Some(row) = self.rows.get_mut(off as usize) else {
                        return Err(format!(
                            "partition change of partition {off}, beyond the table"
                        ));
                    };
                    row.retain(|c| c.0 != nid);
                    // DISCARDED (4): the cell is gone.
                    if state != 4 {
                        row.push((nid, state));
                    }
                }
            }
            code::NOTIFY_CLUSTER_INFORMATION => {
                self.state = Some(
                    p.args
                        .first()
                        .and_then(|v| wire::enum_of(v, wire::ext::CLUSTER_STATES))
                        .ok_or_else(bad)?,
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Storage nodes with a readable cell of `part`: (nid, host, port).
    fn readable(&self, part: usize) -> Vec<(i32, String, u16)> {
        let Some(row) = self.rows.get(part) else {
            return vec![];
        };
        row.iter()
            .filter(|(_, s)| *s == wire::CELL_UP_TO_DATE || *s == wire::CELL_FEEDING)
            .filter_map(|(nid, _)| {
                let n = self.nodes.get(nid)?;
                let (h, p) = n.addr.clone()?;
                (n.state == wire::STATE_RUNNING).then_some((*nid, h, p))
            })
            .collect()
    }
}

/// How messages name a loss.
const NAMES: Names = Names {
    lost: "master connection lost",
    peer: "cluster",
};

struct ClientState {
    /// Phase (`Up` with the master connection of the session), stream
    /// position, watchers.
    s: Session<Arc<Conn>>,
    /// The master connection whose notifications count (the serving one, or
    /// the one being set up).
    master_id: u64,
    /// Our node id and id timestamp in the current session.
    me: Option<(i32, Option<f64>)>,
    cluster: Cluster,
    storages: HashMap<i32, Arc<Conn>>,
    /// Masters to try, the zurl's first.
    masters: Vec<(String, u16)>,
}

struct Client {
    url: String,
    name: String,
    opts: NeoOptions,
    copts: ConnOpts,
    st: Mutex<ClientState>,
    changed: Condvar,
    counters: [AtomicU64; 6],
    /// Turns replicas for spreading reads.
    rr: AtomicUsize,
    /// A read gave up for want of a readable cell since the last that
    /// succeeded: only the first give-up of such an outage is logged.
    gave_up: AtomicBool,
}

const STORAGE_LOST: usize = 4;
const RETRY: usize = 5;

/// A NEO cluster, opened read-only.
pub struct NeoStorage {
    client: Arc<Client>,
    instance: u64,
}

fn io_err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

/// Whether a request runs for a caller (waits for the session) or while a
/// session is set up (fails at once).
#[derive(Clone, Copy)]
enum Mode {
    Serve(Instant),
    Setup(u64),
}

/// What a request's answer means for [`Client::ask_read`].
enum Verdict<T> {
    Done(T),
    /// This node cannot answer it (why): try another replica.
    Another(String),
    /// This node answered something no replica may: a checksum mismatch.
    Corrupt(String),
    Fail(Error),
}

/// Why a session could not be set up.
enum SetupError {
    /// Try later.
    Transient(String),
    /// Not our database.
    NotSame(String),
}

impl NeoStorage {
    /// Opens the cluster `name` through `masters`; `url` is the zurl (for
    /// messages). Waits up to the resilience wait for a cluster that is
    /// not RUNNING yet; a cluster whose masters cannot be reached at all is
    /// an error now (later losses are ridden through).
    pub fn open_with(
        name: &str,
        masters: Vec<(String, u16)>,
        url: &str,
        opts: NeoOptions,
    ) -> Result<NeoStorage, Error> {
        if masters.is_empty() {
            return Err(Error::BadUrl {
                zurl: url.into(),
                why: "no master".into(),
            });
        }
        let copts = ConnOpts {
            connect_timeout: opts.connect_timeout,
            request_timeout: opts.request_timeout,
            keepalive: opts.keepalive,
            max_packet: opts.max_packet,
            tls: opts.tls.clone(),
        };
        let client = Arc::new(Client {
            url: url.to_string(),
            name: name.to_string(),
            opts,
            copts,
            st: Mutex::new(ClientState {
                s: Session::new(Phase::down("not connected yet".into(), true)),
                master_id: 0,
                me: None,
                cluster: Cluster::default(),
                storages: HashMap::new(),
                masters,
            }),
            changed: Condvar::new(),
            counters: Default::default(),
            rr: AtomicUsize::new(0),
            gave_up: AtomicBool::new(false),
        });
        let start = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match client.session(true) {
                Ok(_) => break,
                Err((SetupError::Transient(why), reachable)) => {
                    if !reachable || start.elapsed() >= client.opts.resilience.wait {
                        client.close();
                        return Err(client.io_error(
                            "connect to the primary master",
                            io_err(io::ErrorKind::ConnectionRefused, why),
                        ));
                    }
                }
                Err((SetupError::NotSame(why), _)) => {
                    client.close();
                    return Err(Error::NotSameDatabase {
                        storage: client.url.clone(),
                        why,
                    });
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(client.opts.resilience.backoff_max);
        }
        let weak = Arc::downgrade(&client);
        std::thread::Builder::new()
            .name("neo-supervisor".into())
            .spawn(move || supervise(weak))
            .map_err(|e| client.io_error("spawn supervisor thread", e))?;
        Ok(NeoStorage {
            client,
            instance: super::new_instance_id(),
        })
    }

    /// Why the storage is not serving now, if it is not.
    pub fn failure(&self) -> Option<String> {
        self.client.st.lock().s.failure(NAMES.lost)
    }

    /// The number of partitions and, for each, the nids of its readable
    /// cells (for tests).
    pub fn readable_cells(&self) -> Vec<Vec<i32>> {
        let st = self.client.st.lock();
        (0..st.cluster.rows.len())
            .map(|p| st.cluster.readable(p).into_iter().map(|c| c.0).collect())
            .collect()
    }

    /// Every object that has data as of `at` (not deleted), in order, as
    /// the storage nodes list them (`AskOIDsFrom`, partition by
    /// partition): for `wcfsd ls`, which needs every oid and has no index
    /// to read them from.
    pub fn object_ids(&self, at: Tid) -> Result<Vec<Oid>, Error> {
        self.client.object_ids(at, Mode::Serve(Instant::now()))
    }

    /// The transactions in `(after, upto]` as the storage nodes list them
    /// (for tests and the watch backlog).
    pub fn transactions(&self, after: Tid, upto: Tid) -> Result<Vec<Commit>, Error> {
        self.client
            .history(after, upto, Mode::Serve(Instant::now()))
    }
}

impl Client {
    fn io_error(&self, op: &str, e: io::Error) -> Error {
        Error::Io {
            storage: self.url.clone(),
            op: op.to_string(),
            source: e,
        }
    }

    fn count(&self, which: usize, n: u64) {
        self.counters[which].fetch_add(n, Ordering::Relaxed);
    }

    fn conn_id(&self) -> u64 {
        self.st.lock().s.next_conn()
    }

    fn sink(self: &Arc<Self>) -> Weak<dyn Sink> {
        Arc::downgrade(self) as Weak<dyn Sink>
    }

    /// Drops every storage connection (a new session is a new client
    /// node for the cluster).
    fn drop_storages(&self, st: &mut ClientState) -> Vec<Arc<Conn>> {
        st.storages.drain().map(|(_, c)| c).collect()
    }

    /// Sets up a session with the primary master and, unless `initial`,
    /// checks it serves our history and catches up; then serves through
    /// it. Err: (why, whether any master answered at all).
    fn session(self: &Arc<Self>, initial: bool) -> Result<(), (SetupError, bool)> {
        let mut tried: HashSet<(String, u16)> = HashSet::new();
        let mut queue: VecDeque<(String, u16)> = self.st.lock().masters.iter().cloned().collect();
        let mut errors = Vec::new();
        let mut reachable = false;
        while let Some(addr) = queue.pop_front() {
            if !tried.insert(addr.clone()) {
                continue;
            }
            let id = self.conn_id();
            let old = {
                let mut st = self.st.lock();
                st.master_id = id;
                st.me = None;
                st.cluster = Cluster::default();
                self.drop_storages(&mut st)
            };
            for c in old {
                c.fail("new master session".into());
            }
            let conn = match Conn::connect(&addr.0, addr.1, &self.copts, id, self.sink()) {
                Ok(c) => c,
                Err((op, e)) => {
                    errors.push(format!("{}:{}: {op}: {e}", addr.0, addr.1));
                    continue;
                }
            };
            reachable = true;
            let r = conn.call(
                code::REQUEST_IDENTIFICATION,
                wire::request_identification(None, &self.name, None, true),
            );
            let accept = match r {
                Ok(p) => p,
                Err(e) => {
                    // A secondary names the primary, then closes.
                    let mut redirected = false;
                    for p in conn.take_held() {
                        if p.code == code::NOT_PRIMARY_MASTER {
                            if let Some((primary, known)) = wire::not_primary_of(&p.args) {
                                let mut st = self.st.lock();
                                for k in &known {
                                    if !st.masters.contains(k) {
                                        st.masters.push(k.clone());
                                    }
                                }
                                drop(st);
                                if let Some(pm) = primary {
                                    tried.remove(&pm);
                                    queue.push_front(pm);
                                    redirected = true;
                                }
                                queue.extend(known);
                            }
                        }
                    }
                    conn.fail("identification refused".into());
                    let why = match &e {
                        CallError::Peer(errcode::NOT_READY, m) => {
                            format!("cluster not ready: {m}")
                        }
                        CallError::Peer(c, m) => format!("identification refused: error {c}: {m}"),
                        CallError::Conn(w) if redirected => format!("not the primary master ({w})"),
                        CallError::Conn(w) => w.clone(),
                    };
                    errors.push(format!("{}:{}: {why}", addr.0, addr.1));
                    continue;
                }
            };
            match self.setup(&conn, &accept, initial) {
                Ok(()) => return Ok(()),
                Err(SetupError::Transient(why)) => {
                    conn.fail(format!("session setup failed: {why}"));
                    errors.push(format!("{}:{}: {why}", addr.0, addr.1));
                    // The primary answered: no other master would.
                    break;
                }
                Err(e) => {
                    conn.fail("not the same database".into());
                    return Err((e, true));
                }
            }
        }
        Err((SetupError::Transient(errors.join("; ")), reachable))
    }

    /// The primary accepted us on `conn`: learn the cluster, check and
    /// catch up, go live.
    fn setup(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        accept: &Packet,
        initial: bool,
    ) -> Result<(), SetupError> {
        let t = |w: String| SetupError::Transient(w);
        let acc = wire::accept_of(&accept.args)
            .ok_or_else(|| t(format!("malformed AcceptIdentification {:?}", accept.args)))?;
        if acc.node_type != wire::NODE_MASTER {
            return Err(t(format!(
                "identified as node type {}, not a master",
                acc.node_type
            )));
        }
        let me = acc
            .your_nid
            .ok_or_else(|| t("the master gave us no node id".into()))?;
        let last = conn
            .call(code::ASK_LAST_TRANSACTION, vec![])
            .map_err(|e| t(format!("AskLastTransaction: {e}")))?;
        let r = last
            .args
            .first()
            .and_then(wire::tid_of)
            .ok_or_else(|| t(format!("malformed AnswerLastTransaction {:?}", last.args)))?;
        // What came before the answer: the node list, the partition
        // table, maybe invalidations.
        let mut held_inval = Vec::new();
        let held = conn.take_held();
        {
            let mut st = self.st.lock();
            if st.master_id != conn.id {
                return Err(t("superseded".into()));
            }
            for p in held {
                match p.code {
                    code::INVALIDATE_OBJECTS => held_inval.push(p),
                    code::STOP_OPERATION => return Err(t("the cluster is stopping".into())),
                    _ => st.cluster.apply(&p).map_err(t)?,
                }
            }
            let ts = st.cluster.nodes.get(&me).and_then(|n| n.id_timestamp);
            st.me = Some((me, ts));
            if st.cluster.rows.is_empty() {
                return Err(t("no partition table from the master".into()));
            }
        }
        let (h, oids) = {
            let st = self.st.lock();
            (st.s.last_tid, st.s.last_oids.clone())
        };
        let mut catchup = Vec::new();
        if !initial {
            if r < h {
                return Err(SetupError::NotSame(format!(
                    "the cluster's last transaction is {r}, older than {h} we served (restored from an older backup?)"
                )));
            }
            let mode = Mode::Setup(conn.id);
            let same = if h == Tid::ZERO {
                Ok(Some(vec![]))
            } else {
                self.transaction_oids(h, mode)
            };
            match same {
                Ok(Some(got)) => {
                    if let Some(want) = &oids {
                        let got: HashSet<_> = got.into_iter().collect();
                        if !want.iter().all(|o| got.contains(o)) {
                            return Err(SetupError::NotSame(format!(
                                "its transaction {h} changed other objects than the one we served"
                            )));
                        }
                    }
                }
                Ok(None) => {
                    return Err(SetupError::NotSame(format!(
                        "transaction {h}, which we served, is not in its history"
                    )))
                }
                Err(e) => return Err(t(format!("same-database check: {e}"))),
            }
            catchup = self
                .history(h, r, mode)
                .map_err(|e| t(format!("catch-up: {e}")))?;
        }
        let n = catchup.len();
        {
            let mut st = self.st.lock();
            if st.master_id != conn.id || matches!(st.s.phase, Phase::Closed | Phase::Failed(_)) {
                return Err(t("superseded".into()));
            }
            if initial {
                st.s.last_tid = r;
            }
            for c in catchup {
                st.s.deliver(c);
            }
            for p in held_inval {
                if let Some((tid, oids)) = wire::invalidation_of(&p.args) {
                    if tid > r && tid > st.s.last_tid {
                        st.s.deliver(Commit { tid, oids });
                    }
                }
            }
            st.s.live_at = r;
            st.s.phase = Phase::Up(conn.clone());
            if !initial {
                // Counted before anyone can be served through it (a caller
                // seeing the storage back sees it counted).
                self.count(RECONNECT, 1);
                self.count(CATCHUP, n as u64);
            }
        }
        let r2 = r;
        conn.go_live(|p| {
            p.code == code::INVALIDATE_OBJECTS
                && wire::invalidation_of(&p.args).is_some_and(|(tid, _)| tid <= r2)
        })
        .map_err(|w| t(format!("lost while going live: {w}")))?;
        self.changed.notify_all();
        if !initial {
            log::info!(
                "{}: reconnected to the primary master {}; caught up {n} transaction(s) ({h}, {r}]",
                self.url,
                conn.addr
            );
        }
        Ok(())
    }

    /// A connection to storage node `nid`, identified (made if needed).
    fn storage_conn(
        self: &Arc<Self>,
        nid: i32,
        host: &str,
        port: u16,
        session: u64,
    ) -> Result<Arc<Conn>, String> {
        let me = {
            let st = self.st.lock();
            if st.master_id != session {
                return Err("session replaced".into());
            }
            if let Some(c) = st.storages.get(&nid) {
                if !c.is_dead() {
                    return Ok(c.clone());
                }
            }
            st.me.ok_or("no session")?
        };
        let id = self.conn_id();
        let conn = Conn::connect(host, port, &self.copts, id, self.sink())
            .map_err(|(op, e)| format!("storage node {nid} at {host}:{port}: {op}: {e}"))?;
        let r = conn.call(
            code::REQUEST_IDENTIFICATION,
            wire::request_identification(Some(me.0), &self.name, me.1, false),
        );
        let fail = |why: String| {
            conn.fail(why.clone());
            Err(format!("storage node {nid} at {host}:{port}: {why}"))
        };
        match r {
            Ok(p) => match wire::accept_of(&p.args) {
                Some(a) if a.node_type == wire::NODE_STORAGE => {}
                _ => return fail(format!("identification answered {:?}", p.args)),
            },
            Err(e) => return fail(format!("identification: {e}")),
        }
        if let Err(w) = conn.go_live(|_| false) {
            return fail(w);
        }
        let mut st = self.st.lock();
        if st.master_id != session {
            drop(st);
            conn.fail("session replaced".into());
            return Err("session replaced".into());
        }
        if let Some(c) = st.storages.get(&nid) {
            if !c.is_dead() {
                let c = c.clone();
                drop(st);
                conn.fail("duplicate".into());
                return Ok(c);
            }
        }
        st.storages.insert(nid, conn.clone());
        Ok(conn)
    }

    /// The current session, waiting for one as `mode` says. Err:
    /// Unavailable past the wait (why the last attempt failed in
    /// `what`), NotSameDatabase, Closed.
    fn wait_session(&self, op: &str, mode: Mode) -> Result<u64, Error> {
        let start = match mode {
            Mode::Setup(s) => {
                let st = self.st.lock();
                return if st.master_id == s {
                    Ok(s)
                } else {
                    Err(Error::Closed(format!("{}: session replaced", self.url)))
                };
            }
            Mode::Serve(start) => start,
        };
        let c = session::wait_up(
            &self.st,
            &self.changed,
            |st| &mut st.s,
            &self.url,
            &NAMES,
            &self.opts.resilience,
            &self.counters[GIVEUP],
            op,
            start,
        )?;
        Ok(c.id)
    }

    /// Sends `code(args)` to a storage node with a readable cell of
    /// `part`, another replica each time `judge` says so, until it has a
    /// verdict. Waits for the cluster as `mode` says.
    fn ask_read<T>(
        self: &Arc<Self>,
        part_of: impl Fn(usize) -> usize,
        op: &str,
        mode: Mode,
        code: u16,
        args: Vec<Value>,
        judge: impl Fn(Result<Packet, CallError>) -> Verdict<T>,
    ) -> Result<T, Error> {
        let mut tried: HashSet<i32> = HashSet::new();
        let mut why = String::from("no readable cell");
        let mut corrupt: Option<String> = None;
        loop {
            let session = self.wait_session(op, mode)?;
            let cand = {
                let st = self.st.lock();
                if st.master_id != session {
                    continue;
                }
                let np = st.cluster.rows.len();
                if np == 0 {
                    Vec::new()
                } else {
                    st.cluster.readable(part_of(np))
                }
            };
            let left: Vec<_> = cand.iter().filter(|c| !tried.contains(&c.0)).collect();
            if left.is_empty() {
                if let Some(w) = corrupt.take() {
                    return Err(Error::Corrupt {
                        storage: self.url.clone(),
                        why: format!("{op}: {w}"),
                    });
                }
                // Every replica tried: wait for the cluster to change.
                let deadline = match mode {
                    Mode::Setup(_) => {
                        return Err(self.io_error(op, io_err(io::ErrorKind::NotConnected, why)));
                    }
                    Mode::Serve(start) => start + self.opts.resilience.wait,
                };
                let now = Instant::now();
                if now >= deadline {
                    self.count(GIVEUP, 1);
                    if !self.gave_up.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "{}: no storage node could answer for {:?}: reads give up ({op}: {why})",
                            self.url,
                            self.opts.resilience.wait
                        );
                    }
                    return Err(Error::Unavailable {
                        storage: self.url.clone(),
                        what: format!("{op}: {why}"),
                        waited: match mode {
                            Mode::Serve(s) => s.elapsed(),
                            Mode::Setup(_) => Duration::ZERO,
                        },
                    });
                }
                let mut st = self.st.lock();
                self.changed
                    .wait_until(&mut st, (now + Duration::from_millis(100)).min(deadline));
                tried.clear();
                continue;
            }
            let i = self.rr.fetch_add(1, Ordering::Relaxed) % left.len();
            let (nid, host, port) = left[i].clone();
            let conn = match self.storage_conn(nid, &host, port, session) {
                Ok(c) => c,
                Err(w) => {
                    why = w;
                    tried.insert(nid);
                    self.count(RETRY, 1);
                    continue;
                }
            };
            match judge(conn.call(code, args.clone())) {
                Verdict::Done(t) => {
                    self.gave_up.store(false, Ordering::Relaxed);
                    return Ok(t);
                }
                Verdict::Another(w) => {
                    why = format!("storage node {nid} at {}: {w}", conn.addr);
                    tried.insert(nid);
                    self.count(RETRY, 1);
                }
                Verdict::Corrupt(w) => {
                    let w = format!("storage node {nid} at {}: {w}", conn.addr);
                    log::warn!("{}: {op}: {w}; trying another replica", self.url);
                    corrupt = Some(w.clone());
                    why = w;
                    tried.insert(nid);
                    self.count(RETRY, 1);
                }
                Verdict::Fail(e) => return Err(e),
            }
        }
    }

    fn load(self: &Arc<Self>, oid: Oid, at: Tid, start: Instant) -> Result<Loaded, Error> {
        let op = format!("load {oid}@{at}");
        let url = self.url.clone();
        self.ask_read(
            |np| (oid.0 % np as u64) as usize,
            &op,
            Mode::Serve(start),
            code::ASK_OBJECT,
            vec![
                wire::oid_value(oid),
                Value::Nil,
                wire::tid_value(Tid(at.0.saturating_add(1))),
            ],
            |r| judge_object(&url, oid, at, r),
        )
    }

    /// The oids of transaction `tid` (None: no such transaction).
    fn transaction_oids(self: &Arc<Self>, tid: Tid, mode: Mode) -> Result<Option<Vec<Oid>>, Error> {
        let op = format!("transaction information {tid}");
        let url = self.url.clone();
        self.ask_read(
            |np| (tid.0 % np as u64) as usize,
            &op,
            mode,
            code::ASK_TRANSACTION_INFORMATION,
            vec![wire::tid_value(tid)],
            |r| match r {
                Ok(p) => match wire::transaction_information_of(&p.args) {
                    Some((t, oids)) if t == tid => Verdict::Done(Some(oids)),
                    _ => Verdict::Another(format!("malformed answer {:?}", p.args)),
                },
                Err(CallError::Peer(errcode::TID_NOT_FOUND, _)) => Verdict::Done(None),
                Err(e) => retry_or_fail(&url, &op, e),
            },
        )
    }

    /// See [`NeoStorage::object_ids`].
    fn object_ids(self: &Arc<Self>, at: Tid, mode: Mode) -> Result<Vec<Oid>, Error> {
        const CHUNK: u64 = 1000;
        let np = {
            let session = self.wait_session("list objects", mode)?;
            let st = self.st.lock();
            if st.master_id != session {
                return Err(Error::Closed(format!("{}: session replaced", self.url)));
            }
            st.cluster.rows.len()
        };
        let url = self.url.clone();
        let mut all = Vec::new();
        for part in 0..np {
            let mut from = Oid(part as u64);
            loop {
                let op = format!("list objects @{at} of partition {part} from {from}");
                let (next, got) = self.ask_read(
                    |_| part,
                    &op,
                    mode,
                    code::ASK_OIDS_FROM,
                    vec![
                        Value::from(part as u64),
                        Value::from(CHUNK),
                        wire::oid_value(from),
                        wire::tid_value(at),
                    ],
                    |r| match r {
                        Ok(p) => match wire::oids_from_of(&p.args) {
                            Some(v) => Verdict::Done(v),
                            None => Verdict::Another(format!("malformed answer {:?}", p.args)),
                        },
                        Err(e) => retry_or_fail(&url, &op, e),
                    },
                )?;
                // In order, in this partition, from where we asked; the
                // next chunk starts after them (so the walk ends).
                let mut prev: Option<Oid> = None;
                for &o in &got {
                    if o < from || prev.is_some_and(|p| o <= p) || o.0 % np as u64 != part as u64 {
                        return Err(Error::Corrupt {
                            storage: url.clone(),
                            why: format!("{op}: object {o} out of order or partition"),
                        });
                    }
                    prev = Some(o);
                }
                all.extend(got);
                match next {
                    None => break,
                    Some(n) if n > from && prev.is_none_or(|p| n > p) => from = n,
                    Some(n) => {
                        return Err(Error::Corrupt {
                            storage: url.clone(),
                            why: format!("{op}: the next chunk starts at {n}, not after it"),
                        })
                    }
                }
            }
        }
        all.sort();
        Ok(all)
    }

    /// The transactions in `(after, upto]`, with their oids, in order.
    fn history(self: &Arc<Self>, after: Tid, upto: Tid, mode: Mode) -> Result<Vec<Commit>, Error> {
        if upto <= after {
            return Ok(vec![]);
        }
        const CHUNK: u64 = 1000;
        let np = {
            let session = self.wait_session("list transactions", mode)?;
            let st = self.st.lock();
            if st.master_id != session {
                return Err(Error::Closed(format!("{}: session replaced", self.url)));
            }
            st.cluster.rows.len()
        };
        let url = self.url.clone();
        let mut tids: Vec<Tid> = Vec::new();
        for part in 0..np {
            let mut from = Tid(after.0 + 1);
            loop {
                let op = format!("list transactions [{from}, {upto}] of partition {part}");
                let got: Vec<Tid> = self.ask_read(
                    |_| part,
                    &op,
                    mode,
                    code::ASK_TIDS_FROM,
                    vec![
                        wire::tid_value(from),
                        wire::tid_value(upto),
                        Value::from(CHUNK),
                        Value::from(part as u64),
                    ],
                    |r| match r {
                        Ok(p) => match wire::tids_of(&p.args) {
                            Some(v) => Verdict::Done(v),
                            None => Verdict::Another(format!("malformed answer {:?}", p.args)),
                        },
                        Err(e) => retry_or_fail(&url, &op, e),
                    },
                )?;
                let n = got.len() as u64;
                let mut prev = Tid(from.0.wrapping_sub(1));
                for &t in &got {
                    if t <= prev || t > upto || t.0 % np as u64 != part as u64 {
                        return Err(Error::Corrupt {
                            storage: url.clone(),
                            why: format!("{op}: transaction {t} out of order or range"),
                        });
                    }
                    prev = t;
                }
                tids.extend(got);
                if n < CHUNK || prev >= upto {
                    break;
                }
                from = Tid(prev.0 + 1);
            }
        }
        tids.sort();
        tids.dedup();
        let mut out = Vec::with_capacity(tids.len());
        for tid in tids {
            match self.transaction_oids(tid, mode)? {
                Some(oids) => out.push(Commit { tid, oids }),
                None => {
                    return Err(Error::Corrupt {
                        storage: url.clone(),
                        why: format!("transaction {tid} listed but not found"),
                    })
                }
            }
        }
        Ok(out)
    }

    fn finish(&self, phase: Phase<Arc<Conn>>, err: impl Fn() -> Error) {
        let conns = {
            let mut st = self.st.lock();
            let old = st.s.finish(phase, err);
            st.master_id = 0;
            let mut conns = self.drop_storages(&mut st);
            conns.extend(old);
            conns
        };
        self.changed.notify_all();
        for c in conns {
            c.fail("storage closed".into());
        }
    }

    fn close(&self) {
        let url = self.url.clone();
        self.finish(Phase::Closed, || Error::Closed(url.clone()));
    }

    fn note_attempt(&self, why: String) {
        self.st.lock().s.note_attempt(why);
    }
}

/// A request failed on one node: another replica may do (a lost
/// connection, a cell not readable, a node not ready), else the error.
fn retry_or_fail<T>(url: &str, op: &str, e: CallError) -> Verdict<T> {
    match e {
        CallError::Conn(w) => Verdict::Another(w),
        CallError::Peer(c @ (errcode::NON_READABLE_CELL | errcode::NOT_READY), m) => {
            Verdict::Another(format!("error {c}: {m}"))
        }
        CallError::Peer(c, m) => Verdict::Fail(Error::Io {
            storage: url.to_string(),
            op: op.to_string(),
            source: io_err(io::ErrorKind::Other, format!("error {c}: {m}")),
        }),
    }
}

/// What an answer to `AskObject(oid, before=at+1)` means.
fn judge_object(url: &str, oid: Oid, at: Tid, r: Result<Packet, CallError>) -> Verdict<Loaded> {
    let p = match r {
        Ok(p) => p,
        Err(CallError::Peer(errcode::OID_DOES_NOT_EXIST, _)) => {
            return Verdict::Fail(Error::NoObject { oid })
        }
        Err(CallError::Peer(errcode::OID_NOT_FOUND, _)) => {
            return Verdict::Fail(Error::NotYetCreated { oid, at })
        }
        Err(e) => return retry_or_fail(url, &format!("load {oid}@{at}"), e),
    };
    let Some(o) = wire::object_of(p) else {
        return Verdict::Another("malformed AnswerObject".into());
    };
    if o.oid != oid {
        return Verdict::Another(format!("answered object {} for {oid}", o.oid));
    }
    if o.serial > at {
        return Verdict::Another(format!("answered data of @{}, newer than @{at}", o.serial));
    }
    if o.data.is_empty() && o.checksum == wire::ZERO_HASH {
        return Verdict::Fail(Error::Deleted {
            oid,
            at,
            serial: o.serial,
        });
    }
    let sum = wire::sha1(&o.data);
    if o.checksum != sum {
        return Verdict::Corrupt(format!(
            "checksum mismatch for {oid}@{}: got {:02x?}, data hashes to {:02x?}",
            o.serial, o.checksum, sum
        ));
    }
    let data = match o.compression {
        None | Some(0) => o.data,
        Some(1) => {
            let mut out = Vec::with_capacity(o.data.len() * 4);
            if let Err(e) = flate2::read::ZlibDecoder::new(&o.data[..]).read_to_end(&mut out) {
                return Verdict::Corrupt(format!("zlib data of {oid}@{}: {e}", o.serial));
            }
            Bytes::from(out)
        }
        Some(c) => {
            return Verdict::Fail(Error::Corrupt {
                storage: url.to_string(),
                why: format!("{oid}@{}: unknown compression {c}", o.serial),
            })
        }
    };
    Verdict::Done(Loaded {
        data,
        serial: o.serial,
    })
}

impl Sink for Client {
    fn notified(&self, conn: u64, p: Packet) -> Result<(), String> {
        let mut st = self.st.lock();
        if st.master_id != conn {
            return Ok(()); // a storage node's (nothing for us) or an old session's
        }
        match p.code {
            code::INVALIDATE_OBJECTS => {
                let (tid, oids) = wire::invalidation_of(&p.args)
                    .ok_or_else(|| format!("malformed InvalidateObjects {:?}", p.args))?;
                st.s.invalidated(Commit { tid, oids })?;
            }
            code::STOP_OPERATION => return Err("the cluster is stopping".into()),
            _ => {
                st.cluster.apply(&p)?;
                drop(st);
                // A node or a cell may be back: waiting loads look again.
                self.changed.notify_all();
            }
        }
        Ok(())
    }

    fn lost(&self, conn: u64, why: String) {
        let mut st = self.st.lock();
        if let Some((&nid, _)) = st.storages.iter().find(|(_, c)| c.id == conn) {
            st.storages.remove(&nid);
            drop(st);
            self.count(STORAGE_LOST, 1);
            log::warn!("{}: storage node {nid}: connection lost: {why}", self.url);
            self.changed.notify_all();
            return;
        }
        if !matches!(&st.s.phase, Phase::Up(c) if c.id == conn) {
            return;
        }
        st.s.phase = Phase::down(why.clone(), false);
        let old = self.drop_storages(&mut st);
        drop(st);
        for c in old {
            c.fail("master connection lost".into());
        }
        self.count(LOST, 1);
        log::warn!("{}: master connection lost: {why}; reconnecting", self.url);
        self.changed.notify_all();
    }
}

/// The supervisor: a new session after every loss, until the storage goes.
fn supervise(client: Weak<Client>) {
    let _ = nix::sys::signal::SigSet::all().thread_block();
    loop {
        let since = {
            let Some(c) = client.upgrade() else { return };
            let Some(since) = session::wait_lost(&c.st, &c.changed, |st| &mut st.s) else {
                return;
            };
            since
        };
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            let Some(c) = client.upgrade() else { return };
            attempts += 1;
            match c.session(false) {
                Ok(()) => {
                    log::info!(
                        "{}: serving again after {:.1?} ({attempts} attempt(s))",
                        c.url,
                        since.elapsed()
                    );
                    break;
                }
                Err((SetupError::Transient(why), _)) => c.note_attempt(why),
                Err((SetupError::NotSame(why), _)) => {
                    log::error!("{}: not the same database any more: {why}", c.url);
                    let url = c.url.clone();
                    c.finish(Phase::Failed(why.clone()), || Error::NotSameDatabase {
                        storage: url.clone(),
                        why: why.clone(),
                    });
                    return;
                }
            }
            if matches!(c.st.lock().s.phase, Phase::Closed | Phase::Failed(_)) {
                return;
            }
            let pause = backoff.next(c.opts.resilience.backoff_max);
            drop(c);
            std::thread::sleep(pause);
        }
    }
}

impl Drop for NeoStorage {
    fn drop(&mut self) {
        self.client.close();
    }
}

impl Storage for NeoStorage {
    fn url(&self) -> &str {
        &self.client.url
    }

    fn instance_id(&self) -> u64 {
        self.instance
    }

    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        self.client.load(oid, at, Instant::now())
    }

    fn last_tid(&self) -> Result<Tid, Error> {
        self.client.st.lock().s.last_tid(&self.client.url)
    }

    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>, Error> {
        let c = &self.client;
        session::watch(
            &c.st,
            |st| &mut st.s,
            &c.url,
            after,
            |after, from| c.history(after, from, Mode::Serve(Instant::now())),
        )
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let [lost, reconnect, catchup, giveup] = session::COMMON;
        session::counters(
            &self.client.counters,
            &[
                lost,
                reconnect,
                catchup,
                giveup,
                counter::STORAGE_LOST,
                counter::REPLICA_RETRY,
            ],
        )
    }

    fn prefetch_depth(&self) -> usize {
        8
    }
}
