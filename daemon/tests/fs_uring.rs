//! The transport: FUSE over io_uring with `-uring` where the kernel offers
//! it (`/sys/module/fuse/parameters/enable_uring`, which `run-tests` turns
//! on when it can), /dev/fuse otherwise. These check what is particular to
//! the rings: which transport serves, and that requests parked on one
//! CPU's queue do not starve that CPU.

mod common;

use common::Env;
use std::io::Read;
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::Duration;

fn uring_offered() -> bool {
    std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring")
        .is_ok_and(|s| s.trim() == "Y")
}

fn stat(env: &Env, name: &str) -> u64 {
    let stats = std::fs::read_to_string(env.w().path(".wcfs/stats")).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}\t: ")))
        .unwrap_or_else(|| panic!("{name} not in stats:\n{stats}"))
        .parse()
        .unwrap()
}

fn bind_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// Runs `f` on a thread bound to CPU 0 and waits for it at most `limit`.
fn on_cpu0<T: Send + 'static>(
    env: &Env,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        bind_to_cpu0();
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        let stats = std::fs::read_to_string(env.w().path(".wcfs/stats"));
        let mut threads = String::new();
        for pid in [env.w().pid().unwrap_or(0), std::process::id()] {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let p = t.path();
                let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
                let stack = std::fs::read_to_string(p.join("stack")).unwrap_or_default();
                let top: Vec<&str> = stack.lines().take(6).collect();
                threads += &format!("{pid}/{:?} {}: {}\n", t.file_name(), comm.trim(), top.join(" < "));
            }
        }
        panic!(
            "a request from CPU 0 was not answered in {limit:?}\nstats: {stats:?}\nthreads:\n{threads}\nlog:\n{}",
            env.w().log()
        )
    })
}

#[test]
fn which_transport_serves() {
    for (args, ring) in [
        (&[][..], false),
        (&["-uring=false"][..], false),
        (&["-uring"][..], uring_offered()),
    ] {
        let mut env = Env::new();
        let f = env.py.new_file(4096);
        env.py.fill(f, 0, "zblk1", b'a', 4096);
        let t = env.py.commit();
        env.mount(args);
        env.w().wait_head(t);
        assert_eq!(env.w().read_block(f, 0, 4096), vec![b'a'; 4096]);
        assert_eq!(stat(&env, "FuseRingEntry") > 0, ring, "{args:?}");
    }
}

/// 40 head/watch reads parked from CPU 0 — each keeps a ring entry of
/// CPU 0's queue — and CPU 0 is still served: its queue grew. (Over
/// /dev/fuse a parked read keeps no worker: the same holds.)
#[test]
fn parked_reads_do_not_starve_their_cpu() {
    const PARKED: usize = 40;
    let mut env = Env::new();
    let f = env.py.new_file(4096);
    env.py.fill(f, 0, "zblk1", b'b', 4096);
    let t = env.py.commit();
    env.mount(&["-uring"]);
    env.w().wait_head(t);

    let watch = env.w().path("head/watch");
    let mut opened = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..PARKED {
        let file = std::fs::File::open(&watch).unwrap();
        let mut dup = std::fs::File::from(file.as_fd().try_clone_to_owned().unwrap());
        opened.push(file);
        readers.push(std::thread::spawn(move || {
            bind_to_cpu0();
            let mut buf = [0u8; 256];
            dup.read(&mut buf)
        }));
    }
    assert_eq!(stat(&env, "WatchLink"), PARKED as u64);
    // Let every read reach the daemon and park.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        readers.iter().all(|r| !r.is_finished()),
        "a watch read returned"
    );

    let at = env.w().path("head/at");
    let head = on_cpu0(&env, Duration::from_secs(10), move || {
        std::fs::read_to_string(at)
    });
    assert_eq!(head.unwrap().trim(), t.to_string());
    let path = env.w().head_file(f);
    let data = on_cpu0(&env, Duration::from_secs(10), move || {
        common::Wcfs::pread_block(&path, 0, 4096)
    });
    assert_eq!(data.unwrap(), vec![b'b'; 4096]);
    if uring_offered() {
        let entries = stat(&env, "FuseRingEntry");
        assert!(
            entries > PARKED as u64,
            "{entries} ring entries serve {PARKED} parked reads"
        );
    }

    // Closing by the opener answers its parked read.
    drop(opened);
    for r in readers {
        let res = r.join().unwrap();
        assert!(
            matches!(&res, Ok(0))
                || res
                    .as_ref()
                    .is_err_and(|e| e.raw_os_error() == Some(libc::EINTR)),
            "parked read ended with {res:?}"
        );
    }
    // The kernel sends the RELEASEs after the closes return.
    let t0 = std::time::Instant::now();
    while stat(&env, "WatchLink") != 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "links not released");
        std::thread::sleep(Duration::from_millis(10));
    }
}
