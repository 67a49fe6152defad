//! BTrees (`LOBTree`/`LOBucket`, `IOBTree`/`IOBucket`) read from state.
//!
//! wendelin.core keeps a file's block table in an `LOBTree` {blk → ZBlk} and
//! a ZBlk1's chunks in an `IOBTree` {offset → ZData}. We never build these
//! trees in memory: every operation walks the stored node states as of an
//! explicit tid, loading each node through the [`Storage`], and reports the
//! way it went. The daemon needs that way as much as the answer — a block's
//! content can change because any node on its path changed (a bucket split,
//! a key moved between buckets, a hole filled), so it tracks the node oids
//! and the key range each of them covered.
//!
//! State forms (see `BTrees/BTreeTemplate.c`, `BucketTemplate.c`):
//!
//! - bucket: `(items,)` or `(items, next_bucket)`, `items = (k0, v0, k1, …)`;
//! - tree: `None` (empty); `(((items,),),)` — a single bucket stored inline
//!   in the tree's own record, so it has no oid: a path ends at the tree;
//!   or `((child0, key1, child1, …, keyN, childN), firstbucket)`, where
//!   `key_i` separates `child_{i-1}` (keys < key_i) from `child_i`.
//!
//! Key ranges are inclusive `[lo, hi]` over i64 for both families; the root
//! covers `[i64::MIN, i64::MAX]` and each child the slice its parent's
//! separators give it. The `next_bucket` links and `firstbucket` are not
//! used: everything follows the tree structure, which is what decides where
//! a key lives.
//!
//! Stored data is untrusted. Every node is checked as it is met: its class
//! must be the tree or bucket class of the expected family, keys must be
//! integers of the family's width, strictly increasing, and inside the range
//! the parent assigned (separators strictly inside it). A node that shows
//! up twice on one walk (a cycle, or a DAG that a real BTree never is) and
//! paths deeper than [`MAX_DEPTH`] are errors. Nothing here panics on bad
//! input.
//!
//! Values are only interpreted where needed: a lookup turns the one value it
//! found into a [`PersistentRef`]; a value that is no persistent reference is
//! reported as corruption then. Children of inner nodes are all resolved when
//! the node is decoded.
//!
//! Nodes are cached decoded, by (storage instance, oid, serial): a record
//! with a given serial never changes, so the cache needs no invalidation.
//! Inner nodes are few (one per ~500 children) but big — the root of a
//! large blktab holds hundreds of references — and every lookup passes
//! through them, so decoding them again for each block would dominate the
//! cost of a lookup. Buckets (up to 60 items in a blktab) are cached too:
//! with small blocks, consecutive blocks share a bucket, and decoding it
//! again for each of them was half the daemon's time per 4 KiB block
//! (perf, cold read of a 4 KiB-block file). Both caches are bounded
//! ([`NODE_CACHE_SIZE`] inner nodes, [`BUCKET_CACHE_SIZE`] buckets, oldest
//! evicted first). A walk still needs each node's serial as of the tid
//! asked: from [`Storage::serial_at`] where the storage can tell it without
//! the data (a FileStorage reads one record header), else from a load, of
//! which only the decoding is saved. Range checks run
//! on every use, since the same node may be reached with different ranges
//! on corrupt data; a bucket is taken from the cache only below the root
//! (a root must be a tree, which only a decode checks).

use crate::pickle::Value;
use crate::serialize::{self, ClassName, PersistentRef, Record};
use crate::storage::{self, Storage};
use crate::types::{Oid, Tid};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, LazyLock};

/// Deepest tree accepted. Real BTrees with the default fan-out reach 4
/// levels only beyond ~10^10 keys; anything deeper is corrupt or a cycle.
pub const MAX_DEPTH: usize = 64;

/// Errors about one stored object. Shared with [`crate::bigfile`], whose
/// objects fail in the same ways.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage could not load the object (see [`storage::Error`] for
    /// "missing" vs failure).
    #[error("{oid}: load @{at}: {source}")]
    Load {
        oid: Oid,
        at: Tid,
        #[source]
        source: storage::Error,
    },
    /// The record is not a valid ZODB record.
    #[error("{oid}: {source}")]
    Decode {
        oid: Oid,
        #[source]
        source: serialize::Error,
    },
    /// The object is of a class that does not belong here.
    #[error("{oid}: unexpected class {class} (want {want})")]
    Class {
        oid: Oid,
        class: ClassName,
        want: String,
    },
    /// The object has the right class but its state is impossible.
    #[error("{oid}: corrupt: {why}")]
    Corrupt { oid: Oid, why: String },
    /// A request that cannot be answered (not a property of the data).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The object (or one it depends on) has no data as of the tid: not
    /// created yet, deleted, or never existed.
    pub fn is_missing(&self) -> bool {
        matches!(self, Error::Load { source, .. } if source.is_missing())
    }
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::Decode { .. })
    }
    pub fn is_class(&self) -> bool {
        matches!(self, Error::Class { .. })
    }
}

fn corrupt(oid: Oid, why: impl Into<String>) -> Error {
    Error::Corrupt {
        oid,
        why: why.into(),
    }
}

/// Loads and decodes one object: its record and serial.
pub(crate) fn load_record(st: &dyn Storage, oid: Oid, at: Tid) -> Result<(Record, Tid), Error> {
    let loaded = st
        .load(oid, at)
        .map_err(|source| Error::Load { oid, at, source })?;
    let rec =
        serialize::decode_record(&loaded.data).map_err(|source| Error::Decode { oid, source })?;
    Ok((rec, loaded.serial))
}

/// The persistent reference a value holds, or corruption of `oid`.
pub(crate) fn value_ref(oid: Oid, v: &Value, what: &str) -> Result<PersistentRef, Error> {
    match v {
        Value::PersistentId(pid) => {
            serialize::persistent_ref(pid).map_err(|e| corrupt(oid, format!("{what}: {e}")))
        }
        other => Err(corrupt(
            oid,
            format!("{what}: want a persistent reference, got {}", other.kind()),
        )),
    }
}

/// Which BTree flavour: the key width is what differs for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `BTrees.LOBTree`: int64 keys → objects (a ZBigFile's blktab).
    LO,
    /// `BTrees.IOBTree`: int32 keys → objects (a ZBlk1's chunktab).
    IO,
}

impl Family {
    pub fn module(self) -> &'static str {
        match self {
            Family::LO => "BTrees.LOBTree",
            Family::IO => "BTrees.IOBTree",
        }
    }
    pub fn tree_class(self) -> &'static str {
        match self {
            Family::LO => "LOBTree",
            Family::IO => "IOBTree",
        }
    }
    pub fn bucket_class(self) -> &'static str {
        match self {
            Family::LO => "LOBucket",
            Family::IO => "IOBucket",
        }
    }
    fn key_bounds(self) -> (i64, i64) {
        match self {
            Family::LO => (i64::MIN, i64::MAX),
            Family::IO => (i32::MIN as i64, i32::MAX as i64),
        }
    }
    /// `BTrees.LOBTree.LOBTree`: for messages.
    pub fn tree_name(self) -> String {
        format!("{}.{}", self.module(), self.tree_class())
    }
    fn kind_of(self, class: &ClassName) -> Option<NodeKind> {
        if class.module != self.module() {
            return None;
        }
        if class.name == self.tree_class() {
            Some(NodeKind::Tree)
        } else if class.name == self.bucket_class() {
            Some(NodeKind::Bucket)
        } else {
            None
        }
    }
}

/// An inclusive key range `[lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRange {
    pub lo: i64,
    pub hi: i64,
}

impl KeyRange {
    pub const FULL: KeyRange = KeyRange {
        lo: i64::MIN,
        hi: i64::MAX,
    };
    pub fn contains(&self, k: i64) -> bool {
        self.lo <= k && k <= self.hi
    }
}

impl std::fmt::Display for KeyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}]", self.lo, self.hi)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    Tree,
    Bucket,
}

/// One node met on a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PathNode {
    pub oid: Oid,
    /// The tid of the node's record as of the walk's `at`.
    pub serial: Tid,
    pub kind: NodeKind,
    /// The keys this node is responsible for, as its ancestors assigned them.
    pub range: KeyRange,
}

/// Max serial over nodes ([`Tid::ZERO`] for none).
pub fn max_serial(nodes: &[PathNode]) -> Tid {
    nodes.iter().map(|n| n.serial).max().unwrap_or(Tid::ZERO)
}

/// The key range of a path's last node (the full range for no path).
pub fn path_range(nodes: &[PathNode]) -> KeyRange {
    nodes.last().map_or(KeyRange::FULL, |n| n.range)
}

/// The oids of a path's nodes, root first.
pub fn path_oids(nodes: &[PathNode]) -> Vec<Oid> {
    nodes.iter().map(|n| n.oid).collect()
}

/// The result of [`BTree::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// What the key maps to; `None` if absent.
    pub value: Option<PersistentRef>,
    /// Root → the bucket that holds (or would hold) the key. For a tree with
    /// an inline bucket, or an empty tree, just the root.
    pub path: Vec<PathNode>,
}

impl Lookup {
    /// The key range of the final node: every key in it would be decided by
    /// the same bucket.
    pub fn range(&self) -> KeyRange {
        path_range(&self.path)
    }
    pub fn max_serial(&self) -> Tid {
        max_serial(&self.path)
    }
    pub fn path_oids(&self) -> Vec<Oid> {
        path_oids(&self.path)
    }
}

/// The result of [`BTree::rightmost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RightMost {
    /// The largest key and its value; `None` for an empty tree.
    pub max: Option<(i64, PersistentRef)>,
    /// Root → the bucket holding the largest key (just the root when the
    /// tree is empty).
    pub path: Vec<PathNode>,
    /// Empty nodes right of `path` that the walk passed over. A real BTree
    /// has none; if one exists, a key inserted there changes the max without
    /// touching `path`, so whoever tracks the size must track these too.
    pub skipped: Vec<PathNode>,
}

impl RightMost {
    pub fn range(&self) -> KeyRange {
        path_range(&self.path)
    }
    pub fn max_serial(&self) -> Tid {
        max_serial(&self.path)
    }
    pub fn path_oids(&self) -> Vec<Oid> {
        path_oids(&self.path)
    }
}

/// The result of [`BTree::items`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Items {
    /// Every (key, value), in key order.
    pub items: Vec<(i64, PersistentRef)>,
    /// Every node of the tree (root first, depth first).
    pub nodes: Vec<PathNode>,
}

/// One node's decoded state, checked against the range it must cover (see
/// [`BTree::load_node`]).
pub enum NodeState {
    /// Keys and their values (a bucket, an inline bucket, or an empty tree).
    Items(Arc<Leaf>),
    /// An inner node.
    Kids(Arc<InnerNode>),
}

/// A decoded bucket (or inline bucket): its keys, strictly increasing,
/// and their values, as stored.
pub struct Leaf {
    pub keys: Vec<i64>,
    pub values: Vec<Value>,
}

/// A decoded inner node: n+1 children separated by n keys, `keys[i]`
/// separating `kids[i]` (keys below it) from `kids[i+1]`.
pub struct InnerNode {
    pub keys: Vec<i64>,
    pub kids: Vec<Oid>,
}

/// How many decoded inner nodes are kept (see the module docs). A node of
/// 500 children takes ~8 KiB.
pub const NODE_CACHE_SIZE: usize = 4096;

/// How many decoded buckets are kept (see the module docs). A bucket of 60
/// items takes ~10 KiB.
pub const BUCKET_CACHE_SIZE: usize = 1024;

type NodeKey = (u64, Oid, Tid, Family);

/// A bounded map, oldest entry evicted first.
struct Fifo<V> {
    map: HashMap<NodeKey, Arc<V>>,
    order: VecDeque<NodeKey>,
    cap: usize,
}

impl<V> Fifo<V> {
    fn new(cap: usize) -> Mutex<Fifo<V>> {
        Mutex::new(Fifo {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        })
    }

    fn get(&self, key: &NodeKey) -> Option<Arc<V>> {
        self.map.get(key).cloned()
    }

    fn put(&mut self, key: NodeKey, v: Arc<V>) {
        if self.map.insert(key, v).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

static NODE_CACHE: LazyLock<Mutex<Fifo<InnerNode>>> = LazyLock::new(|| Fifo::new(NODE_CACHE_SIZE));
static BUCKET_CACHE: LazyLock<Mutex<Fifo<Leaf>>> = LazyLock::new(|| Fifo::new(BUCKET_CACHE_SIZE));

/// A handle on a stored BTree: its root oid and family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BTree {
    pub oid: Oid,
    pub family: Family,
}

impl BTree {
    pub fn new(oid: Oid, family: Family) -> BTree {
        BTree { oid, family }
    }

    /// Finds `key` as of `at`, reporting the path taken.
    pub fn lookup(&self, st: &dyn Storage, key: i64, at: Tid) -> Result<Lookup, Error> {
        let mut path: Vec<PathNode> = Vec::with_capacity(4);
        let mut oid = self.oid;
        let mut range = KeyRange::FULL;
        loop {
            if path.len() >= MAX_DEPTH {
                return Err(corrupt(self.oid, format!("tree deeper than {MAX_DEPTH}")));
            }
            if path.iter().any(|n| n.oid == oid) {
                return Err(corrupt(oid, "cycle: node is its own ancestor"));
            }
            let (node, state) = self.load_node(st, oid, at, range, path.is_empty())?;
            path.push(node);
            match state {
                NodeState::Items(leaf) => {
                    let value = match leaf.keys.binary_search(&key) {
                        Ok(i) => Some(value_ref(oid, &leaf.values[i], "value")?),
                        Err(_) => None,
                    };
                    return Ok(Lookup { value, path });
                }
                NodeState::Kids(inner) => {
                    let i = inner.keys.partition_point(|k| *k <= key);
                    range = child_range(&inner.keys, i, range);
                    oid = inner.kids[i];
                }
            }
        }
    }

    /// Finds the largest key as of `at`, reporting the path taken.
    pub fn rightmost(&self, st: &dyn Storage, at: Tid) -> Result<RightMost, Error> {
        let mut w = Walk::default();
        let found = self.rightmost_in(st, at, self.oid, KeyRange::FULL, &mut w)?;
        match found {
            Some(max) => Ok(RightMost {
                max: Some(max),
                path: w.path,
                skipped: w.skipped,
            }),
            None => {
                // Empty: the root alone decides, whatever it looked like.
                let root = *w
                    .skipped
                    .first()
                    .ok_or_else(|| corrupt(self.oid, "no root"))?;
                let skipped = w.skipped[1..].to_vec();
                Ok(RightMost {
                    max: None,
                    path: vec![root],
                    skipped,
                })
            }
        }
    }

    fn rightmost_in(
        &self,
        st: &dyn Storage,
        at: Tid,
        oid: Oid,
        range: KeyRange,
        w: &mut Walk,
    ) -> Result<Option<(i64, PersistentRef)>, Error> {
        if w.path.len() >= MAX_DEPTH {
            return Err(corrupt(self.oid, format!("tree deeper than {MAX_DEPTH}")));
        }
        if !w.seen.insert(oid) {
            return Err(corrupt(oid, "node met twice (cycle)"));
        }
        let (node, state) = self.load_node(st, oid, at, range, w.path.is_empty())?;
        w.path.push(node);
        let found = match state {
            NodeState::Items(leaf) => match leaf.keys.last() {
                Some(&k) => Some((
                    k,
                    value_ref(oid, &leaf.values[leaf.keys.len() - 1], "value")?,
                )),
                None => None,
            },
            NodeState::Kids(inner) => {
                let mut found = None;
                for i in (0..inner.kids.len()).rev() {
                    let child = inner.kids[i];
                    let r = child_range(&inner.keys, i, range);
                    if let Some(x) = self.rightmost_in(st, at, child, r, w)? {
                        found = Some(x);
                        break;
                    }
                }
                found
            }
        };
        if found.is_none() {
            // Empty subtree: not on the way to the max, but reported (the
            // order of `skipped` carries no meaning beyond the root first).
            let n = w.path.pop().expect("pushed above");
            w.skipped.insert(0, n);
        }
        Ok(found)
    }

    /// Every item as of `at`, and every node visited.
    pub fn items(&self, st: &dyn Storage, at: Tid) -> Result<Items, Error> {
        let mut out = Items {
            items: Vec::new(),
            nodes: Vec::new(),
        };
        let mut seen = HashSet::new();
        self.items_in(st, at, self.oid, KeyRange::FULL, 0, &mut seen, &mut out)?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn items_in(
        &self,
        st: &dyn Storage,
        at: Tid,
        oid: Oid,
        range: KeyRange,
        depth: usize,
        seen: &mut HashSet<Oid>,
        out: &mut Items,
    ) -> Result<(), Error> {
        if depth >= MAX_DEPTH {
            return Err(corrupt(self.oid, format!("tree deeper than {MAX_DEPTH}")));
        }
        if !seen.insert(oid) {
            return Err(corrupt(oid, "node met twice (cycle)"));
        }
        let (node, state) = self.load_node(st, oid, at, range, depth == 0)?;
        out.nodes.push(node);
        match state {
            NodeState::Items(leaf) => {
                for (&k, v) in leaf.keys.iter().zip(leaf.values.iter()) {
                    out.items.push((k, value_ref(oid, v, "value")?));
                }
            }
            NodeState::Kids(inner) => {
                for (i, &child) in inner.kids.iter().enumerate() {
                    let r = child_range(&inner.keys, i, range);
                    self.items_in(st, at, child, r, depth + 1, seen, out)?;
                }
            }
        }
        Ok(())
    }

    /// Node `oid` at `serial` from the decoded-node caches, checked
    /// against the `range` this walk gives it (see the module docs).
    fn cached(
        &self,
        st: &dyn Storage,
        oid: Oid,
        serial: Tid,
        range: KeyRange,
        is_root: bool,
    ) -> Result<Option<(PathNode, NodeState)>, Error> {
        let key = (st.instance_id(), oid, serial, self.family);
        if let Some(inner) = NODE_CACHE.lock().get(&key) {
            check_separators(oid, &inner.keys, range)?;
            let node = PathNode {
                oid,
                serial,
                kind: NodeKind::Tree,
                range,
            };
            return Ok(Some((node, NodeState::Kids(inner))));
        }
        // Only buckets met below the root are cached: a root must be a
        // tree, which the class check of a decode says.
        if is_root {
            return Ok(None);
        }
        let Some(leaf) = BUCKET_CACHE.lock().get(&key) else {
            return Ok(None);
        };
        // Keys are strictly increasing (checked at decode): the ends inside
        // the range put all of them inside.
        for k in [leaf.keys.first(), leaf.keys.last()]
            .into_iter()
            .flatten()
            .copied()
        {
            if !range.contains(k) {
                return Err(corrupt(oid, format!("key {k} outside {range}")));
            }
        }
        let node = PathNode {
            oid,
            serial,
            kind: NodeKind::Bucket,
            range,
        };
        Ok(Some((node, NodeState::Items(leaf))))
    }

    /// Loads node `oid` of this tree as of `at`, which must cover `range`,
    /// and checks its class and state. The root must be a tree; below it,
    /// trees and buckets of the family. For callers that walk trees their
    /// own way (change tracking compares single nodes).
    pub fn load_node(
        &self,
        st: &dyn Storage,
        oid: Oid,
        at: Tid,
        range: KeyRange,
        is_root: bool,
    ) -> Result<(PathNode, NodeState), Error> {
        // The serial first, where the storage can tell it without the
        // data: a cached node then costs no load at all.
        if let Some(serial) = st.serial_at(oid, at) {
            if let Some(hit) = self.cached(st, oid, serial, range, is_root)? {
                return Ok(hit);
            }
        }
        let loaded = st
            .load(oid, at)
            .map_err(|source| Error::Load { oid, at, source })?;
        let serial = loaded.serial;
        if let Some(hit) = self.cached(st, oid, serial, range, is_root)? {
            return Ok(hit);
        }
        let key = (st.instance_id(), oid, serial, self.family);
        let rec = serialize::decode_record(&loaded.data)
            .map_err(|source| Error::Decode { oid, source })?;
        let kind = match self.family.kind_of(&rec.class) {
            Some(NodeKind::Bucket) if is_root => None,
            k => k,
        };
        let Some(kind) = kind else {
            let want = if is_root {
                self.family.tree_name()
            } else {
                format!(
                    "{} or {}",
                    self.family.tree_name(),
                    self.family.bucket_class()
                )
            };
            return Err(Error::Class {
                oid,
                class: rec.class,
                want,
            });
        };
        let state = match kind {
            NodeKind::Bucket => self.bucket_state(oid, rec.state, range)?,
            NodeKind::Tree => self.tree_state(oid, rec.state, range)?,
        };
        match &state {
            NodeState::Kids(inner) => NODE_CACHE.lock().put(key, inner.clone()),
            NodeState::Items(leaf) if kind == NodeKind::Bucket => {
                BUCKET_CACHE.lock().put(key, leaf.clone())
            }
            NodeState::Items(_) => {}
        }
        Ok((
            PathNode {
                oid,
                serial,
                kind,
                range,
            },
            state,
        ))
    }

    /// `(items,)` or `(items, next)`.
    fn bucket_state(&self, oid: Oid, state: Value, range: KeyRange) -> Result<NodeState, Error> {
        let mut t = into_tuple(oid, state, "bucket state")?;
        if t.is_empty() || t.len() > 2 {
            return Err(corrupt(
                oid,
                format!("bucket state: tuple of {} (want 1 or 2)", t.len()),
            ));
        }
        t.truncate(1);
        let items = t.pop().expect("len 1");
        self.items_of(oid, items, range)
    }

    /// `None`, `(((items,),),)` or `((child0, key1, …), firstbucket)`.
    fn tree_state(&self, oid: Oid, state: Value, range: KeyRange) -> Result<NodeState, Error> {
        if matches!(state, Value::None) {
            return Ok(NodeState::Items(Arc::new(Leaf {
                keys: Vec::new(),
                values: Vec::new(),
            })));
        }
        let mut t = into_tuple(oid, state, "tree state")?;
        match t.len() {
            1 => {
                // Inline bucket: ((bucket_state,),)
                let mut inner = into_tuple(oid, t.pop().expect("len 1"), "inline bucket")?;
                if inner.len() != 1 {
                    return Err(corrupt(
                        oid,
                        format!("inline bucket: tuple of {} (want 1)", inner.len()),
                    ));
                }
                let bstate = into_tuple(oid, inner.pop().expect("len 1"), "inline bucket state")?;
                if bstate.len() != 1 {
                    // An inline bucket has no next bucket.
                    return Err(corrupt(
                        oid,
                        format!("inline bucket state: tuple of {} (want 1)", bstate.len()),
                    ));
                }
                let items = bstate.into_iter().next().expect("len 1");
                self.items_of(oid, items, range)
            }
            2 => {
                t.truncate(1);
                let data = into_tuple(oid, t.pop().expect("len 2"), "tree children")?;
                if data.len() % 2 != 1 {
                    return Err(corrupt(
                        oid,
                        format!("tree children: {} entries (want odd)", data.len()),
                    ));
                }
                let mut keys = Vec::with_capacity(data.len() / 2);
                let mut kids = Vec::with_capacity(data.len() / 2 + 1);
                for (i, v) in data.iter().enumerate() {
                    if i % 2 == 0 {
                        kids.push(value_ref(oid, v, "child")?.oid);
                    } else {
                        keys.push(self.key(oid, v)?);
                    }
                }
                check_separators(oid, &keys, range)?;
                Ok(NodeState::Kids(Arc::new(InnerNode { keys, kids })))
            }
            n => Err(corrupt(
                oid,
                format!("tree state: tuple of {n} (want 1 or 2)"),
            )),
        }
    }

    /// `(k0, v0, k1, v1, …)`: keys strictly increasing, inside `range`.
    fn items_of(&self, oid: Oid, items: Value, range: KeyRange) -> Result<NodeState, Error> {
        let items = match items {
            Value::Tuple(v) | Value::List(v) => v,
            other => {
                return Err(corrupt(
                    oid,
                    format!("bucket items: want tuple, got {}", other.kind()),
                ))
            }
        };
        if items.len() % 2 != 0 {
            return Err(corrupt(
                oid,
                format!("bucket items: odd length {}", items.len()),
            ));
        }
        let mut keys = Vec::with_capacity(items.len() / 2);
        let mut values = Vec::with_capacity(items.len() / 2);
        for (i, v) in items.into_iter().enumerate() {
            if i % 2 == 0 {
                let k = self.key(oid, &v)?;
                if !range.contains(k) {
                    return Err(corrupt(oid, format!("key {k} outside {range}")));
                }
                if keys.last().is_some_and(|&p| k <= p) {
                    return Err(corrupt(oid, format!("keys not increasing at {k}")));
                }
                keys.push(k);
            } else {
                values.push(v);
            }
        }
        Ok(NodeState::Items(Arc::new(Leaf { keys, values })))
    }

    fn key(&self, oid: Oid, v: &Value) -> Result<i64, Error> {
        let (min, max) = self.family.key_bounds();
        match v {
            Value::Int(k) if (min..=max).contains(k) => Ok(*k),
            Value::Int(k) => Err(corrupt(
                oid,
                format!("key {k} too wide for {}", self.family.tree_class()),
            )),
            other => Err(corrupt(oid, format!("key: want int, got {}", other.kind()))),
        }
    }
}

#[derive(Default)]
struct Walk {
    path: Vec<PathNode>,
    skipped: Vec<PathNode>,
    seen: HashSet<Oid>,
}

/// Separators must increase strictly and lie strictly inside the range, so
/// no child gets an empty or inverted slice.
fn check_separators(oid: Oid, keys: &[i64], range: KeyRange) -> Result<(), Error> {
    let mut prev = range.lo;
    for &k in keys {
        if k <= prev || k > range.hi {
            return Err(corrupt(
                oid,
                format!("separator {k} out of order or outside {range}"),
            ));
        }
        prev = k;
    }
    Ok(())
}

/// The range of child `i` of a node with separators `keys` covering `range`.
/// Separators were checked to lie strictly inside `range` and increase, so
/// `keys[i] - 1` cannot underflow and the result is never empty.
pub fn child_range(keys: &[i64], i: usize, range: KeyRange) -> KeyRange {
    KeyRange {
        lo: if i == 0 { range.lo } else { keys[i - 1] },
        hi: if i == keys.len() {
            range.hi
        } else {
            keys[i] - 1
        },
    }
}

fn into_tuple(oid: Oid, v: Value, what: &str) -> Result<Vec<Value>, Error> {
    match v {
        Value::Tuple(t) => Ok(t),
        other => Err(corrupt(
            oid,
            format!("{what}: want tuple, got {}", other.kind()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ranges() {
        let r = KeyRange { lo: 0, hi: 100 };
        let keys = [10, 50];
        assert_eq!(child_range(&keys, 0, r), KeyRange { lo: 0, hi: 9 });
        assert_eq!(child_range(&keys, 1, r), KeyRange { lo: 10, hi: 49 });
        assert_eq!(child_range(&keys, 2, r), KeyRange { lo: 50, hi: 100 });
        assert_eq!(child_range(&[], 0, KeyRange::FULL), KeyRange::FULL);
    }
}
