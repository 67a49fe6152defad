//! The client end of one head/watch link (SPEC §6).
//!
//! A [`Link`] is an open of `head/watch`: lines `<stream> <message>\n` both
//! ways. Requests (`watch`, `bye`) go on odd streams that we number; the
//! daemon's pins come on even streams and are answered with `ack`.
//!
//! One thread reads the link: the Conn's pinner (see [`crate::conn`]). It
//! splits what it reads into lines with [`LineReader`], routes replies to
//! the request waiting for them ([`Link::deliver`]) and handles pins
//! itself. Any thread may send: each line goes out in one `write(2)` under
//! the write lock, so lines never interleave.
//!
//! Reading retries `EINTR`: the daemon interrupts a parked read with it when
//! some descriptor of the link is flushed — a forked child closing its
//! inherited copy, or the child exiting — and the link is still fine.
//!
//! When the link goes down (EOF, read error, `0 error`/`0 fatal`, protocol
//! violation, or our own close) every request still waiting fails, and new
//! requests fail at once; the reader keeps going until EOF so that pins
//! still queued are acknowledged.
//!
//! The reader closes the descriptor once the link ended (EOF, error, or
//! after our `bye`), so that a closed Conn gives its link back even while
//! handles of it are still around, and then says so
//! ([`Link::reader_stopped`]): closing a Conn waits for that.
//!
//! Locks: `wr` (writing a line) and `replies` are leaves, never held
//! together and never while waiting for the daemon — except that
//! [`Link::request`] sleeps on `replies`' condition variable, which releases it.

use crate::fork;
use crate::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::os::fd::{IntoRawFd, RawFd};
use std::path::Path;

/// Longest line we accept from the daemon.
const MAX_LINE: usize = 4096;

pub(crate) struct Link {
    /// The descriptor, -1 once closed; locked while a line is written, so
    /// that it is never closed (and its number reused) under a writer.
    wr: Mutex<RawFd>,
    /// Fork generation of the opener: only that process may use it.
    gen: u64,
    replies: Mutex<Replies>,
    replied: Condvar,
    /// Set by the reader as it stops, after closing the descriptor.
    reader_done: Mutex<bool>,
    reader_exit: Condvar,
}

#[derive(Default)]
struct Replies {
    /// Last odd stream used.
    last: u64,
    /// Requests waiting: stream → reply once it came.
    waiting: HashMap<u64, Option<String>>,
    /// Why the link is down (requests fail with it).
    down: Option<String>,
}

impl Link {
    pub(crate) fn open(path: &Path) -> Result<Link> {
        fork::install();
        crate::sigbus::install();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let gen = fork::generation();
        // Registered under the registry lock, so that a fork either sees the
        // descriptor (and closes the child's copy) or happens before it exists.
        let fd = fork::with_registry(|r| {
            let fd = f.into_raw_fd();
            r.links.insert(fd);
            fd
        });
        Ok(Link {
            wr: Mutex::new(fd),
            gen,
            replies: Mutex::new(Replies::default()),
            replied: Condvar::new(),
            reader_done: Mutex::new(false),
            reader_exit: Condvar::new(),
        })
    }

    fn detached(&self) -> bool {
        self.gen != fork::generation()
    }

    /// Sends one line (without its `\n`).
    pub(crate) fn send(&self, line: &str) -> Result<()> {
        if self.detached() {
            return Err(Error::not_connected(
                "wcfs: forked child: link belongs to the parent",
            ));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let fd = self.wr.lock();
        if *fd < 0 {
            return Err(Error::not_connected("wcfs: head/watch: link closed"));
        }
        let mut off = 0;
        while off < buf.len() {
            // SAFETY: the descriptor stays open while `wr` is held (see
            // `close`); the buffer is valid for its length.
            let n = unsafe { libc::write(*fd, buf[off..].as_ptr().cast(), buf.len() - off) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("wcfs: head/watch: write", e));
            }
            off += n as usize;
        }
        Ok(())
    }

    /// Sends request `msg` on a new odd stream and waits for its reply;
    /// Ok(reply message), Err if the link is or goes down first.
    pub(crate) fn request(&self, msg: &str) -> Result<String> {
        let stream = {
            let mut r = self.replies.lock();
            if let Some(why) = &r.down {
                return Err(Error::not_connected(format!("wcfs: link down: {why}")));
            }
            r.last += 2;
            let s = r.last - 1; // 1, 3, 5, ...
            r.waiting.insert(s, None);
            s
        };
        if let Err(e) = self.send(&format!("{stream} {msg}")) {
            self.replies.lock().waiting.remove(&stream);
            return Err(e);
        }
        let mut r = self.replies.lock();
        loop {
            if let Some(Some(_)) = r.waiting.get(&stream) {
                return Ok(r.waiting.remove(&stream).flatten().expect("just checked"));
            }
            if let Some(why) = &r.down {
                let why = why.clone();
                r.waiting.remove(&stream);
                return Err(Error::not_connected(format!("wcfs: link down: {why}")));
            }
            self.replied.wait(&mut r);
        }
    }

    /// Sends `bye` on a new odd stream (no reply comes).
    pub(crate) fn bye(&self) -> Result<()> {
        let stream = {
            let mut r = self.replies.lock();
            r.last += 2;
            r.last - 1
        };
        self.send(&format!("{stream} bye"))
    }

    /// A reply on odd `stream` arrived; false if nobody waits for it.
    pub(crate) fn deliver(&self, stream: u64, msg: &str) -> bool {
        let mut r = self.replies.lock();
        match r.waiting.get_mut(&stream) {
            Some(slot @ None) => {
                *slot = Some(msg.to_string());
                self.replied.notify_all();
                true
            }
            _ => false,
        }
    }

    /// Marks the link down (first reason wins): waiting requests fail.
    pub(crate) fn set_down(&self, why: &str) {
        let mut r = self.replies.lock();
        if r.down.is_none() {
            r.down = Some(why.to_string());
        }
        self.replied.notify_all();
    }

    /// Closes the descriptor (the daemon sees the link released). Only the
    /// reader calls it, once it stopped reading, or the Conn when no reader
    /// ever started, or Drop.
    pub(crate) fn close(&self) {
        if self.detached() {
            // The fork handler closed the child's copy; and `wr` may have
            // been held by a parent thread that does not exist here.
            return;
        }
        let mut fd = self.wr.lock();
        if *fd < 0 {
            return;
        }
        fork::with_registry(|r| {
            r.links.remove(&*fd);
            // SAFETY: our descriptor, closed once, under the registry lock so
            // that a concurrent fork never closes a reused number.
            unsafe { libc::close(*fd) };
        });
        *fd = -1;
    }

    /// The reader says it stopped reading (and closed the descriptor).
    pub(crate) fn reader_stopped(&self) {
        *self.reader_done.lock() = true;
        self.reader_exit.notify_all();
    }

    /// Waits up to `timeout` for the reader to stop; whether it did.
    pub(crate) fn wait_reader(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut done = self.reader_done.lock();
        while !*done {
            if self.reader_exit.wait_until(&mut done, deadline).timed_out() {
                return *done;
            }
        }
        true
    }

    /// Reads what the daemon has for us (blocks; retries EINTR). Ok(0): EOF.
    /// Only one thread reads: the one that also closes.
    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let fd = *self.wr.lock();
        if fd < 0 {
            return Ok(0);
        }
        loop {
            // SAFETY: `fd` stays open while we read: only this reader closes
            // it (or Drop, which cannot run while we borrow the link);
            // `buf` is valid for writes of its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// Splits what is read from a link into lines.
pub(crate) struct LineReader {
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

impl LineReader {
    pub(crate) fn new() -> LineReader {
        LineReader {
            buf: Vec::new(),
            chunk: vec![0; 4096],
        }
    }

    /// The next line (without `\n`); Ok(None) at EOF; Err on a read error
    /// or a malformed line (too long, not UTF-8).
    pub(crate) fn next_line(&mut self, link: &Link) -> std::result::Result<Option<String>, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8(raw[..raw.len() - 1].to_vec())
                    .map(Some)
                    .map_err(|_| "line from daemon is not UTF-8".to_string());
            }
            if self.buf.len() > MAX_LINE {
                return Err(format!("line from daemon longer than {MAX_LINE} bytes"));
            }
            let n = link
                .read(&mut self.chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// A message from the daemon.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Msg {
    /// `pin <oid> #<blk> @<rev>`; rev None: `@head`.
    Pin {
        oid: zodb::Oid,
        blk: u64,
        rev: Option<zodb::Tid>,
    },
}

/// Splits `<stream> <message>`.
pub(crate) fn parse_frame(line: &str) -> std::result::Result<(u64, &str), String> {
    let (s, msg) = line
        .split_once(' ')
        .ok_or_else(|| format!("{line:?}: want \"<stream> <message>\""))?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{line:?}: bad stream"));
    }
    let stream = s
        .parse::<u64>()
        .map_err(|_| format!("{line:?}: stream too big"))?;
    Ok((stream, msg))
}

/// Parses a daemon request (even stream).
pub(crate) fn parse_msg(msg: &str) -> std::result::Result<Msg, String> {
    let w: Vec<&str> = msg.split(' ').collect();
    match w.as_slice() {
        ["pin", oid, blk, rev] => {
            let oid = oid.parse().map_err(|e| format!("pin: oid: {e}"))?;
            let blk = blk
                .strip_prefix('#')
                .and_then(|b| b.parse::<u64>().ok())
                .ok_or_else(|| format!("pin: {blk:?}: want #<blk>"))?;
            let rev = match rev.strip_prefix('@') {
                Some("head") => None,
                Some(r) => Some(r.parse().map_err(|e| format!("pin: rev: {e}"))?),
                None => return Err(format!("pin: {rev:?}: want @<rev> or @head")),
            };
            Ok(Msg::Pin { oid, blk, rev })
        }
        _ => Err(format!("unexpected request {msg:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zodb::{Oid, Tid};

    #[test]
    fn parses_pins() {
        assert_eq!(
            parse_msg("pin 0000000000000001 #3 @0285cbac3851eb99"),
            Ok(Msg::Pin {
                oid: Oid(1),
                blk: 3,
                rev: Some(Tid(0x0285cbac3851eb99))
            })
        );
        assert_eq!(
            parse_msg("pin 00000000000000ff #0 @head"),
            Ok(Msg::Pin {
                oid: Oid(0xff),
                blk: 0,
                rev: None
            })
        );
        for bad in [
            "pin 1 #3 @head",
            "pin 0000000000000001 3 @head",
            "pin 0000000000000001 #-1 @head",
            "pin 0000000000000001 #3 head",
            "pin 0000000000000001 #3",
            "hello",
            "",
        ] {
            assert!(parse_msg(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_frame("2 pin x"), Ok((2, "pin x")));
        assert!(parse_frame("x pin").is_err());
        assert!(parse_frame("pin").is_err());
        assert!(parse_frame(" ok").is_err());
    }
}
