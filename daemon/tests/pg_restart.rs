//! wcfsd over PostgreSQL (RelStorage) when the server goes away and comes
//! back, is replaced, is packed, or is a replica behind the primary — each
//! test on a cluster of its own (SPEC §3 "Storage servers come and go"):
//!
//! - outages under load: the server stopped, killed (-9) and our backend
//!   terminated, over and over, while Python commits to it and reader
//!   threads read cold blocks of head/: every read exact (0 stale), every
//!   commit seen exactly once (`.wcfs/debug/zhead`), a read issued during
//!   the outage answers right once the server is back, the daemon alive and
//!   not in EIO mode, one log line per loss; the daemon reads as a role
//!   that may only SELECT;
//! - commits made while the daemon cannot log in are caught up;
//! - another database behind the same address: EIO mode, with a clear line;
//! - a server that never comes back: a read that needs it fails with EIO
//!   after `-storagewait`, cached data keeps being served;
//! - a pack: `watch` below the pack point is refused with the reason, an
//!   `@<tid>` read of a revision the pack removed fails (EIO), never wrong;
//! - a replica behind the primary: a client that committed on the primary
//!   and looks up `@<its tid>` (or watches at it) waits until the replica
//!   has it, then sees its data.

mod common;

use common::outage::{stat, wait_stat, ColdReaders, ZHead};

use common::watch::WatchLink;
use common::{errno, Env, PG_DB};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

const BS: u64 = 64 << 10;
const NBLK: u64 = 8;

/// The daemon's role: may log in and SELECT, nothing else.
const RO: (&str, &str) = ("wcfs_ro", "ro-secret");

/// A PostgreSQL Env with a file of NBLK blocks, each filled with one byte;
/// the daemon mounted as the read-only role, with `args`.
fn setup(args: &[&str]) -> (Env, Oid) {
    let mut env = Env::new_pg(false);
    let f = env.py.new_file(BS);
    for b in 0..NBLK {
        env.py.fill(f, b, "zblk0", 1 + b as u8, BS as usize);
    }
    env.py.commit();
    let pg = env.pg.as_ref().unwrap();
    pg.create_reader(RO.0, RO.1, PG_DB);
    env.zurl = pg.zurl_as(RO.0, RO.1, PG_DB);
    env.mount(args);
    (env, f)
}

/// Like [`setup`] over TLS ([`Env::new_pg_tls`]): the daemon logs in by
/// client certificate, its TLS settings from libpq's defaults (files in
/// `~/.postgresql/`, `PGSSLMODE=verify-full`).
fn setup_tls(args: &[&str]) -> (Env, Oid) {
    let mut env = Env::new_pg_tls();
    let f = env.py.new_file(BS);
    for b in 0..NBLK {
        env.py.fill(f, b, "zblk0", 1 + b as u8, BS as usize);
    }
    env.py.commit();
    let (zurl, vars) = env.pg_tls_defaults();
    env.zurl = zurl;
    env.mount_with_env(args, &vars);
    (env, f)
}

fn pg(env: &mut Env) -> &mut testkit::PgServer {
    env.pg.as_mut().unwrap()
}

/// How the server goes away in a round.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// pg_ctl stop, later start.
    Stop,
    /// kill -9 of the postmaster, later start.
    Kill,
    /// Our backend terminated; the server stays.
    Terminate,
    /// `pg_ctl restart -m MODE`; Python commits as soon as the server is
    /// back, racing the daemon's reconnect.
    Restart(&'static str),
}

/// Stops, kills and terminations of our backend in turn, 9 rounds, while
/// two readers read cold and Python commits between the outages.
#[test]
fn outages_under_load() {
    let outages = [Outage::Stop, Outage::Kill, Outage::Terminate];
    outages_under_load_with("outages_under_load", &outages.repeat(3), false);
}

/// `pg_ctl restart -m fast` and `-m immediate` in turn, 10 in a row, while
/// two readers read cold and Python commits (also right after each
/// restart, before the daemon is back).
#[test]
fn pg_ctl_restarts_under_load() {
    let outages = [Outage::Restart("fast"), Outage::Restart("immediate")];
    outages_under_load_with("pg_ctl_restarts_under_load", &outages.repeat(5), false);
}

/// The same over TLS (client-certificate login, verify-full), 4 restarts
/// and a kill -9: every read exact, every commit seen exactly once.
#[test]
fn pg_ctl_restarts_under_load_tls() {
    let outages = [
        Outage::Restart("fast"),
        Outage::Restart("immediate"),
        Outage::Kill,
        Outage::Restart("fast"),
        Outage::Terminate,
    ];
    outages_under_load_with("pg_ctl_restarts_under_load_tls", &outages, true);
}

fn outages_under_load_with(name: &str, outages: &[Outage], tls: bool) {
    let rounds = outages.len();
    let args = ["-debug", "-storagewait", "60s"];
    let (mut env, f) = if tls { setup_tls(&args) } else { setup(&args) };
    // Blocks nobody reads but the one waiter of each outage: never in the
    // daemon's block cache, so that its read needs the server.
    let g = env.py.new_file(4096);
    for b in 0..rounds as u64 {
        env.py.fill(g, b, "zblk0", 0x80 + b as u8, 4096);
    }
    env.commit();
    let g_path = env.w().head_file(g);
    let zhead = ZHead::open(&env);
    let head_path = env.w().head_file(f);
    let seed = testkit::seed(name);
    let mut rng = testkit::Rng::new(seed);

    // Every byte each block ever had (a block is one byte repeated): the
    // readers' oracle — set before the commit that writes it.
    let readers = ColdReaders::start(head_path.clone(), NBLK, BS, 2, |b| 1 + b as u8);

    let mut tids = vec![env.w().head()];
    let mut cold_waits = Vec::new();
    let mut byte = 0x20u8;
    for (round, &outage) in outages.iter().enumerate() {
        for _ in 0..1 + rng.below(2) {
            for _ in 0..1 + rng.below(3) {
                let blk = rng.below(NBLK);
                byte = byte.wrapping_add(1).max(0x20);
                readers.will_write(blk, byte);
                env.py.fill(f, blk, "zblk0", byte, BS as usize);
            }
            tids.push(env.commit());
        }
        for blk in 0..NBLK {
            env.check_block(f, blk, BS, None);
        }
        let old = tids[rng.below(tids.len() as u64) as usize];
        env.check_block(f, rng.below(NBLK), BS, Some(old));

        let blk = (round as u64 * 7) % rounds as u64;
        let waiter = |p: std::path::PathBuf| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let fd = std::fs::File::open(&p).unwrap();
                let r = common::read_block_of(&fd, blk, 4096);
                (
                    t0.elapsed(),
                    r.map(|d| d.iter().all(|&x| x == 0x80 + blk as u8)),
                )
            })
        };
        match outage {
            Outage::Stop | Outage::Kill => {
                match outage {
                    Outage::Stop => pg(&mut env).stop(),
                    _ => pg(&mut env).kill9(),
                }
                wait_stat(&env, "zconnlost", round as i64 + 1, Duration::from_secs(10));
                // A cold read waits for the server.
                let w = waiter(g_path.clone());
                std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
                pg(&mut env).start_again();
                wait_stat(
                    &env,
                    "zreconnect",
                    round as i64 + 1,
                    Duration::from_secs(30),
                );
                env.py.connected();
                let (waited, r) = w.join().unwrap();
                let ok = r.unwrap_or_else(|e| {
                    panic!("round {round} ({outage:?}): read during the outage: {e}")
                });
                assert!(ok, "round {round}: read during the outage: wrong data");
                cold_waits.push(waited);
            }
            Outage::Restart(mode) => {
                pg(&mut env).pg_ctl_restart(mode);
                env.py.connected();
                let b = rng.below(NBLK);
                byte = byte.wrapping_add(1).max(0x20);
                readers.will_write(b, byte);
                env.py.fill(f, b, "zblk0", byte, BS as usize);
                let t = env.py.commit();
                tids.push(t);
                wait_stat(
                    &env,
                    "zreconnect",
                    round as i64 + 1,
                    Duration::from_secs(30),
                );
                env.w().wait_head(t);
                env.check_block(f, b, BS, None);
                let (_, r) = waiter(g_path.clone()).join().unwrap();
                assert!(r.unwrap(), "round {round}: read after the reconnect");
            }
            Outage::Terminate => {
                assert!(pg(&mut env).terminate(PG_DB, "wcfsd") >= 1);
                wait_stat(
                    &env,
                    "zreconnect",
                    round as i64 + 1,
                    Duration::from_secs(30),
                );
                let (_, r) = waiter(g_path.clone()).join().unwrap();
                assert!(r.unwrap(), "round {round}: read after the reconnect");
            }
        }
    }
    // Commits after the last outage are followed too.
    env.py.fill(f, 0, "zblk0", 0x11, BS as usize);
    readers.will_write(0, 0x11);
    tids.push(env.commit());
    env.check_block(f, 0, BS, None);

    let nread = readers.stop();
    if tls {
        // Still (again) over TLS, as the server sees it, by certificate.
        let ssl = pg(&mut env).psql(
            "postgres",
            &format!(
                "SELECT DISTINCT s.ssl, s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a \
                 USING (pid) WHERE a.application_name = 'wcfsd' AND a.datname = '{PG_DB}'"
            ),
        );
        assert_eq!(ssl, format!("t|/CN={}", common::PG_TLS_ROLE));
    }

    // Every commit seen exactly once, in order.
    zhead.wait_last(*tids.last().unwrap());
    assert_eq!(zhead.get(), tids[1..].to_vec(), "head advances vs commits");
    assert_eq!(stat(&env, "zreconnect"), rounds as i64);
    assert_eq!(stat(&env, "zconnlost"), rounds as i64);
    assert_eq!(stat(&env, "zgiveup"), 0);
    let log = env.w().log();
    assert!(!log.contains("EIO mode"), "{log}");
    assert_eq!(
        log.matches("connection lost").count(),
        rounds,
        "one line per loss:\n{log}"
    );
    assert!(!log.contains(RO.1), "password in the log:\n{log}");
    assert!(
        env.w_mut().wait_exit(Duration::ZERO).is_none(),
        "daemon died"
    );
    cold_waits.sort();
    let waits = match (cold_waits.get(cold_waits.len() / 2), cold_waits.last()) {
        (Some(median), Some(max)) => format!(
            "; a cold read issued during the outage returned the right data after median {:.0} ms, \
             max {:.0} ms",
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        ),
        _ => String::new(),
    };
    eprintln!(
        "seed {seed}: {rounds} outages ({outages:?}), {} commits, {nread} cold reads by 2 \
         readers{waits}",
        tids.len() - 1,
    );
}

/// Transactions committed while the daemon cannot log in are caught up
/// when it can again, each exactly once.
#[test]
fn commits_during_outage_are_caught_up() {
    let (mut env, f) = setup(&["-debug"]);
    let zhead = ZHead::open(&env);
    let t1 = {
        env.py.fill(f, 1, "zblk0", 0x41, BS as usize);
        env.commit()
    };
    env.check_block(f, 1, BS, None);
    let pg = env.pg.as_ref().unwrap();
    pg.psql("postgres", &format!("ALTER ROLE {} NOLOGIN", RO.0));
    assert!(pg.terminate(PG_DB, "wcfsd") >= 1);
    wait_stat(&env, "zconnlost", 1, Duration::from_secs(10));
    let mut direct = Vec::new();
    for (blk, b) in [(2u64, 0x52u8), (3, 0x53), (2, 0x62)] {
        env.py.fill(f, blk, "zblk0", b, BS as usize);
        direct.push(env.py.commit());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(env.w().head(), t1, "head moved while we were away");
    let pg = env.pg.as_ref().unwrap();
    pg.psql("postgres", &format!("ALTER ROLE {} LOGIN", RO.0));
    wait_stat(&env, "zreconnect", 1, Duration::from_secs(30));
    env.w().wait_head(*direct.last().unwrap());
    assert_eq!(stat(&env, "zcatchup"), 3);
    for blk in 0..NBLK {
        env.check_block(f, blk, BS, None);
    }
    env.check_block(f, 2, BS, Some(direct[0]));
    zhead.wait_last(*direct.last().unwrap());
    let mut want = vec![t1];
    want.extend(&direct);
    assert_eq!(zhead.get(), want);
    let log = env.w().log();
    assert!(log.contains("caught up 3 transaction(s)"), "{log}");
}

/// Another database behind the same address: the filesystem switches to
/// EIO mode, with a clear log line; nothing of the other database is
/// served.
#[test]
fn another_database_is_eio_mode() {
    let mut env = Env::new_pg(false);
    let f = env.py.new_file(BS);
    env.py.fill(f, 0, "zblk0", 0x11, BS as usize);
    env.py.commit();
    env.mount(&[]);
    env.check_block(f, 0, BS, None);
    // Another cluster: the same database name, another history.
    let mut other = testkit::PgServer::start();
    other.create_db(PG_DB);
    testkit::run_python(
        "python/pg_oracle/pgoracle.py",
        &["gen", &other.zurl(PG_DB), "--txns", "3"],
    );
    let port = pg(&mut env).port;
    pg(&mut env).stop();
    other.move_to(port);
    let st = env
        .w_mut()
        .wait_exit(Duration::from_secs(30))
        .expect("wcfsd still running on another database");
    assert!(!st.success());
    let log = env.w().log();
    assert!(log.contains("not the same database any more"), "{log}");
    assert!(log.contains("zwatcher failed"), "{log}");
    assert!(log.contains("switching filesystem to EIO mode"), "{log}");
    drop(other);
}

/// The server never comes back: a read that needs it fails with EIO after
/// `-storagewait`, alone; cached data keeps being served exactly, head/at
/// stays; the daemon stays up, not in EIO mode.
#[test]
fn server_never_back() {
    let (mut env, f) = setup(&["-storagewait", "1s"]);
    common::outage::server_never_back(&mut env, f, BS, |env| pg(env).stop());
}

/// After a pack: a watch below the pack point is refused with the reason;
/// at or above it, it works; an @<tid> read below it of a block whose
/// revision is gone fails with EIO (never wrong data); a block whose
/// revision survived is served exactly.
#[test]
fn pack_refuses_history_it_removed() {
    let mut env = Env::new_pg(false);
    // Mounted first: the daemon's history covers every commit.
    env.mount(&[]);
    let f = env.py.new_file(BS);
    for b in 0..4 {
        env.py.fill(f, b, "zblk0", 0x10 + b as u8, BS as usize);
    }
    let t0 = env.commit();
    // Block 0 changes in every transaction after; block 3 never does.
    let mut tids = vec![t0];
    for i in 0..4u8 {
        env.py.fill(f, 0, "zblk0", 0x40 + i, BS as usize);
        tids.push(env.commit());
    }
    let mid = tids[2];
    testkit::run_python(
        "python/pg_oracle/pgoracle.py",
        &["pack", &env.pg_writer_zurl(), "--at", &mid.to_string()],
    );
    // The daemon learns the pack point within a second or so: a watch
    // below it is then refused.
    std::fs::File::open(env.w().head_file(f)).unwrap();
    let link = WatchLink::open(&env.w().path("head/watch")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let e = loop {
        match link.watch(f, tids[1]) {
            Err(e) if e.contains("packed") => break e,
            r => {
                assert!(
                    Instant::now() < deadline,
                    "watch @{} not refused for the pack: {r:?}",
                    tids[1]
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(
        e.contains(&format!(
            "setup watch f<{f}> @{}: the database was packed at @",
            tids[1]
        )) && e.contains("history before it is gone"),
        "{e}"
    );
    link.watch(f, *tids.last().unwrap()).unwrap();
    drop(link);
    // Block 0 as of tids[1]: its revision there was packed away.
    let e = read_at_errno(&env, tids[1], f, 0);
    assert_eq!(e, libc::EIO);
    // Block 3 kept its only revision: exact as of any tid.
    assert_eq!(
        env.w().read_block_at(tids[1], f, 3, BS),
        vec![0x13u8; BS as usize]
    );
    let log = env.w().log();
    assert!(log.contains("packed at @"), "{log}");
}

/// The daemon serves a replica; Python commits on the primary. Looking up
/// @<the new tid> (and watching at it) waits until the replica has it —
/// replay held back meanwhile — and then shows the new data.
#[test]
fn replica_is_waited_for() {
    let mut env = Env::new_pg(true);
    env.mount(&[]);
    let f = env.py.new_file(BS);
    env.py.fill(f, 0, "zblk0", 0x21, BS as usize);
    let t1 = env.commit();
    env.check_block(f, 0, BS, None);
    let replica = env.pg_replica.as_ref().unwrap();
    replica.psql("postgres", "SELECT pg_wal_replay_pause()");
    env.py.fill(f, 0, "zblk0", 0x22, BS as usize);
    let t2 = env.py.commit();
    let at_path = env.w().at_file(t2, f);
    let looker = std::thread::spawn(move || {
        let t0 = Instant::now();
        let fd = std::fs::File::open(&at_path);
        (
            t0.elapsed(),
            fd.and_then(|fd| common::read_block_of(&fd, 0, BS)),
        )
    });
    std::fs::File::open(env.w().head_file(f)).unwrap();
    let link = WatchLink::open(&env.w().path("head/watch")).unwrap();
    let watcher = {
        let link = Arc::new(link);
        let l = link.clone();
        (std::thread::spawn(move || l.watch(f, t2)), link)
    };
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(env.w().head(), t1, "head moved with replay paused");
    assert!(
        !looker.is_finished(),
        "@{t2} answered before the replica had it"
    );
    let replica = env.pg_replica.as_ref().unwrap();
    replica.psql("postgres", "SELECT pg_wal_replay_resume()");
    let (waited, data) = looker.join().unwrap();
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
    assert_eq!(data.unwrap(), vec![0x22u8; BS as usize]);
    watcher.0.join().unwrap().unwrap();
    env.w().wait_head(t2);
    env.check_block(f, 0, BS, None);
    env.check_block(f, 0, BS, Some(t1));
    drop(watcher.1);
}

/// The errno of reading block `blk` of @<at>/bigfile/<f> (the read must
/// fail).
fn read_at_errno(env: &Env, at: Tid, f: Oid, blk: u64) -> i32 {
    match common::Wcfs::pread_block(&env.w().at_file(at, f), blk, BS) {
        Ok(d) => panic!("@{at} blk #{blk}: read {} bytes, want an error", d.len()),
        Err(e) => errno(&e),
    }
}

/// The server freezes (SIGSTOP of the postmaster and its processes): a
/// cold read fails with EIO within `-storagewait` + 1 s, cached blocks are
/// served; after SIGCONT everything is exact, and commits before and after
/// are reported once, in order.
#[test]
fn frozen_server() {
    const BIG: u64 = 2 << 20;
    let mut env = Env::new_pg(false);
    let f = env.py.new_file(BIG);
    for b in 0..8 {
        env.py.fill(f, b, "zblk0", 1 + b as u8, BIG as usize);
    }
    env.py.commit();
    let wait = format!("{}s", common::outage::SILENT_WAIT.as_secs());
    env.mount(&["-debug", "-storagewait", &wait]);
    let zhead = ZHead::open(&env);
    env.py.fill(f, 1, "zblk0", 0x51, BIG as usize);
    let mut tids = vec![env.commit()];
    zhead.wait_last(tids[0]);
    env.check_block(f, 0, BIG, None);
    env.check_block(f, 2, BIG, None);
    let frozen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let fr = frozen.clone();
    let s = common::outage::server_silent(
        &mut env,
        f,
        BIG,
        (&zhead, &mut tids),
        move |env| *fr.lock().unwrap() = Some(pg(env).freeze()),
        move |_| {
            let fz: testkit::Frozen = frozen.lock().unwrap().take().unwrap();
            assert!(fz.pids().len() >= 2, "froze {:?}", fz.pids());
            fz.thaw()
        },
        false,
    );
    eprintln!("frozen server: cold reads gave up after {:?}", s.gave_up);
}
