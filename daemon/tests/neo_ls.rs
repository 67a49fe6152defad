//! `wcfsd ls neo://…` against Python's view of the same cluster (issue
//! 19): the number of objects alive at head — every oid of the history
//! (Python's `neo.client.Storage` iterator) that loads — the ZBigFiles
//! among them (by their pickles' class), and for each its blksize, block
//! count and holes as the Python driver reads them.
//!
//! Without the cluster script the test skips (fails under CI=true).

mod common;

use common::{wcfsd_bin, Env};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

/// Python's listing: the count of objects alive at head, then one
/// `OID` line per ZBigFile.
const ORACLE: &str = r#"
import os
from ZODB.utils import get_pickle_metadata, u64
from ZODB.POSException import POSKeyError
from neo.client.Storage import Storage
st = Storage(master_nodes=os.environ['NEO_MASTERS'].replace(',', ' '),
             name=os.environ['NEO_NAME'], read_only=True)
oids = set()
for t in st.iterator():
    for r in t:
        oids.add(r.oid)
alive, files = 0, []
for oid in sorted(oids):
    try:
        data, _ = st.load(oid)
    except POSKeyError:
        continue
    alive += 1
    if get_pickle_metadata(data) == ('wendelin.bigfile.file_zodb', 'ZBigFile'):
        files.append('%016x' % u64(oid))
print(alive)
for f in files:
    print(f)
st.close()
"#;

#[test]
fn ls_lists_what_python_sees() {
    let Some(mut env) = Env::new_neo("neo_ls", 1) else {
        return;
    };
    // Files of two block sizes, with holes, a truncation, and a second
    // transaction that changes some of them.
    let mut files = Vec::new();
    for (bs, nblk) in [(4096u64, 5u64), (8192, 3), (4096, 1)] {
        let f = env.py.new_file(bs);
        for b in 0..nblk {
            env.py.fill(f, b, "zblk0", 1 + b as u8, bs as usize);
        }
        files.push(f);
    }
    env.py.commit();
    env.py.punch(files[0], 1);
    env.py.punch(files[0], 3);
    env.py.truncate(files[1], 2);
    env.py.fill(files[2], 6, "zblk1", 7, 4096);
    env.py.commit();

    let out = Command::new(wcfsd_bin())
        .args(["ls", &env.zurl])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "wcfsd ls: {text}");

    let neo = env.neo.as_ref().unwrap();
    let mut cmd = Command::new(neo.python());
    neo.python_env(&mut cmd);
    let py = cmd.args(["-c", ORACLE]).output().unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let py = String::from_utf8_lossy(&py.stdout).into_owned();
    let mut lines = py.lines();
    let alive: usize = lines.next().unwrap().parse().unwrap();
    let py_files: Vec<&str> = lines.collect();

    assert!(
        text.contains(&format!("{}: {alive} objects,", env.zurl)),
        "Python sees {alive} objects:\n{text}"
    );
    // Every ZBigFile once, as Python lists them, with what Python reads.
    let listed: BTreeMap<String, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("bigfile/"))
        .map(|l| (l.split_whitespace().next().unwrap().to_string(), l))
        .collect();
    let mut want: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    want.sort();
    let mut py_sorted: Vec<String> = py_files.iter().map(|s| s.to_string()).collect();
    py_sorted.sort();
    assert_eq!(py_sorted, want, "Python's ZBigFiles vs the ones we made");
    assert_eq!(
        listed.keys().cloned().collect::<Vec<_>>(),
        want,
        "wcfsd ls vs Python:\n{text}"
    );
    for (f, bs) in files.iter().zip([4096u64, 8192, 4096]) {
        let size = env.py.size(*f, None);
        let nblk = size.div_ceil(bs);
        let holes = (0..nblk).filter(|&b| env.py.zblk(*f, b).is_none()).count();
        let line = listed[&f.to_string()];
        let want = format!("blksize {bs:>8}  size {size:>12}  blocks {nblk} ({holes} holes)");
        assert!(line.contains(&want), "{f}: want {want:?} in {line:?}");
    }
}
