//! Head lag over PostgreSQL (harness = false): from a commit finishing on
//! the primary to `head/at` showing it.
//!
//! A Python writer commits `WCFS_BENCH_COMMITS` (default 200) small
//! transactions through RelStorage on the primary, 5–15 ms apart, and
//! prints each tid with the time its commit returned. wcfsd (with
//! `-debug`) serves the database; a thread reads `.wcfs/debug/zhead`, which
//! the daemon writes at the moment it publishes a tid in `head/at`, and
//! notes when each tid arrived. Lag = arrival − commit (one machine, one
//! clock). Measured for the daemon on the primary, on a streaming replica
//! (replication included), and on the primary once the optional NOTIFY
//! trigger of the README is installed. Target: median ≤ 5 ms on the
//! primary. Median, 90th percentile and max are printed.
//!
//! Run: `cargo bench -p wcfsd --bench pg_lag` (root, /dev/fuse, Debian's
//! postgresql, Python with RelStorage).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zodb::Tid;

/// Commits N transactions; prints "<tid> <unix time>" after each.
const PY_WRITER: &str = r#"
import random, sys, time
sys.path.insert(0, sys.argv[2])
import ZODB, transaction
import pgstorage
n = int(sys.argv[3])
db = ZODB.DB(pgstorage.open_relstorage(sys.argv[1]))
conn = db.open()
root = conn.root()
rng = random.Random(1)
for i in range(n):
    root['n'] = root.get('n', 0) + 1
    transaction.commit()
    t = time.time()
    print("%s %.6f" % (pgstorage.committed_tid(conn, root).hex(), t), flush=True)
    time.sleep(rng.uniform(0.005, 0.015))
conn.close()
db.close()
"#;

/// The trigger an administrator may add (README): NOTIFY on every commit.
const TRIGGER: &str = "CREATE FUNCTION wcfs_notify_commit() RETURNS trigger LANGUAGE plpgsql AS \
     $$BEGIN PERFORM pg_notify('wcfs_commit', NEW.tid::text); RETURN NULL; END$$; \
     CREATE TRIGGER wcfs_notify_commit AFTER INSERT ON \"transaction\" \
     FOR EACH ROW EXECUTE FUNCTION wcfs_notify_commit()";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Lags (seconds) of `n` commits to `writer_zurl` seen by a daemon on
/// `zurl`.
fn lags(zurl: &str, writer_zurl: &str, n: usize, tmp: &std::path::Path) -> Vec<f64> {
    let mnt = tmp.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let w = common::Wcfs::start(zurl, &mnt, &tmp.join("wcfsd.log"), &["-debug"])
        .unwrap_or_else(|e| panic!("{e}"));
    let seen: Arc<Mutex<HashMap<Tid, f64>>> = Arc::default();
    let f = std::fs::File::open(w.path(".wcfs/debug/zhead")).unwrap();
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                let t = now();
                if let Ok(tid) = line.trim().parse::<Tid>() {
                    seen.lock().unwrap().insert(tid, t);
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    let script = tmp.join("writer.py");
    std::fs::write(&script, PY_WRITER).unwrap();
    let out = Command::new(common::python())
        .arg(&script)
        .arg(writer_zurl)
        .arg(testkit::repo().join("python/wcfs_testdata"))
        .arg(n.to_string())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "writer failed");
    let commits: Vec<(Tid, f64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (tid, t) = l.split_once(' ').unwrap();
            (tid.parse().unwrap(), t.parse().unwrap())
        })
        .collect();
    assert_eq!(commits.len(), n);
    let last = commits.last().unwrap().0;
    w.wait_head(last);
    std::thread::sleep(Duration::from_millis(50));
    let seen = seen.lock().unwrap();
    let lags = commits
        .iter()
        .map(|(tid, t)| {
            let s = seen
                .get(tid)
                .unwrap_or_else(|| panic!("@{tid} never published"));
            s - t
        })
        .collect();
    drop(w);
    lags
}

fn report(what: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ms = |x: f64| x * 1e3;
    println!(
        "  {what:<34} median {:>6.2} ms   p90 {:>6.2} ms   max {:>7.2} ms   ({} commits)",
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(*v.last().unwrap()),
        v.len()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches probes with --list
    }
    let n: usize = std::env::var("WCFS_BENCH_COMMITS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::Builder::new()
        .prefix("wcfs-bench")
        .tempdir()
        .unwrap();
    let pg = testkit::PgServer::start();
    pg.create_db("zodb");
    let wz = pg.zurl("zodb");
    testkit::run_python("python/pg_oracle/pgoracle.py", &["init", &wz]);
    let replica = pg.start_replica();
    println!(
        "pg_lag: {n} commits on the primary, 5-15 ms apart; lag = commit returned -> head/at \
         shows it (.wcfs/debug/zhead)"
    );
    report(
        "wcfsd on the primary (polling)",
        lags(&wz, &wz, n, tmp.path()),
    );
    report(
        "wcfsd on a streaming replica",
        lags(&replica.zurl("zodb"), &wz, n, tmp.path()),
    );
    pg.psql("zodb", TRIGGER);
    report(
        "wcfsd on the primary, NOTIFY trigger",
        lags(&wz, &wz, n, tmp.path()),
    );
}
