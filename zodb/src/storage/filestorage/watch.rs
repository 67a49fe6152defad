//! Watching a FileStorage for new commits.
//!
//! A watcher owns its position in the file: the start of the next
//! transaction to report, and the tid of the one before it. It reads
//! forward from there on its own (it does not touch the storage's index, so
//! a slow consumer blocks nobody) and reports each committed transaction
//! once, with its oids in record order.
//!
//! Waiting: the writer's commit ends with a write (the status byte, then a
//! flush), so inotify `IN_MODIFY` on the file wakes us right away. inotify
//! can miss events (a file replaced, a queue overflow, a filesystem that
//! does not support it), so we also poll every [`POLL`] regardless: a missed
//! event costs at most that much latency, never a lost commit.
//!
//! Failure is final: once the file shrank below what was reported, or a
//! committed transaction turned out corrupt, every later call returns the
//! same error — the stream cannot be resumed without a gap or a repeat.

use super::format::{self, Ctx, TxnAt, Window};
use super::ReadAt;
use crate::storage::{Commit, Error, Watcher};
use crate::types::Tid;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fallback poll period.
pub const POLL: Duration = Duration::from_millis(50);

/// A [`Watcher`] over a FileStorage.
pub struct FsWatcher {
    r: Arc<dyn ReadAt>,
    name: String,
    /// Start of the next transaction to look at.
    pos: u64,
    /// Tid of the transaction before `pos` (tids must increase).
    prev_tid: Tid,
    /// Transactions with tid ≤ `after` are not reported.
    after: Tid,
    inotify: Option<Inotify>,
    failed: Option<String>,
}

impl FsWatcher {
    pub(crate) fn new(
        r: Arc<dyn ReadAt>,
        name: String,
        pos: u64,
        prev_tid: Tid,
        after: Tid,
    ) -> FsWatcher {
        // No inotify (in-memory storage, or it failed): polling alone still
        // works.
        let inotify = r.path().and_then(|p| {
            let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
            ino.add_watch(p, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ATTRIB)
                .ok()?;
            Some(ino)
        });
        FsWatcher {
            r,
            name,
            pos,
            prev_tid,
            after,
            inotify,
            failed: None,
        }
    }

    /// Position of the next transaction the watcher will look at.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Looks once for the next committed transaction.
    fn poll_once(&mut self) -> Result<Option<Commit>, Error> {
        let ctx = Ctx { name: &self.name };
        loop {
            let size = self.r.size().map_err(|e| ctx.io(0, 0, e))?;
            if size < self.pos {
                return Err(ctx.corrupt(
                    size,
                    format!(
                        "file shrank below already reported transactions (ending at {})",
                        self.pos
                    ),
                ));
            }
            let mut w = Window::new(&*self.r, size);
            let th = match format::read_txn(&mut w, &ctx, self.pos, self.prev_tid)? {
                TxnAt::End => return Ok(None),
                TxnAt::Txn(th) => th,
            };
            let mut oids = Vec::new();
            format::read_txn_records(&mut w, &ctx, &th, self.pos, |_, h| {
                oids.push(h.oid);
                Ok(())
            })?;
            // A `u` transaction changes nothing for readers (its records
            // are not indexed), but its tid is still reported.
            if th.status == b'u' {
                oids.clear();
            }
            self.pos += th.tlen + 8;
            self.prev_tid = th.tid;
            if th.tid > self.after {
                return Ok(Some(Commit { tid: th.tid, oids }));
            }
        }
    }

    /// Sleeps until the file is modified or `d` passed.
    fn wait(&self, d: Duration) {
        match &self.inotify {
            Some(ino) => {
                let ms = d.as_millis().clamp(1, u16::MAX as u128) as u16;
                let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
                if let Ok(n) = poll(&mut fds, ms) {
                    if n > 0 {
                        // Drain: we rescan anyway, the events only woke us.
                        while matches!(ino.read_events(), Ok(ev) if !ev.is_empty()) {}
                    }
                }
            }
            None => std::thread::sleep(d),
        }
    }
}

impl Watcher for FsWatcher {
    fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Commit>, Error> {
        if let Some(why) = &self.failed {
            return Err(Error::Corrupt {
                storage: self.name.clone(),
                why: why.clone(),
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.poll_once() {
                Ok(Some(c)) => return Ok(Some(c)),
                Ok(None) => {}
                Err(e) => {
                    self.failed = Some(match &e {
                        Error::Corrupt { why, .. } => why.clone(),
                        other => format!("watcher stopped: {other}"),
                    });
                    return Err(e);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.wait((deadline - now).min(POLL));
        }
    }
}
