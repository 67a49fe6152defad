//! The filesystem tree of SPEC §5 on a real mount, and the CLI of §4:
//! layout, attributes, errno cases, EOF and holes, `@<tid>` views against
//! Python's view at that tid, stats; CLI errors and clean unmount.

mod common;

use common::{errno, Env, Wcfs};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use zodb::Tid;

const BS: u64 = 2 << 20;

/// Microseconds since the epoch a tid encodes (what mtime must show).
fn tid_us(t: Tid) -> i64 {
    (t.unix_time() * 1e6).round() as i64
}

fn mtime_us(m: &std::fs::Metadata) -> i64 {
    m.mtime() * 1_000_000 + m.mtime_nsec() / 1000
}

#[test]
fn layout_attrs_errno_and_views() {
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    let small = env.py.new_file(4096);
    env.py.fill(f, 0, "zblk0", 1, BS as usize);
    env.py.fill(f, 2, "zblk1", 3, 1000); // blk 1: hole; blk 2 short
    env.py.write(small, 0, "zblk0", b"hello\n");
    let t1 = env.py.commit();
    env.py.fill(f, 1, "zblk0", 0xaa, 4096); // hole -> data
    env.py.fill(f, 3, "zblk0", 4, BS as usize); // grows
    let t2 = env.py.commit();

    env.mount(&[]);
    let w = env.w();
    assert_eq!(w.head(), t2);

    // Layout.
    let names = |p: &str| {
        let mut v: Vec<String> = std::fs::read_dir(w.path(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(""), [".wcfs", "head"]);
    assert_eq!(names("head"), ["at", "bigfile", "watch"]);
    assert_eq!(names(".wcfs"), ["pintimeout", "stats", "zurl"]);
    assert_eq!(
        std::fs::read_to_string(w.path(".wcfs/zurl")).unwrap(),
        env.zurl
    );
    assert_eq!(
        std::fs::read_to_string(w.path(".wcfs/pintimeout")).unwrap(),
        "30.0"
    );
    assert_eq!(
        std::fs::read_to_string(w.path("head/at")).unwrap(),
        t2.to_string()
    );
    // head/watch (SPEC §6): a file every client may open read-write.
    let m = std::fs::metadata(w.path("head/watch")).unwrap();
    assert!(m.is_file());
    assert_eq!(m.mode() & 0o7777, 0o666);
    assert_eq!(
        errno(&std::fs::metadata(w.path(".wcfs/debug")).unwrap_err()),
        libc::ENOENT
    );

    // Attributes.
    let m = std::fs::metadata(w.head_file(f)).unwrap();
    assert!(m.is_file());
    assert_eq!(m.mode() & 0o7777, 0o444);
    assert_eq!(m.size(), 4 * BS);
    assert_eq!(m.blksize(), BS);
    // SPEC §5: at first the ZBigFile object's own serial (blktab and ZBlks
    // are objects of their own: t2 did not touch the ZBigFile).
    assert_eq!(mtime_us(&m), tid_us(t1), "mtime = ZBigFile serial at first");
    let m = std::fs::metadata(w.head_file(small)).unwrap();
    assert_eq!((m.size(), m.blksize()), (4096, 4096));
    assert_eq!(mtime_us(&m), tid_us(t1), "mtime = ZBigFile serial at first");
    let m = std::fs::metadata(w.path("head")).unwrap();
    assert!(m.is_dir());
    assert_eq!(mtime_us(&m), tid_us(t2));

    // errno: not an oid, not a ZBigFile, no such object, bad tid, files as dirs.
    for bad in [
        "zz",
        "1",
        "000000000000000g",
        "00000000000000001",
        "0000000000000000",
        "00000000000000ff",
    ] {
        let e = std::fs::metadata(w.path(&format!("head/bigfile/{bad}"))).unwrap_err();
        assert_eq!(errno(&e), libc::EINVAL, "head/bigfile/{bad}");
        let e = std::fs::metadata(w.path(&format!("@{t1}/bigfile/{bad}"))).unwrap_err();
        assert_eq!(errno(&e), libc::EINVAL, "@{t1}/bigfile/{bad}");
    }
    for bad in ["@zz", "@1", "@0000000000000000x"] {
        assert_eq!(
            errno(&std::fs::metadata(w.path(bad)).unwrap_err()),
            libc::EINVAL,
            "{bad}"
        );
    }
    assert_eq!(
        errno(&std::fs::metadata(w.path("nope")).unwrap_err()),
        libc::ENOENT
    );
    let e = std::fs::metadata(w.path(&format!("head/bigfile/{f}/x"))).unwrap_err();
    assert_eq!(errno(&e), libc::ENOTDIR);
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(w.head_file(f))
        .unwrap_err();
    assert!(
        matches!(errno(&e), libc::EPERM | libc::EACCES | libc::EROFS),
        "{e}"
    );

    // Data, holes, EOF.
    for blk in 0..4 {
        env.check_block(f, blk, BS, None);
    }
    let w = env.w();
    let b2 = w.read_block(f, 2, BS);
    assert!(b2[..1000].iter().all(|&b| b == 3) && b2[1000..].iter().all(|&b| b == 0));
    assert!(
        w.read_block(f, 4, BS).is_empty(),
        "read past EOF gives 0 bytes"
    );
    assert!(Wcfs::pread_block(&w.head_file(f), 1 << 40, 4096)
        .unwrap()
        .is_empty());
    let whole = std::fs::read(w.head_file(f)).unwrap();
    assert_eq!(whole.len() as u64, 4 * BS);
    assert_eq!(std::fs::read(w.head_file(small)).unwrap()[..6], *b"hello\n");

    // @t1: the file as of t1 — blk 1 a hole, 3 blocks — and never changing.
    let m = std::fs::metadata(w.at_file(t1, f)).unwrap();
    assert_eq!(
        (m.size(), m.blksize(), m.mode() & 0o777),
        (3 * BS, BS, 0o444)
    );
    assert_eq!(mtime_us(&m), tid_us(t1));
    assert_eq!(
        mtime_us(&std::fs::metadata(w.path(&format!("@{t1}"))).unwrap()),
        tid_us(t1)
    );
    for blk in 0..4 {
        env.check_block(f, blk, BS, Some(t1));
        env.check_block(f, blk, BS, Some(t2));
    }
    let w = env.w();
    assert!(w.read_block_at(t1, f, 1, BS).iter().all(|&b| b == 0));
    // Before the file existed: not a ZBigFile then.
    let before = Tid(t1.0 - 1);
    let e = std::fs::metadata(w.at_file(before, f)).unwrap_err();
    assert_eq!(errno(&e), libc::EINVAL);

    // Stats.
    let stats = std::fs::read_to_string(w.path(".wcfs/stats")).unwrap();
    let stat = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}\t: ")))
            .unwrap_or_else(|| panic!("{name} not in stats:\n{stats}"))
            .parse()
            .unwrap()
    };
    assert_eq!(stat("BigFile"), 2);
    assert!(stat("RevHead") >= 1, "{stats}");
    for name in [
        "ZHeadLink",
        "WatchLink",
        "Watch",
        "PinnedBlk",
        "pin",
        "pinkill",
    ] {
        assert_eq!(stat(name), 0);
    }
    // /dev/fuse only: FUSE over io_uring is asked for with -uring.
    assert_eq!(stat("FuseRingEntry"), 0, "{stats}");
    assert_eq!(stats.lines().count(), 9);
}

#[test]
fn future_tid_waits_then_einval() {
    let mut env = Env::new();
    env.py.new_file(4096);
    let t = env.py.commit();
    env.mount(&[]);
    let w = env.w();
    let t0 = std::time::Instant::now();
    let e = std::fs::metadata(w.path(&format!("@{}", Tid(t.0 + (1 << 32))))).unwrap_err();
    assert_eq!(errno(&e), libc::EINVAL);
    assert!(
        t0.elapsed() >= Duration::from_secs(5),
        "waited for head first"
    );
}

#[test]
fn future_tid_served_once_head_reaches_it() {
    let mut env = Env::new();
    let f = env.py.new_file(4096);
    env.py.write(f, 0, "zblk0", b"one");
    env.py.commit();
    env.mount(&[]);
    // Look up a tid a little ahead of head, then commit: the lookup waits
    // for head and then succeeds.
    env.py.write(f, 0, "zblk0", b"two");
    let path = env.w().mnt.clone();
    let ahead = Tid(env.w().head().0 + 1);
    let h = std::thread::spawn(move || std::fs::metadata(path.join(format!("@{ahead}"))));
    std::thread::sleep(Duration::from_millis(200));
    let t = env.commit();
    assert!(t >= ahead);
    h.join().unwrap().expect("@<tid> after head reached it");
}

#[test]
fn debug_zhead_and_tree_bounded() {
    let mut env = Env::new();
    let f = env.py.new_file(4096);
    env.py.write(f, 0, "zblk0", b"x");
    let t0 = env.py.commit();
    env.mount(&["-debug"]);
    let w = env.w();
    assert!(w.path(".wcfs/debug/zhead").exists());
    let mut zh = std::fs::File::open(w.path(".wcfs/debug/zhead")).unwrap();
    let mut tids = vec![];
    for i in 0..3u8 {
        env.py.write(f, 0, "zblk0", &[i]);
        tids.push(env.py.commit());
    }
    let mut got = String::new();
    while got.lines().count() < 3 {
        let mut buf = [0u8; 64];
        use std::io::Read;
        let n = zh.read(&mut buf).unwrap();
        assert!(n > 0);
        got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    let want: String = tids.iter().map(|t| format!("{t}\n")).collect();
    assert_eq!(got, want);
    let w = env.w();
    let stats = std::fs::read_to_string(w.path(".wcfs/stats")).unwrap();
    assert!(stats.contains("ZHeadLink\t: 1\n"), "{stats}");
    drop(zh);

    // @<tid> dirs come and go with the kernel's dentries.
    for t in [t0].iter().chain(&tids) {
        std::fs::metadata(w.at_file(*t, f)).unwrap();
    }
    let stats = std::fs::read_to_string(w.path(".wcfs/stats")).unwrap();
    assert!(stats.contains("RevHead\t: 4\n"), "{stats}");
    // Drop the kernel's dentries: the daemon must then forget the views.
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = std::fs::read_to_string(w.path(".wcfs/stats")).unwrap();
        if stats.contains("RevHead\t: 0\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "views not released:\n{stats}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cli_errors() {
    let env = Env::new();
    let dir = env.dir.path();
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::wcfsd_bin())
            .args(args)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let m = mnt.to_str().unwrap();
    let (st, err) = run(&["zzz://x", m]);
    assert!(!st.success() && err.contains("zzz"), "{err}");
    // No ZEO server there: the connection error, and no mount.
    let (st, err) = run(&["zeo://127.0.0.1:1", m]);
    assert!(
        !st.success() && err.contains("zeo://127.0.0.1:1") && err.contains("connect"),
        "{err}"
    );
    let missing = dir.join("nope/data.fs");
    let (st, err) = run(&[missing.to_str().unwrap(), m]);
    assert!(!st.success() && err.contains("nope"), "{err}");
    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    let (st, err) = run(&[&env.zurl, file.to_str().unwrap()]);
    assert!(!st.success() && err.contains("not a directory"), "{err}");
    let (st, err) = run(&[&env.zurl, dir.join("nodir").to_str().unwrap()]);
    assert!(!st.success() && err.contains("nodir"), "{err}");
    let (st, err) = run(&["-pintimeout", "3", &env.zurl, m]);
    assert_eq!(st.code(), Some(2), "{err}");
    let (st, err) = run(&["-bogus", &env.zurl, m]);
    assert_eq!(st.code(), Some(2), "{err}");
    let (st, out) = run(&["--help"]);
    assert!(st.success(), "{out}");
    assert!(!common::is_mounted(&mnt));
}

#[test]
fn busy_mountpoint_and_sigterm() {
    let mut env = Env::new();
    env.py.new_file(4096);
    env.py.commit();
    env.mount(&["-v", "1", "--logtostderr", "-pintimeout=1m30s"]);
    let mnt = env.w().mnt.clone();
    assert_eq!(
        std::fs::read_to_string(mnt.join(".wcfs/pintimeout")).unwrap(),
        "90.0"
    );
    // Mount source and type, as upstream tooling looks for them.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == mnt.to_str())
        .expect("mounted");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        (fields[0], fields[2]),
        (env.zurl.as_str(), "fuse.wcfs"),
        "{line}"
    );
    // The daemon keeps /dev/fuse open itself.
    let pid = env.w().pid().unwrap();
    let has_dev_fuse = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .any(|e| {
            std::fs::read_link(e.unwrap().path())
                .is_ok_and(|p| p == std::path::Path::new("/dev/fuse"))
        });
    assert!(has_dev_fuse);

    // A second daemon on the same mountpoint is refused.
    let out = std::process::Command::new(common::wcfsd_bin())
        .arg(&env.zurl)
        .arg(&mnt)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("busy"), "{err}");

    // SIGTERM: clean unmount and exit 0.
    let st = env
        .w_mut()
        .signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(st.success(), "{st}: {}", env.w().log());
    assert!(!common::is_mounted(&mnt), "still mounted after SIGTERM");
    assert!(env.w().log().contains("SIGTERM"));
}
