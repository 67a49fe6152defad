//! The `.index` file Python's FileStorage writes on close.
//!
//! Format (`ZODB/fsIndex.py`, `fsIndex.save`): pickles back to back, written
//! with `fast` (no memo): first the file position up to which the index is
//! valid (an int), then one `(prefix, bucket)` tuple per 6-byte oid prefix,
//! where `bucket` is `fsBucket.toString()`: the n 2-byte oid suffixes, then
//! the n 6-byte positions; then `None`. (Very old files pickled a dict
//! instead of the position; those are simply not used.)
//!
//! The file is a cache written by another program and may be stale (the
//! database grew after it was written: we scan the rest), torn, or garbage.
//! Before trusting it we check it the way Python's `_check_sanity` does,
//! and a bit more, since a load through a bad position must not return
//! wrong data:
//!
//! - the position lies within the file, and the transaction that ends there
//!   exists: its redundant length matches its header, its status is sane;
//! - the records of the last non-empty transaction before that position are
//!   exactly where the index says those objects' latest records are;
//! - every indexed position lies before the index's position, and a spread
//!   sample of them holds a data record of the right object.
//!
//! Anything failing means "scan instead", never an error: the data file is
//! the truth, the index only a shortcut.

use super::format::{self, Ctx, ReadAt, DATA_HDR_LEN, MAGIC, TXN_HDR_LEN};
use super::Index;
use crate::pickle::{self, Value};
use crate::types::{Oid, Tid};
use std::collections::HashMap;
use std::path::Path;

/// Below this position Python does not trust an index either.
const MIN_POS: u64 = 100;
/// Records of the last transaction checked against the index.
const MAX_LAST_TXN_CHECKS: usize = 64;
/// Index entries checked against the data file.
const SAMPLE_CHECKS: usize = 64;

/// Loads and checks `path`; `None` when it is absent or cannot be trusted.
pub(crate) fn load(path: &Path, r: &dyn ReadAt, ctx: &Ctx) -> Option<Index> {
    let buf = bytes::Bytes::from(std::fs::read(path).ok()?);
    let (pos, oid2pos) = parse(&buf)?;
    let last_tid = check(pos, &oid2pos, r, ctx)?;
    Some(Index {
        oid2pos,
        pos,
        last_tid,
    })
}

/// Decodes the pickles of an index file.
pub fn parse(buf: &bytes::Bytes) -> Option<(u64, HashMap<Oid, u64>)> {
    let (v, mut p) = pickle::decode(buf, 0).ok()?;
    let pos = u64::try_from(v.as_int()?).ok()?;
    let mut oid2pos = HashMap::new();
    loop {
        let (v, next) = pickle::decode(buf, p).ok()?;
        p = next;
        let item = match v {
            Value::None => return Some((pos, oid2pos)),
            Value::Tuple(t) => t,
            _ => return None,
        };
        let [prefix, bucket] = item.as_slice() else {
            return None;
        };
        let (prefix, bucket) = (prefix.as_bytes()?, bucket.as_bytes()?);
        if prefix.len() != 6 || bucket.len() % 8 != 0 {
            return None;
        }
        let n = bucket.len() / 8;
        let (keys, values) = bucket.split_at(2 * n);
        for (k, v) in keys.chunks_exact(2).zip(values.chunks_exact(6)) {
            let mut o = [0u8; 8];
            o[..6].copy_from_slice(prefix);
            o[6..].copy_from_slice(k);
            let mut q = [0u8; 8];
            q[2..].copy_from_slice(v);
            oid2pos.insert(Oid::from_bytes(o), u64::from_be_bytes(q));
        }
    }
}

/// Checks an index against the data file; returns the tid of the
/// transaction ending at `pos`.
fn check(pos: u64, oid2pos: &HashMap<Oid, u64>, r: &dyn ReadAt, ctx: &Ctx) -> Option<Tid> {
    let size = r.size().ok()?;
    if pos < MIN_POS || pos > size {
        return None;
    }
    let first = MAGIC.len() as u64;
    if oid2pos
        .values()
        .any(|&p| p < first + TXN_HDR_LEN || p > pos - (DATA_HDR_LEN + 8))
    {
        return None;
    }
    // Walk back from `pos` to the last transaction with records; check them.
    let mut end = pos;
    let mut last_tid = None;
    let mut newer = Tid::MAX;
    while end > first {
        let mut b = [0u8; 8];
        r.read_exact_at(&mut b, end - 8).ok()?;
        let tl = u64::from_be_bytes(b);
        let tpos = (end - 8).checked_sub(tl).filter(|&t| t >= first)?;
        let th = format::read_txn_header(r, ctx, tpos).ok()?;
        if th.tlen != tl
            || th.tid >= newer
            || tl < th.header_len()
            || !matches!(th.status, b' ' | b'p' | b'u')
        {
            return None;
        }
        newer = th.tid;
        last_tid.get_or_insert(th.tid);
        let tend = tpos + tl;
        let mut opos = tpos + th.header_len();
        if th.status == b'u' || opos == tend {
            end = tpos;
            continue;
        }
        let mut checked = 0;
        while opos < tend && checked < MAX_LAST_TXN_CHECKS {
            let h = format::read_data_header(r, ctx, opos).ok()?;
            let next = h.record_len().and_then(|l| opos.checked_add(l))?;
            if next > tend || h.tloc != tpos || h.tid != th.tid {
                return None;
            }
            // An object stored twice in one transaction is indexed at its
            // last record.
            let want = oid2pos.get(&h.oid).copied()?;
            if want != opos && !(want > opos && want < tend) {
                return None;
            }
            checked += 1;
            opos = next;
        }
        break;
    }
    let last_tid = last_tid?;
    // A spread sample of entries must point to records of their objects.
    let mut all: Vec<(Oid, u64)> = oid2pos.iter().map(|(&o, &p)| (o, p)).collect();
    all.sort_unstable();
    let step = (all.len() / SAMPLE_CHECKS).max(1);
    for &(oid, p) in all.iter().step_by(step) {
        let h = format::read_data_header(r, ctx, p).ok()?;
        if h.oid != oid || h.tid > last_tid {
            return None;
        }
    }
    Some(last_tid)
}
