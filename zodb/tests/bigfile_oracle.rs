//! ZBigFile loading checked against Python's ZODB.
//!
//! `python/wcfs_testdata/gen.py` writes databases through the real ZODB and
//! BTrees (plus hand-pickled records in Python 2's forms);
//! `python/wcfs_testdata/oracle.py` prints what Python reads in every
//! ZBigFile at every revision: block bytes (sha1), ZBlk oid and serial, the
//! blktab path, key range and max serial, the size and its path. We load the
//! same through `zodb::bigfile` and require every line to agree.
//!
//! The seed is random per run and printed; set WCFS_TEST_SEED to reproduce.
//! Python is WCFS_PYTHON, default `<repo>/.venv/bin/python` (made by
//! `dev/setup`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use testkit::{python, sha1_hex};
use zodb::bigfile::ZBigFile;
use zodb::{Oid, Storage, Tid};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/wcfs_testdata")
}

fn seed() -> u64 {
    testkit::seed("bigfile_oracle")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn gen(dir: &Path, seed: u64, only: &str) {
    run(Command::new(python())
        .arg(testdata().join("gen.py"))
        .arg(dir)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--only")
        .arg(only));
}

fn open(path: &Path) -> Arc<dyn Storage> {
    zodb::zurl::open(path.to_str().unwrap())
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// One oracle line: kind, positional words, key=value fields.
struct Line<'a> {
    kind: &'a str,
    pos: Vec<&'a str>,
    kv: HashMap<&'a str, &'a str>,
}

impl<'a> Line<'a> {
    fn parse(s: &'a str) -> Line<'a> {
        let mut it = s.split_ascii_whitespace();
        let kind = it.next().unwrap_or("");
        let mut pos = Vec::new();
        let mut kv = HashMap::new();
        for w in it {
            match w.split_once('=') {
                Some((k, v)) => {
                    kv.insert(k, v);
                }
                None => pos.push(w),
            }
        }
        Line { kind, pos, kv }
    }
    fn get(&self, k: &str) -> &'a str {
        self.kv
            .get(k)
            .unwrap_or_else(|| panic!("oracle line {} without {k}", self.kind))
    }
    fn int(&self, k: &str) -> i64 {
        self.get(k).parse().unwrap()
    }
}

fn oids(s: &str) -> Vec<Oid> {
    if s == "-" {
        return Vec::new();
    }
    s.split(',').map(|x| x.parse().unwrap()).collect()
}

fn opt_id<T: std::str::FromStr>(s: &str) -> Option<T>
where
    T::Err: std::fmt::Debug,
{
    (s != "-").then(|| s.parse().unwrap())
}

#[derive(Default, Debug)]
struct Stats {
    txns: usize,
    files: usize,
    nofile: usize,
    blocks: usize,
    holes: usize,
    zblk1: usize,
    deep: usize,
    blkerr: usize,
}

/// Checks the lines of `oracle` against our reader; returns mismatches.
/// With `every` > 1 only every `every`-th block is checked, plus the blocks
/// at bucket boundaries and the errors.
fn check(st: &dyn Storage, oracle: &str, every: u64, stats: &mut Stats) -> Vec<String> {
    let mut bad = Vec::new();
    let mut at = Tid::ZERO;
    let mut file: Option<(Oid, Option<ZBigFile>)> = None;
    let mut fail = |ctx: String, what: String| {
        if bad.len() < 30 {
            bad.push(format!("{ctx}: {what}"));
        }
    };
    for text in oracle.lines() {
        let l = Line::parse(text);
        match l.kind {
            "db" | "" => {}
            "txn" => {
                at = l.pos[0].parse().unwrap();
                stats.txns += 1;
            }
            "nofile" => {
                stats.nofile += 1;
                let foid: Oid = l.pos[0].parse().unwrap();
                match ZBigFile::load(st, foid, at) {
                    Err(e) if e.is_missing() => {}
                    Err(e) => fail(format!("@{at} {foid}"), format!("want missing, got {e}")),
                    Ok(_) => fail(format!("@{at} {foid}"), "want missing, loaded".into()),
                }
            }
            "fileerr" => {
                file = None;
            }
            "file" => {
                stats.files += 1;
                let foid: Oid = l.pos[0].parse().unwrap();
                let ctx = format!("@{at} file {foid}");
                let f = match ZBigFile::load(st, foid, at) {
                    Ok(f) => f,
                    Err(e) => {
                        fail(ctx, format!("load: {e}"));
                        file = Some((foid, None));
                        continue;
                    }
                };
                if f.blksize() as i64 != l.int("blksize") {
                    fail(
                        ctx.clone(),
                        format!("blksize {} != {}", f.blksize(), l.get("blksize")),
                    );
                }
                match f.size(st, at) {
                    Err(e) => fail(ctx.clone(), format!("size: {e}")),
                    Ok(sz) => {
                        if sz.size as i64 != l.int("size") {
                            fail(
                                ctx.clone(),
                                format!("size {} != {}", sz.size, l.get("size")),
                            );
                        }
                        let want_max: Option<u64> = opt_id(l.get("sizemaxkey"));
                        if sz.max_blk != want_max {
                            fail(
                                ctx.clone(),
                                format!("max blk {:?} != {want_max:?}", sz.max_blk),
                            );
                        }
                        if sz.path_oids() != oids(l.get("sizepath")) {
                            fail(
                                ctx.clone(),
                                format!("size path {:?} != {}", sz.path_oids(), l.get("sizepath")),
                            );
                        }
                        if (sz.range.lo, sz.range.hi) != (l.int("sizelo"), l.int("sizehi")) {
                            fail(
                                ctx.clone(),
                                format!(
                                    "size range {} != [{}, {}]",
                                    sz.range,
                                    l.get("sizelo"),
                                    l.get("sizehi")
                                ),
                            );
                        }
                        if sz.max_serial.to_string() != l.get("sizemaxserial") {
                            fail(
                                ctx.clone(),
                                format!(
                                    "size max serial {} != {}",
                                    sz.max_serial,
                                    l.get("sizemaxserial")
                                ),
                            );
                        }
                    }
                }
                file = Some((foid, Some(f)));
            }
            "blk" | "blkerr" => {
                let Some((foid, Some(f))) = &file else {
                    continue;
                };
                let blk: u64 = l.pos[0].parse().unwrap();
                if every > 1
                    && l.kind == "blk"
                    && !blk.is_multiple_of(every)
                    && ![l.int("lo"), l.int("hi")].contains(&(blk as i64))
                {
                    continue;
                }
                let ctx = format!("@{at} file {foid} blk {blk}");
                let got = f.load_block(st, blk, at);
                if l.kind == "blkerr" {
                    stats.blkerr += 1;
                    if got.is_ok() {
                        fail(ctx, format!("python failed ({}), we loaded", l.pos[1]));
                    }
                    continue;
                }
                stats.blocks += 1;
                let b = match got {
                    Ok(b) => b,
                    Err(e) => {
                        fail(ctx, format!("load: {e}"));
                        continue;
                    }
                };
                if b.data.len() as u64 != f.blksize() {
                    fail(ctx.clone(), format!("{} bytes", b.data.len()));
                }
                let sha = sha1_hex(&b.data);
                if sha != l.get("sha1") {
                    fail(ctx.clone(), format!("sha1 {sha} != {}", l.get("sha1")));
                }
                let want_zblk: Option<Oid> = opt_id(l.get("zblk"));
                let want_serial: Option<Tid> = opt_id(l.get("serial"));
                if b.zblk.map(|z| z.oid) != want_zblk || b.zblk.map(|z| z.serial) != want_serial {
                    fail(
                        ctx.clone(),
                        format!(
                            "zblk {:?} != {} @{}",
                            b.zblk,
                            l.get("zblk"),
                            l.get("serial")
                        ),
                    );
                }
                if b.path_oids() != oids(l.get("path")) {
                    fail(
                        ctx.clone(),
                        format!("path {:?} != {}", b.path_oids(), l.get("path")),
                    );
                }
                if (b.range.lo, b.range.hi) != (l.int("lo"), l.int("hi")) {
                    fail(
                        ctx.clone(),
                        format!("range {} != [{}, {}]", b.range, l.get("lo"), l.get("hi")),
                    );
                }
                if b.max_serial.to_string() != l.get("maxserial") {
                    fail(
                        ctx.clone(),
                        format!("max serial {} != {}", b.max_serial, l.get("maxserial")),
                    );
                }
                if b.zblk.is_none() {
                    stats.holes += 1;
                }
                if b.zblk
                    .is_some_and(|z| z.kind == zodb::bigfile::ZBlkKind::ZBlk1)
                {
                    stats.zblk1 += 1;
                }
                if b.path.len() >= 3 {
                    stats.deep += 1;
                }
            }
            other => panic!("unknown oracle line {other:?}"),
        }
    }
    bad
}

#[test]
fn oracle_agrees() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    gen(dir.path(), seed(), "main,deep,crafted");
    eprintln!("gen: {:?}", t0.elapsed());

    // The oracles are independent: run them side by side.
    let dbs = ["main", "deep", "crafted"];
    let children: Vec<_> = dbs
        .iter()
        .map(|db| {
            Command::new(python())
                .arg(testdata().join("oracle.py"))
                .arg(dir.path().join(format!("{db}.fs")))
                .arg("--out")
                .arg(dir.path().join(format!("{db}.oracle")))
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn oracle.py")
        })
        .collect();
    for (db, child) in dbs.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "oracle.py {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("oracle: {:?}", t0.elapsed());

    let mut failures = Vec::new();
    for db in dbs {
        let st = open(&dir.path().join(format!("{db}.fs")));
        let oracle = std::fs::read_to_string(dir.path().join(format!("{db}.oracle"))).unwrap();
        let mut stats = Stats::default();
        // The deep tree has 10^5 block lines; an unoptimized build checks a
        // sample of them (the release build, which CI runs, checks all).
        let every = if db == "deep" && cfg!(debug_assertions) {
            8
        } else {
            1
        };
        let bad = check(&*st, &oracle, every, &mut stats);
        eprintln!("{db}: {stats:?}");
        for b in bad.iter().take(5) {
            eprintln!("  {b}");
        }
        // Make sure the data exercised what it is meant to.
        assert!(stats.blocks > 0 && stats.files > 0, "{db}: nothing checked");
        match db {
            "main" => assert!(
                stats.holes > 0 && stats.zblk1 > 0 && stats.nofile > 0,
                "{db}: {stats:?}"
            ),
            "deep" => assert!(stats.deep > 0, "{db}: no 3-level paths"),
            _ => {}
        }
        failures.extend(bad.into_iter().map(|b| format!("{db}: {b}")));
    }
    eprintln!("check: {:?}", t0.elapsed());
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corrupt_refused() {
    let dir = tempfile::tempdir().unwrap();
    gen(dir.path(), seed(), "corrupt");
    let st = open(&dir.path().join("corrupt.fs"));
    let at = st.last_tid().unwrap();
    let expect = std::fs::read_to_string(dir.path().join("corrupt.expect")).unwrap();
    let mut n = 0;
    for line in expect.lines().filter(|l| !l.starts_with('#')) {
        let w: Vec<&str> = line.split_ascii_whitespace().collect();
        if w[0] == "good" {
            let f = ZBigFile::load(&*st, w[1].parse().unwrap(), at).unwrap();
            let b = f.load_block(&*st, w[2].parse().unwrap(), at).unwrap();
            assert!(b.data.starts_with(w[3].as_bytes()), "{line}");
            continue;
        }
        let foid: Oid = w[0].parse().unwrap();
        if w[2] == "size" {
            let f = ZBigFile::load(&*st, foid, at).unwrap();
            let sz = f.size(&*st, at).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(sz.size.to_string(), w[3], "{line}");
            assert!(!sz.skipped.is_empty(), "{line}: empty bucket not reported");
            continue;
        }
        let res = ZBigFile::load(&*st, foid, at).and_then(|f| match w[1] {
            "-" => f.size(&*st, at).map(|_| ()),
            blk => f.load_block(&*st, blk.parse().unwrap(), at).map(|_| ()),
        });
        let err = match res {
            Ok(()) => panic!("{line}: loaded, want an error"),
            Err(e) => e,
        };
        let msg = err.to_string();
        eprintln!("{line}\n    → {msg}");
        let kind_ok = match w[2] {
            "corrupt" => err.is_corrupt(),
            "class" => err.is_class(),
            "any" => true,
            k => panic!("unknown kind {k}"),
        };
        assert!(kind_ok, "{line}: wrong kind of error: {msg} ({err:?})");
        assert!(
            w[3] == "-" || msg.contains(w[3]),
            "{line}: message does not name {}: {msg}",
            w[3]
        );
        assert_eq!(err.file, foid);
        n += 1;
    }
    assert!(n >= 10, "only {n} expectations");
}
