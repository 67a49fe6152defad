//! Read throughput of head/bigfile through the mount (harness = false).
//!
//! - warm: a file already in the page cache, read with read(2) in 1 MiB
//!   buffers and through mmap, against the same bytes in a /dev/shm file —
//!   the ratio says what FUSE costs once the cache is filled (ideally ≈ 1);
//! - cold: the first read (every block loaded from ZODB by the daemon)
//!   against loading the same blocks directly with the zodb crate — the
//!   ratio says what serving over FUSE adds to the loads themselves.
//!
//! Size: `WCFS_BENCH_MIB` (default 1024) of 2 MiB blocks written by Python.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::time::Instant;
use zodb::bigfile::ZBigFile;

const BS: u64 = 2 << 20;

fn read_all(path: &std::path::Path) -> (f64, u64) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (t0, mut sum) = (Instant::now(), 0u64);
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sum = sum.wrapping_add(
            buf[..n]
                .iter()
                .step_by(4096)
                .map(|&b| b as u64)
                .sum::<u64>(),
        );
    }
    (t0.elapsed().as_secs_f64(), sum)
}

fn mmap_all(path: &std::path::Path) -> (f64, u64) {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: read-only mapping of a file nobody writes during the bench.
    let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    let t0 = Instant::now();
    // Read every byte (8 at a time), as a client computing over the data.
    let sum = m
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .fold(0u64, u64::wrapping_add);
    (t0.elapsed().as_secs_f64(), sum)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches probes with --list
    }
    let mib: u64 = std::env::var("WCFS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let nblk = (mib << 20) / BS;
    let mut env = common::Env::new();
    let f = env.py.new_file(BS);
    for blk in 0..nblk {
        env.py
            .fill(f, blk, "zblk0", 1 + (blk % 250) as u8, BS as usize);
        if blk % 64 == 63 {
            env.py.commit();
        }
    }
    let head = env.py.commit();
    env.mount(&[]);
    let path = env.w().head_file(f);
    let gib = (nblk * BS) as f64 / (1u64 << 30) as f64;
    let rate = |t: f64| format!("{:.2} GiB/s", gib / t);

    // Cold: through FUSE vs the zodb crate directly.
    let (cold, _) = read_all(&path);
    let st = zodb::zurl::open(&env.zurl).unwrap();
    let zf = ZBigFile::load(&*st, f, head).unwrap();
    let t0 = Instant::now();
    let mut n = 0;
    for blk in 0..nblk {
        n += zf.load_block(&*st, blk, head).unwrap().data.len();
    }
    let direct = t0.elapsed().as_secs_f64();
    assert_eq!(n as u64, nblk * BS);

    // Warm: page cache through FUSE vs tmpfs.
    let (warm, s1) = read_all(&path);
    let (warm_mmap, m1) = mmap_all(&path);
    let shm = tempfile::Builder::new()
        .prefix("wcfs-bench")
        .tempfile_in("/dev/shm")
        .unwrap();
    std::fs::write(shm.path(), std::fs::read(&path).unwrap()).unwrap();
    let (shm_read, s2) = read_all(shm.path());
    let (shm_mmap, m2) = mmap_all(shm.path());
    assert_eq!((s1, m1), (s2, m2), "same bytes");

    println!("fs_read: {mib} MiB in {nblk} blocks of 2 MiB");
    println!(
        "  cold read(2) 1 MiB : {:>8.1} ms {:>12}   zodb load_block: {:>8.1} ms {:>12}   ratio {:.2}",
        cold * 1e3,
        rate(cold),
        direct * 1e3,
        rate(direct),
        cold / direct
    );
    println!(
        "  warm read(2) 1 MiB : {:>8.1} ms {:>12}   /dev/shm:        {:>8.1} ms {:>12}   ratio {:.2}",
        warm * 1e3,
        rate(warm),
        shm_read * 1e3,
        rate(shm_read),
        warm / shm_read
    );
    println!(
        "  warm mmap          : {:>8.1} ms {:>12}   /dev/shm:        {:>8.1} ms {:>12}   ratio {:.2}",
        warm_mmap * 1e3,
        rate(warm_mmap),
        shm_mmap * 1e3,
        rate(shm_mmap),
        warm_mmap / shm_mmap
    );
}
