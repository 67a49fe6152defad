//! Tracking state of one file and its update by one transaction.
//!
//! See the module prose of [`super`] for the design. Invariants kept here
//! (all "as of the tracker's head"):
//!
//! - `blocks` holds every tracked block with the blktab entry it has
//!   (hole, a ZBlk oid, or unknown after a failed load) and the parts of
//!   that ZBlk.
//! - `nodes` is the blktab tree restricted to the paths of tracked blocks:
//!   each node with the key range it covers, its parent, and its tracked
//!   children. Every tracked block's key lies in exactly one tracked leaf
//!   path root → … → node whose decoded state decides the key.
//! - `users` maps every ZBlk oid and ZBlk1 part oid of a tracked block to
//!   the blocks that depend on it.
//! - `size_deps` holds the nodes that decide the size (rightmost path and
//!   the empty nodes passed over).

use super::history::FileHist;
use super::node::{ApplyCtx, Node, Parts};
use super::{Error, FileDelta, FileInfo};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use zodb::bigfile::{Block, ZBigFile};
use zodb::btree::{child_range, KeyRange, MAX_DEPTH};
use zodb::{Oid, Storage, Tid};

/// What a tracked block's blktab entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Hole,
    ZBlk(Oid),
    /// Its node could not be read: compares unequal to anything, so the
    /// block is reported again whenever its region is re-read.
    Unknown,
}

#[derive(Debug)]
pub(crate) struct Blk {
    entry: Entry,
    parts: Parts,
    /// Tid from which `hist` is exact for this block.
    pub(crate) known_from: Tid,
}

#[derive(Debug)]
struct TNode {
    range: KeyRange,
    parent: Option<Oid>,
    kids: Vec<Oid>,
}

/// The blocks that depend on one ZBlk or part; nearly always one.
#[derive(Debug)]
enum Users {
    One(i64),
    Many(HashSet<i64>),
}

pub(crate) struct FileTrack {
    oid: Oid,
    /// `None` while the ZBigFile object cannot be loaded.
    pub(crate) zf: Option<ZBigFile>,
    blksize: u64,
    size: u64,
    size_deps: HashSet<Oid>,
    rev: Tid,
    blocks: BTreeMap<i64, Blk>,
    nodes: HashMap<Oid, TNode>,
    users: HashMap<Oid, Users>,
    pub(crate) hist: FileHist,
}

/// State of one tree walk in [`FileTrack::diff_tree`].
struct Walk<'c, 'a> {
    ctx: &'c mut ApplyCtx<'a>,
    changed: &'c HashSet<Oid>,
    /// For every ancestor of a changed tracked node: its children to visit.
    dirty_kids: HashMap<Oid, Vec<Oid>>,
    /// Nodes placed in the new tree during this walk.
    live: HashSet<Oid>,
    /// Old children of re-read nodes: dropped unless placed again.
    orphans: Vec<Oid>,
    out: &'c mut BTreeSet<u64>,
}

impl FileTrack {
    pub(crate) fn open(st: &dyn Storage, oid: Oid, at: Tid) -> Result<FileTrack, Error> {
        let zf = ZBigFile::load(st, oid, at)?;
        let sz = zf.size(st, at)?;
        let mut f = FileTrack {
            oid,
            zf: Some(zf),
            blksize: zf.blksize(),
            size: sz.size,
            size_deps: HashSet::new(),
            rev: zf.serial(),
            blocks: BTreeMap::new(),
            nodes: HashMap::new(),
            users: HashMap::new(),
            hist: FileHist::default(),
        };
        f.size_deps = sz.path.iter().chain(&sz.skipped).map(|n| n.oid).collect();
        Ok(f)
    }

    pub(crate) fn info(&self) -> FileInfo {
        FileInfo {
            blksize: self.blksize,
            size: self.size,
            rev: self.rev,
        }
    }

    /// The tracked state of `blk`, if tracked with a known entry.
    pub(crate) fn known(&self, blk: u64) -> Option<&Blk> {
        let b = self.blocks.get(&i64::try_from(blk).ok()?)?;
        (b.entry != Entry::Unknown).then_some(b)
    }

    pub(crate) fn is_tracked(&self, blk: u64) -> bool {
        self.known(blk).is_some()
    }

    /// Starts tracking `blk` as loaded at head (`b`); `known_from` is where
    /// its history is exact from.
    pub(crate) fn track_block(&mut self, blk: u64, b: &Block, known_from: Tid) {
        let Ok(k) = i64::try_from(blk) else { return };
        if self.is_tracked(blk) {
            return;
        }
        let mut prev: Option<Oid> = None;
        for pn in &b.path {
            match self.nodes.get_mut(&pn.oid) {
                Some(n) => {
                    // Same head, same tree: the node is where we have it.
                    debug_assert_eq!(n.range, pn.range);
                    debug_assert_eq!(n.parent, prev);
                }
                None => {
                    self.nodes.insert(
                        pn.oid,
                        TNode {
                            range: pn.range,
                            parent: prev,
                            kids: Vec::new(),
                        },
                    );
                    if let Some(p) = prev.and_then(|p| self.nodes.get_mut(&p)) {
                        p.kids.push(pn.oid);
                    }
                }
            }
            prev = Some(pn.oid);
        }
        let entry = b.zblk.map_or(Entry::Hole, |z| Entry::ZBlk(z.oid));
        let parts: Parts = Arc::new(b.parts.iter().map(|p| p.oid).collect());
        if let Some(old) = self.blocks.remove(&k) {
            self.drop_users(k, &old);
        }
        let nb = Blk {
            entry,
            parts,
            known_from,
        };
        self.add_users(k, &nb);
        self.blocks.insert(k, nb);
    }

    fn deps(b: &Blk) -> impl Iterator<Item = Oid> + '_ {
        let z = match b.entry {
            Entry::ZBlk(z) => Some(z),
            _ => None,
        };
        z.into_iter().chain(b.parts.iter().copied())
    }

    fn add_users(&mut self, k: i64, b: &Blk) {
        for o in Self::deps(b) {
            match self.users.get_mut(&o) {
                None => {
                    self.users.insert(o, Users::One(k));
                }
                Some(Users::One(x)) if *x == k => {}
                Some(u @ Users::One(_)) => {
                    let Users::One(x) = *u else { unreachable!() };
                    *u = Users::Many([x, k].into_iter().collect());
                }
                Some(Users::Many(s)) => {
                    s.insert(k);
                }
            }
        }
    }

    fn drop_users(&mut self, k: i64, b: &Blk) {
        for o in Self::deps(b) {
            let gone = match self.users.get_mut(&o) {
                Some(Users::One(x)) => *x == k,
                Some(Users::Many(s)) => {
                    s.remove(&k);
                    s.is_empty()
                }
                None => false,
            };
            if gone {
                self.users.remove(&o);
            }
        }
    }

    /// Gives block `k` entry `e` as of the new head, with its parts.
    fn set_entry(&mut self, ctx: &mut ApplyCtx, k: i64, e: Entry) {
        let Some(old) = self.blocks.remove(&k) else {
            return;
        };
        self.drop_users(k, &old);
        let parts = match e {
            // A ZBlk that cannot be read: its oid stays watched, its parts
            // are unknown (its own next revision brings them back).
            Entry::ZBlk(z) => ctx.zblk_parts(z).unwrap_or_default(),
            _ => Parts::default(),
        };
        let nb = Blk {
            entry: e,
            parts,
            known_from: old.known_from,
        };
        self.add_users(k, &nb);
        self.blocks.insert(k, nb);
    }

    /// Applies transaction `ctx.at` that changed `changed` (listed in
    /// `oids`). Returns the delta when anything tracked changed.
    pub(crate) fn apply(
        &mut self,
        ctx: &mut ApplyCtx,
        changed: &HashSet<Oid>,
        oids: &[Oid],
    ) -> Option<FileDelta> {
        let tid = ctx.at;
        if changed.contains(&self.oid) {
            return Some(self.reset(ctx));
        }
        let zf = self.zf?;
        let mut out = BTreeSet::new();

        self.diff_tree(ctx, zf.blktab().oid, changed, oids, &mut out);

        // ZBlks modified in place, and ZBlk1 parts.
        let mut touched: BTreeSet<i64> = BTreeSet::new();
        for o in oids {
            match self.users.get(o) {
                Some(Users::One(k)) => {
                    touched.insert(*k);
                }
                Some(Users::Many(s)) => touched.extend(s.iter().copied()),
                None => {}
            }
        }
        for k in touched {
            out.insert(k as u64);
            if let Some(e) = self.blocks.get(&k).map(|b| b.entry) {
                // Parts may have come and gone with the new revision.
                self.set_entry(ctx, k, e);
            }
        }

        let mut size = None;
        if oids.iter().any(|o| self.size_deps.contains(o)) {
            // On failure keep the old size and its dependencies: a later
            // fix of the same nodes retries; reads there fail meanwhile.
            if let Ok(sz) = zf.size(ctx.st, tid) {
                self.size_deps = sz.path.iter().chain(&sz.skipped).map(|n| n.oid).collect();
                if sz.size != self.size {
                    self.size = sz.size;
                    size = Some(sz.size);
                }
            }
        }

        if out.is_empty() && size.is_none() {
            return None;
        }
        for &b in &out {
            self.hist.record(b, tid);
        }
        self.rev = tid;
        Some(FileDelta {
            file: self.oid,
            blocks: out,
            size,
            reset: false,
        })
    }

    /// The ZBigFile object itself changed: start over.
    fn reset(&mut self, ctx: &mut ApplyCtx) -> FileDelta {
        let tid = ctx.at;
        self.blocks.clear();
        self.nodes.clear();
        self.users.clear();
        self.size_deps.clear();
        self.hist.reset(tid);
        self.rev = tid;
        self.size = 0;
        self.zf = ZBigFile::load(ctx.st, self.oid, tid).ok();
        if let Some(zf) = self.zf {
            self.blksize = zf.blksize();
            if let Ok(sz) = zf.size(ctx.st, tid) {
                self.size = sz.size;
                self.size_deps = sz.path.iter().chain(&sz.skipped).map(|n| n.oid).collect();
            }
        }
        FileDelta {
            file: self.oid,
            blocks: BTreeSet::new(),
            size: Some(self.size),
            reset: true,
        }
    }

    /// Re-resolves the tracked blocks below changed tracked blktab nodes.
    fn diff_tree(
        &mut self,
        ctx: &mut ApplyCtx,
        root: Oid,
        changed: &HashSet<Oid>,
        oids: &[Oid],
        out: &mut BTreeSet<u64>,
    ) {
        let mut dirty_kids: HashMap<Oid, Vec<Oid>> = HashMap::new();
        let mut any = false;
        for &c in oids {
            if !self.nodes.contains_key(&c) {
                continue;
            }
            any = true;
            let mut x = c;
            while let Some(p) = self.nodes.get(&x).and_then(|n| n.parent) {
                let seen = dirty_kids.contains_key(&p);
                dirty_kids.entry(p).or_default().push(x);
                if seen {
                    break;
                }
                x = p;
            }
        }
        if !any || !self.nodes.contains_key(&root) {
            return;
        }
        let mut w = Walk {
            ctx,
            changed,
            dirty_kids,
            live: HashSet::new(),
            orphans: Vec::new(),
            out,
        };
        self.redo(&mut w, root, KeyRange::FULL, None, 0);
        let orphans = std::mem::take(&mut w.orphans);
        for o in orphans {
            self.drop_subtree(&w.live, o);
        }
    }

    fn drop_subtree(&mut self, live: &HashSet<Oid>, oid: Oid) {
        if live.contains(&oid) {
            return;
        }
        if let Some(n) = self.nodes.remove(&oid) {
            for k in n.kids {
                self.drop_subtree(live, k);
            }
        }
    }

    /// Node `oid` covers `range` under `parent` in the new tree: bring the
    /// tracked blocks in `range` up to date.
    fn redo(&mut self, w: &mut Walk, oid: Oid, range: KeyRange, parent: Option<Oid>, depth: usize) {
        w.live.insert(oid);
        if let Some(n) = self.nodes.get_mut(&oid) {
            if n.range == range && !w.changed.contains(&oid) {
                // Same node, same place, same state: its children are the
                // ones we have; only those with changes below need a visit.
                n.parent = parent;
                for k in w.dirty_kids.remove(&oid).unwrap_or_default() {
                    if w.live.contains(&k) {
                        continue;
                    }
                    if let Some(r) = self.nodes.get(&k).map(|n| n.range) {
                        self.redo(w, k, r, Some(oid), depth + 1);
                    }
                }
                return;
            }
        }
        if let Some(old) = self.nodes.remove(&oid) {
            w.orphans.extend(old.kids);
        }
        let node = if depth >= MAX_DEPTH {
            None
        } else {
            w.ctx.node(oid, range, parent.is_none())
        };
        let mut kids = Vec::new();
        match node.as_deref() {
            None => self.lost(w, range),
            Some(Node::Leaf { keys, vals }) => {
                let upd: Vec<(i64, Entry)> = self
                    .blocks
                    .range(range.lo..=range.hi)
                    .filter_map(|(&k, b)| {
                        let e = match keys.binary_search(&k) {
                            Ok(i) => Entry::ZBlk(vals[i]),
                            Err(_) => Entry::Hole,
                        };
                        (e != b.entry || e == Entry::Unknown).then_some((k, e))
                    })
                    .collect();
                for (k, e) in upd {
                    w.out.insert(k as u64);
                    self.set_entry(w.ctx, k, e);
                }
            }
            Some(Node::Inner { keys, kids: nkids }) => {
                for (i, &c) in nkids.iter().enumerate() {
                    let r = child_range(keys, i, range);
                    if self.blocks.range(r.lo..=r.hi).next().is_none() {
                        continue;
                    }
                    if w.live.contains(&c) {
                        // A node met twice: no real BTree; be conservative.
                        self.lost(w, r);
                        continue;
                    }
                    self.redo(w, c, r, Some(oid), depth + 1);
                    kids.push(c);
                }
            }
        }
        self.nodes.insert(
            oid,
            TNode {
                range,
                parent,
                kids,
            },
        );
    }

    /// The state deciding the tracked blocks in `range` cannot be read:
    /// report them all, and remember we don't know their entries.
    fn lost(&mut self, w: &mut Walk, range: KeyRange) {
        let ks: Vec<i64> = self
            .blocks
            .range(range.lo..=range.hi)
            .map(|(&k, _)| k)
            .collect();
        for k in ks {
            w.out.insert(k as u64);
            self.set_entry(w.ctx, k, Entry::Unknown);
        }
    }

    /// Whether a transaction changing `oids` may change this file: the
    /// file object, a tracked tree node, a ZBlk or part of a tracked block,
    /// or a node deciding the size is among them.
    pub(crate) fn depends_on_any(&self, oids: &[Oid]) -> bool {
        oids.iter().any(|o| {
            *o == self.oid
                || self.nodes.contains_key(o)
                || self.users.contains_key(o)
                || self.size_deps.contains(o)
        })
    }

    /// Number of tracked blocks and tracked tree nodes (for tests).
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.blocks.len(), self.nodes.len())
    }
}
