//! A link belongs to the process that opened it (SPEC §6): a forked child
//! that closes its copy of the descriptor — explicitly, by exiting, by
//! exec'ing, or by being killed as a faulty client — changes nothing for
//! the opener. Its parked read is not interrupted, the link stays up, and
//! the next commit pins it exactly.

mod common;

use common::watch::{pin_keys, pread_random, stats, Rev, RoleChild, WatchLink, ROLE_ENV};
use common::Env;
use std::ffi::CString;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

const BS: u64 = 4096;
const NBLK: u64 = 4;
const ENTRY: &str = "iso_fork_child_entry";

fn read_head(env: &Env, f: Oid, blk: u64) -> Vec<u8> {
    pread_random(&env.w().head_file(f), blk, BS).expect("read head block")
}

/// A file of NBLK blocks, every block read through head/ (tracked and
/// cached), and a link of ours watching it at the first revision.
fn setup(args: &[&str]) -> (Env, Oid, Tid) {
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for b in 0..NBLK {
        env.py.fill(f, b, "zblk0", 0x10 + b as u8, BS as usize);
    }
    let h0 = env.py.commit();
    env.mount(args);
    for b in 0..NBLK {
        read_head(&env, f, b);
    }
    (env, f, h0)
}

/// Marks `fds` inheritable across exec (or not again).
fn set_cloexec(fds: &[i32], on: bool) {
    for &fd in fds {
        // SAFETY: fcntl on descriptors the link owns; only flags change.
        let rc = unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(
                fd,
                libc::F_SETFD,
                if on {
                    fl | libc::FD_CLOEXEC
                } else {
                    fl & !libc::FD_CLOEXEC
                },
            )
        };
        assert_ne!(rc, -1, "fcntl: {}", std::io::Error::last_os_error());
    }
}

/// Forks; the child runs `child` (async-signal-safe calls only: this
/// process has threads) and must not return; the parent waits for it.
fn fork_and_wait(child: impl FnOnce()) -> i32 {
    // SAFETY: the child only calls async-signal-safe functions (close,
    // execv, _exit) before it ends.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        child();
        // SAFETY: ends the child without running any of the parent's code.
        unsafe { libc::_exit(99) };
    }
    let mut st = 0;
    // SAFETY: waits for the child we forked.
    let rc = unsafe { libc::waitpid(pid, &mut st, 0) };
    assert_eq!(rc, pid);
    st
}

/// The link survived: nothing interrupted, not closed, no stream-0 line.
fn assert_intact(l: &WatchLink, what: &str) {
    // Give a FLUSH from the child's close time to reach the daemon and a
    // wrong answer time to come back.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(l.interrupts(), 0, "{what}: the parked read was interrupted");
    assert!(!l.is_closed(), "{what}: link closed ({})", l.close_reason());
    assert!(l.fatal().is_empty(), "{what}: {:?}", l.fatal());
    assert!(
        l.protocol_errors().is_empty(),
        "{what}: {:?}",
        l.protocol_errors()
    );
}

/// The next commit changes `blk`; a read of head pins our link to its
/// revision as of `at` (h0), and that revision has Python's data as of `at`.
fn commit_and_check_pin(env: &mut Env, l: &WatchLink, f: Oid, blk: u64, at: Tid, byte: u8) {
    env.py.fill(f, blk, "zblk0", byte, BS as usize);
    env.commit();
    l.take_pins();
    assert_eq!(read_head(env, f, blk), env.py.block(f, blk, None));
    assert_eq!(pin_keys(&l.take_pins()), vec![(f, blk, Rev::At(at))]);
    let pinned = pread_random(&env.w().at_file(at, f), blk, BS).unwrap();
    assert_eq!(
        pinned,
        env.py.block(f, blk, Some(at)),
        "blk #{blk} as of {at}"
    );
}

#[test]
fn forked_child_closing_its_copy_changes_nothing() {
    let (mut env, f, h0) = setup(&[]);
    let l = WatchLink::open(&env.w().path("head/watch")).unwrap();
    l.watch(f, h0).unwrap();
    // Pins in play: block 0 pinned to h0.
    commit_and_check_pin(&mut env, &l, f, 0, h0, 0xa0);
    let fds = l.fds();
    std::thread::sleep(Duration::from_millis(200)); // our reader parks

    // 1. The child closes its copies, then exits.
    let st = fork_and_wait(|| {
        for fd in fds {
            // SAFETY: closes the child's copies only.
            unsafe { libc::close(fd) };
        }
        // SAFETY: async-signal-safe exit of the child.
        unsafe { libc::_exit(0) };
    });
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child: {st}"
    );
    assert_intact(&l, "child closed its copy");

    // 2. The child exits with its copies open (the kernel closes them).
    let st = fork_and_wait(|| {
        // SAFETY: async-signal-safe exit of the child.
        unsafe { libc::_exit(0) };
    });
    assert!(libc::WIFEXITED(st), "child: {st}");
    assert_intact(&l, "child exited");

    // 3. The child execs a program that inherits the copies and exits.
    set_cloexec(&fds, false);
    let prog = CString::new("/bin/true").unwrap();
    let argv = [prog.as_ptr(), std::ptr::null()];
    let st = fork_and_wait(|| {
        // SAFETY: execv with NUL-terminated arguments prepared before fork.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
    });
    set_cloexec(&fds, true);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "exec child: {st}"
    );
    assert_intact(&l, "child exec'ed");

    // 4. The child execs a program whose copies close on exec.
    let st = fork_and_wait(|| {
        // SAFETY: as above.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
    });
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "exec child: {st}"
    );
    assert_intact(&l, "child exec'ed (close-on-exec)");

    // Still pinned exactly, still one link, nobody killed.
    commit_and_check_pin(&mut env, &l, f, 1, h0, 0xa1);
    let s = stats(&env.w().mnt);
    assert_eq!((s["WatchLink"], s["pinkill"]), (1, 0), "{s:?}");
    assert_eq!(s["PinnedBlk"], 2, "{s:?}");

    // Our own close still answers our parked read at once.
    let t0 = Instant::now();
    l.close().expect("parked read answered on our close");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

/// Entry point of the child role; does nothing in a normal test run.
#[test]
fn iso_fork_child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    assert_eq!(role, "never");
    let wpath = PathBuf::from(std::env::var("WCFS_ISO_WATCH").unwrap());
    let f: Oid = std::env::var("WCFS_ISO_FILE").unwrap().parse().unwrap();
    let at: Tid = std::env::var("WCFS_ISO_AT").unwrap().parse().unwrap();
    // A faulty client: its own link, never acking.
    let l = WatchLink::open_with(&wpath, common::watch::PinMode::Never).unwrap();
    match l.watch(f, at) {
        Ok(()) => println!("ISO-READY"),
        Err(e) => {
            println!("ISO-ERR watch: {e}");
            std::process::exit(3);
        }
    }
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(0);
}

/// A faulty client spawned as a subprocess — inheriting the spawner's
/// link, as with `multiprocessing` or a descriptor not close-on-exec — is
/// killed; the spawner's link goes on working.
#[test]
fn killed_faulty_subprocess_leaves_the_spawners_link_alone() {
    let (mut env, f, h0) = setup(&["-pintimeout", "1s"]);
    let l = WatchLink::open(&env.w().path("head/watch")).unwrap();
    l.watch(f, h0).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // our reader parks
    let fds = l.fds();
    set_cloexec(&fds, false);
    let envs = vec![
        (
            "WCFS_ISO_WATCH",
            env.w().path("head/watch").display().to_string(),
        ),
        ("WCFS_ISO_FILE", f.to_string()),
        ("WCFS_ISO_AT", h0.to_string()),
    ];
    let mut k = RoleChild::spawn(ENTRY, "never", &envs);
    set_cloexec(&fds, true);
    k.wait_line("ISO-READY", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));

    // A commit and a head read: both watchers are pinned; the child never
    // acks and is killed.
    env.py.fill(f, 2, "zblk0", 0xb2, BS as usize);
    env.commit();
    assert_eq!(read_head(&env, f, 2), env.py.block(f, 2, None));
    assert_eq!(pin_keys(&l.take_pins()), vec![(f, 2, Rev::At(h0))]);
    let st = k
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("faulty child not killed; log:\n{}", env.w().log()));
    let sig = common::watch::term_signal(&st);
    assert!(
        sig == Some(libc::SIGBUS) || sig == Some(libc::SIGKILL),
        "child ended with {st:?}"
    );
    assert_intact(&l, "faulty subprocess killed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats(&env.w().mnt)["pinkill"] != 1 {
        assert!(Instant::now() < deadline, "{:?}", stats(&env.w().mnt));
        std::thread::sleep(Duration::from_millis(20));
    }

    // Our link still works: pinned on the next change, exactly.
    commit_and_check_pin(&mut env, &l, f, 3, h0, 0xb3);
    l.close().unwrap();
}
