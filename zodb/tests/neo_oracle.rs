//! The NEO driver against a real NEO cluster (2 storage nodes, 1 replica,
//! from `../shared/neo/neo-cluster`) with Python's `neo.client.Storage` as
//! the oracle.
//!
//! Python writers (`python/neo_oracle/neooracle.py`) commit concurrently
//! while our watcher follows: every transaction must be reported once, in
//! order, with the oids the transaction changed. Then every object at
//! every tid must load as Python loads it (data hash, serial, or which
//! kind of missing), from several threads at once; and the storage nodes'
//! transaction list (the catch-up path) must be Python's iterator.
//!
//! Without the cluster script these tests skip (fail under CI=true).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::neo::NeoCluster;
use zodb::storage::{Error, Storage};
use zodb::{Oid, Tid};

mod neo_common;
use neo_common::{open, py, write};

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Data {
        serial: Tid,
        len: usize,
        sha1: String,
    },
    /// Python's None: not yet created.
    None,
    /// POSKeyError: deleted, or no such object.
    NoKey,
}

struct Oracle {
    last: Tid,
    txns: Vec<(Tid, Vec<Oid>)>,
    loads: Vec<(Oid, Tid, Expect)>,
}

fn hex_u64(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap()
}

fn dump(c: &NeoCluster) -> Oracle {
    let out = c.dir().join("oracle.txt");
    let st = py(c)
        .args(["dump", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "dump failed");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut o = Oracle {
        last: Tid::ZERO,
        txns: vec![],
        loads: vec![],
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "last" => o.last = Tid(hex_u64(f[1])),
            "txn" => {
                let oids = if f[2] == "-" {
                    vec![]
                } else {
                    f[2].split(',').map(|s| Oid(hex_u64(s))).collect()
                };
                o.txns.push((Tid(hex_u64(f[1])), oids));
            }
            "load" => {
                let e = match f[3] {
                    "none" => Expect::None,
                    "nokey" => Expect::NoKey,
                    s if s.len() == 16 => Expect::Data {
                        serial: Tid(hex_u64(s)),
                        len: f[4].parse().unwrap(),
                        sha1: f[5].to_string(),
                    },
                    other => panic!("oracle: load raised {other}"),
                };
                o.loads.push((Oid(hex_u64(f[1])), Tid(hex_u64(f[2])), e));
            }
            _ => panic!("oracle line {line:?}"),
        }
    }
    o
}

fn got(r: Result<zodb::storage::Loaded, Error>) -> Expect {
    match r {
        Ok(l) => Expect::Data {
            serial: l.serial,
            len: l.data.len(),
            sha1: testkit::sha1_hex(&l.data),
        },
        Err(Error::NotYetCreated { .. }) => Expect::None,
        Err(Error::Deleted { .. }) | Err(Error::NoObject { .. }) => Expect::NoKey,
        Err(e) => panic!("load: {e}"),
    }
}

#[test]
fn every_object_at_every_tid_with_concurrent_writers() {
    if !NeoCluster::available("neo_oracle") {
        return;
    }
    let c = NeoCluster::start(1, 2, 1);
    let seed = testkit::seed("neo_oracle");
    write(&c, &[seed], 3);
    let st = Arc::new(open(&c));
    let head0 = st.last_tid().unwrap();
    assert_ne!(head0, Tid::ZERO);
    let mut w = st.watch(head0).unwrap();
    let t0 = Instant::now();
    let (undos, dels) = write(&c, &[seed + 1, seed + 2], 25);
    assert!(
        undos > 0 && dels > 0,
        "undos {undos}, deletions {dels}: want some of each"
    );
    let o = dump(&c);
    eprintln!(
        "neo_oracle: {} transactions, {} loads to check (writers took {:.1?})",
        o.txns.len(),
        o.loads.len(),
        t0.elapsed()
    );

    // The stream: every transaction after head0 once, in order; the
    // master leaves deleted objects out of its oid lists.
    let deleted_at: HashSet<(Oid, Tid)> = o
        .loads
        .iter()
        .filter(|(_, _, e)| *e == Expect::NoKey)
        .map(|(oid, tid, _)| (*oid, *tid))
        .collect();
    let mut seen = Vec::new();
    while seen.last().map(|c: &zodb::storage::Commit| c.tid) != Some(o.last) {
        let c = w
            .next_timeout(Duration::from_secs(60))
            .unwrap()
            .expect("a commit within 60 s");
        seen.push(c);
    }
    let want: Vec<_> = o.txns.iter().filter(|t| t.0 > head0).collect();
    assert_eq!(seen.len(), want.len(), "commits seen vs Python's iterator");
    for (s, (tid, oids)) in seen.iter().zip(&want) {
        assert_eq!(s.tid, *tid);
        let a: HashSet<_> = s.oids.iter().collect();
        let b: HashSet<_> = oids.iter().collect();
        assert!(a.is_subset(&b), "{tid}: {a:?} ⊄ {b:?}");
        for x in b.difference(&a) {
            assert!(
                deleted_at.contains(&(**x, *tid)),
                "{tid}: {x} missing from the stream"
            );
        }
    }
    assert!(w
        .next_timeout(Duration::from_millis(200))
        .unwrap()
        .is_none());
    assert_eq!(st.last_tid().unwrap(), o.last);

    // The catch-up path: the storage nodes' transaction list.
    let all = st.transactions(Tid::ZERO, o.last).unwrap();
    let all: Vec<_> = all
        .into_iter()
        .map(|c| {
            let mut v = c.oids;
            v.sort();
            (c.tid, v)
        })
        .collect();
    let want_all: Vec<_> = o
        .txns
        .iter()
        .map(|(t, v)| {
            let mut v = v.clone();
            v.sort();
            (*t, v)
        })
        .collect();
    assert_eq!(all, want_all);

    // Every load, from 4 threads at once.
    let kinds: BTreeMap<&str, usize> = o.loads.iter().fold(BTreeMap::new(), |mut m, l| {
        let k = match &l.2 {
            Expect::Data { len, .. } if *len > 1 << 20 => "big",
            Expect::Data { .. } => "data",
            Expect::None => "none",
            Expect::NoKey => "nokey",
        };
        *m.entry(k).or_default() += 1;
        m
    });
    eprintln!("neo_oracle: loads by kind {kinds:?}");
    assert!(kinds.len() >= 3, "too little variety: {kinds:?}");
    let loads = Arc::new(o.loads);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let st = st.clone();
            let loads = loads.clone();
            std::thread::spawn(move || {
                for (oid, tid, want) in loads.iter().skip(i).step_by(4) {
                    assert_eq!(got(st.load(*oid, *tid)), *want, "load {oid}@{tid}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // An oid past every allocated one does not exist.
    assert!(matches!(
        st.load(Oid(1 << 40), o.last),
        Err(Error::NoObject { .. })
    ));
    // Reads were spread over both storage nodes.
    let cells = st.readable_cells();
    assert!(cells.iter().all(|c| c.len() == 2), "{cells:?}");
}

/// A packed cluster (NEO packs without garbage collection: the revisions
/// an object had before its last one at the pack point are gone). Python
/// then answers `None` ("no revision before") for a load before the
/// oldest revision kept — as FileStorage and ZEO do for a packed
/// data.fs, whose record chains end there — and so must we: the storage
/// nodes answer `OID_NOT_FOUND`, which is [`Error::NotYetCreated`], the
/// error the FileStorage and ZEO drivers give for packed-away history.
/// Every object at every tid is checked against Python's view after the
/// pack, and some loads must have changed with the pack (else it packed
/// nothing and the test proves nothing). The pack's own transaction (no
/// objects) is in the stream and in the transaction list like any other.
#[test]
fn packed_history_loads_as_python_sees_it() {
    if !NeoCluster::available("neo_oracle packed") {
        return;
    }
    let c = NeoCluster::start(1, 2, 1);
    let seed = testkit::seed("neo_oracle packed");
    write(&c, &[seed, seed + 1], 12);
    let before = dump(&c);
    let st = open(&c);
    let mut w = st.watch(before.last).unwrap();
    // Pack at a transaction in the middle of the history.
    let at = before.txns[before.txns.len() / 2].0;
    let out = py(&c).args(["pack", &at.to_string()]).output().unwrap();
    assert!(
        out.status.success(),
        "pack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pack_tid = Tid(hex_u64(String::from_utf8_lossy(&out.stdout).trim()));
    let after = dump(&c);
    assert_eq!(after.last, pack_tid, "the pack is the last transaction");

    // The pack changed what Python loads below the pack point.
    let was: BTreeMap<(Oid, Tid), &Expect> =
        before.loads.iter().map(|(o, t, e)| ((*o, *t), e)).collect();
    let changed: Vec<_> = after
        .loads
        .iter()
        .filter(|(o, t, e)| was.get(&(*o, *t)).is_some_and(|w| *w != e))
        .collect();
    assert!(!changed.is_empty(), "the pack at {at} removed nothing");
    for (o, t, e) in &changed {
        assert!(*t < at, "{o}@{t} changed above the pack point {at}: {e:?}");
    }

    // Every load as Python answers it after the pack.
    for (oid, tid, want) in &after.loads {
        assert_eq!(got(st.load(*oid, *tid)), *want, "load {oid}@{tid}");
    }
    // The pack transaction: live, then in the storage nodes' list.
    let c1 = w
        .next_timeout(Duration::from_secs(60))
        .unwrap()
        .expect("the pack transaction within 60 s");
    assert_eq!(c1.tid, pack_tid);
    let all: Vec<Tid> = st
        .transactions(Tid::ZERO, after.last)
        .unwrap()
        .into_iter()
        .map(|c| c.tid)
        .collect();
    let want: Vec<Tid> = after.txns.iter().map(|t| t.0).collect();
    assert_eq!(all, want);
    eprintln!(
        "neo_oracle packed: {} transactions, pack at {at}, {} of {} loads changed by it",
        after.txns.len(),
        changed.len(),
        after.loads.len()
    );
}
