//! What the page cache holds, seen with `mincore` (SPEC §5 "The page cache
//! is precious"):
//!
//! - an access to one block — read(2) of any size, an mmap fault under any
//!   madvise — caches pages of that block only, through `head/` and
//!   `@<tid>/`, in any order; and the block ends up cached whole;
//! - when a commit changes a block cached for a watched head file, its old
//!   data moves into the page cache of `@<blkrev>/bigfile/<oid>`, exact.
//!
//! Blocks a test has checked are locked in memory (`mlock2(MLOCK_ONFAULT)`
//! on the tracking mapping, then touched) so that memory reclaim cannot
//! make a later check see fewer pages than were cached.

mod common;

use common::watch::WatchLink;
use common::Env;
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

const PAGE: u64 = 4096;

/// Number of cached pages of each block of `map`.
fn cached_per_block(map: &Mmap, blksize: u64) -> Vec<u64> {
    let per = (blksize / PAGE) as usize;
    common::resident(map)
        .chunks(per)
        .map(|c| c.iter().filter(|&&r| r).count() as u64)
        .collect()
}

/// A read-only shared mapping of the whole file, pages locked on fault.
fn tracking_map(f: &File) -> Mmap {
    // SAFETY: read-only mapping of a WCFS file, only read by the test.
    let m = unsafe { Mmap::map(f) }.unwrap();
    // SAFETY: plain syscall on the mapping we own.
    let rc = unsafe {
        libc::mlock2(
            m.as_ptr() as *const libc::c_void,
            m.len(),
            libc::MLOCK_ONFAULT,
        )
    };
    assert_eq!(rc, 0, "mlock2: {}", std::io::Error::last_os_error());
    m
}

#[derive(Debug, Clone, Copy)]
enum Advice {
    Normal,
    Sequential,
    Random,
}

/// One way of accessing a block.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// pread(2) of the whole block in chunks of this size.
    Read { chunk: u64, fadv_seq: bool },
    /// pread(2) of one byte at this offset in the block.
    Byte(u64),
    /// One fault of a fresh mapping at this page of the block.
    Fault(u64, Advice),
    /// Every page of the block through a fresh mapping, in order.
    Sweep(Advice),
}

fn random_access(rng: &mut testkit::Rng, blksize: u64) -> Access {
    let npages = blksize / PAGE;
    let adv = match rng.below(3) {
        0 => Advice::Normal,
        1 => Advice::Sequential,
        _ => Advice::Random,
    };
    match rng.below(6) {
        0 => Access::Read {
            chunk: blksize,
            fadv_seq: rng.one_in(2),
        },
        1 => Access::Read {
            chunk: [PAGE, 128 << 10, 1 << 20][rng.below(3) as usize].min(blksize),
            fadv_seq: rng.one_in(2),
        },
        2 => Access::Byte([0, blksize - 1, rng.below(blksize)][rng.below(3) as usize]),
        3 | 4 => Access::Fault(
            [0, npages - 1, rng.below(npages)][rng.below(3) as usize],
            adv,
        ),
        _ => Access::Sweep(adv),
    }
}

/// Does `access` on block `blk` of `path`; returns (offset in block, bytes
/// read) pairs to compare with the oracle.
fn access(path: &Path, blk: u64, blksize: u64, a: Access) -> Vec<(u64, Vec<u8>)> {
    let f = File::open(path).unwrap();
    let base = blk * blksize;
    match a {
        Access::Read { chunk, fadv_seq } => {
            if fadv_seq {
                // SAFETY: plain syscall on a descriptor we own.
                let rc = unsafe {
                    libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL)
                };
                assert_eq!(rc, 0);
            }
            let mut out = vec![0u8; blksize as usize];
            for off in (0..blksize).step_by(chunk as usize) {
                let end = (off + chunk).min(blksize) as usize;
                f.read_exact_at(&mut out[off as usize..end], base + off)
                    .unwrap();
            }
            vec![(0, out)]
        }
        Access::Byte(off) => {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, base + off).unwrap();
            vec![(off, b.to_vec())]
        }
        Access::Fault(_, adv) | Access::Sweep(adv) => {
            // SAFETY: read-only mapping of the block, only read here.
            let m = unsafe {
                MmapOptions::new()
                    .offset(base)
                    .len(blksize as usize)
                    .map(&f)
            }
            .unwrap();
            let advice = match adv {
                Advice::Normal => memmap2::Advice::Normal,
                Advice::Sequential => memmap2::Advice::Sequential,
                Advice::Random => memmap2::Advice::Random,
            };
            m.advise(advice).unwrap();
            match a {
                Access::Fault(page, _) => {
                    let off = page * PAGE;
                    vec![(off, vec![m[off as usize]])]
                }
                _ => vec![(0, m.to_vec())],
            }
        }
    }
}

/// Waits until block `blk` is cached whole (the rest of a block comes
/// shortly after its first page).
fn wait_whole(map: &Mmap, blksize: u64, blk: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = cached_per_block(map, blksize)[blk as usize];
        if c == blksize / PAGE {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: blk #{blk} only {c} of {} pages cached after 10s",
            blksize / PAGE
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Keeps block `blk` in memory: touches every page of it through the
/// locked mapping (all of them are cached: no request reaches the daemon).
fn lock_block(track: &Mmap, blksize: u64, blk: u64) {
    let base = (blk * blksize) as usize;
    let sum: u64 = (0..blksize as usize)
        .step_by(PAGE as usize)
        .map(|o| track[base + o] as u64)
        .sum();
    std::hint::black_box(sum);
}

/// Accesses the blocks of one view of a file in random order and ways,
/// checking after each access which blocks are cached.
fn check_view(
    env: &mut Env,
    path: &Path,
    file: Oid,
    at: Option<Tid>,
    blksize: u64,
    nblk: u64,
    rng: &mut testkit::Rng,
) {
    let f = File::open(path).unwrap();
    let track = tracking_map(&f);
    assert_eq!(
        cached_per_block(&track, blksize),
        vec![0; nblk as usize],
        "{}: cached before any access",
        path.display()
    );
    let mut accessed = vec![false; nblk as usize];
    let want: Vec<Vec<u8>> = (0..nblk).map(|b| env.py.block(file, b, at)).collect();
    for step in 0..3 * nblk {
        // Mostly blocks not accessed yet, sometimes one again.
        let blk = if step < 2 * nblk || rng.one_in(3) {
            rng.below(nblk)
        } else {
            (0..nblk).find(|b| !accessed[*b as usize]).unwrap_or(0)
        };
        let a = random_access(rng, blksize);
        let what = format!("{} step {step}: {a:?} of blk #{blk}", path.display());
        for (off, got) in access(path, blk, blksize, a) {
            let o = off as usize;
            assert!(
                got[..] == want[blk as usize][o..o + got.len()],
                "{what}: data differs from Python's"
            );
        }
        accessed[blk as usize] = true;
        wait_whole(&track, blksize, blk, &what);
        lock_block(&track, blksize, blk);
        let cached = cached_per_block(&track, blksize);
        for b in 0..nblk as usize {
            let full = blksize / PAGE;
            if accessed[b] {
                assert_eq!(
                    cached[b], full,
                    "{what}: accessed blk #{b} not cached whole: {cached:?}"
                );
            } else {
                assert_eq!(
                    cached[b], 0,
                    "{what}: blk #{b} never accessed but cached: {cached:?}"
                );
            }
        }
    }
    // Everything accessed equals Python's data.
    for b in (0..nblk).filter(|b| accessed[*b as usize]) {
        let r = (b * blksize) as usize..((b + 1) * blksize) as usize;
        assert!(
            track[r] == want[b as usize][..],
            "{}: blk #{b} differs",
            path.display()
        );
    }
}

#[test]
fn access_caches_its_block_only() {
    let seed = testkit::seed("access_caches_its_block_only");
    let mut rng = testkit::Rng::new(seed);
    let mut env = Env::new();
    const NBLK: u64 = 8;
    let files: Vec<(Oid, u64)> = [2u64 << 20, 256 << 10]
        .into_iter()
        .map(|bs| {
            let f = env.py.new_file(bs);
            for blk in 0..NBLK {
                let data: Vec<u8> = (0..bs)
                    .map(|i| (i / PAGE + blk * 7 + i % 251) as u8)
                    .collect();
                env.py.write(f, blk, "zblk0", &data);
            }
            (f, bs)
        })
        .collect();
    let at1 = env.py.commit();
    // A second revision: the @at1 view differs from head.
    for &(f, bs) in &files {
        env.py.fill(f, 3, "zblk0", 0xee, bs as usize);
    }
    env.py.commit();
    env.mount(&[]);

    // The mechanism: the mount reads nothing ahead.
    let canon = env.w().mnt.canonicalize().unwrap();
    let m = wcfs_lifecycle::sys::mount_at(&canon)
        .unwrap()
        .expect("mounted");
    let ra = std::fs::read_to_string(format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        m.major, m.minor
    ))
    .unwrap();
    assert_eq!(ra.trim(), "0", "readahead of the mount");

    for &(f, bs) in &files {
        let head = env.w().head_file(f);
        check_view(&mut env, &head, f, None, bs, NBLK, &mut rng);
        let old = env.w().at_file(at1, f);
        check_view(&mut env, &old, f, Some(at1), bs, NBLK, &mut rng);
    }
}

/// Old data of a watched, cached block moves into `@<blkrev>`'s page cache
/// when a commit changes it; unwatched files and uncached blocks do not.
#[test]
fn old_data_moves_to_blkrev() {
    const BS: u64 = 2 << 20;
    const NBLK: u64 = 4;
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for blk in 0..NBLK {
        env.py.fill(f, blk, "zblk0", 0x10 + blk as u8, BS as usize);
    }
    let at1 = env.py.commit();
    env.mount(&[]);

    // Blocks 0..3 read through head (cached, tracked); block 3 is not.
    let head = env.w().head_file(f);
    let hf = File::open(&head).unwrap();
    let htrack = tracking_map(&hf);
    for blk in 0..3 {
        let mut buf = vec![0u8; BS as usize];
        hf.read_exact_at(&mut buf, blk * BS).unwrap();
        wait_whole(&htrack, BS, blk, "head read");
        lock_block(&htrack, BS, blk);
    }
    let wl = WatchLink::open(&env.w().path("head/watch")).unwrap();
    wl.watch(f, at1).unwrap();

    // Blocks 1 and 3 change.
    env.py.fill(f, 1, "zblk0", 0xa1, BS as usize);
    env.py.fill(f, 3, "zblk0", 0xa3, BS as usize);
    let at2 = env.commit();

    // Block 1's old data is in @at1's cache without anyone reading it;
    // nothing else is.
    let old = env.w().at_file(at1, f);
    let of = File::open(&old).unwrap();
    let otrack = tracking_map(&of);
    let cached = cached_per_block(&otrack, BS);
    assert_eq!(cached, vec![0, BS / PAGE, 0, 0], "@at1 after the commit");
    let want = env.py.block(f, 1, Some(at1));
    assert!(
        otrack[BS as usize..2 * BS as usize] == want[..],
        "@at1 blk #1: old data"
    );
    // Head dropped block 1 only; the other cached blocks stay.
    assert_eq!(
        cached_per_block(&htrack, BS),
        vec![BS / PAGE, 0, BS / PAGE, 0]
    );

    // The watcher is pinned to it when head's block 1 is read again.
    let mut buf = vec![0u8; BS as usize];
    hf.read_exact_at(&mut buf, BS).unwrap();
    assert!(buf.iter().all(|&b| b == 0xa1));
    let pins: Vec<_> = wl.pins().iter().map(|p| p.key()).collect();
    assert_eq!(pins, vec![(f, 1, common::watch::Rev::At(at1))]);
    drop(hf);

    // Without watchers nothing moves: block 2 (cached in head, unchanged
    // since at1) changes in a commit after the watch went.
    wl.unwatch(f).unwrap();
    env.py.fill(f, 2, "zblk0", 0xb2, BS as usize);
    env.commit();
    assert_eq!(
        cached_per_block(&otrack, BS),
        vec![0, BS / PAGE, 0, 0],
        "@at1 after a commit with no watcher"
    );
    let _ = at2;
    wl.close().unwrap();
}
