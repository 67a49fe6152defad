//! FileStorage against Python's ZODB as the oracle.
//!
//! `python/fs_oracle/fsoracle.py` writes a data.fs with revisions, undo
//! records (back-pointers, deletions) and empty transactions, and dumps what
//! Python's FileStorage answers for every oid as of every tid; we must answer
//! the same, with and without the `.index` file, and stay correct (or fail
//! with an error, never panic nor lie) on truncated and corrupted copies.
//!
//! The Python interpreter is `$WCFS_PYTHON`, by default the repository's
//! `.venv/bin/python`; without it these tests fail.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use testkit::python;
use zodb::storage::filestorage::{FileStorage, IndexSource, OpenOptions};
use zodb::storage::{Error, Storage};
use zodb::{Oid, Tid};

fn oracle(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/fs_oracle/fsoracle.py");
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .expect("run python oracle");
    assert!(
        out.status.success(),
        "fsoracle.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb88320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Data { serial: Tid, len: usize, crc: u32 },
    None,
    Deleted,
}

struct Oracle {
    last: Tid,
    txns: Vec<(Tid, Vec<Oid>)>,
    loads: Vec<(Oid, Tid, Expect)>,
}

fn parse_oracle(path: &Path) -> Oracle {
    let text = std::fs::read_to_string(path).unwrap();
    let mut o = Oracle {
        last: Tid::ZERO,
        txns: vec![],
        loads: vec![],
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "last" => o.last = f[1].parse().unwrap(),
            "txn" => {
                let oids = if f[3] == "-" {
                    vec![]
                } else {
                    f[3].split(',').map(|s| s.parse().unwrap()).collect()
                };
                o.txns.push((f[1].parse().unwrap(), oids));
            }
            "load" => {
                let e = match f[3] {
                    "none" => Expect::None,
                    "deleted" => Expect::Deleted,
                    s => Expect::Data {
                        serial: s.parse().unwrap(),
                        len: f[4].parse().unwrap(),
                        crc: u32::from_str_radix(f[5], 16).unwrap(),
                    },
                };
                o.loads
                    .push((f[1].parse().unwrap(), f[2].parse().unwrap(), e));
            }
            _ => panic!("bad oracle line {line:?}"),
        }
    }
    o
}

/// What we answer, in the oracle's terms; `Err` for storage failures.
fn answer(fs: &FileStorage, oid: Oid, at: Tid) -> Result<Expect, String> {
    match fs.load(oid, at) {
        Ok(l) => Ok(Expect::Data {
            serial: l.serial,
            len: l.data.len(),
            crc: crc32(&l.data),
        }),
        Err(Error::NotYetCreated { .. }) => Ok(Expect::None),
        Err(Error::NoObject { .. }) => Ok(Expect::None),
        Err(Error::Deleted { .. }) => Ok(Expect::Deleted),
        Err(e) => Err(e.to_string()),
    }
}

/// `serial_at` against the oracle: the serial of the data a load returns
/// (undone records included), and `None` for anything else. On damaged
/// files (`exact` false) it may also say `None` where a load answers, but a
/// serial it gives must still be the oracle's.
fn check_serial(fs: &FileStorage, oid: Oid, at: Tid, want: &Expect, exact: bool, what: &str) {
    let got = fs.serial_at(oid, at);
    match want {
        Expect::Data { serial, .. } if exact => {
            assert_eq!(got, Some(*serial), "{what}: serial_at {oid} @{at}")
        }
        Expect::Data { serial, .. } => assert!(
            got.is_none() || got == Some(*serial),
            "{what}: serial_at {oid} @{at}: {got:?}, want {serial}"
        ),
        _ => assert_eq!(got, None, "{what}: serial_at {oid} @{at} of no data"),
    }
}

/// Checks `fs` answers exactly like the oracle.
fn check_exact(fs: &FileStorage, o: &Oracle) {
    assert_eq!(fs.last_tid().unwrap(), o.last);
    let txns: Vec<(Tid, Vec<Oid>)> = fs
        .iter()
        .map(|t| {
            let t = t.unwrap();
            (t.tid, t.records.iter().map(|r| r.oid).collect())
        })
        .collect();
    assert_eq!(txns, o.txns);
    for (oid, at, want) in &o.loads {
        let got = answer(fs, *oid, *at).unwrap_or_else(|e| panic!("load {oid} @{at}: {e}"));
        assert_eq!(&got, want, "load {oid} @{at}");
        check_serial(fs, *oid, *at, want, true, "exact");
        // "none" for an object that has records must be NotYetCreated.
        if *want == Expect::None {
            assert!(matches!(
                fs.load(*oid, *at),
                Err(Error::NotYetCreated { .. })
            ));
        }
    }
    assert!(matches!(
        fs.load(Oid(u64::MAX), Tid::MAX),
        Err(Error::NoObject { .. })
    ));
    assert_eq!(fs.serial_at(Oid(u64::MAX), o.last), None);
    for (oid, _, _) in o.loads.iter().take(5) {
        let beyond = Tid(o.last.0 + 1);
        assert_eq!(fs.serial_at(*oid, beyond), None, "past the last tid");
    }
}

fn gen(dir: &Path, extra: &[&str]) -> Oracle {
    let d = dir.to_str().unwrap();
    let mut args = vec!["gen", d];
    args.extend_from_slice(extra);
    oracle(&args);
    dump(dir)
}

fn dump(dir: &Path) -> Oracle {
    let out = dir.join("oracle.txt");
    oracle(&["dump", dir.to_str().unwrap(), out.to_str().unwrap()]);
    parse_oracle(&out)
}

fn open(dir: &Path, use_index_file: bool) -> FileStorage {
    let p = dir.join("data.fs");
    FileStorage::open_with(&p, p.to_str().unwrap(), OpenOptions { use_index_file }).unwrap()
}

#[test]
fn loads_and_iteration_match_python() {
    let tmp = tempfile::tempdir().unwrap();
    let o = gen(tmp.path(), &["--big", "--seed", "7"]);
    assert!(
        o.loads.iter().any(|l| l.2 == Expect::Deleted),
        "no deletions in test data"
    );
    assert!(
        o.txns.iter().any(|t| t.1.is_empty()),
        "no empty transactions in test data"
    );
    let scan = open(tmp.path(), false);
    assert_eq!(scan.index_source(), IndexSource::Scan);
    check_exact(&scan, &o);

    // Back-pointer records exist, and a 2 MiB record loads.
    let recs: Vec<_> = scan.iter().flat_map(|t| t.unwrap().records).collect();
    assert!(recs.iter().any(|r| r.data_len == 0 && r.back != 0));
    assert!(recs.iter().any(|r| r.data_len == 0 && r.back == 0));
    assert!(recs.iter().any(|r| r.data_len > 2 << 20));

    // In memory, the same.
    let mem = FileStorage::from_bytes(
        Bytes::from(std::fs::read(tmp.path().join("data.fs")).unwrap()),
        "mem",
    )
    .unwrap();
    check_exact(&mem, &o);

    // With the .index file Python left: identical answers, byte for byte.
    let idx = open(tmp.path(), true);
    assert!(matches!(idx.index_source(), IndexSource::IndexFile { .. }));
    check_exact(&idx, &o);
    assert_eq!(idx.index_snapshot(), scan.index_snapshot());
    for (oid, at, _) in &o.loads {
        let a = idx.load(*oid, *at).map_err(|e| e.to_string());
        let b = scan.load(*oid, *at).map_err(|e| e.to_string());
        assert_eq!(a, b);
    }
}

#[test]
fn index_file_used_when_valid_and_stale_one_is_caught_up() {
    let tmp = tempfile::tempdir().unwrap();
    gen(tmp.path(), &["--seed", "3", "--txns", "60"]);
    let fresh = open(tmp.path(), true);
    assert!(
        matches!(fresh.index_source(), IndexSource::IndexFile { pos } if pos == fresh.committed_end()),
        "{:?}",
        fresh.index_source()
    );
    drop(fresh);

    // Python commits more, then the old .index is put back: stale.
    oracle(&["extend", tmp.path().to_str().unwrap(), "25", "--keep-index"]);
    let o = dump(tmp.path());
    let fs = open(tmp.path(), true);
    match fs.index_source() {
        IndexSource::IndexFile { pos } => assert!(pos < fs.committed_end()),
        IndexSource::Scan => panic!("valid (stale) .index not used"),
    }
    check_exact(&fs, &o);
    assert_eq!(
        fs.index_snapshot(),
        open(tmp.path(), false).index_snapshot()
    );
}

#[test]
fn garbage_index_file_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let o = gen(tmp.path(), &["--seed", "4", "--txns", "40"]);
    let ipath = tmp.path().join("data.fs.index");
    let good = std::fs::read(&ipath).unwrap();
    let mut variants: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        (
            "random",
            (0..good.len()).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("no terminator", good[..good.len() - 2].to_vec()),
    ];
    // Flip single bytes all over the real one: every variant must either
    // be rejected or give the right answers.
    for i in (0..good.len()).step_by(3) {
        let mut v = good.clone();
        v[i] ^= 0x41;
        variants.push(("flipped", v));
    }
    let (mut used, mut rejected) = (0, 0);
    for (what, bytes) in variants {
        std::fs::write(&ipath, &bytes).unwrap();
        let fs = open(tmp.path(), true);
        match fs.index_source() {
            IndexSource::Scan => rejected += 1,
            _ => used += 1,
        }
        if what != "flipped" {
            assert_eq!(
                fs.index_source(),
                IndexSource::Scan,
                "{what} .index trusted"
            );
        }
        check_exact(&fs, &o);
    }
    println!("damaged .index files: {rejected} rejected, {used} used (and answered right)");
}

/// Positions of header fields worth corrupting: (offset, length, what, tid
/// of the enclosing transaction).
fn header_fields(fs: &FileStorage) -> Vec<(u64, u64, &'static str, Tid)> {
    let mut v = vec![];
    for t in fs.iter() {
        let t = t.unwrap();
        let p = t.pos;
        v.extend([
            (p, 8, "txn tid", t.tid),
            (p + 8, 8, "txn length", t.tid),
            (p + 16, 1, "txn status", t.tid),
            (p + 17, 6, "txn ulen/dlen/elen", t.tid),
        ]);
        for r in &t.records {
            let q = r.pos;
            v.extend([
                (q, 8, "data oid", t.tid),
                (q + 8, 8, "data tid", t.tid),
                (q + 16, 8, "data prev", t.tid),
                (q + 24, 8, "data tloc", t.tid),
                (q + 32, 2, "data vlen", t.tid),
                (q + 34, 8, "data plen", t.tid),
            ]);
            if r.data_len == 0 {
                v.push((q + 42, 8, "data back-pointer", t.tid));
            }
        }
    }
    v
}

/// On a damaged copy, every answer for a tid the storage claims committed
/// must be the oracle's or an error — except for the objects of the damaged
/// transaction when the flip hit a field the format cannot check. FS21 has
/// no checksums: a flipped record oid reads as a record of another object, a
/// flipped data length can turn a deletion into 8 bytes of data or swallow
/// the records after it, a flipped status can mark the transaction undone
/// ('u'), and flipped user/description/extension lengths can make records
/// look like metadata — each consistent with everything else in the file.
/// Objects outside that transaction must still read exactly.
fn check_damaged(fs: &FileStorage, o: &Oracle, what: &str, exempt: &BTreeSet<Oid>) {
    let last = fs.last_tid().unwrap_or(Tid::ZERO);
    assert!(
        last == Tid::ZERO || o.txns.iter().any(|t| t.0 == last),
        "{what}: last tid {last} not in the original"
    );
    for t in fs.iter() {
        if t.is_err() {
            break;
        }
    }
    let _ = fs
        .watch(Tid::ZERO)
        .map(|mut w| while let Ok(Some(_)) = w.next_timeout(std::time::Duration::ZERO) {});
    for (oid, at, want) in &o.loads {
        if *at > last || exempt.contains(oid) {
            continue;
        }
        if let Ok(got) = answer(fs, *oid, *at) {
            assert_eq!(&got, want, "{what}: load {oid} @{at}");
        }
        check_serial(fs, *oid, *at, want, false, what);
    }
}

#[test]
fn truncated_tail_is_uncommitted() {
    let tmp = tempfile::tempdir().unwrap();
    let o = gen(tmp.path(), &["--seed", "5", "--txns", "50"]);
    let full = Bytes::from(std::fs::read(tmp.path().join("data.fs")).unwrap());
    let fs = FileStorage::from_bytes(full.clone(), "full").unwrap();
    let txns: Vec<_> = fs.iter().map(|t| t.unwrap()).collect();
    let mut cuts: BTreeSet<(u64, Tid)> = BTreeSet::new();
    // at every boundary, and at several points inside every transaction
    let mut prev_end = (4u64, Tid::ZERO);
    for (i, t) in txns.iter().enumerate() {
        let end = txns.get(i + 1).map(|n| n.pos).unwrap_or(full.len() as u64);
        cuts.insert(prev_end);
        for k in 1..8 {
            cuts.insert((t.pos + (end - t.pos) * k / 8, prev_end.1));
        }
        cuts.insert((t.pos + 1, prev_end.1));
        cuts.insert((end - 1, prev_end.1));
        prev_end = (end, t.tid);
    }
    cuts.insert(prev_end);
    for (cut, want_last) in cuts {
        let fs = FileStorage::from_bytes(full.slice(..cut as usize), "cut")
            .unwrap_or_else(|e| panic!("open truncated at {cut}: {e}"));
        assert_eq!(fs.last_tid().unwrap(), want_last, "cut at {cut}");
        for (oid, at, want) in &o.loads {
            if *at > want_last {
                continue;
            }
            let got = answer(&fs, *oid, *at)
                .unwrap_or_else(|e| panic!("cut at {cut}: load {oid} @{at}: {e}"));
            assert_eq!(&got, want, "cut at {cut}: load {oid} @{at}");
            check_serial(&fs, *oid, *at, want, true, &format!("cut at {cut}"));
        }
    }
}

#[test]
fn flipped_header_bytes_never_lie() {
    let tmp = tempfile::tempdir().unwrap();
    let o = gen(tmp.path(), &["--seed", "6", "--txns", "40"]);
    let full = std::fs::read(tmp.path().join("data.fs")).unwrap();
    let fs = FileStorage::from_bytes(Bytes::from(full.clone()), "orig").unwrap();
    let fields = header_fields(&fs);
    let seed: u64 = std::env::var("FS_FLIP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("flip seed: {seed} (set FS_FLIP_SEED to repeat)");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut errs, mut oks) = (0, 0);
    for _ in 0..400 {
        let (off, len, what, txn) = fields[(next() % fields.len() as u64) as usize];
        let unchecked = ["data oid", "data plen", "txn status", "txn ulen/dlen/elen"];
        let exempt: BTreeSet<Oid> = if unchecked.contains(&what) {
            o.txns
                .iter()
                .filter(|t| t.0 == txn)
                .flat_map(|t| t.1.iter().copied())
                .collect()
        } else {
            BTreeSet::new()
        };
        let at = off + next() % len;
        let x = (next() % 255 + 1) as u8;
        let mut data = full.clone();
        data[at as usize] ^= x;
        let what = format!("{what} byte at {at} ^= {x:#04x}");
        match FileStorage::from_bytes(Bytes::from(data), "flipped") {
            Err(_) => errs += 1,
            Ok(fs) => {
                oks += 1;
                check_damaged(&fs, &o, &what, &exempt);
            }
        }
    }
    println!("flips: {errs} rejected at open, {oks} opened");
}
