//! wcfsd serves every zurl form upstream's `zstor_2zurl` writes besides
//! `file://` and `zeo://HOST:PORT`: a named storage of a ZEO server
//! (`zeo://HOST:PORT?storage=NAME`), a ZEO server on a Unix socket
//! (`zeo:///PATH`, `…?storage=NAME`) and a DemoStorage
//! (`demo:(BASE)/(DELTA)`). For each, mounted with the zurl as given: the
//! ZBigFile reads exactly as Python's ZODB reads it through the same kind
//! of storage (head/ and an `@<tid>/` view), `.wcfs/zurl` reads back the
//! zurl exactly (what upstream's join compares), and a commit made through
//! Python's storage — for a DemoStorage, to its delta — shows in head/.

mod common;

use common::Env;
use std::path::Path;
use testkit::ZeoServer;
use zodb::{Oid, Tid};

const BLKSIZE: u64 = 64 * 1024;

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wcfs-test")
        .tempdir()
        .unwrap()
}

/// A data.fs with a ZBigFile of a few blocks, written by Python; the
/// file's oid and the commit's tid.
fn make_db(datafs: &Path, seed: u8) -> (Oid, Tid) {
    let mut py = common::Driver::start(datafs);
    let f = py.new_file(BLKSIZE);
    for blk in 0..4 {
        py.fill(
            f,
            blk,
            "zblk0",
            seed.wrapping_add(blk as u8),
            BLKSIZE as usize,
        );
    }
    py.write(f, 5, "zblk1", &vec![seed; 1000]);
    (f, py.commit())
}

/// Every block of `file` through head/ (and as of `old`) equals Python's.
fn check_file(env: &mut Env, file: Oid, old: Option<Tid>) {
    let nblk = env.py.size(file, None).div_ceil(BLKSIZE);
    assert!(nblk >= 4);
    for blk in 0..nblk {
        env.check_block(file, blk, BLKSIZE, None);
        if let Some(at) = old {
            env.check_block(file, blk, BLKSIZE, Some(at));
        }
    }
}

/// Mounts env's zurl; reads; commits through Python and sees it.
fn serve_and_follow(mut env: Env, file: Oid, old: Tid) {
    env.mount(&[]);
    let zurl = std::fs::read_to_string(env.w().path(".wcfs/zurl")).unwrap();
    assert_eq!(zurl, env.zurl, ".wcfs/zurl is the zurl as given");
    check_file(&mut env, file, Some(old));

    env.py.fill(file, 1, "zblk0", 0xee, BLKSIZE as usize);
    env.py.write(file, 7, "zblk1", b"after mount");
    let tid = env.commit();
    assert_eq!(env.w().head(), tid);
    check_file(&mut env, file, Some(old));
    let got = env.w().read_block(file, 1, BLKSIZE);
    assert!(got.iter().all(|&b| b == 0xee), "the commit shows in head/");
}

#[test]
fn zeo_named_storage() {
    let dir = tmpdir();
    let (a, b) = (dir.path().join("a.fs"), dir.path().join("b.fs"));
    make_db(&a, 1);
    let (file, old) = make_db(&b, 2);
    let srv = ZeoServer::start_config(&[("1", &a), ("second", &b)], None);
    let zurl = srv.zurl_of("second");
    assert!(zurl.ends_with("?storage=second"));
    serve_and_follow(Env::new_zurl(dir, &zurl, Some(srv)), file, old);
}

#[test]
fn zeo_unix_socket() {
    for name in ["1", "other"] {
        let dir = tmpdir();
        let (a, b) = (dir.path().join("a.fs"), dir.path().join("b.fs"));
        let (fa, olda) = make_db(&a, 3);
        let (fb, oldb) = make_db(&b, 4);
        let sock = dir.path().join("zeo.sock");
        let srv = ZeoServer::start_config(&[("1", &a), ("other", &b)], Some(&sock));
        let zurl = srv.zurl_of(name);
        assert!(zurl.starts_with("zeo:///"), "{zurl}");
        let (file, old) = if name == "1" { (fa, olda) } else { (fb, oldb) };
        serve_and_follow(Env::new_zurl(dir, &zurl, Some(srv)), file, old);
    }
}

#[test]
fn demo_storage() {
    let dir = tmpdir();
    // Parentheses and a space in the parts' paths: the zurl holds them
    // unescaped, as upstream writes it.
    let bdir = dir.path().join("base (ro)");
    std::fs::create_dir_all(&bdir).unwrap();
    let base = bdir.join("data.fs");
    let delta = dir.path().join("delta.fs");
    let (file, base_tid) = make_db(&base, 5);
    let zurl = format!(
        "demo:(file://{})/(file://{})",
        base.display(),
        delta.display()
    );
    let mut env = Env::new_zurl(dir, &zurl, None);
    // A change in the delta before mounting: the file mixes both.
    env.py.fill(file, 2, "zblk0", 0x77, BLKSIZE as usize);
    let t = env.commit();
    assert!(t > base_tid);
    serve_and_follow(env, file, base_tid);
}

/// A commit to a DemoStorage's base while it is served: EIO mode, then
/// exit — never a file mixing the new base with a delta made without it.
#[test]
fn demo_base_changed_eio_then_exit() {
    let dir = tmpdir();
    let base = dir.path().join("base.fs");
    let delta = dir.path().join("delta.fs");
    let (file, _) = make_db(&base, 6);
    let zurl = format!(
        "demo:(file://{})/(file://{})",
        base.display(),
        delta.display()
    );
    let mut env = Env::new_zurl(dir, &zurl, None);
    env.py.fill(file, 2, "zblk0", 0x42, BLKSIZE as usize);
    env.commit();
    env.mount(&[]);
    check_file(&mut env, file, None);
    let path = env.w().head_file(file);

    // Someone writes to the base.
    let mut py = common::Driver::start(&base);
    py.fill(file, 0, "zblk0", 0x99, BLKSIZE as usize);
    py.commit();
    drop(py);

    let st = env
        .w_mut()
        .wait_exit(std::time::Duration::from_secs(30))
        .unwrap_or_else(|| panic!("wcfsd did not exit"));
    assert!(!st.success());
    let log = env.w().log();
    assert!(log.contains("base changed"), "{log}");
    assert!(log.contains("switching filesystem to EIO mode"), "{log}");
    match common::Wcfs::pread_block(&path, 0, BLKSIZE) {
        Err(e) => assert!(
            matches!(common::errno(&e), libc::EIO | libc::ENOTCONN),
            "{e}"
        ),
        Ok(d) => panic!("read after the base changed returned {} bytes", d.len()),
    }
}
