//! head/ under a concurrent writer: after every commit, once head/at shows
//! it, every block read through head/ (read(2) and mmap) equals Python's
//! data, older `@<tid>/` views keep their old data, and the page cache
//! loses exactly the changed blocks.

mod common;

use common::{resident, Env};
use memmap2::Mmap;
use std::os::unix::fs::MetadataExt;
use zodb::{Oid, Tid};

/// A small deterministic generator (tests must be reproducible).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .unwrap()
        .unwrap() as usize
}

fn map(path: &std::path::Path) -> (std::fs::File, Option<Mmap>) {
    let f = std::fs::File::open(path).unwrap();
    if f.metadata().unwrap().size() == 0 {
        return (f, None);
    }
    // SAFETY: the file is a read-only WCFS file; the mapping is only read,
    // and the test wants to see the kernel change its pages under it.
    let m = unsafe { Mmap::map(&f) }.unwrap();
    (f, Some(m))
}

/// Every block of head/bigfile/<file> through read(2) and through mmap
/// equals Python's latest data.
fn check_head(env: &mut Env, file: Oid, blksize: u64) {
    let size = env.py.size(file, None);
    let w = env.w();
    let m = std::fs::metadata(w.head_file(file)).unwrap();
    assert_eq!(m.size(), size, "size of {file}");
    let (_f, mm) = map(&w.head_file(file));
    let nblk = size.div_ceil(blksize);
    for blk in 0..nblk {
        env.check_block(file, blk, blksize, None);
        let want = env.py.block(file, blk, None);
        let mm = mm.as_ref().unwrap();
        let got = &mm[(blk * blksize) as usize..((blk + 1) * blksize) as usize];
        assert!(got == &want[..], "mmap: file {file} blk #{blk} differs");
    }
    assert!(env.w().read_block(file, nblk, blksize).is_empty());
}

#[test]
fn commits_seen_exactly() {
    const BS: u64 = 256 << 10;
    let mut env = Env::new();
    let a = env.py.new_file(BS);
    let b = env.py.new_file(4096);
    for blk in 0..6 {
        env.py.fill(a, blk, "zblk0", blk as u8 + 1, BS as usize);
    }
    env.py.write(b, 0, "zblk1", b"small");
    let mut tids = vec![env.py.commit()];
    env.mount(&[]);
    check_head(&mut env, a, BS);
    check_head(&mut env, b, 4096);

    let mut rng = Lcg(42);
    for round in 0..25 {
        let nchange = 1 + rng.below(3);
        for _ in 0..nchange {
            let (file, bs) = if rng.below(4) == 0 {
                (b, 4096)
            } else {
                (a, BS)
            };
            let blk = rng.below(9);
            match rng.below(10) {
                0 => env.py.punch(file, blk),
                1 => env.py.truncate(file, 1 + rng.below(6)),
                k => {
                    let kind = if k % 2 == 0 { "zblk0" } else { "zblk1" };
                    let len = 1 + rng.below(bs) as usize;
                    env.py.fill(file, blk, kind, (round * 7 + k) as u8, len);
                }
            }
        }
        let tid = env.commit();
        tids.push(tid);
        check_head(&mut env, a, BS);
        check_head(&mut env, b, 4096);
        // An older view still shows its own tid's data.
        let old = tids[rng.below(tids.len() as u64) as usize];
        let size = env.py.size(a, Some(old));
        for blk in 0..size.div_ceil(BS) {
            env.check_block(a, blk, BS, Some(old));
        }
    }
    // mtime follows the last change seen.
    let w = env.w();
    let m = std::fs::metadata(w.head_file(a)).unwrap();
    let last: Tid = *tids.last().unwrap();
    assert!(m.mtime() as f64 <= last.unix_time() + 1.0);
}

#[test]
fn invalidation_is_per_block() {
    const BS: u64 = 2 << 20;
    const NBLK: u64 = 8;
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for blk in 0..NBLK {
        env.py.fill(f, blk, "zblk0", blk as u8 + 1, BS as usize);
    }
    env.py.commit();
    env.mount(&[]);
    let path = env.w().head_file(f);
    let (_file, mm) = map(&path);
    let mm = mm.unwrap();
    let ps = page_size();
    // Touch every page: all of the file is now in the page cache.
    let mut sum = 0u64;
    for off in (0..mm.len()).step_by(ps) {
        sum += mm[off] as u64;
    }
    assert!(sum > 0);
    assert!(
        resident(&mm).iter().all(|&r| r),
        "not all pages resident after touching"
    );

    for (round, changed) in [3u64, 0, 7].into_iter().enumerate() {
        env.py
            .fill(f, changed, "zblk0", 0xf0 + round as u8, BS as usize);
        env.commit();
        let res = resident(&mm);
        let per_blk = (BS as usize) / ps;
        for blk in 0..NBLK {
            let pages = &res[blk as usize * per_blk..(blk as usize + 1) * per_blk];
            if blk == changed {
                assert!(
                    pages.iter().all(|&r| !r),
                    "changed blk #{blk}: pages still cached"
                );
            } else {
                assert!(
                    pages.iter().all(|&r| r),
                    "unchanged blk #{blk}: pages dropped"
                );
            }
        }
        // The same mapping now shows the new data.
        let blk = &mm[(changed * BS) as usize..((changed + 1) * BS) as usize];
        assert!(blk.iter().all(|&b| b == 0xf0 + round as u8));
        assert!(resident(&mm).iter().all(|&r| r));
    }

    // A size change keeps the cache of unchanged blocks too.
    env.py.fill(f, NBLK, "zblk0", 9, 10);
    env.commit();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.size(), (NBLK + 1) * BS);
    assert!(
        resident(&mm).iter().all(|&r| r),
        "growing the file dropped cached pages"
    );
    env.check_block(f, NBLK, BS, None);
}

/// Blocks smaller than a page: sizes are not page-aligned, and the kernel
/// caches the page holding the end of file with zeros past it. When the
/// file grows into that page — with blocks never read, so never tracked —
/// the daemon must still drop that page, or head/ reads zeros where the
/// database has data. (Found by fs_oracle.)
#[test]
fn growing_into_the_cached_eof_page() {
    let mut env = Env::new();
    let f = env.py.new_file(512);
    env.py.write(f, 0, "zblk0", b"first");
    env.py.commit();
    env.mount(&[]);
    let path = env.w().head_file(f);
    let (_file, mm) = map(&path);
    let got = std::fs::read(&path).unwrap();
    assert_eq!(&got[..5], b"first");
    assert!(mm.as_ref().unwrap()[..5] == *b"first");
    for (blk, data) in [(1u64, &b"second"[..]), (3, &b"fourth"[..])] {
        env.py.write(f, blk, "zblk0", data);
        env.commit();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len() as u64, (blk + 1) * 512);
        let off = (blk * 512) as usize;
        assert_eq!(&got[off..off + data.len()], data, "blk #{blk} via read(2)");
        env.check_block(f, blk, 512, None);
    }
    // Shrinking keeps what is left exact.
    env.py.truncate(f, 2);
    env.commit();
    let got = std::fs::read(&path).unwrap();
    assert_eq!(got.len(), 1024);
    assert_eq!(&got[512..518], b"second");
}
