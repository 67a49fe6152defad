//! Per-file history of block changes: what answers `blkrev`.
//!
//! Kept per block as a sorted deque of tids, plus the file's reset tids
//! (transactions that replaced the ZBigFile object and so changed every
//! block). A query is two binary searches; recording a transaction costs
//! one push per changed block. Entries normally arrive in tid order (apply);
//! the history rebuilt for a newly tracked block arrives out of order and is
//! merged in.

use std::collections::{HashMap, VecDeque};
use zodb::Tid;

#[derive(Debug, Default)]
pub(crate) struct FileHist {
    blks: HashMap<u64, VecDeque<Tid>>,
    resets: VecDeque<Tid>,
}

fn insert_sorted(q: &mut VecDeque<Tid>, tid: Tid) {
    if q.back().is_none_or(|b| *b < tid) {
        q.push_back(tid);
        return;
    }
    let i = q.partition_point(|t| *t < tid);
    if q.get(i) != Some(&tid) {
        q.insert(i, tid);
    }
}

fn last_le(q: &VecDeque<Tid>, at: Tid) -> Option<Tid> {
    let i = q.partition_point(|t| *t <= at);
    i.checked_sub(1).map(|i| q[i])
}

impl FileHist {
    pub(crate) fn record(&mut self, blk: u64, tid: Tid) {
        insert_sorted(self.blks.entry(blk).or_default(), tid);
    }

    pub(crate) fn reset(&mut self, tid: Tid) {
        insert_sorted(&mut self.resets, tid);
    }

    /// The last recorded change of `blk` (or reset) at or before `at`.
    pub(crate) fn last(&self, blk: u64, at: Tid) -> Option<Tid> {
        let b = self.blks.get(&blk).and_then(|q| last_le(q, at));
        let r = last_le(&self.resets, at);
        b.max(r)
    }

    /// Drops entries before `from`.
    pub(crate) fn trim(&mut self, from: Tid) {
        self.blks.retain(|_, q| {
            while q.front().is_some_and(|t| *t < from) {
                q.pop_front();
            }
            !q.is_empty()
        });
        while self.resets.front().is_some_and(|t| *t < from) {
            self.resets.pop_front();
        }
    }
}
