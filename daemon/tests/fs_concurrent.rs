//! Many threads read the same cold 2 MiB blocks at once, through head/ and
//! through `@<tid>/`, with read(2) and through mmap: every result equals
//! Python's data.
//!
//! Each round commits new data to every block, so that head/ is cold again
//! (the kernel dropped the changed blocks) and the view of the previous
//! head — never read before — is cold too. All threads start together on
//! the same block, each at a different offset inside it, so the daemon gets
//! overlapping requests for one block from several workers at once.
//!
//! The daemon exposes no counter of block loads (`.wcfs/stats` has none,
//! and loads are not logged), so "each block loaded once" (single flight,
//! daemon/src/fs/cache.rs, unit-tested there) is not checked here: only
//! correctness is.

mod common;

use common::Env;
use memmap2::Mmap;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Barrier};
use zodb::{Oid, Tid};

const BS: u64 = 2 << 20;
const NBLK: u64 = 4;
const NTHREAD: usize = 8;
/// Pieces a thread reads a block in (read(2)) — 128 KiB each.
const PIECE: u64 = 128 << 10;

/// Distinct, position-dependent data for block `blk` in round `round`.
fn data(round: u64, blk: u64) -> Vec<u8> {
    let mut x = round
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(blk + 1)
        | 1;
    let mut v = Vec::with_capacity(BS as usize);
    while (v.len() as u64) < BS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(BS as usize);
    v
}

#[derive(Clone, Copy, Debug)]
enum How {
    HeadRead,
    HeadMmap,
    AtRead,
    AtMmap,
}

/// Thread `i` reads every block of `path` (all threads the same block at
/// the same time), starting at a different piece of it; returns the blocks.
fn reader(i: usize, how: How, path: std::path::PathBuf, start: Arc<Barrier>) -> Vec<Vec<u8>> {
    let fd = std::fs::File::open(&path).unwrap();
    let map = match how {
        // SAFETY: read-only mapping of a WCFS file of NBLK*BS bytes that
        // does not change size during the round; only read.
        How::HeadMmap | How::AtMmap => Some(unsafe { Mmap::map(&fd) }.unwrap()),
        _ => None,
    };
    let npiece = BS / PIECE;
    let mut out = vec![vec![0u8; BS as usize]; NBLK as usize];
    start.wait();
    for blk in 0..NBLK {
        let buf = &mut out[blk as usize];
        for k in 0..npiece {
            let p = (k + i as u64 * 3) % npiece;
            let (a, b) = ((p * PIECE) as usize, ((p + 1) * PIECE) as usize);
            match &map {
                Some(m) => {
                    let off = (blk * BS) as usize;
                    buf[a..b].copy_from_slice(&m[off + a..off + b]);
                }
                None => fd
                    .read_exact_at(&mut buf[a..b], blk * BS + a as u64)
                    .unwrap(),
            }
        }
    }
    out
}

fn check(how: How, i: usize, got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    for (blk, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let off = g.iter().zip(w).position(|(a, b)| a != b).unwrap();
            panic!("{what}: thread {i} ({how:?}) blk #{blk} differs at offset {off}");
        }
    }
}

#[test]
fn many_threads_read_cold_blocks() {
    let mut env = Env::new();
    let f: Oid = env.py.new_file(BS);
    for blk in 0..NBLK {
        env.py.write(f, blk, "zblk0", &data(0, blk));
    }
    let mut prev: Tid = env.py.commit();
    env.mount(&[]);
    for round in 1..=4u64 {
        // New data everywhere: head/ is cold again, @prev/ was never read.
        for blk in 0..NBLK {
            let kind = if (round + blk) % 2 == 0 {
                "zblk0"
            } else {
                "zblk1"
            };
            env.py.write(f, blk, kind, &data(round, blk));
        }
        let head = env.commit();
        // What Python says, for head and for the previous head.
        let want_head: Vec<Vec<u8>> = (0..NBLK).map(|b| env.py.block(f, b, Some(head))).collect();
        let want_prev: Vec<Vec<u8>> = (0..NBLK).map(|b| env.py.block(f, b, Some(prev))).collect();
        assert_eq!(want_head[0], data(round, 0), "driver sanity");

        let start = Arc::new(Barrier::new(NTHREAD));
        let threads: Vec<_> = (0..NTHREAD)
            .map(|i| {
                let how = [How::HeadRead, How::AtRead, How::HeadMmap, How::AtMmap][i % 4];
                let path = match how {
                    How::HeadRead | How::HeadMmap => env.w().head_file(f),
                    How::AtRead | How::AtMmap => env.w().at_file(prev, f),
                };
                let start = start.clone();
                (how, std::thread::spawn(move || reader(i, how, path, start)))
            })
            .collect();
        for (i, (how, t)) in threads.into_iter().enumerate() {
            let got = t.join().expect("reader thread");
            let want = match how {
                How::HeadRead | How::HeadMmap => &want_head,
                How::AtRead | How::AtMmap => &want_prev,
            };
            check(how, i, &got, want, &format!("round {round}"));
        }
        // Nothing changed under us.
        assert_eq!(env.w().head(), head);
        prev = head;
    }
}
