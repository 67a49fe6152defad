//! Watches: setting one up or moving it forward (`watch <oid> @<at>`),
//! stopping it (`watch <oid> -`), the pins a read of `head/` owes the
//! watchers of its file, and taking everything of a link down.
//!
//! A watch's state (`at`, pinned blocks) is behind its own mutex, taken
//! under the tracker's read side (so head does not move meanwhile) and
//! released before waiting for acks. A pin is recorded in `pinned` when it
//! is sent, together with its slot: a read of the same block that comes
//! while it is in flight waits for that slot instead of pinning again.

use super::pin::{Pending, PinSlot};
use super::text::{self, Why};
use super::{Host, Isolation, Link};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

use crate::zdata::Tracker;

pub(crate) struct Watch {
    pub(super) link: Arc<Link>,
    file: Oid,
    st: Mutex<State>,
}

struct State {
    at: Tid,
    /// blk → revision the client takes it from (absent: head).
    pinned: HashMap<u64, Pinned>,
    /// Stopped or its link went down: no more pins.
    gone: bool,
}

struct Pinned {
    rev: Tid,
    slot: Arc<PinSlot>,
}

impl Watch {
    pub(super) fn at(&self) -> Tid {
        self.st.lock().at
    }

    pub(super) fn npinned(&self) -> usize {
        self.st.lock().pinned.len()
    }
}

/// How often a watch waiting for head checks whether its link went down.
const HEAD_POLL: Duration = Duration::from_millis(50);

/// Handles `<stream> watch <file> @<at>|-` on its own thread and replies
/// (nothing when the link went down meanwhile).
pub(super) fn serve(iso: &Isolation, l: &Arc<Link>, stream: u64, file: Oid, at: Option<Tid>) {
    let Some(host) = iso.host() else { return };
    let r = match at {
        None => iso.unwatch(&*host, l, file),
        Some(at) => iso.watch(&*host, l, file, at),
    };
    match r {
        Ok(()) => {
            l.send(&format!("{stream} ok"));
        }
        Err(Some(why)) => {
            let line = text::setup_error(stream, file, at.unwrap_or(text::NO_AT), &why);
            log::debug!("head/watch link {}: {line}", l.fh);
            l.send(&line);
        }
        Err(None) => {}
    }
}

impl Isolation {
    /// `watch <file> @<at>`: waits for head ≥ `at`, then checks in
    /// upstream's order — history kept back to `at`, file known, not going
    /// back, no file epoch in `(at, head]` — and pins. Err(None): the link
    /// went down (no reply).
    fn watch(&self, host: &dyn Host, l: &Arc<Link>, file: Oid, at: Tid) -> Result<(), Option<Why>> {
        // Head reaches a client's fresh commit in moments — unless the
        // storage server is away: then, as reads, wait only so long.
        let deadline = Instant::now() + host.storage_wait();
        while !host.wait_head(at, HEAD_POLL) {
            if l.is_down() {
                return Err(None);
            }
            if host.failed() {
                return Err(Some(Why::Other("filesystem in EIO mode".into())));
            }
            if Instant::now() >= deadline {
                return Err(Some(Why::HeadBehind {
                    head: host.tracker().read().head(),
                    waited: host.storage_wait(),
                }));
            }
        }

        let setup = l.setup_lock(file);
        let _setup = setup.lock();
        let t = host.tracker().read();
        if host.failed() {
            return Err(Some(Why::Other("filesystem in EIO mode".into())));
        }
        let head = t.head();
        if let Some(packed) = host.oldest_tid().filter(|&p| at < p) {
            return Err(Some(Why::Packed { packed }));
        }
        if at < t.history_start() {
            return Err(Some(Why::TooFarBack { head, at }));
        }
        if t.file_info(file).is_none() {
            return Err(Some(Why::NotKnown));
        }
        if l.watches.lock().get(&file).is_some_and(|w| at < w.at()) {
            return Err(Some(Why::GoingBack));
        }
        if let Some(rev) = t.epoch_after(file, at) {
            return Err(Some(Why::Epoch { rev, head }));
        }
        let fw = self.file(file);
        let w = l
            .watches
            .lock()
            .entry(file)
            .or_insert_with(|| {
                Arc::new(Watch {
                    link: l.clone(),
                    file,
                    st: Mutex::new(State {
                        at,
                        pinned: HashMap::new(),
                        gone: false,
                    }),
                })
            })
            .clone();
        let mut pending = Vec::new();
        {
            let mut st = w.st.lock();
            if st.gone || l.is_down() {
                drop(st);
                // Do not leave it behind on a link that is down.
                l.watches.lock().remove(&file);
                return Err(None);
            }
            if at < st.at {
                return Err(Some(Why::GoingBack));
            }
            let blks: BTreeSet<u64> = {
                let mut f = fw.inner.lock();
                if !f.watches.iter().any(|x| Arc::ptr_eq(x, &w)) {
                    f.watches.push(w.clone());
                }
                f.read_blocks().chain(st.pinned.keys().copied()).collect()
            };
            st.at = at;
            for blk in blks {
                let want = (t.blkrev(file, blk, head) > at).then(|| t.blkrev(file, blk, at));
                let have = st.pinned.get(&blk);
                if let Some(p) = have.filter(|p| Some(p.rev) == want) {
                    // Pinned already (maybe by a read, still in flight).
                    pending.push((l.clone(), p.slot.clone()));
                    continue;
                }
                if have.is_none() && want.is_none() {
                    continue;
                }
                let Some(slot) = self.send_pin(l, file, blk, want) else {
                    return Err(None);
                };
                match want {
                    Some(rev) => {
                        st.pinned.insert(
                            blk,
                            Pinned {
                                rev,
                                slot: slot.clone(),
                            },
                        );
                    }
                    None => {
                        st.pinned.remove(&blk);
                    }
                }
                pending.push((l.clone(), slot));
            }
        }
        self.await_pins(pending);
        drop(t);
        if l.is_down() {
            return Err(None);
        }
        Ok(())
    }

    /// `watch <file> -`: the watch goes, with its pins (no messages). A
    /// file this link does not watch is fine if the daemon knows it (as
    /// upstream: an error otherwise).
    fn unwatch(&self, host: &dyn Host, l: &Link, file: Oid) -> Result<(), Option<Why>> {
        let setup = l.setup_lock(file);
        let _setup = setup.lock();
        let w = l.watches.lock().remove(&file);
        match w {
            Some(w) => self.drop_watch(&w),
            None if host.tracker().read().file_info(file).is_none() => {
                return Err(Some(Why::NotKnown))
            }
            None => {}
        }
        Ok(())
    }

    fn drop_watch(&self, w: &Arc<Watch>) {
        {
            let mut st = w.st.lock();
            st.gone = true;
            st.pinned.clear();
        }
        if let Some(f) = self.files.read().get(&w.file) {
            f.inner.lock().watches.retain(|x| !Arc::ptr_eq(x, w));
        }
    }

    /// Whether [`Isolation::pin_read`] of these blocks would now send a
    /// pin or wait for one (a pin already acked costs no wait).
    pub(crate) fn would_pin(&self, t: &Tracker, file: Oid, blks: RangeInclusive<u64>) -> bool {
        let watches = match self.files.read().get(&file) {
            Some(f) => f.inner.lock().watches.clone(),
            None => return false,
        };
        if watches.is_empty() {
            return false;
        }
        let head = t.head();
        for blk in blks {
            let rev_head = t.blkrev(file, blk, head);
            for w in &watches {
                let st = w.st.lock();
                if st.gone || rev_head <= st.at {
                    continue;
                }
                let want = t.blkrev(file, blk, st.at);
                match st.pinned.get(&blk) {
                    Some(p) if p.rev == want && p.slot.acked() => continue,
                    _ => return true,
                }
            }
        }
        false
    }

    /// Before a read of blocks `blks` of head/bigfile/`file` is answered
    /// (tracker read side held, blocks loaded): marks them read, sends
    /// every watcher that must not see their head data a pin, and waits
    /// for the acks (each at most the pin timeout).
    pub(crate) fn pin_read(&self, t: &Tracker, file: Oid, blks: RangeInclusive<u64>) {
        let fw = self.file(file);
        let watches = {
            let mut f = fw.inner.lock();
            for blk in blks.clone() {
                f.mark_read(blk);
            }
            if f.watches.is_empty() {
                return;
            }
            f.watches.clone()
        };
        let head = t.head();
        let mut pending: Vec<Pending> = Vec::new();
        for blk in blks {
            let rev_head = t.blkrev(file, blk, head);
            for w in &watches {
                let mut st = w.st.lock();
                if st.gone || rev_head <= st.at {
                    continue;
                }
                let want = t.blkrev(file, blk, st.at);
                if let Some(p) = st.pinned.get(&blk).filter(|p| p.rev == want) {
                    pending.push((w.link.clone(), p.slot.clone()));
                    continue;
                }
                if let Some(slot) = self.send_pin(&w.link, file, blk, Some(want)) {
                    st.pinned.insert(
                        blk,
                        Pinned {
                            rev: want,
                            slot: slot.clone(),
                        },
                    );
                    pending.push((w.link.clone(), slot));
                }
            }
        }
        self.await_pins(pending);
    }

    /// Takes link `l` down: last line `last` (if any), parked read
    /// answered, watches dropped, pins in flight failed (their waiters stop
    /// waiting). Returns how many pins were in flight.
    pub(super) fn shutdown(&self, l: &Link, last: Option<String>) -> usize {
        l.close(last.as_deref());
        let watches: Vec<_> = l.watches.lock().drain().map(|(_, w)| w).collect();
        for w in &watches {
            self.drop_watch(w);
        }
        let inflight: Vec<_> = l.pins.lock().inflight.drain().map(|(_, s)| s).collect();
        for s in &inflight {
            s.finish(Err("link down".into()));
        }
        inflight.len()
    }
}
