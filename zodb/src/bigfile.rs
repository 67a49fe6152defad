//! wendelin.core's ZBigFile and its blocks.
//!
//! A `ZBigFile` (module `wendelin.bigfile.file_zodb`) has state
//! `(blksize, blktab)`: blktab is an `LOBTree` {blk → ZBlk}. A ZBlk is
//!
//! - `ZBlk0` (or its legacy name `ZBlk`): state = the block bytes with
//!   trailing zeros stripped;
//! - `ZBlk1`: state = reference to an `IOBTree` {offset → `ZData`}, each
//!   `ZData` holding one chunk's bytes (also stripped).
//!
//! File size is `(max key of blktab + 1) * blksize`, 0 for an empty blktab.
//! A block absent from blktab is a hole and reads as zeros; stored data
//! shorter than blksize is zero-padded. ZBlk1 chunks are placed at their
//! offsets; chunks that overlap or run past blksize, and ZBlk0 data longer
//! than blksize, mean the database is corrupt: we refuse, never guess.
//!
//! What a load reports besides the bytes is what WCFS change tracking needs
//! to know when the block could have changed: the ZBlk (oid, serial), the
//! blktab path root→bucket with the key range each node covered, and the
//! max serial over that path and every object the ZBlk is made of. wendelin
//! gives a ZBlk a new revision whenever its data changes (ZBlk1 included),
//! but the ZBlk1 parts are reported too so a caller need not rely on it.
//!
//! [`ZBigFile`] is a snapshot of the file object's own state (blksize and
//! blktab oid) as of the tid it was loaded at; blocks and size are then
//! loaded as of whatever tid the caller gives. Those never change for a
//! given file in practice (wendelin never replaces blktab nor blksize); a
//! caller that sees the ZBigFile oid itself change reloads it.
//!
//! Copies: a full-length ZBlk0 is returned as the very `Bytes` the pickle
//! decoder sliced out of the storage's buffer — no copy at all. Short
//! blocks, holes and ZBlk1 are assembled into one zeroed buffer of blksize
//! (calloc'ed: untouched zero pages cost nothing until read).

use crate::btree::{self, BTree, Family, KeyRange, PathNode};
use crate::pickle::Value;
use crate::serialize::{ClassName, PersistentRef};
use crate::storage::Storage;
use crate::types::{Oid, Tid};
use bytes::Bytes;

pub use crate::btree::Error as ObjectError;

/// Module of the wendelin.core classes.
pub const MODULE: &str = "wendelin.bigfile.file_zodb";

/// Largest blksize accepted: blocks are loaded whole into memory, so a
/// corrupt blksize must not turn into a giant allocation. (wendelin uses
/// 2 MiB; 1 GiB leaves plenty of room.)
pub const MAX_BLKSIZE: u64 = 1 << 30;

/// An error loading a ZBigFile or one of its blocks: which file, which block
/// (if any), and what went wrong with which object.
#[derive(Debug, thiserror::Error)]
#[error("zbigfile {file}{}: {source}", blk_suffix(*.blk))]
pub struct Error {
    pub file: Oid,
    pub blk: Option<u64>,
    #[source]
    pub source: ObjectError,
}

fn blk_suffix(blk: Option<u64>) -> String {
    blk.map(|b| format!(" blk #{b}")).unwrap_or_default()
}

impl Error {
    pub fn is_missing(&self) -> bool {
        self.source.is_missing()
    }
    pub fn is_corrupt(&self) -> bool {
        self.source.is_corrupt()
    }
    pub fn is_class(&self) -> bool {
        self.source.is_class()
    }
}

fn corrupt(oid: Oid, why: impl Into<String>) -> ObjectError {
    ObjectError::Corrupt {
        oid,
        why: why.into(),
    }
}

fn is_class(c: &ClassName, name: &str) -> bool {
    c.module == MODULE && c.name == name
}

/// The kind of a block's ZBlk object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZBlkKind {
    /// `ZBlk0`, or the legacy `ZBlk`.
    ZBlk0,
    ZBlk1,
}

/// A block's ZBlk object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ZBlkInfo {
    pub oid: Oid,
    pub serial: Tid,
    pub kind: ZBlkKind,
}

/// An object a ZBlk1 is made of: a node of its chunk table or a ZData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Part {
    pub oid: Oid,
    pub serial: Tid,
}

/// A loaded block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Exactly blksize bytes.
    pub data: Bytes,
    /// `None` for a hole.
    pub zblk: Option<ZBlkInfo>,
    /// For a ZBlk1: every chunk-table node and every ZData.
    pub parts: Vec<Part>,
    /// blktab root → bucket for this block's key (ends at the root when the
    /// bucket is inline or blktab is empty).
    pub path: Vec<PathNode>,
    /// Keys covered by the final node of `path`.
    pub range: KeyRange,
    /// Max serial over `path`, the ZBlk and its parts.
    pub max_serial: Tid,
}

impl Block {
    pub fn path_oids(&self) -> Vec<Oid> {
        btree::path_oids(&self.path)
    }
}

/// File size and the blktab path that determines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSize {
    /// In bytes.
    pub size: u64,
    /// Largest block number present; `None` for an empty file.
    pub max_blk: Option<u64>,
    /// blktab root → bucket holding the largest key.
    pub path: Vec<PathNode>,
    /// Empty nodes passed over (see [`btree::RightMost::skipped`]).
    pub skipped: Vec<PathNode>,
    pub range: KeyRange,
    pub max_serial: Tid,
}

impl FileSize {
    pub fn path_oids(&self) -> Vec<Oid> {
        btree::path_oids(&self.path)
    }
}

/// A ZBigFile's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZBigFile {
    oid: Oid,
    serial: Tid,
    blksize: u64,
    blktab: BTree,
}

impl ZBigFile {
    /// Loads ZBigFile `oid` as of `at`.
    pub fn load(st: &dyn Storage, oid: Oid, at: Tid) -> Result<ZBigFile, Error> {
        Self::load_(st, oid, at).map_err(|source| Error {
            file: oid,
            blk: None,
            source,
        })
    }

    fn load_(st: &dyn Storage, oid: Oid, at: Tid) -> Result<ZBigFile, ObjectError> {
        let (rec, serial) = btree::load_record(st, oid, at)?;
        if !is_class(&rec.class, "ZBigFile") {
            return Err(ObjectError::Class {
                oid,
                class: rec.class,
                want: format!("{MODULE}.ZBigFile"),
            });
        }
        let t = match rec.state.as_tuple() {
            Some(t) if t.len() == 2 => t,
            _ => {
                return Err(corrupt(
                    oid,
                    format!("state: want (blksize, blktab), got {}", rec.state.kind()),
                ))
            }
        };
        let blksize = match t[0] {
            Value::Int(n) if n > 0 && n as u64 <= MAX_BLKSIZE => n as u64,
            Value::Int(n) => {
                return Err(corrupt(
                    oid,
                    format!("blksize {n} out of range 1..={MAX_BLKSIZE}"),
                ))
            }
            ref v => return Err(corrupt(oid, format!("blksize: want int, got {}", v.kind()))),
        };
        let tab = btree::value_ref(oid, &t[1], "blktab")?;
        // The reference usually names the class: refuse a wrong one early.
        // (Without it, the first walk of blktab checks.)
        check_ref_class(&tab, Family::LO)?;
        Ok(ZBigFile {
            oid,
            serial,
            blksize,
            blktab: BTree::new(tab.oid, Family::LO),
        })
    }

    pub fn oid(&self) -> Oid {
        self.oid
    }
    /// The serial of the ZBigFile object as of the `at` it was loaded at.
    pub fn serial(&self) -> Tid {
        self.serial
    }
    pub fn blksize(&self) -> u64 {
        self.blksize
    }
    pub fn blktab(&self) -> BTree {
        self.blktab
    }

    fn err(&self, blk: Option<u64>) -> impl FnOnce(ObjectError) -> Error {
        let file = self.oid;
        move |source| Error { file, blk, source }
    }

    /// File size as of `at`, with the path that determines it.
    pub fn size(&self, st: &dyn Storage, at: Tid) -> Result<FileSize, Error> {
        self.size_(st, at).map_err(self.err(None))
    }

    fn size_(&self, st: &dyn Storage, at: Tid) -> Result<FileSize, ObjectError> {
        let rm = self.blktab.rightmost(st, at)?;
        let (size, max_blk) = match rm.max {
            None => (0, None),
            Some((k, _)) => {
                let bucket = rm.path.last().map(|n| n.oid).unwrap_or(self.blktab.oid);
                let size = u64::try_from(k)
                    .ok()
                    .and_then(|k| k.checked_add(1))
                    .and_then(|n| n.checked_mul(self.blksize))
                    .filter(|s| *s <= i64::MAX as u64)
                    .ok_or_else(|| {
                        corrupt(bucket, format!("max blk {k} gives no valid file size"))
                    })?;
                (size, Some(k as u64))
            }
        };
        Ok(FileSize {
            size,
            max_blk,
            range: rm.range(),
            max_serial: rm.max_serial(),
            path: rm.path,
            skipped: rm.skipped,
        })
    }

    /// Block `blk` as of `at`.
    pub fn load_block(&self, st: &dyn Storage, blk: u64, at: Tid) -> Result<Block, Error> {
        self.load_block_(st, blk, at).map_err(self.err(Some(blk)))
    }

    fn load_block_(&self, st: &dyn Storage, blk: u64, at: Tid) -> Result<Block, ObjectError> {
        let key = i64::try_from(blk)
            .map_err(|_| ObjectError::Invalid(format!("blk #{blk} beyond any blktab key")))?;
        let lk = self.blktab.lookup(st, key, at)?;
        let range = lk.range();
        let mut maxs = lk.max_serial();
        let Some(zref) = lk.value else {
            return Ok(Block {
                data: zeros(self.blksize),
                zblk: None,
                parts: Vec::new(),
                path: lk.path,
                range,
                max_serial: maxs,
            });
        };
        let (data, zblk, parts) = self.load_zblk(st, zref.oid, at)?;
        maxs = maxs.max(zblk.serial);
        for p in &parts {
            maxs = maxs.max(p.serial);
        }
        Ok(Block {
            data,
            zblk: Some(zblk),
            parts,
            path: lk.path,
            range,
            max_serial: maxs,
        })
    }

    fn load_zblk(
        &self,
        st: &dyn Storage,
        oid: Oid,
        at: Tid,
    ) -> Result<(Bytes, ZBlkInfo, Vec<Part>), ObjectError> {
        let (rec, serial) = btree::load_record(st, oid, at)?;
        let bs = self.blksize as usize;
        if is_class(&rec.class, "ZBlk0") || is_class(&rec.class, "ZBlk") {
            let data = match rec.state {
                Value::Bytes(b) => b,
                ref v => {
                    return Err(corrupt(
                        oid,
                        format!("ZBlk0 state: want bytes, got {}", v.kind()),
                    ))
                }
            };
            if data.len() > bs {
                return Err(corrupt(
                    oid,
                    format!("ZBlk0: {} bytes > blksize {bs}", data.len()),
                ));
            }
            let info = ZBlkInfo {
                oid,
                serial,
                kind: ZBlkKind::ZBlk0,
            };
            let data = if data.len() == bs {
                data
            } else {
                let mut buf = vec![0u8; bs];
                buf[..data.len()].copy_from_slice(&data);
                Bytes::from(buf)
            };
            return Ok((data, info, Vec::new()));
        }
        if is_class(&rec.class, "ZBlk1") {
            let info = ZBlkInfo {
                oid,
                serial,
                kind: ZBlkKind::ZBlk1,
            };
            let tab = btree::value_ref(oid, &rec.state, "ZBlk1 chunktab")?;
            check_ref_class(&tab, Family::IO)?;
            let (data, parts) = self.load_chunks(st, tab.oid, at)?;
            return Ok((data, info, parts));
        }
        Err(ObjectError::Class {
            oid,
            class: rec.class,
            want: format!("{MODULE}.ZBlk0, .ZBlk or .ZBlk1"),
        })
    }

    /// Assembles a ZBlk1's chunks. Chunks come in key order from the walk,
    /// so "no overlap" is "each starts at or after the previous end".
    fn load_chunks(
        &self,
        st: &dyn Storage,
        tab: Oid,
        at: Tid,
    ) -> Result<(Bytes, Vec<Part>), ObjectError> {
        let bs = self.blksize as usize;
        let items = BTree::new(tab, Family::IO).items(st, at)?;
        let mut parts: Vec<Part> = items
            .nodes
            .iter()
            .map(|n| Part {
                oid: n.oid,
                serial: n.serial,
            })
            .collect();
        let mut buf = vec![0u8; bs];
        let mut end = 0usize;
        for (off, zref) in &items.items {
            let (rec, serial) = btree::load_record(st, zref.oid, at)?;
            if !is_class(&rec.class, "ZData") {
                return Err(ObjectError::Class {
                    oid: zref.oid,
                    class: rec.class,
                    want: format!("{MODULE}.ZData"),
                });
            }
            let chunk = match &rec.state {
                Value::Bytes(b) => b,
                v => {
                    return Err(corrupt(
                        zref.oid,
                        format!("ZData state: want bytes, got {}", v.kind()),
                    ))
                }
            };
            let start = usize::try_from(*off)
                .map_err(|_| corrupt(tab, format!("chunk at negative offset {off}")))?;
            if start < end {
                return Err(corrupt(
                    tab,
                    format!("chunk @{start} overlaps the previous one (ending @{end})"),
                ));
            }
            let stop = start
                .checked_add(chunk.len())
                .filter(|s| *s <= bs)
                .ok_or_else(|| {
                    corrupt(
                        tab,
                        format!("chunk @{start}+{} runs past blksize {bs}", chunk.len()),
                    )
                })?;
            buf[start..stop].copy_from_slice(chunk);
            end = stop;
            parts.push(Part {
                oid: zref.oid,
                serial,
            });
        }
        Ok((Bytes::from(buf), parts))
    }
}

/// Refuses a reference whose class (when it names one) is not the family's
/// tree class.
fn check_ref_class(r: &PersistentRef, family: Family) -> Result<(), ObjectError> {
    match &r.class {
        Some(c) if !(c.module == family.module() && c.name == family.tree_class()) => {
            Err(ObjectError::Class {
                oid: r.oid,
                class: c.clone(),
                want: family.tree_name(),
            })
        }
        _ => Ok(()),
    }
}

fn zeros(n: u64) -> Bytes {
    Bytes::from(vec![0u8; n as usize])
}
