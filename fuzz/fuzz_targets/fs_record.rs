#![no_main]
//! FileStorage parsing on arbitrary bytes: the input is an in-memory
//! data.fs. Open it, iterate every transaction, load every oid found as of
//! every tid found, watch from every tid; also parse the input as a
//! `.index` file. Errors are fine, panics are not.
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use zodb::storage::filestorage::{index_file, FileStorage};
use zodb::storage::Storage;
use zodb::Tid;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let _ = index_file::parse(&buf);
    let Ok(fs) = FileStorage::from_bytes(buf, "fuzz") else {
        return;
    };
    let mut tids = vec![Tid::ZERO];
    let mut oids = std::collections::BTreeSet::new();
    for t in fs.iter().take(256) {
        let Ok(t) = t else { break };
        tids.push(t.tid);
        oids.extend(t.records.iter().map(|r| r.oid));
    }
    let _ = fs.last_tid();
    tids.push(Tid::MAX);
    for &oid in oids.iter().take(64) {
        for &at in tids.iter().take(64) {
            let _ = fs.load(oid, at);
            let _ = fs.load(oid, Tid(at.0.wrapping_sub(1)));
        }
    }
    for &after in tids.iter().take(16) {
        if let Ok(mut w) = fs.watch(after) {
            while let Ok(Some(_)) = w.next_timeout(Duration::ZERO) {}
        }
    }
});
