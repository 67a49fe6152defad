//! FileStorage watcher: a live Python writer, commits in progress, and a
//! file truncated under the watcher.
//!
//! The Python interpreter is `$WCFS_PYTHON`, by default the repository's
//! `.venv/bin/python`; without it these tests fail.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::python;
use zodb::storage::filestorage::FileStorage;
use zodb::storage::{Commit, Storage};
use zodb::{Oid, Tid};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/fs_oracle/fsoracle.py")
}

fn oracle(args: &[&str]) {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        .output()
        .expect("run python oracle");
    assert!(
        out.status.success(),
        "fsoracle.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn gen(dir: &Path, txns: &str) -> PathBuf {
    oracle(&["gen", dir.to_str().unwrap(), "--txns", txns]);
    dir.join("data.fs")
}

fn open(p: &Path) -> FileStorage {
    FileStorage::open(p, p.to_str().unwrap()).unwrap()
}

fn all_commits(fs: &FileStorage) -> Vec<Commit> {
    fs.iter()
        .map(|t| {
            let t = t.unwrap();
            Commit {
                tid: t.tid,
                oids: t.records.iter().map(|r| r.oid).collect(),
            }
        })
        .collect()
}

#[test]
fn watch_live_python_writer() {
    const N: usize = 120;
    let tmp = tempfile::tempdir().unwrap();
    let path = gen(tmp.path(), "20");
    let fs = open(&path);
    let start = fs.last_tid().unwrap();
    let mut w = fs.watch(start).unwrap();
    let out = tmp.path().join("writer.txt");
    let mut child = Command::new(python())
        .arg(script())
        .args([
            "writer",
            tmp.path().to_str().unwrap(),
            &N.to_string(),
            out.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let mut got: Vec<(Commit, f64)> = vec![];
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < N && Instant::now() < deadline {
        if let Some(c) = w.next_timeout(Duration::from_millis(500)).unwrap() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            got.push((c, now));
        }
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "python writer failed");
        }
    }
    assert!(child.wait().unwrap().success());
    // Nothing more than what Python committed.
    assert_eq!(w.next_timeout(Duration::from_millis(200)).unwrap(), None);

    let text = std::fs::read_to_string(&out).unwrap();
    let mut want: Vec<(Commit, f64)> = vec![];
    for line in text.lines().take_while(|l| *l != "done") {
        let f: Vec<&str> = line.split(' ').collect();
        let oids: Vec<Oid> = if f[1] == "-" {
            vec![]
        } else {
            f[1].split(',').map(|s| s.parse().unwrap()).collect()
        };
        want.push((
            Commit {
                tid: f[0].parse().unwrap(),
                oids,
            },
            f[2].parse().unwrap(),
        ));
    }
    assert_eq!(want.len(), N);
    let got_c: Vec<&Commit> = got.iter().map(|g| &g.0).collect();
    let want_c: Vec<&Commit> = want.iter().map(|g| &g.0).collect();
    assert_eq!(
        got_c, want_c,
        "watcher reports differ from what Python committed"
    );

    let mut lat: Vec<f64> = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g.1 - w.1).max(0.0))
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] * 1000.0;
    println!(
        "watch latency over {N} commits: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    assert!(pct(1.0) < 1000.0, "max latency {} ms", pct(1.0));
    assert!(pct(0.5) < 100.0, "p50 latency {} ms", pct(0.5));

    // The storage caught up as well.
    assert_eq!(fs.last_tid().unwrap(), want.last().unwrap().0.tid);
}

#[test]
fn watch_from_any_point_reports_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let path = gen(tmp.path(), "30");
    let fs = open(&path);
    let all = all_commits(&fs);
    let mut afters: Vec<Tid> = vec![Tid::ZERO];
    for c in &all {
        afters.push(c.tid);
        afters.push(Tid(c.tid.0 + 1));
        afters.push(Tid(c.tid.0 - 1));
    }
    for after in afters {
        let mut w = fs.watch(after).unwrap();
        let mut got = vec![];
        while let Some(c) = w.next_timeout(Duration::ZERO).unwrap() {
            got.push(c);
        }
        let want: Vec<Commit> = all.iter().filter(|c| c.tid > after).cloned().collect();
        assert_eq!(got, want, "watch({after})");
    }
}

/// Commits in progress (status 'c', or a partly written transaction) are
/// waited for, then reported once complete; a file cut below what was
/// reported breaks the watcher for good.
#[test]
fn watch_in_progress_and_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let src = gen(tmp.path(), "20");
    let full = std::fs::read(&src).unwrap();
    let ofs = FileStorage::from_bytes(full.clone().into(), "orig").unwrap();
    let txns: Vec<_> = ofs.iter().map(|t| t.unwrap()).collect();
    let all = all_commits(&ofs);
    let n = txns.len();
    let k = n - 3; // the file starts with the first k transactions
    let cut = txns[k].pos as usize;

    let path = tmp.path().join("live.fs");
    std::fs::write(&path, &full[..cut]).unwrap();
    let fs = open(&path);
    assert_eq!(fs.last_tid().unwrap(), all[k - 1].tid);
    let mut w = fs.watch(all[k - 2].tid).unwrap();
    assert_eq!(
        w.next_timeout(Duration::ZERO).unwrap().as_ref(),
        Some(&all[k - 1])
    );
    assert_eq!(w.next_timeout(Duration::from_millis(100)).unwrap(), None);

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    // Transaction k: written with status 'c', then finished.
    let end_k = txns[k + 1].pos as usize;
    let mut tk = full[cut..end_k].to_vec();
    tk[16] = b'c';
    f.write_all(&tk[..tk.len() / 2]).unwrap();
    assert_eq!(w.next_timeout(Duration::from_millis(120)).unwrap(), None);
    f.write_all(&tk[tk.len() / 2..]).unwrap();
    assert_eq!(w.next_timeout(Duration::from_millis(120)).unwrap(), None);
    assert_eq!(
        fs.last_tid().unwrap(),
        all[k - 1].tid,
        "'c' transaction counted as committed"
    );
    {
        use std::os::unix::fs::FileExt;
        let f2 = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f2.write_all_at(b" ", cut as u64 + 16).unwrap();
    }
    let t0 = Instant::now();
    assert_eq!(
        w.next_timeout(Duration::from_secs(5)).unwrap().as_ref(),
        Some(&all[k])
    );
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert_eq!(fs.last_tid().unwrap(), all[k].tid);

    // Transaction k+1 written in pieces, with the right status all along
    // (a file cut short while copying): reported only once whole.
    let end_k1 = txns[k + 2].pos as usize;
    for piece in [
        &full[end_k..end_k + 10],
        &full[end_k + 10..end_k1 - 8],
        &full[end_k1 - 8..end_k1 - 1],
    ] {
        f.write_all(piece).unwrap();
        assert_eq!(w.next_timeout(Duration::from_millis(60)).unwrap(), None);
    }
    f.write_all(&full[end_k1 - 1..]).unwrap();
    let mut got = vec![];
    while let Some(c) = w.next_timeout(Duration::from_millis(100)).unwrap() {
        got.push(c);
    }
    assert_eq!(got, all[k + 1..].to_vec());

    // Truncated below what was reported: an error, and it stays.
    f.set_len(txns[k].pos + 10).unwrap();
    assert!(w.next_timeout(Duration::from_millis(100)).is_err());
    assert!(w.next_timeout(Duration::from_millis(100)).is_err());
}
