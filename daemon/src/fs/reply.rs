//! Replies that do not care which transport carries them.
//!
//! A request comes either from /dev/fuse, through fuser, or from a ring
//! entry of FUSE over io_uring ([`super::uring`]). The handlers of
//! [`super::ops`] answer both with the types here, named and shaped like
//! fuser's: each wraps either fuser's reply or a [`RingReply`], which
//! encodes the same reply body into the entry (see [`super::uring::wire`]).
//!
//! As with fuser, a reply dropped without an answer answers EIO: a parked
//! request whose owner goes away must not hang its caller, and on the ring
//! an unanswered entry would also be lost to every later request.

use super::uring::wire;
use super::uring::RingReply;
use fuser::{Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

/// fuser's reply, or the ring entry the request came in.
enum Via<T> {
    Dev(T),
    Ring(RingReply),
}

/// Defines a reply type over fuser's `$fuser` with `error` and the
/// transport conversions; the success methods are written out below.
macro_rules! reply_type {
    ($name:ident, $fuser:ty) => {
        pub(crate) struct $name(Via<$fuser>);

        impl From<$fuser> for $name {
            fn from(r: $fuser) -> Self {
                $name(Via::Dev(r))
            }
        }

        impl From<RingReply> for $name {
            fn from(r: RingReply) -> Self {
                $name(Via::Ring(r))
            }
        }

        impl $name {
            #[allow(dead_code)] // not every kind of request fails
            pub(crate) fn error(self, err: Errno) {
                match self.0 {
                    Via::Dev(r) => r.error(err),
                    Via::Ring(r) => r.error(err),
                }
            }
        }
    };
}

reply_type!(ReplyData, fuser::ReplyData);
reply_type!(ReplyEntry, fuser::ReplyEntry);
reply_type!(ReplyAttr, fuser::ReplyAttr);
reply_type!(ReplyOpen, fuser::ReplyOpen);
reply_type!(ReplyEmpty, fuser::ReplyEmpty);
reply_type!(ReplyWrite, fuser::ReplyWrite);

impl ReplyData {
    pub(crate) fn data(self, data: &[u8]) {
        match self.0 {
            Via::Dev(r) => r.data(data),
            Via::Ring(r) => r.ok(data),
        }
    }
}

impl ReplyEntry {
    pub(crate) fn entry(self, ttl: &Duration, attr: &FileAttr, generation: Generation) {
        self.entry_with_ttls(ttl, ttl, attr, generation)
    }

    pub(crate) fn entry_with_ttls(
        self,
        entry_ttl: &Duration,
        attr_ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
    ) {
        match self.0 {
            Via::Dev(r) => r.entry_with_ttls(entry_ttl, attr_ttl, attr, generation),
            Via::Ring(r) => {
                let mut body = Vec::with_capacity(128);
                wire::entry_out(&mut body, generation.0, *entry_ttl, *attr_ttl, attr);
                r.ok(&body)
            }
        }
    }
}

impl ReplyAttr {
    pub(crate) fn attr(self, ttl: &Duration, attr: &FileAttr) {
        match self.0 {
            Via::Dev(r) => r.attr(ttl, attr),
            Via::Ring(r) => {
                let mut body = Vec::with_capacity(104);
                wire::attr_out(&mut body, *ttl, attr);
                r.ok(&body)
            }
        }
    }
}

impl ReplyOpen {
    pub(crate) fn opened(self, fh: FileHandle, flags: FopenFlags) {
        match self.0 {
            Via::Dev(r) => r.opened(fh, flags),
            Via::Ring(r) => {
                let mut body = Vec::with_capacity(16);
                wire::open_out(&mut body, fh.0, flags.bits());
                r.ok(&body)
            }
        }
    }
}

impl ReplyEmpty {
    pub(crate) fn ok(self) {
        match self.0 {
            Via::Dev(r) => r.ok(),
            Via::Ring(r) => r.ok(&[]),
        }
    }
}

impl ReplyWrite {
    pub(crate) fn written(self, size: u32) {
        match self.0 {
            Via::Dev(r) => r.written(size),
            Via::Ring(r) => {
                let mut body = Vec::with_capacity(8);
                wire::write_out(&mut body, size);
                r.ok(&body)
            }
        }
    }
}

/// A directory listing: entries are added until the kernel's buffer
/// (the request's size) is full.
pub(crate) struct ReplyDirectory(DirVia);

enum DirVia {
    Dev(fuser::ReplyDirectory),
    Ring {
        reply: RingReply,
        body: Vec<u8>,
        max: usize,
    },
}

impl From<fuser::ReplyDirectory> for ReplyDirectory {
    fn from(r: fuser::ReplyDirectory) -> Self {
        ReplyDirectory(DirVia::Dev(r))
    }
}

impl ReplyDirectory {
    pub(crate) fn ring(reply: RingReply, size: u32) -> Self {
        ReplyDirectory(DirVia::Ring {
            reply,
            body: Vec::new(),
            max: size as usize,
        })
    }

    /// Adds an entry; true when the buffer is full (the entry not added).
    #[must_use]
    pub(crate) fn add(&mut self, ino: INodeNo, offset: u64, kind: FileType, name: &str) -> bool {
        match &mut self.0 {
            DirVia::Dev(r) => r.add(ino, offset, kind, OsStr::new(name)),
            DirVia::Ring { body, max, .. } => {
                wire::dirent(body, *max, ino.0, offset, kind, OsStr::new(name).as_bytes())
            }
        }
    }

    pub(crate) fn ok(self) {
        match self.0 {
            DirVia::Dev(r) => r.ok(),
            DirVia::Ring { reply, body, .. } => reply.ok(&body),
        }
    }

    pub(crate) fn error(self, err: Errno) {
        match self.0 {
            DirVia::Dev(r) => r.error(err),
            DirVia::Ring { reply, .. } => reply.error(err),
        }
    }
}
