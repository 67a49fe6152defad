//! Edges of the client API against a real daemon (SPEC §7–§8): a file
//! that does not exist yet at the Conn's `at`, a Conn ahead of head,
//! absurd mapping sizes, attaching to something that is not a wcfs mount.
//! Each must give a clear error (or the right view) — never a panic, a
//! hang, or wrong data.

#[path = "../daemon/tests/common/mod.rs"]
mod common;
mod e2e;

use common::Env;
use e2e::Oracle;
use std::time::Duration;
use wcfs::Wcfs;

const BS: usize = 4096;

#[test]
fn file_created_after_at() {
    let mut env = Env::new();
    let f0 = env.py.new_file(BS as u64);
    env.py.fill(f0, 0, "zblk0", 1, BS);
    let t0 = env.py.commit();
    env.mount(&[]);
    let f1 = env.py.new_file(BS as u64);
    env.py.fill(f1, 0, "zblk0", 2, BS);
    env.py.fill(f1, 1, "zblk0", 3, BS);
    let t1 = env.commit();
    let wc = Wcfs::attach(&env.w().mnt).unwrap();
    let conn = wc.connect(t0).unwrap();
    // At t0 the object does not exist: an error, or (if the library
    // chooses) an empty file — never t1's data.
    match conn.open(f1) {
        Err(e) => assert_ne!(e.errno(), 0),
        Ok(fh) => {
            let m = fh.mmap(0, 3).unwrap();
            let got = e2e::mem(&m);
            assert!(
                got.iter().all(|&b| b == 0),
                "file {f1} opened at {t0} (before it existed) shows data"
            );
            fh.close().unwrap();
        }
    }
    // Moving to t1 (or a new Conn at t1) shows it.
    let c1 = wc.connect(t1).unwrap();
    let fh = c1.open(f1).unwrap();
    let m = fh.mmap(0, 3).unwrap();
    let mut oracle = Oracle::default();
    let want = oracle.content(&mut env.py, f1, t1);
    let name = |b, d: &[u8]| oracle.name_block(f1, b, BS, d);
    e2e::check_mem(&e2e::mem(&m), 0, BS, &want, &name).unwrap();
    c1.close().unwrap();
    conn.close().unwrap();
    wc.close().unwrap();
}

#[test]
fn conn_ahead_of_head_waits_or_fails_cleanly() {
    let mut env = Env::new();
    let f = env.py.new_file(BS as u64);
    env.py.fill(f, 0, "zblk0", 1, BS);
    let t0 = env.py.commit();
    env.mount(&[]);
    let wc = Wcfs::attach(&env.w().mnt).unwrap();
    // A tid after head: SPEC §6 says the watch is answered once head
    // reaches it. Open it on a thread while Python commits past it.
    let ahead = zodb::Tid::new(t0.0 + (1 << 32)); // one minute later
    let wc2 = wc.clone();
    let r = e2e::with_timeout(Duration::from_secs(2), move || {
        let c = wc2.connect(ahead)?;
        let fh = c.open(f)?;
        Ok::<_, wcfs::Error>((c, fh))
    });
    // Either it is still waiting for head (fine: nothing committed yet),
    // or it answered: then with an error.
    if let Some(Ok((c, _))) = &r {
        panic!(
            "open at {ahead} ahead of head {t0} succeeded at once (at {})",
            c.at()
        );
    }
    wc.close().unwrap();
}

#[test]
fn absurd_mappings_and_mountpoints_are_errors() {
    let mut env = Env::new();
    let f = env.py.new_file(BS as u64);
    env.py.fill(f, 0, "zblk0", 1, BS);
    let t0 = env.py.commit();
    env.mount(&[]);
    let wc = Wcfs::attach(&env.w().mnt).unwrap();
    let conn = wc.connect(t0).unwrap();
    let fh = conn.open(f).unwrap();
    for (s, l) in [
        (0, i64::MAX),
        (i64::MAX, 1),
        (i64::MAX / 2, i64::MAX / 2),
        // The byte offset overflows.
        (i64::MAX / BS as i64 + 1, 1),
        // 4 PiB of address space.
        (0, 1 << 40),
    ] {
        let r = fh.mmap(s, l);
        assert!(r.is_err(), "mmap({s}, {l}) succeeded");
    }
    // Far beyond the end, but representable: zeros.
    let far = fh.mmap(1 << 40, 1).unwrap();
    assert!(e2e::mem(&far).iter().all(|&b| b == 0));
    far.unmap().unwrap();
    // Still usable afterwards.
    let m = fh.mmap(0, 2).unwrap();
    assert_eq!(e2e::mem(&m)[0], 1);
    conn.close().unwrap();
    wc.close().unwrap();

    let dir = tempfile::tempdir().unwrap();
    assert!(
        Wcfs::attach(dir.path()).is_err(),
        "attach to a plain directory"
    );
    assert!(Wcfs::attach("/nonexistent/wcfs").is_err());
}
