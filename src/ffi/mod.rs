//! The C ABI of libwcfs (SPEC §8); `include/wcfs.h` is generated from this
//! module by cbindgen (see `cbindgen.toml`; regenerate with
//! `cbindgen --config cbindgen.toml --output include/wcfs.h`, and
//! `cargo test --release --test header` fails while the committed header is
//! stale).
//!
//! Design:
//! - Handles are ids in a registry (`registry`), never pointers to Rust
//!   memory: NULL, a released handle, a handle of another kind or plain
//!   garbage is recognised and answered with `-EINVAL`, never dereferenced.
//!   Each handle is released exactly once, by its own close/unmap, which
//!   takes it out of the registry before closing the object (a second close
//!   finds nothing). Parents may be closed before their children: the
//!   children stay registered and the library answers `-ENOTCONN` for them.
//! - Every entry point runs its body under `catch_unwind`: a panic (a bug,
//!   or a part of the library not written yet) becomes `-EIO` with the
//!   panic's text in `wcfs_last_error()`; no unwinding crosses into C.
//! - Errors are a negative errno as return value and a message kept per
//!   thread (`last_error`), valid until the next failing call of the same
//!   thread. Functions that return a value rather than a status (`wcfs_conn_at`,
//!   `wcfs_fileh_blksize`, `wcfs_mapping_mem_start`, …) return a neutral
//!   value (0, NULL, or a negative errno for the `int64_t` ones) on a bad
//!   handle and set the message too.
//! - Pointer arguments are the caller's promise (as always in C): a non-NULL
//!   `out` must be writable, a non-NULL string NUL-terminated. NULL is
//!   checked everywhere.
//!
//! Locking: the registry lock is taken only to look up, insert or remove a
//! handle, never across a library call (see `registry`), so one thread
//! blocked in `wcfs_conn_resync` does not hold up another's `wcfs_conn_open`.

#![allow(non_camel_case_types)] // the C names are the contract (SPEC §8)

mod abi;
mod last_error;
mod registry;

use crate::{Error, Oid, Result, Tid, Wcfs};
use last_error::{call, call_value};
use registry::Object;
use std::ffi::{c_char, c_int, CStr, CString};
use std::os::unix::ffi::OsStrExt;

pub use abi::WCFS_ABI_VERSION;
pub use last_error::wcfs_last_error;

/// A ZODB transaction id.
pub type wcfs_tid = u64;
/// A ZODB object id.
pub type wcfs_oid = u64;

/// A joined daemon or attached mountpoint (opaque).
pub struct wcfs_WCFS {
    _opaque: [u8; 0],
}

/// A view of the database as of one `at`, with its watch link and pinner (opaque).
pub struct wcfs_Conn {
    _opaque: [u8; 0],
}

/// A ZBigFile opened under a Conn (opaque).
pub struct wcfs_FileH {
    _opaque: [u8; 0],
}

/// A range of a file's blocks mapped read-only into memory (opaque).
pub struct wcfs_Mapping {
    _opaque: [u8; 0],
}

/// The library version ("MAJOR.MINOR.PATCH"), a static string.
#[no_mangle]
pub extern "C" fn wcfs_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// Stores handle `id` in `*out`.
///
/// # Safety
/// `out` is non-NULL (checked by the caller via `check_out`) and writable.
unsafe fn put<T>(out: *mut *mut T, id: usize) {
    // SAFETY: the caller checked `out` is not NULL; the C contract makes it
    // writable. The id is stored as an opaque pointer and never dereferenced.
    unsafe { *out = id as *mut T };
}

/// Checks an out-parameter and clears it, so that a failing call leaves
/// NULL there rather than stale garbage.
fn check_out<T>(out: *mut *mut T) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid("out is NULL"));
    }
    // SAFETY: non-NULL out-parameter, writable by the C contract.
    unsafe { *out = std::ptr::null_mut() };
    Ok(())
}

/// A NUL-terminated argument string.
fn c_str<'a>(s: *const c_char, what: &str) -> Result<&'a CStr> {
    if s.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and NUL-terminated by the C contract.
    Ok(unsafe { CStr::from_ptr(s) })
}

fn wcfs_of(wc: *const wcfs_WCFS) -> Result<Wcfs> {
    registry::with(wc as usize, "wcfs_WCFS", |o| match o {
        Object::Wcfs(w, _) => Some(w.clone()),
        _ => None,
    })
}

fn conn_of(conn: *const wcfs_Conn) -> Result<crate::Conn> {
    registry::with(conn as usize, "wcfs_Conn", |o| match o {
        Object::Conn(c) => Some(c.clone()),
        _ => None,
    })
}

fn fileh_of(fh: *const wcfs_FileH) -> Result<crate::FileH> {
    registry::with(fh as usize, "wcfs_FileH", |o| match o {
        Object::FileH(f) => Some(f.clone()),
        _ => None,
    })
}

fn mapping_of(m: *const wcfs_Mapping) -> Result<crate::Mapping> {
    registry::with(m as usize, "wcfs_Mapping", |o| match o {
        Object::Mapping(m) => Some(m.clone()),
        _ => None,
    })
}

fn register_wcfs(wc: Wcfs) -> Result<usize> {
    let mnt = CString::new(wc.mountpoint().as_os_str().as_bytes())
        .map_err(|_| Error::invalid("mountpoint contains a NUL byte"))?;
    Ok(registry::insert(Object::Wcfs(wc, mnt)))
}

/// Joins the wcfsd serving `zurl` (mounted at `/dev/shm/wcfs/<sha1 of zurl>`),
/// starting one there if `autostart` is non-zero and none serves.
///
/// # Safety
/// `zurl` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn wcfs_join(
    zurl: *const c_char,
    autostart: c_int,
    out: *mut *mut wcfs_WCFS,
) -> c_int {
    call("wcfs_join", || {
        check_out(out)?;
        let zurl = c_str(zurl, "zurl")?
            .to_str()
            .map_err(|_| Error::invalid("zurl is not UTF-8"))?;
        let wc = Wcfs::join(zurl, autostart != 0)?;
        let id = register_wcfs(wc)?;
        // SAFETY: out checked by check_out.
        unsafe { put(out, id) };
        Ok(())
    })
}

/// Attaches to the wcfsd already serving at `mountpoint`.
///
/// # Safety
/// `mountpoint` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn wcfs_attach(mountpoint: *const c_char, out: *mut *mut wcfs_WCFS) -> c_int {
    call("wcfs_attach", || {
        check_out(out)?;
        let mnt = c_str(mountpoint, "mountpoint")?;
        if mnt.is_empty() {
            return Err(Error::invalid("mountpoint is empty"));
        }
        let wc = Wcfs::attach(std::ffi::OsStr::from_bytes(mnt.to_bytes()))?;
        let id = register_wcfs(wc)?;
        // SAFETY: out checked by check_out.
        unsafe { put(out, id) };
        Ok(())
    })
}

/// The mountpoint of `wc`; the string belongs to the handle and stays valid
/// until `wcfs_close(wc)`. NULL on a bad handle.
#[no_mangle]
pub extern "C" fn wcfs_mountpoint(wc: *const wcfs_WCFS) -> *const c_char {
    call_value("wcfs_mountpoint", std::ptr::null(), || {
        registry::with(wc as usize, "wcfs_WCFS", |o| match o {
            // The CString's heap buffer does not move while the entry is
            // in the registry, so the pointer outlives the lock.
            Object::Wcfs(_, mnt) => Some(mnt.as_ptr()),
            _ => None,
        })
    })
}

/// The tid `head/` of the daemon shows now.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn wcfs_head_at(wc: *mut wcfs_WCFS, out: *mut wcfs_tid) -> c_int {
    call("wcfs_head_at", || {
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        let at = wcfs_of(wc)?.head_at()?;
        // SAFETY: non-NULL and writable by the C contract.
        unsafe { *out = at.0 };
        Ok(())
    })
}

/// Releases `wc`. Its Conns stay valid handles that answer `-ENOTCONN` until
/// they are closed themselves. The handle is released even if closing
/// reports an error.
#[no_mangle]
pub extern "C" fn wcfs_close(wc: *mut wcfs_WCFS) -> c_int {
    call("wcfs_close", || {
        let w = registry::remove(wc as usize, "wcfs_WCFS", |o| match o {
            Object::Wcfs(w, _) => Some(w.clone()),
            _ => None,
        })?;
        w.close()
    })
}

/// Opens a view of the database as of `at`.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn wcfs_connect(
    wc: *mut wcfs_WCFS,
    at: wcfs_tid,
    out: *mut *mut wcfs_Conn,
) -> c_int {
    call("wcfs_connect", || {
        check_out(out)?;
        let conn = wcfs_of(wc)?.connect(Tid(at))?;
        let id = registry::insert(Object::Conn(conn));
        // SAFETY: out checked by check_out.
        unsafe { put(out, id) };
        Ok(())
    })
}

/// The `at` of `conn`; 0 (no transaction has tid 0) on a bad handle.
#[no_mangle]
pub extern "C" fn wcfs_conn_at(conn: *const wcfs_Conn) -> wcfs_tid {
    call_value("wcfs_conn_at", 0, || Ok(conn_of(conn)?.at().0))
}

/// Moves the view of `conn` forward to `at`. Going back is an error that
/// takes the Conn down.
#[no_mangle]
pub extern "C" fn wcfs_conn_resync(conn: *mut wcfs_Conn, at: wcfs_tid) -> c_int {
    call("wcfs_conn_resync", || conn_of(conn)?.resync(Tid(at)))
}

/// Releases `conn`; the memory of its Mappings becomes inaccessible and its
/// FileHs and Mappings answer `-ENOTCONN` until released.
#[no_mangle]
pub extern "C" fn wcfs_conn_close(conn: *mut wcfs_Conn) -> c_int {
    call("wcfs_conn_close", || {
        let c = registry::remove(conn as usize, "wcfs_Conn", |o| match o {
            Object::Conn(c) => Some(c.clone()),
            _ => None,
        })?;
        c.close()
    })
}

/// Opens ZBigFile `foid` under `conn`.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn wcfs_conn_open(
    conn: *mut wcfs_Conn,
    foid: wcfs_oid,
    out: *mut *mut wcfs_FileH,
) -> c_int {
    call("wcfs_conn_open", || {
        check_out(out)?;
        let fh = conn_of(conn)?.open(Oid(foid))?;
        let id = registry::insert(Object::FileH(fh));
        // SAFETY: out checked by check_out.
        unsafe { put(out, id) };
        Ok(())
    })
}

/// The block size of the file; 0 on a bad handle.
#[no_mangle]
pub extern "C" fn wcfs_fileh_blksize(fh: *const wcfs_FileH) -> usize {
    call_value("wcfs_fileh_blksize", 0, || Ok(fileh_of(fh)?.blksize()))
}

/// The oid of the file (an addition to SPEC §8); 0 on a bad handle.
#[no_mangle]
pub extern "C" fn wcfs_fileh_oid(fh: *const wcfs_FileH) -> wcfs_oid {
    call_value("wcfs_fileh_oid", 0, || Ok(fileh_of(fh)?.oid().0))
}

/// Releases `fh`; its Mappings answer `-ENOTCONN` until released.
#[no_mangle]
pub extern "C" fn wcfs_fileh_close(fh: *mut wcfs_FileH) -> c_int {
    call("wcfs_fileh_close", || {
        let f = registry::remove(fh as usize, "wcfs_FileH", |o| match o {
            Object::FileH(f) => Some(f.clone()),
            _ => None,
        })?;
        f.close()
    })
}

/// Maps blocks `[blk_start, blk_start + blk_len)` of `fh` read-only, as of
/// the Conn's `at`. `blk_start >= 0`, `blk_len > 0`.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn wcfs_fileh_mmap(
    fh: *mut wcfs_FileH,
    blk_start: i64,
    blk_len: i64,
    out: *mut *mut wcfs_Mapping,
) -> c_int {
    call("wcfs_fileh_mmap", || {
        check_out(out)?;
        let f = fileh_of(fh)?;
        if blk_start < 0 || blk_len <= 0 || blk_start.checked_add(blk_len).is_none() {
            return Err(Error::invalid(format!(
                "bad block range: start {blk_start}, len {blk_len}"
            )));
        }
        let m = f.mmap(blk_start, blk_len)?;
        let id = registry::insert(Object::Mapping(m));
        // SAFETY: out checked by check_out.
        unsafe { put(out, id) };
        Ok(())
    })
}

/// The first byte of the mapped memory; NULL on a bad handle.
#[no_mangle]
pub extern "C" fn wcfs_mapping_mem_start(m: *const wcfs_Mapping) -> *const u8 {
    call_value("wcfs_mapping_mem_start", std::ptr::null(), || {
        Ok(mapping_of(m)?.mem_start())
    })
}

/// One past the last byte of the mapped memory; NULL on a bad handle.
#[no_mangle]
pub extern "C" fn wcfs_mapping_mem_stop(m: *const wcfs_Mapping) -> *const u8 {
    call_value("wcfs_mapping_mem_stop", std::ptr::null(), || {
        Ok(mapping_of(m)?.mem_stop())
    })
}

/// The first block of the mapping; a negative errno on a bad handle.
#[no_mangle]
pub extern "C" fn wcfs_mapping_blk_start(m: *const wcfs_Mapping) -> i64 {
    call_value("wcfs_mapping_blk_start", -(libc::EINVAL as i64), || {
        Ok(mapping_of(m)?.blk_start())
    })
}

/// Re-establishes the base mapping (head, or the `@<rev>` it is pinned to)
/// of block `blk` of `m`, e.g. after the caller overlaid its own page there.
#[no_mangle]
pub extern "C" fn wcfs_mapping_remmap_blk(m: *mut wcfs_Mapping, blk: i64) -> c_int {
    call("wcfs_mapping_remmap_blk", || mapping_of(m)?.remmap_blk(blk))
}

/// Releases `m` and unmaps its memory.
#[no_mangle]
pub extern "C" fn wcfs_mapping_unmap(m: *mut wcfs_Mapping) -> c_int {
    call("wcfs_mapping_unmap", || {
        let mp = registry::remove(m as usize, "wcfs_Mapping", |o| match o {
            Object::Mapping(m) => Some(m.clone()),
            _ => None,
        })?;
        mp.unmap()
    })
}

/// How many handles of any kind are live in this process (an addition to
/// SPEC §8, for leak checks in tests).
#[no_mangle]
pub extern "C" fn wcfs_live_handles() -> usize {
    call_value("wcfs_live_handles", 0, || Ok(registry::live_count()))
}
