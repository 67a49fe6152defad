//! Failure modes (SPEC §4): a broken database watcher switches the
//! filesystem to EIO mode and exits — never stale data; a corrupt object
//! behind one block fails only the reads of that block.

mod common;

use common::{errno, Env, Wcfs};
use std::io::Read;
use std::time::Duration;

#[test]
fn truncated_datafs_eio_then_exit() {
    const BS: u64 = 64 << 10;
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for blk in 0..4 {
        env.py.fill(f, blk, "zblk0", 1 + blk as u8, BS as usize);
    }
    env.py.commit();
    let size_before = std::fs::metadata(&env.datafs).unwrap().len();
    env.py.fill(f, 0, "zblk0", 0x55, BS as usize);
    env.py.commit();
    env.mount(&[]);
    // Warm the cache, keep a descriptor open.
    let path = env.w().head_file(f);
    let mut fd = std::fs::File::open(&path).unwrap();
    let mut old = vec![];
    fd.read_to_end(&mut old).unwrap();
    assert_eq!(old[0], 0x55);

    // Cut the last transaction off the file under the daemon.
    let data = std::fs::OpenOptions::new()
        .write(true)
        .open(&env.datafs)
        .unwrap();
    data.set_len(size_before - 10).unwrap();

    let st = env
        .w_mut()
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("wcfsd did not exit"));
    assert!(!st.success());
    let log = env.w().log();
    assert!(log.contains("zwatcher failed"), "{log}");
    assert!(log.contains("switching filesystem to EIO mode"), "{log}");

    // Every access fails; nothing stale comes back, cached or not.
    let mut buf = vec![0u8; BS as usize];
    use std::os::unix::fs::FileExt;
    let e = fd.read_at(&mut buf, 0).unwrap_err();
    assert!(matches!(errno(&e), libc::EIO | libc::ENOTCONN), "{e}");
    match Wcfs::pread_block(&path, 1, BS) {
        Err(e) => assert!(matches!(errno(&e), libc::EIO | libc::ENOTCONN), "{e}"),
        Ok(d) => panic!("read after failure returned {} bytes", d.len()),
    }
    let e = std::fs::read_to_string(env.w().path("head/at")).unwrap_err();
    assert!(matches!(errno(&e), libc::EIO | libc::ENOTCONN), "{e}");
}

#[test]
fn corrupt_block_eio_for_that_block_only() {
    const BS: u64 = 64 << 10;
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for blk in 0..4 {
        env.py.fill(f, blk, "zblk0", 1 + blk as u8, BS as usize);
    }
    env.py.commit();
    env.mount(&[]);
    // blk 1 is read (tracked, cached) before it is corrupted; blk 2 is not.
    env.check_block(f, 1, BS, None);
    let z1 = env.py.zblk(f, 1).unwrap();
    let z2 = env.py.zblk(f, 2).unwrap();
    let t1 = env.py.corrupt(z1);
    let t2 = env.py.corrupt(z2);
    let w = env.w();
    w.wait_head(t2.max(t1));
    for blk in [1, 2] {
        match Wcfs::pread_block(&w.head_file(f), blk, BS) {
            Err(e) => assert_eq!(errno(&e), libc::EIO, "blk #{blk}: {e}"),
            Ok(d) => panic!("corrupt blk #{blk} read {} bytes", d.len()),
        }
    }
    for blk in [0, 3] {
        env.check_block(f, blk, BS, None);
    }
    let w = env.w();
    assert_eq!(w.head(), t2);
    let log = w.log();
    assert!(log.contains("blk #2"), "reason logged:\n{log}");
}

/// Loss of the ZEO server (killed mid-run): the watcher fails, the
/// filesystem switches to EIO mode and the daemon exits — no read returns
/// data, cached or not, once the server is gone.
#[test]
fn zeo_server_killed_eio_then_exit() {
    const BS: u64 = 64 << 10;
    let mut env = Env::new_zeo();
    let f = env.py.new_file(BS);
    for blk in 0..4 {
        env.py.fill(f, blk, "zblk0", 1 + blk as u8, BS as usize);
    }
    env.py.commit();
    env.mount(&[]);
    // Warm blocks 0 and 1, keep a descriptor open; 2 and 3 stay cold.
    let path = env.w().head_file(f);
    let fd = std::fs::File::open(&path).unwrap();
    env.check_block(f, 0, BS, None);
    env.check_block(f, 1, BS, None);
    // The daemon follows commits made through the server.
    env.py.fill(f, 1, "zblk0", 0x77, BS as usize);
    env.commit();
    env.check_block(f, 1, BS, None);

    env.zeo.as_mut().unwrap().kill();
    let st = env
        .w_mut()
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("wcfsd did not exit after the ZEO server died"));
    assert!(!st.success());
    let log = env.w().log();
    assert!(log.contains("zwatcher failed"), "{log}");
    assert!(log.contains("switching filesystem to EIO mode"), "{log}");
    assert!(log.contains("closed by server"), "cause in the log:\n{log}");

    let mut buf = vec![0u8; BS as usize];
    use std::os::unix::fs::FileExt;
    for blk in 0..4 {
        match fd.read_at(&mut buf, blk * BS) {
            Err(e) => assert!(
                matches!(errno(&e), libc::EIO | libc::ENOTCONN),
                "blk #{blk}: {e}"
            ),
            Ok(n) => panic!("blk #{blk}: read after server loss returned {n} bytes"),
        }
    }
    let e = std::fs::read_to_string(env.w().path("head/at")).unwrap_err();
    assert!(matches!(errno(&e), libc::EIO | libc::ENOTCONN), "{e}");
}

/// SIGTERM to a daemon serving zeo:// unmounts and exits cleanly: the ZEO
/// connection's own thread must not take the signal the daemon waits for.
#[test]
fn zeo_sigterm_unmounts_cleanly() {
    let mut env = Env::new_zeo();
    let f = env.py.new_file(4096);
    env.py.fill(f, 0, "zblk0", 7, 4096);
    env.py.commit();
    env.mount(&[]);
    env.check_block(f, 0, 4096, None);
    let st = env
        .w_mut()
        .signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    let log = env.w().log();
    assert!(st.success(), "exit {st}:\n{log}");
    assert!(log.contains("SIGTERM: unmounting"), "{log}");
    assert!(!common::is_mounted(&env.w().mnt), "still mounted");
}

/// The ZEO server killed while readers are busy on cold blocks: every read
/// returns the right data or an error — none hangs, none returns anything
/// else — and the daemon goes down.
#[test]
fn zeo_server_killed_during_reads() {
    const BS: u64 = 64 << 10;
    const NBLK: u64 = 48;
    let mut env = Env::new_zeo();
    let f = env.py.new_file(BS);
    for blk in 0..NBLK {
        env.py.fill(f, blk, "zblk0", 1 + blk as u8, BS as usize);
    }
    env.py.commit();
    env.mount(&[]);
    let path = env.w().head_file(f);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (oks, errs) = std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|k| {
                let (path, stop) = (&path, &stop);
                s.spawn(move || {
                    let (mut oks, mut errs) = (0, 0);
                    let mut blk = k * 7;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        blk = (blk + 5) % NBLK;
                        // Out of the kernel's cache first: the read goes to
                        // the daemon (its 16-block cache, or the server).
                        let r = std::fs::File::open(path).and_then(|fd| {
                            use std::os::fd::AsRawFd;
                            // SAFETY: plain syscall on a descriptor we own.
                            unsafe {
                                libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
                            };
                            common::read_block_of(&fd, blk, BS)
                        });
                        match r {
                            Ok(d) => {
                                assert_eq!(d.len() as u64, BS, "blk #{blk}");
                                assert!(
                                    d.iter().all(|&b| b == 1 + blk as u8),
                                    "blk #{blk}: wrong data"
                                );
                                oks += 1;
                            }
                            Err(e) => {
                                let n = errno(&e);
                                assert!(
                                    matches!(
                                        n,
                                        libc::EIO
                                            | libc::ENOTCONN
                                            | libc::ECONNABORTED
                                            | libc::ENOENT
                                    ),
                                    "blk #{blk}: {e}"
                                );
                                errs += 1;
                                if errs > 20 {
                                    break;
                                }
                            }
                        }
                    }
                    (oks, errs)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        env.zeo.as_mut().unwrap().kill();
        let t0 = std::time::Instant::now();
        let st = env
            .w_mut()
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("wcfsd did not exit after the ZEO server died"));
        assert!(!st.success());
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    println!("reads: {oks} ok before the loss, {errs} errors after");
    assert!(oks > 0 && errs > 0, "ok {oks}, errors {errs}");
    let log = env.w().log();
    assert!(log.contains("switching filesystem to EIO mode"), "{log}");
}
