//! The decoded-bucket cache of `zodb::btree` (module doc there): a bucket
//! served from the cache gives what its decode gave, and is still checked
//! on every use — against the range it is reached with, and never accepted
//! as a root.
//!
//! The tree is a real `LOBTree` written by Python's ZODB (many buckets),
//! and the oracle is Python's own `tree.items()`.

use std::process::Command;
use testkit::python;
use zodb::btree::{BTree, Family, KeyRange, NodeKind, NodeState};
use zodb::{Oid, Storage};

/// Writes a LOBTree of 400 keys (every 3rd of 0..1200) → a persistent
/// object each, prints the tree's oid and then `key value-oid` lines.
const GEN: &str = r#"
import sys, transaction, ZODB
from ZODB.FileStorage import FileStorage
from BTrees.LOBTree import LOBTree
from persistent.mapping import PersistentMapping
from ZODB.utils import u64
db = ZODB.DB(FileStorage(sys.argv[1]))
conn = db.open()
t = conn.root()['t'] = LOBTree()
for k in range(0, 1200, 3):
    t[k] = PersistentMapping()
transaction.commit()
print('%016x' % u64(t._p_oid))
for k, v in t.items():
    print(k, '%016x' % u64(v._p_oid))
db.close()
"#;

#[test]
fn cached_buckets_answer_as_decoded_and_are_checked_on_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.fs");
    let out = Command::new(python())
        .arg("-c")
        .arg(GEN)
        .arg(&path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let root = Oid(u64::from_str_radix(lines.next().unwrap(), 16).unwrap());
    let want: Vec<(i64, Oid)> = lines
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.parse().unwrap(), Oid(u64::from_str_radix(v, 16).unwrap()))
        })
        .collect();
    assert_eq!(want.len(), 400);

    let st: std::sync::Arc<dyn Storage> = zodb::zurl::open(path.to_str().unwrap()).unwrap();
    let head = st.last_tid().unwrap();
    let tree = BTree::new(root, Family::LO);

    // Twice: the first pass decodes the buckets, the second finds them in
    // the cache; both must agree with Python, present keys and holes.
    let mut paths = Vec::new();
    for pass in 0..2 {
        for &(k, v) in &want {
            let l = tree.lookup(&*st, k, head).unwrap();
            assert_eq!(l.value.map(|r| r.oid), Some(v), "pass {pass} key {k}");
            let hole = tree.lookup(&*st, k + 1, head).unwrap();
            assert!(hole.value.is_none(), "pass {pass} key {}", k + 1);
            assert_eq!(
                hole.path,
                l.path,
                "pass {pass}: same bucket for {k}, {}",
                k + 1
            );
            if pass == 0 {
                paths.push(l.path);
            } else {
                assert_eq!(paths[want.iter().position(|w| w.0 == k).unwrap()], l.path);
            }
        }
    }
    let got: Vec<(i64, Oid)> = tree
        .items(&*st, head)
        .unwrap()
        .items
        .into_iter()
        .map(|(k, r)| (k, r.oid))
        .collect();
    assert_eq!(got, want);

    // A bucket (now cached) reached with a range that excludes its keys.
    let leaf = *paths[200].last().unwrap();
    assert_eq!(leaf.kind, NodeKind::Bucket, "400 keys make several buckets");
    assert!(paths.iter().any(|p| p.last().unwrap().oid != leaf.oid));
    let (_, state) = tree
        .load_node(&*st, leaf.oid, head, leaf.range, false)
        .unwrap();
    let NodeState::Items(items) = state else {
        panic!("a bucket decodes to items");
    };
    let (lo, hi) = (items.keys[0], *items.keys.last().unwrap());
    for bad in [
        KeyRange { lo: lo + 1, hi },
        KeyRange { lo, hi: hi - 1 },
        KeyRange {
            lo: hi + 1,
            hi: i64::MAX,
        },
    ] {
        let e = tree
            .load_node(&*st, leaf.oid, head, bad, false)
            .err()
            .unwrap_or_else(|| panic!("bucket accepted under {bad:?}"));
        assert!(e.to_string().contains("outside"), "{e}");
    }
    // Never a root, cached or not.
    assert!(tree
        .load_node(&*st, leaf.oid, head, leaf.range, true)
        .is_err());
    assert!(BTree::new(leaf.oid, Family::LO)
        .lookup(&*st, lo, head)
        .is_err());
}
