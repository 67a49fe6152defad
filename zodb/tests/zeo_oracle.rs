//! The ZEO driver against a real ZEO server (`runzeo` from PyPI) with
//! Python's ZODB as the oracle.
//!
//! `python/fs_oracle/fsoracle.py` writes a data.fs (revisions, undo records
//! with back-pointers and deletions, empty transactions, 2 MiB records) and
//! dumps what Python's `loadBefore` answers for every oid as of every tid;
//! `runzeo` then serves that file and our client must answer the same —
//! one request at a time, pipelined, and from many threads at once. The
//! watcher must report every transaction a Python ZEO client commits, in
//! order, and a killed server must give errors, never a stale answer.
//!
//! The Python interpreter is `$WCFS_PYTHON`, by default the repository's
//! `.venv/bin/python`; without it (and ZEO in it) these tests fail.

mod fs_dump;

use fs_dump::{dump, expect_of, oracle, script, sorted, writer_log, Expect};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::{python, ZeoServer};
use zodb::storage::zeo::ZeoStorage;
use zodb::storage::{Commit, Error, Storage};
use zodb::{Oid, Tid};

fn open(srv: &ZeoServer) -> ZeoStorage {
    let url = srv.zurl();
    ZeoStorage::open("127.0.0.1", srv.port, &url)
        .unwrap_or_else(|e| panic!("open {url}: {e}\nserver log:\n{}", srv.log_text()))
}

#[test]
fn loads_and_history_match_python() {
    loads_and_history(false);
}

/// The same with a server marshalling with msgpack.
#[test]
fn loads_and_history_match_python_msgpack() {
    loads_and_history(true);
}

fn loads_and_history(msgpack: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    oracle(&["gen", d, "--big", "--seed", "7", "--txns", "80"]);
    let o = dump(tmp.path());
    assert!(o.loads.iter().any(|l| l.2 == Expect::Deleted));
    assert!(o.loads.iter().any(|l| l.2 == Expect::None));
    let srv = ZeoServer::start_with(&tmp.path().join("data.fs"), msgpack);
    let zs = open(&srv);
    assert_eq!(zs.last_tid().unwrap(), o.last);

    // One at a time.
    let t0 = Instant::now();
    for (oid, at, want) in &o.loads {
        let got = expect_of(zs.load(*oid, *at)).unwrap_or_else(|e| panic!("load {oid}@{at}: {e}"));
        assert_eq!(&got, want, "load {oid}@{at}");
    }
    let t_seq = t0.elapsed();
    assert!(matches!(
        zs.load(Oid(u64::MAX), Tid::MAX),
        Err(Error::NoObject { .. })
    ));

    // Pipelined: every request sent before the first reply is read.
    let reqs: Vec<(Oid, Tid)> = o.loads.iter().map(|l| (l.0, l.1)).collect();
    let t0 = Instant::now();
    let got = zs.load_many(&reqs);
    let t_pipe = t0.elapsed();
    for (r, (oid, at, want)) in got.into_iter().zip(&o.loads) {
        assert_eq!(&expect_of(r).unwrap(), want, "pipelined load {oid}@{at}");
    }

    // Many threads on the one connection.
    std::thread::scope(|s| {
        for k in 0..6 {
            let (zs, o) = (&zs, &o);
            s.spawn(move || {
                for (oid, at, want) in o.loads.iter().skip(k).step_by(3) {
                    assert_eq!(
                        &expect_of(zs.load(*oid, *at)).unwrap(),
                        want,
                        "thread {k}: load {oid}@{at}"
                    );
                }
            });
        }
    });
    println!(
        "{} loads: one by one {:.0} ms, pipelined {:.0} ms",
        o.loads.len(),
        t_seq.as_secs_f64() * 1e3,
        t_pipe.as_secs_f64() * 1e3
    );

    // Watching from any point reports the rest, in order (the part before
    // the connection comes from the server's transaction iterator).
    for after in [
        Tid::ZERO,
        o.txns[0].tid,
        Tid(o.txns[o.txns.len() / 2].tid.0 - 1),
        o.last,
    ] {
        let mut w = zs.watch(after).unwrap();
        let mut got = vec![];
        while let Some(c) = w.next_timeout(Duration::ZERO).unwrap() {
            got.push(c);
        }
        let want: Vec<Commit> = o.txns.iter().filter(|c| c.tid > after).cloned().collect();
        assert_eq!(got, want, "watch({after})");
    }
    assert!(zs.failure().is_none());
}

#[test]
fn watch_python_zeo_client_commits() {
    const N: usize = 80;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    oracle(&["gen", d, "--txns", "20"]);
    let srv = ZeoServer::start(&tmp.path().join("data.fs"));
    let zs = open(&srv);
    let start = zs.last_tid().unwrap();
    let mut w = zs.watch(start).unwrap();
    let out = tmp.path().join("writer.txt");
    let mut child = Command::new(python())
        .arg(script())
        .args(["writer", d, &N.to_string(), out.to_str().unwrap()])
        .args(["--zeo", &srv.addr()])
        .spawn()
        .unwrap();
    let mut got: Vec<Commit> = vec![];
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < N && Instant::now() < deadline {
        if let Some(c) = w.next_timeout(Duration::from_millis(500)).unwrap() {
            // Every object the transaction changed loads as of it, and is
            // not visible just before it.
            for oid in &c.oids {
                let l = zs.load(*oid, c.tid).unwrap();
                assert_eq!(l.serial, c.tid, "load {oid}@{}", c.tid);
                if let Ok(prev) = zs.load(*oid, Tid(c.tid.0 - 1)) {
                    assert!(prev.serial < c.tid);
                }
            }
            got.push(c);
        }
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "python writer failed");
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(w.next_timeout(Duration::from_millis(300)).unwrap(), None);
    let want = writer_log(&out);
    assert_eq!(want.len(), N);
    // ZEO lists a transaction's oids in store order, FileStorage's records
    // may differ in order: compare as sets, tids exactly.
    let g: Vec<Commit> = got.iter().map(sorted).collect();
    let wnt: Vec<Commit> = want.iter().map(sorted).collect();
    assert_eq!(g, wnt, "watcher differs from what Python committed");
    assert_eq!(zs.last_tid().unwrap(), want.last().unwrap().tid);

    // A second connection, watching from before the writer, sees the same
    // (through the server's iterator).
    let zs2 = open(&srv);
    let mut w2 = zs2.watch(start).unwrap();
    let mut got2 = vec![];
    while let Some(c) = w2.next_timeout(Duration::ZERO).unwrap() {
        got2.push(sorted(&c));
    }
    assert_eq!(got2, wnt);
}

/// A killed server is ridden through: the watcher waits (no error), loads
/// fail after the wait with `Unavailable`, `last_tid` stays; once the
/// server is back on the same data.fs, loads serve again and the counters
/// say what happened. A server that never was is a clear error at open.
#[test]
fn killed_server_is_ridden_through() {
    use zodb::storage::zeo::ZeoOptions;
    use zodb::storage::{counter, Resilience};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    oracle(&["gen", d, "--txns", "10"]);
    let o = dump(tmp.path());
    let mut srv = ZeoServer::start(&tmp.path().join("data.fs"));
    let wait = Duration::from_millis(700);
    let opts = ZeoOptions {
        resilience: Resilience {
            wait,
            backoff_max: Duration::from_millis(200),
        },
        ..ZeoOptions::default()
    };
    let zs = ZeoStorage::open_with("127.0.0.1", srv.port, &srv.zurl(), opts).unwrap();
    let head = zs.last_tid().unwrap();
    let mut w = zs.watch(head).unwrap();
    let (oid, at, expect) = o
        .loads
        .iter()
        .find(|l| matches!(l.2, Expect::Data { .. }))
        .unwrap()
        .clone();
    assert_eq!(expect_of(zs.load(oid, at)).unwrap(), expect);
    srv.kill();
    let counter_of = |name: &str| zs.counters().into_iter().find(|c| c.0 == name).unwrap().1;
    let t0 = Instant::now();
    while counter_of(counter::LOST) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "loss noticed late");
        std::thread::sleep(Duration::from_millis(10));
    }
    let why = zs.failure().expect("not serving");
    assert!(why.contains("closed by server"), "{why}");
    // The watcher sees nothing, and no error: the stream resumes later.
    assert!(w
        .next_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
    for _ in 0..2 {
        let t0 = Instant::now();
        let e = zs.load(oid, at).unwrap_err();
        let dt = t0.elapsed();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        assert!(e.to_string().contains(&srv.zurl()), "{e}");
        assert!(dt >= wait && dt < wait * 4, "gave up after {dt:?}");
    }
    assert_eq!(counter_of(counter::GIVEUP), 2);
    assert_eq!(zs.last_tid().unwrap(), head, "head stays during the outage");

    // Back: loads serve again, exact; one reconnect, nothing to catch up.
    srv.restart(None);
    let t0 = Instant::now();
    let got = loop {
        match zs.load(oid, at) {
            Ok(l) => break l,
            Err(Error::Unavailable { .. }) if t0.elapsed() < Duration::from_secs(30) => {}
            Err(e) => panic!("after restart: {e}"),
        }
    };
    assert_eq!(expect_of(Ok(got)).unwrap(), expect);
    assert!(zs.failure().is_none());
    assert_eq!(counter_of(counter::RECONNECT), 1);
    assert_eq!(counter_of(counter::CATCHUP), 0);
    assert!(w.next_timeout(Duration::ZERO).unwrap().is_none());

    // Nobody listening: opening fails clearly, at once.
    srv.kill();
    let e = ZeoStorage::open("127.0.0.1", srv.port, "zeo://gone")
        .err()
        .unwrap();
    assert!(e.to_string().contains("connect"), "{e}");
}
