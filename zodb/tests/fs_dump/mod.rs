//! What Python's ZODB reads, as `python/fs_oracle/fsoracle.py dump` writes
//! it, and our answers in the same terms: shared by the storage oracle
//! tests (ZEO, the zurl forms, DemoStorage).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use zodb::storage::{Commit, Error};
use zodb::{Oid, Tid};

pub fn script() -> PathBuf {
    testkit::repo().join("python/fs_oracle/fsoracle.py")
}

pub fn oracle(args: &[&str]) {
    testkit::run_python("python/fs_oracle/fsoracle.py", args);
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb88320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Data { serial: Tid, len: usize, crc: u32 },
    None,
    Deleted,
}

/// What Python read: its last tid, its transactions (in iterator order)
/// and `loadBefore` of every oid at every tid.
pub struct Oracle {
    pub last: Tid,
    pub txns: Vec<Commit>,
    pub loads: Vec<(Oid, Tid, Expect)>,
}

/// What Python reads from `dir/data.fs`.
pub fn dump(dir: &Path) -> Oracle {
    dump_as(dir, None)
}

/// What Python reads from the storage `zurl` names (opened the way
/// `python/wcfs_testdata/zurlstor.py` opens it), or else `dir/data.fs`;
/// written to a file in `dir`.
pub fn dump_as(dir: &Path, zurl: Option<&str>) -> Oracle {
    let out = dir.join("oracle.txt");
    let mut args = vec!["dump", dir.to_str().unwrap(), out.to_str().unwrap()];
    if let Some(z) = zurl {
        args.extend(["--zurl", z]);
    }
    oracle(&args);
    let text = std::fs::read_to_string(&out).unwrap();
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
                // Records of an undone ('u') transaction are not reported.
                let oids = if f[2] == "u" { vec![] } else { oids };
                o.txns.push(Commit {
                    tid: f[1].parse().unwrap(),
                    oids,
                });
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

pub fn expect_of(r: Result<zodb::Loaded, Error>) -> Result<Expect, String> {
    match r {
        Ok(l) => Ok(Expect::Data {
            serial: l.serial,
            len: l.data.len(),
            crc: crc32(&l.data),
        }),
        Err(Error::NotYetCreated { .. }) => Ok(Expect::None),
        Err(Error::Deleted { .. }) => Ok(Expect::Deleted),
        Err(e) => Err(e.to_string()),
    }
}

/// Like [`expect_of`], for a storage over others (DemoStorage): Python's
/// POSKeyError ("deleted" in the dump) there is an object deleted, or one
/// that neither part has (an undone creation in the delta).
pub fn expect_of_either(r: Result<zodb::Loaded, Error>) -> Result<Expect, String> {
    match r {
        Err(Error::NoObject { .. }) => Ok(Expect::Deleted),
        r => expect_of(r),
    }
}

pub fn sorted(c: &Commit) -> Commit {
    let mut oids = c.oids.clone();
    oids.sort();
    oids.dedup();
    Commit { tid: c.tid, oids }
}

/// Reads the writer's log: what Python committed.
pub fn writer_log(path: &Path) -> Vec<Commit> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with("done\n"), "writer did not finish");
    text.lines()
        .take_while(|l| *l != "done")
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let oids = if f[1] == "-" {
                vec![]
            } else {
                f[1].split(',').map(|s| s.parse().unwrap()).collect()
            };
            Commit {
                tid: f[0].parse().unwrap(),
                oids,
            }
        })
        .collect()
}
