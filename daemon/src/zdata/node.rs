//! blktab nodes and ZBlk dependencies as of the new head, decoded once per
//! transaction.
//!
//! `zodb::btree` walks trees for lookups; change tracking instead needs the
//! raw shape of single nodes (a bucket's entries, an inner node's children)
//! to compare them with what it tracked. Decoding a 500-child node costs far
//! more than a lookup in it, and one transaction can send many tracked keys
//! through the same node, so every node is decoded at most once per
//! [`ApplyCtx`]. Decoding and its checks are `zodb::btree`'s own
//! ([`BTree::load_node`]: class of the LO family, arity, keys increasing;
//! here the range check — keys inside the range the parent assigned,
//! separators strictly inside it — is applied per use by [`Node::fits`]): a
//! node `zodb::btree` would refuse is refused here too, and the tracker then
//! reports conservatively.

use std::collections::HashMap;
use std::sync::Arc;
use zodb::bigfile::MODULE as ZMODULE;
use zodb::btree::{BTree, Family, KeyRange, NodeState};
use zodb::pickle::Value;
use zodb::serialize::{self, Record};
use zodb::{Oid, Storage, Tid};

/// A decoded blktab node, not yet checked against a key range.
#[derive(Debug)]
pub(crate) enum Node {
    /// Bucket, inline bucket, or empty tree: keys → ZBlk oids.
    Leaf { keys: Vec<i64>, vals: Vec<Oid> },
    /// Inner node: `kids.len() == keys.len() + 1`.
    Inner { keys: Vec<i64>, kids: Vec<Oid> },
}

impl Node {
    /// Whether the node may cover `range` (see module doc).
    pub(crate) fn fits(&self, range: KeyRange) -> bool {
        match self {
            Node::Leaf { keys, .. } => {
                keys.first().is_none_or(|k| range.contains(*k))
                    && keys.last().is_none_or(|k| range.contains(*k))
            }
            Node::Inner { keys, .. } => {
                keys.first().is_none_or(|k| *k > range.lo)
                    && keys.last().is_none_or(|k| *k <= range.hi)
            }
        }
    }
}

/// What a ZBlk's content depends on besides itself: for a ZBlk1, every node
/// of its chunk table and every ZData.
pub(crate) type Parts = Arc<Vec<Oid>>;

/// Per-transaction decoding context: storage as of the new head, and the
/// caches that make re-resolving many tracked blocks cheap.
pub(crate) struct ApplyCtx<'a> {
    pub st: &'a dyn Storage,
    pub at: Tid,
    nodes: HashMap<Oid, Option<Arc<Node>>>,
    zblks: HashMap<Oid, Option<Parts>>,
}

impl<'a> ApplyCtx<'a> {
    pub(crate) fn new(st: &'a dyn Storage, at: Tid) -> Self {
        ApplyCtx {
            st,
            at,
            nodes: HashMap::new(),
            zblks: HashMap::new(),
        }
    }

    /// blktab node `oid` as of `at`, checked for covering `range`; `None`
    /// when it cannot be loaded or is not a valid node there.
    pub(crate) fn node(&mut self, oid: Oid, range: KeyRange, root: bool) -> Option<Arc<Node>> {
        let st = self.st;
        let at = self.at;
        let n = self
            .nodes
            .entry(oid)
            .or_insert_with(|| decode_node(st, oid, at, root).map(Arc::new))
            .clone()?;
        n.fits(range).then_some(n)
    }

    /// The parts of ZBlk `oid` as of `at`; `None` when it cannot be loaded
    /// or is no ZBlk.
    pub(crate) fn zblk_parts(&mut self, oid: Oid) -> Option<Parts> {
        let st = self.st;
        let at = self.at;
        self.zblks
            .entry(oid)
            .or_insert_with(|| zblk_parts(st, oid, at).map(Arc::new))
            .clone()
    }
}

fn load(st: &dyn Storage, oid: Oid, at: Tid) -> Option<Record> {
    let l = st.load(oid, at).ok()?;
    serialize::decode_record(&l.data).ok()
}

fn as_oid(v: &Value) -> Option<Oid> {
    match v {
        Value::PersistentId(pid) => serialize::persistent_ref(pid).ok().map(|r| r.oid),
        _ => None,
    }
}

/// Decodes with `zodb::btree`'s own node loader (same class, arity, key
/// and order checks; inner nodes come from its decoded-node cache), but
/// without a range: the range check is [`Node::fits`], per use.
fn decode_node(st: &dyn Storage, oid: Oid, at: Tid, root: bool) -> Option<Node> {
    let tree = BTree::new(oid, Family::LO);
    let (_, state) = tree.load_node(st, oid, at, KeyRange::FULL, root).ok()?;
    Some(match state {
        NodeState::Items(leaf) => Node::Leaf {
            keys: leaf.keys.clone(),
            vals: leaf.values.iter().map(as_oid).collect::<Option<_>>()?,
        },
        NodeState::Kids(inner) => Node::Inner {
            keys: inner.keys.clone(),
            kids: inner.kids.clone(),
        },
    })
}

/// A ZBlk's parts: none for ZBlk0/ZBlk; the chunk-table nodes and ZData
/// oids for a ZBlk1 (the ZData themselves are not loaded: only their
/// identity matters, a new revision of one is seen by its oid).
pub(crate) fn zblk_parts(st: &dyn Storage, oid: Oid, at: Tid) -> Option<Vec<Oid>> {
    let rec = load(st, oid, at)?;
    if rec.class.module != ZMODULE {
        return None;
    }
    match rec.class.name.as_str() {
        "ZBlk0" | "ZBlk" => Some(Vec::new()),
        "ZBlk1" => {
            let tab = as_oid(&rec.state)?;
            let items = BTree::new(tab, Family::IO).items(st, at).ok()?;
            let mut parts: Vec<Oid> = items.nodes.iter().map(|n| n.oid).collect();
            parts.extend(items.items.iter().map(|(_, r)| r.oid));
            Some(parts)
        }
        _ => None,
    }
}
