//! Joining, starting, checking and stopping the daemon of a zurl (the
//! `wcfs_lifecycle` crate and `wcfsd serve|start|status|stop`), with real
//! daemons on real mounts at `/dev/shm/wcfs/<sha1 of zurl>`.
//!
//! Every test has its own temporary data.fs, hence its own zurl and
//! mountpoint, so tests running in parallel never meet. A [`Cleanup`]
//! guard stops whatever daemon serves the test's zurl and removes its
//! mountpoint, lock and log, also when the test fails.

mod common;

use common::{wcfsd_bin, Env};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use wcfs_lifecycle::{self as lifecycle, sys, Config, State, StopHow};

const BS: u64 = 64 << 10;

/// The configuration of our joins: the daemon under test, `-autoexit` as
/// for every join, shorter waits.
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
        let zurl = &self.0;
        if let Err(e) = lifecycle::remove_all(zurl, &cfg()) {
            eprintln!("cleanup: stop {zurl}: {e}");
        }
    }
}

/// A database with one ZBigFile of three blocks written by Python, and
/// the cleanup of its zurl (declared after `env`: dropped first).
fn setup() -> (Env, Cleanup, zodb::Oid) {
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    env.py.fill(f, 0, "zblk0", 0xa1, BS as usize);
    env.py.write(f, 1, "zblk1", &[7u8; 5000]);
    env.py.fill(f, 2, "zblk0", 0xc3, BS as usize / 2);
    env.py.commit();
    let guard = Cleanup(env.zurl.clone());
    (env, guard, f)
}

/// Block `blk` through the joined mountpoint vs Python's view.
fn check_blocks(env: &mut Env, mnt: &Path, f: zodb::Oid) {
    let path = mnt.join(format!("head/bigfile/{f}"));
    let size = env.py.size(f, None);
    for blk in 0..3 {
        let want = env.py.block(f, blk, None);
        let want = &want[..want.len().min(size.saturating_sub(blk * BS) as usize)];
        let got = common::Wcfs::pread_block(&path, blk, BS)
            .unwrap_or_else(|e| panic!("read {} blk {blk}: {e}", path.display()));
        assert!(
            got == want,
            "blk {blk}: got {} bytes {:?}…, Python sees {} bytes {:?}…",
            got.len(),
            &got[..got.len().min(8)],
            want.len(),
            &want[..want.len().min(8)]
        );
    }
}

/// `wcfsd ARGS` to completion.
fn wcfsd(args: &[&str]) -> Output {
    Command::new(wcfsd_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wcfsd")
}

/// `wcfsd ARGS` to completion, failing (not hanging) after `timeout`.
fn wcfsd_within(args: &[&str], timeout: Duration) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = tx.send(wcfsd(&args));
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("wcfsd did not finish within {timeout:?}"))
}

/// The hung fake daemon (examples/hung_wcfs.rs), built if missing: cargo
/// builds examples for `cargo test`, but not for `--test lifecycle`.
fn hung_wcfs_bin() -> PathBuf {
    let profile_dir = wcfsd_bin().parent().unwrap().to_path_buf();
    let bin = profile_dir.join("examples/hung_wcfs");
    if !bin.exists() {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["build", "-q", "-p", "wcfsd", "--example", "hung_wcfs"])
            .current_dir(testkit::repo());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building hung_wcfs");
    }
    bin
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn healthy_pid(zurl: &str) -> u32 {
    let st = lifecycle::status_with(zurl, Duration::from_secs(3)).unwrap();
    assert_eq!(st.state, State::Healthy, "{}", st.summary());
    st.pid.expect("healthy daemon has a pid")
}

fn wait_state(zurl: &str, want: &State) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = lifecycle::status_with(zurl, Duration::from_secs(3)).unwrap();
        if &st.state == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "want {want:?}, still {}",
            st.summary()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live processes whose arguments include `zurl` and hold /dev/fuse: the
/// daemons of that zurl, whoever started them.
fn daemons_of(zurl: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for ent in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !args.split(|&b| b == 0).any(|a| a == zurl.as_bytes()) || !sys::alive(pid) {
            continue;
        }
        let holds_fuse = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("/dev/fuse"))
                })
            })
            .unwrap_or(false);
        if holds_fuse {
            pids.push(pid);
        }
    }
    pids
}

/// How many mounts are stacked at `mnt`.
fn mounts_at(mnt: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(sys::parse_mountinfo_line)
        .filter(|m| Path::new(&m.mountpoint) == mnt)
        .count()
}

fn kill(pid: u32, sig: i32) {
    sys::signal(pid, sig).unwrap();
}

/// SIGSTOP, and wait until it took effect (signals arrive asynchronously).
fn freeze(pid: u32) {
    kill(pid, libc::SIGSTOP);
    assert!(
        sys::wait_until(Duration::from_secs(10), || sys::stopped(pid)),
        "pid {pid} did not stop"
    );
}

fn wait_dead(pid: u32) {
    assert!(
        sys::wait_until(Duration::from_secs(10), || !sys::alive(pid)),
        "pid {pid} still alive"
    );
}

#[test]
fn join_autostarts_and_serves_python_data() {
    let (mut env, _guard, f) = setup();
    let zurl = env.zurl.clone();
    let mnt = lifecycle::mountpoint_for(&zurl);

    // Nobody serves, no autostart: a clear error, nothing started.
    let e = lifecycle::join_with(&zurl, false, &cfg()).unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("no wcfsd serves") && msg.contains(&zurl) && msg.contains("autostart"),
        "{msg}"
    );
    assert!(daemons_of(&zurl).is_empty());

    let got = lifecycle::join_with(&zurl, true, &cfg()).unwrap();
    assert_eq!(got, mnt);
    let mode = std::fs::metadata(lifecycle::MOUNT_ROOT)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o1777,
        "{} mode {mode:o}",
        lifecycle::MOUNT_ROOT
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join(".wcfs/zurl")).unwrap(),
        zurl
    );
    check_blocks(&mut env, &mnt, f);

    // The daemon: the one holding the mount's connection, started with
    // -autoexit, detached (its own session, not our child), logging to
    // <sha1>.log.
    let pid = healthy_pid(&zurl);
    assert_eq!(daemons_of(&zurl), vec![pid]);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    assert_eq!(
        &args[1..],
        &[
            b"-autoexit".as_slice(),
            zurl.as_bytes(),
            mnt.to_str().unwrap().as_bytes()
        ]
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let (ppid, sid): (u32, u32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(ppid, std::process::id(), "the daemon is our child");
    assert_eq!(sid, pid, "the daemon is not a session leader");
    let log = std::fs::read_to_string(lifecycle::log_path(&zurl)).unwrap();
    assert!(log.contains(&format!("serving {zurl}")), "{log}");

    // A second join (and the library's plain `join`) finds the same one.
    assert_eq!(lifecycle::join_with(&zurl, true, &cfg()).unwrap(), mnt);
    assert_eq!(lifecycle::join(&zurl, false).unwrap(), mnt);
    assert_eq!(healthy_pid(&zurl), pid);
    assert_eq!(daemons_of(&zurl), vec![pid]);
    assert_eq!(mounts_at(&mnt), 1);

    // A commit shows through the joined mount too.
    env.py.fill(f, 1, "zblk0", 0x5e, BS as usize);
    let tid = env.py.commit();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(mnt.join("head/at")).unwrap().trim() != tid.to_string() {
        assert!(Instant::now() < deadline, "head/at did not reach {tid}");
        std::thread::sleep(Duration::from_millis(10));
    }
    check_blocks(&mut env, &mnt, f);
}

#[test]
fn join_recovers_from_a_killed_daemon() {
    let (mut env, _guard, f) = setup();
    let zurl = env.zurl.clone();
    let mnt = lifecycle::join_with(&zurl, true, &cfg()).unwrap();
    let pid1 = healthy_pid(&zurl);

    kill(pid1, libc::SIGKILL);
    wait_dead(pid1);
    wait_state(&zurl, &State::Dead);
    let err = std::fs::read_to_string(mnt.join(".wcfs/zurl")).unwrap_err();
    assert_eq!(common::errno(&err), libc::ENOTCONN, "{err}");

    // Without autostart: the dead mount is reported, and left alone.
    let e = lifecycle::join_with(&zurl, false, &cfg()).unwrap_err();
    assert_eq!(e.errno(), libc::ENOTCONN, "{e}");
    assert!(e.to_string().contains("is gone"), "{e}");
    assert_eq!(mounts_at(&mnt), 1);

    // With autostart: the dead mount is detached and a new daemon serves,
    // not stacked over the dead one.
    assert_eq!(lifecycle::join_with(&zurl, true, &cfg()).unwrap(), mnt);
    let pid2 = healthy_pid(&zurl);
    assert_ne!(pid2, pid1);
    assert_eq!(mounts_at(&mnt), 1);
    assert_eq!(daemons_of(&zurl), vec![pid2]);
    check_blocks(&mut env, &mnt, f);
}

#[test]
fn concurrent_joins_start_one_daemon() {
    const PROCS: usize = 6;
    const THREADS: usize = 4;
    let (mut env, _guard, f) = setup();
    let zurl = env.zurl.clone();
    let mnt = lifecycle::mountpoint_for(&zurl);

    // Processes (`wcfsd start -autoexit`, which starts as a join does) and
    // threads of this process (each with its own lock descriptor) at once.
    let barrier = std::sync::Barrier::new(THREADS + 1);
    let (procs, threads) = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (barrier, zurl) = (&barrier, &zurl);
                s.spawn(move || {
                    barrier.wait();
                    lifecycle::join_with(zurl, true, &cfg())
                })
            })
            .collect();
        let procs: Vec<_> = (0..PROCS)
            .map(|_| {
                Command::new(wcfsd_bin())
                    .args(["start", "-autoexit", &zurl])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        barrier.wait();
        let procs: Vec<Output> = procs
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let threads: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (procs, threads)
    });
    for out in &procs {
        assert!(out.status.success(), "wcfsd start: {}", text(out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            mnt.to_str().unwrap(),
            "{}",
            text(out)
        );
    }
    for r in threads {
        assert_eq!(r.unwrap(), mnt);
    }
    let started = procs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains(": started"))
        .count();
    let log = std::fs::read_to_string(lifecycle::log_path(&zurl)).unwrap();
    let starts = log.lines().filter(|l| l.starts_with("--- ")).count();
    assert_eq!(starts, 1, "daemons started:\n{log}");
    assert!(started <= 1, "{started} processes say they started one");
    let pid = healthy_pid(&zurl);
    assert_eq!(daemons_of(&zurl), vec![pid]);
    assert_eq!(mounts_at(&mnt), 1);
    check_blocks(&mut env, &mnt, f);
}

#[test]
fn status_and_stop_of_healthy_dead_and_stuck_daemons() {
    let (_env, _guard, _f) = setup();
    let zurl = _env.zurl.clone();
    let mnt = lifecycle::mountpoint_for(&zurl);
    let code = |out: &Output| out.status.code().expect("exited");

    // Absent.
    let out = wcfsd(&["status", &zurl]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));
    let out = wcfsd(&["stop", &zurl]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));

    // Healthy, then stopped: unmounted, process gone.
    let out = wcfsd(&["start", &zurl]);
    assert!(out.status.success(), "{}", text(&out));
    let pid = healthy_pid(&zurl);
    let out = wcfsd(&["status", &zurl]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("healthy") && text(&out).contains(&format!("pid {pid}")),
        "{}",
        text(&out)
    );
    let out = wcfsd(&["stop", &zurl]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stopped"), "{}", text(&out));
    assert!(!sys::alive(pid));
    assert_eq!(mounts_at(&mnt), 0);
    let log = std::fs::read_to_string(lifecycle::log_path(&zurl)).unwrap();
    assert!(log.contains("SIGTERM: unmounting"), "{log}");
    assert_eq!(
        lifecycle::status(&zurl).unwrap().state,
        State::Absent,
        "after stop"
    );

    // Dead (kill -9): status says so; stop detaches the leftover mount.
    wcfsd(&["start", &zurl]);
    let pid = healthy_pid(&zurl);
    kill(pid, libc::SIGKILL);
    wait_dead(pid);
    let out = wcfsd(&["status", &zurl]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("dead"), "{}", text(&out));
    let out = wcfsd(&["stop", &zurl]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("was dead"), "{}", text(&out));
    assert_eq!(mounts_at(&mnt), 0);

    // Stuck (SIGSTOP), with a reader blocked on it: status says stuck, a
    // join reports it, stop aborts the connection (the reader wakes with
    // an error), kills the daemon and detaches the mount.
    wcfsd(&["start", &zurl]);
    let pid = healthy_pid(&zurl);
    freeze(pid);
    let reader = {
        let path = mnt.join("head/at");
        std::thread::spawn(move || std::fs::read_to_string(path))
    };
    let out = wcfsd(&["status", "-timeout", "1s", &zurl]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(text(&out).contains("stuck"), "{}", text(&out));
    let e = lifecycle::join_with(&zurl, true, &cfg()).unwrap_err();
    assert_eq!(e.errno(), libc::ETIMEDOUT, "{e}");
    assert!(e.to_string().contains("does not answer"), "{e}");
    let t0 = Instant::now();
    let out = wcfsd(&["stop", &zurl]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("killed"), "{}", text(&out));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    wait_dead(pid);
    assert_eq!(mounts_at(&mnt), 0);
    let got = reader.join().unwrap();
    assert!(got.is_err(), "blocked reader got {got:?}");

    // And a join starts afresh.
    assert_eq!(lifecycle::join_with(&zurl, true, &cfg()).unwrap(), mnt);
    assert_ne!(healthy_pid(&zurl), pid);
}

#[test]
fn stop_in_library_reports_what_it_did() {
    let (_env, _guard, _f) = setup();
    let zurl = _env.zurl.clone();
    lifecycle::join_with(&zurl, true, &cfg()).unwrap();
    let pid = healthy_pid(&zurl);
    let s = lifecycle::stop(&zurl, &cfg()).unwrap();
    assert_eq!((s.how, s.pid), (StopHow::Graceful, Some(pid)));
    let s = lifecycle::stop(&zurl, &cfg()).unwrap();
    assert_eq!(s.how, StopHow::NotRunning);

    let mnt = lifecycle::join_with(&zurl, true, &cfg()).unwrap();
    let pid = healthy_pid(&zurl);
    freeze(pid);
    // The probe gives up at its deadline instead of hanging with the read.
    let t0 = Instant::now();
    let probe = sys::probe(&mnt, Duration::from_millis(300));
    assert!(matches!(probe, sys::Probe::NoAnswer), "{probe:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let s = lifecycle::stop(&zurl, &cfg()).unwrap();
    assert_eq!((s.how, s.pid), (StopHow::Killed, Some(pid)));
    wait_dead(pid);
    assert_eq!(mounts_at(&mnt), 0);

    // A client holding a file keeps SIGTERM from ending the daemon (its
    // unmount is refused, it detaches and serves what is open); after the
    // grace period stop kills it, and the client's next read fails
    // instead of hanging or returning stale data.
    lifecycle::join_with(&zurl, true, &cfg()).unwrap();
    let pid = healthy_pid(&zurl);
    let held = std::fs::File::open(mnt.join(format!("head/bigfile/{_f}"))).unwrap();
    assert_eq!(
        common::read_block_of(&held, 0, BS).unwrap(),
        vec![0xa1; BS as usize]
    );
    let short = Config {
        stop_grace: Duration::from_secs(2),
        ..cfg()
    };
    let s = lifecycle::stop(&zurl, &short).unwrap();
    assert_eq!((s.how, s.pid), (StopHow::Killed, Some(pid)));
    wait_dead(pid);
    assert_eq!(mounts_at(&mnt), 0);
    // What the kernel still caches of the file aside, the next read that
    // reaches the daemon fails.
    use std::os::unix::io::AsRawFd;
    // SAFETY: an advisory call on a descriptor we own.
    let rc = unsafe { libc::posix_fadvise(held.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    // ENOTCONN once the killed daemon's device is closed; ECONNABORTED if
    // the daemon was too slow (a loaded machine) to detach within the
    // grace period, so that stop aborted the connection first.
    match common::read_block_of(&held, 2, BS) {
        Err(e) => assert!(
            [libc::ENOTCONN, libc::ECONNABORTED].contains(&common::errno(&e)),
            "{e}"
        ),
        Ok(data) => panic!("read {} bytes from a killed daemon", data.len()),
    }
}

#[test]
fn serve_runs_in_the_foreground_at_the_zurls_mountpoint() {
    let (mut env, _guard, f) = setup();
    let zurl = env.zurl.clone();
    let logpath = env.dir.path().join("serve.log");
    let log = std::fs::File::create(&logpath).unwrap();
    let mut child = Command::new(wcfsd_bin())
        .args(["serve", &zurl])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let ready = sys::wait_until(Duration::from_secs(20), || {
        lifecycle::status(&zurl).is_ok_and(|s| s.is_healthy())
    });
    let serve_log = || std::fs::read_to_string(&logpath).unwrap_or_default();
    assert!(ready, "wcfsd serve not ready:\n{}", serve_log());
    assert_eq!(healthy_pid(&zurl), pid, "served by another process");
    let mnt = lifecycle::join_with(&zurl, false, &cfg()).unwrap();
    check_blocks(&mut env, &mnt, f);

    // A second `serve` refuses; a join with autostart uses this one.
    let out = wcfsd(&["serve", &zurl]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already served"), "{}", text(&out));
    assert_eq!(lifecycle::join_with(&zurl, true, &cfg()).unwrap(), mnt);
    assert_eq!(daemons_of(&zurl), vec![pid]);

    // SIGTERM (what stop sends): clean unmount and exit 0.
    kill(pid, libc::SIGTERM);
    let st = common::wait_timeout(&mut child, Duration::from_secs(20)).expect("serve exits");
    assert!(st.success(), "{st}:\n{}", serve_log());
    assert_eq!(mounts_at(&mnt), 0);
}

/// SIGTERM the moment the mount shows up — while `wcfsd serve ZURL`'s
/// lifecycle thread still waits for the mount to answer — still unmounts
/// cleanly and exits 0: every thread of a serving process blocks the stop
/// signals (a thread started before the block once took the SIGTERM and
/// the daemon died of it, leaving its mount behind).
#[test]
fn serve_stops_cleanly_on_sigterm_as_soon_as_mounted() {
    let (_env, _guard, _f) = setup();
    let zurl = _env.zurl.clone();
    let mnt = cfg().mountpoint(&zurl);
    let logpath = _env.dir.path().join("serve.log");
    for round in 0..10 {
        let log = std::fs::File::create(&logpath).unwrap();
        let mut child = Command::new(wcfsd_bin())
            .args(["serve", &zurl])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let serve_log = || std::fs::read_to_string(&logpath).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while mounts_at(&mnt) == 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: not mounted:\n{}",
                serve_log()
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: exited:\n{}",
                serve_log()
            );
            std::thread::yield_now();
        }
        kill(child.id(), libc::SIGTERM);
        let st = common::wait_timeout(&mut child, Duration::from_secs(20)).expect("serve exits");
        assert!(st.success(), "round {round}: {st}:\n{}", serve_log());
        assert_eq!(mounts_at(&mnt), 0, "round {round}: mount left behind");
    }
}

#[test]
fn foreign_mount_and_failed_start_are_clear_errors() {
    let (env, _guard, _f) = setup();

    // Something else mounted at a zurl's mountpoint is never touched.
    let zurl = env.zurl.clone();
    let mnt = lifecycle::mountpoint_for(&zurl);
    lifecycle::ensure_root().unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "wcfs-test-foreign"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let foreign = lifecycle::status(&zurl).unwrap();
    let umount = || {
        Command::new("umount").arg(&mnt).status().unwrap();
    };
    let check = || -> Result<(), String> {
        if !matches!(foreign.state, State::Foreign(_)) {
            return Err(foreign.summary());
        }
        let e = lifecycle::join_with(&zurl, true, &cfg()).unwrap_err();
        if e.errno() != libc::EBUSY || !e.to_string().contains("not touching it") {
            return Err(e.to_string());
        }
        let e = lifecycle::stop(&zurl, &cfg()).unwrap_err();
        if e.errno() != libc::EBUSY {
            return Err(e.to_string());
        }
        if mounts_at(&mnt) != 1 {
            return Err("tmpfs gone".into());
        }
        Ok(())
    };
    let r = check();
    umount();
    r.unwrap();

    // A daemon that cannot start (no such data.fs): the error carries its
    // log, and nothing is left mounted.
    let bad = format!("file://{}/missing/data.fs", env.dir.path().display());
    let _bad_guard = Cleanup(bad.clone());
    let e = lifecycle::join_with(&bad, true, &cfg()).unwrap_err();
    assert_eq!(e.errno(), libc::EIO, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("exited before serving"), "{msg}");
    assert!(msg.contains("missing/data.fs"), "no log tail in: {msg}");
    assert_eq!(mounts_at(&lifecycle::mountpoint_for(&bad)), 0);

    // No binary: says what it tried.
    let cfg = Config {
        wcfsd: Some(PathBuf::from("/nonexistent/wcfsd")),
        ..cfg()
    };
    let e = lifecycle::join_with(&bad, true, &cfg).unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
    assert!(e.to_string().contains("WCFS_WCFSD"), "{e}");
}

#[test]
fn a_hung_daemon_is_reported_and_stopped_without_hanging_us() {
    // A daemon that takes requests and never answers them: the callers
    // sleep uninterruptibly. status must still come back (its probe is not
    // one of those callers); join must not replace it; stop must abort
    // its connection and kill it.
    let dir = tempfile::Builder::new()
        .prefix("wcfs-test-hung")
        .tempdir()
        .unwrap();
    let zurl = format!("file://{}/data.fs", dir.path().display());
    let _guard = Cleanup(zurl.clone());
    let mnt = lifecycle::mountpoint_for(&zurl);
    lifecycle::ensure_root().unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let mut hung = Command::new(hung_wcfs_bin())
        .arg(&zurl)
        .arg(&mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hung_pid = hung.id();
    assert!(
        sys::wait_until(Duration::from_secs(10), || sys::mount_at(&mnt)
            .ok()
            .flatten()
            .is_some()),
        "hung_wcfs did not mount"
    );

    for _ in 0..2 {
        let t0 = Instant::now();
        let out = wcfsd_within(
            &["status", "-timeout", "500ms", &zurl],
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
        assert!(
            text(&out).contains("stuck") && text(&out).contains(&format!("pid {hung_pid}")),
            "{}",
            text(&out)
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
    let quick = Config {
        probe_timeout: Duration::from_millis(500),
        ..cfg()
    };
    for autostart in [false, true] {
        let e = lifecycle::join_with(&zurl, autostart, &quick).unwrap_err();
        assert_eq!(e.errno(), libc::ETIMEDOUT, "{e}");
    }
    assert_eq!(daemons_of(&zurl), vec![hung_pid], "a second daemon started");

    let out = wcfsd_within(
        &["stop", "-timeout", "500ms", &zurl],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("killed"), "{}", text(&out));
    let st = common::wait_timeout(&mut hung, Duration::from_secs(10)).expect("hung_wcfs killed");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
    assert_eq!(mounts_at(&mnt), 0);
    assert_eq!(lifecycle::status(&zurl).unwrap().state, State::Absent);
}

#[test]
fn serve_racing_joins_makes_one_daemon() {
    let (mut env, _guard, f) = setup();
    let zurl = env.zurl.clone();
    let mut serve = Command::new(wcfsd_bin())
        .args(["serve", &zurl])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let joins: Vec<_> = (0..3)
        .map(|_| {
            let zurl = zurl.clone();
            std::thread::spawn(move || lifecycle::join_with(&zurl, true, &cfg()))
        })
        .collect();
    let mnt = lifecycle::mountpoint_for(&zurl);
    for j in joins {
        assert_eq!(j.join().unwrap().unwrap(), mnt);
    }
    let pid = healthy_pid(&zurl);
    assert_eq!(daemons_of(&zurl), vec![pid]);
    assert_eq!(mounts_at(&mnt), 1);
    if pid != serve.id() {
        // A join got the lock first: serve found it serving and refused.
        let st = common::wait_timeout(&mut serve, Duration::from_secs(20)).expect("serve exits");
        let mut err = String::new();
        std::io::Read::read_to_string(serve.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(st.code(), Some(1), "{err}");
        assert!(err.contains("already served"), "{err}");
    }
    check_blocks(&mut env, &mnt, f);
    let s = lifecycle::stop(&zurl, &cfg()).unwrap();
    assert_eq!((s.how, s.pid), (StopHow::Graceful, Some(pid)));
    let _ = common::wait_timeout(&mut serve, Duration::from_secs(20));
}
