//! What keeping the old data of a changed block in memory buys a pinned
//! client (harness = false): its first read of the block from
//! `@<blkrev>/bigfile/<oid>` after the commit.
//!
//! One file of 2·N blocks of 2 MiB, watched by a link at `h0`, every block
//! read through head/. Before each commit the first N blocks stay in the
//! kernel's cache of head/ and the other N are dropped from it
//! (`POSIX_FADV_DONTNEED`); the commit changes all 2·N. The daemon keeps
//! the old data of the first N in `@h0`'s page cache — the others it
//! cannot (the kernel no longer holds them) and a client pinned there
//! loads them from the storage: the baseline, measured in the same run,
//! block for block interleaved. We time one 2 MiB pread of `@h0` per block
//! (what a client pinned there does on its first access), and print the
//! median and p90 of each and their ratio. Then `@h0`'s cache is dropped
//! and head re-read for the next round.
//!
//! Run: `cargo bench -p wcfsd --bench keep_old` (root, /dev/fuse, Python).

#[path = "../tests/common/mod.rs"]
mod common;

use common::watch::WatchLink;
use common::Env;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const BS: u64 = 2 << 20;
const N: u64 = 8;
const ROUNDS: usize = 8;

fn drop_cache(f: &File, off: u64, len: u64) {
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
}

fn read_block(f: &File, blk: u64) -> (Duration, Vec<u8>) {
    let mut buf = vec![0u8; BS as usize];
    let t0 = Instant::now();
    f.read_exact_at(&mut buf, blk * BS).unwrap();
    (t0.elapsed(), buf)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches probes with --list
    }
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for b in 0..2 * N {
        env.py.fill(f, b, "zblk0", b as u8, BS as usize);
    }
    let h0 = env.py.commit();
    env.mount(&[]);
    let head = File::open(env.w().head_file(f)).unwrap();
    let wl = WatchLink::open(&env.w().path("head/watch")).unwrap();
    for b in 0..2 * N {
        read_block(&head, b);
    }

    // The byte every block `blk` holds after round `r` (before round 0: blk).
    let byte = |r: Option<usize>, blk: u64| match r {
        None => blk as u8,
        Some(r) => (r as u8 + 1) << 4 | blk as u8,
    };
    let (mut kept, mut loaded) = (Vec::new(), Vec::new());
    let mut at = h0;
    for round in 0..ROUNDS {
        // The client moves to the current head; the commit then changes
        // every block, whose revision as of `at` is `at` itself.
        wl.watch(f, at).unwrap();
        // Head caches blocks 0..N; N..2N are dropped from the kernel.
        for b in 0..N {
            read_block(&head, b);
        }
        drop_cache(&head, N * BS, N * BS);
        for b in 0..2 * N {
            env.py
                .fill(f, b, "zblk0", byte(Some(round), b), BS as usize);
        }
        let next = env.commit();
        let old = File::open(env.w().at_file(at, f)).unwrap();
        let prev = round.checked_sub(1);
        for i in 0..N {
            for (blk, out) in [(i, &mut kept), (N + i, &mut loaded)] {
                let (dt, data) = read_block(&old, blk);
                assert!(
                    data.iter().all(|&x| x == byte(prev, blk)),
                    "@{at} blk #{blk}"
                );
                out.push(dt);
            }
        }
        drop_cache(&old, 0, 2 * N * BS);
        at = next;
    }
    let (km, kp) = (pct(&mut kept, 0.5), pct(&mut kept, 0.9));
    let (lm, lp) = (pct(&mut loaded, 0.5), pct(&mut loaded, 0.9));
    println!(
        "keep_old: first 2 MiB read of @<blkrev> by a pinned client, {ROUNDS} rounds x {N} blocks"
    );
    println!(
        "  old data kept in memory   median {:>10}  p90 {:>10}",
        ms(km),
        ms(kp)
    );
    println!(
        "  loaded from the storage   median {:>10}  p90 {:>10}",
        ms(lm),
        ms(lp)
    );
    println!(
        "  ratio (loaded / kept)     median {:.1}x",
        lm.as_secs_f64() / km.as_secs_f64()
    );
    wl.close().unwrap();
}
