//! Block loading through `ZBigFile::load_block` against plain `read(2)`.
//!
//! A ≥ 512 MiB ZBigFile of 2 MiB ZBlk0 blocks of random bytes is generated
//! once by `python/wcfs_testdata/benchgen.py` into `bench-data/bigfile/`
//! (`$WCFS_PYTHON`, default the repository's `.venv/bin/python`; size with
//! `$WCFS_BENCH_MIB`). With the page cache warm, one pass loads every block
//! through the ZBigFile API (blktab lookup, record load, pickle decode,
//! block assembly), the other reads the same data.fs sequentially with
//! `read(2)` into one reused buffer. Both move the same bytes from the page
//! cache into process memory once, so the ratio is the cost of everything
//! else. Target: ≥ 0.7.
//!
//! Run: `cargo bench -p wcfs-zodb --bench bigfile_load`.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};
use zodb::bigfile::ZBigFile;
use zodb::{Oid, Storage};

const REPS: usize = 7;

fn main() {
    let mib: u64 = std::env::var("WCFS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let info = testkit::bench_data("bigfile", mib, 2 << 20);
    let path = info.path.clone();
    let fsize = std::fs::metadata(&path).unwrap().len();

    let st = zodb::zurl::open(path.to_str().unwrap()).unwrap();
    let at = st.last_tid().unwrap();
    let f = ZBigFile::load(&*st, Oid(info.oid), at).unwrap();
    let size = f.size(&*st, at).unwrap();
    assert_eq!(size.size, info.nblk * info.blksize);
    let nblk = info.nblk;
    let data_bytes = nblk * f.blksize();

    // One pass each to warm the page cache (and the allocator).
    load_all(&f, &*st, nblk, at);
    read_all(&path, f.blksize() as usize);

    let mut t_load = Vec::new();
    let mut t_read = Vec::new();
    for _ in 0..REPS {
        t_load.push(load_all(&f, &*st, nblk, at));
        t_read.push(read_all(&path, f.blksize() as usize));
    }
    let mibs = |bytes: u64, t: Duration| bytes as f64 / (1 << 20) as f64 / t.as_secs_f64();
    t_load.sort();
    t_read.sort();
    let (lb, lm) = (
        mibs(data_bytes, t_load[0]),
        mibs(data_bytes, t_load[REPS / 2]),
    );
    let (rb, rm) = (mibs(fsize, t_read[0]), mibs(fsize, t_read[REPS / 2]));
    println!(
        "ZBigFile {}: {nblk} blocks of {} KiB ({} MiB), data.fs {} MiB, {REPS} reps",
        info.oid,
        f.blksize() >> 10,
        data_bytes >> 20,
        fsize >> 20
    );
    println!("load_block : best {lb:8.0} MiB/s   median {lm:8.0} MiB/s");
    println!("read(2)    : best {rb:8.0} MiB/s   median {rm:8.0} MiB/s");
    println!(
        "ratio load_block/read(2): best {:.2}   median {:.2}   (target ≥ 0.7)",
        lb / rb,
        lm / rm
    );
}

fn load_all(f: &ZBigFile, st: &dyn Storage, nblk: u64, at: zodb::Tid) -> Duration {
    let t0 = Instant::now();
    for blk in 0..nblk {
        let b = f.load_block(st, blk, at).unwrap();
        assert_eq!(b.data.len() as u64, f.blksize());
        std::hint::black_box(&b.data);
    }
    t0.elapsed()
}

fn read_all(path: &Path, bufsize: usize) -> Duration {
    let t0 = Instant::now();
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; bufsize];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        std::hint::black_box(&buf[..n]);
    }
    t0.elapsed()
}
