//! One open of `head/watch`: a stream of lines `<stream> <message>\n`.
//!
//! Client → daemon: FUSE writes, split into lines (a line may span writes;
//! one longer than [`MAX_LINE`] is malformed). Odd streams are client
//! requests (`watch`, `bye`), even ones replies to our pins. Each line is
//! handled on the writing FUSE worker, quickly: an ack completes its pin,
//! `bye` shuts the link down, a `watch` is handed to a thread of its own.
//!
//! Daemon → client: lines are queued; a FUSE read takes what is queued, or
//! is parked (its reply kept) until a line comes, the link goes down
//! (then: what is still queued, then EOF), its handle is flushed or
//! released (EINTR), or its thread is found dying (EINTR, see
//! [`Link::reap`]). One read may be parked per link. A flush that finds
//! no parked read makes the next read that would park return EINTR: the
//! reader of a closing client may be between two reads.
//!
//! A malformed line — not `<decimal stream> <message>`, a reply on an even
//! stream (0 included) with no pin of ours in flight — gets `0 error: <why>`
//! and the link is shut down; pins in flight on it then count as failed
//! (the client is faulty). A well-framed odd request we do not understand
//! gets `<stream> error bad watch: <why>` and the link stays usable. The
//! texts are upstream's ([`super::text`]).

use super::pin::PinSlot;
use super::text::{self, quote};
use super::{watch, Isolation};
use crate::fs::reply::ReplyData;
use fuser::Errno;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zodb::{Oid, Tid};

/// Longest line accepted from a client (a `watch` is ~50 bytes).
pub(crate) const MAX_LINE: usize = 1024;

pub(crate) struct Link {
    pub(crate) fh: u64,
    /// The opener's thread group: the process to kill if it fails a pin.
    pub(crate) pid: i32,
    down: AtomicBool,
    /// Set once the link was found faulty (decided once).
    pub(super) faulted: AtomicBool,
    io: Mutex<Io>,
    /// Serializes watch requests of this link *for one file* (they may wait
    /// for head and for acks); requests for different files proceed
    /// concurrently (SPEC: requests on one link are handled concurrently).
    setup: Mutex<HashMap<Oid, Arc<Mutex<()>>>>,
    pub(super) watches: Mutex<HashMap<Oid, Arc<watch::Watch>>>,
    pub(super) pins: Mutex<Pins>,
}

#[derive(Default)]
struct Io {
    out: Vec<u8>,
    inbuf: Vec<u8>,
    parked: Option<Parked>,
    /// A flush found no parked read: the next read that would park gets
    /// EINTR instead. The closing thread's reader may be just between two
    /// reads; without this it would park for good.
    flushed: bool,
    /// While > 0, reads of a link that is down park instead of seeing
    /// EOF: the process of a faulty client is being killed
    /// ([`Link::hold_eof`]; a count, so that the holds of the write path
    /// and of the kill nest).
    hold_eof: u32,
}

struct Parked {
    reply: ReplyData,
    size: usize,
    tid: u32,
}

#[derive(Default)]
pub(super) struct Pins {
    /// Last even stream used.
    last: u64,
    pub(super) inflight: HashMap<u64, Arc<PinSlot>>,
}

impl Pins {
    pub(super) fn next_stream(&mut self) -> u64 {
        self.last += 2;
        self.last
    }
}

enum Answer {
    Data(ReplyData, Vec<u8>),
    Err(ReplyData, Errno),
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Data(r, d) => r.data(&d),
            Answer::Err(r, e) => r.error(e),
        }
    }
}

impl Io {
    fn take(&mut self, size: usize) -> Vec<u8> {
        let n = size.min(self.out.len());
        self.out.drain(..n).collect()
    }
}

impl Link {
    /// The lock that serializes watch requests of this link for `file`.
    pub(super) fn setup_lock(&self, file: Oid) -> Arc<Mutex<()>> {
        self.setup.lock().entry(file).or_default().clone()
    }

    pub(super) fn new(fh: u64, pid: i32) -> Link {
        Link {
            fh,
            pid,
            down: AtomicBool::new(false),
            faulted: AtomicBool::new(false),
            io: Mutex::new(Io::default()),
            setup: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            pins: Mutex::new(Pins::default()),
        }
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    pub(super) fn read(&self, size: usize, tid: u32, reply: ReplyData) {
        let mut io = self.io.lock();
        if !io.out.is_empty() {
            let data = io.take(size);
            drop(io);
            return reply.data(&data);
        }
        if self.is_down() && io.hold_eof == 0 {
            drop(io);
            return reply.data(&[]); // EOF
        }
        if io.parked.is_some() {
            drop(io);
            return reply.error(Errno::EBUSY);
        }
        if std::mem::take(&mut io.flushed) {
            drop(io);
            return reply.error(Errno::EINTR);
        }
        io.parked = Some(Parked { reply, size, tid });
    }

    /// Queues `line` (without its `\n`); false if the link is down.
    pub(super) fn send(&self, line: &str) -> bool {
        self.push(line, false)
    }

    fn push(&self, line: &str, last: bool) -> bool {
        let mut io = self.io.lock();
        if self.is_down() {
            return false;
        }
        io.out.extend_from_slice(line.as_bytes());
        io.out.push(b'\n');
        if last {
            // Under io: no line can be queued after the last one.
            self.down.store(true, Ordering::Release);
        }
        answer_parked(io);
        true
    }

    /// Marks the link down, with an optional last line; answers a parked
    /// read (EOF when nothing is left). Whether it was up.
    pub(super) fn close(&self, last: Option<&str>) -> bool {
        if let Some(l) = last {
            if self.push(l, true) {
                return true;
            }
        }
        let io = self.io.lock();
        let was_up = !self.down.swap(true, Ordering::AcqRel);
        answer_parked(io);
        was_up
    }

    /// Answers the parked read, if any, with `err`.
    /// From now until [`Link::release_eof`], a read of the link, once
    /// the lines queued are taken, parks instead of seeing EOF even when
    /// the link is down. For a client found faulty: it must not learn
    /// that its link ended before the signal that kills it is delivered —
    /// upstream's client fails the requests in flight on EOF, and a client
    /// that acts on that (a test process reporting the failure, exiting)
    /// could be gone before we decide whether it is to be killed, or would
    /// report an error where it was to die. (Upstream's server likewise
    /// kills before it closes the link.)
    pub(super) fn hold_eof(&self) {
        self.io.lock().hold_eof += 1;
    }

    /// Ends one [`Link::hold_eof`]; after the last, a parked read of a
    /// link that is down gets what is left, then EOF.
    pub(super) fn release_eof(&self) {
        let mut io = self.io.lock();
        io.hold_eof = io.hold_eof.saturating_sub(1);
        if io.hold_eof == 0 && self.is_down() {
            answer_parked(io);
        }
    }

    pub(super) fn unpark(&self, err: Errno) {
        let p = self.io.lock().parked.take();
        if let Some(p) = p {
            p.reply.error(err);
        }
    }

    /// A descriptor of the link is being closed: its reader, parked now
    /// or about to park, gets EINTR (once; a reader that keeps the link
    /// just reads again).
    pub(super) fn flush(&self) {
        let mut io = self.io.lock();
        match io.parked.take() {
            Some(p) => {
                drop(io);
                p.reply.error(Errno::EINTR);
            }
            None => io.flushed = true,
        }
    }

    /// Answers the parked read with EINTR if its thread is dying: fuser
    /// cannot receive FUSE interrupts, and the kernel would keep a killed
    /// process waiting for our reply forever.
    pub(super) fn reap(&self) {
        let tid = match &self.io.lock().parked {
            Some(p) => p.tid,
            None => return,
        };
        if !super::thread_dying(tid) {
            return;
        }
        let mut io = self.io.lock();
        if io.parked.as_ref().is_some_and(|p| p.tid == tid) {
            let p = io.parked.take().expect("just checked");
            drop(io);
            Answer::Err(p.reply, Errno::EINTR).send();
        }
    }
}

/// Splits `data` into lines and handles them.
pub(super) fn write(iso: &Arc<Isolation>, l: &Arc<Link>, data: &[u8]) -> Result<(), Errno> {
    if l.is_down() {
        return Err(Errno::EPIPE);
    }
    let lines = {
        let mut io = l.io.lock();
        io.inbuf.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(i) = io.inbuf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = io.inbuf.drain(..=i).collect();
            lines.push(raw);
        }
        if io.inbuf.len() > MAX_LINE {
            io.inbuf.clear();
            lines.push(Vec::new()); // reported below, after the full lines
            (lines, true)
        } else {
            (lines, false)
        }
    };
    let (lines, too_long) = lines;
    let n = lines.len();
    for (i, raw) in lines.into_iter().enumerate() {
        let r = if too_long && i == n - 1 {
            Err(format!("invalid frame: line longer than {MAX_LINE} bytes"))
        } else {
            handle_line(iso, l, &raw[..raw.len() - 1])
        };
        if let Err(why) = r {
            log::warn!("head/watch link {} (pid {}): {why}", l.fh, l.pid);
            // With pins in flight the client is faulty: no EOF before
            // the kill (Link::hold_eof), from the shutdown on.
            l.hold_eof();
            let inflight = iso.shutdown(l, Some(format!("0 error: {why}")));
            if inflight > 0 {
                iso.fault(
                    l,
                    &format!("{why}, with {inflight} pin(s) in flight"),
                    false,
                );
            }
            l.release_eof();
            break;
        }
    }
    Ok(())
}

/// Gives a parked read (if any) what is queued — EOF when nothing is and
/// the link is down — and answers it after releasing `io`: the reply goes to
/// the kernel, and no lock of ours is held while talking to it.
fn answer_parked(mut io: parking_lot::MutexGuard<'_, Io>) {
    let answer = io.parked.take().map(|p| {
        let d = io.take(p.size);
        Answer::Data(p.reply, d)
    });
    drop(io);
    if let Some(a) = answer {
        a.send();
    }
}

/// A parsed client request on an odd stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Watch { file: Oid, at: Option<Tid> },
    Bye,
}

/// Parses the message of an odd stream; Err: the text of
/// `<stream> error <text>` (upstream's words, see [`super::text`]).
pub fn parse_request(msg: &str) -> Result<Request, String> {
    if msg == "bye" {
        return Ok(Request::Bye);
    }
    let bad = |why: String| Err(format!("bad watch: {why}"));
    let Some(args) = msg.strip_prefix("watch ") else {
        return bad(format!("not a watch request: {}", quote(msg.as_bytes())));
    };
    let argv: Vec<&str> = args.split(' ').collect();
    if argv.len() != 2 {
        return bad(format!("expected 2 arguments, got {}", argv.len()));
    }
    let Ok(file) = argv[0].parse::<Oid>() else {
        return bad("invalid oid".into());
    };
    let at = match argv[1] {
        "-" => None,
        a => match a.strip_prefix('@').map(str::parse::<Tid>) {
            Some(Ok(t)) => Some(t),
            _ => return bad("invalid at".into()),
        },
    };
    Ok(Request::Watch { file, at })
}

/// Splits `<stream> <message>` (`raw` without its `\n`); Err: why the
/// line is not a frame, in upstream's words.
pub fn parse_frame(raw: &[u8]) -> Result<(u64, &str), String> {
    let quoted = || {
        let mut l = raw.to_vec();
        l.push(b'\n');
        quote(&l)
    };
    let Some(sp) = raw.iter().position(|&b| b == b' ') else {
        return Err(format!("invalid frame: {}", quoted()));
    };
    let s = &raw[..sp];
    let stream = std::str::from_utf8(s)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok());
    let Some(stream) = stream else {
        return Err(format!("invalid frame: {} (invalid stream)", quoted()));
    };
    let msg = std::str::from_utf8(&raw[sp + 1..])
        .map_err(|_| format!("invalid frame: {} (not UTF-8)", quoted()))?;
    Ok((stream, msg))
}

fn handle_line(iso: &Arc<Isolation>, l: &Arc<Link>, raw: &[u8]) -> Result<(), String> {
    let (stream, msg) = parse_frame(raw)?;
    if stream % 2 == 0 {
        // A reply to one of our pins (stream 0 included: never one).
        let slot = l.pins.lock().inflight.remove(&stream);
        let Some(slot) = slot else {
            return Err(format!("{stream}: reply on unexpected stream"));
        };
        if msg == "ack" {
            slot.finish(Ok(()));
        } else {
            let why = format!(
                "{}: expect {}; got {}",
                slot.what(),
                quote(b"ack"),
                quote(msg.as_bytes())
            );
            slot.finish(Err(why.clone()));
            iso.fault(l, &why, true);
        }
        return Ok(());
    }
    match parse_request(msg) {
        Ok(Request::Bye) => {
            // A clean close: pins still in flight are dropped, not failed.
            iso.shutdown(l, None);
        }
        Ok(Request::Watch { file, at }) => {
            let (iso2, l2) = (iso.clone(), l.clone());
            let spawned = std::thread::Builder::new()
                .name("watch".into())
                .spawn(move || watch::serve(&iso2, &l2, stream, file, at));
            if let Err(e) = spawned {
                log::error!("head/watch: spawn: {e}");
                let why = text::Why::Other(format!("cannot start: {e}"));
                l.send(&text::setup_error(
                    stream,
                    file,
                    at.unwrap_or(text::NO_AT),
                    &why,
                ));
            }
        }
        Err(why) => {
            l.send(&format!("{stream} error {why}"));
        }
    }
    Ok(())
}
