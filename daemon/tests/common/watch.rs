//! A raw-line test client of `head/watch` (SPEC §6), and a brute-force
//! model of the pins a watcher must receive (SPEC §5 + §6).
//!
//! # The client
//!
//! [`WatchLink::open`] opens `head/watch` read-write. A reader thread splits
//! what the daemon sends into lines `<stream> <message>` ([`parse_line`]):
//! replies to our requests (odd streams) go to whoever waits for them,
//! daemon requests (even streams: `pin …`) to a pinner thread that records
//! every pin ([`PinRecord`]) *before* answering it the way the link's
//! [`PinMode`] says (ack, never, late, garbage, close the link, or hand it
//! to the test), and stream-0 messages (`0 error …` / `0 fatal …`) are kept
//! ([`WatchLink::fatal`]). Every wait has a timeout ([`WatchLink::timeout`],
//! default [`DEFAULT_TIMEOUT`]) so that a hung daemon fails a test instead
//! of hanging it. Dropping a link closes it (no `bye`): the daemon must
//! then answer the parked read (SPEC §9); the reader thread is waited for a
//! few seconds, then abandoned with a message on stderr.
//!
//! # The model
//!
//! [`PinModel`] keeps, independently of the daemon, per file the content
//! identity of every block at every commit (from Python), the set of blocks
//! read through `head/`, and per watch its `at` and the blocks pinned on
//! it. Fed with the same operations as the daemon, it says which pins each
//! watch must receive; see the rules at [`PinModel`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

/// How long any wait of the client lasts before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The target of a pin: a historical revision or back to head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rev {
    At(Tid),
    Head,
}

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rev::At(t) => write!(f, "@{t}"),
            Rev::Head => write!(f, "@head"),
        }
    }
}

/// One message of the protocol, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Ok,
    Error(String),
    Fatal(String),
    Pin {
        oid: Oid,
        blk: u64,
        rev: Rev,
    },
    Ack,
    /// `watch <oid> @<at>` (Some) or `watch <oid> -` (None).
    Watch {
        oid: Oid,
        at: Option<Tid>,
    },
    Bye,
    /// Anything else, kept verbatim.
    Other(String),
}

/// A line `<stream> <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub stream: u64,
    pub msg: Msg,
}

fn parse_tid_at(s: &str) -> Result<Tid, String> {
    let t = s
        .strip_prefix('@')
        .ok_or_else(|| format!("{s:?}: want @<tid>"))?;
    t.parse().map_err(|e| format!("{e}"))
}

/// Parses one line (without or with its trailing `\n`). Strict for the
/// forms the protocol defines (`pin`, `watch`): a `pin` we cannot parse is
/// a daemon bug, reported as Err; unknown words give [`Msg::Other`].
pub fn parse_line(line: &str) -> Result<Line, String> {
    let l = line.strip_suffix('\n').unwrap_or(line);
    if l.contains('\n') {
        return Err(format!("{line:?}: more than one line"));
    }
    let (s, msg) = l
        .split_once(' ')
        .ok_or_else(|| format!("{line:?}: want \"<stream> <message>\""))?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{line:?}: stream {s:?} is not a decimal number"));
    }
    let stream: u64 = s
        .parse()
        .map_err(|e| format!("{line:?}: stream {s:?}: {e}"))?;
    let (word, rest) = match msg.split_once(' ') {
        Some((w, r)) => (w, Some(r)),
        None => (msg, None),
    };
    let bad = |why: &str| format!("{line:?}: {why}");
    let msg = match (word, rest) {
        ("ok", None) => Msg::Ok,
        ("ack", None) => Msg::Ack,
        ("bye", None) => Msg::Bye,
        // Replies say `error <text>`; stream 0 says `error: <text>` or
        // `fatal: <text>` (upstream's forms).
        ("error" | "error:", r) => Msg::Error(r.unwrap_or("").to_string()),
        ("fatal" | "fatal:", r) => Msg::Fatal(r.unwrap_or("").to_string()),
        ("pin", Some(r)) => {
            let w: Vec<&str> = r.split(' ').collect();
            if w.len() != 3 {
                return Err(bad("want pin <oid> #<blk> @<rev>|@head"));
            }
            let oid: Oid = w[0].parse().map_err(|e| bad(&format!("{e}")))?;
            let blk = w[1]
                .strip_prefix('#')
                .filter(|b| !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| bad("want #<decimal blk>"))?
                .parse()
                .map_err(|e| bad(&format!("blk: {e}")))?;
            let rev = if w[2] == "@head" {
                Rev::Head
            } else {
                Rev::At(parse_tid_at(w[2]).map_err(|e| bad(&e))?)
            };
            Msg::Pin { oid, blk, rev }
        }
        ("pin", None) => return Err(bad("pin without arguments")),
        ("watch", Some(r)) => {
            let w: Vec<&str> = r.split(' ').collect();
            if w.len() != 2 {
                return Err(bad("want watch <oid> @<at>|-"));
            }
            let oid: Oid = w[0].parse().map_err(|e| bad(&format!("{e}")))?;
            let at = if w[1] == "-" {
                None
            } else {
                Some(parse_tid_at(w[1]).map_err(|e| bad(&e))?)
            };
            Msg::Watch { oid, at }
        }
        _ => Msg::Other(msg.to_string()),
    };
    Ok(Line { stream, msg })
}

/// What the pinner thread does with a pin (after recording it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinMode {
    /// `<stream> ack` at once.
    Ack,
    /// Nothing.
    Never,
    /// `<stream> ack` after a sleep (the pinner handles nothing else
    /// meanwhile).
    Late(Duration),
    /// `<stream> <this text>` instead of `ack`.
    Garbage(String),
    /// Close our side of the link (writer closed; the reader thread exits
    /// at its next wake-up).
    Close,
    /// Hand the pin to the test ([`WatchLink::next_pin`]); it answers with
    /// [`WatchLink::ack`] or anything else.
    Manual,
}

/// A pin as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRecord {
    pub stream: u64,
    pub oid: Oid,
    pub blk: u64,
    pub rev: Rev,
    pub t: Instant,
}

impl PinRecord {
    /// (oid, blk, rev): what the model predicts.
    pub fn key(&self) -> (Oid, u64, Rev) {
        (self.oid, self.blk, self.rev)
    }
}

struct Shared {
    mode: Mutex<PinMode>,
    writer: Mutex<Option<File>>,
    pending: Mutex<HashMap<u64, Sender<Line>>>,
    pins: Mutex<Vec<PinRecord>>,
    fatal: Mutex<Vec<Line>>,
    /// Lines we could not parse or route: each one a daemon bug.
    protocol_errors: Mutex<Vec<String>>,
    /// Every line received, for failure messages.
    rx_log: Mutex<Vec<String>>,
    closing: AtomicBool,
    closed: AtomicBool,
    /// Why the reader stopped (EOF or the read error).
    close_reason: Mutex<String>,
    /// Reads answered EINTR while we were not closing.
    interrupted: AtomicU64,
}

impl Shared {
    fn send_raw(&self, line: &str) -> std::io::Result<()> {
        let mut buf = line.as_bytes().to_vec();
        if buf.last() != Some(&b'\n') {
            buf.push(b'\n');
        }
        let mut w = self.writer.lock().unwrap();
        let f = w.as_mut().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "link closed by us")
        })?;
        // One write(2) per line: the daemon may read line by line.
        let n = f.write(&buf)?;
        if n != buf.len() {
            return Err(std::io::Error::other(format!(
                "short write to head/watch: {n} of {}",
                buf.len()
            )));
        }
        Ok(())
    }

    fn close_writer(&self) {
        self.closing.store(true, Ordering::SeqCst);
        drop(self.writer.lock().unwrap().take());
    }
}

/// One link: an open of `head/watch`.
pub struct WatchLink {
    sh: Arc<Shared>,
    /// The descriptors of the link (writer, reader): one open file.
    fds: [std::os::fd::RawFd; 2],
    next_stream: AtomicU64,
    manual: Mutex<Receiver<PinRecord>>,
    reader_done: Mutex<Receiver<()>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Bound of every wait (requests, closing).
    pub timeout: Duration,
}

impl WatchLink {
    /// Opens `path` (a `head/watch`) with pins acked at once.
    pub fn open(path: &Path) -> std::io::Result<WatchLink> {
        Self::open_with(path, PinMode::Ack)
    }

    pub fn open_with(path: &Path, mode: PinMode) -> std::io::Result<WatchLink> {
        use std::os::fd::AsRawFd;
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        let rf = f.try_clone()?;
        let fds = [f.as_raw_fd(), rf.as_raw_fd()];
        let sh = Arc::new(Shared {
            mode: Mutex::new(mode),
            writer: Mutex::new(Some(f)),
            pending: Mutex::new(HashMap::new()),
            pins: Mutex::new(Vec::new()),
            fatal: Mutex::new(Vec::new()),
            protocol_errors: Mutex::new(Vec::new()),
            rx_log: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(String::new()),
            interrupted: AtomicU64::new(0),
        });
        let (pin_tx, pin_rx) = mpsc::channel::<PinRecord>();
        let (manual_tx, manual_rx) = mpsc::channel::<PinRecord>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let sh_r = sh.clone();
        let reader = std::thread::Builder::new()
            .name("watch-reader".into())
            .spawn(move || {
                reader_loop(rf, &sh_r, pin_tx);
                let _ = done_tx.send(());
            })?;
        let sh_p = sh.clone();
        let pinner = std::thread::Builder::new()
            .name("watch-pinner".into())
            .spawn(move || pinner_loop(&sh_p, pin_rx, manual_tx))?;
        Ok(WatchLink {
            sh,
            fds,
            next_stream: AtomicU64::new(1),
            manual: Mutex::new(manual_rx),
            reader_done: Mutex::new(done_rx),
            threads: Mutex::new(vec![reader, pinner]),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Changes what is done with the next pins.
    pub fn set_mode(&self, mode: PinMode) {
        *self.sh.mode.lock().unwrap() = mode;
    }

    /// Sends `line` as is (a `\n` is added when missing), in one write(2).
    pub fn send_raw(&self, line: &str) -> std::io::Result<()> {
        self.sh.send_raw(line)
    }

    /// A fresh odd stream id.
    pub fn new_stream(&self) -> u64 {
        self.next_stream.fetch_add(2, Ordering::SeqCst)
    }

    /// Sends `<odd> <msg>` and waits for the reply on that stream. Err: the
    /// link closed or the timeout passed (with what was received).
    pub fn request(&self, msg: &str) -> Result<Line, String> {
        let s = self.new_stream();
        self.request_on(s, msg)
    }

    /// [`WatchLink::request`] on a given stream (may be even or reused: for
    /// error-path tests).
    pub fn request_on(&self, stream: u64, msg: &str) -> Result<Line, String> {
        let rx = self.expect_reply(stream);
        self.send_raw(&format!("{stream} {msg}"))
            .map_err(|e| format!("link: send {stream} {msg}: {e}"))?;
        self.wait_reply(stream, rx, self.timeout)
            .map_err(|e| format!("{e} (request {stream} {msg})"))
    }

    /// Registers interest in the reply on `stream` (before sending).
    pub fn expect_reply(&self, stream: u64) -> Receiver<Line> {
        let (tx, rx) = mpsc::channel();
        self.sh.pending.lock().unwrap().insert(stream, tx);
        rx
    }

    /// Waits for a reply registered with [`WatchLink::expect_reply`].
    pub fn wait_reply(
        &self,
        stream: u64,
        rx: Receiver<Line>,
        timeout: Duration,
    ) -> Result<Line, String> {
        match rx.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => {
                self.sh.pending.lock().unwrap().remove(&stream);
                Err(format!(
                    "link: no reply on stream {stream} within {timeout:?}; received: {:?}",
                    self.received()
                ))
            }
            Err(RecvTimeoutError::Disconnected) => Err(format!(
                "link: closed ({}) before a reply on stream {stream}; stream 0: {:?}",
                self.sh.close_reason.lock().unwrap(),
                self.fatal()
            )),
        }
    }

    /// `watch <oid> @<at>`: Ok on `ok`; Err(text) on `error <text>`; Err
    /// starting with "link:" if the link failed or timed out; Err starting
    /// with "unexpected" for any other reply. Pins arriving meanwhile are
    /// handled by the pinner.
    pub fn watch(&self, oid: Oid, at: Tid) -> Result<(), String> {
        Self::ok_or_error(self.request(&format!("watch {oid} @{at}"))?)
    }

    /// `watch <oid> -`.
    pub fn unwatch(&self, oid: Oid) -> Result<(), String> {
        Self::ok_or_error(self.request(&format!("watch {oid} -"))?)
    }

    fn ok_or_error(l: Line) -> Result<(), String> {
        match l.msg {
            Msg::Ok => Ok(()),
            Msg::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// `<odd> bye` (no reply is expected: the daemon closes the link).
    pub fn bye(&self) -> std::io::Result<()> {
        let s = self.new_stream();
        self.send_raw(&format!("{s} bye"))
    }

    /// `<stream> ack`.
    pub fn ack(&self, stream: u64) -> std::io::Result<()> {
        self.send_raw(&format!("{stream} ack"))
    }

    /// The next pin in [`PinMode::Manual`].
    pub fn next_pin(&self, timeout: Duration) -> Option<PinRecord> {
        self.manual.lock().unwrap().recv_timeout(timeout).ok()
    }

    /// Every pin received so far, in order.
    pub fn pins(&self) -> Vec<PinRecord> {
        self.sh.pins.lock().unwrap().clone()
    }

    /// The pins received since the last call, in order.
    pub fn take_pins(&self) -> Vec<PinRecord> {
        std::mem::take(&mut *self.sh.pins.lock().unwrap())
    }

    /// Stream-0 messages received (`0 error …`, `0 fatal …`).
    pub fn fatal(&self) -> Vec<Line> {
        self.sh.fatal.lock().unwrap().clone()
    }

    /// Lines that were not valid protocol for a daemon to send.
    pub fn protocol_errors(&self) -> Vec<String> {
        self.sh.protocol_errors.lock().unwrap().clone()
    }

    /// Every line received so far.
    pub fn received(&self) -> Vec<String> {
        self.sh.rx_log.lock().unwrap().clone()
    }

    /// The daemon closed the link (EOF or read error seen).
    pub fn is_closed(&self) -> bool {
        self.sh.closed.load(Ordering::SeqCst)
    }

    /// Waits until the daemon closes the link.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_closed() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// How many of our reads the daemon interrupted (EINTR) while we kept
    /// the link: a client like upstream's takes its link down on one.
    pub fn interrupts(&self) -> u64 {
        self.sh.interrupted.load(Ordering::SeqCst)
    }

    /// The raw descriptors of the link (they share one open file), e.g. to
    /// let a child inherit them.
    pub fn fds(&self) -> [std::os::fd::RawFd; 2] {
        self.fds
    }

    /// Why the reader stopped ("" while it runs).
    pub fn close_reason(&self) -> String {
        self.sh.close_reason.lock().unwrap().clone()
    }

    /// Closes our side (as [`PinMode::Close`] does) and waits for the
    /// reader thread; Err if it is still blocked after the timeout (the
    /// daemon did not answer the parked read).
    pub fn close(&self) -> Result<(), String> {
        self.sh.close_writer();
        match self.reader_done.lock().unwrap().recv_timeout(self.timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                for t in self.threads.lock().unwrap().drain(..) {
                    let _ = t.join();
                }
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "reader of head/watch still blocked {:?} after close",
                self.timeout
            )),
        }
    }
}

impl Drop for WatchLink {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            eprintln!("WatchLink drop: {e}; abandoning its threads");
            self.threads.lock().unwrap().clear();
        }
    }
}

fn reader_loop(mut f: File, sh: &Shared, pin_tx: Sender<PinRecord>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut acc: Vec<u8> = Vec::new();
    // After we close our side we keep reading until the daemon answers
    // EOF (a parked read is answered on flush, SPEC §9).
    let reason = loop {
        match f.read(&mut buf) {
            Ok(0) => break "EOF".to_string(),
            Ok(n) => {
                acc.extend_from_slice(&buf[..n]);
                while let Some(i) = acc.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = acc.drain(..=i).collect();
                    let line = String::from_utf8_lossy(&raw).into_owned();
                    handle_line(sh, &line, &pin_tx);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                if sh.closing.load(Ordering::SeqCst) {
                    break "EINTR after close".to_string();
                }
                sh.interrupted.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => break format!("read: {e}"),
        }
    };
    if !acc.is_empty() {
        sh.protocol_errors.lock().unwrap().push(format!(
            "unterminated line at close: {:?}",
            String::from_utf8_lossy(&acc)
        ));
    }
    *sh.close_reason.lock().unwrap() = reason;
    sh.closed.store(true, Ordering::SeqCst);
    sh.pending.lock().unwrap().clear(); // waiters see Disconnected
}

fn handle_line(sh: &Shared, line: &str, pin_tx: &Sender<PinRecord>) {
    let t = Instant::now();
    sh.rx_log.lock().unwrap().push(line.trim_end().to_string());
    let l = match parse_line(line) {
        Ok(l) => l,
        Err(e) => {
            sh.protocol_errors.lock().unwrap().push(e);
            return;
        }
    };
    if l.stream == 0 {
        sh.fatal.lock().unwrap().push(l);
        return;
    }
    if l.stream % 2 == 0 {
        match l.msg {
            Msg::Pin { oid, blk, rev } => {
                let _ = pin_tx.send(PinRecord {
                    stream: l.stream,
                    oid,
                    blk,
                    rev,
                    t,
                });
            }
            _ => sh
                .protocol_errors
                .lock()
                .unwrap()
                .push(format!("daemon request we do not know: {line:?}")),
        }
        return;
    }
    match sh.pending.lock().unwrap().remove(&l.stream) {
        Some(tx) => {
            let _ = tx.send(l);
        }
        None => sh
            .protocol_errors
            .lock()
            .unwrap()
            .push(format!("reply on a stream nobody waits for: {line:?}")),
    }
}

fn pinner_loop(sh: &Shared, rx: Receiver<PinRecord>, manual: Sender<PinRecord>) {
    for p in rx {
        sh.pins.lock().unwrap().push(p.clone());
        let mode = sh.mode.lock().unwrap().clone();
        match mode {
            PinMode::Ack => {
                let _ = sh.send_raw(&format!("{} ack", p.stream));
            }
            PinMode::Never => {}
            PinMode::Late(d) => {
                std::thread::sleep(d);
                let _ = sh.send_raw(&format!("{} ack", p.stream));
            }
            PinMode::Garbage(g) => {
                let _ = sh.send_raw(&format!("{} {g}", p.stream));
            }
            PinMode::Close => sh.close_writer(),
            PinMode::Manual => {
                let _ = manual.send(p);
            }
        }
    }
}

/// Reads `.wcfs/stats` of the mount at `mnt` into name → value.
pub fn stats(mnt: &Path) -> HashMap<String, i64> {
    let text = std::fs::read_to_string(mnt.join(".wcfs/stats")).expect("read .wcfs/stats");
    parse_stats(&text)
}

/// Parses lines `<Name>\t: <integer>` (SPEC §5); other lines are ignored.
pub fn parse_stats(text: &str) -> HashMap<String, i64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The model.

/// A pin the model expects: (file, blk, rev).
pub type ExpPin = (Oid, u64, Rev);

/// What one watch (link, file) holds in the model.
#[derive(Debug, Clone, Default)]
pub struct WatchState {
    pub at: Tid,
    /// blk → rev for blocks pinned to `@rev` (absent: at head).
    pub pinned: BTreeMap<u64, Tid>,
}

/// Brute-force model of SPEC §6 pins, independent of the daemon.
///
/// State: the history start `h0` (the daemon's first head, SPEC §5); per
/// file the content identity of every block after every commit ≥ `h0`
/// (Python's ZBlk oid+serial, plus chunk oid+serial for ZBlk1; a hole has
/// none); the blocks read through `head/` by anyone; the files opened
/// through `head/bigfile/`; per watch (link, file): `at` and its pinned
/// blocks.
///
/// Rules:
/// - `changes(f, blk)`: the commits T > h0 where blk's identity after T
///   differs from before T (SPEC §3: changed data ⇒ new ZBlk revision or a
///   different ZBlk; a hole is an identity too).
/// - `blkrev(f, blk, at)` = the last change ≤ at, or `h0` if none (§5).
/// - `want(w, blk)` = `@blkrev(blk, w.at)` if blk changed in (w.at, head],
///   else head.
/// - watch (link, f, at) (§6): error, in this order and in upstream's
///   words, if at < h0 (older than the kept history), if f was never
///   opened under head/bigfile, or if at < the link's current at for f
///   (the files exist before h0: no epochs); else, for every block read through
///   head/ whose `want` differs from what the watch holds now, one pin to
///   `want` (`@head` for a block pinned before that no longer needs it); a
///   first watch holds nothing, so only `@rev` pins.
/// - `watch f -`: the watch is gone; no pins.
/// - head read of (f, blk): blk counts as read; then for every watch of f
///   whose `want(blk)` is not what it holds, one pin (§6 "once": a block
///   pinned already to the same rev is not pinned again).
#[derive(Debug, Clone)]
pub struct PinModel {
    pub h0: Tid,
    pub head: Tid,
    /// file → blk → tids of changes (> h0), ascending.
    changes: HashMap<Oid, HashMap<u64, Vec<Tid>>>,
    /// file → current identity of every block.
    ident: HashMap<Oid, BTreeMap<u64, String>>,
    pub read: HashMap<Oid, BTreeSet<u64>>,
    pub opened: HashSet<Oid>,
    pub watches: BTreeMap<(usize, Oid), WatchState>,
}

impl PinModel {
    /// `h0`: head when the daemon started; `state`: every file's block
    /// identities as of h0.
    pub fn new(h0: Tid, state: HashMap<Oid, BTreeMap<u64, String>>) -> PinModel {
        PinModel {
            h0,
            head: h0,
            changes: HashMap::new(),
            ident: state,
            read: HashMap::new(),
            opened: HashSet::new(),
            watches: BTreeMap::new(),
        }
    }

    /// A commit `tid` after which the files' block identities are `state`
    /// (files absent from `state` did not change). Returns the changed
    /// blocks per file.
    pub fn commit(
        &mut self,
        tid: Tid,
        state: HashMap<Oid, BTreeMap<u64, String>>,
    ) -> BTreeMap<Oid, BTreeSet<u64>> {
        assert!(tid > self.head, "commit {tid} not after head {}", self.head);
        let mut out = BTreeMap::new();
        for (f, new) in state {
            let old = self.ident.get(&f).cloned().unwrap_or_default();
            let blks: BTreeSet<u64> = old.keys().chain(new.keys()).copied().collect();
            let changed: BTreeSet<u64> = blks
                .into_iter()
                .filter(|b| old.get(b) != new.get(b))
                .collect();
            let fc = self.changes.entry(f).or_default();
            for &b in &changed {
                fc.entry(b).or_default().push(tid);
            }
            if !changed.is_empty() {
                out.insert(f, changed);
            }
            self.ident.insert(f, new);
        }
        self.head = tid;
        out
    }

    fn blk_changes(&self, f: Oid, blk: u64) -> &[Tid] {
        self.changes
            .get(&f)
            .and_then(|m| m.get(&blk))
            .map_or(&[], |v| v.as_slice())
    }

    /// The last revision ≤ at that changed blk, or h0.
    pub fn blkrev(&self, f: Oid, blk: u64, at: Tid) -> Tid {
        self.blk_changes(f, blk)
            .iter()
            .rev()
            .find(|t| **t <= at)
            .copied()
            .unwrap_or(self.h0)
            .max(self.h0)
    }

    /// Whether blk changed in (a, b].
    pub fn changed_in(&self, f: Oid, blk: u64, a: Tid, b: Tid) -> bool {
        self.blk_changes(f, blk).iter().any(|t| *t > a && *t <= b)
    }

    fn want(&self, f: Oid, blk: u64, at: Tid) -> Rev {
        if self.changed_in(f, blk, at, self.head) {
            Rev::At(self.blkrev(f, blk, at))
        } else {
            Rev::Head
        }
    }

    pub fn open(&mut self, f: Oid) {
        self.opened.insert(f);
    }

    /// `watch f @at` on `link`: Err(why) if the daemon must answer error,
    /// else the pins it must send first (sorted).
    pub fn watch(&mut self, link: usize, f: Oid, at: Tid) -> Result<Vec<ExpPin>, String> {
        let why = |reason: String| Err(format!("setup watch f<{f}> @{at}: {reason}"));
        if at < self.h0 {
            // The duration after "δt = " is not modelled: a prefix.
            return why(format!(
                "too far away back from head/at (@{}); δt = ",
                self.head
            ));
        }
        if !self.opened.contains(&f) {
            return why("file not yet known to wcfs or is not a ZBigFile".into());
        }
        if let Some(w) = self.watches.get(&(link, f)) {
            if at < w.at {
                return why("going back in history is forbidden".into());
            }
        }
        let mut w = self.watches.remove(&(link, f)).unwrap_or_default();
        w.at = at;
        let mut pins = Vec::new();
        let read: Vec<u64> = self
            .read
            .get(&f)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        // Blocks pinned earlier are read blocks too; go over both anyway.
        let blks: BTreeSet<u64> = read.into_iter().chain(w.pinned.keys().copied()).collect();
        for blk in blks {
            let want = self.want(f, blk, at);
            let have = w.pinned.get(&blk).map_or(Rev::Head, |t| Rev::At(*t));
            if want != have {
                pins.push((f, blk, want));
                match want {
                    Rev::At(t) => w.pinned.insert(blk, t),
                    Rev::Head => w.pinned.remove(&blk),
                };
            }
        }
        self.watches.insert((link, f), w);
        pins.sort();
        Ok(pins)
    }

    /// `watch f -` on `link`.
    pub fn unwatch(&mut self, link: usize, f: Oid) {
        self.watches.remove(&(link, f));
    }

    /// Link closed: all its watches go.
    pub fn close_link(&mut self, link: usize) {
        self.watches.retain(|(l, _), _| *l != link);
    }

    /// A read of `head/bigfile/f` block blk: the pins per link (sorted).
    pub fn read(&mut self, f: Oid, blk: u64) -> BTreeMap<usize, Vec<ExpPin>> {
        self.opened.insert(f);
        self.read.entry(f).or_default().insert(blk);
        let mut out: BTreeMap<usize, Vec<ExpPin>> = BTreeMap::new();
        let keys: Vec<(usize, Oid)> = self
            .watches
            .keys()
            .filter(|(_, wf)| *wf == f)
            .copied()
            .collect();
        for k in keys {
            let at = self.watches[&k].at;
            let want = self.want(f, blk, at);
            let w = self.watches.get_mut(&k).unwrap();
            let have = w.pinned.get(&blk).map_or(Rev::Head, |t| Rev::At(*t));
            // A read pins only forward: a watch never needs @head because
            // of a read (want == Head implies nothing changed after at).
            if want != have {
                if let Rev::At(t) = want {
                    w.pinned.insert(blk, t);
                    out.entry(k.0).or_default().push((f, blk, want));
                }
            }
        }
        out
    }

    /// Where the client of watch (link, f) takes blk from: `Some(rev)` for
    /// `@rev/bigfile`, None for head.
    pub fn source(&self, link: usize, f: Oid, blk: u64) -> Option<Tid> {
        self.watches.get(&(link, f))?.pinned.get(&blk).copied()
    }

    /// Current total of pinned blocks over all watches.
    pub fn npinned(&self) -> usize {
        self.watches.values().map(|w| w.pinned.len()).sum()
    }
}

/// Sorted (oid, blk, rev) of received pins, to compare with the model.
pub fn pin_keys(pins: &[PinRecord]) -> Vec<ExpPin> {
    let mut v: Vec<ExpPin> = pins.iter().map(PinRecord::key).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Helpers of the isolation tests.

/// Block `blk` of `path` read with pread(2) on a descriptor advised
/// `POSIX_FADV_RANDOM`, so that the kernel asks the daemon for exactly this
/// block and no readahead (the model counts the blocks read through head/).
pub fn pread_random(path: &Path, blk: u64, blksize: u64) -> std::io::Result<Vec<u8>> {
    let f = File::open(path)?;
    pread_random_fd(&f, blk, blksize)
}

/// [`pread_random`] on an open file (advised again, which is harmless).
pub fn pread_random_fd(f: &File, blk: u64, blksize: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    super::read_block_of(f, blk, blksize)
}

/// Block identities as Python sees them (python/fs_testdata/iso_blkid.py).
pub struct BlkIds {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl BlkIds {
    pub fn start(datafs: &Path) -> BlkIds {
        use std::process::{Command, Stdio};
        let script = testkit::repo().join("python/fs_testdata/iso_blkid.py");
        // A NEO cluster is read by the NEO venv's Python.
        let py = if datafs.to_string_lossy().starts_with("neo://") {
            testkit::neo::venv().join("bin/python")
        } else {
            super::python()
        };
        let mut child = Command::new(py)
            .arg(script)
            .arg(datafs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start iso_blkid.py");
        let stdin = child.stdin.take().unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        BlkIds { child, stdin, out }
    }

    /// file → blk → identity, as of `at`.
    pub fn get(&mut self, files: &[Oid], at: Tid) -> HashMap<Oid, BTreeMap<u64, String>> {
        use std::io::BufRead;
        let list: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
        writeln!(
            self.stdin,
            r#"{{"files":[{}],"at":"{at}"}}"#,
            list.join(",")
        )
        .expect("write to iso_blkid.py");
        self.stdin.flush().unwrap();
        let mut out = HashMap::new();
        loop {
            let mut line = String::new();
            self.out.read_line(&mut line).expect("read iso_blkid.py");
            assert!(!line.is_empty(), "iso_blkid.py died");
            let line = line.trim_end();
            if line == "end" {
                return out;
            }
            let mut w = line.split(' ');
            match w.next() {
                Some("ids") => {}
                _ => panic!("iso_blkid.py: {line}"),
            }
            let f: Oid = w.next().unwrap().parse().unwrap();
            let m: BTreeMap<u64, String> = w
                .map(|item| {
                    let (b, id) = item.split_once(':').unwrap();
                    (b.parse().unwrap(), id.to_string())
                })
                .collect();
            out.insert(f, m);
        }
    }
}

impl Drop for BlkIds {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The env var that selects a child role when a test binary re-executes
/// itself ([`RoleChild`]).
pub const ROLE_ENV: &str = "WCFS_ISO_ROLE";

/// A child process: this test binary re-executed to run one test (the
/// role's entry point) with [`ROLE_ENV`] and more variables set. Its
/// stdout lines are collected; stdin stays open until [`RoleChild::finish`]
/// (roles may wait for its EOF). Killed and reaped on drop.
pub struct RoleChild {
    pub role: String,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    status: Option<std::process::ExitStatus>,
}

impl RoleChild {
    pub fn spawn(entry_test: &str, role: &str, envs: &[(&str, String)]) -> RoleChild {
        Self::spawn_as(entry_test, role, envs, None)
    }

    /// [`RoleChild::spawn`] as another user: `(uid, gid)`, with no
    /// supplementary groups (we are root).
    pub fn spawn_as(
        entry_test: &str,
        role: &str,
        envs: &[(&str, String)],
        user: Option<(u32, u32)>,
    ) -> RoleChild {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args([
            entry_test,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(ROLE_ENV, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if let Some((uid, gid)) = user {
            // std drops the supplementary groups when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().expect("re-exec the test binary");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        RoleChild {
            role: role.to_string(),
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Writes one line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let w = self.stdin.as_mut().expect("child stdin open");
        writeln!(w, "{line}").expect("write to child");
        w.flush().expect("flush child stdin");
    }

    /// Waits for a stdout line containing `marker` (libtest may print
    /// its own text before ours on the same line). Fails at once when the
    /// child reports `ISO-ERR` or closes its stdout.
    pub fn wait_line(&mut self, marker: &str, timeout: Duration) -> Result<String, String> {
        self.wait_marked(marker, Some("ISO-ERR"), timeout)
    }

    /// The text after `marker` in the next stdout line that has it.
    pub fn next_after(&mut self, marker: &str, timeout: Duration) -> Result<String, String> {
        let l = self.wait_marked(marker, None, timeout)?;
        let i = l.find(marker).expect("the line has the marker");
        Ok(l[i + marker.len()..].to_string())
    }

    fn wait_marked(
        &mut self,
        marker: &str,
        fail: Option<&str>,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let why = match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(marker) {
                        return Ok(l);
                    }
                    if !fail.is_some_and(|f| l.contains(f)) {
                        continue;
                    }
                    "reported an error"
                }
                Err(RecvTimeoutError::Timeout) => "timed out",
                Err(RecvTimeoutError::Disconnected) => "closed its stdout",
            };
            let st = self.wait_exit(Duration::from_millis(200));
            return Err(format!(
                "child {} ({}): {why} waiting for {marker:?} ({timeout:?}; exit: {st:?}); \
                 stdout: {:?}",
                self.role,
                self.pid(),
                self.seen
            ));
        }
    }

    /// The exit status, once the child exited (polled up to `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                return self.status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Closes the child's stdin (roles that wait for it then exit).
    pub fn finish(&mut self) {
        self.stdin = None;
    }

    /// Stdout lines seen so far.
    pub fn seen(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.clone()
    }
}

impl Drop for RoleChild {
    fn drop(&mut self) {
        self.stdin = None;
        if self.status.is_none() {
            let _ = self.child.kill();
            // A child stuck in a FUSE request dies only when the daemon
            // answers or goes; do not hang here for it.
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                eprintln!(
                    "child {} ({}) still alive 5s after SIGKILL; not waited for",
                    self.role,
                    self.pid()
                );
            }
        }
    }
}

/// The signal that terminated `st`, if any.
pub fn term_signal(st: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    st.signal()
}
