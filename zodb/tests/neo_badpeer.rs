//! The NEO client against fake nodes that misbehave: a wrong handshake
//! (another protocol version, TLS, not NEO at all), garbage and oversized
//! packets from a master, and a storage node that answers a wrong checksum
//! or an oversized packet. Every case is a clear error, never a panic nor
//! an allocation of what the peer only claimed. And a cluster reached
//! after a loss that does not have our history (behind us, or without the
//! transaction at our head) fails the storage for good.
//!
//! A real cluster cannot be made to do any of this, hence the fakes:
//! threads speaking the protocol through the crate's own wire module.

use rmpv::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;
use zodb::storage::neo::wire::{self, code, ext, Packet};
use zodb::storage::neo::{NeoOptions, NeoStorage};
use zodb::storage::{Error, Resilience, Storage};
use zodb::{Oid, Tid};

fn opts() -> NeoOptions {
    NeoOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        keepalive: Duration::from_millis(300),
        max_packet: 1 << 20,
        resilience: Resilience {
            wait: Duration::from_millis(400),
            backoff_max: Duration::from_millis(50),
        },
        tls: None,
    }
}

fn open(port: u16) -> Result<NeoStorage, Error> {
    NeoStorage::open_with(
        "fake",
        vec![("127.0.0.1".into(), port)],
        &format!("neo://fake@127.0.0.1:{port}"),
        opts(),
    )
}

/// A node answering every connection with `f`.
fn serve(f: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let f = std::sync::Arc::new(f);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let f = f.clone();
            std::thread::spawn(move || f(s));
        }
    });
    port
}

/// Reads packets as the client sends them.
struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    fn new(mut s: TcpStream) -> Option<Reader> {
        let mut hs = [0u8; 6];
        s.read_exact(&mut hs).ok()?;
        assert_eq!(hs, wire::HANDSHAKE, "the client's handshake");
        Some(Reader { s, buf: vec![] })
    }
    fn next(&mut self) -> Option<Packet> {
        loop {
            if let Ok(Some(n)) = wire::frame_len(&self.buf, 1 << 20) {
                let p = wire::decode_packet(&self.buf[..n]).unwrap();
                self.buf.drain(..n);
                return Some(p);
            }
            let mut b = [0u8; 4096];
            let k = self.s.read(&mut b).ok()?;
            if k == 0 {
                return None;
            }
            self.buf.extend_from_slice(&b[..k]);
        }
    }
    fn send(&mut self, id: u32, code: u16, args: Vec<Value>) {
        let _ = self.s.write_all(&wire::encode_packet(id, code, args));
    }
}

fn sends(bytes: &'static [u8]) -> impl Fn(TcpStream) + Send + Sync {
    move |mut s: TcpStream| {
        let _ = s.write_all(bytes);
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn open_err(port: u16) -> String {
    match open(port) {
        Ok(_) => panic!("open of a bad peer succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_handshakes_are_clear_errors() {
    let e = open_err(serve(sends(&[0x92, 0xa3, b'N', b'E', b'O', 4])));
    assert!(e.contains("protocol version 4, we speak 5"), "{e}");
    let e = open_err(serve(sends(&[0x16, 3, 1, 0, 0x10, 1])));
    assert!(e.contains("TLS"), "{e}");
    let e = open_err(serve(sends(b"HTTP/1.1 400 Bad Request\r\n")));
    assert!(e.contains("not a NEO node"), "{e}");
    // Closed at once (EOF, or a reset: it read nothing of ours).
    let e = open_err(serve(sends(b"")));
    assert!(e.contains("handshake"), "{e}");
}

#[test]
fn garbage_and_oversized_packets_from_a_master() {
    // Handshake, then the reserved marker.
    let e = open_err(serve(sends(&[
        0x92, 0xa3, b'N', b'E', b'O', 5, 0x93, 0, 1, 0xc1,
    ])));
    assert!(e.contains("invalid msgpack marker 0xc1"), "{e}");
    // Handshake, then a packet claiming a 1 GiB bin: refused from its
    // header, nothing allocated.
    let e = open_err(serve(sends(&[
        0x92, 0xa3, b'N', b'E', b'O', 5, 0x93, 0, 0xcd, 0x80, 0x01, 0x91, 0xc6, 0x40, 0, 0, 0,
    ])));
    assert!(e.contains("larger than"), "{e}");
    // A well-formed packet that is not [msg_id, code, args].
    let e = open_err(serve(sends(&[0x92, 0xa3, b'N', b'E', b'O', 5, 0x92, 0, 1])));
    assert!(e.contains("malformed packet"), "{e}");
}

const TID: u64 = 0x0400_0000_0000_0001;

/// A fake primary master naming one storage node at `sport` that holds
/// the only partition.
fn master(sport: u16) -> u16 {
    master_with(sport, |_| (TID, None))
}

/// The same, the last tid and how long the connection lasts decided per
/// connection (`script(n)` for the n-th, from 0).
fn master_with(sport: u16, script: fn(usize) -> (u64, Option<Duration>)) -> u16 {
    let n = std::sync::atomic::AtomicUsize::new(0);
    serve(move |s| {
        let (last, lasts) = script(n.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        if let Some(d) = lasts {
            let s2 = s.try_clone().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(d);
                let _ = s2.shutdown(std::net::Shutdown::Both);
            });
        }
        let Some(mut r) = Reader::new(s) else { return };
        r.s.write_all(&wire::HANDSHAKE).unwrap();
        let me = -0x20 << 24 | 1;
        while let Some(p) = r.next() {
            match p.code {
                code::REQUEST_IDENTIFICATION => {
                    r.send(
                        p.id,
                        0x8001,
                        vec![
                            wire::enum_value(ext::NODE_TYPES, wire::NODE_MASTER),
                            Value::from(-0x10 << 24 | 1),
                            Value::from(me),
                        ],
                    );
                    let node = |t: i64, addr: Value, nid: i64, ts: f64| {
                        Value::Array(vec![
                            wire::enum_value(ext::NODE_TYPES, t),
                            addr,
                            Value::from(nid),
                            wire::enum_value(ext::NODE_STATES, wire::STATE_RUNNING),
                            Value::F64(ts),
                        ])
                    };
                    r.send(
                        1,
                        code::NOTIFY_NODE_INFORMATION,
                        vec![
                            Value::F64(1.0),
                            Value::Array(vec![
                                node(wire::NODE_CLIENT, Value::Nil, me, 5.0),
                                node(
                                    wire::NODE_STORAGE,
                                    Value::Array(vec![wire::bin(b"127.0.0.1"), sport.into()]),
                                    1,
                                    2.0,
                                ),
                            ]),
                        ],
                    );
                    r.send(
                        2,
                        code::SEND_PARTITION_TABLE,
                        vec![
                            1.into(),
                            0.into(),
                            Value::Array(vec![Value::Array(vec![Value::Array(vec![
                                1.into(),
                                wire::enum_value(ext::CELL_STATES, wire::CELL_UP_TO_DATE),
                            ])])]),
                        ],
                    );
                }
                code::ASK_LAST_TRANSACTION => {
                    r.send(p.id, 0x803c, vec![wire::tid_value(Tid(last))]);
                }
                _ => {}
            }
        }
    })
}

/// A fake storage node answering AskObject with `answer(id)` bytes.
fn storage(answer: fn(u32) -> Vec<u8>) -> u16 {
    serve(move |s| {
        let Some(mut r) = Reader::new(s) else { return };
        r.s.write_all(&wire::HANDSHAKE).unwrap();
        while let Some(p) = r.next() {
            match p.code {
                code::REQUEST_IDENTIFICATION => r.send(
                    p.id,
                    0x8001,
                    vec![
                        wire::enum_value(ext::NODE_TYPES, wire::NODE_STORAGE),
                        Value::from(1),
                        Value::from(-0x20 << 24 | 1),
                    ],
                ),
                code::ASK_OBJECT => {
                    let _ = r.s.write_all(&answer(p.id));
                }
                // This node has no transaction at all.
                code::ASK_TRANSACTION_INFORMATION => r.send(
                    p.id,
                    wire::ERROR,
                    vec![
                        wire::enum_value(ext::ERROR_CODES, wire::errcode::TID_NOT_FOUND),
                        wire::bin(b"no such transaction"),
                    ],
                ),
                _ => {}
            }
        }
    })
}

fn object(id: u32, checksum: [u8; 20], data: &[u8]) -> Vec<u8> {
    wire::encode_packet(
        id,
        0x8020,
        vec![
            wire::oid_value(Oid(1)),
            wire::tid_value(Tid(TID)),
            Value::Nil,
            0.into(),
            wire::bin(&checksum),
            wire::bin(data),
            Value::Nil,
        ],
    )
}

#[test]
fn a_storage_node_with_a_wrong_checksum_is_corrupt() {
    let st = open(master(storage(|id| object(id, [7; 20], b"data")))).unwrap();
    assert_eq!(st.last_tid().unwrap(), Tid(TID));
    let e = st.load(Oid(1), Tid(TID)).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}

#[test]
fn a_good_answer_from_the_fake_loads() {
    fn good(id: u32) -> Vec<u8> {
        let sum = wire::sha1(b"data");
        object(id, sum, b"data")
    }
    let st = open(master(storage(good))).unwrap();
    let l = st.load(Oid(1), Tid(TID)).unwrap();
    assert_eq!((&l.data[..], l.serial), (&b"data"[..], Tid(TID)));
}

#[test]
fn a_storage_node_sending_an_oversized_packet_is_unavailable() {
    let st = open(master(storage(|id| {
        let mut p = object(id, [0; 20], b"");
        // Replace the packet by one whose data claims 64 MiB.
        p.truncate(0);
        p.extend_from_slice(&[0x93, 0, 0xcd, 0x80, 0x20, 0x97, 0xc6, 0x04, 0, 0, 0]);
        p
    })))
    .unwrap();
    let e = st.load(Oid(1), Tid(TID)).unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("larger than"), "{e}");
}

/// After a loss, the cluster reached is behind us (a restore from an older
/// backup) or does not have the transaction at our head (another
/// database): the storage fails for good — loads and watchers say
/// NotSameDatabase, never stale data.
#[test]
fn a_cluster_without_our_history_is_not_the_same_database() {
    fn good(id: u32) -> Vec<u8> {
        let sum = wire::sha1(b"data");
        object(id, sum, b"data")
    }
    let behind = |n: usize| {
        if n == 0 {
            (TID, Some(Duration::from_millis(300)))
        } else {
            (TID - 1, None)
        }
    };
    let other = |n: usize| {
        if n == 0 {
            (TID, Some(Duration::from_millis(300)))
        } else {
            (TID + 5, None)
        }
    };
    for (script, want) in [
        (behind as fn(usize) -> (u64, Option<Duration>), "older than"),
        (other, "is not in its history"),
    ] {
        let st = open(master_with(storage(good), script)).unwrap();
        let mut w = st.watch(Tid(TID)).unwrap();
        let e = w.next_timeout(Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, Error::NotSameDatabase { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
        let e = st.load(Oid(1), Tid(TID)).unwrap_err();
        assert!(matches!(e, Error::NotSameDatabase { .. }), "{e}");
        assert!(st.last_tid().is_err());
    }
}
