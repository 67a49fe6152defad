//! Open time of a big FileStorage, with Python's `.index` file and without
//! (full scan).
//!
//! The data file (≥ 1 GiB: ~20 000 transactions, ~220 000 objects, plus
//! large payloads) is generated once by `python/fs_oracle/bench_gen.py` into
//! `bench-data/fs_open/` and reused. `$WCFS_PYTHON` (default: the
//! repository's `.venv/bin/python`) runs the generator.
//!
//! Run: `cargo bench -p wcfs-zodb --bench fs_open`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use zodb::storage::filestorage::{FileStorage, IndexSource, OpenOptions};
use zodb::storage::Storage;

const MIN_SIZE: u64 = 1 << 30;
const REPS: usize = 3;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("bench-data/fs_open");
    let path = dir.join("data.fs");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if size < MIN_SIZE || !dir.join("data.fs.index").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let python = std::env::var_os("WCFS_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        assert!(
            python.exists(),
            "python with ZODB not found at {} (set WCFS_PYTHON)",
            python.display()
        );
        println!(
            "generating {} (once; takes a few minutes)...",
            path.display()
        );
        let t0 = Instant::now();
        let st = Command::new(python)
            .arg(root.join("python/fs_oracle/bench_gen.py"))
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "bench_gen.py failed");
        println!("generated in {:.1?}", t0.elapsed());
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let url = path.to_str().unwrap();
    let open = |use_index_file| {
        FileStorage::open_with(&path, url, OpenOptions { use_index_file }).unwrap()
    };

    // Warm the page cache, and count what is there.
    let fs = open(false);
    let ntxn = fs.iter().count();
    let nobj = fs.object_count();
    let last = fs.last_tid().unwrap();
    drop(fs);
    println!(
        "data.fs: {:.2} GiB, {ntxn} transactions, {nobj} objects, last tid {last}",
        size as f64 / (1u64 << 30) as f64
    );

    let time = |use_index_file: bool| -> Duration {
        let mut v: Vec<Duration> = (0..REPS)
            .map(|_| {
                let t0 = Instant::now();
                let fs = open(use_index_file);
                let d = t0.elapsed();
                let from_index = matches!(fs.index_source(), IndexSource::IndexFile { .. });
                assert_eq!(
                    from_index,
                    use_index_file,
                    "index source {:?}",
                    fs.index_source()
                );
                assert_eq!(fs.object_count(), nobj);
                d
            })
            .collect();
        v.sort();
        println!(
            "open {}: {:?} (min {:?}, max {:?}, {REPS} runs)",
            if use_index_file {
                "with .index "
            } else {
                "scan        "
            },
            v[REPS / 2],
            v[0],
            v[REPS - 1]
        );
        v[REPS / 2]
    };
    let with_index = time(true);
    let scan = time(false);
    println!(
        "scan / with .index = {:.1}x",
        scan.as_secs_f64() / with_index.as_secs_f64()
    );
}
