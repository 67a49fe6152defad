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
use bytes::Bytes;
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

/// The reader's buffer for small packets (and the start of big ones).
const SMALL: usize = 256 << 10;

/// The reader thread: packets in, until the connection fails.
fn reader(conn: Arc<Conn>, mut stream: Box<dyn Read + Send>) {
    // Signals are for the program's own threads (see zeo::conn).
    let _ = nix::sys::signal::SigSet::all().thread_block();
    receive(&*conn, &mut *stream);
}

/// What [`receive`] needs of its connection: a trait, so that the frame
/// reading can be tested on its own (fed by a reader that splits the
/// stream anywhere).
trait Link {
    fn addr(&self) -> &str;
    fn max_packet(&self) -> usize;
    /// Whether it failed (receiving stops).
    fn is_dead(&self) -> bool;
    fn fail(&self, why: String);
    /// A receive timed out (the read timeout is the reader's clock).
    fn tick(&self);
    /// One complete frame, in order; false: the connection failed.
    fn frame(&self, frame: Bytes) -> bool;
}

impl Link for Conn {
    fn addr(&self) -> &str {
        &self.addr
    }
    fn max_packet(&self) -> usize {
        self.opts.max_packet
    }
    fn is_dead(&self) -> bool {
        Conn::is_dead(self)
    }
    fn fail(&self, why: String) {
        Conn::fail(self, why)
    }
    fn tick(&self) {
        Conn::tick(self)
    }
    fn frame(&self, frame: Bytes) -> bool {
        let r = match wire::decode_frame(frame) {
            Ok(p) => self.handle(p),
            Err(e) => Err(format!("protocol error from {}: {e}", self.addr)),
        };
        if let Err(why) = r {
            self.fail(why);
            return false;
        }
        true
    }
}

/// Frames in from `stream`, each handed to `link` as soon as it is
/// complete, until the connection fails.
///
/// Small packets are received into one buffer, reused (and kept
/// initialized: no zeroing per read). A packet that does not fit — an
/// object's answer carrying a block — gets a buffer of its own as soon as
/// its headers tell how long it is at least ([`wire::frame_need`]): the
/// rest is received straight into it, and its data is handed on as a
/// slice of it ([`wire::decode_frame`]). So a block's bytes are copied
/// once, by the kernel, from the socket to where the caller gets them.
fn receive<L: Link + ?Sized>(link: &L, stream: &mut dyn Read) {
    let max = link.max_packet();
    let mut buf = vec![0u8; SMALL];
    // `buf[start..end]`: received, not yet handed on.
    let (mut start, mut end) = (0usize, 0usize);
    // Bytes the next frame needs at least (from `start`) before walking it
    // again.
    let mut want = 1usize;
    loop {
        if link.is_dead() {
            return;
        }
        // Hand on every complete packet in the buffer.
        while end - start >= want {
            match wire::frame_need(&buf[start..end], max) {
                Ok(wire::Need::Frame(n)) => {
                    let frame = Bytes::copy_from_slice(&buf[start..start + n]);
                    start += n;
                    want = 1;
                    if !link.frame(frame) {
                        return;
                    }
                }
                Ok(wire::Need::AtLeast(n)) => want = n,
                Err(e) => {
                    link.fail(format!("protocol error from {}: {e}", link.addr()));
                    return;
                }
            }
        }
        if start == end {
            (start, end) = (0, 0);
        }
        if want > buf.len() {
            // Too big for the buffer: a buffer of its own.
            let Some((frame, rest)) = read_big(link, stream, &buf[start..end], want) else {
                return;
            };
            buf[..rest.len()].copy_from_slice(&rest);
            (start, end, want) = (0, rest.len(), 1);
            if !link.frame(frame) {
                return;
            }
            continue;
        }
        if end == buf.len() || want > buf.len() - start {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        match stream.read(&mut buf[end..]) {
            Ok(0) => {
                link.fail(format!("{} closed the connection", link.addr()));
                return;
            }
            Ok(k) => end += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if !timed_out(link, e) {
                    return;
                }
            }
        }
    }
}

/// A read failed with `e`: a timeout is the reader's tick (true: go on);
/// anything else fails the connection.
fn timed_out<L: Link + ?Sized>(link: &L, e: io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ) {
        link.tick();
        return true;
    }
    link.fail(format!("receive from {}: {e}", link.addr()));
    false
}

/// Receives a packet of at least `want` bytes (more than [`SMALL`]) whose
/// start, `head`, is in hand: the packet, and what came after it (less
/// than [`SMALL`]). None: the connection failed.
fn read_big<L: Link + ?Sized>(
    link: &L,
    stream: &mut dyn Read,
    head: &[u8],
    mut want: usize,
) -> Option<(Bytes, Vec<u8>)> {
    // A block's buffer goes with its data to the caller (the daemon's
    // block cache) and comes back to the pool of big buffers once the last
    // slice of it is dropped ([`crate::bufpool`]): fresh memory for each
    // 2 MiB block cost more than the copy it saves (the kernel zeroes every
    // page at its first touch: a quarter of wcfsd's CPU in a cold read).
    let mut big = crate::bufpool::take(want + SLACK);
    big.extend_from_slice(head);
    loop {
        while big.len() < want {
            let got = if want > big.len() + 1 {
                // The headers say the packet goes on at least to `want`:
                // read up to there, into the spare capacity as it is (no
                // zeroing first; bytes received before a timeout stay).
                let left = (want - big.len()) as u64;
                (&mut *stream).take(left).read_to_end(&mut big)
            } else {
                // Only that it goes on (headers cut short): what comes.
                let len = big.len();
                big.resize(len + (64 << 10), 0);
                let r = stream.read(&mut big[len..]);
                big.truncate(len + *r.as_ref().unwrap_or(&0));
                r
            };
            match got {
                Ok(_) if big.len() < want => {
                    link.fail(format!("{} closed the connection", link.addr()));
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    if !timed_out(link, e) || link.is_dead() {
                        return None;
                    }
                }
            }
        }
        match wire::frame_need(&big, link.max_packet()) {
            Ok(wire::Need::Frame(n)) => {
                let rest = big.split_off(n);
                return Some((crate::bufpool::freeze(big), rest));
            }
            Ok(wire::Need::AtLeast(n)) => want = n,
            Err(e) => {
                link.fail(format!("protocol error from {}: {e}", link.addr()));
                return None;
            }
        }
    }
}

/// A big packet's buffer's room past the length first asked for (the
/// packet's last arguments after its data).
const SLACK: usize = 256;

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn#{} {}", self.id, self.addr)
    }
}

#[cfg(test)]
mod tests {
    //! The frame reader against the plain decoder ([`wire::frame_len`] on
    //! the whole stream) as oracle, the stream split anywhere: every cut
    //! of a packet's headers, of the reader's small buffer's edge, of a
    //! packet's end, with timeouts between reads.
    use super::*;
    use crate::types::{Oid, Tid};
    use std::cell::{Cell, RefCell};

    /// Collects a copy of each frame, and holds every third one as it
    /// came (the others dropped at once: their buffers go back to the
    /// pool and take the next big packets while these are held); the
    /// connection "fails" at the stream's end.
    #[derive(Default)]
    struct Fake {
        frames: RefCell<Vec<Vec<u8>>>,
        held: RefCell<Vec<(usize, Bytes)>>,
        failed: RefCell<Option<String>>,
        ticks: Cell<usize>,
    }

    impl Link for Fake {
        fn addr(&self) -> &str {
            "fake"
        }
        fn max_packet(&self) -> usize {
            64 << 20
        }
        fn is_dead(&self) -> bool {
            self.failed.borrow().is_some()
        }
        fn fail(&self, why: String) {
            self.failed.borrow_mut().get_or_insert(why);
        }
        fn tick(&self) {
            self.ticks.set(self.ticks.get() + 1);
        }
        fn frame(&self, frame: Bytes) -> bool {
            // A frame that is not a packet is the reader's fault here.
            let p = wire::decode_frame(frame.clone()).expect("a frame decodes");
            let mut frames = self.frames.borrow_mut();
            frames.push(frame.to_vec());
            if frames.len() % 3 == 1 {
                self.held.borrow_mut().push((frames.len() - 1, frame));
            }
            drop(p);
            true
        }
    }

    /// `data` in chunks of the given lengths (then what is left), a
    /// timeout before each chunk whose index is in `timeouts`.
    struct Chunks<'a> {
        data: &'a [u8],
        cuts: Vec<usize>,
        next: usize,
        timeouts: Vec<usize>,
        timed_out: bool,
    }

    impl Read for Chunks<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.timeouts.contains(&self.next) && !self.timed_out {
                self.timed_out = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.timed_out = false;
            // (A cut at 0 is no cut: a read of nothing is the end.)
            while self.cuts.get(self.next) == Some(&0) {
                self.next += 1;
            }
            let mut n = self.data.len();
            if let Some(&c) = self.cuts.get(self.next) {
                n = c;
            }
            let n = n.min(self.data.len()).min(b.len());
            b[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            if self.cuts.get(self.next).is_some_and(|c| *c == n) {
                self.next += 1;
            } else if let Some(c) = self.cuts.get_mut(self.next) {
                // (The reader asked for less than the chunk: the rest of
                // it next time.)
                *c -= n;
            }
            Ok(n)
        }
    }

    fn object(id: u32, data: &[u8]) -> Vec<u8> {
        wire::encode_packet(
            id,
            code::ASK_OBJECT | wire::RESPONSE,
            vec![
                wire::oid_value(Oid(id as u64)),
                wire::tid_value(Tid(7)),
                Value::Nil,
                0.into(),
                wire::bin(&wire::sha1(data)),
                wire::bin(data),
                Value::Nil,
            ],
        )
    }

    fn data(n: usize, seed: u32) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed) as u8)
            .collect()
    }

    /// The oracle: the stream cut into packets by the plain decoder.
    fn oracle(stream: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut b = stream;
        while !b.is_empty() {
            let n = wire::frame_len(b, 64 << 20).unwrap().expect("whole");
            out.push(b[..n].to_vec());
            b = &b[n..];
        }
        out
    }

    /// Runs the reader over `stream` cut as `cuts` says; checks it hands
    /// on exactly the oracle's frames, then fails at the end of the
    /// stream (and nothing else).
    fn check(stream: &[u8], want: &[Vec<u8>], cuts: Vec<usize>, timeouts: Vec<usize>, what: &str) {
        let link = Fake::default();
        let mut rd = Chunks {
            data: stream,
            cuts,
            next: 0,
            timeouts,
            timed_out: false,
        };
        receive(&link, &mut rd);
        let why = link.failed.borrow().clone();
        assert_eq!(
            why.as_deref(),
            Some("fake closed the connection"),
            "{what}: ended other than at the stream's end"
        );
        let got = link.frames.borrow();
        assert_eq!(got.len(), want.len(), "{what}: frames");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                g[..] == w[..],
                "{what}: frame {i} differs ({} vs {} bytes)",
                g.len(),
                w.len()
            );
        }
        // Those held are as they were when handed on.
        for (i, f) in link.held.borrow().iter() {
            assert!(f[..] == want[*i][..], "{what}: held frame {i} changed");
        }
    }

    /// Small packets (answers, notifications, an object), the stream cut
    /// in two at every byte, in three at every byte and a few after it,
    /// and byte by byte.
    #[test]
    fn small_packets_cut_anywhere() {
        let mut stream = Vec::new();
        stream.extend(wire::encode_packet(1, code::PING | wire::RESPONSE, vec![]));
        stream.extend(object(2, &data(300, 2)));
        stream.extend(wire::encode_packet(
            3,
            code::NOTIFY_NODE_INFORMATION,
            vec![
                1.5f64.into(),
                Value::Array((0..40u64).map(Value::from).collect()),
            ],
        ));
        stream.extend(object(4, b""));
        stream.extend(object(5, &data(70, 5)));
        let want = oracle(&stream);
        assert_eq!(want.len(), 5);
        for k in 0..=stream.len() {
            check(&stream, &want, vec![k], vec![], &format!("cut at {k}"));
            for d in [1, 2, 5, 17] {
                check(
                    &stream,
                    &want,
                    vec![k, d],
                    vec![1],
                    &format!("cuts at {k}, +{d}"),
                );
            }
        }
        check(
            &stream,
            &want,
            vec![1; stream.len()],
            vec![0, 3, 50],
            "byte by byte",
        );
    }

    /// Packets bigger than the reader's buffer, and around its size: objects
    /// whose data ends just before, at and after the buffer's edge, one
    /// with nothing, and a big packet whose headers do not tell
    /// its length (a long list of ints of 3 bytes each, counted as one
    /// until read), between small ones; the stream cut at every byte of
    /// each packet's start and end, of the buffer's edge, and at random.
    #[test]
    fn big_packets_cut_anywhere() {
        let mut stream = Vec::new();
        let mut starts = Vec::new();
        let mut add = |stream: &mut Vec<u8>, p: Vec<u8>| {
            starts.push(stream.len());
            stream.extend(p);
        };
        let mut id = 0;
        for n in [
            SMALL - 60,
            SMALL - 40,
            SMALL - 1,
            SMALL,
            SMALL + 1,
            0,
            2 * SMALL + 7,
        ] {
            id += 1;
            add(&mut stream, object(id, &data(n, id)));
            id += 1;
            add(
                &mut stream,
                wire::encode_packet(id, code::PING | wire::RESPONSE, vec![]),
            );
        }
        add(
            &mut stream,
            wire::encode_packet(
                99,
                code::NOTIFY_NODE_INFORMATION,
                vec![Value::Array(
                    (0..90_000u64)
                        .map(|i| Value::from(1000 + i % 60000))
                        .collect(),
                )],
            ),
        );
        add(&mut stream, object(100, &data(5000, 100)));
        starts.push(stream.len());
        let want = oracle(&stream);
        assert_eq!(want.len(), starts.len() - 1);
        let mut points: Vec<usize> = Vec::new();
        for &s in &starts {
            points.extend(s.saturating_sub(40)..(s + 64).min(stream.len()));
        }
        for &s in &starts[..starts.len() - 1] {
            points.extend((s + SMALL - 64)..(s + SMALL + 64).min(stream.len()));
        }
        points.sort();
        points.dedup();
        for &k in &points {
            check(&stream, &want, vec![k], vec![1], &format!("cut at {k}"));
        }
        // Random chunks (a fixed generator: the same cuts every run).
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..24 {
            let limit = [1000usize, 70_000, SMALL + 3, 3 << 20][round % 4];
            let (mut cuts, mut left) = (Vec::new(), stream.len());
            while left > 0 {
                let c = (1 + rnd() as usize % limit).min(left);
                cuts.push(c);
                left -= c;
            }
            let timeouts = (0..cuts.len()).filter(|_| rnd() % 4 == 0).collect();
            check(
                &stream,
                &want,
                cuts,
                timeouts,
                &format!("random round {round}"),
            );
        }
    }
}
