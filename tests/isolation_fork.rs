//! fork(2) of a process with Conns (SPEC §7: the child detaches): whatever
//! the child does with the handles it inherited — exit at once, release
//! them, or join anew and map files of its own — the parent's watch link
//! stays intact, its pinner keeps answering, and its mapping keeps showing
//! its `at`.
//!
//! A test binary of its own: fork() here must not copy other tests'
//! threads mid-way through the library.

#[path = "../daemon/tests/common/mod.rs"]
mod common;
mod e2e;

use common::Env;
use e2e::Oracle;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::time::{Duration, Instant};
use wcfs::Wcfs;

const BS: usize = 4096;
const NBLK: u64 = 6;

/// Waits up to `timeout` for `pid`; kills it if still running.
fn wait_child(pid: Pid, timeout: Duration) -> Result<WaitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).map_err(|e| e.to_string())? {
            WaitStatus::StillAlive => {}
            st => return Ok(st),
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(format!("child still running after {timeout:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn forked_child_does_not_disturb_the_parent() {
    let mut env = Env::new();
    let f = env.py.new_file(BS as u64);
    for b in 0..NBLK {
        env.py.fill(f, b, "zblk0", 0x10 + b as u8, BS);
    }
    let t0 = env.py.commit();
    env.mount(&["-pintimeout", "20s"]);
    let mnt = env.w().mnt.clone();
    let mut oracle = Oracle::default();
    let c0 = oracle.content(&mut env.py, f, t0);

    let wc = Wcfs::attach(&mnt).unwrap();
    let conn = wc.connect(t0).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, NBLK as i64 + 2).unwrap();
    let check = |oracle: &Oracle, what: &str| {
        let got = e2e::mem(&m);
        let name = |b, d: &[u8]| oracle.name_block(f, b, BS, d);
        e2e::check_mem(&got, 0, BS, &c0, &name)
            .unwrap_or_else(|e| panic!("parent at t0 after {what}: {e}"));
    };
    check(&oracle, "setup");

    for (i, what) in ["exit", "release", "rejoin", "frozen"]
        .into_iter()
        .enumerate()
    {
        let head_at = wc.head_at().unwrap();
        let head_content = oracle.content(&mut env.py, f, head_at);
        // "frozen": the child waits on this pipe while the parent changes
        // head under it, then reads the memory it inherited.
        let mut pipe = [0i32; 2];
        // SAFETY: pipe(2) into a 2-int array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        let (mem_start, mem_len) = (
            m.mem_start() as usize,
            m.mem_stop() as usize - m.mem_start() as usize,
        );
        // SAFETY: the child runs only the code below and leaves with
        // _exit: no unwinding, no atexit handlers, no return into the
        // test harness.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = match what {
                    "exit" => 0,
                    "frozen" => {
                        let mut b = [0u8; 1];
                        // SAFETY: reads one byte into `b`.
                        unsafe { libc::read(pipe[0], b.as_mut_ptr().cast(), 1) };
                        // The inherited memory shows the view as of t0
                        // (or faults: a detached child may lose it) — never
                        // head's new data.
                        // SAFETY: the child's copy of the parent's mapping.
                        let got = unsafe { e2e::copy_mem(mem_start as *const u8, mem_len) };
                        let quiet = |_: u64, _: &[u8]| String::new();
                        if e2e::check_mem(&got, 0, BS, &c0, &quiet).is_ok() {
                            0
                        } else {
                            5
                        }
                    }
                    "release" => {
                        // Released in the child: must not say `bye` (or
                        // anything) on the parent's link.
                        let _ = m.unmap();
                        let _ = fh.close();
                        let _ = conn.close();
                        let _ = wc.close();
                        0
                    }
                    _ => {
                        // A fresh join in the child works and sees head.
                        let r = (|| -> wcfs::Result<bool> {
                            let wc2 = Wcfs::attach(&mnt)?;
                            let c2 = wc2.connect(head_at)?;
                            let m2 = c2.open(f)?.mmap(0, NBLK as i64)?;
                            let got = e2e::mem(&m2);
                            let ok = (0..NBLK as usize).all(|b| {
                                got[b * BS..(b + 1) * BS]
                                    == e2e::want_block(&head_content, b as u64, BS)[..]
                            });
                            c2.close()?;
                            wc2.close()?;
                            Ok(ok)
                        })();
                        match r {
                            Ok(true) => 0,
                            Ok(false) => 3,
                            Err(_) => 4,
                        }
                    }
                };
                // SAFETY: ends the child without running anything of the
                // parent's (destructors, atexit, libtest).
                unsafe { libc::_exit(code) };
            }
            ForkResult::Parent { child } => {
                if what == "frozen" {
                    // Head changes under the child; the parent's pinner
                    // answers for the parent only.
                    env.py.fill(f, 5, "zblk0", 0xf5, BS);
                    env.commit();
                    let _ = env.w().read_block(f, 5, BS as u64);
                    check(&oracle, "a commit while the child lives");
                    // SAFETY: writes one byte from a live buffer.
                    unsafe { libc::write(pipe[1], b"g".as_ptr().cast(), 1) };
                }
                let st = wait_child(child, Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("child {what}: {e}"));
                // SAFETY: closing our own pipe descriptors.
                unsafe {
                    libc::close(pipe[0]);
                    libc::close(pipe[1]);
                }
                let detached_fault = matches!(
                    st,
                    WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSEGV, _)
                        | WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGBUS, _)
                );
                assert!(
                    st == WaitStatus::Exited(child, 0) || (what == "frozen" && detached_fault),
                    "child {what}: {st:?} (exit 3: wrong data through its own Conn, \
                     4: library error, 5: inherited memory shows neither t0 nor a fault)"
                );
            }
        }
        // The parent's link still works: a block changes, another reader
        // reads it through head/ — which waits for the parent's pinner —
        // and the parent's memory still shows t0.
        let blk = 1 + i as u64;
        env.py.fill(f, blk, "zblk0", 0xc0 + i as u8, BS);
        let t = env.commit();
        let path = env.w().head_file(f);
        let r = e2e::with_timeout(Duration::from_secs(10), move || {
            common::Wcfs::pread_block(&path, blk, BS as u64).unwrap()
        });
        let got = r.unwrap_or_else(|| {
            panic!("after child {what}: head read of #{blk} not answered in 10s: the parent's pinner is gone")
        });
        assert_eq!(
            got,
            e2e::want_block(&oracle.content(&mut env.py, f, t), blk, BS)
        );
        check(&oracle, &format!("child {what} and a commit"));
    }
    let st = common::watch::stats(&mnt);
    assert_eq!(st.get("pinkill"), Some(&0), "{st:?}");
    m.unmap().unwrap();
    fh.close().unwrap();
    conn.close().unwrap();
    wc.close().unwrap();
}
