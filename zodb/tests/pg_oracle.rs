//! The PostgreSQL (RelStorage) driver against real PostgreSQL clusters —
//! a primary and a streaming replica, started by the tests — with
//! Python's RelStorage as the oracle.
//!
//! `python/pg_oracle/pgoracle.py` commits through RelStorage (revisions,
//! undo of creations — NULL states — and of modifications, empty
//! transactions, 2 MiB records) and dumps what Python's `loadBefore`
//! answers for every oid as of every tid; our driver must answer the same,
//! on the primary and on the replica, one load at a time, pipelined, and
//! from many threads. Watchers must report every transaction exactly once,
//! in order, also while several Python writers commit at once. Bad
//! databases and bad credentials give clear errors.
//!
//! Restarts, outages and packs are in `pg_resilience.rs`.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use testkit::{python, PgServer};
use zodb::storage::postgres::PgStorage;
use zodb::storage::{Commit, Error, Storage};
use zodb::{Oid, Tid};

/// The primary and its replica, shared by the tests of this binary (each
/// test uses databases of its own).
fn cluster() -> &'static (PgServer, PgServer) {
    static C: OnceLock<(PgServer, PgServer)> = OnceLock::new();
    C.get_or_init(|| {
        let p = PgServer::start();
        let r = p.start_replica();
        (p, r)
    })
}

fn pgoracle(args: &[&str]) -> Vec<u8> {
    testkit::run_python("python/pg_oracle/pgoracle.py", args)
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb88320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Data { serial: Tid, len: usize, crc: u32 },
    None,
    Deleted,
    NoSuch,
}

struct Oracle {
    last: Tid,
    txns: Vec<Commit>,
    loads: Vec<(Oid, Tid, Expect)>,
}

fn dump(zurl: &str, dir: &Path) -> Oracle {
    let out = dir.join("oracle.txt");
    pgoracle(&["dump", zurl, out.to_str().unwrap()]);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut o = Oracle {
        last: Tid::ZERO,
        txns: vec![],
        loads: vec![],
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "last" => o.last = f[1].parse().unwrap(),
            "txn" => o.txns.push(Commit {
                tid: f[1].parse().unwrap(),
                oids: if f[3] == "-" {
                    vec![]
                } else {
                    f[3].split(',').map(|s| s.parse().unwrap()).collect()
                },
            }),
            "load" => {
                let e = match f[3] {
                    "none" => Expect::None,
                    "deleted" => Expect::Deleted,
                    "nosuch" => Expect::NoSuch,
                    s => Expect::Data {
                        serial: s.parse().unwrap(),
                        len: f[4].parse().unwrap(),
                        crc: u32::from_str_radix(f[5], 16).unwrap(),
                    },
                };
                o.loads
                    .push((f[1].parse().unwrap(), f[2].parse().unwrap(), e));
            }
            _ => panic!("bad oracle line {line:?}"),
        }
    }
    o
}

fn expect_of(r: Result<zodb::Loaded, Error>) -> Result<Expect, String> {
    match r {
        Ok(l) => Ok(Expect::Data {
            serial: l.serial,
            len: l.data.len(),
            crc: crc32(&l.data),
        }),
        Err(Error::NotYetCreated { .. }) => Ok(Expect::None),
        Err(Error::Deleted { .. }) => Ok(Expect::Deleted),
        Err(Error::NoObject { .. }) => Ok(Expect::NoSuch),
        Err(e) => Err(e.to_string()),
    }
}

/// A fresh database on the shared primary, named after the test.
fn new_db(name: &str) -> String {
    let (p, _) = cluster();
    p.create_db(name);
    p.zurl(name)
}

fn open(zurl: &str) -> PgStorage {
    PgStorage::open(zurl).unwrap_or_else(|e| panic!("open {zurl}: {e}"))
}

fn sorted(c: &Commit) -> Commit {
    let mut oids = c.oids.clone();
    oids.sort();
    oids.dedup();
    Commit { tid: c.tid, oids }
}

fn check_loads(st: &PgStorage, o: &Oracle, what: &str) {
    for (oid, at, want) in &o.loads {
        let got = expect_of(st.load(*oid, *at)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(&got, want, "{what}: load {oid}@{at}");
    }
    // Pipelined: every query sent before the first answer is read.
    let reqs: Vec<(Oid, Tid)> = o.loads.iter().map(|l| (l.0, l.1)).collect();
    let t0 = Instant::now();
    let got = st.load_many(&reqs);
    let t_pipe = t0.elapsed();
    for (r, (oid, at, want)) in got.into_iter().zip(&o.loads) {
        assert_eq!(
            &expect_of(r).unwrap(),
            want,
            "{what}: pipelined load {oid}@{at}"
        );
    }
    // Many threads on the one connection.
    std::thread::scope(|s| {
        for k in 0..4 {
            s.spawn(move || {
                for (oid, at, want) in o.loads.iter().skip(k).step_by(3) {
                    assert_eq!(
                        &expect_of(st.load(*oid, *at)).unwrap(),
                        want,
                        "{what}: thread {k}: load {oid}@{at}"
                    );
                }
            });
        }
    });
    println!(
        "{what}: {} loads match Python (pipelined: {:.0} ms)",
        o.loads.len(),
        t_pipe.as_secs_f64() * 1e3
    );
    assert!(matches!(
        st.load(Oid(u64::MAX), Tid::MAX),
        Err(Error::NoObject { .. })
    ));
    // Watching from any point reports the rest, in order.
    for after in [
        Tid::ZERO,
        o.txns[0].tid,
        Tid(o.txns[o.txns.len() / 2].tid.0 - 1),
        o.last,
    ] {
        let mut w = st.watch(after).unwrap();
        let mut got = vec![];
        while let Some(c) = w.next_timeout(Duration::ZERO).unwrap() {
            got.push(sorted(&c));
        }
        let want: Vec<Commit> = o
            .txns
            .iter()
            .filter(|c| c.tid > after)
            .map(sorted)
            .collect();
        assert_eq!(got, want, "{what}: watch({after})");
    }
}

#[test]
fn loads_and_history_match_python() {
    let tmp = tempfile::tempdir().unwrap();
    let zurl = new_db("oracle");
    pgoracle(&["gen", &zurl, "--big", "--seed", "7", "--txns", "80"]);
    let o = dump(&zurl, tmp.path());
    assert!(o.loads.iter().any(|l| l.2 == Expect::Deleted));
    assert!(o.loads.iter().any(|l| l.2 == Expect::None));
    assert!(o.txns.iter().any(|c| c.oids.is_empty()), "no empty txn");
    assert!(
        o.loads
            .iter()
            .any(|l| matches!(l.2, Expect::Data { len, .. } if len >= 2 << 20)),
        "no 2 MiB record"
    );

    let st = open(&zurl);
    assert!(!st.is_standby());
    assert_eq!(st.last_tid().unwrap(), o.last);
    assert_eq!(st.oldest_tid(), None);
    check_loads(&st, &o, "primary");

    // The replica serves exactly the same.
    let (p, r) = cluster();
    r.catch_up_with(p);
    let rs = open(&r.zurl("oracle"));
    assert!(rs.is_standby());
    assert_eq!(rs.last_tid().unwrap(), o.last);
    check_loads(&rs, &o, "replica");
    for s in [&st, &rs] {
        assert!(s.counters().iter().all(|(_, n)| *n == 0));
    }
}

/// Reads a writer's log: what Python committed.
fn writer_log(path: &Path) -> Vec<Commit> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with("done\n"), "writer did not finish");
    text.lines()
        .take_while(|l| *l != "done")
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            Commit {
                tid: f[0].parse().unwrap(),
                oids: if f[1] == "-" {
                    vec![]
                } else {
                    f[1].split(',').map(|s| s.parse().unwrap()).collect()
                },
            }
        })
        .collect()
}

/// Several Python writers commit at once (their commits interleave, and
/// RelStorage orders them under its commit lock): the watchers on the
/// primary and on the replica report each commit exactly once, in tid
/// order, with its objects, and every object loads as of it.
#[test]
fn watch_concurrent_python_writers() {
    const WRITERS: usize = 3;
    const N: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let zurl = new_db("writers");
    pgoracle(&["gen", &zurl, "--txns", "5"]);
    let (p, r) = cluster();
    let st = open(&zurl);
    r.catch_up_with(p);
    let rs = open(&r.zurl("writers"));
    let start = st.last_tid().unwrap();
    assert_eq!(rs.last_tid().unwrap(), start);
    let mut w = st.watch(start).unwrap();
    let mut rw = rs.watch(start).unwrap();
    let outs: Vec<_> = (0..WRITERS)
        .map(|i| tmp.path().join(format!("writer{i}.txt")))
        .collect();
    let mut children: Vec<_> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            Command::new(python())
                .arg(testkit::repo().join("python/pg_oracle/pgoracle.py"))
                .args(["writer", &zurl, &N.to_string(), out.to_str().unwrap()])
                .args(["--seed", &(i + 1).to_string()])
                .spawn()
                .unwrap()
        })
        .collect();
    let total = WRITERS * N;
    let (mut got, mut rgot) = (vec![], vec![]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (got.len() < total || rgot.len() < total) && Instant::now() < deadline {
        if let Some(c) = w.next_timeout(Duration::from_millis(50)).unwrap() {
            for oid in &c.oids {
                let l = st.load(*oid, c.tid).unwrap();
                assert_eq!(l.serial, c.tid, "load {oid}@{}", c.tid);
            }
            got.push(sorted(&c));
        }
        while let Some(c) = rw.next_timeout(Duration::ZERO).unwrap() {
            rgot.push(sorted(&c));
        }
    }
    for c in &mut children {
        assert!(c.wait().unwrap().success(), "python writer failed");
    }
    assert_eq!(w.next_timeout(Duration::from_millis(200)).unwrap(), None);
    let mut want: Vec<Commit> = outs
        .iter()
        .flat_map(|o| writer_log(o))
        .map(|c| sorted(&c))
        .collect();
    want.sort_by_key(|c| c.tid);
    assert_eq!(want.len(), total);
    assert_eq!(
        got, want,
        "primary watcher differs from what Python committed"
    );
    assert_eq!(
        rgot, want,
        "replica watcher differs from what Python committed"
    );
    assert_eq!(st.last_tid().unwrap(), want.last().unwrap().tid);
    assert_eq!(rs.last_tid().unwrap(), want.last().unwrap().tid);
}

/// Records loaded at head are remembered until a commit changes them: a
/// load at the new head after a Python commit sees the new data at once,
/// one at the old head the old data — never a stale answer — checked
/// against Python's own view after every commit.
#[test]
fn remembered_records_follow_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let zurl = new_db("remember");
    pgoracle(&["gen", &zurl, "--txns", "5"]);
    let st = open(&zurl);
    let start = st.last_tid().unwrap();
    let before = dump(&zurl, tmp.path());
    let oids: Vec<Oid> = {
        let mut v: Vec<Oid> = before.txns.iter().flat_map(|c| c.oids.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    // Remember everything as of the start.
    for &oid in &oids {
        let _ = st.load(oid, start);
    }
    let mut w = st.watch(start).unwrap();
    let out = tmp.path().join("w.txt");
    let st2 = Command::new(python())
        .arg(testkit::repo().join("python/pg_oracle/pgoracle.py"))
        .args(["writer", &zurl, "30", out.to_str().unwrap(), "--seed", "9"])
        .status()
        .unwrap();
    assert!(st2.success());
    let mut seen = vec![];
    while seen.len() < 30 {
        let c = w
            .next_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("a commit");
        // Right after the commit is reported, every object at its tid.
        for &oid in &oids {
            let _ = st.load(oid, c.tid);
        }
        seen.push(c.tid);
    }
    let after = dump(&zurl, tmp.path());
    for (oid, at, want) in &after.loads {
        let got = expect_of(st.load(*oid, *at)).unwrap();
        assert_eq!(&got, want, "load {oid}@{at}");
    }
}

/// With the NOTIFY trigger of the README installed, a commit wakes the
/// poller at once: with polling slowed down to once a minute, every commit
/// of a Python writer still arrives within a second of its commit.
#[test]
fn notify_trigger_wakes_the_poller() {
    let tmp = tempfile::tempdir().unwrap();
    let zurl = new_db("notify");
    pgoracle(&["gen", &zurl, "--txns", "2"]);
    let (p, _) = cluster();
    p.psql(
        "notify",
        "CREATE FUNCTION wcfs_notify_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN PERFORM pg_notify('wcfs_commit', NEW.tid::text); RETURN NULL; END$$; \
         CREATE TRIGGER wcfs_notify_commit AFTER INSERT ON \"transaction\" \
         FOR EACH ROW EXECUTE FUNCTION wcfs_notify_commit()",
    );
    let opts = zodb::storage::postgres::PgOptions {
        poll: Duration::from_secs(60),
        notified_poll: Duration::from_secs(60),
        ..Default::default()
    };
    let st = PgStorage::open_with(&zurl, &Default::default(), opts).unwrap();
    let mut w = st.watch(st.last_tid().unwrap()).unwrap();
    let out = tmp.path().join("w.txt");
    let mut child = Command::new(python())
        .arg(testkit::repo().join("python/pg_oracle/pgoracle.py"))
        .args([
            "writer",
            &zurl,
            "5",
            out.to_str().unwrap(),
            "--seed",
            "7",
            "--sleep",
        ])
        .spawn()
        .unwrap();
    let mut seen = vec![];
    for _ in 0..5 {
        let c = w
            .next_timeout(Duration::from_secs(20))
            .unwrap()
            .expect("a commit (NOTIFY lost?)");
        seen.push((c.tid, std::time::SystemTime::now()));
    }
    assert!(child.wait().unwrap().success());
    let log = writer_log(&out);
    assert_eq!(log.len(), 5);
    let text = std::fs::read_to_string(&out).unwrap();
    for ((tid, when), line) in seen.iter().zip(text.lines()) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0].parse::<Tid>().unwrap(), *tid);
        let committed: f64 = f[2].parse().unwrap();
        let when = when
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        println!(
            "@{tid} seen {:.1} ms after its commit",
            (when - committed) * 1e3
        );
        assert!(
            when - committed < 1.0,
            "@{tid} seen {:.3}s after its commit (polling is once a minute)",
            when - committed
        );
    }
}

/// A role that may only SELECT is all the driver needs.
#[test]
fn read_only_role() {
    let tmp = tempfile::tempdir().unwrap();
    let zurl = new_db("readonly");
    pgoracle(&["gen", &zurl, "--txns", "20"]);
    let (p, _) = cluster();
    p.create_reader("wcfs_ro", "ro-secret", "readonly");
    // Not even that role may write.
    let ro = p.zurl_as("wcfs_ro", "ro-secret", "readonly");
    let o = dump(&zurl, tmp.path());
    let st = open(&ro);
    assert_eq!(st.last_tid().unwrap(), o.last);
    for (oid, at, want) in o.loads.iter().step_by(7) {
        assert_eq!(&expect_of(st.load(*oid, *at)).unwrap(), want);
    }
    let mut w = st.watch(Tid::ZERO).unwrap();
    let mut n = 0;
    while w.next_timeout(Duration::ZERO).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, o.txns.len());
    // A role without SELECT: a clear error naming what is missing.
    p.psql(
        "postgres",
        "CREATE ROLE wcfs_none LOGIN PASSWORD 'none-secret'",
    );
    let e = PgStorage::open(&p.zurl_as("wcfs_none", "none-secret", "readonly"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("permission denied") && e.contains("SELECT"),
        "{e}"
    );
    assert!(!e.contains("none-secret"), "{e}");
}

/// Clear errors, and the password never in them.
#[test]
fn bad_databases_and_credentials() {
    let (p, _) = cluster();
    p.create_db("empty");
    p.create_db("histfree");
    pgoracle(&["histfree", &p.zurl("histfree")]);
    p.psql(
        "postgres",
        "CREATE ROLE wcfs_pw LOGIN PASSWORD 'right-secret'",
    );
    let cases: Vec<(String, &str)> = vec![
        (p.zurl("empty"), "holds no RelStorage data"),
        (p.zurl("histfree"), "history-free"),
        (p.zurl("nosuchdb"), "does not exist"),
        (
            p.zurl_as("wcfs_pw", "wrong-secret", "empty"),
            "password authentication failed",
        ),
        (
            "postgresql://u:wrong-secret@127.0.0.1:1/db".into(),
            "connect",
        ),
        (
            format!(
                "{}?sslmode=require",
                p.zurl_as("wcfs_pw", "wrong-secret", "empty")
            ),
            "the server does not offer TLS, and sslmode=require requires it",
        ),
        ("postgresql://u:wrong-secret@[::1/db".into(), "invalid zurl"),
    ];
    for (zurl, want) in cases {
        let e = match zodb::zurl::open(&zurl) {
            Ok(_) => panic!("{zurl}: opened"),
            Err(e) => e.to_string(),
        };
        println!("{e}");
        assert!(e.contains(want), "{zurl}: {e}");
        assert!(!e.contains("secret"), "{zurl}: {e}");
    }
}
