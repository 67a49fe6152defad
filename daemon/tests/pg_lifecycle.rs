//! `postgresql://` zurls through the daemon's command line and the
//! lifecycle (`wcfsd start|status|stop`, join with autostart), on a
//! PostgreSQL cluster of the test's own:
//!
//! - a password in the zurl appears nowhere: not in any process's command
//!   line (`ps`, `/proc/*/cmdline`: the daemon started by the lifecycle
//!   gets the zurl through a pipe, one started by hand rewrites its own),
//!   not in the daemon's environment, logs, `.wcfs/zurl`, the mount source
//!   in `/proc/mounts`, or the lifecycle's files — all of which show
//!   `postgresql://user:***@…`; the mountpoint is the SHA-1 of the whole
//!   zurl, and joining finds the daemon;
//! - bad input gets a clear error and an exit code: a bad URI (2, at once),
//!   wrong credentials, a database without RelStorage tables, the
//!   history-free schema, a server that is not there (1, from the daemon
//!   and from `wcfsd start`), never with the password.

mod common;

use common::{wcfsd_bin, Env, PG_DB};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use wcfs_lifecycle::{self as lifecycle, Config};

const BS: u64 = 64 << 10;
/// Every password of this file contains it: nothing may show it.
const SECRET: &str = "S3cr3t-pw";

fn cfg() -> Config {
    Config {
        wcfsd: Some(wcfsd_bin()),
        start_timeout: Duration::from_secs(20),
        probe_timeout: Duration::from_secs(3),
        stop_grace: Duration::from_secs(10),
        ..Config::for_join()
    }
}

/// Stops the daemon of a zurl and removes its files when dropped.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = lifecycle::remove_all(&self.0, &cfg()) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn wcfsd(args: &[&str]) -> Output {
    Command::new(wcfsd_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wcfsd")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn no_secret(what: &str, s: &str) {
    assert!(!s.contains(SECRET), "the password shows in {what}:\n{s}");
}

/// Every process's command line, as `ps` shows them.
fn ps() -> String {
    let out = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn proc_file(pid: u32, name: &str) -> String {
    let b = std::fs::read(format!("/proc/{pid}/{name}")).unwrap_or_default();
    String::from_utf8_lossy(&b).replace('\0', " ")
}

/// A cluster with a ZBigFile, and a role that may only read it, whose
/// password has [`SECRET`] in it.
fn setup() -> (Env, zodb::Oid, String) {
    let mut env = Env::new_pg(false);
    let f = env.py.new_file(BS);
    env.py.fill(f, 0, "zblk0", 0xa1, BS as usize);
    env.py.commit();
    let pg = env.pg.as_ref().unwrap();
    let pw = format!("{SECRET}-ro");
    pg.create_reader("wcfs_ro", &pw, PG_DB);
    let zurl = pg.zurl_as("wcfs_ro", &pw, PG_DB);
    (env, f, zurl)
}

#[test]
fn password_is_never_shown() {
    let (mut env, f, zurl) = setup();
    let _guard = Cleanup(zurl.clone());
    let public = lifecycle::public_zurl(&zurl).into_owned();
    assert_eq!(
        public,
        format!(
            "postgresql://wcfs_ro:***@127.0.0.1:{}/{PG_DB}",
            env.pg.as_ref().unwrap().port
        )
    );

    // wcfsd ls lists the database's ZBigFiles.
    let out = wcfsd(&["ls", &zurl]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("bigfile/{f}")),
        "{}",
        text(&out)
    );
    no_secret("wcfsd ls", &text(&out));

    // wcfsd start: the daemon gets the zurl through a pipe.
    let out = wcfsd(&["start", &zurl]);
    assert!(out.status.success(), "{}", text(&out));
    no_secret("wcfsd start's output", &text(&out));
    let mnt = lifecycle::mountpoint_for(&zurl);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        mnt.display().to_string()
    );
    let st = lifecycle::status(&zurl).unwrap();
    assert!(st.is_healthy(), "{}", st.summary());
    let pid = st.pid.expect("daemon pid");
    let cmdline = proc_file(pid, "cmdline");
    assert!(cmdline.contains(&public), "{cmdline}");
    no_secret("the daemon's command line", &cmdline);
    no_secret("the daemon's environment", &proc_file(pid, "environ"));
    no_secret("ps", &ps());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts.contains(&format!("{public} {} fuse.wcfs", mnt.display())),
        "{mounts}"
    );
    no_secret("/proc/mounts", &mounts);
    let shown = std::fs::read_to_string(mnt.join(".wcfs/zurl")).unwrap();
    assert_eq!(shown, public);
    // It serves.
    let path = mnt.join(format!("head/bigfile/{f}"));
    assert_eq!(
        common::Wcfs::pread_block(&path, 0, BS).unwrap(),
        env.py.block(f, 0, None)
    );
    // Status, and joining, find it (they compare the public zurl).
    let out = wcfsd(&["status", &zurl]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    no_secret("wcfsd status", &text(&out));
    assert_eq!(lifecycle::join_with(&zurl, false, &cfg()).unwrap(), mnt);
    // A second start finds it too.
    let out = wcfsd(&["start", &zurl]);
    assert!(text(&out).contains("already served"), "{}", text(&out));
    let out = wcfsd(&["stop", &zurl]);
    assert!(out.status.success(), "{}", text(&out));
    no_secret("wcfsd stop", &text(&out));

    // Join with autostart (what libwcfs does): the same.
    let mnt2 = lifecycle::join_with(&zurl, true, &cfg()).unwrap();
    assert_eq!(mnt2, mnt);
    let pid = lifecycle::status(&zurl).unwrap().pid.unwrap();
    let cmdline = proc_file(pid, "cmdline");
    assert!(
        cmdline.contains("-autoexit") && cmdline.contains(&public),
        "{cmdline}"
    );
    no_secret("the joined daemon's command line", &cmdline);
    no_secret("ps", &ps());
    wcfsd(&["stop", &zurl]);

    // The lifecycle's files: the log (both daemons wrote to it), the lock.
    let log = std::fs::read_to_string(lifecycle::log_path(&zurl)).unwrap();
    assert!(log.contains(&public), "{log}");
    no_secret("the daemon's log", &log);
    no_secret(
        "the lock",
        &std::fs::read_to_string(lifecycle::lock_path(&zurl)).unwrap_or_default(),
    );

    // Started by hand with the password on its command line: the daemon
    // rewrites it at once.
    env.zurl = zurl.clone();
    env.mount(&[]);
    let pid = env.w().pid().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let cmdline = proc_file(pid, "cmdline");
    assert!(cmdline.contains(&public), "{cmdline}");
    no_secret("a hand-started daemon's command line", &cmdline);
    assert_eq!(
        std::fs::read_to_string(env.w().path(".wcfs/zurl")).unwrap(),
        public
    );
    no_secret("a hand-started daemon's log", &env.w().log());
}

#[test]
fn bad_input_clear_errors_and_exit_codes() {
    let (env, _f, good) = setup();
    let pg = env.pg.as_ref().unwrap();
    let port = pg.port;
    pg.create_db("empty");
    pg.create_db("histfree");
    testkit::run_python(
        "python/pg_oracle/pgoracle.py",
        &["histfree", &pg.zurl("histfree")],
    );
    pg.create_reader("wcfs_ro", &format!("{SECRET}-ro"), "empty");
    pg.create_reader("wcfs_ro", &format!("{SECRET}-ro"), "histfree");
    let mnt = env.dir.path().join("mnt-bad");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt = mnt.to_str().unwrap();
    let wrong = format!("postgresql://wcfs_ro:{SECRET}-wrong@127.0.0.1:{port}/{PG_DB}");
    let cases = [
        // (zurl, exit code, what the message says)
        (
            format!("postgresql://u:{SECRET}@[::1/db"),
            2,
            "invalid zurl",
        ),
        (
            format!("postgresql://u:{SECRET}@h/db?sslmode=verify-fast"),
            2,
            "invalid sslmode",
        ),
        (
            format!("postgresql://wcfs_ro:{SECRET}-ro@127.0.0.1:{port}/{PG_DB}?sslmode=require"),
            1,
            "the server does not offer TLS",
        ),
        (wrong.clone(), 1, "password authentication failed"),
        (
            good.replace(&format!("/{PG_DB}"), "/empty"),
            1,
            "holds no RelStorage data",
        ),
        (
            good.replace(&format!("/{PG_DB}"), "/histfree"),
            1,
            "history-free",
        ),
        (
            format!("postgresql://wcfs_ro:{SECRET}@127.0.0.1:1/{PG_DB}"),
            1,
            "Connection refused",
        ),
    ];
    for (zurl, code, why) in &cases {
        let _guard = Cleanup(zurl.clone());
        // The daemon itself.
        let out = wcfsd(&[zurl, mnt]);
        println!("wcfsd: {}", text(&out).trim());
        assert_eq!(out.status.code(), Some(*code), "{zurl}: {}", text(&out));
        assert!(text(&out).contains(why), "{zurl}: {}", text(&out));
        no_secret("wcfsd's error", &text(&out));
        // wcfsd start: the same, from the daemon's log.
        let out = wcfsd(&["start", zurl]);
        println!("wcfsd start: {}", text(&out).trim());
        assert_eq!(
            out.status.code(),
            Some(*code),
            "start {zurl}: {}",
            text(&out)
        );
        assert!(text(&out).contains(why), "start {zurl}: {}", text(&out));
        no_secret("wcfsd start's error", &text(&out));
        if *code == 1 {
            let log = std::fs::read_to_string(lifecycle::log_path(zurl)).unwrap();
            no_secret("the failed daemon's log", &log);
        }
        // wcfsd status: a bad URI is a usage error, a good one not running.
        let out = wcfsd(&["status", zurl]);
        assert_eq!(
            out.status.code(),
            Some(if *code == 2 { 2 } else { 3 }),
            "status {zurl}: {}",
            text(&out)
        );
        no_secret("wcfsd status", &text(&out));
    }
}
