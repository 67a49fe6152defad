//! Change tracker checked against brute force.
//!
//! `python/ztrack_testdata/gen.py` writes databases through the real ZODB
//! and BTrees; the tracker follows them transaction by transaction, and
//! every report is compared with what loading each tracked block before and
//! after the transaction says: a block changed iff its ZBlk oid differs, or
//! its ZBlk or one of its ZBlk1 parts has the transaction's tid as serial.
//!
//! The seed is random per run and printed; WCFS_TEST_SEED reproduces it.
//! Python is WCFS_PYTHON, default `<repo>/.venv/bin/python`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use testkit::python;
use wcfsd::zdata::{FileDelta, Tracker};
use zodb::bigfile::{Block, ZBigFile};
use zodb::storage::filestorage::FileStorage;
use zodb::{Commit, Oid, Storage, Tid};

fn seed() -> u64 {
    testkit::seed("zdata_track")
}

/// Tiny deterministic PRNG (xorshift64*): no dependency for tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Db {
    _dir: tempfile::TempDir,
    fs: Arc<FileStorage>,
    st: Arc<dyn Storage>,
    files: Vec<(String, Oid)>,
    /// Every transaction the generator committed: tid, note.
    txns: Vec<(Tid, String)>,
    lines: Vec<String>,
}

fn gen(mode: &str, seed: u64, ntxn: usize) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.fs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/ztrack_testdata/gen.py");
    let out = Command::new(python())
        .arg(script)
        .arg(mode)
        .arg(&path)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--ntxn")
        .arg(ntxn.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen.py {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = std::fs::read_to_string(format!("{}.info", path.display())).unwrap();
    let mut files = Vec::new();
    let mut txns = Vec::new();
    let mut lines = Vec::new();
    for l in info.lines() {
        let w: Vec<&str> = l.split(' ').collect();
        match w[0] {
            "file" => files.push((w[1].to_string(), w[2].parse().unwrap())),
            "txn" => txns.push((w[1].parse().unwrap(), w[2].to_string())),
            _ => lines.push(l.to_string()),
        }
    }
    let fs = Arc::new(FileStorage::open(&path, path.to_str().unwrap()).unwrap());
    let st: Arc<dyn Storage> = fs.clone();
    Db {
        _dir: dir,
        fs,
        st,
        files,
        txns,
        lines,
    }
}

/// Every commit after `start`, with its oids.
fn commits_after(fs: &FileStorage, start: Tid) -> Vec<Commit> {
    fs.iter()
        .map(|t| t.unwrap())
        .filter(|t| t.tid > start)
        .map(|t| Commit {
            tid: t.tid,
            oids: t.records.iter().map(|r| r.oid).collect(),
        })
        .collect()
}

/// The identity of a block's content as of some tid.
#[derive(Debug, Clone, PartialEq)]
struct BState {
    zblk: Option<Oid>,
    /// Serials of the ZBlk and every part.
    serials: Vec<Tid>,
}

fn bstate(b: &Block) -> BState {
    let mut serials: Vec<Tid> = b.parts.iter().map(|p| p.serial).collect();
    serials.extend(b.zblk.map(|z| z.serial));
    BState {
        zblk: b.zblk.map(|z| z.oid),
        serials,
    }
}

/// The definition: changed in `t` iff the ZBlk is another one, or it (or
/// one of its parts) was written by `t`.
fn changed(old: &BState, new: &BState, t: Tid) -> bool {
    old.zblk != new.zblk || (new.zblk.is_some() && new.serials.contains(&t))
}

fn load(st: &dyn Storage, zf: &ZBigFile, blk: u64, at: Tid) -> BState {
    bstate(
        &zf.load_block(st, blk, at)
            .unwrap_or_else(|e| panic!("load #{blk} @{at}: {e}")),
    )
}

/// Brute-force change tids of `blk` over `tids` (consecutive transactions,
/// the first one being the history start).
fn brute_hist(st: &dyn Storage, zf: &ZBigFile, blk: u64, tids: &[Tid]) -> Vec<Tid> {
    let mut out = Vec::new();
    let mut prev = load(st, zf, blk, tids[0]);
    for &t in &tids[1..] {
        let cur = load(st, zf, blk, t);
        if changed(&prev, &cur, t) {
            out.push(t);
        }
        prev = cur;
    }
    out
}

fn check_blkrev(
    db: &Db,
    tr: &Tracker,
    zfs: &HashMap<Oid, ZBigFile>,
    tracked: &HashMap<Oid, BTreeMap<u64, BState>>,
    tids: &[Tid],
    rng: &mut Rng,
    nsample: usize,
) -> usize {
    let st = &*db.st;
    let start = tr.history_start();
    let from = tids.partition_point(|t| *t < start);
    let hist_tids = &tids[from..];
    let mut nchecked = 0;
    for (f, blks) in tracked {
        let keys: Vec<u64> = blks.keys().copied().collect();
        for _ in 0..nsample.min(keys.len()) {
            let blk = keys[rng.below(keys.len() as u64) as usize];
            let truth = brute_hist(st, &zfs[f], blk, hist_tids);
            for (i, &at) in hist_tids.iter().enumerate() {
                let want = truth
                    .iter()
                    .rev()
                    .find(|t| **t <= at)
                    .copied()
                    .unwrap_or(start);
                let got = tr.blkrev(*f, blk, at);
                assert_eq!(
                    got, want,
                    "blkrev({f}, #{blk}, @{at}) (history start {start}; changes {truth:?})"
                );
                // Between two transactions: same answer as the earlier.
                if i + 1 < hist_tids.len() && hist_tids[i + 1].0 - 1 > at.0 {
                    assert_eq!(tr.blkrev(*f, blk, Tid(hist_tids[i + 1].0 - 1)), want);
                }
                nchecked += 1;
            }
        }
    }
    nchecked
}

#[test]
fn random_history_against_brute_force() {
    let seed = seed();
    let t0 = std::time::Instant::now();
    let db = gen("random", seed, 300);
    eprintln!("generated in {:?}", t0.elapsed());
    let st = &*db.st;
    let start = db.txns[0].0;
    let commits = commits_after(&db.fs, start);
    assert!(commits.len() >= 300, "{} commits", commits.len());
    let mut tr = Tracker::new(db.st.clone(), start);
    let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
    let mut zfs = HashMap::new();
    let mut sizes = HashMap::new();
    let mut tracked: HashMap<Oid, BTreeMap<u64, BState>> = HashMap::new();
    for (_, f) in &db.files {
        let info = tr.open_file(*f).unwrap();
        let zf = ZBigFile::load(st, *f, start).unwrap();
        assert_eq!(info.size, zf.size(st, start).unwrap().size);
        assert_eq!(info.rev, zf.serial());
        zfs.insert(*f, zf);
        sizes.insert(*f, info.size);
        tracked.insert(*f, BTreeMap::new());
    }
    let deep = db.files.iter().find(|(n, _)| n == "deep").unwrap().1;
    let mut max_depth = 0;
    let mut nreported = 0;
    let mut tids = vec![start];
    let mut revs: HashMap<Oid, Tid> = tr_revs(&tr, &db);

    let read = |tr: &Tracker,
                tracked: &mut HashMap<Oid, BTreeMap<u64, BState>>,
                rng: &mut Rng,
                n: usize,
                max_depth: &mut usize| {
        for (_, f) in &db.files {
            let size = tr.file_info(*f).unwrap().size;
            let bs = zfs[f].blksize();
            let nblk = size / bs;
            for _ in 0..n {
                let blk = match rng.below(10) {
                    0 => nblk + rng.below(50), // beyond EOF
                    1 => rng.below(40_000),    // anywhere
                    _ => rng.below(nblk.max(1)),
                };
                let b = tr.load_block(*f, blk).unwrap();
                let want = zfs[f].load_block(st, blk, tr.head()).unwrap();
                assert_eq!(b, want, "load_block({f}, #{blk})");
                if *f == deep {
                    *max_depth = (*max_depth).max(b.path.len());
                }
                tracked.get_mut(f).unwrap().insert(blk, bstate(&b));
                assert!(tr.is_tracked(*f, blk));
            }
        }
    };

    read(&tr, &mut tracked, &mut rng, 30, &mut max_depth);
    let mut nchecked = 0;
    for (i, c) in commits.iter().enumerate() {
        let deltas = tr.apply(c).unwrap();
        assert_eq!(tr.head(), c.tid);
        tids.push(c.tid);
        let by_file: HashMap<Oid, &FileDelta> = deltas.iter().map(|d| (d.file, d)).collect();
        for (name, f) in &db.files {
            let zf = &zfs[f];
            let mut want = BTreeSet::new();
            for (blk, old) in tracked.get_mut(f).unwrap().iter_mut() {
                let new = load(st, zf, *blk, c.tid);
                if changed(old, &new, c.tid) {
                    want.insert(*blk);
                }
                *old = new;
            }
            let size = zf.size(st, c.tid).unwrap().size;
            let want_size = (size != sizes[f]).then_some(size);
            sizes.insert(*f, size);
            let got = by_file.get(f);
            let got_blocks = got.map(|d| d.blocks.clone()).unwrap_or_default();
            let got_size = got.and_then(|d| d.size);
            assert!(
                !got.is_some_and(|d| d.reset),
                "unexpected reset of {name} @{}",
                c.tid
            );
            assert_eq!(
                got_blocks,
                want,
                "file {name} ({f}) txn #{i} @{} ({}): changed blocks",
                c.tid,
                db.txns[i + 1].1
            );
            assert_eq!(got_size, want_size, "file {name} txn #{i}: size");
            assert_eq!(tr.file_info(*f).unwrap().size, size);
            if !want.is_empty() || want_size.is_some() {
                revs.insert(*f, c.tid);
            }
            assert_eq!(tr.file_info(*f).unwrap().rev, revs[f], "rev of {name}");
            nreported += want.len();
        }
        read(&tr, &mut tracked, &mut rng, 2, &mut max_depth);
        if i == commits.len() / 2 {
            nchecked += check_blkrev(&db, &tr, &zfs, &tracked, &tids, &mut rng, 8);
        }
    }
    nchecked += check_blkrev(&db, &tr, &zfs, &tracked, &tids, &mut rng, 8);

    // Trim to the middle, and check again from there.
    let mid = tids[tids.len() / 2];
    tr.trim(mid);
    assert_eq!(tr.history_start(), mid);
    tr.trim(tids[1]); // never goes back
    assert_eq!(tr.history_start(), mid);
    nchecked += check_blkrev(&db, &tr, &zfs, &tracked, &tids, &mut rng, 8);
    // Blocks tracked after the trim get their past rebuilt from mid on.
    read(&tr, &mut tracked, &mut rng, 20, &mut max_depth);
    nchecked += check_blkrev(&db, &tr, &zfs, &tracked, &tids, &mut rng, 8);

    let ntracked: usize = tracked.values().map(|t| t.len()).sum();
    eprintln!(
        "{} commits, {ntracked} tracked blocks, {nreported} block changes reported, \
         {nchecked} blkrev checks, deep blktab depth {max_depth}, {:?}",
        commits.len(),
        t0.elapsed()
    );
    assert!(max_depth >= 3, "deep file's blktab has {max_depth} levels");
    assert!(nreported > 100);
}

fn tr_revs(tr: &Tracker, db: &Db) -> HashMap<Oid, Tid> {
    db.files
        .iter()
        .map(|(_, f)| (*f, tr.file_info(*f).unwrap().rev))
        .collect()
}

#[test]
fn zbigfile_object_change_resets() {
    let db = gen("reset", seed(), 0);
    let st = &*db.st;
    let start = db.txns[0].0;
    let f = db.files[0].1;
    let g = db.files[1].1;
    let mut tr = Tracker::new(db.st.clone(), start);
    tr.open_file(f).unwrap();
    tr.open_file(g).unwrap();
    for blk in [3, 5, 7, 50, 150] {
        tr.load_block(f, blk).unwrap();
    }
    tr.load_block(g, 4).unwrap();
    let commits = commits_after(&db.fs, start);
    let notes: Vec<&str> = db.txns[1..].iter().map(|t| t.1.as_str()).collect();
    assert_eq!(notes, ["write", "new-blktab", "write2", "blksize", "grow"]);
    let mut resets = Vec::new();
    for (c, note) in commits.iter().zip(&notes) {
        let deltas = tr.apply(c).unwrap();
        let df = deltas.iter().find(|d| d.file == f);
        let zf = ZBigFile::load(st, f, c.tid).unwrap();
        let size = zf.size(st, c.tid).unwrap().size;
        match *note {
            "write" => {
                let d = df.unwrap();
                assert!(!d.reset);
                assert_eq!(d.blocks, BTreeSet::from([5]));
            }
            "new-blktab" | "blksize" => {
                let d = df.unwrap();
                assert!(d.reset, "{note}: {d:?}");
                assert!(d.blocks.is_empty());
                assert_eq!(d.size, Some(size));
                let info = tr.file_info(f).unwrap();
                assert_eq!(info.blksize, zf.blksize());
                assert_eq!(info.size, size);
                assert_eq!(info.rev, c.tid);
                assert!(!tr.is_tracked(f, 5), "tracking must start over");
                resets.push(c.tid);
                // Re-read some blocks.
                for blk in [5, 7, 60] {
                    let b = tr.load_block(f, blk).unwrap();
                    assert_eq!(b, zf.load_block(st, blk, c.tid).unwrap());
                }
            }
            "write2" => {
                let d = df.unwrap();
                assert_eq!(d.blocks, BTreeSet::from([7]));
                let dg = deltas.iter().find(|d| d.file == g).unwrap();
                assert_eq!(dg.blocks, BTreeSet::from([4]));
                assert!(!dg.reset);
            }
            "grow" => {
                let d = df.unwrap();
                assert_eq!(d.size, Some(size));
                assert!(d.blocks.is_empty(), "{d:?}");
            }
            _ => unreachable!(),
        }
    }
    // Every block changed at each reset.
    let head = tr.head();
    for blk in [5, 7, 60] {
        assert!(tr.blkrev(f, blk, head) >= resets[1]);
        assert_eq!(tr.blkrev(f, blk, resets[1]), resets[1]);
    }
    // Block 7 was re-tracked after reset 1, at the "blksize" transaction; it
    // changed at write2, between the resets: its rebuilt past says so.
    assert_eq!(tr.blkrev(f, 7, commits[2].tid), commits[2].tid);
    assert!(matches!(
        tr.apply(&Commit {
            tid: start,
            oids: vec![]
        }),
        Err(wcfsd::zdata::Error::OutOfOrder { .. })
    ));
}

#[test]
fn corrupt_objects_report_conservatively() {
    let db = gen("corrupt", seed(), 0);
    let st = &*db.st;
    let start = db.txns[0].0;
    let f = db.files[0].1;
    let bucket: Oid = db
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("bucket "))
        .unwrap()
        .parse()
        .unwrap();
    let mut tr = Tracker::new(db.st.clone(), start);
    tr.open_file(f).unwrap();
    let zf = ZBigFile::load(st, f, start).unwrap();
    let blks: Vec<u64> = (0..300).step_by(7).chain([5, 10, 150, 299, 400]).collect();
    for &b in &blks {
        tr.load_block(f, b).unwrap();
    }
    // Blocks the garbage bucket decides.
    let in_bucket: BTreeSet<u64> = blks
        .iter()
        .copied()
        .filter(|b| {
            zf.load_block(st, *b, start)
                .unwrap()
                .path
                .iter()
                .any(|n| n.oid == bucket)
        })
        .collect();
    assert!(in_bucket.contains(&150));
    let commits = commits_after(&db.fs, start);
    let notes: Vec<&str> = db.txns[1..].iter().map(|t| t.1.as_str()).collect();
    assert_eq!(
        notes,
        [
            "bad-zblk",
            "bad-bucket",
            "fix-bucket",
            "fix-zblk",
            "bad-file",
            "fix-file"
        ]
    );
    for (c, note) in commits.iter().zip(&notes) {
        let deltas = tr.apply(c).unwrap();
        let d = deltas.iter().find(|d| d.file == f);
        match *note {
            "bad-zblk" | "fix-zblk" => {
                let d = d.unwrap();
                assert!(d.blocks.contains(&5) && d.blocks.contains(&10), "{d:?}");
                if *note == "bad-zblk" {
                    assert!(tr.load_block(f, 5).is_err());
                    assert!(tr.load_block(f, 10).is_err());
                } else {
                    tr.load_block(f, 5).unwrap();
                    tr.load_block(f, 10).unwrap();
                }
            }
            "bad-bucket" | "fix-bucket" => {
                let d = d.unwrap();
                assert!(d.blocks.is_superset(&in_bucket), "{note}: {d:?}");
                for b in &in_bucket {
                    let r = tr.load_block(f, *b);
                    assert_eq!(r.is_err(), *note == "bad-bucket", "#{b}");
                }
            }
            "bad-file" => {
                let d = d.unwrap();
                assert!(d.reset);
                assert!(tr.load_block(f, 3).is_err());
                assert!(tr.open_file(f).is_err());
            }
            "fix-file" => {
                let d = d.unwrap();
                assert!(d.reset);
                assert_eq!(d.size, Some(300 * 16));
                assert_eq!(
                    tr.load_block(f, 3).unwrap(),
                    zf.load_block(st, 3, c.tid).unwrap()
                );
                assert_eq!(tr.open_file(f).unwrap().size, 300 * 16);
            }
            _ => unreachable!(),
        }
    }
}
