//! The ZBigFile object itself changes — its blktab is replaced by a new
//! LOBTree holding different data, its blksize changes — while the file is
//! open and its pages are cached (mmap, touched). SPEC §5 allows either
//! invalidating the whole file correctly or switching to EIO mode; wcfsd
//! invalidates the whole file. After each such commit head/ shows exactly
//! Python's new content, size and st_blksize (through read(2) and through
//! the mapping made before the change), and `@<old tid>/` the old content.

mod common;

use common::Env;
use memmap2::{Mmap, MmapOptions};
use std::os::unix::fs::MetadataExt;
use testkit::sha1_hex;
use zodb::{Oid, Tid};

/// Mapping length: more than the file ever gets; only [0, size) is touched.
const MAPLEN: usize = 1 << 20;

fn touch_all(map: &Mmap, size: usize) -> u64 {
    map[..size].iter().step_by(4096).map(|&b| b as u64).sum()
}

/// `got` vs Python's content of `file` at `at` (None: latest).
fn same(env: &mut Env, file: Oid, at: Option<Tid>, how: &str, got: &[u8], bs: u64) {
    let (size, sha) = env.py.sha(file, at);
    if got.len() as u64 == size && sha1_hex(got) == sha {
        return;
    }
    let want = env.py.content(file, at);
    let bs = bs as usize;
    let blk = (0..got.len().max(want.len()).div_ceil(bs))
        .find(|b| {
            let g = &got[(b * bs).min(got.len())..((b + 1) * bs).min(got.len())];
            let w = &want[(b * bs).min(want.len())..((b + 1) * bs).min(want.len())];
            g != w
        })
        .unwrap_or(usize::MAX);
    panic!(
        "{file} at {at:?} via {how}: first differing blk #{blk} (blksize {bs}); \
         got {} bytes, want {}",
        got.len(),
        want.len()
    );
}

/// head/ of `file` — stat, read(2), the long-lived mapping — vs Python.
fn check_head(env: &mut Env, file: Oid, map: &Mmap, what: &str) {
    let (size, _) = env.py.sha(file, None);
    let bs = blksize(env, file, None);
    let path = env.w().head_file(file);
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (m.size(), m.blksize()),
        (size, bs),
        "{what}: size, st_blksize"
    );
    let got = std::fs::read(&path).unwrap();
    same(env, file, None, &format!("{what}: head read(2)"), &got, bs);
    assert!(size as usize <= MAPLEN);
    let got = map[..size as usize].to_vec();
    same(env, file, None, &format!("{what}: head mmap"), &got, bs);
}

/// `@<at>/` of `file` vs Python at `at`.
fn check_at(env: &mut Env, file: Oid, at: Tid, what: &str) {
    let (size, _) = env.py.sha(file, Some(at));
    let bs = blksize(env, file, Some(at));
    let path = env.w().at_file(at, file);
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (m.size(), m.blksize()),
        (size, bs),
        "{what}: @{at} size, st_blksize"
    );
    let got = std::fs::read(&path).unwrap();
    same(
        env,
        file,
        Some(at),
        &format!("{what}: @{at} read(2)"),
        &got,
        bs,
    );
}

/// Python's blksize of `file` at `at`: block 0 is blksize bytes long.
fn blksize(env: &mut Env, file: Oid, at: Option<Tid>) -> u64 {
    env.py.block(file, 0, at).len() as u64
}

#[test]
fn blktab_replaced_and_blksize_changed() {
    const BS: u64 = 4096;
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    let g = env.py.new_file(BS);
    for blk in 0..8 {
        env.py.fill(f, blk, "zblk0", 1 + blk as u8, BS as usize);
    }
    env.py.write(f, 9, "zblk1", b"tail of f");
    env.py.fill(g, 0, "zblk0", 0x77, 100);
    let t1 = env.py.commit();
    env.mount(&[]);

    let open_map = |env: &Env, file: Oid| {
        let fd = std::fs::File::open(env.w().head_file(file)).unwrap();
        // SAFETY: read-only mapping of a WCFS file; only [0, size) is read,
        // size taken from stat/Python after each commit.
        let map = unsafe { MmapOptions::new().len(MAPLEN).map(&fd) }.unwrap();
        (fd, map)
    };
    let (_fdf, mf) = open_map(&env, f);
    let (_fdg, mg) = open_map(&env, g);
    check_head(&mut env, f, &mf, "t1");
    check_head(&mut env, g, &mg, "t1 g");
    assert!(touch_all(&mf, 10 * BS as usize) > 0);

    // t2: a new blktab with different data, the same size (10 blocks):
    // only whole-file invalidation makes the cached pages go.
    env.py.newblktab(f, 10, 2);
    let t2 = env.commit();
    check_head(&mut env, f, &mf, "t2 new blktab");
    check_at(&mut env, f, t1, "t2");
    touch_all(&mf, 10 * BS as usize);

    // t3: per-block tracking works on the new blktab.
    env.py.fill(f, 4, "zblk1", 0x44, 3000);
    env.py.punch(f, 0);
    let t3 = env.commit();
    check_head(&mut env, f, &mf, "t3 write after reset");
    check_at(&mut env, f, t2, "t3");

    // t4: blksize grows (4 KiB -> 8 KiB), blocks kept: every block moves.
    env.py.setblksize(f, 2 * BS);
    env.py.fill(g, 1, "zblk0", 0x78, 10); // another file in the same txn
    let t4 = env.commit();
    check_head(&mut env, f, &mf, "t4 blksize 8K");
    check_head(&mut env, g, &mg, "t4 g");
    check_at(&mut env, f, t3, "t4");
    touch_all(&mf, 20 * BS as usize);

    // t5: blksize shrinks (8 KiB -> 2 KiB) with a new blktab of 2 KiB
    // blocks, in one transaction; the file gets bigger.
    env.py.setblksize(f, BS / 2);
    env.py.newblktab(f, 50, 5);
    let t5 = env.commit();
    check_head(&mut env, f, &mf, "t5 blksize 2K + new blktab");
    check_at(&mut env, f, t4, "t5");
    check_at(&mut env, f, t1, "t5");

    // t6: blktab replaced by a smaller one: the file shrinks.
    env.py.newblktab(f, 3, 6);
    let t6 = env.commit();
    check_head(&mut env, f, &mf, "t6 smaller blktab");
    check_head(&mut env, g, &mg, "t6 g");
    for at in [t1, t2, t3, t4, t5, t6] {
        check_at(&mut env, f, at, "end");
    }
    assert_eq!(env.w().head(), t6);
}
