//! The PostgreSQL driver when the server goes away (the contract in the
//! module doc of `zodb::storage`), and after a pack — each test on a
//! cluster of its own, which it restarts, kills and replaces.
//!
//! - restarts (`pg_ctl restart`), a killed postmaster (kill -9), our
//!   backend terminated (`pg_terminate_backend`), and our role locked out
//!   while a Python writer commits: the watcher reports every transaction
//!   of the database exactly once, in order (the database's own list is
//!   the truth), loads during the outages wait and then answer right, the
//!   commits made while we were away are caught up, and the counters say
//!   so;
//! - a long outage: a load fails with `Unavailable` after the wait, the
//!   watcher reports nothing wrong, and all is well once the server is back;
//! - another database behind the same address: `NotSameDatabase`, final;
//! - a pack: loads never answer wrongly — data that is there is exact,
//!   history the pack removed is `PackedAway` — and the pack point is known.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use testkit::{python, PgServer};

use zodb::storage::postgres::{PgOptions, PgStorage};
use zodb::storage::{counter, Commit, Error, Resilience, Storage, Watcher};
use zodb::{Oid, Tid};

/// The driver's log lines on stderr (the test harness shows them for a
/// failing test).
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if r.level() <= log::Level::Info {
            eprintln!(
                "{:?} {} {}",
                std::time::SystemTime::now(),
                r.level(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn init_log() {
    static L: Stderr = Stderr;
    if log::set_logger(&L).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

fn pgoracle(args: &[&str]) -> Vec<u8> {
    testkit::run_python("python/pg_oracle/pgoracle.py", args)
}

/// A Python writer committing `n` transactions through any outage (its
/// complaints go to `<out>.err`).
fn writer(zurl: &str, n: usize, out: &std::path::Path, seed: u64) -> Child {
    let err = std::fs::File::create(out.with_extension("err")).unwrap();
    Command::new(python())
        .arg(testkit::repo().join("python/pg_oracle/pgoracle.py"))
        .args(["writer", zurl, &n.to_string(), out.to_str().unwrap()])
        .args(["--seed", &seed.to_string(), "--sleep", "--retry"])
        .stderr(err)
        .spawn()
        .unwrap()
}

fn open(zurl: &str, wait: Duration) -> PgStorage {
    init_log();
    let res = Resilience {
        wait,
        backoff_max: Duration::from_millis(200),
    };
    PgStorage::open_with(zurl, &res, PgOptions::default())
        .unwrap_or_else(|e| panic!("open {zurl}: {e}"))
}

fn count(st: &PgStorage, name: &str) -> u64 {
    st.counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| v)
}

/// Every transaction of the database after `after`, with its objects, as
/// the database itself lists them.
fn db_commits(pg: &PgServer, db: &str, after: Tid) -> Vec<Commit> {
    let out = pg.psql(
        db,
        &format!(
            "SELECT t.tid, coalesce(string_agg(s.zoid::text, ',' ORDER BY s.zoid), '') \
             FROM \"transaction\" t LEFT JOIN object_state s ON s.tid = t.tid \
             WHERE t.tid > {} GROUP BY t.tid ORDER BY t.tid",
            after.0
        ),
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (tid, oids) = l.split_once('|').unwrap();
            Commit {
                tid: Tid(tid.parse().unwrap()),
                oids: oids
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| Oid(s.parse().unwrap()))
                    .collect(),
            }
        })
        .collect()
}

fn sorted(c: Commit) -> Commit {
    let mut oids = c.oids;
    oids.sort();
    Commit { tid: c.tid, oids }
}

/// Takes commits from `w` until `done` says so (or 120 s pass), checking
/// that every object of each loads as of it.
fn follow(
    st: &PgStorage,
    w: &mut Box<dyn Watcher>,
    got: &mut Vec<Commit>,
    mut done: impl FnMut(&[Commit]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    eprintln!("following from {} commits", got.len());
    while !done(got) {
        assert!(
            Instant::now() < deadline,
            "watcher stuck after {} commits",
            got.len()
        );
        if let Some(c) = w.next_timeout(Duration::from_millis(50)).unwrap() {
            for oid in &c.oids {
                let l = st.load(*oid, c.tid).unwrap();
                assert_eq!(l.serial, c.tid, "load {oid}@{}", c.tid);
            }
            got.push(sorted(c));
        }
    }
}

#[test]
fn rides_through_restarts_kills_and_lockouts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = PgServer::start();
    pg.create_db("zodb");
    pgoracle(&["gen", &pg.zurl("zodb"), "--txns", "5"]);
    pg.create_reader("wcfs_ro", "ro-secret", "zodb");
    let zurl = format!(
        "{}?application_name=wcfs-test",
        pg.zurl_as("wcfs_ro", "ro-secret", "zodb")
    );
    let st = open(&zurl, Duration::from_secs(30));
    let start = st.last_tid().unwrap();
    let mut w = st.watch(start).unwrap();
    let out = tmp.path().join("writer.txt");
    let mut child = writer(&pg.zurl("zodb"), 400, &out, 1);
    let mut got = vec![];
    let past = |n: usize| move |g: &[Commit]| g.len() >= n;

    // Our backend terminated (twice), the server going on.
    follow(&st, &mut w, &mut got, past(20));
    assert!(pg.terminate("zodb", "wcfs-test") >= 1);
    let n = got.len() + 10;
    follow(&st, &mut w, &mut got, past(n));
    assert!(pg.terminate("zodb", "wcfs-test") >= 1);
    let n = got.len() + 10;
    follow(&st, &mut w, &mut got, past(n));
    assert!(count(&st, counter::LOST) >= 2);

    // Locked out while the writer commits: those are caught up.
    pg.psql("postgres", "ALTER ROLE wcfs_ro NOLOGIN");
    assert!(pg.terminate("zodb", "wcfs-test") >= 1);
    let head = st.last_tid().unwrap();
    let missed = Instant::now();
    while db_commits(&pg, "zodb", head).len() < 5 {
        assert!(missed.elapsed() < Duration::from_secs(60), "writer stuck");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Meanwhile a load waits (and the watcher has nothing).
    let (oid, at) = (got[0].oids[0], got[0].tid);
    let t0 = Instant::now();
    let loader = std::thread::scope(|s| {
        let h = s.spawn(|| st.load(oid, at));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(st.last_tid().unwrap(), head, "position moved while away");
        pg.psql("postgres", "ALTER ROLE wcfs_ro LOGIN");
        h.join().unwrap()
    });
    assert_eq!(loader.unwrap().serial, at);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let n = got.len() + 10;
    follow(&st, &mut w, &mut got, past(n));
    assert!(count(&st, counter::CATCHUP) >= 5, "{:?}", st.counters());

    // The server restarted, then killed with -9 and started again.
    pg.restart();
    let n = got.len() + 10;
    follow(&st, &mut w, &mut got, past(n));
    pg.kill9();
    std::thread::sleep(Duration::from_millis(300));
    pg.start_again();
    let n = got.len() + 10;
    follow(&st, &mut w, &mut got, past(n));

    // The rest, then compare with the database's own list.
    assert!(child.wait().unwrap().success(), "python writer failed");
    let all = db_commits(&pg, "zodb", start);
    follow(&st, &mut w, &mut got, |g| g.len() >= all.len());
    assert_eq!(w.next_timeout(Duration::from_millis(300)).unwrap(), None);
    assert_eq!(got, all, "every transaction exactly once, in order");
    assert_eq!(st.last_tid().unwrap(), all.last().unwrap().tid);
    let c = st.counters();
    println!("counters: {c:?}");
    assert!(count(&st, counter::LOST) >= 5, "{c:?}");
    assert!(count(&st, counter::RECONNECT) >= 5, "{c:?}");
    assert_eq!(count(&st, counter::GIVEUP), 0, "{c:?}");
}

/// Our backends on `pg` with application name `app`: their pids, and
/// what each one's last query was: "poll" (the poller's), "load" (a load
/// that started after `since`, the server's clock in epoch seconds), or
/// "other".
fn backends(pg: &PgServer, app: &str, since: f64) -> Vec<(u32, String)> {
    pg.psql(
        "postgres",
        &format!(
            "SELECT pid, CASE WHEN query LIKE 'WITH t AS%' THEN 'poll' \
             WHEN query LIKE '%FROM object_state WHERE zoid%' \
             AND extract(epoch FROM query_start) > {since} THEN 'load' ELSE 'other' END \
             FROM pg_stat_activity WHERE application_name = '{app}' ORDER BY pid"
        ),
    )
    .lines()
    .filter_map(|l| l.split_once('|'))
    .map(|(p, q)| (p.parse().unwrap(), q.to_string()))
    .collect()
}

/// The server's clock, epoch seconds.
fn server_now(pg: &PgServer) -> f64 {
    pg.psql("postgres", "SELECT extract(epoch FROM clock_timestamp())")
        .parse()
        .unwrap()
}

/// Waits until `app` has `n` backends on `pg`.
fn wait_backends(pg: &PgServer, app: &str, n: usize) -> Vec<(u32, String)> {
    let t0 = Instant::now();
    loop {
        let b = backends(pg, app, 0.0);
        if b.len() == n {
            return b;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} backend(s) of ours, not {n}: {b:?}",
            b.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Loads go over a second connection to the same server (so that two
/// server processes answer them: one serves a connection, and over TLS it
/// is the ceiling), and losing that connection is no outage: loads go on,
/// exact, and it is opened again.
#[test]
fn loads_use_a_second_connection_and_ride_its_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = PgServer::start();
    pg.create_db("zodb");
    pgoracle(&["gen", &pg.zurl("zodb"), "--txns", "5"]);
    let zurl = format!("{}?application_name=wcfs-two", pg.zurl("zodb"));
    let st = open(&zurl, Duration::from_secs(30));
    let start = st.last_tid().unwrap();
    let mut w = st.watch(start).unwrap();
    wait_backends(&pg, "wcfs-two", 2);
    let mut child = writer(&pg.zurl("zodb"), 120, &tmp.path().join("w.txt"), 7);
    let mut got = vec![];
    // Loads (the follower loads every object as of each commit) go in
    // turn over both connections: the one that does not poll ran loads.
    let t0 = server_now(&pg);
    follow(&st, &mut w, &mut got, |g| g.len() >= 10);
    // (The poller's last query may be a load for an instant.)
    let b = (0..50)
        .map(|_| backends(&pg, "wcfs-two", t0))
        .find(|b| b.iter().any(|b| b.1 == "poll"))
        .expect("a backend of ours polls");
    assert_eq!(b.len(), 2, "{b:?}");
    let loader: Vec<u32> = b.iter().filter(|b| b.1 == "load").map(|b| b.0).collect();
    assert_eq!(
        loader.len(),
        1,
        "the other backend's last query is a load: {b:?}"
    );
    // It goes; loads (from the follower, as of each commit) go on with
    // no error and no outage, and another one comes.
    let n = pg.psql(
        "postgres",
        &format!("SELECT count(pg_terminate_backend({}))", loader[0]),
    );
    assert_eq!(n, "1");
    let more = got.len() + 20;
    follow(&st, &mut w, &mut got, |g| g.len() >= more);
    let b = wait_backends(&pg, "wcfs-two", 2);
    assert!(!b.iter().any(|(p, _)| *p == loader[0]), "{b:?}");
    assert_eq!(count(&st, counter::LOST), 0, "{:?}", st.counters());
    assert_eq!(count(&st, counter::GIVEUP), 0, "{:?}", st.counters());
    // Every transaction once, in order.
    assert!(child.wait().unwrap().success(), "python writer failed");
    let all = db_commits(&pg, "zodb", start);
    follow(&st, &mut w, &mut got, |g| g.len() >= all.len());
    assert_eq!(got, all);
    // One connection when asked.
    let one = PgStorage::open_with(
        &format!("{}?application_name=wcfs-one", pg.zurl("zodb")),
        &Resilience::default(),
        PgOptions {
            load_connections: 1,
            ..PgOptions::default()
        },
    )
    .unwrap();
    for c in &got {
        for oid in &c.oids {
            assert_eq!(one.load(*oid, c.tid).unwrap().serial, c.tid);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(backends(&pg, "wcfs-one", 0.0).len(), 1);
}

/// A role allowed one connection: loads share the poller's, exactly, and
/// the second connection comes once the limit is lifted.
#[test]
fn a_role_with_one_connection_loads_over_it() {
    let pg = PgServer::start();
    pg.create_db("zodb");
    pgoracle(&["gen", &pg.zurl("zodb"), "--txns", "5"]);
    pg.create_reader("wcfs_one", "one-secret", "zodb");
    pg.psql("postgres", "ALTER ROLE wcfs_one CONNECTION LIMIT 1");
    let zurl = format!(
        "{}?application_name=wcfs-limited",
        pg.zurl_as("wcfs_one", "one-secret", "zodb")
    );
    let st = open(&zurl, Duration::from_secs(30));
    let head = st.last_tid().unwrap();
    // The loader was refused (tried at once, then every 5 s).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(st.load_connections(), 1);
    assert_eq!(wait_backends(&pg, "wcfs-limited", 1).len(), 1);
    // Every object as of each transaction that changed it (the database's
    // own list) loads with that serial, and as another instance with two
    // connections loads it.
    let full = open(&pg.zurl("zodb"), Duration::from_secs(30));
    let commits = db_commits(&pg, "zodb", Tid::ZERO);
    assert!(!commits.is_empty());
    for c in &commits {
        for oid in &c.oids {
            let a = st.load(*oid, c.tid);
            let serial = match &a {
                Ok(l) => l.serial,
                Err(Error::Deleted { serial, .. }) => *serial,
                Err(e) => panic!("load {oid}@{}: {e}", c.tid),
            };
            assert_eq!(serial, c.tid, "load {oid}@{}", c.tid);
            assert_eq!(answer(a), answer(full.load(*oid, c.tid)));
        }
    }
    assert_eq!(count(&st, counter::LOST), 0);
    assert_eq!(st.last_tid().unwrap(), head);
    // Lifted: the second one comes.
    pg.psql("postgres", "ALTER ROLE wcfs_one CONNECTION LIMIT -1");
    let t0 = Instant::now();
    while st.load_connections() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no second connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_backends(&pg, "wcfs-limited", 2);
}

#[test]
fn long_outage_gives_unavailable_then_recovers() {
    let mut pg = PgServer::start();
    pg.create_db("zodb");
    pgoracle(&["gen", &pg.zurl("zodb"), "--txns", "5"]);
    let st = open(&pg.zurl("zodb"), Duration::from_secs(1));
    let head = st.last_tid().unwrap();
    let mut w = st.watch(head).unwrap();
    // The root was loaded at head (and is remembered); object 1 was not.
    let root = st.load(Oid(0), head).unwrap();
    let oid = Oid(1);
    pg.stop();
    // What is remembered needs no server.
    assert_eq!(st.load(Oid(0), head).unwrap(), root);
    // Loads that need it wait for the wait, then fail — each one.
    for _ in 0..2 {
        let t0 = Instant::now();
        let e = st.load(oid, head).unwrap_err();
        let dt = t0.elapsed();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        assert!(
            dt >= Duration::from_millis(900) && dt < Duration::from_secs(5),
            "{dt:?}"
        );
        println!("{e}");
    }
    assert_eq!(count(&st, counter::GIVEUP), 2);
    // The watcher says nothing wrong, the position stays.
    assert_eq!(w.next_timeout(Duration::from_millis(200)).unwrap(), None);
    assert_eq!(st.last_tid().unwrap(), head);
    pg.start_again();
    let t0 = Instant::now();
    loop {
        match st.load(oid, head) {
            Ok(l) => {
                assert!(l.serial <= head);
                break;
            }
            Err(Error::Unavailable { .. }) if t0.elapsed() < Duration::from_secs(30) => {}
            Err(e) => panic!("{e}"),
        }
    }
    // And new commits come through.
    pgoracle(&["gen", &pg.zurl("zodb"), "--txns", "0"]);
    let c = w
        .next_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("a commit");
    assert!(c.tid > head);
    assert!(count(&st, counter::RECONNECT) >= 1);
}

#[test]
fn another_database_behind_the_address_is_final() {
    let mut pg = PgServer::start();
    pg.create_db("zodb");
    pgoracle(&["gen", &pg.zurl("zodb"), "--txns", "5"]);
    let st = open(&pg.zurl("zodb"), Duration::from_secs(30));
    let head = st.last_tid().unwrap();
    let mut w = st.watch(head).unwrap();
    // Another cluster, same database name, other history, then behind
    // the same port.
    let mut other = PgServer::start();
    other.create_db("zodb");
    pgoracle(&["gen", &other.zurl("zodb"), "--txns", "7", "--seed", "3"]);
    let port = pg.port;
    pg.stop();
    other.move_to(port);
    let t0 = Instant::now();
    let e = loop {
        match w.next_timeout(Duration::from_millis(100)) {
            Ok(None) => assert!(t0.elapsed() < Duration::from_secs(30), "not noticed"),
            Ok(Some(c)) => panic!("a commit of the other database: {c:?}"),
            Err(e) => break e,
        }
    };
    println!("{e}");
    assert!(matches!(e, Error::NotSameDatabase { .. }), "{e}");
    assert!(e.to_string().contains(&format!("@{head}")), "{e}");
    assert!(matches!(
        st.load(Oid(0), head),
        Err(Error::NotSameDatabase { .. })
    ));
    assert!(st.last_tid().is_err());
    assert!(st.watch(head).is_err());
    assert!(w.next_timeout(Duration::ZERO).is_err(), "final");
    drop(pg);
}

/// What a load answered, for comparing before and after a pack.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Data(Tid, Vec<u8>),
    Deleted,
    NotYet,
    NoObject,
    Packed,
}

fn answer(r: Result<zodb::Loaded, Error>) -> Answer {
    match r {
        Ok(l) => Answer::Data(l.serial, l.data.to_vec()),
        Err(Error::Deleted { .. }) => Answer::Deleted,
        Err(Error::NotYetCreated { .. }) => Answer::NotYet,
        Err(Error::NoObject { .. }) => Answer::NoObject,
        Err(Error::PackedAway { .. }) => Answer::Packed,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn pack_never_answers_wrongly() {
    for gc in [false, true] {
        let pg = PgServer::start();
        pg.create_db("zodb");
        let zurl = pg.zurl("zodb");
        pgoracle(&["gen", &zurl, "--txns", "40", "--seed", "5"]);
        let st = open(&zurl, Duration::from_secs(30));
        let head = st.last_tid().unwrap();
        let mut tids = vec![Tid::ZERO];
        let mut w = st.watch(Tid::ZERO).unwrap();
        let mut oids = std::collections::BTreeSet::new();
        while let Some(c) = w.next_timeout(Duration::ZERO).unwrap() {
            tids.push(c.tid);
            oids.extend(c.oids);
        }
        let mut before = BTreeMap::new();
        for &oid in &oids {
            for &at in &tids {
                before.insert((oid, at), answer(st.load(oid, at)));
            }
        }
        // Pack as of a transaction in the middle.
        let target = tids[tids.len() / 2];
        let at = target.to_string();
        let mut args = vec!["pack", zurl.as_str(), "--at", at.as_str()];
        if gc {
            args.push("--gc");
        }
        let printed = String::from_utf8(pgoracle(&args)).unwrap();
        assert_eq!(printed.trim(), format!("packed {target}"));
        // The storage learns the pack point by itself.
        let t0 = Instant::now();
        while st.oldest_tid().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(10), "pack not noticed");
            std::thread::sleep(Duration::from_millis(50));
        }
        let packed = st.oldest_tid().unwrap();
        assert!(packed > tids[1] && packed <= target, "packed at {packed}");
        assert!(head > target);
        // And so does a fresh one.
        let fresh = open(&zurl, Duration::from_secs(30));
        assert_eq!(fresh.oldest_tid(), Some(packed));
        let (mut npacked, mut ndata) = (0, 0);
        for s in [&st, &fresh] {
            for (&(oid, at), was) in &before {
                let now = answer(s.load(oid, at));
                match (&now, was) {
                    (Answer::Data(..), _) => {
                        assert_eq!(&now, was, "gc={gc}: load {oid}@{at}");
                        ndata += 1;
                    }
                    (Answer::Packed, _) => {
                        assert!(at < packed, "gc={gc}: load {oid}@{at}: packed");
                        npacked += 1;
                    }
                    // Without gc the view as of the pack point and later
                    // is whole; with gc, unreachable objects are gone.
                    _ if at >= packed && !gc => {
                        assert_eq!(&now, was, "gc={gc}: load {oid}@{at}")
                    }
                    _ if at >= packed => {}
                    _ => panic!("gc={gc}: load {oid}@{at}: {now:?} before the pack point"),
                }
            }
        }
        println!("gc={gc}: packed at @{packed}: {ndata} exact, {npacked} packed away");
        assert!(npacked > 0 && ndata > 0);
        // Watching from the start: everything up to the pack point as one.
        let mut w = fresh.watch(Tid::ZERO).unwrap();
        let first = w.next_timeout(Duration::ZERO).unwrap().unwrap();
        assert_eq!(first.tid, packed);
    }
}

/// A frozen server (SIGSTOP of the postmaster and its processes: the
/// connection open, nothing answered), with the default 60 s request
/// timeout: loads fail with `Unavailable` within the wait (1 s) plus a
/// little — the first while its query is unanswered on the open
/// connection, the next after the poller gave it up — the watcher reports
/// nothing wrong; after SIGCONT, loads answer and commits come through.
#[test]
fn frozen_server_gives_unavailable_within_the_wait() {
    let pg = PgServer::start();
    pg.create_db("zodb");
    pgoracle(&["gen", &pg.zurl("zodb"), "--txns", "5"]);
    let st = open(&pg.zurl("zodb"), Duration::from_secs(1));
    let head = st.last_tid().unwrap();
    let mut w = st.watch(head).unwrap();
    let root = st.load(Oid(0), head).unwrap();
    let frozen = pg.freeze();
    assert_eq!(st.load(Oid(0), head).unwrap(), root, "remembered");
    for oid in [Oid(1), Oid(2)] {
        let t0 = Instant::now();
        let e = st.load(oid, head).unwrap_err();
        let dt = t0.elapsed();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        assert!(
            dt >= Duration::from_millis(990) && dt < Duration::from_secs(2),
            "{oid}: gave up after {dt:?}: {e}"
        );
        println!("{dt:?}: {e}");
    }
    assert!(count(&st, counter::GIVEUP) >= 2);
    assert_eq!(w.next_timeout(Duration::from_millis(200)).unwrap(), None);
    assert_eq!(st.last_tid().unwrap(), head);
    let t0 = Instant::now();
    while count(&st, counter::LOST) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the frozen connection was kept"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    frozen.thaw();
    let t0 = Instant::now();
    loop {
        match st.load(Oid(1), head) {
            Ok(l) => {
                assert!(l.serial <= head);
                break;
            }
            Err(Error::Unavailable { .. }) if t0.elapsed() < Duration::from_secs(60) => {}
            Err(e) => panic!("{e}"),
        }
    }
    pgoracle(&["gen", &pg.zurl("zodb"), "--txns", "0"]);
    let c = w
        .next_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("a commit");
    assert!(c.tid > head);
    assert!(count(&st, counter::RECONNECT) >= 1);
}
