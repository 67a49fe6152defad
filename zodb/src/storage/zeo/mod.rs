//! ZEO client storage, read-only (`zeo://HOST:PORT`).
//!
//! One TCP connection to a ZEO server (`runzeo` of the `ZEO` Python
//! package, protocol 5, pickle or msgpack marshalling — whichever the
//! server announces; [`wire`] has the format). After the handshake we
//! `register` read-only with storage `"1"`; the reply is the server's last
//! tid, and from then on the server pushes every committed transaction to
//! us as `invalidateTransaction(tid, oids)`.
//!
//! # Design
//!
//! - **One reader thread** per connection receives every frame. Replies are
//!   matched to their callers by message id; invalidations advance the
//!   connection's `last_tid` and are appended to the queue of every live
//!   watcher. Callers send their request themselves (under the writer
//!   lock) and wait for their own reply, so any number of threads have
//!   requests in flight on the one connection at once (pipelining); the
//!   server answers them in order.
//! - **`last_tid` is the invalidation stream's position**, not a round trip
//!   to the server: it is the register reply, then each invalidation's tid.
//!   It is what every watcher has been (or will be) told, so "last tid" and
//!   "watch from it" never disagree, and a load as of it sees exactly the
//!   transactions reported.
//! - **Register race.** The server adds us to its list of clients to notify
//!   before it reads its last tid for the register reply, so a transaction
//!   that finishes in between is both in the reply and invalidated to us
//!   afterwards. Invalidations with tid ≤ the register reply are therefore
//!   dropped; after that, a tid that does not increase is a protocol error.
//! - **Watchers** subscribe under the state lock at the connection's current
//!   `last_tid` T: every later invalidation goes to their queue. A watch
//!   from `after < T` first fetches the transactions in `(after, T]` with the
//!   server's storage iterator (`iterator_start`/`iterator_next`/
//!   `iterator_record_*`), so the stream has no gap and no repeat.
//!
//! # Loss of the server
//!
//! EOF, a socket error, a malformed or oversized frame, a reply to nothing
//! we asked, or a request unanswered for [`ZeoOptions::request_timeout`]
//! (an idle connection is probed with `ping` every
//! [`ZeoOptions::keepalive`]) all *fail the connection for good*: pending
//! and later loads return an error saying why, and every watcher returns
//! that error once it has handed out the transactions received before.
//! There is no reconnect: invalidations sent while we were away are gone,
//! and what the server offers to recover them (`getInvalidations`) merges
//! transactions into one oid set from a bounded queue — the per-transaction
//! stream the daemon needs for its block history and pins cannot be rebuilt
//! from it. The storage iterator could rebuild it (a watch from an old tid
//! does so), but only by trusting that the server reached again serves the
//! same history as the one that went away (not a restored or replaced
//! copy), and reads in between would have failed anyway. A daemon whose
//! watcher fails switches to EIO mode and exits (SPEC §4); whoever starts
//! it again gets a fresh view, provably consistent.
//!
//! # Locking
//!
//! `Shared::state` (pending calls, watcher list, `last_tid`, failure) is
//! never held while doing I/O; `Shared::writer` is held only to write one
//! request frame (bounded by the write timeout; failing the connection
//! does not wait for it); a watcher queue's lock is taken under the state lock
//! (never the other way round).

pub mod wire;

use super::{Commit, Error, Loaded, Storage, Watcher};
use crate::pickle::Value;
use crate::types::{Oid, Tid};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use wire::{Codec, FrameReader, Message, ServerError, WireError};

/// Connection parameters.
#[derive(Debug, Clone)]
pub struct ZeoOptions {
    /// Storage name on the server (`runzeo` serves its FileStorage as "1").
    pub storage: String,
    /// Limit for connecting and for the handshake.
    pub connect_timeout: Duration,
    /// A request not answered within this fails the connection.
    pub request_timeout: Duration,
    /// An idle connection is probed (`ping`) this often.
    pub keepalive: Duration,
    /// Largest frame accepted from the server.
    pub max_frame: usize,
}

impl Default for ZeoOptions {
    fn default() -> Self {
        ZeoOptions {
            storage: "1".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(10),
            max_frame: 256 << 20,
        }
    }
}

/// The result of one call, as the reader hands it to the caller.
type CallResult = Result<Value, CallError>;

#[derive(Debug, Clone)]
enum CallError {
    /// The server raised an exception.
    Server(ServerError),
    /// The connection failed (why).
    Conn(String),
}

/// Where a caller waits for its reply.
#[derive(Default)]
struct Slot {
    result: Mutex<Option<CallResult>>,
    cond: Condvar,
}

impl Slot {
    fn put(&self, r: CallResult) {
        *self.result.lock() = Some(r);
        self.cond.notify_all();
    }
}

struct Pending {
    slot: Arc<Slot>,
    method: &'static str,
    sent: Instant,
}

/// A watcher's queue, filled by the reader thread.
#[derive(Default)]
struct WatchQueue {
    q: Mutex<WatchState>,
    cond: Condvar,
}

#[derive(Default)]
struct WatchState {
    commits: VecDeque<Commit>,
    failed: Option<String>,
}

struct State {
    next_msgid: i64,
    pending: HashMap<i64, Pending>,
    /// Set once: why the connection is unusable.
    failed: Option<String>,
    /// Register reply received (invalidations before it are held back).
    registered: bool,
    /// The register reply: invalidations up to it are duplicates.
    register_tid: Tid,
    held: Vec<Commit>,
    last_tid: Tid,
    watchers: Vec<Weak<WatchQueue>>,
    /// Last time a frame arrived.
    last_rx: Instant,
}

struct Shared {
    url: String,
    opts: ZeoOptions,
    codec: Codec,
    state: Mutex<State>,
    writer: Mutex<TcpStream>,
    /// The same socket, for shutting it down without waiting for a writer
    /// stuck on a server that stopped reading.
    control: TcpStream,
}

/// A ZEO server, opened read-only.
pub struct ZeoStorage {
    shared: Arc<Shared>,
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

    /// Connects, handshakes and registers.
    pub fn open_with(
        host: &str,
        port: u16,
        url: &str,
        opts: ZeoOptions,
    ) -> Result<ZeoStorage, Error> {
        let ioe = |op: &str, e: io::Error| Error::Io {
            storage: url.to_string(),
            op: op.to_string(),
            source: e,
        };
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .map_err(|e| ioe("resolve", e))?
            .collect();
        let mut last = io_err(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, opts.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut stream = stream.ok_or_else(|| ioe("connect", last))?;
        stream.set_nodelay(true).map_err(|e| ioe("connect", e))?;
        stream
            .set_read_timeout(Some(opts.connect_timeout))
            .map_err(|e| ioe("connect", e))?;
        stream
            .set_write_timeout(Some(opts.request_timeout))
            .map_err(|e| ioe("connect", e))?;

        // Handshake: the server announces, we answer with what we speak.
        let mut frames = FrameReader::new(opts.max_frame);
        let hello = frames.next(&mut stream).map_err(|e| {
            let e = match e {
                WireError::Timeout => io_err(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no protocol announcement from the server within {:?}",
                        opts.connect_timeout
                    ),
                ),
                WireError::Io(e) => e,
                other => io_err(io::ErrorKind::InvalidData, other.to_string()),
            };
            ioe("handshake", e)
        })?;
        // The server's newest protocol; we speak 5 (as does ZEO 5 and 6).
        let v5 = hello.len() > 1 && hello[1..] >= b"5"[..];
        let codec = match hello.first() {
            Some(b'Z') if v5 => Codec::Pickle,
            Some(b'M') if v5 => Codec::Msgpack,
            _ => {
                return Err(ioe(
                    "handshake",
                    io_err(
                        io::ErrorKind::InvalidData,
                        format!(
                            "server announced protocol {:?}; we speak ZEO protocol 5 (Z5 or M5)",
                            String::from_utf8_lossy(&hello[..hello.len().min(32)])
                        ),
                    ),
                ))
            }
        };
        stream
            .write_all(&wire::frame(codec.protocol()))
            .map_err(|e| ioe("handshake", e))?;

        let tick = (opts.request_timeout.min(opts.keepalive) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        stream
            .set_read_timeout(Some(tick))
            .map_err(|e| ioe("connect", e))?;
        let writer = stream.try_clone().map_err(|e| ioe("connect", e))?;
        let control = stream.try_clone().map_err(|e| ioe("connect", e))?;
        let shared = Arc::new(Shared {
            url: url.to_string(),
            opts,
            codec,
            state: Mutex::new(State {
                next_msgid: 1,
                pending: HashMap::new(),
                failed: None,
                registered: false,
                register_tid: Tid::ZERO,
                held: Vec::new(),
                last_tid: Tid::ZERO,
                watchers: Vec::new(),
                last_rx: Instant::now(),
            }),
            writer: Mutex::new(writer),
            control,
        });
        {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("zeo-reader".into())
                .spawn(move || reader(shared, stream, frames))
                .map_err(|e| ioe("spawn reader thread", e))?;
        }
        let st = ZeoStorage {
            shared,
            instance: super::new_instance_id(),
        };
        let name = st.shared.opts.storage.clone();
        let reply = st
            .call(
                "register",
                Value::Tuple(vec![Value::Str(name.clone()), Value::Bool(true)]),
            )
            .map_err(|e| st.call_error(&format!("register storage {name:?}"), e))?;
        let tid = tid_of(&reply).ok_or_else(|| {
            st.protocol_error(format!("register: reply is {reply:?}, want a tid"))
        })?;
        st.shared.registered(tid);
        Ok(st)
    }

    /// Fails the connection as a protocol violation; the error to return.
    fn protocol_error(&self, why: String) -> Error {
        self.shared.fail(format!("protocol error: {why}"));
        self.shared.conn_error("receive")
    }

    fn call_error(&self, op: &str, e: CallError) -> Error {
        match e {
            CallError::Server(se) => Error::Io {
                storage: self.shared.url.clone(),
                op: op.to_string(),
                source: io_err(io::ErrorKind::Other, se.to_string()),
            },
            CallError::Conn(why) => Error::Io {
                storage: self.shared.url.clone(),
                op: op.to_string(),
                source: io_err(io::ErrorKind::ConnectionAborted, why),
            },
        }
    }

    fn call(&self, method: &'static str, args: Value) -> CallResult {
        self.shared.call(method, args)
    }

    /// Why the connection failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.state.lock().failed.clone()
    }

    /// Loads several objects at once: all requests are sent before the
    /// first reply is awaited (for benchmarks and prefetching).
    pub fn load_many(&self, reqs: &[(Oid, Tid)]) -> Vec<Result<Loaded, Error>> {
        let sent: Vec<_> = reqs
            .iter()
            .map(|&(oid, at)| self.shared.send("loadBefore", load_args(oid, at)))
            .collect();
        sent.into_iter()
            .zip(reqs)
            .map(|(s, &(oid, at))| {
                let r = s.and_then(|(slot, id)| self.shared.wait(slot, id));
                self.load_result(oid, at, r)
            })
            .collect()
    }

    fn load_result(&self, oid: Oid, at: Tid, r: CallResult) -> Result<Loaded, Error> {
        let op = || format!("load {oid}@{at}");
        match r {
            Ok(Value::None) => Err(Error::NotYetCreated { oid, at }),
            Ok(Value::Tuple(t)) if t.len() == 3 => {
                let (Value::Bytes(data), Some(serial)) = (&t[0], tid_of(&t[1])) else {
                    return Err(self.protocol_error(format!("{}: reply {t:?}", op())));
                };
                if serial > at {
                    return Err(self.protocol_error(format!(
                        "{}: server returned data of @{serial}, newer than asked",
                        op()
                    )));
                }
                Ok(Loaded {
                    data: data.clone(),
                    serial,
                })
            }
            Ok(other) => Err(self.protocol_error(format!("{}: reply {other:?}", op()))),
            Err(CallError::Server(e)) if e.name() == "POSKeyError" => self.missing(oid, at),
            Err(e) => Err(self.call_error(&op(), e)),
        }
    }

    /// `loadBefore` raised POSKeyError: the object never existed, or its
    /// record as of `at` is a deletion. The object's history tells which
    /// (and the deletion's tid).
    fn missing(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        for size in [16i64, 1024, 65536] {
            let args = Value::Tuple(vec![oid_value(oid), Value::Int(size)]);
            let recs = match self.call("history", args) {
                Ok(Value::List(v)) | Ok(Value::Tuple(v)) => v,
                Ok(other) => {
                    return Err(self.protocol_error(format!("history {oid}: reply {other:?}")))
                }
                Err(CallError::Server(e)) if e.name() == "POSKeyError" => {
                    return Err(Error::NoObject { oid })
                }
                Err(e) => return Err(self.call_error(&format!("history {oid}"), e)),
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
                        return Err(Error::Deleted {
                            oid,
                            at,
                            serial: tid,
                        });
                    }
                }
            }
            if (n as i64) < size {
                break;
            }
        }
        // Deleted, by a record we could not find in a reasonable history.
        Err(Error::Deleted {
            oid,
            at,
            serial: Tid::ZERO,
        })
    }

    /// Transactions in `(after, upto]` from the server's iterator.
    fn history_commits(&self, after: Tid, upto: Tid) -> Result<Vec<Commit>, Error> {
        let op = format!("iterate transactions ({after}, {upto}]");
        let e = |e| self.call_error(&op, e);
        let start = Tid(after.0.saturating_add(1));
        let iid = self
            .call(
                "iterator_start",
                Value::Tuple(vec![tid_value(start), tid_value(upto)]),
            )
            .map_err(e)?;
        let mut out: Vec<Commit> = Vec::new();
        loop {
            let t = self
                .call("iterator_next", Value::Tuple(vec![iid.clone()]))
                .map_err(e)?;
            let t = match t {
                Value::None => break,
                Value::Tuple(t) if t.len() >= 2 => t,
                other => return Err(self.protocol_error(format!("iterator_next: {other:?}"))),
            };
            let Some(tid) = tid_of(&t[0]) else {
                return Err(self.protocol_error(format!("iterator_next: tid {:?}", t[0])));
            };
            if out.last().map_or(tid <= after, |c| tid <= c.tid) || tid > upto {
                return Err(
                    self.protocol_error(format!("iterator_next: transaction {tid} out of order"))
                );
            }
            let undone = match &t[1] {
                Value::Str(s) => s == "u",
                Value::Bytes(b) => &b[..] == b"u",
                _ => false,
            };
            let rid = self
                .call(
                    "iterator_record_start",
                    Value::Tuple(vec![iid.clone(), tid_value(tid)]),
                )
                .map_err(e)?;
            let mut oids = Vec::new();
            loop {
                match self
                    .call("iterator_record_next", Value::Tuple(vec![rid.clone()]))
                    .map_err(e)?
                {
                    Value::None => break,
                    Value::Tuple(r) if !r.is_empty() => match oid_of(&r[0]) {
                        Some(o) => oids.push(o),
                        None => {
                            return Err(
                                self.protocol_error(format!("iterator_record_next: {:?}", r[0]))
                            )
                        }
                    },
                    other => {
                        return Err(self.protocol_error(format!("iterator_record_next: {other:?}")))
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
}

impl Drop for ZeoStorage {
    fn drop(&mut self) {
        self.shared.fail("storage closed".into());
    }
}

fn tid_of(v: &Value) -> Option<Tid> {
    let b = v.as_bytes()?;
    Some(Tid(u64::from_be_bytes(b[..].try_into().ok()?)))
}

fn oid_of(v: &Value) -> Option<Oid> {
    let b = v.as_bytes()?;
    Some(Oid(u64::from_be_bytes(b[..].try_into().ok()?)))
}

fn tid_value(t: Tid) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&t.0.to_be_bytes()))
}

fn oid_value(o: Oid) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&o.0.to_be_bytes()))
}

/// `loadBefore(oid, at+1)`: the latest record with tid < at+1.
fn load_args(oid: Oid, at: Tid) -> Value {
    Value::Tuple(vec![oid_value(oid), tid_value(Tid(at.0.saturating_add(1)))])
}

impl Shared {
    fn conn_error(&self, op: &str) -> Error {
        let why = self
            .state
            .lock()
            .failed
            .clone()
            .unwrap_or_else(|| "connection failed".into());
        Error::Io {
            storage: self.url.clone(),
            op: op.to_string(),
            source: io_err(io::ErrorKind::ConnectionAborted, why),
        }
    }

    /// Sends a request; the slot its reply will land in.
    fn send(&self, method: &'static str, args: Value) -> Result<(Arc<Slot>, i64), CallError> {
        let slot = Arc::new(Slot::default());
        let msgid = {
            let mut st = self.state.lock();
            if let Some(why) = &st.failed {
                return Err(CallError::Conn(why.clone()));
            }
            let id = st.next_msgid;
            st.next_msgid += 1;
            st.pending.insert(
                id,
                Pending {
                    slot: slot.clone(),
                    method,
                    sent: Instant::now(),
                },
            );
            id
        };
        let frame = wire::message_frame_with(self.codec, msgid, Value::Bool(false), method, args);
        let res = self.writer.lock().write_all(&frame);
        if let Err(e) = res {
            self.fail(format!("send {method}: {e}"));
        }
        Ok((slot, msgid))
    }

    /// Waits for the reply in `slot` (the reader fails the connection when
    /// it is overdue, which answers the slot).
    fn wait(&self, slot: Arc<Slot>, _msgid: i64) -> CallResult {
        let mut r = slot.result.lock();
        loop {
            if let Some(res) = r.take() {
                return res;
            }
            // Bounded wait: the reader answers every slot when the
            // connection fails; this only guards against a reader that
            // died without doing so.
            let timed_out = slot
                .cond
                .wait_for(&mut r, self.opts.request_timeout * 2)
                .timed_out();
            if timed_out && r.is_none() {
                let why = format!("no reply within {:?}", self.opts.request_timeout * 2);
                self.fail(why.clone());
                return Err(CallError::Conn(why));
            }
        }
    }

    fn call(&self, method: &'static str, args: Value) -> CallResult {
        let (slot, id) = self.send(method, args)?;
        self.wait(slot, id)
    }

    /// The register reply: start the invalidation stream at `tid`.
    fn registered(&self, tid: Tid) {
        let mut st = self.state.lock();
        st.registered = true;
        st.register_tid = tid;
        st.last_tid = tid;
        let held = std::mem::take(&mut st.held);
        for c in held {
            if let Err(why) = self.invalidate(&mut st, c) {
                drop(st);
                self.fail(why);
                return;
            }
        }
    }

    /// Applies one invalidation (state locked).
    fn invalidate(&self, st: &mut State, c: Commit) -> Result<(), String> {
        if !st.registered {
            st.held.push(c);
            return Ok(());
        }
        if c.tid <= st.last_tid {
            if st.last_tid == st.register_tid {
                return Ok(()); // the register race: already counted
            }
            return Err(format!(
                "protocol error: invalidation of {} after {}: tids must increase",
                c.tid, st.last_tid
            ));
        }
        st.last_tid = c.tid;
        st.watchers.retain(|w| match w.upgrade() {
            Some(q) => {
                q.q.lock().commits.push_back(c.clone());
                q.cond.notify_all();
                true
            }
            None => false,
        });
        Ok(())
    }

    /// Marks the connection failed (first reason wins), answers every
    /// pending call, wakes every watcher, and closes the socket.
    fn fail(&self, why: String) {
        let (pending, watchers) = {
            let mut st = self.state.lock();
            if st.failed.is_some() {
                return;
            }
            st.failed = Some(why.clone());
            let pending: Vec<_> = st.pending.drain().map(|(_, p)| p).collect();
            let watchers = std::mem::take(&mut st.watchers);
            for w in &watchers {
                if let Some(q) = w.upgrade() {
                    q.q.lock().failed = Some(why.clone());
                    q.cond.notify_all();
                }
            }
            (pending, watchers)
        };
        drop(watchers);
        for p in pending {
            p.slot.put(Err(CallError::Conn(why.clone())));
        }
        let _ = self.control.shutdown(Shutdown::Both);
    }

    /// Periodic checks of the reader: overdue requests, keep-alive ping.
    fn tick(&self) {
        let now = Instant::now();
        let (overdue, idle) = {
            let st = self.state.lock();
            let overdue = st
                .pending
                .values()
                .filter(|p| now.duration_since(p.sent) > self.opts.request_timeout)
                .map(|p| p.method)
                .next();
            let idle =
                st.pending.is_empty() && now.duration_since(st.last_rx) >= self.opts.keepalive;
            (overdue, idle)
        };
        if let Some(m) = overdue {
            self.fail(format!(
                "server did not answer {m} within {:?}",
                self.opts.request_timeout
            ));
        } else if idle {
            // The reply is dropped: its only purpose is to be overdue
            // should the server have stopped answering.
            let _ = self.send("ping", Value::Tuple(vec![]));
        }
    }

    /// Handles one received frame; Err fails the connection.
    fn handle(&self, frame: Bytes) -> Result<(), String> {
        let msg = wire::decode_message_with(self.codec, &frame).map_err(|e| e.to_string())?;
        match msg {
            Message::Reply { msgid, result } => {
                let p = {
                    let mut st = self.state.lock();
                    st.last_rx = Instant::now();
                    st.pending.remove(&msgid)
                };
                let Some(p) = p else {
                    return Err(format!(
                        "protocol error: reply to request {msgid}, which was never sent (or already answered)"
                    ));
                };
                p.slot.put(result.map_err(CallError::Server));
                Ok(())
            }
            Message::Call {
                oneway: false,
                method,
                ..
            } => Err(format!(
                "protocol error: server called {method:?} expecting a reply; clients answer nothing"
            )),
            Message::Call { method, args, .. } => {
                let mut st = self.state.lock();
                st.last_rx = Instant::now();
                if method != "invalidateTransaction" {
                    return Ok(()); // "info" and the like: nothing for us
                }
                let c = invalidation(&args)
                    .ok_or_else(|| format!("protocol error: invalidateTransaction{args:?}"))?;
                self.invalidate(&mut st, c)
            }
        }
    }
}

/// `(tid, [oid, …])`.
fn invalidation(args: &Value) -> Option<Commit> {
    let t = args.as_tuple()?;
    if t.len() != 2 {
        return None;
    }
    let tid = tid_of(&t[0])?;
    let oids = t[1]
        .as_seq()?
        .iter()
        .map(oid_of)
        .collect::<Option<Vec<_>>>()?;
    Some(Commit { tid, oids })
}

/// The reader thread: frames in, until the connection fails.
fn reader(shared: Arc<Shared>, mut stream: TcpStream, mut frames: FrameReader) {
    // Process signals are for the program's own threads: a program that
    // blocks them and waits for them (wcfsd does, after opening the
    // storage) must not have them delivered here instead.
    let _ = nix::sys::signal::SigSet::all().thread_block();
    loop {
        if shared.state.lock().failed.is_some() {
            return;
        }
        match frames.next(&mut stream) {
            Ok(f) => {
                if let Err(why) = shared.handle(f) {
                    shared.fail(why);
                    return;
                }
            }
            Err(WireError::Timeout) => shared.tick(),
            Err(e) => {
                shared.fail(e.to_string());
                return;
            }
        }
    }
}

impl Storage for ZeoStorage {
    fn url(&self) -> &str {
        &self.shared.url
    }

    fn instance_id(&self) -> u64 {
        self.instance
    }

    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        let r = self.call("loadBefore", load_args(oid, at));
        self.load_result(oid, at, r)
    }

    fn last_tid(&self) -> Result<Tid, Error> {
        let st = self.shared.state.lock();
        if st.failed.is_some() {
            drop(st);
            return Err(self.shared.conn_error("last tid"));
        }
        Ok(st.last_tid)
    }

    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>, Error> {
        let q = Arc::new(WatchQueue::default());
        let from = {
            let mut st = self.shared.state.lock();
            if st.failed.is_some() {
                drop(st);
                return Err(self.shared.conn_error("watch"));
            }
            st.watchers.push(Arc::downgrade(&q));
            st.last_tid
        };
        let backlog = if after < from {
            self.history_commits(after, from)?.into()
        } else {
            VecDeque::new()
        };
        Ok(Box::new(ZeoWatcher {
            url: self.shared.url.clone(),
            q,
            after,
            backlog,
        }))
    }
}

/// A [`Watcher`] over a ZEO connection's invalidations.
pub struct ZeoWatcher {
    url: String,
    q: Arc<WatchQueue>,
    /// Nothing at or before this is reported.
    after: Tid,
    /// Transactions from before the subscription, reported first.
    backlog: VecDeque<Commit>,
}

impl Watcher for ZeoWatcher {
    fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Commit>, Error> {
        if let Some(c) = self.backlog.pop_front() {
            self.after = c.tid;
            return Ok(Some(c));
        }
        let deadline = Instant::now() + timeout;
        let mut q = self.q.q.lock();
        loop {
            while let Some(c) = q.commits.pop_front() {
                if c.tid > self.after {
                    self.after = c.tid;
                    return Ok(Some(c));
                }
            }
            if let Some(why) = &q.failed {
                return Err(Error::Io {
                    storage: self.url.clone(),
                    op: "watch".into(),
                    source: io_err(io::ErrorKind::ConnectionAborted, why.clone()),
                });
            }
            if self.q.cond.wait_until(&mut q, deadline).timed_out() && q.commits.is_empty() {
                return Ok(None);
            }
        }
    }
}
