//! What a mapping shows at its edges (SPEC §7–§8): zeros beyond the end of
//! the file as of the Conn's `at` — also when head grows or shrinks past
//! that end later — and, after the mapping, its FileH, its Conn or its
//! WCFS is released, memory that faults instead of showing anything, and
//! handles below a closed parent that fail with ENOTCONN.
//!
//! Accesses that may (or must) fault run in child processes: this test
//! binary re-executed (see `tests/e2e`).

#[path = "../daemon/tests/common/mod.rs"]
mod common;
mod e2e;

use common::Env;
use e2e::{Child, Oracle};
use std::time::Duration;
use wcfs::Wcfs;
use zodb::{Oid, Tid};

#[test]
fn e2e_child() {
    e2e::child_main();
}

const BS: usize = 8192;

/// A file of blocks 0 and 1 full, a hole at 2 and a short block 3 (its
/// ZBlk0 holds 100 bytes): size 4 blocks.
fn setup() -> (Env, Oid, Tid) {
    let mut env = Env::new();
    let f = env.py.new_file(BS as u64);
    env.py.fill(f, 0, "zblk0", 0x11, BS);
    env.py.fill(f, 1, "zblk1", 0x22, BS);
    env.py.fill(f, 3, "zblk0", 0x44, 100);
    let t0 = env.py.commit();
    assert_eq!(env.py.size(f, None), 4 * BS as u64);
    env.mount(&[]);
    (env, f, t0)
}

fn shas(content: &[u8], n: i64) -> Vec<String> {
    (0..n)
        .map(|b| testkit::sha1_hex(&e2e::want_block(content, b as u64, BS)))
        .collect()
}

#[test]
fn memory_beyond_eof_is_zero() {
    let (mut env, f, t0) = setup();
    let mnt = env.w().mnt.clone();
    let mut oracle = Oracle::default();
    let c0 = oracle.content(&mut env.py, f, t0);

    // In this process: mappings over, at, and wholly beyond the end.
    let wc = Wcfs::attach(&mnt).unwrap();
    let conn = wc.connect(t0).unwrap();
    let fh = conn.open(f).unwrap();
    for (s, l) in [(0, 10), (3, 1), (3, 4), (4, 1), (6, 3), (100, 2)] {
        let m = fh.mmap(s, l).unwrap();
        let got = e2e::mem(&m);
        let name = |b, d: &[u8]| oracle.name_block(f, b, BS, d);
        e2e::check_mem(&got, s, BS, &c0, &name)
            .unwrap_or_else(|e| panic!("mapping [{s}+{l}) at t0: {e}"));
        m.unmap().unwrap();
    }
    conn.close().unwrap();

    // A child at t0 keeps seeing zeros past its end while head grows over
    // it (and its blocks are read through head/, which pins them), and
    // its own blocks while head shrinks below them.
    let mut kid = Child::spawn("view", &e2e::view_env(&mnt, f, t0, 0, 10));
    kid.expect("ready");
    let want0 = shas(&c0, 10);
    let check = |kid: &mut Child, what: &str| {
        let a = kid.call("sha");
        let got: Vec<&str> = a.split_whitespace().skip(1).collect();
        let bad: Vec<usize> = (0..10)
            .filter(|&b| got.get(b) != Some(&want0[b].as_str()))
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: child at t0: blocks {bad:?} differ from t0"
        );
    };
    check(&mut kid, "before");

    for b in 4..8u64 {
        env.py.fill(f, b, "zblk0", 0x50 + b as u8, BS);
    }
    let t1 = env.commit();
    for b in 0..10 {
        let _ = env.w().read_block(f, b, BS as u64);
    }
    assert_eq!(env.py.size(f, Some(t1)), 8 * BS as u64);
    check(&mut kid, "head grown to 8 blocks, read through head/");

    env.py.truncate(f, 1);
    let t2 = env.commit();
    for b in 0..10 {
        let _ = env.w().read_block(f, b, BS as u64);
    }
    check(&mut kid, "head truncated to 1 block");

    // Forward to t1: the grown blocks appear; t2: all but block 0 are zeros.
    for at in [t1, t2] {
        assert_eq!(kid.call(&format!("resync {at}")), "ok");
        let c = oracle.content(&mut env.py, f, at);
        let want = shas(&c, 10);
        let a = kid.call("sha");
        let got: Vec<&str> = a.split_whitespace().skip(1).collect();
        let bad: Vec<usize> = (0..10)
            .filter(|&b| got.get(b) != Some(&want[b].as_str()))
            .collect();
        assert!(
            bad.is_empty(),
            "child resynced to {at}: blocks {bad:?} differ"
        );
    }
    assert_eq!(kid.call("close"), "ok");
    wc.close().unwrap();
}

/// Spawns a `fault` child releasing `what`; returns it after it said
/// `read <sum>` (checked against Python).
fn fault_child(env: &Env, f: Oid, t0: Tid, what: &str, want_sum: u64) -> Child {
    let mut envs = e2e::view_env(&env.w().mnt, f, t0, 0, 6);
    envs.push(("E2E_WHAT", what.to_string()));
    let mut c = Child::spawn("fault", &envs);
    let a = c.expect("read");
    assert_eq!(a, format!("read {want_sum}"), "{what}: child's first read");
    c
}

#[test]
fn memory_after_release_faults() {
    let (mut env, f, t0) = setup();
    let c0 = env.py.content(f, Some(t0));
    let sum: u64 = c0.iter().map(|&b| b as u64).sum();
    let whats = ["none", "unmap", "fileh", "conn", "wcfs"];
    let mut kids: Vec<Child> = whats
        .iter()
        .map(|w| fault_child(&env, f, t0, w, sum))
        .collect();
    let enotconn = libc::ENOTCONN.to_string();
    for (w, c) in whats.iter().zip(&mut kids) {
        let api = c.expect("api");
        let api: std::collections::HashMap<&str, &str> = api
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .collect();
        match *w {
            "none" => assert_eq!(api.get("remmap"), Some(&"0"), "{w}: {api:?}"),
            // A released handle: some error.
            "unmap" => assert_ne!(api.get("remmap"), Some(&"0"), "{w}: {api:?}"),
            "fileh" => {
                assert_eq!(
                    api.get("remmap"),
                    Some(&enotconn.as_str()),
                    "{w}: mapping of a closed FileH: {api:?}"
                );
                assert_ne!(
                    api.get("mmap"),
                    Some(&"0"),
                    "{w}: mmap of a closed FileH: {api:?}"
                );
            }
            _ => {
                for k in ["remmap", "mmap"] {
                    assert_eq!(
                        api.get(k),
                        Some(&enotconn.as_str()),
                        "{w}: {k} under a closed parent: {api:?}"
                    );
                }
                assert_ne!(api.get("open"), Some(&"0"), "{w}: open: {api:?}");
                if *w == "wcfs" {
                    assert_eq!(api.get("open"), Some(&enotconn.as_str()), "{w}: {api:?}");
                }
            }
        }
        c.expect("touching");
    }
    for (w, c) in whats.iter().zip(&mut kids) {
        let st = c.wait_exit(Duration::from_secs(20));
        let out = c.output();
        let st = st.unwrap_or_else(|| panic!("{w}: child neither died nor exited: {out:?}"));
        if *w == "none" {
            assert!(st.success(), "{w}: {st:?} {out:?}");
            assert!(
                out.iter().any(|l| l.contains(&format!("survived {sum}"))),
                "{w}: {out:?}"
            );
            continue;
        }
        let sig = e2e::term_signal(&st);
        assert!(
            sig == Some(libc::SIGSEGV) || sig == Some(libc::SIGBUS),
            "{w}: memory of a released mapping did not fault: exit {st:?}, output {out:?}"
        );
    }
}

#[test]
fn handles_under_a_closed_parent_fail_with_enotconn() {
    let (_env, f, t0) = setup();
    let mnt = _env.w().mnt.clone();
    let wc = Wcfs::attach(&mnt).unwrap();
    let enotconn = libc::ENOTCONN;

    // Conn closed first.
    let conn = wc.connect(t0).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 2).unwrap();
    conn.close().unwrap();
    assert_eq!(e2e::errno_of(&fh.mmap(0, 1)), enotconn);
    assert_eq!(e2e::errno_of(&m.remmap_blk(0)), enotconn);
    assert_eq!(e2e::errno_of(&conn.resync(t0)), enotconn);
    assert_ne!(e2e::errno_of(&conn.open(f)), 0);
    let _ = m.unmap();
    let _ = fh.close();
    // Released twice: an error, not a crash.
    assert_ne!(e2e::errno_of(&conn.close()), 0, "second close of a Conn");

    // Bad arguments.
    let conn = wc.connect(t0).unwrap();
    assert_ne!(
        e2e::errno_of(&conn.open(Oid::new(0xdead_beef))),
        0,
        "open of no file"
    );
    let fh = conn.open(f).unwrap();
    assert_eq!(
        e2e::errno_of(&fh.mmap(-1, 1)),
        libc::EINVAL,
        "negative blk_start"
    );
    assert_ne!(e2e::errno_of(&fh.mmap(0, 0)), 0, "empty mapping");
    assert_eq!(
        e2e::errno_of(&fh.mmap(0, -3)),
        libc::EINVAL,
        "negative length"
    );
    let m = fh.mmap(2, 2).unwrap();
    assert_ne!(e2e::errno_of(&m.remmap_blk(1)), 0, "remmap outside");
    assert_ne!(e2e::errno_of(&m.remmap_blk(4)), 0, "remmap outside");
    assert_eq!(e2e::errno_of(&m.remmap_blk(3)), 0);
    m.unmap().unwrap();
    assert_ne!(e2e::errno_of(&m.unmap()), 0, "second unmap");
    // Going back is an error and takes the Conn down.
    let head = wc.head_at().unwrap();
    assert_ne!(
        e2e::errno_of(&conn.resync(Tid::new(t0.0 - 1))),
        0,
        "resync backwards"
    );
    assert_eq!(
        e2e::errno_of(&conn.resync(head)),
        enotconn,
        "Conn down after going back"
    );
    assert_eq!(e2e::errno_of(&fh.mmap(0, 1)), enotconn);
    let _ = fh.close();
    let _ = conn.close();

    // WCFS closed first.
    let conn = wc.connect(t0).unwrap();
    let fh = conn.open(f).unwrap();
    wc.close().unwrap();
    assert_eq!(e2e::errno_of(&conn.open(f)), enotconn);
    assert_eq!(e2e::errno_of(&fh.mmap(0, 1)), enotconn);
    assert_ne!(e2e::errno_of(&wc.connect(t0)), 0);
    assert_ne!(e2e::errno_of(&wc.head_at()), 0);
    let _ = fh.close();
    let _ = conn.close();
}

/// `remmap_blk` puts back the base mapping of a block — the `@<rev>` it is
/// pinned to, or head — over pages the user overlaid there (SPEC §8).
#[test]
fn remmap_blk_restores_the_base_mapping() {
    let (mut env, f, t0) = setup();
    let mnt = env.w().mnt.clone();
    let mut oracle = Oracle::default();
    let c0 = oracle.content(&mut env.py, f, t0);
    let wc = Wcfs::attach(&mnt).unwrap();
    let conn = wc.connect(t0).unwrap();
    let fh = conn.open(f).unwrap();
    let m = fh.mmap(0, 5).unwrap();
    let _ = e2e::mem(&m);
    // Block 1 changes and is pinned (read through head/); block 0 not.
    env.py.fill(f, 1, "zblk0", 0x99, BS);
    let _t1 = env.commit();
    let _ = env.w().read_block(f, 1, BS as u64);
    let check = |what: &str| {
        let got = e2e::mem(&m);
        let name = |b, d: &[u8]| oracle.name_block(f, b, BS, d);
        e2e::check_mem(&got, 0, BS, &c0, &name).unwrap_or_else(|e| panic!("{what}: {e}"));
    };
    check("pinned");
    // The user's own pages over blocks 0, 1 and 4 (beyond the end).
    for blk in [0usize, 1, 4] {
        // SAFETY: replaces pages inside our live mapping with private
        // anonymous memory — what a copy-on-write layer over wcfs does.
        unsafe {
            let addr = m.mem_start().add(blk * BS) as *mut libc::c_void;
            let p = libc::mmap(
                addr,
                BS,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            assert_eq!(p, addr);
            std::ptr::write_bytes(p.cast::<u8>(), 0x77, BS);
        }
    }
    for blk in [0i64, 1, 4] {
        m.remmap_blk(blk)
            .unwrap_or_else(|e| panic!("remmap_blk({blk}): {e}"));
    }
    check("after remmap_blk");
    // And the restored head block still gets pinned when it changes.
    env.py.fill(f, 0, "zblk1", 0x98, BS);
    env.commit();
    let _ = env.w().read_block(f, 0, BS as u64);
    check("block 0 changed after its remmap");
    conn.close().unwrap();
    wc.close().unwrap();
}
