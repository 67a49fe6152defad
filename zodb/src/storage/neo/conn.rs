//! One TCP connection to a NEO node (a master or a storage node):
//! handshake, requests with their answers, notifications.
//!
//! - **One reader thread** receives every packet ([`wire::frame_len`]
//!   delimits them in its buffer). Answers are matched to their request by
//!   msg_id, so any number of threads have requests in flight on one
//!   connection; a storage node answers them as they complete.
//! - **Notifications** (and the master's requests — only `Ping`, answered
//!   here) go to the [`Sink`] in the order they arrive, once the connection
//!   is *live* ([`Conn::go_live`]); before that they are held, so that the
//!   storage can read the node list and partition table that follow the
//!   master's identification answer, and catch up, before anything else.
//! - **Failure** — EOF, a socket error, a packet that is not one, a packet
//!   past the size limit, an answer to nothing we asked, a request not
//!   answered within the request timeout (an idle connection is probed
//!   with `Ping`) — is final: every pending request gets the reason, and
//!   the sink is told once.
//!
//! Locking: `state` is never held during I/O except that the sink is
//! called under it (so that notifications and the switch to live cannot
//! interleave); `writer` only while writing one packet.

use super::wire::{self, code, Packet};
use crate::storage::requests::{Pending, Slot};
use crate::storage::tls::{TlsClient, TlsReader, TlsShared};
use parking_lot::Mutex;
use rmpv::Value;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Who learns of a connection's notifications and of its end.
pub(super) trait Sink: Send + Sync {
    /// A notification on live connection `conn`, in order. Err: a protocol
    /// violation — the connection is failed with it.
    fn notified(&self, conn: u64, p: Packet) -> Result<(), String>;
    /// Connection `conn` failed for `why` (once).
    fn lost(&self, conn: u64, why: String);
}

/// How a request ended.
#[derive(Debug, Clone)]
pub(super) enum CallError {
    /// The peer answered `Error(code, message)`.
    Peer(i64, String),
    /// The connection failed (why).
    Conn(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Peer(c, m) => write!(f, "error {c}: {m}"),
            CallError::Conn(w) => write!(f, "{w}"),
        }
    }
}

pub(super) type CallResult = Result<Packet, CallError>;

/// A request sent, its answer not yet awaited.
pub(super) struct Sent(Arc<Slot<CallResult>>);

struct State {
    next_id: u32,
    /// By packet id, tagged with the request's code.
    pending: Pending<u32, u16, CallResult>,
    failed: Option<String>,
    live: bool,
    held: Vec<Packet>,
    last_rx: Instant,
}

/// Connection limits.
#[derive(Debug, Clone)]
pub(super) struct ConnOpts {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub keepalive: Duration,
    pub max_packet: usize,
    /// TLS (`neos://`), or plain TCP.
    pub tls: Option<TlsClient>,
}

/// Where packets are written.
enum Writer {
    Plain(Mutex<TcpStream>),
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

pub(super) struct Conn {
    pub(super) id: u64,
    /// `host:port`, for messages.
    pub(super) addr: String,
    opts: ConnOpts,
    state: Mutex<State>,
    writer: Writer,
    control: TcpStream,
    sink: Weak<dyn Sink>,
    /// Set once it failed: [`Conn::failure`] without the state lock (the
    /// client asks under its own lock, which the reader takes under ours).
    dead: AtomicBool,
}

fn io_err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

impl Conn {
    /// Connects and exchanges handshakes; the reader runs. Err: (what
    /// failed, why).
    pub(super) fn connect(
        host: &str,
        port: u16,
        opts: &ConnOpts,
        id: u64,
        sink: Weak<dyn Sink>,
    ) -> Result<Arc<Conn>, (&'static str, io::Error)> {
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .map_err(|e| ("resolve", e))?
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
        let stream = stream.ok_or(("connect", last))?;
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(opts.connect_timeout))?;
            s.set_write_timeout(Some(opts.request_timeout))
        };
        setup(&stream).map_err(|e| ("connect", e))?;
        // With TLS, its handshake first; then both sides send the NEO
        // handshake at once.
        let (writer, mut rd): (Writer, Box<dyn Read + Send>) = match &opts.tls {
            Some(client) => {
                let sock = stream.try_clone().map_err(|e| ("connect", e))?;
                let shared = Arc::new(
                    TlsShared::handshake(client, host, Box::new(sock))
                        .map_err(|e| ("TLS handshake", e))?,
                );
                (
                    Writer::Tls(shared.clone()),
                    Box::new(TlsReader::new(shared)),
                )
            }
            None => (
                Writer::Plain(Mutex::new(stream.try_clone().map_err(|e| ("connect", e))?)),
                Box::new(stream.try_clone().map_err(|e| ("connect", e))?),
            ),
        };
        writer
            .write_all(&wire::HANDSHAKE)
            .map_err(|e| ("handshake", e))?;
        let mut got = [0u8; wire::HANDSHAKE.len()];
        let mut n = 0;
        while n < got.len() {
            match rd.read(&mut got[n..]) {
                Ok(0) => {
                    let why = if n == 0 {
                        "the peer closed the connection before its handshake".to_string()
                    } else {
                        wire::check_handshake(&got[..n]).err().unwrap_or_default()
                    };
                    return Err(("handshake", io_err(io::ErrorKind::UnexpectedEof, why)));
                }
                Ok(k) => {
                    n += k;
                    // Refuse at once what cannot become our handshake.
                    if got[..n] != wire::HANDSHAKE[..n] {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err((
                        "handshake",
                        io_err(
                            io::ErrorKind::TimedOut,
                            format!(
                                "no handshake from the peer within {:?}",
                                opts.connect_timeout
                            ),
                        ),
                    ))
                }
                Err(e) => return Err(("handshake", e)),
            }
        }
        wire::check_handshake(&got[..n])
            .map_err(|why| ("handshake", io_err(io::ErrorKind::InvalidData, why)))?;

        let tick = (opts.request_timeout.min(opts.keepalive) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        stream
            .set_read_timeout(Some(tick))
            .map_err(|e| ("connect", e))?;
        let control = stream.try_clone().map_err(|e| ("connect", e))?;
        let conn = Arc::new(Conn {
            id,
            addr: format!("{host}:{port}"),
            opts: opts.clone(),
            state: Mutex::new(State {
                next_id: 0,
                pending: Pending::new(),
                failed: None,
                live: false,
                held: Vec::new(),
                last_rx: Instant::now(),
            }),
            writer,
            control,
            sink,
            dead: AtomicBool::new(false),
        });
        let c = conn.clone();
        std::thread::Builder::new()
            .name("neo-reader".into())
            .spawn(move || reader(c, rd))
            .map_err(|e| ("spawn reader thread", e))?;
        Ok(conn)
    }

    /// Sends a request; where its answer will land.
    pub(super) fn send(&self, code: u16, args: Vec<Value>) -> Result<Sent, CallError> {
        let (id, slot) = {
            let mut st = self.state.lock();
            if let Some(why) = &st.failed {
                return Err(CallError::Conn(why.clone()));
            }
            let id = st.next_id;
            st.next_id = st.next_id.wrapping_add(1);
            (id, st.pending.add(id, code))
        };
        let pkt = wire::encode_packet(id, code, args);
        let res = self.writer.write_all(&pkt);
        if let Err(e) = res {
            self.fail(format!("send to {}: {e}", self.addr));
        }
        Ok(Sent(slot))
    }

    /// Waits for the answer of `sent`: the packet (an `Error` answer is
    /// [`CallError::Peer`]).
    pub(super) fn wait(&self, sent: Sent) -> CallResult {
        let until = Instant::now() + self.opts.request_timeout * 2;
        if let Some(res) = sent.0.wait_until(until) {
            return res;
        }
        let why = format!("no answer within {:?}", self.opts.request_timeout * 2);
        self.fail(why.clone());
        Err(CallError::Conn(why))
    }

    pub(super) fn call(&self, code: u16, args: Vec<Value>) -> CallResult {
        let s = self.send(code, args)?;
        self.wait(s)
    }

    /// The notifications held so far (the connection is not live yet).
    pub(super) fn take_held(&self) -> Vec<Packet> {
        std::mem::take(&mut self.state.lock().held)
    }

    /// From now on notifications go to the sink, the held ones first
    /// (those `skip` says are already known are dropped).
    pub(super) fn go_live(&self, skip: impl Fn(&Packet) -> bool) -> Result<(), String> {
        let mut st = self.state.lock();
        if let Some(why) = &st.failed {
            return Err(why.clone());
        }
        let sink = self.sink.upgrade().ok_or("storage closed")?;
        for p in std::mem::take(&mut st.held) {
            if !skip(&p) {
                sink.notified(self.id, p)?;
            }
        }
        st.live = true;
        Ok(())
    }

    /// Whether the connection failed.
    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks the connection failed (first reason wins), answers every
    /// pending request, closes the socket, tells the sink.
    pub(super) fn fail(&self, why: String) {
        let pending = {
            let mut st = self.state.lock();
            if st.failed.is_some() {
                return;
            }
            st.failed = Some(why.clone());
            self.dead.store(true, Ordering::Release);
            st.pending.drain()
        };
        for slot in pending {
            slot.put(Err(CallError::Conn(why.clone())));
        }
        let _ = self.control.shutdown(Shutdown::Both);
        if let Some(s) = self.sink.upgrade() {
            s.lost(self.id, why);
        }
    }

    fn tick(&self) {
        let now = Instant::now();
        let (overdue, idle) = {
            let st = self.state.lock();
            let overdue = st.pending.overdue(now, self.opts.request_timeout);
            let idle =
                st.pending.is_empty() && now.duration_since(st.last_rx) >= self.opts.keepalive;
            (overdue, idle)
        };
        if let Some(c) = overdue {
            self.fail(format!(
                "{} did not answer request 0x{c:04x} within {:?}",
                self.addr, self.opts.request_timeout
            ));
        } else if idle {
            // Only to have an answer overdue should the peer hang.
            let _ = self.send(code::PING, vec![]);
        }
    }

    /// Handles one packet; Err fails the connection.
    fn handle(&self, p: Packet) -> Result<(), String> {
        if p.is_response() {
            let pend = {
                let mut st = self.state.lock();
                st.last_rx = Instant::now();
                st.pending.take(&p.id)
            };
            let Some((pcode, slot)) = pend else {
                if p.code == wire::ERROR {
                    let (c, m) = wire::error_of(&p.args).unwrap_or((-1, String::new()));
                    return Err(format!("{} sent error {c}: {m}", self.addr));
                }
                return Err(format!(
                    "protocol error from {}: answer 0x{:04x} to request {}, which was never sent",
                    self.addr, p.code, p.id
                ));
            };
            let r = if p.code == wire::ERROR {
                match wire::error_of(&p.args) {
                    Some((c, m)) => Err(CallError::Peer(c, m)),
                    None => {
                        return Err(format!(
                            "protocol error from {}: malformed Error {:?}",
                            self.addr, p.args
                        ))
                    }
                }
            } else if p.code != pcode | wire::RESPONSE {
                return Err(format!(
                    "protocol error from {}: answer 0x{:04x} to request 0x{:04x}",
                    self.addr, p.code, pcode
                ));
            } else {
                Ok(p)
            };
            slot.put(r);
            return Ok(());
        }
        if p.code == code::PING {
            let pong = wire::encode_packet(p.id, code::PING | wire::RESPONSE, vec![]);
            self.writer
                .write_all(&pong)
                .map_err(|e| format!("send to {}: {e}", self.addr))?;
            return Ok(());
        }
        let mut st = self.state.lock();
        st.last_rx = Instant::now();
        if !st.live {
            st.held.push(p);
            return Ok(());
        }
        match self.sink.upgrade() {
            Some(s) => s.notified(self.id, p),
            None => Err("storage closed".into()),
        }
    }
}

/// The reader thread: packets in, until the connection fails.
fn reader(conn: Arc<Conn>, mut stream: Box<dyn Read + Send>) {
    // Signals are for the program's own threads (see zeo::conn).
    let _ = nix::sys::signal::SigSet::all().thread_block();
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut start = 0usize;
    // Bytes known to be needed before walking the buffer again.
    let mut want = 1usize;
    loop {
        if conn.state.lock().failed.is_some() {
            return;
        }
        // Deliver every complete packet in the buffer.
        while buf.len() - start >= want {
            match wire::frame_len(&buf[start..], conn.opts.max_packet) {
                Ok(Some(n)) => {
                    let p = wire::decode_packet(&buf[start..start + n]);
                    start += n;
                    want = 1;
                    let r = match p {
                        Ok(p) => conn.handle(p),
                        Err(e) => Err(format!("protocol error from {}: {e}", conn.addr)),
                    };
                    if let Err(why) = r {
                        conn.fail(why);
                        return;
                    }
                }
                Ok(None) => {
                    want = buf.len() - start + 1;
                    break;
                }
                Err(e) => {
                    conn.fail(format!("protocol error from {}: {e}", conn.addr));
                    return;
                }
            }
        }
        if start > 0 && (start == buf.len() || start >= buf.len() / 2) {
            buf.drain(..start);
            start = 0;
        }
        let len = buf.len();
        let chunk = (64usize << 10).max(want.saturating_sub(len - start).min(16 << 20));
        buf.resize(len + chunk, 0);
        match stream.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                conn.fail(format!("{} closed the connection", conn.addr));
                return;
            }
            Ok(k) => buf.truncate(len + k),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                buf.truncate(len);
                conn.tick();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                conn.fail(format!("receive from {}: {e}", conn.addr));
                return;
            }
        }
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn#{} {}", self.id, self.addr)
    }
}
