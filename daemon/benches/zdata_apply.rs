//! Cost of applying a one-block commit with 1 000 vs 50 000 tracked blocks.
//!
//! `python/ztrack_testdata/gen.py bench` writes a file of 50 000 blocks
//! (blksize 8: a 3-level blktab) and then one-block commits, alternately a
//! ZBlk0 modified in place and a block's entry replaced by a new ZBlk0,
//! always on a block both trackers track. The two trackers apply the same
//! commits; we print the median µs per commit of each kind and the ratio
//! 50k/1k, which should stay near 1 (target ≤ 2): the work depends on the
//! change, not on how much is tracked.
//!
//! Python is WCFS_PYTHON, default `<repo>/.venv/bin/python`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use testkit::python;
use wcfsd::zdata::Tracker;
use zodb::storage::filestorage::FileStorage;
use zodb::{Commit, Oid, Storage, Tid};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let ntxn = 400;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.fs");
    let t0 = Instant::now();
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/ztrack_testdata/gen.py"))
        .arg("bench")
        .arg(&path)
        .arg("--ntxn")
        .arg(ntxn.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen.py bench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("generated in {:?}", t0.elapsed());
    let info = std::fs::read_to_string(format!("{}.info", path.display())).unwrap();
    let mut file: Option<Oid> = None;
    let mut notes = Vec::new();
    let mut start: Option<Tid> = None;
    for l in info.lines() {
        let w: Vec<&str> = l.split(' ').collect();
        match w[0] {
            "file" => file = Some(w[2].parse().unwrap()),
            "txn" if start.is_none() => start = Some(w[1].parse().unwrap()),
            "txn" => notes.push(w[2].to_string()),
            _ => {}
        }
    }
    let (file, start) = (file.unwrap(), start.unwrap());
    let fs = Arc::new(FileStorage::open(&path, path.to_str().unwrap()).unwrap());
    let st: Arc<dyn Storage> = fs.clone();
    let commits: Vec<Commit> = fs
        .iter()
        .map(|t| t.unwrap())
        .filter(|t| t.tid > start)
        .map(|t| Commit {
            tid: t.tid,
            oids: t.records.iter().map(|r| r.oid).collect(),
        })
        .collect();
    assert_eq!(commits.len(), notes.len());

    let mut small = Tracker::new(st.clone(), start);
    let mut big = Tracker::new(st.clone(), start);
    small.open_file(file).unwrap();
    big.open_file(file).unwrap();
    let t0 = Instant::now();
    for blk in (0..50_000).step_by(50) {
        small.load_block(file, blk).unwrap();
    }
    for blk in 0..50_000 {
        big.load_block(file, blk).unwrap();
    }
    eprintln!(
        "tracked 1 000 + 50 000 blocks in {:?}; tracked nodes: {:?} / {:?}",
        t0.elapsed(),
        small.tracked_counts(file).unwrap(),
        big.tracked_counts(file).unwrap()
    );

    let mut times: [[Vec<f64>; 2]; 2] = Default::default(); // [kind][tracker]
    for (c, note) in commits.iter().zip(&notes) {
        let kind = usize::from(note == "replace");
        for (i, tr) in [&mut small, &mut big].into_iter().enumerate() {
            let t = Instant::now();
            let d = tr.apply(c).unwrap();
            times[kind][i].push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].blocks.len(), 1, "{note}: {d:?}");
        }
    }
    println!("zdata_apply: one-block commits, median µs per commit ({ntxn} commits)");
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "kind", "1k tracked", "50k tracked", "ratio"
    );
    for (kind, name) in [
        (0, "ZBlk0 modified in place"),
        (1, "entry replaced (new ZBlk)"),
    ] {
        let a = median(&mut times[kind][0]);
        let b = median(&mut times[kind][1]);
        println!("{name:<28} {a:>12.1} {b:>12.1} {:>8.2}", b / a);
    }
}
