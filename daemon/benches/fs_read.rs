//! Read throughput of head/bigfile through the mount (harness = false).
//!
//! One ZBigFile of `WCFS_BENCH_MIB` MiB (default 1024) in 2 MiB ZBlk0
//! blocks of random (incompressible) bytes, generated once by
//! `python/wcfs_testdata/benchgen.py` into `bench-data/fs_read/` (again
//! when missing or of another size). Every figure is a ratio of two
//! measurements taken back to back in the same repetition; we print the
//! best and the median over the repetitions, of MiB/s and of ratios.
//!
//! - warm: the file already in the page cache, read with read(2) in 1 MiB
//!   buffers and through mmap, against the same bytes in a /dev/shm file —
//!   what FUSE costs once the cache is filled (target ≥ 0.95 read, ≥ 0.9
//!   mmap);
//! - cold vs zodb: the first read of every block through a freshly started
//!   daemon (data.fs in the page cache) against loading the same blocks
//!   with the zodb crate (`ZBigFile::load_block`) — what serving over FUSE
//!   adds to the loads;
//! - FUSE ceiling: the last blocks of the cold read re-read after dropping
//!   them from the kernel's cache (`POSIX_FADV_DONTNEED`) while the daemon
//!   still holds them in its block cache, against `load_block` of the same
//!   blocks. The daemon then loads nothing: this is what the kernel's FUSE
//!   transport alone costs (reply copied into fresh page-cache pages, then
//!   to the reader), the bound no daemon-side change can pass for the cold
//!   ratio above;
//! - cold vs Python: the same cold read against Python ZODB loading every
//!   block's ZBlk0 through a Connection (the script times itself; target:
//!   wcfsd ≥ 3× faster).
//!
//! Run: `cargo bench -p wcfsd --bench fs_read` (root, /dev/fuse; Python:
//! `$WCFS_PYTHON`, default the repository's `.venv/bin/python`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::read_all;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use zodb::bigfile::ZBigFile;
use zodb::Oid;

const BS: u64 = 2 << 20;
const REPS: usize = 5;
const MIB: f64 = (1 << 20) as f64;

/// Loads every block of the ZBigFile through a ZODB Connection, as a
/// Python client of wendelin.core would, and prints its own MiB/s.
const PY_LOAD: &str = r#"
import os, sys, time
sys.path.insert(0, sys.argv[2])
import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.utils import p64
path, oid = sys.argv[1], int(sys.argv[3], 16)
db = ZODB.DB(FileStorage(path, read_only=True))
conn = db.open()
f = conn.get(p64(oid))
f._p_activate()
t0 = time.perf_counter()
n = 0
for i, (blk, zblk) in enumerate(f.blktab.items()):
    n += len(zblk.loadblkdata(f.blksize))
    zblk._p_deactivate()  # keep memory flat, as a client streaming through
dt = time.perf_counter() - t0
print("%d %.6f" % (n, dt))
"#;

struct Data {
    path: PathBuf,
    oid: Oid,
    nblk: u64,
}

/// The cached database, in the page cache.
fn data(mib: u64) -> Data {
    let d = testkit::bench_data("fs_read", mib, BS);
    // No dirty pages under writeback while we measure, and all of it in
    // the page cache: "cold" is about the daemon, not the disk.
    std::fs::File::open(&d.path).unwrap().sync_all().unwrap();
    read_all(&d.path);
    Data {
        path: d.path,
        oid: Oid(d.oid),
        nblk: d.nblk,
    }
}

/// Reads every byte through a mapping, 8 at a time, as a client computing
/// over the data: (seconds, checksum).
fn mmap_all(path: &Path) -> (f64, u64) {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: read-only mapping of a file nobody changes during the bench.
    let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    let t0 = Instant::now();
    let sum = m
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .fold(0u64, u64::wrapping_add);
    (t0.elapsed().as_secs_f64(), sum)
}

/// Blocks re-read for the FUSE ceiling: well inside the daemon's block
/// cache (16 blocks), so all of them are still there after the cold read.
const HOT_BLOCKS: u64 = 8;
const HOT_REPS: usize = 20;

/// The last `HOT_BLOCKS` blocks, dropped from the kernel cache and re-read
/// with read(2) in 1 MiB buffers, `HOT_REPS` times: seconds.
fn hot_reread(path: &Path, nblk: u64) -> f64 {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let (off, len) = ((nblk - HOT_BLOCKS) * BS, HOT_BLOCKS * BS);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0.0;
    for _ in 0..HOT_REPS {
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe {
            libc::posix_fadvise(
                f.as_raw_fd(),
                off as i64,
                len as i64,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(rc, 0, "posix_fadvise");
        let t0 = Instant::now();
        for o in (off..off + len).step_by(buf.len()) {
            f.read_exact_at(&mut buf, o).unwrap();
        }
        total += t0.elapsed().as_secs_f64();
    }
    total
}

/// `load_block` of the same blocks as `hot_reread`, as often: seconds.
fn zodb_hot(d: &Data) -> f64 {
    let st = zodb::zurl::open(d.path.to_str().unwrap()).unwrap();
    let head = st.last_tid().unwrap();
    let zf = ZBigFile::load(&*st, d.oid, head).unwrap();
    let t0 = Instant::now();
    for _ in 0..HOT_REPS {
        for blk in d.nblk - HOT_BLOCKS..d.nblk {
            assert_eq!(
                zf.load_block(&*st, blk, head).unwrap().data.len() as u64,
                BS
            );
        }
    }
    t0.elapsed().as_secs_f64()
}

/// Loads every block with the zodb crate, from a freshly opened storage
/// (the daemon starts fresh too): seconds.
fn zodb_all(d: &Data) -> f64 {
    let st = zodb::zurl::open(d.path.to_str().unwrap()).unwrap();
    let head = st.last_tid().unwrap();
    let zf = ZBigFile::load(&*st, d.oid, head).unwrap();
    let t0 = Instant::now();
    let mut n = 0;
    for blk in 0..d.nblk {
        n += zf.load_block(&*st, blk, head).unwrap().data.len() as u64;
    }
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(n, d.nblk * BS);
    dt
}

/// Python ZODB loading every block: seconds, as the script measured.
fn python_all(d: &Data, script: &Path) -> f64 {
    let out = Command::new(common::python())
        .arg(script)
        .arg(&d.path)
        .arg(testkit::repo().join("python/wcfs_testdata"))
        .arg(d.oid.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (n, dt) = text
        .trim()
        .split_once(' ')
        .expect("python output: N SECONDS");
    assert_eq!(n.parse::<u64>().unwrap(), d.nblk * BS, "python bytes");
    dt.parse().unwrap()
}

/// Best and median of MiB/s figures and of ratios.
struct Series(Vec<f64>);

impl Series {
    fn best_median(&self) -> (f64, f64) {
        let mut v = self.0.clone();
        v.sort_by(|a, b| b.partial_cmp(a).unwrap());
        (v[0], v[v.len() / 2])
    }
}

fn line(what: &str, ours: &Series, theirs_name: &str, theirs: &Series, ratio: &Series) {
    let (ob, om) = ours.best_median();
    let (tb, tm) = theirs.best_median();
    let (rb, rm) = ratio.best_median();
    println!(
        "  {what:<18} {ob:>7.0} / {om:>7.0} MiB/s   {theirs_name:<16} {tb:>7.0} / {tm:>7.0} MiB/s   \
         ratio {rb:.2} / {rm:.2}"
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches probes with --list
    }
    let mib: u64 = std::env::var("WCFS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let d = data(mib.max(2));
    let total = (d.nblk * BS) as f64 / MIB;
    let zurl = format!("file://{}", d.path.display());
    let tmp = tempfile::Builder::new()
        .prefix("wcfs-bench")
        .tempdir()
        .unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let script = tmp.path().join("load.py");
    std::fs::write(&script, PY_LOAD).unwrap();
    let shm = tempfile::Builder::new()
        .prefix("wcfs-bench")
        .tempfile_in("/dev/shm")
        .unwrap();

    let mibs = |t: f64| total / t;
    let (mut cold, mut direct, mut r_direct) = (vec![], vec![], vec![]);
    let (mut py, mut r_py) = (vec![], vec![]);
    let (mut hot, mut zhot, mut r_hot) = (vec![], vec![], vec![]);
    let (mut warm, mut shm_read, mut r_read) = (vec![], vec![], vec![]);
    let (mut warm_mmap, mut shm_mmap, mut r_mmap) = (vec![], vec![], vec![]);
    for rep in 0..REPS {
        // A fresh daemon: nothing of the file in the kernel or in the
        // daemon, every block read for the first time.
        let w = common::Wcfs::start(&zurl, &mnt, &tmp.path().join("wcfsd.log"), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        let path = w.head_file(d.oid);

        let (t_cold, n, sum) = read_all(&path);
        assert_eq!(n, d.nblk * BS);
        let t_hot = hot_reread(&path, d.nblk);
        let t_zhot = zodb_hot(&d);
        let hot_mib = (HOT_BLOCKS * BS) as f64 / MIB * HOT_REPS as f64;
        hot.push(hot_mib / t_hot);
        zhot.push(hot_mib / t_zhot);
        r_hot.push(t_zhot / t_hot);
        let t_direct = zodb_all(&d);
        let t_py = python_all(&d, &script);
        cold.push(mibs(t_cold));
        direct.push(mibs(t_direct));
        py.push(mibs(t_py));
        r_direct.push(t_direct / t_cold);
        r_py.push(t_py / t_cold);

        if rep == 0 {
            std::fs::write(shm.path(), std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(read_all(shm.path()).2, sum, "same bytes in /dev/shm");
        }
        // Untimed: the first read after the cold one also moves every
        // freshly cached page to the active list; warm is the steady state.
        read_all(&path);
        let (t_warm, _, s1) = read_all(&path);
        let (t_shm, _, s2) = read_all(shm.path());
        assert_eq!(s1, s2);
        let (t_wmap, m1) = mmap_all(&path);
        let (t_smap, m2) = mmap_all(shm.path());
        assert_eq!(m1, m2);
        warm.push(mibs(t_warm));
        shm_read.push(mibs(t_shm));
        r_read.push(t_shm / t_warm);
        warm_mmap.push(mibs(t_wmap));
        shm_mmap.push(mibs(t_smap));
        r_mmap.push(t_smap / t_wmap);
        drop(w);
    }

    println!(
        "fs_read: {total:.0} MiB in {} blocks of 2 MiB (ZBlk0, random bytes), {REPS} reps; \
         best / median; ratio = ours / theirs (higher is better for us)",
        d.nblk
    );
    let s = Series;
    line(
        "warm read(2) 1MiB",
        &s(warm),
        "/dev/shm read",
        &s(shm_read),
        &s(r_read),
    );
    line(
        "warm mmap",
        &s(warm_mmap),
        "/dev/shm mmap",
        &s(shm_mmap),
        &s(r_mmap),
    );
    line(
        "cold read(2) 1MiB",
        &s(cold.clone()),
        "zodb load_block",
        &s(direct),
        &s(r_direct),
    );
    line(
        "FUSE ceiling",
        &s(hot),
        "zodb load_block",
        &s(zhot),
        &s(r_hot),
    );
    line(
        "cold read(2) 1MiB",
        &s(cold),
        "Python ZODB",
        &s(py),
        &s(r_py),
    );
}
