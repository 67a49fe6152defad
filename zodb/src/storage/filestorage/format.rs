//! The on-disk FS21 format: reading headers and whole transactions.
//!
//! Everything here works over [`ReadAt`], so the same code parses a real
//! `data.fs` (through `pread`) and an in-memory buffer (tests, fuzzing).
//!
//! The parser never trusts a length or a position it has not checked against
//! the file size it was given, and all arithmetic on file-supplied numbers is
//! checked: hostile input yields [`Error::Corrupt`], never a panic nor a huge
//! allocation.
//!
//! The reading of a transaction distinguishes three outcomes (see
//! [`read_txn`]): a committed transaction, "nothing committed here (yet)" (end
//! of file, a short tail, or a trailing transaction still marked `c` by a
//! writer between vote and finish), and corruption. The second is what a
//! reader sees while another process commits, so it must never be an error.

use super::super::Error;
use crate::types::{Oid, Tid};
use std::io;
use std::mem::MaybeUninit;

/// File magic of files written by Python 2's ZODB. The layout is the same
/// for both magics; only the pickles inside differ.
pub const MAGIC: &[u8; 4] = b"FS21";
/// File magic of files written by Python 3's ZODB (pickle protocol 3).
pub const MAGIC_PY3: &[u8; 4] = b"FS30";
/// Length of the fixed part of a transaction header.
pub const TXN_HDR_LEN: u64 = 23;
/// Length of a data record header (without the back-pointer).
pub const DATA_HDR_LEN: u64 = 42;

/// Positioned reads: a file, or bytes in memory.
///
/// `size` is asked anew whenever the caller wants to know whether the
/// storage grew; readers never read past the size they were given.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from offset `off`; short data is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// As [`ReadAt::read_exact_at`] into memory not initialized yet; on
    /// success all of `buf` is initialized. Big loads read into fresh
    /// buffers: zero-filling them first costs a quarter of the copy itself.
    fn read_exact_at_uninit(&self, buf: &mut [MaybeUninit<u8>], off: u64) -> io::Result<()> {
        buf.fill(MaybeUninit::new(0));
        // SAFETY: every byte was just initialized, and MaybeUninit<u8> has
        // the layout of u8.
        let b = unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) };
        self.read_exact_at(b, off)
    }
    /// The current size.
    fn size(&self) -> io::Result<u64>;
    /// Whether this is a real file worth watching with inotify.
    fn path(&self) -> Option<&std::path::Path> {
        None
    }
}

/// A real file, read with `pread`.
pub struct FileReader {
    pub(crate) file: std::fs::File,
    pub(crate) path: std::path::PathBuf,
}

impl ReadAt for FileReader {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, off)
    }
    fn read_exact_at_uninit(&self, buf: &mut [MaybeUninit<u8>], mut off: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            let at = libc::off_t::try_from(off).map_err(|_| io::ErrorKind::InvalidInput)?;
            // SAFETY: pread only writes, at most rest.len() bytes, into
            // memory we borrow exclusively; writing uninitialized memory is
            // fine, and we never read what it did not write.
            let k = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    at,
                )
            };
            if k < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if k == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += k as usize;
            off += k as u64;
        }
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn path(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }
}

fn read_slice(src: &[u8], buf: &mut [u8], off: u64) -> io::Result<()> {
    let start = usize::try_from(off).ok();
    let end = start.and_then(|s| s.checked_add(buf.len()));
    match (start, end) {
        (Some(s), Some(e)) if e <= src.len() => {
            buf.copy_from_slice(&src[s..e]);
            Ok(())
        }
        _ => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        read_slice(self, buf, off)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for bytes::Bytes {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        read_slice(self, buf, off)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The fixed part of a transaction header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeader {
    pub tid: Tid,
    /// Transaction length minus the trailing redundant 8-byte length.
    pub tlen: u64,
    pub status: u8,
    pub ulen: u16,
    pub dlen: u16,
    pub elen: u16,
}

impl TxnHeader {
    pub fn parse(b: &[u8]) -> TxnHeader {
        TxnHeader {
            tid: Tid(be64(&b[0..8])),
            tlen: be64(&b[8..16]),
            status: b[16],
            ulen: be16(&b[17..19]),
            dlen: be16(&b[19..21]),
            elen: be16(&b[21..23]),
        }
    }
    /// Header length including user, description and extension.
    pub fn header_len(&self) -> u64 {
        TXN_HDR_LEN + self.ulen as u64 + self.dlen as u64 + self.elen as u64
    }
}

/// A data record header, back-pointer included when the record has no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    pub oid: Oid,
    pub tid: Tid,
    /// Position of the previous record of the same object, 0 if none.
    pub prev: u64,
    /// Position of the transaction record this one belongs to.
    pub tloc: u64,
    pub vlen: u16,
    /// Data length; 0 means "see `back`".
    pub plen: u64,
    /// For `plen == 0`: position of the record holding the data, 0 for
    /// "object deleted" (or creation undone).
    pub back: u64,
}

impl DataHeader {
    pub fn parse(b: &[u8]) -> DataHeader {
        DataHeader {
            oid: Oid(be64(&b[0..8])),
            tid: Tid(be64(&b[8..16])),
            prev: be64(&b[16..24]),
            tloc: be64(&b[24..32]),
            vlen: be16(&b[32..34]),
            plen: be64(&b[34..42]),
            back: 0,
        }
    }
    /// Record length, header included; `None` on overflow.
    pub fn record_len(&self) -> Option<u64> {
        DATA_HDR_LEN.checked_add(if self.plen == 0 { 8 } else { self.plen })
    }
}

/// Builds corruption errors that name the storage and the file offset.
#[derive(Clone)]
pub struct Ctx<'a> {
    pub name: &'a str,
}

impl Ctx<'_> {
    pub fn corrupt(&self, pos: u64, why: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            storage: self.name.to_string(),
            why: format!("at offset {pos}: {why}"),
        }
    }
    /// A read failure. Short reads mean a position or a length points
    /// beyond what the file holds: corruption, reported as such.
    pub fn io(&self, pos: u64, len: u64, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.corrupt(
                pos,
                format!("{len} bytes at this offset lie beyond end of file"),
            )
        } else {
            Error::Io {
                storage: self.name.to_string(),
                op: format!("read {len} bytes at offset {pos}"),
                source: e,
            }
        }
    }
}

/// A read-through window for sequential header reads during scans: one
/// `pread` serves many small records, and big payloads are jumped over.
pub struct Window<'r> {
    r: &'r dyn ReadAt,
    /// The file size the scan works against; nothing beyond it is read.
    pub size: u64,
    buf: Vec<u8>,
    boff: u64,
    blen: usize,
}

/// Small enough that jumping over a big payload does not drag it through
/// memory, big enough to hold the headers of a transaction of small
/// records (and the next transaction's header after a redundant length).
const WINDOW: usize = 16 << 10;

impl<'r> Window<'r> {
    pub fn new(r: &'r dyn ReadAt, size: u64) -> Window<'r> {
        Window {
            r,
            size,
            buf: Vec::new(),
            boff: 0,
            blen: 0,
        }
    }

    /// Bytes `[pos, pos+len)`; the caller has checked `pos+len <= size`.
    pub fn get(&mut self, pos: u64, len: usize) -> io::Result<&[u8]> {
        let end = pos
            .checked_add(len as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if pos < self.boff || end > self.boff + self.blen as u64 {
            let n = (WINDOW.max(len) as u64).min(self.size - pos) as usize;
            if self.buf.len() < n {
                self.buf.resize(n, 0);
            }
            self.r.read_exact_at(&mut self.buf[..n], pos)?;
            self.boff = pos;
            self.blen = n;
        }
        let s = (pos - self.boff) as usize;
        Ok(&self.buf[s..s + len])
    }
}

/// What was found at a transaction position.
#[derive(Debug)]
pub enum TxnAt {
    /// Nothing committed starts here (yet): end of file, a short tail, or a
    /// transaction still being committed.
    End,
    /// A committed transaction, its header checked against the file.
    Txn(TxnHeader),
}

/// Reads and checks the transaction header at `pos` against `prev_tid` (the
/// tid of the transaction before it, [`Tid::ZERO`] if none).
pub fn read_txn(w: &mut Window, ctx: &Ctx, pos: u64, prev_tid: Tid) -> Result<TxnAt, Error> {
    if w.size.saturating_sub(pos) < TXN_HDR_LEN {
        return Ok(TxnAt::End);
    }
    let h = TxnHeader::parse(
        w.get(pos, TXN_HDR_LEN as usize)
            .map_err(|e| ctx.io(pos, TXN_HDR_LEN, e))?,
    );
    if h.status == b'c' {
        return Ok(TxnAt::End);
    }
    // The writer appends the whole transaction (with status 'c') before
    // flipping the status: a committed transaction that does not fit is a
    // short tail, i.e. a file truncated mid-write.
    let end = match pos.checked_add(h.tlen).and_then(|e| e.checked_add(8)) {
        Some(e) if e <= w.size => e,
        _ => return Ok(TxnAt::End),
    };
    if h.tid <= prev_tid {
        return Err(ctx.corrupt(
            pos,
            format!(
                "transaction {} does not follow {} (time-stamp reduction)",
                h.tid, prev_tid
            ),
        ));
    }
    if !matches!(h.status, b' ' | b'p' | b'u') {
        return Err(ctx.corrupt(
            pos,
            format!(
                "transaction {}: invalid status {:?}",
                h.tid, h.status as char
            ),
        ));
    }
    if h.tlen < h.header_len() {
        return Err(ctx.corrupt(
            pos,
            format!(
                "transaction {}: length {} shorter than its header ({})",
                h.tid,
                h.tlen,
                h.header_len()
            ),
        ));
    }
    let rpos = end - 8;
    let rtl = be64(w.get(rpos, 8).map_err(|e| ctx.io(rpos, 8, e))?);
    if rtl != h.tlen {
        return Err(ctx.corrupt(
            rpos,
            format!(
                "transaction {} at {pos}: redundant length {rtl} != {}",
                h.tid, h.tlen
            ),
        ));
    }
    Ok(TxnAt::Txn(h))
}

/// Reads the data record header at `pos` inside the transaction `th` at
/// `tpos`, and checks it against the transaction. The back-pointer is read
/// too. Returns the header and the position of the next record.
pub fn read_data_in_txn(
    w: &mut Window,
    ctx: &Ctx,
    th: &TxnHeader,
    tpos: u64,
    pos: u64,
) -> Result<(DataHeader, u64), Error> {
    let tend = tpos + th.tlen; // checked by read_txn
    if tend.saturating_sub(pos) < DATA_HDR_LEN {
        return Err(ctx.corrupt(
            pos,
            format!(
                "transaction {} at {tpos}: data records don't add up",
                th.tid
            ),
        ));
    }
    let mut h = DataHeader::parse(
        w.get(pos, DATA_HDR_LEN as usize)
            .map_err(|e| ctx.io(pos, DATA_HDR_LEN, e))?,
    );
    check_data(ctx, &h, pos)?;
    if h.tid != th.tid {
        return Err(ctx.corrupt(
            pos,
            format!(
                "data record tid {} != transaction tid {} (transaction at {tpos})",
                h.tid, th.tid
            ),
        ));
    }
    if h.tloc != tpos {
        return Err(ctx.corrupt(
            pos,
            format!(
                "data record points to transaction at {} instead of {tpos}",
                h.tloc
            ),
        ));
    }
    let next = match h.record_len().and_then(|l| pos.checked_add(l)) {
        Some(n) if n <= tend => n,
        _ => {
            return Err(ctx.corrupt(
                pos,
                format!(
                    "data record of {} (length {}) exceeds its transaction at {tpos}",
                    h.oid, h.plen
                ),
            ))
        }
    };
    if h.plen == 0 {
        let bpos = pos + DATA_HDR_LEN;
        h.back = be64(w.get(bpos, 8).map_err(|e| ctx.io(bpos, 8, e))?);
        if h.back >= pos {
            return Err(ctx.corrupt(
                pos,
                format!(
                    "data record of {}: back-pointer {} not before the record",
                    h.oid, h.back
                ),
            ));
        }
    }
    Ok((h, next))
}

/// Checks that hold for every data record on its own.
pub fn check_data(ctx: &Ctx, h: &DataHeader, pos: u64) -> Result<(), Error> {
    if h.vlen != 0 {
        return Err(ctx.corrupt(
            pos,
            format!(
                "data record of {}: nonzero version length {}",
                h.oid, h.vlen
            ),
        ));
    }
    if h.prev >= pos {
        return Err(ctx.corrupt(
            pos,
            format!(
                "data record of {}: previous-record pointer {} not before the record",
                h.oid, h.prev
            ),
        ));
    }
    if h.tloc >= pos || h.tloc < MAGIC.len() as u64 {
        return Err(ctx.corrupt(
            pos,
            format!(
                "data record of {}: transaction pointer {} out of range",
                h.oid, h.tloc
            ),
        ));
    }
    Ok(())
}

/// Reads the data record header at `pos` alone (loads: random access).
pub fn read_data_header(r: &dyn ReadAt, ctx: &Ctx, pos: u64) -> Result<DataHeader, Error> {
    let mut b = [0u8; DATA_HDR_LEN as usize + 8];
    r.read_exact_at(&mut b[..DATA_HDR_LEN as usize], pos)
        .map_err(|e| ctx.io(pos, DATA_HDR_LEN, e))?;
    let mut h = DataHeader::parse(&b);
    check_data(ctx, &h, pos)?;
    if h.plen == 0 {
        let bpos = pos + DATA_HDR_LEN;
        r.read_exact_at(&mut b[DATA_HDR_LEN as usize..], bpos)
            .map_err(|e| ctx.io(bpos, 8, e))?;
        h.back = be64(&b[DATA_HDR_LEN as usize..]);
        if h.back >= pos {
            return Err(ctx.corrupt(
                pos,
                format!(
                    "data record of {}: back-pointer {} not before the record",
                    h.oid, h.back
                ),
            ));
        }
    }
    Ok(h)
}

/// Reads the transaction header at `pos` alone, for checks at load time
/// and for the backward walk.
pub fn read_txn_header(r: &dyn ReadAt, ctx: &Ctx, pos: u64) -> Result<TxnHeader, Error> {
    let mut b = [0u8; TXN_HDR_LEN as usize];
    r.read_exact_at(&mut b, pos)
        .map_err(|e| ctx.io(pos, TXN_HDR_LEN, e))?;
    Ok(TxnHeader::parse(&b))
}

/// Reads `n` bytes at `pos` into a fresh buffer: the one copy a load makes.
pub fn read_bytes(
    r: &dyn ReadAt,
    ctx: &Ctx,
    pos: u64,
    n: u64,
    size: u64,
) -> Result<Vec<u8>, Error> {
    // Check against the size first: a hostile length must not allocate.
    if !matches!(pos.checked_add(n), Some(e) if e <= size) {
        return Err(ctx.corrupt(
            pos,
            format!("{n} bytes at this offset lie beyond end of file ({size})"),
        ));
    }
    let n = usize::try_from(n).map_err(|_| ctx.corrupt(pos, format!("length {n} too big")))?;
    let mut v = crate::bufpool::take(n);
    r.read_exact_at_uninit(&mut v.spare_capacity_mut()[..n], pos)
        .map_err(|e| ctx.io(pos, n as u64, e))?;
    // SAFETY: read_exact_at_uninit initialized all n bytes: it succeeded.
    unsafe { v.set_len(n) };
    Ok(v)
}

/// Reads one committed transaction's data record headers.
pub fn read_txn_records(
    w: &mut Window,
    ctx: &Ctx,
    th: &TxnHeader,
    tpos: u64,
    mut f: impl FnMut(u64, &DataHeader) -> Result<(), Error>,
) -> Result<(), Error> {
    let tend = tpos + th.tlen;
    let mut pos = tpos + th.header_len();
    while pos < tend {
        let (h, next) = read_data_in_txn(w, ctx, th, tpos, pos)?;
        f(pos, &h)?;
        pos = next;
    }
    Ok(())
}
