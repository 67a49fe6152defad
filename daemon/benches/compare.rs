//! Any number of WCFS server binaries side by side, on the same data, in
//! the same run (harness = false).
//!
//! Every server is started as `BINARY ZURL MOUNTPOINT` (upstream's Go
//! server takes the same command line) and stopped with SIGTERM; SIGKILL
//! after 20 s; then, if the mount is still there (the Go server leaves it
//! behind when it exits), `fusermount3 -u`, lazily (`-z`) if busy.
//! A server is ready when `head/at` reads back a tid.
//!
//! The servers: `$WCFS_COMPARE`, space-separated `NAME=PATH` (a bare PATH
//! is named by its file name), e.g. `WCFS_COMPARE="wcfsd=target/release/wcfsd
//! go=../shared/upstream/wcfs-go"`. Default: our wcfsd (the one cargo
//! built for this bench: release), then upstream's `wcfs-go` from
//! `$WCFS_SHARED/upstream` (else `../shared/upstream` beside the
//! repository) when it is there; without it, wcfsd is compared with
//! itself, and the bench says so. Every figure is printed for every server
//! as median [min–max] over `$WCFS_COMPARE_RUNS` runs (default 3), with
//! the ratio to the FIRST server taken within each run, as
//! `first / this` of the figure (MiB/s: >1 means the first is faster;
//! µs: <1 means the first costs less). Within a run the servers take
//! turns, in an order rotated from run to run.
//!
//! Figures:
//! - cold read(2) and cold mmap of the whole `head/bigfile/<oid>` through
//!   a freshly started server, with 4 KiB, 64 KiB and 2 MiB ZBlk0 blocks of
//!   random bytes: files of `$WCFS_COMPARE_MIB` MiB (default 128) for
//!   4 KiB and 64 KiB, 4× that (512) for 2 MiB. The data (made once by
//!   `python/wcfs_testdata/benchgen.py` into `bench-data/compare-*`) is
//!   read into the page cache first: "cold" is about the server, not the
//!   disk. read(2) goes in 1 MiB buffers; mmap reads 8 bytes at a time.
//!   Every server must give the same checksum.
//! - Python in-process, the extra baseline: ZODB loading every block's
//!   ZBlk0 through a Connection (no server), same files; printed with the
//!   ratio `server / Python` of cold read(2).
//! - pin cost with libwcfs's pinner: 1 or 8 client processes (this program
//!   re-executed) each hold a Conn at head with the whole file `P` mapped
//!   and touched; one commit changes every block of `P` and of `Q` (16 KiB
//!   blocks, 256 each); then blocks are read with pread(2) alternately
//!   from `Q` (nobody watches it) and `P` (every client must be pinned —
//!   the pinner re-maps the block from `@<rev>` and acks — before the read
//!   returns). The figure is the median over the blocks of
//!   `read(P, b) − read(Q, b)`: the extra cost of a changed-block read.
//!   The `pin` counter of `.wcfs/stats` must have grown by clients × blocks.
//!   Each pin figure is measured twice: quiet, and under a fixed load the
//!   bench starts itself — `stress-ng --cpu N` (`$WCFS_COMPARE_CPU`,
//!   default 2) plus a Python process committing 4 MiB records to another
//!   FileStorage in a loop (fsync per commit; the file is restarted every
//!   256 MiB). No `stress-ng --io` on FUSE.
//!
//! `$WCFS_COMPARE_FIGURES` picks a subset (comma-separated: `read`,
//! `mmap`, `python`, `pin`; default all) and `$WCFS_COMPARE_BLOCKS` the
//! block sizes (`4k,64k,2m`). The load average is printed at the start and
//! at the end: on a shared machine only the ratios of one run compare.
//!
//! Run: `cargo bench -p wcfsd --bench compare` (root, /dev/fuse, Python:
//! `$WCFS_PYTHON`, stress-ng for the loaded pin figures).

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::read_all;
use common::watch::pread_random_fd;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

const MIB: f64 = (1 << 20) as f64;
const ROLE: &str = "WCFS_COMPARE_ROLE";
/// Blocks of the pin files, and their size.
const PIN_M: u64 = 256;
const PIN_BS: u64 = 16 << 10;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("${name}: {s:?} is not a valid value")),
        Err(_) => default,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// Servers.

struct Server {
    name: String,
    bin: PathBuf,
}

fn servers() -> (Vec<Server>, Option<String>) {
    let parse = |w: &str| {
        let (name, path) = match w.split_once('=') {
            Some((n, p)) => (n.to_string(), PathBuf::from(p)),
            None => {
                let p = PathBuf::from(w);
                let n = p
                    .file_name()
                    .map_or(w.into(), |n| n.to_string_lossy().into());
                (n, p)
            }
        };
        let bin = path
            .canonicalize()
            .unwrap_or_else(|e| panic!("$WCFS_COMPARE: {}: {e}", path.display()));
        Server { name, bin }
    };
    if let Ok(list) = std::env::var("WCFS_COMPARE") {
        let v: Vec<Server> = list.split_whitespace().map(parse).collect();
        assert!(!v.is_empty(), "$WCFS_COMPARE names no server");
        return (v, None);
    }
    let ours = Server {
        name: "wcfsd".into(),
        bin: common::wcfsd_bin(),
    };
    let shared = std::env::var_os("WCFS_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::repo().join("../shared"));
    let go = shared.join("upstream/wcfs-go");
    if go.exists() {
        (
            vec![
                ours,
                Server {
                    name: "go".into(),
                    bin: go.canonicalize().unwrap(),
                },
            ],
            None,
        )
    } else {
        let again = Server {
            name: "wcfsd'".into(),
            bin: common::wcfsd_bin(),
        };
        (
            vec![ours, again],
            Some(format!(
                "no {}: comparing wcfsd with itself (set $WCFS_COMPARE or $WCFS_SHARED)",
                go.display()
            )),
        )
    }
}

/// A server mounted at `mnt`, stopped on drop.
struct Mount {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Mount {
    fn start(bin: &Path, zurl: &str, mnt: &Path, log: &Path) -> Mount {
        std::fs::create_dir_all(mnt).unwrap();
        let logf = std::fs::File::create(log).unwrap();
        let child = Command::new(bin)
            .arg(zurl)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut m = Mount {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = m.child.as_mut().unwrap().try_wait() {
                m.child = None;
                panic!("{} exited ({st}):\n{}", bin.display(), m.log());
            }
            if common::is_mounted(mnt) && m.try_head().is_some() {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after 60s:\n{}",
                bin.display(),
                m.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_head(&self) -> Option<Tid> {
        std::fs::read_to_string(self.mnt.join("head/at"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn wait_head(&self, tid: Tid) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.try_head().is_none_or(|h| h < tid) {
            assert!(
                Instant::now() < deadline,
                "head/at does not reach {tid}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn head_file(&self, oid: Oid) -> PathBuf {
        self.mnt.join(format!("head/bigfile/{oid}"))
    }

    fn pins(&self) -> i64 {
        common::watch::stats(&self.mnt)
            .get("pin")
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if common::wait_timeout(&mut c, Duration::from_secs(20)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if common::is_mounted(&self.mnt) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                common::unmount(&self.mnt);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Cold reads.

struct Data {
    label: &'static str,
    path: PathBuf,
    zurl: String,
    oid: Oid,
    size: u64,
}

fn data(label: &'static str, mib: u64, bs: u64) -> Data {
    let d = testkit::bench_data(&format!("compare-{label}"), mib, bs);
    std::fs::File::open(&d.path).unwrap().sync_all().unwrap();
    Data {
        label,
        zurl: format!("file://{}", d.path.display()),
        path: d.path,
        oid: Oid(d.oid),
        size: d.nblk * bs,
    }
}

/// Reads every byte through a mapping, 8 at a time: (seconds, checksum).
fn mmap_all(path: &Path) -> (f64, u64) {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: read-only mapping of a file nobody changes during the bench.
    let m = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    let t0 = Instant::now();
    let sum = m
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .fold(0u64, u64::wrapping_add);
    (t0.elapsed().as_secs_f64(), sum)
}

/// MiB/s of one cold read of `d` through a fresh `bin`, and the checksum.
fn cold(bin: &Path, d: &Data, tmp: &Path, mmap: bool) -> (f64, u64) {
    // The data in the page cache (another server may have pushed it out).
    read_all(&d.path);
    let m = Mount::start(bin, &d.zurl, &tmp.join("mnt"), &tmp.join("server.log"));
    let path = m.head_file(d.oid);
    let (t, sum) = if mmap {
        mmap_all(&path)
    } else {
        let (t, n, sum) = read_all(&path);
        assert_eq!(n, d.size, "{}: bytes read", path.display());
        (t, sum)
    };
    drop(m);
    (d.size as f64 / MIB / t, sum)
}

/// Loads every block of the ZBigFile through a ZODB Connection, as a
/// Python client of wendelin.core would, and prints its own MiB/s.
const PY_LOAD: &str = r#"
import sys, time
sys.path.insert(0, sys.argv[2])
import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.utils import p64
path, oid = sys.argv[1], int(sys.argv[3], 16)
db = ZODB.DB(FileStorage(path, read_only=True))
conn = db.open()
f = conn.get(p64(oid))
f._p_activate()
t0 = time.perf_counter()
n = 0
for blk, zblk in f.blktab.items():
    n += len(zblk.loadblkdata(f.blksize))
    zblk._p_deactivate()
dt = time.perf_counter() - t0
print("%d %.6f" % (n, dt))
"#;

fn python_load(d: &Data, script: &Path) -> f64 {
    read_all(&d.path);
    let out = Command::new(common::python())
        .arg(script)
        .arg(&d.path)
        .arg(testkit::repo().join("python/wcfs_testdata"))
        .arg(d.oid.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (n, dt) = text.trim().split_once(' ').expect("python: N SECONDS");
    assert_eq!(n.parse::<u64>().unwrap(), d.size, "python bytes");
    d.size as f64 / MIB / dt.parse::<f64>().unwrap()
}

// ---------------------------------------------------------------------------
// Pins.

/// Client role: a Conn at head with the whole file mapped and touched;
/// says `ready`, holds on until stdin closes.
fn pin_client() {
    let var = |n: &str| std::env::var(n).unwrap();
    let wc = wcfs::Wcfs::attach(var("MNT")).unwrap();
    let oid: Oid = var("OID").parse().unwrap();
    let nblk: i64 = var("NBLK").parse().unwrap();
    let conn = wc.connect(wc.head_at().unwrap()).unwrap();
    let fh = conn.open(oid).unwrap();
    let m = fh.mmap(0, nblk).unwrap();
    let len = m.mem_stop() as usize - m.mem_start() as usize;
    let mut s = 0u64;
    for off in (0..len).step_by(4096) {
        // SAFETY: inside the live mapping of `len` bytes.
        s = s.wrapping_add(unsafe { m.mem_start().add(off).read_volatile() } as u64);
    }
    println!("ready {s}");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    m.unmap().unwrap();
    conn.close().unwrap();
    wc.close().unwrap();
}

/// The fixed load of the loaded pin figures: CPU workers and a process
/// committing to another database.
struct Load {
    kids: Vec<Child>,
}

const COMMITTER: &str = r#"
import os, sys, transaction, ZODB
from ZODB.FileStorage import FileStorage
path = sys.argv[1]
while True:
    for ext in ('', '.index', '.lock', '.tmp'):
        if os.path.exists(path + ext):
            os.remove(path + ext)
    db = ZODB.DB(FileStorage(path), large_record_size=1 << 30)
    conn = db.open()
    root = conn.root()
    for i in range(64):
        root['x%d' % (i % 8)] = os.urandom(4 << 20)
        transaction.commit()
    conn.close()
    db.close()
"#;

impl Load {
    fn start(tmp: &Path) -> Load {
        let cpu: u32 = env_or("WCFS_COMPARE_CPU", 2);
        let stress = Command::new("stress-ng")
            .args(["--cpu", &cpu.to_string(), "--quiet"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start stress-ng (install it: apt-get install stress-ng)");
        let script = tmp.join("committer.py");
        std::fs::write(&script, COMMITTER).unwrap();
        let committer = Command::new(common::python())
            .arg(&script)
            .arg(tmp.join("load.fs"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start the committer");
        // Let both get going (warm-up, not synchronization).
        std::thread::sleep(Duration::from_secs(2));
        Load {
            kids: vec![stress, committer],
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.kids {
            // SIGTERM: stress-ng stops its workers.
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if common::wait_timeout(c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

struct PinSetup {
    py: common::Driver,
    m: Mount,
    p: Oid,
    q: Oid,
    seed: u64,
}

impl PinSetup {
    fn new(bin: &Path, dir: &Path) -> PinSetup {
        let datafs = dir.join("pin.fs");
        let mut py = common::Driver::start(&datafs);
        let p = py.new_file(PIN_BS);
        py.insrange(p, 0, PIN_M, 2, 1.0);
        let q = py.new_file(PIN_BS);
        py.insrange(q, 0, PIN_M, 3, 1.0);
        py.commit();
        let m = Mount::start(
            bin,
            &format!("file://{}", datafs.display()),
            &dir.join("pin-mnt"),
            &dir.join("pin-server.log"),
        );
        PinSetup {
            py,
            m,
            p,
            q,
            seed: 10,
        }
    }

    /// Median extra µs of a changed-block read that pins `k` clients.
    fn extra(&mut self, k: usize) -> f64 {
        let exe = std::env::current_exe().unwrap();
        let mut kids: Vec<Child> = (0..k)
            .map(|_| {
                Command::new(&exe)
                    .env(ROLE, "pin")
                    .env("MNT", &self.m.mnt)
                    .env("OID", self.p.to_string())
                    .env("NBLK", PIN_M.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in &mut kids {
            let mut line = String::new();
            BufReader::new(c.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.starts_with("ready "), "pin client: {line:?}");
        }
        self.seed += 2;
        self.py.insrange(self.p, 0, PIN_M, self.seed, 1.0);
        self.py.insrange(self.q, 0, PIN_M, self.seed + 1, 1.0);
        let tid = self.py.commit();
        self.m.wait_head(tid);
        let fp = std::fs::File::open(self.m.head_file(self.p)).unwrap();
        let fq = std::fs::File::open(self.m.head_file(self.q)).unwrap();
        let pins0 = self.m.pins();
        let mut extra = Vec::with_capacity(PIN_M as usize);
        for b in 0..PIN_M {
            let t0 = Instant::now();
            let nq = pread_random_fd(&fq, b, PIN_BS).unwrap().len();
            let t1 = Instant::now();
            let np = pread_random_fd(&fp, b, PIN_BS).unwrap().len();
            let t2 = Instant::now();
            assert_eq!((nq, np), (PIN_BS as usize, PIN_BS as usize));
            extra.push((t2 - t1).as_secs_f64() - (t1 - t0).as_secs_f64());
        }
        let pins = self.m.pins() - pins0;
        for mut c in kids {
            drop(c.stdin.take());
            assert!(c.wait().unwrap().success(), "pin client failed");
        }
        assert_eq!(pins, (k as u64 * PIN_M) as i64, "pins sent for {k} clients");
        median(&extra) * 1e6
    }
}

// ---------------------------------------------------------------------------
// Results.

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

fn fmt_stat(v: &[f64], prec: usize) -> String {
    let (lo, hi) = min_max(v);
    format!("{:.p$} [{lo:.p$}–{hi:.p$}]", median(v), p = prec)
}

/// figure → server index → one value per run.
#[derive(Default)]
struct Results {
    order: Vec<(String, &'static str)>,
    v: BTreeMap<String, Vec<Vec<f64>>>,
}

impl Results {
    fn add(&mut self, fig: &str, unit: &'static str, nserv: usize, server: usize, x: f64) {
        if !self.v.contains_key(fig) {
            self.order.push((fig.to_string(), unit));
            self.v.insert(fig.to_string(), vec![vec![]; nserv]);
        }
        self.v.get_mut(fig).unwrap()[server].push(x);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches probes with --list
    }
    if std::env::var(ROLE).is_ok() {
        pin_client();
        return;
    }
    let (servers, note) = servers();
    let runs: usize = env_or("WCFS_COMPARE_RUNS", 3);
    let mib: u64 = env_or("WCFS_COMPARE_MIB", 128);
    let figures: String = env_or("WCFS_COMPARE_FIGURES", "read,mmap,python,pin".to_string());
    let want = |f: &str| figures.split(',').any(|x| x.trim() == f);
    let blocks: String = env_or("WCFS_COMPARE_BLOCKS", "4k,64k,2m".to_string());
    let sets: Vec<(&'static str, u64, u64)> = [
        ("4k", 4u64 << 10, mib),
        ("64k", 64 << 10, mib),
        ("2m", 2 << 20, 4 * mib),
    ]
    .into_iter()
    .filter(|(l, _, _)| blocks.split(',').any(|x| x.trim() == *l))
    .collect();

    println!("compare: {runs} runs; servers (ratios against the first):");
    for s in &servers {
        println!("  {:<8} {}", s.name, s.bin.display());
    }
    if let Some(n) = &note {
        println!("  NOTE: {n}");
    }
    println!("  load average at start: {}", loadavg());

    let ns = servers.len();
    let need_data = want("read") || want("mmap") || want("python");
    let datas: Vec<Data> = if need_data {
        sets.iter()
            .map(|&(l, bs, m)| data(l, m.max(1), bs))
            .collect()
    } else {
        vec![]
    };
    let tmp = tempfile::Builder::new()
        .prefix("wcfs-compare")
        .tempdir()
        .unwrap();
    let script = tmp.path().join("load.py");
    std::fs::write(&script, PY_LOAD).unwrap();
    let mut res = Results::default();
    let mut sums: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut check = |key: String, who: &str, sum: u64| match sums.get(&key) {
        None => {
            sums.insert(key, (who.to_string(), sum));
        }
        Some((first, s)) => assert_eq!(*s, sum, "{key}: {who} returned other bytes than {first}"),
    };

    for run in 0..runs {
        let order: Vec<usize> = (0..ns).map(|i| (i + run) % ns).collect();
        for d in &datas {
            let size = d.size >> 20;
            for &i in &order {
                let s = &servers[i];
                if want("read") {
                    let (mibs, sum) = cold(&s.bin, d, tmp.path(), false);
                    check(format!("read {}", d.label), &s.name, sum);
                    res.add(
                        &format!("cold read(2), {} blocks, {size} MiB", d.label),
                        "MiB/s",
                        ns,
                        i,
                        mibs,
                    );
                }
                if want("mmap") {
                    let (mibs, sum) = cold(&s.bin, d, tmp.path(), true);
                    check(format!("mmap {}", d.label), &s.name, sum);
                    res.add(
                        &format!("cold mmap, {} blocks, {size} MiB", d.label),
                        "MiB/s",
                        ns,
                        i,
                        mibs,
                    );
                }
            }
            if want("python") {
                let py = python_load(d, &script);
                res.add(
                    &format!("Python in-process, {} blocks, {size} MiB", d.label),
                    "MiB/s",
                    1,
                    0,
                    py,
                );
            }
        }
        if want("pin") {
            for &i in &order {
                let s = &servers[i];
                let dir = tmp.path().join(format!("pin-{run}-{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                let mut ps = PinSetup::new(&s.bin, &dir);
                for k in [1, 8] {
                    let x = ps.extra(k);
                    res.add(
                        &format!("pin +µs/read, {k} client(s), quiet"),
                        "µs",
                        ns,
                        i,
                        x,
                    );
                }
                let load = Load::start(&dir);
                for k in [1, 8] {
                    let x = ps.extra(k);
                    res.add(
                        &format!("pin +µs/read, {k} client(s), loaded"),
                        "µs",
                        ns,
                        i,
                        x,
                    );
                }
                drop(load);
                drop(ps);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        println!("  run {} done, load average {}", run + 1, loadavg());
    }

    println!();
    println!("median [min–max] of {runs} runs; ratio = first / this, per run");
    for (fig, unit) in &res.order {
        let per = &res.v[fig];
        println!("{fig} ({unit}):");
        if fig.starts_with("Python in-process") {
            // Python: against every server's cold read(2) of the same data
            // (told by name: with one server, every figure has one column).
            println!("  {:<8} {:>24}", "python", fmt_stat(&per[0], 0));
            let read_fig = fig.replace("Python in-process", "cold read(2)");
            if let Some(rd) = res.v.get(&read_fig) {
                for (i, s) in servers.iter().enumerate() {
                    let r: Vec<f64> = rd[i].iter().zip(&per[0]).map(|(a, b)| a / b).collect();
                    println!("    {} cold read(2) / Python: {}", s.name, fmt_stat(&r, 2));
                }
            }
            continue;
        }
        for (i, s) in servers.iter().enumerate() {
            let mut line = format!("  {:<8} {:>24}", s.name, fmt_stat(&per[i], 0));
            if i > 0 {
                let r: Vec<f64> = per[0].iter().zip(&per[i]).map(|(a, b)| a / b).collect();
                line += &format!("   {}/{}: {}", servers[0].name, s.name, fmt_stat(&r, 2));
            }
            println!("{line}");
        }
    }
    println!("load average at end: {}", loadavg());
}
