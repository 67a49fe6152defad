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
    let mnt = tmp.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let w = Wcfs::start(zurl, &mnt, &tmp.join("wcfsd.log"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let (t, n, sum) = read_all(&w.head_file(oid));
    assert_eq!(n, size);
    drop(w);
    (t, sum)
}
