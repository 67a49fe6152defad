//! Cold reads through wcfsd over ZEO (harness = false).
//!
//! One ZBigFile of `WCFS_BENCH_MIB` MiB (default 512) in 2 MiB ZBlk0 blocks
//! of random bytes, generated once by `python/wcfs_testdata/benchgen.py`
//! into `bench-data/zeo_read/` and served by a real `runzeo`. In every
//! repetition, back to back:
//!
//! - **ZEO vs data.fs**: the whole file read cold (read(2), 1 MiB buffers)
//!   through a freshly started wcfsd on `zeo://` against a freshly started
//!   wcfsd on the same data.fs (`file://`; the file in the page cache both
//!   times). Target: ratio ≥ 0.5;
//! - **ZEO vs Python**: the same cold read against Python's ZEO
//!   `ClientStorage` (fresh process, fresh client cache) loading every
//!   block's ZBlk0 through a ZODB Connection, timed by the script. Target:
//!   wcfsd ≥ 2× faster;
//! - **zodb over ZEO**: for reference, the zodb crate's `load_block` of
//!   every block over one ZEO connection, one request at a time, and
//!   pipelined (`ZeoStorage::load_many`, 8 blocks in flight).
//!
//! All of it twice: with the server marshalling with pickle (`runzeo`'s
//! default), then with msgpack (`$ZEO_MSGPACK`). Then **TLS vs plain**
//! (pickle): in every repetition the cold wcfsd read and the zodb
//! one-at-a-time loads over `zeos://` (`runzeo` with `<ssl>` and client
//! authentication; certificates made for the run) right after the same over
//! plain `zeo://` (one server at a time: both would lock the data.fs).
//! Target: TLS at most 10% slower (ratio ≥ 0.9). The Python server is the
//! bottleneck either way: per 2 MiB reply it reads the record into a fresh
//! buffer (heap grown and shrunk every time), encodes it (its pickle
//! encoder alone takes milliseconds; msgpack is a copy) and sends it from
//! one event-loop thread. Our one-at-a-time loads and the cold wcfsd read
//! both run at about the rate the server serves; more requests in flight
//! only make its write buffer churn (see "pipelined").
//!
//! Ratios are ours / theirs in speed (higher is better for us); best and
//! median over the repetitions are printed.
//!
//! Run: `cargo bench -p wcfsd --bench zeo_read [-- SECTION]` (root,
//! /dev/fuse; Python with ZEO: `$WCFS_PYTHON`, default the repository's
//! `.venv/bin/python`); SECTION `pickle`, `msgpack` or `tls` runs that one
//! only; `$WCFS_BENCH_REPS` repetitions (default 3).

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::{cold_read, read_all};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use zodb::bigfile::ZBigFile;
use zodb::storage::zeo::ZeoStorage;
use zodb::{Oid, Storage};

const BS: u64 = 2 << 20;
const MIB: f64 = (1 << 20) as f64;

/// Loads every block through a ZODB Connection over a ZEO ClientStorage,
/// as a Python client of wendelin.core would; prints bytes and seconds.
const PY_LOAD: &str = r#"
import sys, time
sys.path.insert(0, sys.argv[2])
import ZODB
from ZEO.ClientStorage import ClientStorage
from ZODB.utils import p64
host, port = sys.argv[1].rsplit(":", 1)
db = ZODB.DB(ClientStorage((host, int(port)), read_only=True))
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

/// The cached database, in the page cache: path, ZBigFile oid, number of
/// blocks.
fn data(mib: u64) -> (PathBuf, Oid, u64) {
    let d = testkit::bench_data("zeo_read", mib, BS);
    std::fs::File::open(&d.path).unwrap().sync_all().unwrap();
    read_all(&d.path); // in the page cache: "cold" is about the daemon
    (d.path, Oid(d.oid), d.nblk)
}

/// Every block with `load_block` over a fresh ZEO connection: (one at a
/// time, pipelined 8 deep) seconds.
fn zodb_zeo(port: u16, oid: Oid, nblk: u64) -> (f64, f64) {
    let zs = ZeoStorage::open("127.0.0.1", port, "zeo://bench").unwrap();
    let head = zs.last_tid().unwrap();
    let zf = ZBigFile::load(&zs, oid, head).unwrap();
    let t0 = Instant::now();
    let mut zblks = Vec::with_capacity(nblk as usize);
    for blk in 0..nblk {
        let b = zf.load_block(&zs, blk, head).unwrap();
        assert_eq!(b.data.len() as u64, BS);
        zblks.push(b.zblk.expect("no holes").oid);
    }
    let t_seq = t0.elapsed().as_secs_f64();
    // The same ZBlk records, 8 requests in flight.
    let t0 = Instant::now();
    for chunk in zblks.chunks(8) {
        let reqs: Vec<_> = chunk.iter().map(|&z| (z, head)).collect();
        for r in zs.load_many(&reqs) {
            assert!(r.unwrap().data.len() as u64 >= BS);
        }
    }
    (t_seq, t0.elapsed().as_secs_f64())
}

/// CPU time (user + system) of this process so far, in seconds.
fn cpu_time() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage, RUSAGE_SELF.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(r, 0, "getrusage");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) of process `pid` so far, in seconds.
fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's ")": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Every block with `load_block`, one request at a time, through the
/// storage `zurl` opens: (seconds, CPU seconds of this process — all of
/// it the client's, decryption included).
fn zodb_seq(zurl: &str, oid: Oid, nblk: u64) -> (f64, f64) {
    let st = zodb::zurl::open(zurl).unwrap_or_else(|e| panic!("{e}"));
    let head = st.last_tid().unwrap();
    let zf = ZBigFile::load(&*st, oid, head).unwrap();
    let (t0, c0) = (Instant::now(), cpu_time());
    for blk in 0..nblk {
        let b = zf.load_block(&*st, blk, head).unwrap();
        assert_eq!(b.data.len() as u64, BS);
    }
    (t0.elapsed().as_secs_f64(), cpu_time() - c0)
}

fn python_zeo(addr: &str, script: &Path, oid: Oid, nblk: u64) -> f64 {
    let out = Command::new(common::python())
        .arg(script)
        .arg(addr)
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
        "  {what:<20} {ob:>6.0} / {om:>6.0} MiB/s   {theirs_name:<22} {tb:>6.0} / {tm:>6.0} MiB/s   \
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
    let reps: usize = std::env::var("WCFS_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let (path, oid, nblk) = data(mib.max(2));
    let total = (nblk * BS) as f64 / MIB;
    let tmp = tempfile::Builder::new()
        .prefix("wcfs-bench")
        .tempdir()
        .unwrap();
    let script = tmp.path().join("load.py");
    std::fs::write(&script, PY_LOAD).unwrap();
    let file_zurl = format!("file://{}", path.display());
    let mibs = |t: f64| total / t;
    println!(
        "zeo_read: {total:.0} MiB in {nblk} blocks of 2 MiB (ZBlk0, random bytes), runzeo on \
         loopback, {reps} reps; best / median; ratio = ours / theirs (higher is better for us)"
    );
    for (codec, msgpack) in [("pickle", false), ("msgpack", true)] {
        if !run(codec) {
            continue;
        }
        // One server at a time: both would lock the same data.fs.
        let srv = testkit::ZeoServer::start_with(&path, msgpack);
        let (mut zeo, mut file, mut r_file) = (vec![], vec![], vec![]);
        let (mut py, mut r_py) = (vec![], vec![]);
        let (mut zseq, mut zpipe) = (vec![], vec![]);
        for _ in 0..reps {
            let (t_file, s1) = cold_read(&file_zurl, tmp.path(), oid, nblk * BS);
            let (t_zeo, s2) = cold_read(&srv.zurl(), tmp.path(), oid, nblk * BS);
            assert_eq!(s1, s2, "same bytes over ZEO and from the data.fs");
            let t_py = python_zeo(&srv.addr(), &script, oid, nblk);
            let (t_seq, t_pipe) = zodb_zeo(srv.port, oid, nblk);
            zeo.push(mibs(t_zeo));
            file.push(mibs(t_file));
            r_file.push(t_file / t_zeo);
            py.push(mibs(t_py));
            r_py.push(t_py / t_zeo);
            zseq.push(mibs(t_seq));
            zpipe.push(mibs(t_pipe));
        }
        drop(srv);
        println!(" server marshalling with {codec}:");
        line(
            "cold wcfsd zeo://",
            &zeo,
            "cold wcfsd file://",
            &file,
            &r_file,
        );
        line(
            "cold wcfsd zeo://",
            &zeo,
            "Python ZEO ClientStorage",
            &py,
            &r_py,
        );
        let r: Vec<f64> = zpipe.iter().zip(&zseq).map(|(p, s)| p / s).collect();
        line(
            "zodb zeo pipelined",
            &zpipe,
            "zodb zeo one by one",
            &zseq,
            &r,
        );
    }

    // TLS next to plain, alternating within each repetition.
    if !run("tls") {
        return;
    }
    let pki = testkit::certs::Pki::make(&tmp.path().join("pki"), "wcfs");
    let (mut plain, mut tls, mut r_cold) = (vec![], vec![], vec![]);
    let (mut zplain, mut ztls, mut r_zodb) = (vec![], vec![], vec![]);
    let (mut cplain, mut ctls) = (vec![], vec![]);
    let (mut splain, mut stls) = (vec![], vec![]);
    for _ in 0..reps {
        let srv = testkit::ZeoServer::start(&path);
        let c0 = proc_cpu(srv.pid().unwrap());
        let (t_plain, s1) = cold_read(&srv.zurl(), tmp.path(), oid, nblk * BS);
        splain.push((proc_cpu(srv.pid().unwrap()) - c0) * 1e3 / total);
        let (z_plain, c_plain) = zodb_seq(&srv.zurl(), oid, nblk);
        drop(srv);
        let srv = testkit::ZeoServer::start_tls(&path, &pki, &pki.server, None);
        let c0 = proc_cpu(srv.pid().unwrap());
        let (t_tls, s2) = cold_read(&srv.zurl(), tmp.path(), oid, nblk * BS);
        stls.push((proc_cpu(srv.pid().unwrap()) - c0) * 1e3 / total);
        assert_eq!(s1, s2, "same bytes over TLS and plain");
        let (z_tls, c_tls) = zodb_seq(&srv.zurl(), oid, nblk);
        drop(srv);
        plain.push(mibs(t_plain));
        tls.push(mibs(t_tls));
        r_cold.push(t_plain / t_tls);
        zplain.push(mibs(z_plain));
        ztls.push(mibs(z_tls));
        r_zodb.push(z_plain / z_tls);
        cplain.push(c_plain * 1e3 / total);
        ctls.push(c_tls * 1e3 / total);
    }
    println!(" TLS (zeos://, client certificates) vs plain, pickle:");
    line(
        "cold wcfsd zeos://",
        &tls,
        "cold wcfsd zeo://",
        &plain,
        &r_cold,
    );
    line(
        "zodb zeos one by one",
        &ztls,
        "zodb zeo one by one",
        &zplain,
        &r_zodb,
    );
    // CPU time is steadier than throughput on a busy machine; the one
    // event-loop thread of the server sets the pace.
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!(
        "  CPU per MiB (median): runzeo serving the cold read: zeos:// {:.2} ms, zeo:// {:.2} ms; \
         zodb client one by one: zeos:// {:.2} ms, zeo:// {:.2} ms",
        med(&stls),
        med(&splain),
        med(&ctls),
        med(&cplain)
    );
}
