//! Cold reads through wcfsd over NEO (harness = false).
//!
//! One ZBigFile of `WCFS_BENCH_MIB` MiB (default 512) in 2 MiB ZBlk0 blocks
//! of random bytes, generated once by `python/wcfs_testdata/benchgen.py`
//! (`bench-data/neo_read/`), copied into a NEO cluster of 1 master and 2
//! storage nodes (`WCFS_BENCH_NEO_REPLICAS`, default 0: each node holds
//! half the partitions) with `copyTransactionsFrom`. In every repetition,
//! back to back:
//!
//! - **NEO vs data.fs**: the whole file read cold (read(2), 1 MiB buffers)
//!   through a freshly started wcfsd on `neo://` against one on the same
//!   data.fs (`file://`, in the page cache). Target: ratio ≥ 0.5;
//! - **NEO vs Python**: the same against `neo.client.Storage` (fresh
//!   process) loading every block's ZBlk0 through a ZODB Connection.
//!   Target: wcfsd ≥ 3× faster;
//! - **the driver alone**: every block's ZBlk loaded by the zodb crate,
//!   one at a time and from 8 threads (no FUSE);
//! - **head lag**: Python commits small transactions; the time from its
//!   `tpc_finish` returning to our watcher having the commit (same clock).
//!   Target: median ≤ 5 ms.
//!
//! Besides the speeds, the CPU time each side spent per MiB (wcfsd, the
//! storage nodes, the Python client) and the load average: on a machine
//! shared with other work the speeds move with the load, the CPU time per
//! MiB much less — it tells who the ceiling is (each storage node is one
//! Python thread).
//!
//! Run: `cargo bench -p wcfsd --bench neo_read` (root, /dev/fuse, the
//! cluster script beside the repository); `WCFS_BENCH_REPS` repetitions
//! (default 3).

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::{cold_read_cpu, cpu_secs, loadavg, read_all};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use testkit::neo::NeoCluster;
use zodb::Oid;

const BS: u64 = 2 << 20;
const MIB: f64 = (1 << 20) as f64;

const PY_COPY: &str = r#"
import os, sys
from ZODB.FileStorage import FileStorage
from neo.client.Storage import Storage
st = Storage(master_nodes=os.environ['NEO_MASTERS'].replace(',', ' '), name=os.environ['NEO_NAME'])
st.copyTransactionsFrom(FileStorage(sys.argv[1], read_only=True))
st.close()
"#;

const PY_LOAD: &str = r#"
import os, sys, time
sys.path.insert(0, sys.argv[1])
import ZODB
from ZODB.utils import p64
from neo.client.Storage import Storage
st = Storage(master_nodes=os.environ['NEO_MASTERS'].replace(',', ' '), name=os.environ['NEO_NAME'], read_only=True)
db = ZODB.DB(st)
conn = db.open()
f = conn.get(p64(int(sys.argv[2], 16)))
f._p_activate()
t0 = time.perf_counter()
n = 0
for blk, zblk in f.blktab.items():
    n += len(zblk.loadblkdata(f.blksize))
    zblk._p_deactivate()
dt = time.perf_counter() - t0
print("%d %.6f %.6f" % (n, dt, time.process_time()))
"#;

/// Commits a small transaction per line read; prints the wall time (s)
/// when each tpc_finish returned, and its tid.
const PY_COMMIT: &str = r#"
import os, sys, time, transaction
from neo.client.Storage import Storage
st = Storage(master_nodes=os.environ['NEO_MASTERS'].replace(',', ' '), name=os.environ['NEO_NAME'])
oid = st.new_oid()
serial = None
print("ready", flush=True)
for line in sys.stdin:
    txn = transaction.Transaction()
    st.tpc_begin(txn)
    st.store(oid, serial, os.urandom(100), '', txn)
    st.tpc_vote(txn)
    tid = st.tpc_finish(txn)
    print("%.6f %s" % (time.time(), tid.hex()), flush=True)
    serial = tid
"#;

fn py(c: &NeoCluster, script: &Path) -> Command {
    let mut cmd = Command::new(c.python());
    c.python_env(&mut cmd);
    cmd.arg(script);
    cmd
}

/// (min, median, max).
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn mmm(v: &[f64]) -> String {
    let (a, m, b) = stats(v);
    format!("{a:.2} / {m:.2} / {b:.2}")
}

fn line(what: &str, ours: &[f64], theirs_name: &str, theirs: &[f64], ratio: &[f64]) {
    let (oa, om, ob) = stats(ours);
    let (ta, tm, tb) = stats(theirs);
    println!(
        "  {what:<20} {oa:>4.0} / {om:>4.0} / {ob:>4.0} MiB/s   {theirs_name:<20} {ta:>4.0} / {tm:>4.0} / {tb:>4.0} MiB/s   \
         ratio {}",
        mmm(ratio)
    );
}

/// CPU time (s) of all of `pids` so far.
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| cpu_secs(p)).sum()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !NeoCluster::available("neo_read") {
        return;
    }
    let mib: u64 = std::env::var("WCFS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let replicas: u32 = std::env::var("WCFS_BENCH_NEO_REPLICAS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let reps: usize = std::env::var("WCFS_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let d = testkit::bench_data("neo_read", mib.max(2), BS);
    let (path, oid, nblk): (PathBuf, Oid, u64) = (d.path.clone(), Oid(d.oid), d.nblk);
    read_all(&path);
    let total = (nblk * BS) as f64 / MIB;
    let tmp = tempfile::Builder::new()
        .prefix("wcfs-bench")
        .tempdir()
        .unwrap();
    let script = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (copy, load, commit) = (
        script("copy.py", PY_COPY),
        script("load.py", PY_LOAD),
        script("commit.py", PY_COMMIT),
    );
    let c = NeoCluster::start(1, 2, replicas);
    let t0 = Instant::now();
    let st = py(&c, &copy).arg(&path).status().unwrap();
    assert!(st.success(), "copy into NEO");
    println!(
        "neo_read: {total:.0} MiB in {nblk} blocks of 2 MiB (ZBlk0, random bytes), NEO: 1 master, \
         2 storage nodes, {replicas} replica(s), loopback (copied in {:.0?}); {reps} reps; \
         min / median / max; ratio = ours / theirs (higher is better for us)",
        t0.elapsed()
    );
    let file_zurl = format!("file://{}", path.display());
    let mibs = |t: f64| total / t;
    let ms_per_mib = |cpu: f64| cpu * 1e3 / total;
    let nodes = c.storage_pids();
    assert_eq!(nodes.len(), 2, "storage node pids");
    let (mut neo, mut file, mut r_file, mut pyv, mut r_py) =
        (vec![], vec![], vec![], vec![], vec![]);
    // CPU time per MiB: wcfsd over neo:// and file://, the storage nodes
    // serving wcfsd and serving Python, the Python client; load averages.
    let (mut c_neo, mut c_file, mut c_nodes, mut c_nodes_py, mut c_py, mut loads) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        loads.push(loadavg());
        let (t_file, s1, cpu_file) = cold_read_cpu(&file_zurl, tmp.path(), oid, nblk * BS);
        let n0 = cpu_of(&nodes);
        let (t_neo, s2, cpu_neo) = cold_read_cpu(&c.zurl(), tmp.path(), oid, nblk * BS);
        let n1 = cpu_of(&nodes);
        assert_eq!(s1, s2, "same bytes over NEO and from the data.fs");
        let out = py(&c, &load)
            .arg(testkit::repo().join("python/wcfs_testdata"))
            .arg(oid.to_string())
            .output()
            .unwrap();
        let n2 = cpu_of(&nodes);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let f: Vec<&str> = text.split_ascii_whitespace().collect();
        assert_eq!(f.len(), 3, "N SECONDS CPU: {text}");
        assert_eq!(f[0].parse::<u64>().unwrap(), nblk * BS, "python bytes");
        let t_py: f64 = f[1].parse().unwrap();
        neo.push(mibs(t_neo));
        file.push(mibs(t_file));
        r_file.push(t_file / t_neo);
        pyv.push(mibs(t_py));
        r_py.push(t_py / t_neo);
        c_file.push(ms_per_mib(cpu_file));
        c_neo.push(ms_per_mib(cpu_neo));
        c_nodes.push(ms_per_mib(n1 - n0));
        c_nodes_py.push(ms_per_mib(n2 - n1));
        c_py.push(ms_per_mib(f[2].parse().unwrap()));
    }
    loads.push(loadavg());
    println!(
        "  min / median / max over {reps} reps; load average (1 min) during them: {}",
        mmm(&loads)
    );
    line(
        "cold wcfsd neo://",
        &neo,
        "cold wcfsd file://",
        &file,
        &r_file,
    );
    line("cold wcfsd neo://", &neo, "Python neo Storage", &pyv, &r_py);
    println!(
        "  CPU ms per MiB: wcfsd neo:// {}, wcfsd file:// {}; both storage nodes serving wcfsd {}, \
         serving Python {}; the Python client {} (process time, with its start)",
        mmm(&c_neo),
        mmm(&c_file),
        mmm(&c_nodes),
        mmm(&c_nodes_py),
        mmm(&c_py)
    );

    // The driver alone (no FUSE): every block's ZBlk one load at a time,
    // then from 8 threads at once.
    let zs = zodb::zurl::open(&c.zurl()).unwrap();
    let head = zs.last_tid().unwrap();
    let zf = zodb::bigfile::ZBigFile::load(&*zs, oid, head).unwrap();
    let zblks: Vec<Oid> = (0..nblk)
        .map(|b| {
            zf.load_block(&*zs, b, head)
                .unwrap()
                .zblk
                .expect("no holes")
                .oid
        })
        .collect();
    let (mut seq, mut par, mut r, mut c_raw, mut busy) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let t0 = Instant::now();
        for &z in &zblks {
            assert!(zs.load(z, head).unwrap().data.len() as u64 >= BS);
        }
        let t_seq = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let n0 = cpu_of(&nodes);
        std::thread::scope(|s| {
            for k in 0..8 {
                let (zs, zblks) = (&zs, &zblks);
                s.spawn(move || {
                    for &z in zblks.iter().skip(k).step_by(8) {
                        assert!(zs.load(z, head).unwrap().data.len() as u64 >= BS);
                    }
                });
            }
        });
        let t_par = t0.elapsed().as_secs_f64();
        let n1 = cpu_of(&nodes) - n0;
        c_raw.push(ms_per_mib(n1));
        // How busy the storage nodes were, each (1: all the time).
        busy.push(n1 / 2.0 / t_par);
        seq.push(mibs(t_seq));
        par.push(mibs(t_par));
        r.push(t_seq / t_par);
    }
    line("zodb neo 8 threads", &par, "zodb neo one by one", &seq, &r);
    println!(
        "  zodb neo 8 threads: storage nodes CPU ms per MiB {}, each busy {} of the time",
        mmm(&c_raw),
        mmm(&busy)
    );

    // Head lag: tpc_finish returned → our watcher has it.
    let zs = zodb::zurl::open(&c.zurl()).unwrap();
    let mut w = zs.watch(zs.last_tid().unwrap()).unwrap();
    let mut k = py(&c, &commit)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(k.stdout.take().unwrap());
    let mut inp = k.stdin.take().unwrap();
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), "ready");
    let mut lags = Vec::new();
    for _ in 0..100 {
        writeln!(inp, "go").unwrap();
        let cm = w
            .next_timeout(Duration::from_secs(30))
            .unwrap()
            .expect("a commit");
        let got = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        l.clear();
        out.read_line(&mut l).unwrap();
        let (t, tid) = l.trim().split_once(' ').unwrap();
        assert_eq!(tid, cm.tid.to_string());
        lags.push(got - t.parse::<f64>().unwrap());
    }
    drop(inp);
    let _ = k.wait();
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  head lag (tpc_finish returned -> watcher has it), 100 commits: median {:.2} ms, \
         p90 {:.2} ms, max {:.2} ms (negative: we had it before the committer)",
        lags[50] * 1e3,
        lags[90] * 1e3,
        lags[99] * 1e3
    );
}
