//! `.wcfs/debug/zhead` (with -debug): every open is a stream that receives
//! `"<tid>\n"` for each head advance after the open.
//!
//! A read with nothing to deliver is parked — its reply kept — and answered
//! when the next line comes, when the handle is flushed, or when the reader
//! dies. fuser cannot receive FUSE interrupts (SPEC §9), so the kernel
//! would wait for a parked read even of a `kill -9`ed process; [`super::reaper`]
//! therefore checks parked readers every 100 ms and answers EINTR for those
//! that are gone or have SIGKILL pending. Replies are sent after the lock is
//! released: direct-I/O replies touch no page cache, but there is no reason
//! to make other links wait on the kernel.

use crate::fs::reply::ReplyData;
use crate::isolation::thread_dying;
use fuser::Errno;
use parking_lot::Mutex;
use std::collections::HashMap;
use zodb::Tid;

#[derive(Default)]
pub(crate) struct ZHeads {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    links: HashMap<u64, Link>,
}

#[derive(Default)]
struct Link {
    pending: Vec<u8>,
    parked: Option<Parked>,
}

struct Parked {
    reply: ReplyData,
    size: usize,
    /// The requesting thread (FUSE reports the thread id as pid).
    tid: u32,
}

enum Answer {
    Data(ReplyData, Vec<u8>),
    Err(ReplyData, Errno),
}

fn send(answers: Vec<Answer>) {
    for a in answers {
        match a {
            Answer::Data(r, d) => r.data(&d),
            Answer::Err(r, e) => r.error(e),
        }
    }
}

impl Link {
    fn take(&mut self, size: usize) -> Vec<u8> {
        let n = size.min(self.pending.len());
        self.pending.drain(..n).collect()
    }
}

impl ZHeads {
    /// A new link; its handle number.
    pub(crate) fn open(&self) -> u64 {
        let mut g = self.inner.lock();
        g.next += 1;
        let fh = g.next;
        g.links.insert(fh, Link::default());
        fh
    }

    pub(crate) fn read(&self, fh: u64, size: usize, tid: u32, reply: ReplyData) {
        let mut g = self.inner.lock();
        let Some(link) = g.links.get_mut(&fh) else {
            drop(g);
            return reply.error(Errno::EBADF);
        };
        if link.parked.is_some() {
            drop(g);
            // One reader at a time per link, as for head/watch.
            return reply.error(Errno::EBUSY);
        }
        if link.pending.is_empty() {
            link.parked = Some(Parked { reply, size, tid });
            return;
        }
        let data = link.take(size);
        drop(g);
        reply.data(&data);
    }

    /// Head advanced to `tid`.
    pub(crate) fn push(&self, tid: Tid) {
        let line = format!("{tid}\n");
        let mut answers = Vec::new();
        let mut g = self.inner.lock();
        for link in g.links.values_mut() {
            link.pending.extend_from_slice(line.as_bytes());
            if let Some(p) = link.parked.take() {
                let data = link.take(p.size);
                answers.push(Answer::Data(p.reply, data));
            }
        }
        drop(g);
        send(answers);
    }

    /// Answers the parked read of `fh` (flush) or of every link (`None`:
    /// EIO mode) with `err`.
    pub(crate) fn unpark(&self, fh: Option<u64>, err: Errno) {
        let mut g = self.inner.lock();
        let answers: Vec<_> = g
            .links
            .iter_mut()
            .filter(|(k, _)| fh.is_none_or(|f| f == **k))
            .filter_map(|(_, l)| l.parked.take())
            .map(|p| Answer::Err(p.reply, err))
            .collect();
        drop(g);
        send(answers);
    }

    pub(crate) fn release(&self, fh: u64) {
        self.unpark(Some(fh), Errno::EINTR);
        self.inner.lock().links.remove(&fh);
    }

    /// `ZHeadLink` statistic.
    pub(crate) fn count(&self) -> usize {
        self.inner.lock().links.len()
    }

    /// Answers parked reads of dying readers (see [`super::reaper`]).
    pub(crate) fn reap(&self) {
        let mut g = self.inner.lock();
        let answers: Vec<_> = g
            .links
            .values_mut()
            .filter(|l| l.parked.as_ref().is_some_and(|p| thread_dying(p.tid)))
            .filter_map(|l| l.parked.take())
            .map(|p| Answer::Err(p.reply, Errno::EINTR))
            .collect();
        drop(g);
        send(answers);
    }
}
