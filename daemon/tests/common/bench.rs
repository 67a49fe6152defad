//! Pieces the cold-read benches share (`benches/*_read.rs`): reading a
//! whole file the way a reader would, and a fresh daemon read cold.

use super::Wcfs;
use std::io::Read;
use std::path::Path;
use std::time::Instant;
use zodb::Oid;

/// Reads the whole file with read(2) into a 1 MiB buffer: (seconds, bytes,
/// checksum of one byte per page).
pub fn read_all(path: &Path) -> (f64, u64, u64) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (t0, mut n, mut sum) = (Instant::now(), 0u64, 0u64);
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
        sum = sum.wrapping_add(buf[..k].iter().step_by(4096).map(|&b| b as u64).sum());
    }
    (t0.elapsed().as_secs_f64(), n, sum)
}

/// A fresh daemon on `zurl` (mounted under `tmp`), head file `oid` read
/// cold, checked to be `size` bytes: (seconds, checksum).
pub fn cold_read(zurl: &str, tmp: &Path, oid: Oid, size: u64) -> (f64, u64) {
    let (t, sum, _) = cold_read_cpu(zurl, tmp, oid, size);
    (t, sum)
}

/// [`cold_read`], and the CPU time (s) the daemon spent during the read.
pub fn cold_read_cpu(zurl: &str, tmp: &Path, oid: Oid, size: u64) -> (f64, u64, f64) {
    let mnt = tmp.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let w = Wcfs::start(zurl, &mnt, &tmp.join("wcfsd.log"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let pid = w.pid().expect("wcfsd runs");
    let cpu0 = cpu_secs(pid);
    let (t, n, sum) = read_all(&w.head_file(oid));
    let cpu = cpu_secs(pid) - cpu0;
    assert_eq!(n, size);
    drop(w);
    (t, sum, cpu)
}

/// User + system CPU time (s) of process `pid` so far (all its threads);
/// 0 if it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    stat_cpu(pid, false)
}

/// [`cpu_secs`] plus that of the children `pid` waited for (a server's
/// exited workers, e.g. PostgreSQL's backends once their client left).
pub fn cpu_secs_with_reaped(pid: u32) -> f64 {
    stat_cpu(pid, true)
}

fn stat_cpu(pid: u32, reaped: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime, cutime and cstime are fields 14 to 17 (11 to 14
    // here), in clock ticks of USER_HZ, 100 on Linux.
    let children = if reaped { ticks(13) + ticks(14) } else { 0.0 };
    (ticks(11) + ticks(12) + children) / 100.0
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
