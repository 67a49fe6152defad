//! Sending pins, waiting for their acks, and dealing with clients that
//! fail them.
//!
//! A pin is a [`PinSlot`] in its link's in-flight table (by stream) plus a
//! queued line. Whoever needs the pin acknowledged — the read that sent
//! it, a later read of the same block, a watch setup — waits on the slot
//! until its deadline (sent + pin timeout; a pin shared by several waiters
//! still costs each at most that). The slot is finished exactly once: by
//! the ack, by a wrong reply, by the link shutting down, or by the first
//! waiter that sees the deadline pass. Only a timeout or a wrong reply, or
//! a shutdown that counts as a failure, makes the client faulty
//! ([`Isolation::fault`]); other waiters just stop waiting.

use super::{Isolation, Link};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

pub(crate) struct PinSlot {
    stream: u64,
    blk: u64,
    /// The revision pinned to; None: head.
    rev: Option<Tid>,
    deadline: Instant,
    res: Mutex<Option<Result<(), String>>>,
    cond: Condvar,
}

impl PinSlot {
    /// `pin #<blk> @<rev|head>`: how upstream names a pin in its errors.
    pub(super) fn what(&self) -> String {
        match self.rev {
            Some(t) => format!("pin #{} @{t}", self.blk),
            None => format!("pin #{} @head", self.blk),
        }
    }

    /// Sets the outcome, if not set yet; whether this call set it.
    pub(super) fn finish(&self, r: Result<(), String>) -> bool {
        let mut g = self.res.lock();
        if g.is_some() {
            return false;
        }
        *g = Some(r);
        self.cond.notify_all();
        true
    }

    /// Whether the client acked it (a wait for it returns at once).
    pub(super) fn acked(&self) -> bool {
        matches!(*self.res.lock(), Some(Ok(())))
    }

    /// Waits for the outcome until the deadline; None: timed out.
    fn wait(&self) -> Option<Result<(), String>> {
        let mut g = self.res.lock();
        while g.is_none() {
            if self.cond.wait_until(&mut g, self.deadline).timed_out() {
                break;
            }
        }
        g.clone()
    }
}

/// A pin to wait for.
pub(super) type Pending = (Arc<Link>, Arc<PinSlot>);

impl Isolation {
    /// Sends `<even> pin <file> #<blk> @<rev|head>` on `l`; None if the
    /// link is down.
    pub(super) fn send_pin(
        &self,
        l: &Arc<Link>,
        file: Oid,
        blk: u64,
        rev: Option<Tid>,
    ) -> Option<Arc<PinSlot>> {
        if l.is_down() {
            return None;
        }
        let slot = {
            let mut pins = l.pins.lock();
            let stream = pins.next_stream();
            let slot = Arc::new(PinSlot {
                stream,
                blk,
                rev,
                deadline: Instant::now() + self.pintimeout,
                res: Mutex::new(None),
                cond: Condvar::new(),
            });
            pins.inflight.insert(stream, slot.clone());
            slot
        };
        let rev = rev.map_or("@head".to_string(), |t| format!("@{t}"));
        let line = format!("{} pin {file} #{blk} {rev}", slot.stream);
        if !l.send(&line) {
            l.pins.lock().inflight.remove(&slot.stream);
            slot.finish(Err("link down".into()));
            return None;
        }
        self.npin.fetch_add(1, Ordering::Relaxed);
        Some(slot)
    }

    /// Waits for every pin; a client that does not ack in time is faulty.
    pub(super) fn await_pins(&self, pending: Vec<Pending>) {
        for (l, slot) in pending {
            if slot.wait().is_some() {
                continue;
            }
            // Upstream's words for a reply that did not come in time.
            let why = format!(
                "{}: sendReq: waiting for reply: context deadline exceeded",
                slot.what()
            );
            if slot.finish(Err(why.clone())) {
                l.pins.lock().inflight.remove(&slot.stream);
                log::warn!(
                    "head/watch link {}: no ack for pin {} within {:?}",
                    l.fh,
                    slot.stream,
                    self.pintimeout
                );
                self.fault(&l, &why, true);
            }
        }
    }

    /// `l` failed a pin: shut it down (nobody waits for it any more) with
    /// `0 fatal: <why>` (a pin failure) or `0 error: <why>`, and kill its
    /// process — unless that process is exiting anyway.
    pub(super) fn fault(&self, l: &Arc<Link>, why: &str, fatal: bool) {
        if l.faulted.swap(true, Ordering::AcqRel) {
            return;
        }
        let kind = if fatal { "fatal" } else { "error" };
        // Down for us at once (its pins fail, nobody waits for it), its
        // last line queued — but the client sees no EOF until it is
        // killed, or found exiting anyway (see Link::hold_eof).
        l.hold_eof();
        self.shutdown(l, Some(format!("0 {kind}: {why}")));
        if process_dying(l.pid) {
            log::info!(
                "head/watch link {}: {why}; pid {} exited: not killed",
                l.fh,
                l.pid
            );
            l.release_eof();
            return;
        }
        log::warn!(
            "head/watch link {}: {why}: killing pid {} (SIGBUS)",
            l.fh,
            l.pid
        );
        self.npinkill.fetch_add(1, Ordering::Relaxed);
        let (pid, host, link) = (l.pid, self.host(), l.clone());
        let r = std::thread::Builder::new()
            .name("pinkill".into())
            .spawn(move || {
                let r = kill(pid);
                link.release_eof();
                if let Err(why) = r {
                    log::error!("pinkill: {why}");
                    if let Some(h) = host {
                        h.fail(&why);
                    }
                }
            });
        if let Err(e) = r {
            log::error!("pinkill: spawn: {e}; killing pid {pid} with SIGKILL");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            l.release_eof();
        }
    }
}

/// How long a process may take to die of SIGBUS before SIGKILL, and then
/// of SIGKILL before we give up on it.
const BUS_GRACE: Duration = Duration::from_millis(500);
const KILL_GRACE: Duration = Duration::from_secs(5);

/// SIGBUS, then SIGKILL if still alive shortly after. Err: the process
/// cannot be killed.
fn kill(pid: i32) -> Result<(), String> {
    use nix::errno::Errno;
    use nix::sys::signal::Signal;
    let p = nix::unistd::Pid::from_raw(pid);
    for (sig, grace) in [(Signal::SIGBUS, BUS_GRACE), (Signal::SIGKILL, KILL_GRACE)] {
        match nix::sys::signal::kill(p, sig) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(()),
            Err(e) => return Err(format!("kill pid {pid} with {sig:?}: {e}")),
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if process_dying(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Err(format!("pid {pid} still alive after SIGKILL"))
}

/// The thread group of thread `tid` (FUSE reports the thread as pid).
pub(super) fn tgid_of(tid: u32) -> i32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid as i32)
}

const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);

/// Whether `/proc/<id>/status` shows SIGKILL pending (thread or shared).
fn sigkill_pending(status: &str) -> bool {
    status.lines().any(|l| {
        let v = l
            .strip_prefix("SigPnd:")
            .or_else(|| l.strip_prefix("ShdPnd:"));
        v.and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|m| m & SIGKILL_BIT != 0)
    })
}

/// Whether thread `tid` is gone or has SIGKILL pending (a fatal signal the
/// kernel cannot deliver while the thread waits for our reply).
pub(crate) fn thread_dying(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(status) => sigkill_pending(&status),
        Err(_) => true,
    }
}

/// Whether process `pid` is gone or dying: none of its threads lives on —
/// each is gone, a zombie, exiting (PF_EXITING: a process closes its
/// files, our links, only then) or has SIGKILL pending. (The leader alone
/// says too little: it may be a zombie while other threads run.)
pub(super) fn process_dying(pid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    !dir.flatten().any(|e| {
        thread_lives(&format!(
            "/proc/{pid}/task/{}",
            e.file_name().to_string_lossy()
        ))
    })
}

fn thread_lives(dir: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("{dir}/stat")) else {
        return false;
    };
    // "tid (comm) state ppid pgrp session tty tpgid flags …"; comm may
    // contain anything, so split after its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    if matches!(f.first(), Some(&"Z") | Some(&"X") | Some(&"x")) {
        return false;
    }
    if f.get(6)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|fl| fl & PF_EXITING != 0)
    {
        return false;
    }
    std::fs::read_to_string(format!("{dir}/status")).is_ok_and(|s| !sigkill_pending(&s))
}

#[cfg(test)]
mod tests {
    #[test]
    fn self_not_dying() {
        assert!(!super::process_dying(std::process::id() as i32));
        assert!(super::process_dying(i32::MAX));
        assert_eq!(
            super::tgid_of(std::process::id()),
            std::process::id() as i32
        );
    }
}
