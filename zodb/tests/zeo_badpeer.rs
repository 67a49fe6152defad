//! The ZEO client against fake servers that misbehave: bad handshakes,
//! malformed, oversized and cut frames, replies that do not fit, tids that
//! go backwards, and servers that stall (at the handshake, mid-frame, on a
//! request, or when idle). At open, every case is a clear error. Later,
//! every case is a lost connection: the call at hand and the calls after
//! it fail with a clear `Unavailable` (naming what went wrong) once the
//! wait is over, the watcher waits without an error for the reconnect, all
//! within the configured timeouts, with bounded memory and no panic.
//!
//! And the reconnect itself, against fakes that take a second connection:
//! the catch-up through the iterator merged with invalidations arriving
//! meanwhile (none missed, none doubled), and servers that are not the
//! same database (behind, or without our last transaction, or with other
//! objects in it) failing the storage for good.
//!
//! A real server cannot be made to do any of this, hence the fake one: a
//! thread speaking the protocol through the crate's own frame and pickle
//! code, following a script per test.

use bytes::Bytes;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zodb::pickle::Value;
use zodb::storage::zeo::wire::{self, FrameReader, Message};
use zodb::storage::zeo::{ZeoOptions, ZeoStorage};
use zodb::storage::{counter, Error, Resilience, Storage};
use zodb::{Oid, Tid};

const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);
/// How long a call waits for a reconnect.
const WAIT: Duration = Duration::from_millis(300);

fn opts() -> ZeoOptions {
    ZeoOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: REQUEST_TIMEOUT,
        keepalive: Duration::from_millis(200),
        max_frame: 8 << 20,
        resilience: Resilience {
            wait: WAIT,
            backoff_max: Duration::from_millis(100),
        },
        ..ZeoOptions::default()
    }
}

fn count(zs: &ZeoStorage, name: &str) -> u64 {
    zs.counters()
        .into_iter()
        .find(|c| c.0 == name)
        .map_or(0, |c| c.1)
}

/// Waits until the storage counted a lost connection.
fn wait_lost(zs: &ZeoStorage) {
    let t0 = Instant::now();
    while count(zs, counter::LOST) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "loss not noticed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The server side of one connection.
struct Peer {
    s: TcpStream,
    fr: FrameReader,
}

impl Peer {
    fn raw(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }
    fn frame(&mut self, body: &[u8]) {
        self.raw(&wire::frame(body));
    }
    /// Announces Z5 and reads the client's answer.
    fn hello(&mut self) {
        self.frame(b"Z5");
        let f = self.fr.next(&mut self.s).expect("client protocol");
        assert_eq!(&f[..], b"Z5");
    }
    /// The client's next call: (msgid, method, args).
    fn recv(&mut self) -> Option<(i64, String, Value)> {
        let f = self.fr.next(&mut self.s).ok()?;
        match wire::decode_message(&f).expect("client message") {
            Message::Call {
                msgid,
                method,
                args,
                ..
            } => Some((msgid, method, args)),
            m => panic!("client sent {m:?}"),
        }
    }
    /// The next call, skipping keep-alive pings (answered).
    fn recv_no_ping(&mut self) -> Option<(i64, String, Value)> {
        loop {
            let (id, m, a) = self.recv()?;
            if m != "ping" {
                return Some((id, m, a));
            }
            self.reply(id, Value::None);
        }
    }
    fn reply(&mut self, msgid: i64, v: Value) {
        self.raw(&wire::message_frame(msgid, Value::Int(0), ".reply", v));
    }
    fn raise(&mut self, msgid: i64, class: &str, msg: &str) {
        let exc = Value::Tuple(vec![
            Value::Str(class.into()),
            Value::Tuple(vec![Value::Str(msg.into())]),
        ]);
        self.raw(&wire::message_frame(msgid, Value::Int(2), ".reply", exc));
    }
    fn invalidate(&mut self, tid: u64, oids: &[u64]) {
        let args = Value::Tuple(vec![
            b8(tid),
            Value::List(oids.iter().map(|o| b8(*o)).collect()),
        ]);
        self.raw(&wire::message_frame(
            0,
            Value::Bool(true),
            "invalidateTransaction",
            args,
        ));
    }
    /// hello + register answered with `tid`.
    fn accept_register(&mut self, tid: u64) {
        self.hello();
        let (id, m, args) = self.recv().expect("register");
        assert_eq!(m, "register");
        assert_eq!(
            args,
            Value::Tuple(vec![Value::Str("1".into()), Value::Bool(true)])
        );
        self.reply(id, b8(tid));
    }
    /// Answers the client's iteration over the server's transactions
    /// (`iterator_start` … `iterator_record_next`) with `txns` (tid, oids),
    /// those inside the range asked; pings answered on the way.
    fn serve_history(&mut self, txns: &[(u64, &[u64])]) {
        let (id, m, args) = self.recv_no_ping().expect("iterator_start");
        assert_eq!(m, "iterator_start");
        let t = args.as_tuple().unwrap();
        let range = |v: &Value| u64::from_be_bytes(v.as_bytes().unwrap()[..].try_into().unwrap());
        let (lo, hi) = (range(&t[0]), range(&t[1]));
        self.reply(id, Value::Int(7));
        for (tid, oids) in txns.iter().filter(|(t, _)| (lo..=hi).contains(t)) {
            let (id, m, _) = self.recv_no_ping().expect("iterator_next");
            assert_eq!(m, "iterator_next");
            self.reply(
                id,
                Value::Tuple(vec![
                    b8(*tid),
                    Value::Str(" ".into()),
                    Value::Str("u".into()),
                ]),
            );
            let (id, m, _) = self.recv_no_ping().expect("iterator_record_start");
            assert_eq!(m, "iterator_record_start");
            self.reply(id, Value::Int(8));
            for o in oids.iter() {
                let (id, m, _) = self.recv_no_ping().expect("iterator_record_next");
                assert_eq!(m, "iterator_record_next");
                self.reply(id, Value::Tuple(vec![b8(*o), b8(*tid), Value::None]));
            }
            let (id, _, _) = self.recv_no_ping().expect("iterator_record_next (end)");
            self.reply(id, Value::None);
        }
        let (id, m, _) = self.recv_no_ping().expect("iterator_next (end)");
        assert_eq!(m, "iterator_next");
        self.reply(id, Value::None);
    }
    /// Waits until the client closes (or 5 s).
    fn linger(&mut self) {
        let _ = self.s.set_read_timeout(Some(Duration::from_secs(5)));
        while self.fr.next(&mut self.s).is_ok() {}
    }
}

fn b8(v: u64) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&v.to_be_bytes()))
}

/// A fake server running `script` on its first connection.
fn fake(script: impl FnOnce(&mut Peer) + Send + 'static) -> (u16, JoinHandle<()>) {
    fake_n(vec![Box::new(script)])
}

type Script = Box<dyn FnOnce(&mut Peer) + Send>;

/// A fake server running one script per connection, in turn (then it
/// stops listening).
fn fake_n(scripts: Vec<Script>) -> (u16, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        for script in scripts {
            let (s, _) = l.accept().unwrap();
            let mut p = Peer {
                s,
                fr: FrameReader::new(64 << 20),
            };
            script(&mut p);
        }
    });
    (port, h)
}

fn open(port: u16) -> Result<ZeoStorage, Error> {
    ZeoStorage::open_with("127.0.0.1", port, &format!("zeo://fake:{port}"), opts())
}

fn open_err(script: impl FnOnce(&mut Peer) + Send + 'static) -> String {
    let (port, h) = fake(script);
    let t0 = Instant::now();
    let e = open(port).err().expect("open must fail");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    h.join().unwrap();
    e.to_string()
}

#[test]
fn bad_handshakes() {
    let e = open_err(|p| {
        p.frame(b"M4");
        p.linger();
    });
    assert!(e.contains("protocol") && e.contains("M4"), "{e}");
    let e = open_err(|p| {
        p.frame(b"Z4");
        p.linger();
    });
    assert!(e.contains("protocol") && e.contains("Z4"), "{e}");
    let e = open_err(|p| p.frame(b"HTTP/1.1 400"));
    assert!(e.contains("handshake"), "{e}");
    // Nothing at all: the connect timeout.
    let e = open_err(|_| std::thread::sleep(Duration::from_millis(1500)));
    assert!(e.contains("no protocol announcement"), "{e}");
    // A 4 GiB announcement: refused before allocating.
    let e = open_err(|p| p.raw(&[0xff, 0xff, 0xff, 0xff]));
    assert!(e.contains("exceeds the limit"), "{e}");
    // Closed right away (the connection drops with the script).
    let e = open_err(|_| {});
    assert!(e.contains("closed by server"), "{e}");
    // register refused by the server: its exception in the error.
    let e = open_err(|p| {
        p.hello();
        let (id, _, _) = p.recv().unwrap();
        p.raise(id, "builtins.ValueError", "unknown storage: 1");
        p.linger();
    });
    assert!(
        e.contains("register") && e.contains("ValueError") && e.contains("unknown storage"),
        "{e}"
    );
    // register answered with nonsense.
    let e = open_err(|p| {
        p.hello();
        let (id, _, _) = p.recv().unwrap();
        p.reply(id, Value::Int(5));
        p.linger();
    });
    assert!(e.contains("protocol error"), "{e}");
}

/// Runs `bad` after a good registration at tid 100 and a first good load;
/// the load issued then must fail — after the wait, with `Unavailable` —
/// naming `want`, and so must the loads after it; the watcher waits
/// without an error; `last_tid` stays.
fn after_register(want: &str, bad: impl FnOnce(&mut Peer, i64) + Send + 'static) {
    let (port, h) = fake(move |p| {
        p.accept_register(100);
        // One good load first.
        let (id, m, _) = p.recv_no_ping().unwrap();
        assert_eq!(m, "loadBefore");
        p.reply(
            id,
            Value::Tuple(vec![
                Value::Bytes(Bytes::from_static(b"data")),
                b8(90),
                Value::None,
            ]),
        );
        let (id, m, _) = p.recv_no_ping().unwrap();
        assert_eq!(m, "loadBefore");
        bad(p, id);
        p.linger();
    });
    let zs = open(port).unwrap();
    assert_eq!(zs.last_tid().unwrap(), Tid(100));
    let mut w = zs.watch(Tid(100)).unwrap();
    let l = zs.load(Oid(1), Tid(100)).unwrap();
    assert_eq!((&l.data[..], l.serial), (&b"data"[..], Tid(90)));
    let t0 = Instant::now();
    let e = zs.load(Oid(1), Tid(100)).unwrap_err();
    let dt = t0.elapsed();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains(want), "want {want:?} in: {e}");
    assert!(e.contains("zeo://fake"), "{e}");
    assert!(dt < REQUEST_TIMEOUT * 4 + WAIT, "error after {dt:?}");
    // No error for the watcher (the stream resumes after a reconnect);
    // later loads fail the same way; the stream's position stays.
    assert!(w
        .next_timeout(Duration::from_millis(200))
        .unwrap()
        .is_none());
    let e2 = zs.load(Oid(1), Tid(100)).unwrap_err().to_string();
    assert!(e2.contains(want), "later load: {e2}");
    assert_eq!(zs.last_tid().unwrap(), Tid(100));
    assert_eq!(count(&zs, counter::LOST), 1);
    assert!(count(&zs, counter::GIVEUP) >= 2);
    drop(zs);
    h.join().unwrap();
}

#[test]
fn oversized_frame() {
    after_register("exceeds the limit", |p, _| p.raw(&[0x7f, 0, 0, 0]));
}

#[test]
fn malformed_messages() {
    after_register("malformed", |p, _| p.frame(b"\x80\x03garbage"));
    after_register("malformed", |p, _| p.frame(b"\x80\x03K\x01."));
    after_register("malformed", |p, id| {
        // A valid message with trailing bytes.
        let mut f = wire::message_frame(id, Value::Int(0), ".reply", Value::None)[4..].to_vec();
        f.push(0);
        p.frame(&f);
    });
    after_register("protocol error", |p, id| p.reply(id, Value::Int(7)));
    after_register("protocol error", |p, id| {
        p.reply(
            id,
            Value::Tuple(vec![
                Value::Bytes(Bytes::from_static(b"x")),
                Value::Bytes(Bytes::from_static(b"short")),
                Value::None,
            ]),
        )
    });
    // Data newer than asked for would be stale-or-future data: refused.
    after_register("newer than asked", |p, id| {
        p.reply(
            id,
            Value::Tuple(vec![
                Value::Bytes(Bytes::from_static(b"x")),
                b8(500),
                Value::None,
            ]),
        )
    });
    after_register("never sent", |p, id| p.reply(id + 1000, Value::None));
    after_register("expecting a reply", |p, _| {
        p.raw(&wire::message_frame(
            9,
            Value::Bool(false),
            "getSomething",
            Value::Tuple(vec![]),
        ))
    });
}

#[test]
fn cut_and_stalled() {
    after_register("closed by server in the middle", |p, _| {
        p.raw(&[0, 0, 1, 0, 1, 2, 3]);
        let _ = p.s.shutdown(std::net::Shutdown::Both);
    });
    after_register("did not answer loadBefore", |_, _| {
        std::thread::sleep(REQUEST_TIMEOUT * 3);
    });
    // Half a frame, then silence.
    after_register("did not answer loadBefore", |p, _| {
        p.raw(&[0, 0, 1, 0, 1, 2, 3]);
        std::thread::sleep(REQUEST_TIMEOUT * 3);
    });
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A frame announced near the limit and trickled in: memory grows with
/// what arrived, not with what was announced.
#[test]
fn announced_size_is_not_allocated() {
    let (port, h) = fake(|p| {
        p.accept_register(100);
        let (_, m, _) = p.recv_no_ping().unwrap();
        assert_eq!(m, "loadBefore");
        p.raw(&(200u32 << 20).to_be_bytes());
        p.raw(&vec![0x42; 1 << 20]);
        std::thread::sleep(REQUEST_TIMEOUT * 3);
        p.linger();
    });
    let o = ZeoOptions {
        max_frame: 256 << 20,
        ..opts()
    };
    let zs = ZeoStorage::open_with("127.0.0.1", port, "zeo://fake", o).unwrap();
    let before = rss_kib();
    let e = zs.load(Oid(1), Tid(1)).unwrap_err().to_string();
    let grew = rss_kib().saturating_sub(before);
    assert!(e.contains("did not answer"), "{e}");
    assert!(
        grew < 32 << 10,
        "RSS grew by {grew} KiB for a 200 MiB announcement"
    );
    drop(zs);
    h.join().unwrap();
}

/// An idle connection whose server stops answering is noticed by the
/// keep-alive ping: a loss, without any load; the watcher keeps waiting.
#[test]
fn idle_stall_is_noticed() {
    let (go, ready) = std::sync::mpsc::channel::<()>();
    let (port, h) = fake(move |p| {
        p.accept_register(100);
        ready.recv().unwrap();
        p.invalidate(101, &[1, 2]);
        // From now on: read, never answer.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) && p.recv().is_some() {}
    });
    let zs = open(port).unwrap();
    let mut w = zs.watch(Tid(100)).unwrap();
    go.send(()).unwrap();
    let c = w.next_timeout(Duration::from_secs(2)).unwrap().unwrap();
    assert_eq!((c.tid, c.oids), (Tid(101), vec![Oid(1), Oid(2)]));
    let t0 = Instant::now();
    wait_lost(&zs);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let why = zs.failure().unwrap();
    assert!(why.contains("did not answer ping"), "{why}");
    assert!(w
        .next_timeout(Duration::from_millis(100))
        .unwrap()
        .is_none());
    drop(zs);
    h.join().unwrap();
}

/// Invalidations: in order; those up to the register tid (the register
/// race) dropped; a tid going backwards afterwards is a protocol
/// violation: the connection is lost (what came before stays).
#[test]
fn invalidation_order() {
    let (go, ready) = std::sync::mpsc::channel::<()>();
    let (port, h) = fake(move |p| {
        p.accept_register(100);
        ready.recv().unwrap();
        p.invalidate(99, &[7]); // committed before the register reply: dup
        p.invalidate(100, &[7]);
        p.invalidate(103, &[]);
        // A one-way call we do not know: ignored, as Python's client logs it.
        p.raw(&wire::message_frame(
            0,
            Value::Bool(true),
            "info",
            Value::Dict(vec![(Value::Str("length".into()), Value::Int(3))]),
        ));
        p.invalidate(105, &[1, 3]);
        p.invalidate(104, &[1]);
        p.linger();
    });
    let zs = open(port).unwrap();
    let mut w = zs.watch(Tid(100)).unwrap();
    go.send(()).unwrap();
    wait_lost(&zs);
    let mut got = vec![];
    while let Some(c) = w.next_timeout(Duration::from_millis(100)).unwrap() {
        got.push((c.tid.0, c.oids.iter().map(|o| o.0).collect::<Vec<_>>()));
    }
    assert_eq!(got, vec![(103, vec![]), (105, vec![1, 3])]);
    let why = zs.failure().unwrap();
    assert!(why.contains("tids must increase"), "{why}");
    assert_eq!(zs.last_tid().unwrap(), Tid(105));
    drop(zs);
    h.join().unwrap();
}

/// A server that stops reading: requests pile up until the socket buffers
/// are full and writing blocks; the write timeout fails the connection and
/// every request in flight gets the error.
#[test]
fn server_stops_reading() {
    let (port, h) = fake(|p| {
        p.accept_register(100);
        std::thread::sleep(Duration::from_secs(4));
    });
    let zs = open(port).unwrap();
    let t0 = Instant::now();
    let reqs = vec![(Oid(1), Tid(1)); 300_000];
    let res = zs.load_many(&reqs);
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let errs: Vec<String> = res
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert_eq!(errs.len(), reqs.len(), "every request fails");
    assert!(errs.iter().all(|e| e.contains("zeo://fake")), "{}", errs[0]);
    println!("first error: {}", errs[0]);
    drop(zs);
    h.join().unwrap();
}

/// After a loss, the reconnect catches up through the iterator from the
/// last transaction reported, merged with the invalidations the new
/// connection receives meanwhile: every transaction exactly once, in order.
#[test]
fn reconnect_catches_up_exactly() {
    let (go, ready) = std::sync::mpsc::channel::<()>();
    let (port, h) = fake_n(vec![
        Box::new(move |p: &mut Peer| {
            p.accept_register(100);
            ready.recv().unwrap();
            p.invalidate(101, &[1]);
            std::thread::sleep(Duration::from_millis(100));
            // The server goes away.
        }),
        Box::new(|p: &mut Peer| {
            p.accept_register(104);
            // Invalidations racing the register reply and the catch-up:
            // 103 is in both, 105 only here.
            p.invalidate(103, &[3]);
            p.invalidate(105, &[5]);
            p.serve_history(&[(101, &[1]), (102, &[2]), (103, &[3]), (104, &[4, 44])]);
            p.invalidate(106, &[6]);
            let (id, m, _) = p.recv_no_ping().unwrap();
            assert_eq!(m, "loadBefore");
            p.reply(
                id,
                Value::Tuple(vec![
                    Value::Bytes(Bytes::from_static(b"d")),
                    b8(106),
                    Value::None,
                ]),
            );
            p.linger();
        }),
    ]);
    let zs = open(port).unwrap();
    let mut w = zs.watch(Tid(100)).unwrap();
    go.send(()).unwrap();
    let mut got = vec![];
    let t0 = Instant::now();
    while got.last().map(|c: &(u64, Vec<u64>)| c.0) != Some(106) {
        assert!(t0.elapsed() < Duration::from_secs(10), "stream: {got:?}");
        if let Some(c) = w.next_timeout(Duration::from_millis(100)).unwrap() {
            got.push((c.tid.0, c.oids.iter().map(|o| o.0).collect()));
        }
    }
    let want: Vec<(u64, Vec<u64>)> = vec![
        (101, vec![1]),
        (102, vec![2]),
        (103, vec![3]),
        (104, vec![4, 44]),
        (105, vec![5]),
        (106, vec![6]),
    ];
    assert_eq!(got, want);
    assert!(w
        .next_timeout(Duration::from_millis(100))
        .unwrap()
        .is_none());
    assert_eq!(zs.last_tid().unwrap(), Tid(106));
    let l = zs.load(Oid(1), Tid(106)).unwrap();
    assert_eq!(l.serial, Tid(106));
    assert_eq!(count(&zs, counter::LOST), 1);
    assert_eq!(count(&zs, counter::RECONNECT), 1);
    assert_eq!(count(&zs, counter::CATCHUP), 3);
    drop(zs);
    h.join().unwrap();
}

/// A server reached after a loss that does not have our history: behind
/// us, without our last transaction, or with other objects in it. The
/// storage fails for good: watcher, loads, last_tid.
#[test]
fn reconnect_to_another_database_fails_for_good() {
    type Second = fn(&mut Peer);
    let cases: [(&str, Second); 3] = [
        ("older than 0000000000000065", |p| p.accept_register(99)),
        (
            "0000000000000065, which we served, is not in its history",
            |p| {
                p.accept_register(104);
                p.serve_history(&[(102, &[2]), (104, &[4])]);
            },
        ),
        ("changed other objects", |p| {
            p.accept_register(104);
            p.serve_history(&[(101, &[9]), (104, &[4])]);
        }),
    ];
    for (want, second) in cases {
        let (go, ready) = std::sync::mpsc::channel::<()>();
        let (port, h) = fake_n(vec![
            Box::new(move |p: &mut Peer| {
                p.accept_register(100);
                ready.recv().unwrap();
                p.invalidate(101, &[1]);
                std::thread::sleep(Duration::from_millis(100));
            }),
            Box::new(move |p: &mut Peer| {
                second(p);
                p.linger();
            }),
        ]);
        let zs = open(port).unwrap();
        let mut w = zs.watch(Tid(100)).unwrap();
        go.send(()).unwrap();
        let c = w.next_timeout(Duration::from_secs(2)).unwrap().unwrap();
        assert_eq!(c.tid, Tid(101));
        let t0 = Instant::now();
        let e = loop {
            match w.next_timeout(Duration::from_millis(100)) {
                Ok(None) => assert!(t0.elapsed() < Duration::from_secs(10), "{want}: no failure"),
                Ok(Some(c)) => panic!("{want}: reported {c:?} from another database"),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, Error::NotSameDatabase { .. }), "{want}: {e}");
        assert!(e.to_string().contains(want), "{want}: {e}");
        let le = zs.load(Oid(1), Tid(101)).unwrap_err();
        assert!(
            matches!(le, Error::NotSameDatabase { .. }),
            "{want}: load: {le}"
        );
        assert!(zs.last_tid().is_err());
        assert_eq!(count(&zs, counter::RECONNECT), 0);
        drop(zs);
        h.join().unwrap();
    }
}

/// Default timeouts (request 60 s, keep-alive 10 s) and a wait of 1 s:
/// the wait, not the request timeout, bounds how long a call and the
/// connection put up with a silent server.
fn silent_opts() -> ZeoOptions {
    ZeoOptions {
        resilience: Resilience {
            wait: Duration::from_secs(1),
            backoff_max: Duration::from_millis(100),
        },
        ..ZeoOptions::default()
    }
}

/// A server that stops in the middle of a reply (half a frame, then
/// nothing, the connection open): the load gives up after the wait, with
/// `Unavailable`, and the connection is lost right after; the watcher
/// waits without an error.
#[test]
fn silent_mid_reply_bounded_by_wait() {
    let (port, h) = fake(|p| {
        p.accept_register(100);
        let (_, m, _) = p.recv_no_ping().unwrap();
        assert_eq!(m, "loadBefore");
        // A frame of 1 MiB announced, 7 bytes of it sent.
        p.raw(&[0, 16, 0, 0, 1, 2, 3]);
        p.linger();
    });
    let zs = ZeoStorage::open_with("127.0.0.1", port, "zeo://fake", silent_opts()).unwrap();
    let mut w = zs.watch(Tid(100)).unwrap();
    let t0 = Instant::now();
    let e = zs.load(Oid(1), Tid(100)).unwrap_err();
    let dt = t0.elapsed();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("did not answer"), "{e}");
    assert!(
        dt >= Duration::from_secs(1) && dt < Duration::from_secs(2),
        "gave up after {dt:?}"
    );
    wait_lost(&zs);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(w
        .next_timeout(Duration::from_millis(100))
        .unwrap()
        .is_none());
    assert_eq!(count(&zs, counter::GIVEUP), 1);
    drop(zs);
    h.join().unwrap();
}

/// An idle connection to a server that went silent is noticed within
/// about twice the wait (keep-alive, then the ping's answer), not the
/// default 10 s + 60 s.
#[test]
fn silent_idle_noticed_within_twice_the_wait() {
    let (port, h) = fake(|p| {
        p.accept_register(100);
        p.linger(); // reads, never answers
    });
    let t0 = Instant::now();
    let zs = ZeoStorage::open_with("127.0.0.1", port, "zeo://fake", silent_opts()).unwrap();
    wait_lost(&zs);
    let dt = t0.elapsed();
    assert!(dt < Duration::from_secs(3), "noticed after {dt:?}");
    let why = zs.failure().unwrap();
    assert!(why.contains("did not answer ping within 1s"), "{why}");
    drop(zs);
    h.join().unwrap();
}
