//! The client library's core against a real daemon and real Python commits:
//! Mappings show the file as of the Conn's `at` (oracle: Python ZODB's view
//! of the same data.fs), pins while the process itself reads, resync,
//! sizes, closing, going down, fork.

#[path = "../daemon/tests/common/mod.rs"]
mod common;

use common::Env;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use wcfs::{Mapping, Oid, Tid, Wcfs};

const BS: usize = 64 * 1024;

/// Block `blk` of the mapping's memory (touching it: may pin).
fn mem_block(m: &Mapping, blk: u64) -> Vec<u8> {
    // SAFETY: the mapping is alive for the call and readable (tests that
    // expect a fault probe with `readable` instead).
    let s = unsafe { m.as_slice() };
    let i = (blk - m.blk_start() as u64) as usize * BS;
    s[i..i + BS].to_vec()
}

/// Whether `[addr, addr+len)` can be read, probed without faulting:
/// process_vm_readv on ourselves fails with EFAULT where a read would fault.
fn readable(addr: *const u8, len: usize) -> bool {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: reads from our own address space into `buf`; the kernel checks
    // the remote range.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == len as isize
}

fn block_readable(m: &Mapping, blk: u64) -> bool {
    let i = (blk - m.blk_start() as u64) as usize * BS;
    // SAFETY: pointer arithmetic inside the mapping's range.
    readable(unsafe { m.mem_start().add(i) }, BS)
}

/// Asserts that block `blk` of `m` equals Python's block as of `at` (zeros
/// beyond the file's size as of `at`).
fn check(env: &mut Env, m: &Mapping, f: Oid, blk: u64, at: Tid) {
    let size = env.py.size(f, Some(at));
    let want = if blk * (BS as u64) < size {
        env.py.block(f, blk, Some(at))
    } else {
        vec![0; BS]
    };
    let got = mem_block(m, blk);
    assert!(
        got == want,
        "file {f} blk #{blk} as of {at}: got {:?}…, want {:?}…",
        &got[..8],
        &want[..8]
    );
}

fn setup(nblk: u64) -> (Env, Oid, Tid, Wcfs) {
    let mut env = Env::new();
    let f = env.py.new_file(BS as u64);
    for b in 0..nblk {
        env.py.fill(f, b, "zblk0", 0x10 + b as u8, BS);
    }
    let at = env.py.commit();
    env.mount(&[]);
    let wc = Wcfs::attach(&env.w().mnt).expect("attach");
    (env, f, at, wc)
}

#[test]
fn view_pins_and_resync() {
    let (mut env, f, at1, wc) = setup(4);
    assert_eq!(wc.head_at().unwrap(), at1);
    let conn = wc.connect(at1).unwrap();
    assert_eq!(conn.at(), at1);
    let fh = conn.open(f).unwrap();
    assert_eq!(fh.blksize(), BS);
    assert_eq!(fh.oid(), f);
    let m = fh.mmap(0, 8).unwrap();
    assert_eq!(m.mem_stop() as usize - m.mem_start() as usize, 8 * BS);
    for b in 0..8 {
        check(&mut env, &m, f, b, at1); // 4..8: beyond EOF, zeros
    }

    // Change blocks 1 and 2, grow to 6 blocks: the view stays at at1 —
    // blocks 1 and 2 were cached from head and are pinned when re-read.
    env.py.fill(f, 1, "zblk1", 0xa1, BS);
    env.py.fill(f, 2, "zblk0", 0xa2, 100);
    env.py.fill(f, 5, "zblk0", 0xa5, BS);
    let at2 = env.commit();
    for b in 0..8 {
        check(&mut env, &m, f, b, at1);
    }
    // Head (a plain read) shows at2.
    env.check_block(f, 1, BS as u64, None);

    // Another Conn at at2 in the same process sees at2, while the first
    // one keeps at1.
    let conn2 = wc.connect(at2).unwrap();
    let fh2 = conn2.open(f).unwrap();
    let m2 = fh2.mmap(0, 8).unwrap();
    for b in 0..8 {
        check(&mut env, &m2, f, b, at2);
        check(&mut env, &m, f, b, at1);
    }

    // A third commit; then resync the first Conn to at2 (not latest):
    // blocks changed only by at3 are pinned, size grows to at2's.
    env.py.fill(f, 0, "zblk0", 0xb0, BS);
    env.py.fill(f, 2, "zblk0", 0xb2, BS);
    env.py.truncate(f, 3);
    let at3 = env.commit();
    conn.resync(at2).unwrap();
    assert_eq!(conn.at(), at2);
    for b in 0..8 {
        check(&mut env, &m, f, b, at2);
        check(&mut env, &m2, f, b, at2);
    }
    conn.resync(at3).unwrap();
    for b in 0..8 {
        check(&mut env, &m, f, b, at3);
        check(&mut env, &m2, f, b, at2);
    }
    // A Mapping made after resync, over a sub-range.
    let m3 = fh.mmap(2, 3).unwrap();
    assert_eq!(m3.blk_start(), 2);
    for b in 2..5 {
        check(&mut env, &m3, f, b, at3);
    }
    // remmap_blk re-establishes the same view.
    m.remmap_blk(1).unwrap();
    check(&mut env, &m, f, 1, at3);
    assert_eq!(m.remmap_blk(8).unwrap_err().errno(), libc::EINVAL);
    assert_eq!(m3.remmap_blk(1).unwrap_err().errno(), libc::EINVAL);

    m3.unmap().unwrap();
    assert_eq!(m3.unmap().unwrap_err().errno(), libc::EINVAL);
    m.unmap().unwrap();
    fh.close().unwrap();
    conn.close().unwrap();
    assert_eq!(conn.close().unwrap_err().errno(), libc::EINVAL);
    m2.unmap().unwrap();
    fh2.close().unwrap();
    conn2.close().unwrap();
    wc.close().unwrap();
}

/// Many threads read blocks that changed after `at` for the first time
/// since the commit: each read makes the daemon pin our own link while the
/// reading thread is blocked in the fault, possibly on the very block the
/// pinner re-maps.
#[test]
fn pin_while_blocked_on_same_block() {
    let n = 16u64;
    let (mut env, f, at1, wc) = setup(n);
    let conn = wc.connect(at1).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, n as i64).unwrap();
    let want1: Vec<Vec<u8>> = (0..n).map(|b| env.py.block(f, b, Some(at1))).collect();
    for round in 0..3u8 {
        // Fill the page cache from head, then change every block.
        for b in 0..n {
            assert_eq!(mem_block(&m, b), want1[b as usize], "round {round} #{b}");
        }
        for b in 0..n {
            env.py
                .fill(f, b, "zblk0", 0x40 + round * 0x10 + b as u8, BS);
        }
        env.commit();
        let m = Arc::new(m.clone());
        let want = Arc::new(want1.clone());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (m, want) = (m.clone(), want.clone());
                std::thread::spawn(move || {
                    for i in 0..n {
                        let b = (i + t) % n; // all threads hit all blocks
                        assert_eq!(mem_block(&m, b), want[b as usize], "thread {t} #{b}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
    let st = common::watch::stats(&env.w().mnt);
    assert!(st["pin"] >= n as i64, "pins: {st:?}");
    assert_eq!(st["pinkill"], 0);
    conn.close().unwrap();
}

#[test]
fn going_back_takes_the_conn_down() {
    let (mut env, f, at1, wc) = setup(2);
    env.py.fill(f, 0, "zblk0", 0x77, BS);
    let at2 = env.commit();
    let conn = wc.connect(at2).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 2).unwrap();
    check(&mut env, &m, f, 0, at2);
    let e = conn.resync(at1).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert!(!block_readable(&m, 0), "memory of a downed Conn must fault");
    assert_eq!(conn.open(f).unwrap_err().errno(), libc::ENOTCONN);
    assert_eq!(conn.resync(at2).unwrap_err().errno(), libc::ENOTCONN);
    assert_eq!(fh.mmap(0, 1).unwrap_err().errno(), libc::ENOTCONN);
    assert_eq!(m.remmap_blk(0).unwrap_err().errno(), libc::ENOTCONN);
    // Releasing still works.
    m.unmap().unwrap();
    fh.close().unwrap();
    conn.close().unwrap();
}

#[test]
fn closing_parents_first_faults_children() {
    let (mut env, f, at1, wc) = setup(2);
    let conn = wc.connect(at1).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 3).unwrap();
    let m2 = fh.mmap(1, 1).unwrap();
    check(&mut env, &m, f, 0, at1);
    assert!(block_readable(&m, 2), "beyond EOF: zeros");

    // Closing the FileH faults its Mappings.
    fh.close().unwrap();
    assert_eq!(fh.close().unwrap_err().errno(), libc::EINVAL);
    for b in 0..3 {
        assert!(!block_readable(&m, b), "#{b} readable after FileH close");
    }
    assert_eq!(m.remmap_blk(0).unwrap_err().errno(), libc::ENOTCONN);
    m.unmap().unwrap();

    // Opened again: fresh; then the WCFS is closed under it.
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 2).unwrap();
    check(&mut env, &m, f, 1, at1);
    assert!(!block_readable(&m2, 1), "old mapping stays faulting");
    wc.close().unwrap();
    assert!(!block_readable(&m, 0) && !block_readable(&m, 1));
    // The daemon gets the link back now, not when the last handle goes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while common::watch::stats(&env.w().mnt)["WatchLink"] != 0 {
        assert!(std::time::Instant::now() < deadline, "link still open");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(conn.open(f).unwrap_err().errno(), libc::ENOTCONN);
    assert_eq!(wc.connect(at1).unwrap_err().errno(), libc::ENOTCONN);
    assert_eq!(wc.head_at().unwrap_err().errno(), libc::ENOTCONN);
    m.unmap().unwrap();
    m2.unmap().unwrap();
    fh.close().unwrap();
    conn.close().unwrap();
}

/// Head shrinks below the size as of `at`: blocks we read before are
/// pinned by the daemon; blocks we never read come from @at, never SIGBUS.
#[test]
fn head_shrinks_below_at() {
    let (mut env, f, at1, wc) = setup(6);
    env.py.truncate(f, 1);
    let at2 = env.commit();
    // Opened after the truncation: head has 1 block, at1 has 6.
    let conn = wc.connect(at1).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 7).unwrap();
    for b in 0..7 {
        check(&mut env, &m, f, b, at1);
    }
    conn.resync(at2).unwrap();
    for b in 0..7 {
        check(&mut env, &m, f, b, at2);
    }
    // Grow back past the old size, then a view at at3 sees it.
    env.py.fill(f, 3, "zblk0", 0x33, BS);
    let at3 = env.commit();
    conn.resync(at3).unwrap();
    for b in 0..7 {
        check(&mut env, &m, f, b, at3);
    }
    conn.close().unwrap();

    // Mapped from head but never touched, then head shrinks: the kernel
    // raises SIGBUS without asking the daemon; the library repairs it
    // from @at.
    let conn = wc.connect(at3).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 5).unwrap();
    check(&mut env, &m, f, 0, at3);
    env.py.truncate(f, 1);
    env.commit();
    for b in (0..5).rev() {
        check(&mut env, &m, f, b, at3);
    }
    conn.close().unwrap();
    env.py.fill(f, 3, "zblk0", 0x34, BS);
    let at3 = env.commit();

    // Read through head first, then head shrinks: the daemon pins them.
    let conn = wc.connect(at3).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 5).unwrap();
    for b in 0..5 {
        check(&mut env, &m, f, b, at3);
    }
    env.py.truncate(f, 0);
    env.commit();
    for b in 0..5 {
        check(&mut env, &m, f, b, at3);
    }
    conn.close().unwrap();
}

#[test]
fn fork_detaches() {
    let (mut env, f, at1, wc) = setup(3);
    let conn = wc.connect(at1).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 3).unwrap();
    for b in 0..3 {
        check(&mut env, &m, f, b, at1);
    }
    // Child 1: handles are detached (ENOTCONN, no lock taken), memory
    // still reads, releasing is fine, and the parent's link is left alone.
    // SAFETY: the child only calls into the library (detached paths) and
    // _exits.
    match unsafe { libc::fork() } {
        0 => {
            let ok = conn.open(f).map(|_| ()).err().map(|e| e.errno()) == Some(libc::ENOTCONN)
                && fh.mmap(0, 1).err().map(|e| e.errno()) == Some(libc::ENOTCONN)
                && block_readable(&m, 0)
                && m.unmap().is_ok()
                && fh.close().is_ok()
                && conn.close().is_ok();
            // SAFETY: leaving the forked child without running Rust's exit.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pid => assert_eq!(wait(pid), Ok(0), "child 1"),
    }
    // Child 2: keeps reading its view, frozen at at1, while the parent's
    // side changes head; memory that faulted in the parent faults here too.
    let m2 = fh.mmap(0, 1).unwrap();
    let want: Vec<Vec<u8>> = (0..3).map(|b| env.py.block(f, b, Some(at1))).collect();
    let other = wc.connect(at1).unwrap();
    let ofh = other.open(f).unwrap();
    let om = ofh.mmap(0, 1).unwrap();
    other.close().unwrap(); // its memory faults
    let (rx, tx) = nix::unistd::pipe().unwrap();
    // SAFETY: as above.
    match unsafe { libc::fork() } {
        0 => {
            drop(tx);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(rx.as_raw_fd(), &mut b); // parent committed
            let mut ok = !block_readable(&om, 0) && conn.at() == at1;
            for (blk, w) in want.iter().enumerate() {
                ok &= mem_block(&m, blk as u64) == *w;
            }
            ok &= mem_block(&m2, 0) == want[0];
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pid => {
            drop(rx);
            env.py.fill(f, 0, "zblk0", 0x55, BS);
            env.py.fill(f, 2, "zblk0", 0x56, BS);
            env.commit();
            // Head's cache gets the new data (the child must not see it).
            env.check_block(f, 0, BS as u64, None);
            env.check_block(f, 2, BS as u64, None);
            nix::unistd::write(&tx, b"x").unwrap();
            assert_eq!(wait(pid), Ok(0), "child 2");
        }
    }
    // Child 3: memory that faults in the parent (closed Conn) faults.
    // SAFETY: as above.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: expected to fault (SIGSEGV): that is the test.
            let v = unsafe { std::ptr::read_volatile(om.mem_start()) };
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(v as i32 + 2) };
        }
        pid => assert_eq!(wait(pid), Err(libc::SIGSEGV), "child 3"),
    }
    om.unmap().unwrap();
    m2.unmap().unwrap();
    // The parent still works: pins after the children flushed the link.
    for b in 0..3 {
        check(&mut env, &m, f, b, at1);
    }
    env.py.fill(f, 1, "zblk0", 0x99, BS);
    let at2 = env.commit();
    for b in 0..3 {
        check(&mut env, &m, f, b, at1);
    }
    conn.resync(at2).unwrap();
    for b in 0..3 {
        check(&mut env, &m, f, b, at2);
    }
    let st = common::watch::stats(&env.w().mnt);
    assert_eq!(st["pinkill"], 0);
    conn.close().unwrap();
}

/// Ok(exit code) or Err(signal).
fn wait(pid: libc::pid_t) -> Result<i32, i32> {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(libc::WTERMSIG(status))
    }
}

/// The daemon goes away: the Conn goes down, its memory faults.
#[test]
fn daemon_exit_takes_conns_down() {
    let (mut env, f, at1, wc) = setup(2);
    let conn = wc.connect(at1).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 2).unwrap();
    check(&mut env, &m, f, 0, at1);
    env.w_mut()
        .signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while conn.open(f).is_ok() || block_readable(&m, 0) {
        assert!(std::time::Instant::now() < deadline, "conn still up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(conn.resync(at1).unwrap_err().errno(), libc::ENOTCONN);
    m.unmap().unwrap();
    conn.close().unwrap();
}

/// The view of one Conn as Python sees it: every block as of `at`.
fn oracle_view(env: &mut Env, f: Oid, at: Tid, nblk: u64) -> Vec<Vec<u8>> {
    let size = env.py.size(f, Some(at));
    (0..nblk)
        .map(|b| {
            if b * (BS as u64) < size {
                env.py.block(f, b, Some(at))
            } else {
                vec![0; BS]
            }
        })
        .collect()
}

/// Randomized: reader threads keep checking two Conns' views while commits
/// change, punch, grow and shrink the file underneath; between rounds one
/// Conn resyncs forward to a random newer commit.
#[test]
fn readers_during_commits_and_resyncs() {
    let seed = testkit::seed("readers_during_commits_and_resyncs");
    let mut rng = testkit::Rng::new(seed);
    const NBLK: u64 = 10;
    let (mut env, f, at0, wc) = setup(6);
    let mut tids = vec![at0];
    let c1 = wc.connect(at0).unwrap();
    let c2 = wc.connect(at0).unwrap();
    let fh1 = c1.open(f).unwrap();
    let m1 = fh1.mmap(0, NBLK as i64).unwrap();
    // A second Mapping of the same file, over a sub-range, never touched
    // before the resyncs: its blocks must follow too.
    let m1b = fh1.mmap(3, 5).unwrap();
    let m2 = c2.open(f).unwrap().mmap(0, NBLK as i64).unwrap();
    let mut want1 = Arc::new(oracle_view(&mut env, f, at0, NBLK));
    let want2 = Arc::new(want1.as_ref().clone());
    for round in 0..12 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = [(m1.clone(), want1.clone()), (m2.clone(), want2.clone())]
            .into_iter()
            .flat_map(|(m, want)| {
                let stop = stop.clone();
                (0..2u64).map(move |t| {
                    let (m, want, stop) = (m.clone(), want.clone(), stop.clone());
                    std::thread::spawn(move || {
                        let mut i = t;
                        let mut n = 0;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < NBLK {
                            let b = (i * 7 + 3) % NBLK;
                            let got = mem_block(&m, b);
                            let w = &want[b as usize];
                            if got != *w {
                                let diff = got.iter().zip(w.iter()).position(|(a, b)| a != b);
                                panic!(
                                    "#{b} (read {n}): first difference at {diff:?}: got {:?} want {:?}",
                                    diff.map(|i| got[i]),
                                    diff.map(|i| w[i])
                                );
                            }
                            i += 1;
                            n += 1;
                        }
                    })
                })
            })
            .collect();
        for _ in 0..3 {
            for _ in 0..1 + rng.below(3) {
                let b = rng.below(NBLK);
                match rng.below(6) {
                    0 => env.py.punch(f, b),
                    1 => env.py.truncate(f, rng.below(NBLK)),
                    2 => env.py.fill(f, b, "zblk1", rng.below(256) as u8, BS),
                    _ => env.py.fill(
                        f,
                        b,
                        "zblk0",
                        rng.below(256) as u8,
                        1 + rng.below(BS as u64) as usize,
                    ),
                }
            }
            tids.push(env.commit());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.join()
                .unwrap_or_else(|_| panic!("round {round}: a reader saw wrong data"));
        }
        // c1 moves forward to a random commit not older than its at.
        let from = tids.iter().position(|t| *t == c1.at()).unwrap();
        let to = tids[from + rng.below((tids.len() - from) as u64) as usize];
        c1.resync(to).unwrap();
        want1 = Arc::new(oracle_view(&mut env, f, to, NBLK));
        for b in 0..NBLK {
            assert!(
                mem_block(&m1, b) == want1[b as usize],
                "round {round}: after resync #{b}"
            );
        }
        if round % 4 == 3 {
            for b in 3..8 {
                assert!(
                    mem_block(&m1b, b) == want1[b as usize],
                    "round {round}: sub-range after resync #{b}"
                );
            }
        }
    }
    let st = common::watch::stats(&env.w().mnt);
    assert_eq!(st["pinkill"], 0);
    c1.close().unwrap();
    c2.close().unwrap();
}

/// `Wcfs::join`: by zurl, starting the daemon when asked; errors carry
/// lifecycle's errno.
#[test]
fn join_by_zurl() {
    let mut env = Env::new();
    let f = env.py.new_file(BS as u64);
    env.py.fill(f, 0, "zblk0", 0x42, BS);
    let at = env.py.commit();
    std::env::set_var(lifecycle::WCFSD_ENV, common::wcfsd_bin());
    let e = Wcfs::join(&env.zurl, false).unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
    let wc = Wcfs::join(&env.zurl, true).expect("join with autostart");
    assert_eq!(wc.mountpoint(), lifecycle::mountpoint_for(&env.zurl));
    let conn = wc.connect(at).unwrap();
    let m = conn.open(f).unwrap().mmap(0, 2).unwrap();
    check(&mut env, &m, f, 0, at);
    check(&mut env, &m, f, 1, at);
    // Joining again finds the same daemon.
    let wc2 = Wcfs::join(&env.zurl, false).unwrap();
    assert_eq!(wc2.head_at().unwrap(), at);
    conn.close().unwrap();
    m.unmap().unwrap();
    wc.close().unwrap();
    wc2.close().unwrap();
    lifecycle::remove_all(&env.zurl, &lifecycle::Config::default()).expect("stop");
}

/// A view cannot span a change of the file's block size: open and resync
/// refuse it (EINVAL), resync taking the Conn down.
#[test]
fn blksize_change_is_refused() {
    let (mut env, f, at1, wc) = setup(2);
    env.py.setblksize(f, 2 * BS as u64);
    let at2 = env.commit();
    let conn = wc.connect(at1).unwrap();
    let e = wc.connect(at2).unwrap().open(f);
    assert!(e.is_ok(), "open at the new blksize: {e:?}");
    let e = conn.open(f).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    conn.close().unwrap();

    // Opened at the new size, then it changes back.
    let conn = wc.connect(at2).unwrap();
    let fh = conn.open(f).unwrap();
    assert_eq!(fh.blksize(), 2 * BS);
    env.py.setblksize(f, BS as u64);
    let at3 = env.commit();
    let e = conn.resync(at3).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert_eq!(conn.open(f).unwrap_err().errno(), libc::ENOTCONN);
    conn.close().unwrap();
}

/// A fake daemon behind a pseudo-terminal: the test plays wcfsd's side of
/// head/watch byte for byte (regular files stand for head/, @<tid>/).
mod fake {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::path::Path;

    pub struct Peer {
        pub rx: BufReader<std::fs::File>,
        pub tx: std::fs::File,
        _slave: OwnedFd,
    }

    impl Peer {
        /// A raw pty whose slave is linked at `<mnt>/head/watch`.
        pub fn new(mnt: &Path) -> Peer {
            // SAFETY: plain pty syscalls on descriptors we own.
            unsafe {
                let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
                assert!(m >= 0);
                assert_eq!(libc::grantpt(m), 0);
                assert_eq!(libc::unlockpt(m), 0);
                let mut name = [0 as libc::c_char; 128];
                assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
                let name = std::ffi::CStr::from_ptr(name.as_ptr()).to_str().unwrap();
                let s = libc::open(
                    std::ffi::CString::new(name).unwrap().as_ptr(),
                    libc::O_RDWR | libc::O_NOCTTY,
                );
                assert!(s >= 0);
                let mut t: libc::termios = std::mem::zeroed();
                assert_eq!(libc::tcgetattr(s, &mut t), 0);
                libc::cfmakeraw(&mut t);
                assert_eq!(libc::tcsetattr(s, libc::TCSANOW, &t), 0);
                std::os::unix::fs::symlink(name, mnt.join("head/watch")).unwrap();
                let master = std::fs::File::from_raw_fd(m);
                Peer {
                    rx: BufReader::new(master.try_clone().unwrap()),
                    tx: master,
                    _slave: OwnedFd::from_raw_fd(s),
                }
            }
        }

        pub fn line(&mut self) -> String {
            let mut l = String::new();
            self.rx.read_line(&mut l).unwrap();
            l.trim_end().to_string()
        }

        pub fn send(&mut self, line: &str) {
            self.tx.write_all(format!("{line}\n").as_bytes()).unwrap();
        }
    }
}

/// What a hostile or broken daemon says never panics the client nor shows
/// wrong data: pins from the fake are applied exactly, a malformed line or
/// `0 fatal` takes the Conn down (memory faults, ENOTCONN, `bye` sent).
#[test]
fn fake_daemon_pins_and_bad_lines() {
    const PBS: usize = 4096;
    let oid: Oid = "00000000000000a1".parse().unwrap();
    let at: Tid = "0400000000000001".parse().unwrap();
    let rev: Tid = "0300000000000001".parse().unwrap();
    for bad in [
        "3 pin",
        "x y",
        "0 fatal the daemon is going away",
        "2 pin 00000000000000a1 #0 @nonsense",
        "1",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path();
        for d in [
            "head/bigfile",
            &format!("@{at}/bigfile"),
            &format!("@{rev}/bigfile"),
        ] {
            std::fs::create_dir_all(mnt.join(d)).unwrap();
        }
        std::fs::write(mnt.join("head/at"), format!("{at}\n")).unwrap();
        let put = |d: &str, fill: u8, nblk: usize| {
            std::fs::write(
                mnt.join(format!("{d}/bigfile/{oid}")),
                vec![fill; nblk * PBS],
            )
            .unwrap()
        };
        put("head", 0x11, 3);
        put(&format!("@{at}"), 0x22, 2);
        put(&format!("@{rev}"), 0x33, 1);
        let mut peer = fake::Peer::new(mnt);
        let wc = Wcfs::attach(mnt).unwrap();
        let conn = wc.connect(at).unwrap();
        let opener = {
            let conn = conn.clone();
            std::thread::spawn(move || conn.open(oid))
        };
        assert_eq!(peer.line(), format!("1 watch {oid} @{at}"));
        peer.send("1 ok");
        let fh = opener.join().unwrap().unwrap();
        assert_eq!(fh.blksize(), PBS);
        let m = fh.mmap(0, 4).unwrap();
        // SAFETY: the mapping lives until unmap below; reads are checked
        // for faults with `readable` first where a fault is expected.
        let mem = |i: usize| unsafe { *m.mem_start().add(i * PBS) };
        // Size as of at: 2 blocks (from @at's size); head has 3.
        assert_eq!((mem(0), mem(1), mem(2), mem(3)), (0x11, 0x11, 0, 0));
        peer.send(&format!("2 pin {oid} #1 @{rev}"));
        assert_eq!(peer.line(), "2 ack");
        // @rev is 1 block long: block 1 of it is past its end, zeros.
        assert_eq!(mem(1), 0);
        peer.send(&format!("4 pin {oid} #0 @{rev}"));
        assert_eq!(peer.line(), "4 ack");
        assert_eq!(mem(0), 0x33);
        peer.send(&format!("6 pin {oid} #0 @head"));
        assert_eq!(peer.line(), "6 ack");
        assert_eq!(mem(0), 0x11);
        // A pin for a file we do not have is acked and ignored.
        peer.send("8 pin 00000000000000ff #0 @head");
        assert_eq!(peer.line(), "8 ack");
        peer.send(bad);
        if !bad.starts_with("0 ") {
            assert!(peer.line().ends_with(" bye"), "after {bad:?}");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while block_readable_at(m.mem_start(), PBS) {
            assert!(std::time::Instant::now() < deadline, "{bad:?}: still up");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let e = conn.open(oid).unwrap_err();
        assert_eq!(e.errno(), libc::ENOTCONN, "{bad:?}: {e}");
        if bad.starts_with("0 fatal") {
            assert!(e.message().contains("going away"), "{e}");
        }
        m.unmap().unwrap();
        // The daemon ends the link — ours does on `bye` and after a `0`
        // line — and closing waits for the pinner to see that.
        drop(peer);
        conn.close().unwrap();
    }
}

fn block_readable_at(p: *const u8, len: usize) -> bool {
    readable(p, len)
}

/// Opening a file twice under one Conn gives two opens of one file: the
/// memory faults only when both are closed.
#[test]
fn two_opens_of_one_file() {
    let (mut env, f, at1, wc) = setup(2);
    let conn = wc.connect(at1).unwrap();
    let a = conn.open(f).unwrap();
    let b = conn.open(f).unwrap();
    let m = b.mmap(0, 2).unwrap();
    check(&mut env, &m, f, 1, at1);
    a.close().unwrap();
    assert!(block_readable(&m, 0), "closing one open of two faulted");
    let c = b.clone(); // the same open
    c.close().unwrap();
    assert_eq!(b.close().unwrap_err().errno(), libc::EINVAL);
    assert!(!block_readable(&m, 0), "closing the last open must fault");
    // Opened again afterwards: a fresh file, its own memory.
    let d = conn.open(f).unwrap();
    let m2 = d.mmap(0, 2).unwrap();
    check(&mut env, &m2, f, 0, at1);
    assert!(!block_readable(&m, 0));
    conn.close().unwrap();
}

/// A joined handle is a client of the daemon even before (and between) its
/// Conns: an autostarted daemon (`-autoexit`) must not go idle under it,
/// and goes once the handle is closed.
#[test]
fn joined_handle_keeps_an_autostarted_daemon() {
    let mut env = Env::new();
    let f = env.py.new_file(BS as u64);
    env.py.fill(f, 0, "zblk0", 0x17, BS);
    let at = env.py.commit();
    std::env::set_var(lifecycle::WCFSD_ENV, common::wcfsd_bin());
    // Only daemons started with -autoexit (by join) read this.
    std::env::set_var("WCFS_AUTOEXIT_IDLE", "1s");
    let wc = Wcfs::join(&env.zurl, true).expect("join with autostart");
    let pid = lifecycle::status(&env.zurl).unwrap().pid;
    assert!(pid.is_some());
    std::thread::sleep(std::time::Duration::from_secs(4));
    let st = lifecycle::status(&env.zurl).unwrap();
    assert_eq!(
        st.state,
        lifecycle::State::Healthy,
        "idle daemon left a joined client"
    );
    assert_eq!(st.pid, pid, "the same daemon serves");
    assert_eq!(wc.head_at().unwrap(), at);
    let conn = wc.connect(at).unwrap();
    let m = conn.open(f).unwrap().mmap(0, 1).unwrap();
    check(&mut env, &m, f, 0, at);
    m.unmap().unwrap();
    conn.close().unwrap();
    wc.close().unwrap();
    // Nothing holds it now: it exits after its idle period. Watch the
    // mount table, not the mount: a probe would be activity.
    let mnt = lifecycle::mountpoint_for(&env.zurl);
    let mounted = || lifecycle::sys::mount_at(&mnt).unwrap().is_some();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while mounted() {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not autoexit after close"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    lifecycle::remove_all(&env.zurl, &lifecycle::Config::default()).unwrap();
}
