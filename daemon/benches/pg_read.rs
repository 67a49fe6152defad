//! Cold reads through wcfsd over PostgreSQL (RelStorage) (harness = false).
//!
//! One ZBigFile of `WCFS_BENCH_MIB` MiB (default 512) in 2 MiB ZBlk0 blocks
//! of random bytes, generated once by `python/wcfs_testdata/benchgen.py`
//! into `bench-data/pg_read/data.fs`, then copied into a throwaway
//! PostgreSQL cluster (RelStorage, history-preserving) with RelStorage's
//! own `zodbconvert` (the server with `shared_buffers = 1GB`, so that the
//! data is in its cache as on a production server). In every repetition,
//! back to back:
//!
//! - **PostgreSQL vs data.fs**: the whole file read cold (read(2), 1 MiB
//!   buffers) through a freshly started wcfsd on `postgresql://` against a
//!   freshly started wcfsd on the same data in the data.fs (`file://`, the
//!   file in the page cache). Target: ratio ≥ 0.5;
//! - **PostgreSQL vs Python**: the same cold read against Python loading
//!   every block's ZBlk0 through a ZODB Connection on a RelStorage (fresh
//!   process, fresh caches), timed by the script. Target: wcfsd ≥ 3×;
//! - **TLS vs plain**: the same cold read through wcfsd over TLS
//!   (`sslmode=verify-full`, rustls) against plain (`sslmode=disable`),
//!   the same server (and the zodb crate's pipelined loads, both ways).
//!   Target: TLS costs ≤ 10% (ratio ≥ 0.9);
//! - **zodb over PostgreSQL**: for reference, the zodb crate's
//!   `load_block` of every block, one at a time, and pipelined
//!   (`PgStorage::load_many`, 8 blocks in flight) over the default two
//!   connections against one, plain and over TLS: one server process
//!   serves a connection.
//!
//! Ratios are ours / theirs in speed (higher is better for us); best and
//! median over the repetitions (after one warm-up round) are printed.
//!
//! Run: `cargo bench -p wcfsd --bench pg_read` (root, /dev/fuse, Debian's
//! postgresql; Python with RelStorage: `$WCFS_PYTHON`, default the
//! repository's `.venv/bin/python`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::{cold_read, cold_read_cpu, read_all};

use std::path::Path;
use std::process::Command;
use std::time::Instant;
use zodb::bigfile::ZBigFile;
use zodb::storage::postgres::{PgOptions, PgStorage};
use zodb::storage::Resilience;
use zodb::{Oid, Storage};

const BS: u64 = 2 << 20;
const REPS: usize = 5;
const MIB: f64 = (1 << 20) as f64;

/// Loads every block through a ZODB Connection over RelStorage, as a
/// Python client of wendelin.core would; prints bytes and seconds.
const PY_LOAD: &str = r#"
import sys, time
sys.path.insert(0, sys.argv[2])
import ZODB
from ZODB.utils import p64
import pgstorage
db = ZODB.DB(pgstorage.open_relstorage(sys.argv[1], read_only=True))
conn = db.open()
f = conn.get(p64(int(sys.argv[3], 16)))
f._p_activate()
t0 = time.perf_counter()
n = 0
for blk, zblk in f.blktab.items():
    n += len(zblk.loadblkdata(f.blksize))
    zblk._p_deactivate()  # keep memory flat, as a client streaming through
dt = time.perf_counter() - t0
print("%d %.6f" % (n, dt))
"#;

/// `zodbconvert` from the data.fs into the database `zurl`.
fn convert(datafs: &Path, dsn: &str, dir: &Path) {
    let conf = dir.join("convert.conf");
    std::fs::write(
        &conf,
        format!(
            "%import relstorage\n\
             <filestorage source>\n  path {}\n  read-only true\n</filestorage>\n\
             <relstorage destination>\n  keep-history true\n  <postgresql>\n    dsn {dsn}\n  \
             </postgresql>\n</relstorage>\n",
            datafs.display()
        ),
    )
    .unwrap();
    let zodbconvert = common::python().parent().unwrap().join("zodbconvert");
    let out = Command::new(zodbconvert).arg(&conf).output().unwrap();
    assert!(
        out.status.success(),
        "zodbconvert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every block with `load_block` over a fresh connection: (one at a
/// time, pipelined 8 deep) seconds.
fn zodb_pg(zurl: &str, oid: Oid, nblk: u64, conns: usize) -> (f64, f64) {
    let opts = PgOptions {
        load_connections: conns,
        ..PgOptions::default()
    };
    let st = PgStorage::open_with(zurl, &Resilience::default(), opts).unwrap();
    // The loaders open in the background.
    let t0 = Instant::now();
    while st.load_connections() < conns {
        assert!(t0.elapsed().as_secs() < 10, "no {conns} load connections");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let head = st.last_tid().unwrap();
    let zf = ZBigFile::load(&st, oid, head).unwrap();
    let t0 = Instant::now();
    let mut zblks = Vec::with_capacity(nblk as usize);
    for blk in 0..nblk {
        let b = zf.load_block(&st, blk, head).unwrap();
        assert_eq!(b.data.len() as u64, BS);
        zblks.push(b.zblk.expect("no holes").oid);
    }
    let t_seq = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for chunk in zblks.chunks(8) {
        let reqs: Vec<_> = chunk.iter().map(|&z| (z, head)).collect();
        for r in st.load_many(&reqs) {
            assert!(r.unwrap().data.len() as u64 >= BS);
        }
    }
    (t_seq, t0.elapsed().as_secs_f64())
}

fn python_pg(zurl: &str, script: &Path, oid: Oid, nblk: u64) -> f64 {
    let out = Command::new(common::python())
        .arg(script)
        .arg(zurl)
        .arg(testkit::repo().join("python/wcfs_testdata"))
        .arg(oid.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (n, dt) = text.trim().split_once(' ').expect("N SECONDS");
    assert_eq!(n.parse::<u64>().unwrap(), nblk * BS, "python bytes");
    dt.parse().unwrap()
}

fn best_median(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| b.partial_cmp(a).unwrap());
    (v[0], v[v.len() / 2])
}

fn line(what: &str, ours: &[f64], theirs_name: &str, theirs: &[f64], ratio: &[f64]) {
    let (ob, om) = best_median(ours);
    let (tb, tm) = best_median(theirs);
    let (rb, rm) = best_median(ratio);
    println!(
        "  {what:<22} {ob:>6.0} / {om:>6.0} MiB/s   {theirs_name:<24} {tb:>6.0} / {tm:>6.0} MiB/s   \
         ratio {rb:.2} / {rm:.2}"
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches probes with --list
    }
    let mib: u64 = std::env::var("WCFS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let d = testkit::bench_data("pg_read", mib.max(2), BS);
    let (oid, nblk) = (Oid(d.oid), d.nblk);
    read_all(&d.path); // in the page cache: "cold" is about the daemon
    let total = (nblk * BS) as f64 / MIB;
    let tmp = tempfile::Builder::new()
        .prefix("wcfs-bench")
        .tempdir()
        .unwrap();
    let script = tmp.path().join("load.py");
    std::fs::write(&script, PY_LOAD).unwrap();

    // A server that keeps the data in its own cache, as a production one
    // would (the tests' clusters have 32 MB of shared buffers).
    // TLS on, plain connections allowed too: TLS and plain against the
    // same server.
    let pki = testkit::certs::Pki::make(&tmp.path().join("pki"), "postgres");
    let mut pg = testkit::PgServer::start_tls_with(
        "shared_buffers = 1GB",
        &pki.ca,
        &pki.server.cert,
        &pki.server.key,
    );
    pg.set_hba("local all all trust\nhost all postgres 127.0.0.1/32 trust\n");
    pg.create_db("bench");
    let t0 = Instant::now();
    convert(
        &d.path,
        &format!("host=127.0.0.1 port={} dbname=bench user=postgres", pg.port),
        tmp.path(),
    );
    println!(
        "pg_read: {total:.0} MiB in {nblk} blocks of 2 MiB (ZBlk0, random bytes); copied into \
         PostgreSQL by zodbconvert in {:.1}s; {REPS} reps; best / median; ratio = ours / theirs \
         (higher is better for us)",
        t0.elapsed().as_secs_f64()
    );
    let pg_zurl = pg.zurl_with("postgres", "127.0.0.1", "bench", "sslmode=disable");
    let tls_zurl = pg.zurl_with(
        "postgres",
        "127.0.0.1",
        "bench",
        &format!("sslmode=verify-full&sslrootcert={}", pki.ca.display()),
    );
    let file_zurl = format!("file://{}", d.path.display());
    let mibs = |t: f64| total / t;
    let (mut pgr, mut file, mut r_file) = (vec![], vec![], vec![]);
    let (mut py, mut r_py) = (vec![], vec![]);
    let (mut zseq, mut zpipe) = (vec![], vec![]);
    let (mut tls, mut r_tls) = (vec![], vec![]);
    let (mut ztls, mut r_ztls) = (vec![], vec![]);
    let (mut zpipe1, mut r_z21, mut zpipe1_tls, mut r_z21_tls) = (vec![], vec![], vec![], vec![]);
    // CPU ms per MiB of (wcfsd, the server), plain and over TLS.
    let (mut cpu_plain, mut cpu_tls) = (vec![], vec![]);
    // A warm-up round, not counted: the server's cache, the page cache.
    cold_read(&file_zurl, tmp.path(), oid, nblk * BS);
    cold_read(&pg_zurl, tmp.path(), oid, nblk * BS);
    cold_read(&tls_zurl, tmp.path(), oid, nblk * BS);
    for _ in 0..REPS {
        let (t_file, s1) = cold_read(&file_zurl, tmp.path(), oid, nblk * BS);
        let srv0 = server_cpu(&pg);
        let (t_pg, s2, c_pg) = cold_read_cpu(&pg_zurl, tmp.path(), oid, nblk * BS);
        let srv1 = server_cpu(&pg);
        assert_eq!(s1, s2, "same bytes from PostgreSQL and from the data.fs");
        let (t_tls, s3, c_tls) = cold_read_cpu(&tls_zurl, tmp.path(), oid, nblk * BS);
        let srv2 = server_cpu(&pg);
        assert_eq!(s1, s3, "same bytes over TLS");
        let per_mib = |cpu: f64| cpu * 1000.0 / total;
        cpu_plain.push((per_mib(c_pg), per_mib(srv1 - srv0)));
        cpu_tls.push((per_mib(c_tls), per_mib(srv2 - srv1)));
        tls.push(mibs(t_tls));
        r_tls.push(t_pg / t_tls);
        let t_py = python_pg(&pg_zurl, &script, oid, nblk);
        let (t_seq, t_pipe) = zodb_pg(&pg_zurl, oid, nblk, 2);
        let (_, t_pipe_tls) = zodb_pg(&tls_zurl, oid, nblk, 2);
        let (_, t_pipe1) = zodb_pg(&pg_zurl, oid, nblk, 1);
        let (_, t_pipe1_tls) = zodb_pg(&tls_zurl, oid, nblk, 1);
        ztls.push(mibs(t_pipe_tls));
        r_ztls.push(t_pipe / t_pipe_tls);
        zpipe1.push(mibs(t_pipe1));
        r_z21.push(t_pipe1 / t_pipe);
        zpipe1_tls.push(mibs(t_pipe1_tls));
        r_z21_tls.push(t_pipe1_tls / t_pipe_tls);
        pgr.push(mibs(t_pg));
        file.push(mibs(t_file));
        r_file.push(t_file / t_pg);
        py.push(mibs(t_py));
        r_py.push(t_py / t_pg);
        zseq.push(mibs(t_seq));
        zpipe.push(mibs(t_pipe));
    }
    line(
        "cold wcfsd postgresql://",
        &pgr,
        "cold wcfsd file://",
        &file,
        &r_file,
    );
    line(
        "cold wcfsd postgresql://",
        &pgr,
        "Python RelStorage",
        &py,
        &r_py,
    );
    line(
        "cold wcfsd over TLS",
        &tls,
        "cold wcfsd plain",
        &pgr,
        &r_tls,
    );
    let med = |v: &[(f64, f64)], side: fn(&(f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(side).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    println!(
        "  CPU ms per MiB (medians): wcfsd plain {:.2}, over TLS {:.2}; the server's backends \
         plain {:.2}, over TLS {:.2}",
        med(&cpu_plain, |c| c.0),
        med(&cpu_tls, |c| c.0),
        med(&cpu_plain, |c| c.1),
        med(&cpu_tls, |c| c.1),
    );
    line(
        "zodb pg pipelined TLS",
        &ztls,
        "zodb pg pipelined plain",
        &zpipe,
        &r_ztls,
    );
    line(
        "zodb pg pipelined, 2 connections",
        &zpipe,
        "1 connection",
        &zpipe1,
        &r_z21,
    );
    line(
        "zodb pg pipelined TLS, 2 connections",
        &ztls,
        "1 connection",
        &zpipe1_tls,
        &r_z21_tls,
    );
    let r: Vec<f64> = zpipe.iter().zip(&zseq).map(|(p, s)| p / s).collect();
    line("zodb pg pipelined", &zpipe, "zodb pg one by one", &zseq, &r);
}

/// CPU seconds the server's processes spent so far: the postmaster's own
/// and that of its children it reaped (a backend exits when its client
/// disconnects: wcfsd stopped means its backend is counted once reaped),
/// and the living ones'.
fn server_cpu(pg: &testkit::PgServer) -> f64 {
    // Let the postmaster reap the backend of the daemon just stopped.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pm = pg.postmaster_pid();
    let own = common::bench::cpu_secs_with_reaped(pm);
    let children: f64 = std::fs::read_to_string(format!("/proc/{pm}/task/{pm}/children"))
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .map(common::bench::cpu_secs)
        .sum();
    own + children
}
