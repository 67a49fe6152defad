//! End-to-end costs of the client library (harness = false).
//!
//! One ZBigFile of `WCFS_BENCH_MIB` MiB (default 1024) in 2 MiB ZBlk0
//! blocks of random bytes, generated once by
//! `python/wcfs_testdata/benchgen.py` into `bench-data/client/`, copied
//! into a temporary directory for every run (the run commits to it) and
//! served by a fresh `wcfsd`. Changes between commits re-point blocks to
//! other blocks' ZBlks (driver op `link`): a changed block without writing
//! megabytes to data.fs. Every figure is a ratio of measurements taken in
//! the same run; we print the best and the median over `REPS`.
//!
//! - memory (first, while the kernel holds nothing of the file): 8
//!   processes (this program re-executed) each map the whole file through
//!   a Conn at its own `at`, 8 commits apart, 2 blocks changed per commit,
//!   and read all of it at the same time. Memory used = page-cache growth
//!   (`Cached` of /proc/meminfo) + the private memory (`RssAnon`) the 8
//!   processes and the daemon gained — against the file size (target
//!   ≤ 1.2). Summing plain RSS would count the shared head pages 8 times;
//!   that they are shared is the point. As a cross-check that does not see
//!   other processes of the machine (on a shared machine `Cached` moves by
//!   hundreds of MiB on its own), the pages of `head/` and of every
//!   `@<tid>/` file the processes map are counted with mincore(2). The
//!   daemon's biggest private regions are listed: its growth is mostly
//!   glibc's per-thread malloc arenas keeping freed 2 MiB block buffers
//!   (try `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576`). The
//!   `@<tid>/` figure is the pinned blocks plus what the kernel's mmap
//!   read-around fetches next to them (1 MiB before the fault, readahead
//!   after it): about 2.8× the pinned blocks without `MADV_SEQUENTIAL` on
//!   the `@<rev>` overlays, exactly the pinned blocks with it.
//! - warm: the whole file summed 8 bytes at a time through a Mapping of a
//!   Conn at head vs through a plain mmap of `head/bigfile/<oid>`, both
//!   backed by the same (warm) page cache: in a fresh mapping (first touch:
//!   minor faults) and in one already touched (target ≥ 0.95).
//! - resync: a Conn with 100 blocks pinned moves to an `at` where all 100
//!   need another revision (100 pins `@<rev>`), then to head (100 pins
//!   `@head`), vs a resync where no block changed (0 pins): absolute time
//!   and ratio.
//!
//! Run: `cargo bench --bench client` (root, /dev/fuse; Python:
//! `$WCFS_PYTHON`, default the repository's `.venv/bin/python`).

#[path = "../daemon/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use testkit::Rng;
use wcfs::{Mapping, Wcfs};
use zodb::{Oid, Tid};

const BS: u64 = 2 << 20;
const REPS: usize = 5;
/// The warm figures are short (≈ 0.1 s per pass) and the machine is
/// shared: more repetitions.
const WARM_REPS: usize = 11;
const MIB: f64 = (1 << 20) as f64;
const NPROC: usize = 8;
/// Blocks changed per commit between two processes' `at`.
const CHANGED_PER_AT: u64 = 2;
const NPIN: u64 = 100;
const ROLE: &str = "WCFS_BENCH_CLIENT_ROLE";

/// The cached database: its path, the file's oid and block count.
fn data(mib: u64) -> (PathBuf, Oid, u64) {
    let d = testkit::bench_data("client", mib, BS);
    (d.path, Oid(d.oid), d.nblk)
}

/// Sums 8 bytes at a time over `[ptr, ptr+len)`: (seconds, checksum).
///
/// # Safety
/// The range must stay mapped and readable during the call.
unsafe fn sum8(ptr: *const u8, len: usize) -> (f64, u64) {
    let t0 = Instant::now();
    let mut s = 0u64;
    let words = ptr.cast::<u64>();
    for i in 0..len / 8 {
        // SAFETY: inside the range the caller vouches for; mmap memory is
        // page aligned.
        s = s.wrapping_add(unsafe { words.add(i).read_volatile() });
    }
    (t0.elapsed().as_secs_f64(), s)
}

/// Chunks of the warm comparison: the two mappings are read alternately,
/// chunk by chunk, so that both see the same load of a shared machine.
const CHUNK: usize = 32 << 20;

/// Sums `[a, a+len)` and `[b, b+len)` chunk by chunk, alternating which
/// goes first: (seconds on a, seconds on b). Both must hold the same bytes.
fn alternate(a: *const u8, b: *const u8, len: usize, rep: usize) -> (f64, f64) {
    let (mut ta, mut tb) = (0.0, 0.0);
    for (i, off) in (0..len).step_by(CHUNK).enumerate() {
        let n = CHUNK.min(len - off);
        // SAFETY: both ranges are live mappings of `len` bytes (caller).
        let (ra, rb) = unsafe {
            if (i + rep).is_multiple_of(2) {
                let ra = sum8(a.add(off), n);
                (ra, sum8(b.add(off), n))
            } else {
                let rb = sum8(b.add(off), n);
                (sum8(a.add(off), n), rb)
            }
        };
        assert_eq!(ra.1, rb.1, "chunk {i} differs");
        ta += ra.0;
        tb += rb.0;
    }
    (ta, tb)
}

fn sum_mapping(m: &Mapping) -> (f64, u64) {
    let len = m.mem_stop() as usize - m.mem_start() as usize;
    // SAFETY: a live Mapping's memory is readable until unmap.
    unsafe { sum8(m.mem_start(), len) }
}

fn meminfo_kib(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix(':')?;
            v.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("/proc/meminfo: no {name}"))
}

/// A `<Name>: <n> kB` field of /proc/<pid>/status.
fn status_kib(pid: u32, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix(':')?;
            v.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Pages of `path` resident in the page cache (mincore over a mapping).
fn resident_bytes(path: &Path) -> u64 {
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a read-only mapping we never read from; mincore only asks
    // the kernel which pages of the file it holds.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap {}", path.display());
        let pages = len.div_ceil(4096);
        let mut vec = vec![0u8; pages];
        let r = libc::mincore(p, len, vec.as_mut_ptr());
        libc::munmap(p, len);
        assert_eq!(r, 0, "mincore {}", path.display());
        vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * 4096
    }
}

fn best_median(v: &[f64], higher_is_better: bool) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if higher_is_better {
        v.reverse();
    }
    (v[0], v[v.len() / 2])
}

/// Child role: maps the whole file through a Conn at `$AT`, reads all of
/// it, says `done <sum>`, and holds the mapping until stdin closes.
fn child_touch() {
    let var = |n: &str| std::env::var(n).unwrap();
    let wc = Wcfs::attach(var("MNT")).unwrap();
    let at: Tid = var("AT").parse().unwrap();
    let oid: Oid = var("OID").parse().unwrap();
    let nblk: i64 = var("NBLK").parse().unwrap();
    let conn = wc.connect(at).unwrap();
    let fh = conn.open(oid).unwrap();
    let m = fh.mmap(0, nblk).unwrap();
    let (_, s) = sum_mapping(&m);
    println!("done {s}");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    m.unmap().unwrap();
    conn.close().unwrap();
}

struct Bench {
    py: common::Driver,
    w: common::Wcfs,
    wc: Wcfs,
    oid: Oid,
    nblk: u64,
    rng: Rng,
}

impl Bench {
    fn commit(&mut self) -> Tid {
        let t = self.py.commit();
        self.w.wait_head(t);
        t
    }

    /// Re-points each of `blks` to the ZBlk of a random block outside
    /// them that holds another ZBlk than it has now (so that the block
    /// surely changes).
    fn relink(&mut self, blks: &[u64]) {
        for &dst in blks {
            let cur = self.py.zblk(self.oid, dst);
            let src = loop {
                let s = self.rng.below(self.nblk);
                if !blks.contains(&s) && self.py.zblk(self.oid, s) != cur {
                    break s;
                }
            };
            self.py.link(self.oid, src, dst, false);
        }
    }

    fn distinct_blocks(&mut self, n: u64) -> Vec<u64> {
        let mut v: Vec<u64> = Vec::new();
        while (v.len() as u64) < n {
            let b = self.rng.below(self.nblk);
            if !v.contains(&b) {
                v.push(b);
            }
        }
        v
    }

    /// Waits (a little) until `n` pins were sent since `p0` — the kernel's
    /// readahead may still be reading a changed block when our own read
    /// returns — and checks that it was exactly `n`.
    fn expect_pins(&self, p0: i64, n: u64, what: &str) {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while self.pins() - p0 < n as i64 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(self.pins() - p0, n as i64, "pins of {what}");
    }

    fn pins(&self) -> i64 {
        common::watch::stats(&self.w.mnt)
            .get("pin")
            .copied()
            .unwrap_or(0)
    }

    fn memory(&mut self) {
        let size = self.nblk * BS;
        // All fresh: the daemon keeps history for the last minute (and
        // back to the oldest watched at), not back to the bench data's
        // creation.
        let mut tids = vec![];
        for _ in 0..NPROC {
            let b = self.distinct_blocks(CHANGED_PER_AT);
            self.relink(&b);
            tids.push(self.commit());
        }
        let daemon = self.w.pid().unwrap();
        let cached0 = meminfo_kib("Cached");
        let anon0 = status_kib(daemon, "RssAnon");
        let t0 = Instant::now();
        let exe = std::env::current_exe().unwrap();
        let mut kids: Vec<_> = tids
            .iter()
            .map(|at| {
                Command::new(&exe)
                    .env(ROLE, "touch")
                    .env("MNT", &self.w.mnt)
                    .env("AT", at.to_string())
                    .env("OID", self.oid.to_string())
                    .env("NBLK", self.nblk.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut sums = Vec::new();
        for k in &mut kids {
            let mut line = String::new();
            BufReader::new(k.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            sums.push(line.trim().to_string());
            assert!(line.starts_with("done "), "child: {line:?}");
        }
        let took = t0.elapsed().as_secs_f64();
        let cached1 = meminfo_kib("Cached");
        let anon1 = status_kib(daemon, "RssAnon");
        let daemon_threads = std::fs::read_dir(format!("/proc/{daemon}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        // Where the daemon's private memory is: the biggest anonymous
        // regions (malloc's main heap, thread arenas, big buffers).
        let smaps = std::fs::read_to_string(format!("/proc/{daemon}/smaps")).unwrap_or_default();
        let mut regions: Vec<(u64, String)> = Vec::new();
        let mut name = String::new();
        for l in smaps.lines() {
            if let Some(v) = l.strip_prefix("Anonymous:") {
                let kb: u64 = v.split_whitespace().next().unwrap().parse().unwrap();
                regions.push((kb, name.clone()));
            } else if l
                .split_whitespace()
                .next()
                .is_some_and(|w| w.contains('-') && !w.ends_with(':'))
            {
                let f: Vec<&str> = l.split_whitespace().collect();
                name = format!("{} {}", f[0], f.get(5).unwrap_or(&"[anon]"));
            }
        }
        regions.sort_by_key(|r| std::cmp::Reverse(r.0));
        let top: Vec<String> = regions
            .iter()
            .take(4)
            .map(|(kb, n)| format!("{} MiB {n}", kb >> 10))
            .collect();
        let kid_anon: u64 = kids.iter().map(|k| status_kib(k.id(), "RssAnon")).sum();
        let kid_rss: u64 = kids.iter().map(|k| status_kib(k.id(), "VmRSS")).sum();
        // Resident pages of head/ and of every @<tid>/ file the
        // processes map (pins point to @<blkrev>, which may be older than
        // all our tids: the daemon's history start).
        let head_res = resident_bytes(&self.w.head_file(self.oid));
        let mnt = self.w.mnt.canonicalize().unwrap();
        let mut revs = std::collections::BTreeSet::new();
        for k in &kids {
            let maps = std::fs::read_to_string(format!("/proc/{}/maps", k.id())).unwrap();
            for l in maps.lines() {
                if let Some(i) = l.find(mnt.to_str().unwrap()) {
                    let p = PathBuf::from(l[i..].trim_end_matches(" (deleted)"));
                    if p.to_str().unwrap().contains("/@") {
                        revs.insert(p);
                    }
                }
            }
        }
        let rev_res: u64 = revs.iter().map(|p| resident_bytes(p)).sum();
        for k in &mut kids {
            drop(k.stdin.take());
            assert!(k.wait().unwrap().success());
        }
        let distinct: std::collections::BTreeSet<&String> = sums.iter().collect();
        let kib = 1024.0;
        let cache_growth = cached1.saturating_sub(cached0) as f64 * kib;
        let daemon_anon = anon1.saturating_sub(anon0) as f64 * kib;
        let private = kid_anon as f64 * kib;
        let used = cache_growth + private + daemon_anon;
        let precise = (head_res + rev_res) as f64 + private + daemon_anon;
        println!(
            "memory: {NPROC} processes, each the whole {:.0} MiB file at its own at \
             ({CHANGED_PER_AT} blocks changed per at; {} distinct checksums), read in {took:.1}s",
            size as f64 / MIB,
            distinct.len()
        );
        println!(
            "  page cache +{:.0} MiB, processes' private memory {:.0} MiB, daemon +{:.0} MiB \
             (their plain RSS sums to {:.0} MiB: shared pages counted {NPROC} times)",
            cache_growth / MIB,
            private / MIB,
            daemon_anon / MIB,
            kid_rss as f64 * kib / MIB
        );
        println!(
            "  daemon: {daemon_threads} threads; biggest private regions: {}",
            top.join(", ")
        );
        println!(
            "  resident by mincore: head/ {:.0} MiB, {} @<tid>/ files {:.0} MiB",
            head_res as f64 / MIB,
            revs.len(),
            rev_res as f64 / MIB
        );
        println!(
            "  memory used / file size: {:.3} (meminfo) {:.3} (mincore)   target ≤ 1.2",
            used / size as f64,
            precise / size as f64
        );
        println!(
            "  without the daemon's growth (clients only):     {:.3} (meminfo) {:.3} (mincore)",
            (used - daemon_anon) / size as f64,
            (precise - daemon_anon) / size as f64
        );
    }

    fn warm(&mut self) {
        let head = self.wc.head_at().unwrap();
        let conn = self.wc.connect(head).unwrap();
        let fh = conn.open(self.oid).unwrap();
        let path = self.w.head_file(self.oid);
        let len = (self.nblk * BS) as usize;
        let total = len as f64 / MIB;
        // Fill the page cache, and keep one touched mapping of each kind.
        let persistent = fh.mmap(0, self.nblk as i64).unwrap();
        let (_, s_ref) = sum_mapping(&persistent);
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: read-only shared mapping of the head file, alive below.
        let plain = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        // SAFETY: `plain` lives until the end of this function.
        let (_, s_plain) = unsafe { sum8(plain.as_ptr(), plain.len()) };
        assert_eq!(s_ref, s_plain, "Mapping at head and head/bigfile differ");
        let (mut fresh, mut warm) = (vec![], vec![]);
        let (mut fresh_mib, mut warm_mib) = (vec![], vec![]);
        for rep in 0..WARM_REPS {
            let m = fh.mmap(0, self.nblk as i64).unwrap();
            // SAFETY: read-only shared mapping of the head file, dropped
            // at the end of this iteration.
            let p = unsafe { memmap2::Mmap::map(&f) }.unwrap();
            let (tm, tp) = alternate(m.mem_start(), p.as_ptr(), len, rep);
            m.unmap().unwrap();
            drop(p);
            fresh.push(tp / tm);
            fresh_mib.push((total / tm, total / tp));
            let (tm, tp) = alternate(persistent.mem_start(), plain.as_ptr(), len, rep);
            warm.push(tp / tm);
            warm_mib.push((total / tm, total / tp));
        }
        let show = |what: &str, r: &[f64], mib: &[(f64, f64)]| {
            let (rb, rm) = best_median(r, true);
            let (mb, mm) = best_median(&mib.iter().map(|x| x.0).collect::<Vec<_>>(), true);
            let (pb, pm) = best_median(&mib.iter().map(|x| x.1).collect::<Vec<_>>(), true);
            println!(
                "  {what:<26} Mapping {mb:>6.0} / {mm:>6.0} MiB/s   plain mmap {pb:>6.0} / {pm:>6.0} MiB/s   \
                 ratio {rb:.3} / {rm:.3}"
            );
        };
        println!(
            "warm access (best / median of {WARM_REPS}, {} MiB chunks alternated; target ratio ≥ 0.95):",
            CHUNK >> 20
        );
        show("fresh mapping, warm cache", &fresh, &fresh_mib);
        show("touched mapping", &warm, &warm_mib);
        persistent.unmap().unwrap();
        conn.close().unwrap();
    }

    fn resync(&mut self) {
        let head = self.wc.head_at().unwrap();
        let conn = self.wc.connect(head).unwrap();
        let fh = conn.open(self.oid).unwrap();
        let m = fh.mmap(0, self.nblk as i64).unwrap();
        let _ = sum_mapping(&m);
        let headf = std::fs::File::open(self.w.head_file(self.oid)).unwrap();
        let read = |blks: &[u64]| {
            for &b in blks {
                let mut one = [0u8; 1];
                std::os::unix::fs::FileExt::read_at(&headf, &mut one, b * BS).unwrap();
            }
        };
        let (mut repin, mut unpin, mut none) = (vec![], vec![], vec![]);
        for _ in 0..REPS {
            let blks = self.distinct_blocks(NPIN);
            self.relink(&blks);
            let tx = self.commit();
            let p0 = self.pins();
            read(&blks); // 100 pins to the Conn (@<its at>)
            self.expect_pins(p0, NPIN, "reading the changed blocks");
            self.relink(&blks);
            let ty = self.commit();
            read(&blks); // no new pins: the Conn's revisions did not change

            let p0 = self.pins();
            let t = Instant::now();
            conn.resync(tx).unwrap();
            repin.push(t.elapsed().as_secs_f64());
            self.expect_pins(p0, NPIN, "resync to tx");

            let p0 = self.pins();
            let t = Instant::now();
            conn.resync(ty).unwrap();
            unpin.push(t.elapsed().as_secs_f64());
            self.expect_pins(p0, NPIN, "resync to head");

            self.py.touch();
            let tz = self.commit();
            let p0 = self.pins();
            let t = Instant::now();
            conn.resync(tz).unwrap();
            none.push(t.elapsed().as_secs_f64());
            self.expect_pins(p0, 0, "resync without changes");
        }
        let ms = |v: &[f64]| {
            let (b, m) = best_median(v, false);
            (b * 1e3, m * 1e3)
        };
        let (nb, nm) = ms(&none);
        println!("resync (best / median of {REPS}):");
        println!("  0 pins                     {nb:>7.2} / {nm:>7.2} ms");
        for (what, v) in [("100 pins @<rev>", &repin), ("100 pins @head", &unpin)] {
            let (b, m) = ms(v);
            println!(
                "  {what:<26} {b:>7.2} / {m:>7.2} ms   {:.1} µs per pin   {:.1}× the 0-pin resync",
                m * 1e3 / NPIN as f64,
                m / nm
            );
        }
        m.unmap().unwrap();
        conn.close().unwrap();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches probes with --list
    }
    if std::env::var(ROLE).is_ok() {
        child_touch();
        return;
    }
    let mib: u64 = std::env::var("WCFS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let (src, oid, nblk) = data(mib.max((2 * NPIN * BS) >> 20));
    let tmp = tempfile::Builder::new()
        .prefix("wcfs-bench-client")
        .tempdir()
        .unwrap();
    let datafs = tmp.path().join("data.fs");
    std::fs::copy(&src, &datafs).unwrap();
    let idx = src.with_extension("fs.index");
    if idx.exists() {
        std::fs::copy(&idx, datafs.with_extension("fs.index")).unwrap();
    }
    std::fs::File::open(&datafs).unwrap().sync_all().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let zurl = format!("file://{}", datafs.display());
    let py = common::Driver::start(&datafs);
    let w = common::Wcfs::start(&zurl, &mnt, &tmp.path().join("wcfsd.log"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let wc = Wcfs::attach(&mnt).unwrap();
    let mut b = Bench {
        py,
        w,
        wc,
        oid,
        nblk,
        rng: Rng::new(1),
    };
    // data.fs (copied: in the page cache) is read by the daemon, not
    // counted as growth: read it all once more to be sure.
    let mut f = std::fs::File::open(&datafs).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf).unwrap() > 0 {}

    b.memory();
    b.warm();
    b.resync();
    b.wc.close().unwrap();
}
