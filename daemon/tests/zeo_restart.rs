//! wcfsd over a ZEO server that goes away and comes back (SPEC §3 "Storage
//! servers come and go"), with a real `runzeo`:
//!
//! - restarts under load: `kill -9` and restart of the server 20 times (6
//!   over TLS, `zeos://` with client certificates) on
//!   the same data.fs and port while Python commits through a ZEO client of
//!   its own and reader threads hammer cold blocks of head/: every read
//!   exact (0 stale or wrong), every commit seen exactly once (the
//!   `.wcfs/debug/zhead` stream), the daemon alive and not in EIO mode;
//!   the restart-to-caught-up time and what a reader waiting on a cold
//!   block saw are printed;
//! - commits made while the server is down (Python commits to the data.fs
//!   directly) are caught up when it restarts on that data.fs;
//! - a server restarted on another database: EIO mode, with a clear line;
//! - a server that never comes back: a read that needs it fails with EIO
//!   after `-storagewait`, cached data keeps being served.

mod common;

use common::outage::{stat, wait_stat, ColdReaders, ZHead};

use common::{Driver, Env};
use std::time::{Duration, Instant};
use zodb::Oid;

const BS: u64 = 64 << 10;
const NBLK: u64 = 8;

/// A file of NBLK blocks, each filled with one byte.
fn setup(args: &[&str]) -> (Env, Oid) {
    setup_in(Env::new_zeo(), args)
}

fn setup_in(mut env: Env, args: &[&str]) -> (Env, Oid) {
    let f = env.py.new_file(BS);
    for b in 0..NBLK {
        env.py.fill(f, b, "zblk0", 1 + b as u8, BS as usize);
    }
    env.py.commit();
    env.mount(args);
    (env, f)
}

#[test]
fn restarts_under_load() {
    restarts_with(Env::new_zeo(), 20, "restarts_under_load");
}

/// The same over TLS (fewer restarts).
#[test]
fn restarts_under_load_tls() {
    restarts_with(Env::new_zeo_tls(), 6, "restarts_under_load_tls");
}

fn restarts_with(env: Env, nrestart: usize, test: &str) {
    let (mut env, f) = setup_in(env, &["-debug", "-storagewait", "60s"]);
    // Blocks nobody reads but the one waiter of each outage: never in the
    // daemon's block cache, so that its read needs the server.
    let g = env.py.new_file(4096);
    for b in 0..nrestart as u64 {
        env.py.fill(g, b, "zblk0", 0x80 + b as u8, 4096);
    }
    env.commit();
    let g_path = env.w().head_file(g);
    let zhead = ZHead::open(&env);
    let head_path = env.w().head_file(f);
    let seed = testkit::seed(test);
    let mut rng = testkit::Rng::new(seed);

    // Every byte each block ever had (a block is one byte repeated): the
    // readers' oracle — set before the commit that writes it.
    let readers = ColdReaders::start(head_path.clone(), NBLK, BS, 2, |b| 1 + b as u8);

    let mut tids = vec![env.w().head()];
    let (mut caught_up, mut cold_waits) = (Vec::new(), Vec::new());
    let mut byte = 0x20u8;
    for round in 0..nrestart {
        // Commits through Python's own ZEO client.
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

        // Kill; a read of a cold block waits for the server; restart.
        env.zeo.as_mut().unwrap().kill();
        wait_stat(&env, "zconnlost", round as i64 + 1, Duration::from_secs(10));
        // Not in order: the daemon would have loaded it ahead.
        let blk = (round as u64 * 7) % nrestart as u64;
        let p = g_path.clone();
        let waiter = std::thread::spawn(move || {
            let t0 = Instant::now();
            let fd = std::fs::File::open(&p).unwrap();
            let r = common::read_block_of(&fd, blk, 4096);
            (
                t0.elapsed(),
                r.map(|d| d.iter().all(|&x| x == 0x80 + blk as u8)),
            )
        });
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        env.zeo.as_mut().unwrap().restart(None);
        let dt = wait_stat(
            &env,
            "zreconnect",
            round as i64 + 1,
            Duration::from_secs(30),
        );
        caught_up.push(dt);
        env.py.connected();
        let (waited, r) = waiter.join().unwrap();
        let ok = r.unwrap_or_else(|e| panic!("round {round}: read during the outage: {e}"));
        assert!(ok, "round {round}: read during the outage: wrong data");
        cold_waits.push(waited);
    }
    // Commits after the last restart are followed too.
    env.py.fill(f, 0, "zblk0", 0x11, BS as usize);
    readers.will_write(0, 0x11);
    tids.push(env.commit());
    env.check_block(f, 0, BS, None);

    let nread = readers.stop();

    // Every commit seen exactly once, in order.
    let deadline = Instant::now() + Duration::from_secs(10);
    while zhead.get().last() != tids.last() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(zhead.get(), tids[1..].to_vec(), "head advances vs commits");
    assert_eq!(stat(&env, "zreconnect"), nrestart as i64);
    assert_eq!(stat(&env, "zconnlost"), nrestart as i64);
    let log = env.w().log();
    assert!(!log.contains("EIO mode"), "{log}");
    assert_eq!(
        log.matches("connection lost").count(),
        nrestart,
        "one line per loss:\n{log}"
    );
    assert!(
        env.w_mut().wait_exit(Duration::ZERO).is_none(),
        "daemon died"
    );

    caught_up.sort();
    cold_waits.sort();
    let ms = |d: &Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    eprintln!(
        "seed {seed}: {nrestart} restarts, {} commits, {nread} cold reads by 2 readers; \
         server accepting -> caught up: median {}, max {}; a cold read issued during \
         the outage returned the right data after median {}, max {}",
        tids.len() - 1,
        ms(&caught_up[nrestart / 2]),
        ms(caught_up.last().unwrap()),
        ms(&cold_waits[nrestart / 2]),
        ms(cold_waits.last().unwrap()),
    );
}

/// Transactions committed while the server is down (Python commits to the
/// data.fs directly) are caught up when it restarts on that data.fs.
#[test]
fn commits_during_outage_are_caught_up() {
    let (mut env, f) = setup(&["-debug"]);
    let zhead = ZHead::open(&env);
    let t1 = {
        env.py.fill(f, 1, "zblk0", 0x41, BS as usize);
        env.commit()
    };
    env.check_block(f, 1, BS, None);
    env.zeo.as_mut().unwrap().kill();
    wait_stat(&env, "zconnlost", 1, Duration::from_secs(10));
    let mut direct = Vec::new();
    {
        let mut py = Driver::start(&env.datafs);
        for (blk, b) in [(2u64, 0x52u8), (3, 0x53), (2, 0x62)] {
            py.fill(f, blk, "zblk0", b, BS as usize);
            direct.push(py.commit());
        }
    }
    assert_eq!(env.w().head(), t1, "head moved while the server was away");
    env.zeo.as_mut().unwrap().restart(None);
    wait_stat(&env, "zreconnect", 1, Duration::from_secs(30));
    env.w().wait_head(*direct.last().unwrap());
    env.py.connected();
    assert_eq!(stat(&env, "zcatchup"), 3);
    for blk in 0..NBLK {
        env.check_block(f, blk, BS, None);
    }
    env.check_block(f, 2, BS, Some(direct[0]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while zhead.get().last() != direct.last() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut want = vec![t1];
    want.extend(&direct);
    assert_eq!(zhead.get(), want);
    let log = env.w().log();
    assert!(log.contains("caught up 3 transaction(s)"), "{log}");
}

/// The server comes back on another database at the same address: the
/// filesystem switches to EIO mode, with a clear log line; nothing of the
/// other database is served.
#[test]
fn restart_on_another_database_is_eio_mode() {
    let (mut env, f) = setup(&[]);
    env.check_block(f, 0, BS, None);
    let other = env.dir.path().join("other.fs");
    {
        let mut py = Driver::start(&other);
        let g = py.new_file(BS);
        py.fill(g, 0, "zblk0", 0x99, BS as usize);
        py.commit();
    }
    env.zeo.as_mut().unwrap().kill();
    env.zeo.as_mut().unwrap().restart(Some(&other));
    let st = env
        .w_mut()
        .wait_exit(Duration::from_secs(30))
        .expect("wcfsd still running on another database");
    assert!(!st.success());
    let log = env.w().log();
    assert!(log.contains("not the same database any more"), "{log}");
    assert!(log.contains("switching filesystem to EIO mode"), "{log}");
}

/// The server never comes back: a read that needs it fails with EIO after
/// `-storagewait`, alone; cached data keeps being served exactly, head/at
/// stays; the daemon stays up, not in EIO mode.
#[test]
fn server_never_back() {
    let (mut env, f) = setup(&["-storagewait", "1s"]);
    common::outage::server_never_back(&mut env, f, BS, |env| env.zeo.as_mut().unwrap().kill());
}

/// Blocks of the silent-server tests: a reply large enough to be cut off
/// in the middle.
const BIG: u64 = 2 << 20;

/// The daemon, `-debug -storagewait 3s`, reaching the server through a
/// proxy of ours (Python commits to the server directly); a file of 8 big
/// blocks, blocks 0 and 2 read.
fn setup_silent() -> (Env, Oid, common::proxy::Proxy, ZHead, Vec<zodb::Tid>) {
    let mut env = Env::new_zeo();
    let f = env.py.new_file(BIG);
    for b in 0..8 {
        env.py.fill(f, b, "zblk0", 1 + b as u8, BIG as usize);
    }
    env.py.commit();
    let proxy = common::proxy::Proxy::start(&env.zeo.as_ref().unwrap().addr());
    env.zurl = format!("zeo://127.0.0.1:{}", proxy.port);
    let wait = format!("{}s", common::outage::SILENT_WAIT.as_secs());
    env.mount(&["-debug", "-storagewait", &wait]);
    let zhead = ZHead::open(&env);
    env.py.fill(f, 1, "zblk0", 0x51, BIG as usize);
    let tids = vec![env.commit()];
    zhead.wait_last(tids[0]);
    env.check_block(f, 0, BIG, None);
    env.check_block(f, 2, BIG, None);
    (env, f, proxy, zhead, tids)
}

/// The server's replies stop (a proxy stops passing them on) before a
/// reply: a cold read fails with EIO within `-storagewait` + 1 s, cached
/// blocks are served; once replies flow again everything is exact, and the
/// commit made meanwhile and one after are reported once, in order.
#[test]
fn silent_before_reply() {
    let (mut env, f, proxy, zhead, mut tids) = setup_silent();
    let proxy = std::sync::Arc::new(proxy);
    let (p1, p2) = (proxy.clone(), proxy.clone());
    let s = common::outage::server_silent(
        &mut env,
        f,
        BIG,
        (&zhead, &mut tids),
        move |_| p1.pause(),
        move |_| p2.resume(),
        true,
    );
    eprintln!(
        "silent before a reply: cold reads gave up after {:?}",
        s.gave_up
    );
}

/// The server's replies stop in the middle of one: the proxy passes 1 MiB
/// of the 2 MiB block's reply and then nothing. As
/// [`silent_before_reply`].
#[test]
fn silent_mid_reply() {
    let (mut env, f, proxy, zhead, mut tids) = setup_silent();
    let proxy = std::sync::Arc::new(proxy);
    let (p1, p2) = (proxy.clone(), proxy.clone());
    let s = common::outage::server_silent(
        &mut env,
        f,
        BIG,
        (&zhead, &mut tids),
        move |_| p1.pause_after(1 << 20),
        move |_| {
            // The reply was cut: the budget ran out, and the rest is held.
            let (paused, held, _) = p2.state();
            assert!(paused, "the proxy never stopped: no reply was cut off");
            assert!(held > 0, "nothing of the reply held back");
            p2.resume()
        },
        true,
    );
    eprintln!("silent mid-reply: cold reads gave up after {:?}", s.gave_up);
}
