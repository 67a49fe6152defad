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
