//! The ZEO client against fake servers that misbehave: bad handshakes,
//! malformed, oversized and cut frames, replies that do not fit, tids that
//! go backwards, and servers that stall (at the handshake, mid-frame, on a
//! request, or when idle). Every case must end in a clear error — for the
//! call at hand, for every later call and for the watcher — within the
//! configured timeouts, with bounded memory and no panic.
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
use zodb::storage::{Error, Storage};
use zodb::{Oid, Tid};

const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);

fn opts() -> ZeoOptions {
    ZeoOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: REQUEST_TIMEOUT,
        keepalive: Duration::from_millis(200),
        max_frame: 8 << 20,
        ..ZeoOptions::default()
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
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut p = Peer {
            s,
            fr: FrameReader::new(64 << 20),
        };
        script(&mut p);
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
/// the load issued then must fail with an error containing `want`, and so
/// must everything after it.
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
    let e = zs.load(Oid(1), Tid(100)).unwrap_err().to_string();
    let dt = t0.elapsed();
    assert!(e.contains(want), "want {want:?} in: {e}");
    assert!(e.contains("zeo://fake"), "{e}");
    assert!(dt < REQUEST_TIMEOUT * 4, "error after {dt:?}");
    // Final: the watcher, later loads, last_tid.
    let we = w
        .next_timeout(Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(we.contains(want), "watcher: {we}");
    assert!(zs.load(Oid(1), Tid(100)).is_err());
    assert!(zs.last_tid().is_err());
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
/// keep-alive ping: the watcher fails without any load.
#[test]
fn idle_stall_fails_the_watcher() {
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
    let e = w
        .next_timeout(Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("did not answer ping"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    drop(zs);
    h.join().unwrap();
}

/// Invalidations: in order; those up to the register tid (the register
/// race) dropped; a tid going backwards afterwards is an error.
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
    let mut got = vec![];
    let err = loop {
        match w.next_timeout(Duration::from_secs(2)) {
            Ok(Some(c)) => got.push((c.tid.0, c.oids.iter().map(|o| o.0).collect::<Vec<_>>())),
            Ok(None) => panic!("no error for a tid going backwards"),
            Err(e) => break e.to_string(),
        }
    };
    assert_eq!(got, vec![(103, vec![]), (105, vec![1, 3])]);
    assert!(err.contains("tids must increase"), "{err}");
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
