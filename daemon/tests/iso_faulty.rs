//! Faulty head/watch clients (SPEC §6 last bullets, §9 "No FUSE interrupts
//! in fuser"), as child processes: this test binary re-executed to run
//! [`iso_child_entry`] with a role in `$WCFS_ISO_ROLE`.
//!
//! Roles: `never` (never acks), `late` (acks after 3 s > pin timeout),
//! `lateok` (acks after 200 ms < pin timeout), `garbage` (answers `nak`),
//! `close` (closes the link mid-pin, stays alive), `malformed` (sends a
//! malformed line mid-pin), `exit` (exits 0 when the pin comes), `good`
//! (acks), `blockread` (blocks in read(2) of head/watch).
//!
//! Ignored until the server side of head/watch exists.

mod common;

use common::watch::{
    pin_keys, pread_random, stats, term_signal, PinMode, Rev, RoleChild, WatchLink, ROLE_ENV,
};
use common::Env;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

const BS: u64 = 4096;
const NBLK: u64 = 4;
const ENTRY: &str = "iso_child_entry";
const PINTIMEOUT: Duration = Duration::from_secs(1);
/// What we allow on top of the pin timeout for scheduling and killing.
const SLACK: Duration = Duration::from_secs(1);

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child: ${name} not set"))
}

/// Entry point of the child roles; does nothing in a normal test run.
#[test]
fn iso_child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let code = child_main(&role);
    std::process::exit(code);
}

fn child_main(role: &str) -> i32 {
    let wpath = PathBuf::from(var("WCFS_ISO_WATCH"));
    if role == "blockread" {
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&wpath)
        {
            Ok(f) => f,
            Err(e) => {
                println!("ISO-ERR open: {e}");
                return 3;
            }
        };
        println!("ISO-READY");
        let mut buf = [0u8; 4096];
        let r = f.read(&mut buf);
        println!("ISO-READ {r:?}");
        return 0;
    }
    let f: Oid = var("WCFS_ISO_FILE").parse().unwrap();
    let at: Tid = var("WCFS_ISO_AT").parse().unwrap();
    let mode = match role {
        "never" => PinMode::Never,
        "late" => PinMode::Late(Duration::from_secs(3)),
        "lateok" => PinMode::Late(Duration::from_millis(200)),
        "garbage" | "nakseen" => PinMode::Garbage("nak".into()),
        "neverseen" => PinMode::Never,
        "close" => PinMode::Close,
        "malformed" | "exit" => PinMode::Manual,
        "good" => PinMode::Ack,
        _ => {
            println!("ISO-ERR unknown role {role}");
            return 3;
        }
    };
    if role.ends_with("seen") {
        // Survive the SIGBUS long enough to report the line that came
        // before it (SIGKILL follows).
        // SAFETY: sets the disposition of one signal to "ignore".
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_IGN) };
    }
    let l = match WatchLink::open_with(&wpath, mode) {
        Ok(l) => l,
        Err(e) => {
            println!("ISO-ERR open: {e}");
            return 3;
        }
    };
    if let Err(e) = l.watch(f, at) {
        println!("ISO-ERR watch: {e}");
        return 3;
    }
    println!("ISO-READY");
    match role {
        "malformed" => {
            if let Some(p) = l.next_pin(Duration::from_secs(60)) {
                println!("ISO-PIN {} #{} {}", p.oid, p.blk, p.rev);
                let _ = l.send_raw("zzz");
            }
        }
        "exit" => {
            if let Some(p) = l.next_pin(Duration::from_secs(60)) {
                println!("ISO-PIN {} #{} {}", p.oid, p.blk, p.rev);
                std::process::exit(0);
            }
        }
        "nakseen" | "neverseen" => {
            // The last line comes before the kill; the end of the link
            // only after it (a client that saw EOF could act on it — fail
            // its requests, report, exit — while it is to die).
            let deadline = Instant::now() + Duration::from_secs(60);
            let fatal = loop {
                let got = l.received().into_iter().find(|x| x.starts_with("0 "));
                if got.is_some() || Instant::now() > deadline {
                    break got;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            println!("ISO-FATAL {}", fatal.unwrap_or_default());
            if l.wait_closed(Duration::from_secs(10)) {
                println!("ISO-EOF while alive: {}", l.close_reason());
            }
        }
        _ => {}
    }
    // Live until the parent closes our stdin (bounded).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(120));
    println!("ISO-PINS {:?}", pin_keys(&l.pins()));
    // Exit without waiting for the link's threads.
    std::process::exit(0);
}

fn setup(args: &[&str]) -> (Env, Oid, Tid) {
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for b in 0..NBLK {
        env.py.fill(f, b, "zblk0", b as u8 + 1, BS as usize);
    }
    let h0 = env.py.commit();
    env.mount(args);
    (env, f, h0)
}

fn child_env(env: &Env, f: Oid, at: Tid) -> Vec<(&'static str, String)> {
    vec![
        (
            "WCFS_ISO_WATCH",
            env.w().path("head/watch").display().to_string(),
        ),
        ("WCFS_ISO_FILE", f.to_string()),
        ("WCFS_ISO_AT", at.to_string()),
    ]
}

fn read_head(env: &Env, f: Oid, blk: u64) -> Vec<u8> {
    pread_random(&env.w().head_file(f), blk, BS).expect("read head block")
}

fn wait_stat(env: &Env, name: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = stats(&env.w().mnt).get(name).copied();
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stats {name}: {got:?}, want {want}; all: {:?}",
            stats(&env.w().mnt)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn faulty_clients_are_killed() {
    let (mut env, f, h0) = setup(&["-pintimeout", "1s"]);
    assert_eq!(
        std::fs::read_to_string(env.w().path(".wcfs/pintimeout"))
            .unwrap()
            .trim(),
        "1.0"
    );
    for b in 0..NBLK {
        read_head(&env, f, b);
    }
    let killed = ["never", "late", "garbage", "close", "malformed"];
    let survive = ["lateok", "good"];
    let roles: Vec<&str> = killed
        .iter()
        .chain(survive.iter())
        .chain(["exit"].iter())
        .copied()
        .collect();
    let ce = child_env(&env, f, h0);
    let mut kids: Vec<RoleChild> = roles
        .iter()
        .map(|r| RoleChild::spawn(ENTRY, r, &ce))
        .collect();
    for k in &mut kids {
        k.wait_line("ISO-READY", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let l = WatchLink::open(&env.w().path("head/watch")).unwrap();
    l.watch(f, h0).unwrap();
    let n = roles.len() as i64 + 1;
    wait_stat(&env, "WatchLink", n);
    wait_stat(&env, "Watch", n);
    wait_stat(&env, "PinnedBlk", 0);
    wait_stat(&env, "pin", 0);
    wait_stat(&env, "pinkill", 0);

    // One change, one read: every watcher gets one pin; the read waits at
    // most the pin timeout for the faulty ones.
    env.py.fill(f, 0, "zblk0", 0xf0, BS as usize);
    env.commit();
    let t0 = Instant::now();
    let data = read_head(&env, f, 0);
    let dt = t0.elapsed();
    assert_eq!(data, env.py.block(f, 0, None));
    assert!(
        dt <= PINTIMEOUT + SLACK,
        "head read took {dt:?} with pin timeout {PINTIMEOUT:?}"
    );
    assert_eq!(pin_keys(&l.take_pins()), vec![(f, 0, Rev::At(h0))]);

    for k in &mut kids {
        let role = k.role.clone();
        if killed.contains(&role.as_str()) {
            let st = k.wait_exit(PINTIMEOUT + Duration::from_secs(5));
            let st = st.unwrap_or_else(|| {
                panic!(
                    "{role}: not killed; stdout {:?}; log:\n{}",
                    k.seen(),
                    env.w().log()
                )
            });
            let sig = term_signal(&st);
            assert!(
                sig == Some(libc::SIGBUS) || sig == Some(libc::SIGKILL),
                "{role}: ended with {st:?}, want SIGBUS or SIGKILL; stdout {:?}",
                k.seen()
            );
        } else if role == "exit" {
            let st = k
                .wait_exit(Duration::from_secs(5))
                .expect("exit role did not exit");
            assert!(st.success(), "exit role: {st:?} (must not be killed)");
        }
    }
    for k in &mut kids {
        if survive.contains(&k.role.as_str()) {
            let st = k.wait_exit(Duration::from_millis(10));
            let role = k.role.clone();
            assert!(st.is_none(), "{role} died ({st:?}): {:?}", k.seen());
        }
    }
    wait_stat(&env, "pinkill", killed.len() as i64);
    wait_stat(&env, "pin", n);
    let alive = survive.len() as i64 + 1;
    wait_stat(&env, "WatchLink", alive);
    wait_stat(&env, "Watch", alive);
    wait_stat(&env, "PinnedBlk", alive);

    // The others keep working, at full speed.
    env.py.fill(f, 1, "zblk0", 0xf1, BS as usize);
    env.commit();
    let t0 = Instant::now();
    read_head(&env, f, 1);
    let dt = t0.elapsed();
    assert!(dt < PINTIMEOUT, "read after the kills took {dt:?}");
    assert_eq!(pin_keys(&l.take_pins()), vec![(f, 1, Rev::At(h0))]);
    wait_stat(&env, "pin", n + alive);
    wait_stat(&env, "PinnedBlk", 2 * alive);
    for k in &mut kids {
        if survive.contains(&k.role.as_str()) {
            k.finish();
            let st = k
                .wait_exit(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("{} did not exit", k.role));
            assert!(st.success(), "{}: {st:?}", k.role);
            let pins = k.seen().into_iter().find(|l| l.starts_with("ISO-PINS"));
            let want = format!(
                "ISO-PINS {:?}",
                vec![(f, 0, Rev::At(h0)), (f, 1, Rev::At(h0))]
            );
            assert_eq!(pins.as_deref(), Some(want.as_str()), "{}", k.role);
        }
    }
    wait_stat(&env, "WatchLink", 1);
    wait_stat(&env, "pinkill", killed.len() as i64);
}

/// What a faulty client is told before it is killed, in upstream's words
/// (SPEC §6): a wrong answer, and no answer within the pin timeout. And
/// that it is told no more: its link does not end (EOF) while it is alive
/// — the children survive SIGBUS, so they would see EOF in the 500 ms
/// before SIGKILL if the link were closed before the kill. (Upstream's
/// client fails its requests on EOF: a test process of upstream's suite
/// reported that failure and exited on its own before the kill, under
/// load, in `test_wcfs_pinhfaulty_kill_on_watch[_bad_watch_no_pin_reply]`.)
#[test]
fn fatal_lines_are_upstreams() {
    let (mut env, f, h0) = setup(&["-pintimeout", "1s"]);
    read_head(&env, f, 0);
    let ce = child_env(&env, f, h0);
    let mut kids: Vec<RoleChild> = ["nakseen", "neverseen"]
        .iter()
        .map(|r| RoleChild::spawn(ENTRY, r, &ce))
        .collect();
    for k in &mut kids {
        k.wait_line("ISO-READY", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    env.py.fill(f, 0, "zblk0", 0xf0, BS as usize);
    env.commit();
    read_head(&env, f, 0);
    for k in &mut kids {
        let want = match k.role.as_str() {
            "nakseen" => format!(r#"0 fatal: pin #0 @{h0}: expect "ack"; got "nak""#),
            _ => format!(
                "0 fatal: pin #0 @{h0}: sendReq: waiting for reply: context deadline exceeded"
            ),
        };
        let got = k
            .next_after("ISO-FATAL ", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, want, "{}", k.role);
        let st = k
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{} not killed", k.role));
        assert_eq!(term_signal(&st), Some(libc::SIGKILL), "{}: {st:?}", k.role);
        let seen = k.seen();
        assert!(
            !seen.iter().any(|l| l.starts_with("ISO-EOF")),
            "{}: the link ended before the kill: {seen:?}",
            k.role
        );
    }
    wait_stat(&env, "pinkill", 2);
}

/// A process blocked in read(2) of head/watch and killed with SIGKILL dies
/// promptly: the daemon notices and answers the parked read (SPEC §9).
#[test]
fn killed_blocked_reader_dies_promptly() {
    let (env, f, h0) = setup(&[]);
    let mut k = RoleChild::spawn(ENTRY, "blockread", &child_env(&env, f, h0));
    k.wait_line("ISO-READY", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(500)); // parked in the daemon now
    wait_stat(&env, "WatchLink", 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(k.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = Instant::now();
    let st = k.wait_exit(Duration::from_secs(3)).unwrap_or_else(|| {
        panic!(
            "child blocked in a head/watch read still alive {:?} after SIGKILL",
            t0.elapsed()
        )
    });
    assert_eq!(term_signal(&st), Some(libc::SIGKILL));
    wait_stat(&env, "WatchLink", 0);
    assert_eq!(stats(&env.w().mnt).get("pinkill"), Some(&0));
}

/// The same for a thread of our own process: a link whose reader thread is
/// parked is closed; the daemon answers the read on flush.
#[test]
fn close_answers_the_parked_read() {
    let (env, _f, _h0) = setup(&[]);
    let l = WatchLink::open(&env.w().path("head/watch")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    l.close().expect("parked read answered after close");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    wait_stat(&env, "WatchLink", 0);
}
