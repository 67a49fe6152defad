//! One connection to a ZEO server (TCP or a Unix socket): handshake,
//! calls, invalidations.
//!
//! - **One reader thread** receives every frame. Replies are matched to
//!   their callers by message id. Callers send their request themselves
//!   (under the writer lock) and wait for their own reply, so any number of
//!   threads have requests in flight on the one connection (pipelining);
//!   the server answers them in order.
//! - **Invalidations** are handed to the [`Sink`] — the storage that owns
//!   the connection — in the order they arrive, but only once the
//!   connection is *live* ([`Conn::go_live`]): until then (while it
//!   registers, and while the storage catches up through it after a
//!   reconnect) they are held, in order.
//! - **Failure** — EOF, a socket error, a malformed or oversized frame, a
//!   reply to nothing we asked, a request unanswered (or its reply
//!   unfinished) for the *reply timeout* (an idle connection is probed with
//!   `ping` every *keep-alive*) — is final for the connection: every
//!   pending call gets the reason, and the sink is told once
//!   ([`Sink::lost`]). Reconnecting is the storage's business. The reply
//!   timeout is [`ZeoOptions::request_timeout`], but no longer than the
//!   storage's [`Resilience::reply_wait`](crate::storage::Resilience::reply_wait):
//!   a server silent for as long as a caller may wait is away (the
//!   contract of [`crate::storage`]); the keep-alive is
//!   [`ZeoOptions::keepalive`], but no longer than the reply timeout, so a
//!   silent idle connection is noticed within twice that.
//! - **A caller's deadline.** A caller may also wait for its reply only
//!   until a deadline of its own ([`Conn::call`]): past it, it gets
//!   [`CallError::Late`] and leaves — the request stays pending, so that the
//!   connection fails when it is overdue; a reply arriving before that is
//!   dropped.
//!
//! - **TLS** (`zeos://`, [`ZeoOptions::tls`]): the TLS handshake right
//!   after the connect, then everything above inside TLS (the crate's
//!   `tls` module). A plain client meeting a TLS-only server would wait
//!   for an announcement that never comes (the server waits for our TLS
//!   hello): when none has come after [`PROBE_AFTER`], a second connection
//!   sends a TLS hello, and a TLS answer fails the connect with a message
//!   saying so (use `zeos://`) instead of waiting for the connect timeout.
//!
//! # Locking
//!
//! `state` (pending calls, held invalidations, failure) is never held
//! while doing I/O, except that the sink is called under it (so that the
//! order of invalidations and the switch to live cannot interleave);
//! `writer` is held only to write one request frame (bounded by the write
//! timeout; failing the connection does not wait for it).

use super::wire::{self, Codec, FrameReader, Message, ServerError, WireError};
use super::ZeoOptions;
use crate::pickle::Value;
use crate::storage::requests::{Pending, Slot};
use crate::storage::tls::{self, Sock, TlsReader, TlsShared};
use crate::storage::Commit;
use crate::types::{Oid, Tid};
use crate::zurl::ZeoAddr;
use bytes::Bytes;
use parking_lot::Mutex;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Who learns of a connection's invalidations and of its end.
pub(super) trait Sink: Send + Sync {
    /// An invalidation of the live connection `conn` (in order). Err: a
    /// protocol violation — the connection is failed with it.
    fn invalidated(&self, conn: u64, c: Commit) -> Result<(), String>;
    /// Connection `conn` failed for `why` (called once).
    fn lost(&self, conn: u64, why: String);
}

/// The result of one call, as the reader hands it to the caller.
pub(super) type CallResult = Result<Value, CallError>;

#[derive(Debug, Clone)]
pub(super) enum CallError {
    /// The server raised an exception.
    Server(ServerError),
    /// The connection failed (why).
    Conn(String),
    /// No reply by the caller's deadline (how long it waited); the
    /// connection may still be up.
    Late(Duration),
}

impl CallError {
    /// What went wrong, in words.
    pub(super) fn why(self) -> String {
        match self {
            CallError::Server(se) => se.to_string(),
            CallError::Conn(w) => w,
            CallError::Late(d) => format!("no reply within {d:.1?}"),
        }
    }
}

/// A call sent, its reply not yet awaited.
pub(super) struct Sent(Arc<Slot<CallResult>>);

struct State {
    next_msgid: i64,
    /// By msgid, tagged with the method.
    pending: Pending<i64, &'static str, CallResult>,
    /// Set once: why the connection is unusable.
    failed: Option<String>,
    /// Invalidations go to the sink (else they are held).
    live: bool,
    held: Vec<Commit>,
    /// Last time a frame arrived.
    last_rx: Instant,
}

pub(super) struct Conn {
    /// Distinguishes the connections of one storage.
    pub(super) id: u64,
    url: String,
    /// A request unanswered this long fails the connection.
    reply_timeout: Duration,
    /// An idle connection is probed this often.
    keepalive: Duration,
    codec: Codec,
    state: Mutex<State>,
    writer: Writer,
    /// The same socket, for shutting it down without waiting for a writer
    /// stuck on a server that stopped reading.
    control: Stream,
    sink: Weak<dyn Sink>,
}

fn io_err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

/// How long a plain connection waits for the server's announcement before
/// checking whether the server waits for a TLS hello instead.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// Where requests are written: the socket, or the TLS session over it.
enum Writer {
    Plain(Mutex<Stream>),
    Tls(Arc<TlsShared>),
}

impl Writer {
    fn write_all(&self, data: &[u8]) -> io::Result<()> {
        match self {
            Writer::Plain(s) => s.lock().write_all(data),
            Writer::Tls(t) => t.write_all(data),
        }
    }
}

/// A socket to the server, of either kind: the rest of the connection
/// does not care which.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(addr: &ZeoAddr, timeout: Duration) -> Result<Stream, (&'static str, io::Error)> {
        match addr {
            ZeoAddr::Tcp { host, port } => {
                let addrs: Vec<_> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| ("resolve", e))?
                    .collect();
                let mut last = io_err(io::ErrorKind::NotFound, "no address");
                for a in addrs {
                    match TcpStream::connect_timeout(&a, timeout) {
                        Ok(s) => {
                            s.set_nodelay(true).map_err(|e| ("connect", e))?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(("connect", last))
            }
            // A local connect does not wait for a peer: it succeeds or
            // fails at once (a server with a full backlog: the handshake
            // read times out).
            ZeoAddr::Unix(path) => UnixStream::connect(path).map(Stream::Unix).map_err(|e| {
                let e = io::Error::new(e.kind(), format!("{}: {e}", path.display()));
                ("connect", e)
            }),
        }
    }

    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    fn shutdown(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        }
    }
}

impl Sock for Stream {
    fn read_sock(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }

    fn write_sock(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

impl Conn {
    /// Connects and handshakes (no call made yet); the reader runs.
    /// Err: (what failed, why).
    pub(super) fn connect(
        addr: &ZeoAddr,
        url: &str,
        opts: &ZeoOptions,
        id: u64,
        sink: Weak<dyn Sink>,
    ) -> Result<Arc<Conn>, (&'static str, io::Error)> {
        let stream = Stream::connect(addr, opts.connect_timeout)?;
        let reply_timeout = opts
            .request_timeout
            .min(opts.resilience.reply_wait())
            .max(Duration::from_millis(10));
        let keepalive = opts.keepalive.min(reply_timeout);
        let setup = |s: &Stream| -> io::Result<()> {
            s.set_read_timeout(Some(opts.connect_timeout))?;
            s.set_write_timeout(Some(reply_timeout))
        };
        setup(&stream).map_err(|e| ("connect", e))?;
        let clone = || stream.try_clone().map_err(|e| ("connect", e));

        // With TLS, its handshake first; the rest inside it.
        let (writer, mut rd): (Writer, Box<dyn Read + Send>) = match &opts.tls {
            Some(t) => {
                let name = match (&opts.server_hostname, addr) {
                    (Some(n), _) => n.as_str(),
                    (None, ZeoAddr::Tcp { host, .. }) => host.as_str(),
                    (None, ZeoAddr::Unix(_)) => {
                        return Err((
                            "TLS handshake",
                            io_err(
                                io::ErrorKind::InvalidInput,
                                "over a Unix socket, the host name to check the server's \
                                 certificate against must be given (server_hostname=)",
                            ),
                        ))
                    }
                };
                let shared = Arc::new(
                    TlsShared::handshake(t, name, Box::new(clone()?))
                        .map_err(|e| ("TLS handshake", e))?,
                );
                (
                    Writer::Tls(shared.clone()),
                    Box::new(TlsReader::new(shared)),
                )
            }
            None => (Writer::Plain(Mutex::new(clone()?)), Box::new(clone()?)),
        };

        // Handshake: the server announces, we answer with what we speak.
        let mut frames = FrameReader::new(opts.max_frame);
        let hello = announcement(&mut frames, &mut rd, &stream, addr, opts)?;
        // The server's newest protocol; we speak 5 (as does ZEO 5 and 6).
        let v5 = hello.len() > 1 && hello[1..] >= b"5"[..];
        let codec = match hello.first() {
            Some(b'Z') if v5 => Codec::Pickle,
            Some(b'M') if v5 => Codec::Msgpack,
            _ => {
                return Err((
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
        writer
            .write_all(&wire::frame(codec.protocol()))
            .map_err(|e| ("handshake", e))?;

        let tick = (reply_timeout.min(keepalive) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        stream
            .set_read_timeout(Some(tick))
            .map_err(|e| ("connect", e))?;
        let control = stream;
        let conn = Arc::new(Conn {
            id,
            url: url.to_string(),
            reply_timeout,
            keepalive,
            codec,
            state: Mutex::new(State {
                next_msgid: 1,
                pending: Pending::new(),
                failed: None,
                live: false,
                held: Vec::new(),
                last_rx: Instant::now(),
            }),
            writer,
            control,
            sink,
        });
        let c = conn.clone();
        std::thread::Builder::new()
            .name("zeo-reader".into())
            .spawn(move || reader(c, rd, frames))
            .map_err(|e| ("spawn reader thread", e))?;
        Ok(conn)
    }

    /// Sends a request; where its reply will land.
    pub(super) fn send(&self, method: &'static str, args: Value) -> Result<Sent, CallError> {
        let (msgid, slot) = {
            let mut st = self.state.lock();
            if let Some(why) = &st.failed {
                return Err(CallError::Conn(why.clone()));
            }
            let id = st.next_msgid;
            st.next_msgid += 1;
            (id, st.pending.add(id, method))
        };
        let frame = wire::message_frame_with(self.codec, msgid, Value::Bool(false), method, args);
        let res = self.writer.write_all(&frame);
        if let Err(e) = res {
            self.fail(format!("send {method}: {e}"));
        }
        Ok(Sent(slot))
    }

    /// Waits for the reply of `sent` (the reader fails the connection when
    /// it is overdue, which answers it), or until `deadline` — then
    /// [`CallError::Late`].
    pub(super) fn wait(&self, sent: Sent, deadline: Option<Instant>) -> CallResult {
        let slot = sent.0;
        let start = Instant::now();
        // The reader answers every slot when the connection fails; this
        // only guards against a reader that died without doing so.
        let guard = start + self.reply_timeout * 2;
        let until = deadline.map_or(guard, |d| d.min(guard));
        if let Some(res) = slot.wait_until(until) {
            return res;
        }
        if until < guard {
            return Err(CallError::Late(start.elapsed()));
        }
        let why = format!("no reply within {:?}", self.reply_timeout * 2);
        self.fail(why.clone());
        Err(CallError::Conn(why))
    }

    /// Sends a request and waits for its reply, until `deadline` at most.
    pub(super) fn call(
        &self,
        method: &'static str,
        args: Value,
        deadline: Option<Instant>,
    ) -> CallResult {
        let sent = self.send(method, args)?;
        self.wait(sent, deadline)
    }

    /// From now on invalidations go to the sink; the held ones with tid >
    /// `after` go first, in order (those ≤ `after` are already known: the
    /// register race, or covered by a catch-up). Err: a violation.
    pub(super) fn go_live(&self, after: Tid) -> Result<(), String> {
        let mut st = self.state.lock();
        if let Some(why) = &st.failed {
            return Err(why.clone());
        }
        let sink = self.sink.upgrade().ok_or("storage closed")?;
        for c in std::mem::take(&mut st.held) {
            if c.tid > after {
                sink.invalidated(self.id, c)?;
            }
        }
        st.live = true;
        Ok(())
    }

    /// Marks the connection failed (first reason wins), answers every
    /// pending call, closes the socket and tells the sink.
    pub(super) fn fail(&self, why: String) {
        let pending = {
            let mut st = self.state.lock();
            if st.failed.is_some() {
                return;
            }
            st.failed = Some(why.clone());
            st.pending.drain()
        };
        for slot in pending {
            slot.put(Err(CallError::Conn(why.clone())));
        }
        let _ = self.control.shutdown();
        if let Some(s) = self.sink.upgrade() {
            s.lost(self.id, why);
        }
    }

    /// A protocol violation of the server: fails the connection; the error
    /// for the caller.
    pub(super) fn protocol_error(&self, why: String) -> CallError {
        let why = format!("protocol error: {why}");
        self.fail(why.clone());
        CallError::Conn(why)
    }

    /// Periodic checks of the reader: overdue requests, keep-alive ping.
    fn tick(&self) {
        let now = Instant::now();
        let (overdue, idle) = {
            let st = self.state.lock();
            let overdue = st.pending.overdue(now, self.reply_timeout);
            let idle = st.pending.is_empty() && now.duration_since(st.last_rx) >= self.keepalive;
            (overdue, idle)
        };
        if let Some(m) = overdue {
            self.fail(format!(
                "server did not answer {m} within {:?}",
                self.reply_timeout
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
                    st.pending.take(&msgid)
                };
                let Some((_, slot)) = p else {
                    return Err(format!(
                        "protocol error: reply to request {msgid}, which was never sent (or already answered)"
                    ));
                };
                slot.put(result.map_err(CallError::Server));
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
                if !st.live {
                    st.held.push(c);
                    return Ok(());
                }
                match self.sink.upgrade() {
                    Some(s) => s.invalidated(self.id, c),
                    None => Err("storage closed".into()),
                }
            }
        }
    }
}

/// The server's protocol announcement, its first frame, read from `rd`
/// (`sock` is the socket under it). A plain connection that gets nothing
/// for [`PROBE_AFTER`] checks whether the server waits for a TLS hello
/// instead (see the module doc).
fn announcement(
    frames: &mut FrameReader,
    rd: &mut Box<dyn Read + Send>,
    sock: &Stream,
    addr: &ZeoAddr,
    opts: &ZeoOptions,
) -> Result<Bytes, (&'static str, io::Error)> {
    let deadline = Instant::now() + opts.connect_timeout;
    let mut probe = opts.tls.is_none() && opts.connect_timeout > PROBE_AFTER;
    if probe {
        sock.set_read_timeout(Some(PROBE_AFTER))
            .map_err(|e| ("connect", e))?;
    }
    loop {
        let e = match frames.next(rd) {
            Ok(hello) => return Ok(hello),
            Err(e) => e,
        };
        let e = match e {
            WireError::Timeout => {
                let left = deadline.saturating_duration_since(Instant::now());
                if probe && !frames.mid_frame() && left > Duration::from_millis(10) {
                    probe = false;
                    if speaks_tls(addr, left.min(Duration::from_secs(3))) {
                        return Err((
                            "handshake",
                            io_err(
                                io::ErrorKind::InvalidData,
                                "the server speaks TLS (it waits for a TLS handshake, \
                                 announcing nothing): use zeos://…?ca=…",
                            ),
                        ));
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left > Duration::from_millis(1) {
                        sock.set_read_timeout(Some(left))
                            .map_err(|e| ("connect", e))?;
                        continue;
                    }
                }
                io_err(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no protocol announcement from the server within {:?}",
                        opts.connect_timeout
                    ),
                )
            }
            WireError::Io(e) => e,
            // A TLS server that does not like our certificate (or its
            // absence) may just close (runzeo does), after the handshake
            // (TLS 1.3 completes it for the client before the server's
            // verdict).
            WireError::Closed { .. } if opts.tls.is_some() => io_err(
                io::ErrorKind::UnexpectedEof,
                match opts.tls.as_ref().and_then(|t| t.cert.as_ref()) {
                    None => "the server closed the connection right after the TLS handshake: \
                             it requires a client certificate, likely (give cert= and key=)"
                        .to_string(),
                    Some(c) => format!(
                        "the server closed the connection right after the TLS handshake: \
                         it refused our client certificate cert {}, likely",
                        c.display()
                    ),
                },
            ),
            other => io_err(io::ErrorKind::InvalidData, other.to_string()),
        };
        return Err(("handshake", e));
    }
}

/// Whether the server at `addr` answers a TLS hello as a TLS server
/// (on a connection of its own, within `wait`).
fn speaks_tls(addr: &ZeoAddr, wait: Duration) -> bool {
    let Ok(s) = Stream::connect(addr, wait) else {
        return false;
    };
    if s.set_read_timeout(Some(wait)).is_err() || s.set_write_timeout(Some(wait)).is_err() {
        return false;
    }
    let r = tls::speaks_tls(&s);
    let _ = s.shutdown();
    r
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
fn reader(conn: Arc<Conn>, mut stream: Box<dyn Read + Send>, mut frames: FrameReader) {
    // Process signals are for the program's own threads: a program that
    // blocks them and waits for them (wcfsd does, after opening the
    // storage) must not have them delivered here instead.
    let _ = nix::sys::signal::SigSet::all().thread_block();
    loop {
        if conn.state.lock().failed.is_some() {
            return;
        }
        match frames.next(&mut stream) {
            Ok(f) => {
                if let Err(why) = conn.handle(f) {
                    conn.fail(why);
                    return;
                }
            }
            Err(WireError::Timeout) => conn.tick(),
            Err(e) => {
                conn.fail(e.to_string());
                return;
            }
        }
    }
}

pub(super) fn tid_of(v: &Value) -> Option<Tid> {
    let b = v.as_bytes()?;
    Some(Tid(u64::from_be_bytes(b[..].try_into().ok()?)))
}

pub(super) fn oid_of(v: &Value) -> Option<Oid> {
    let b = v.as_bytes()?;
    Some(Oid(u64::from_be_bytes(b[..].try_into().ok()?)))
}

pub(super) fn tid_value(t: Tid) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&t.0.to_be_bytes()))
}

pub(super) fn oid_value(o: Oid) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&o.0.to_be_bytes()))
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn#{} {}", self.id, self.url)
    }
}
