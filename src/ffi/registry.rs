//! The table behind the C handles.
//!
//! A C handle is never a pointer to Rust memory: it is an id, cast to the
//! opaque pointer type of its kind, that names an entry in one process-wide
//! table. Ids come from a counter and are never reused, so every handle the
//! C side can hold is in one of three states, told apart without touching
//! memory the handle might point to:
//!
//! - live: in the table, with its kind (a Conn handle passed where a FileH is
//!   wanted is an `EINVAL`, not a reinterpretation);
//! - released: below the counter but no longer in the table (`EBADF`-like,
//!   reported as `EINVAL` "already released");
//! - never issued (NULL, garbage): `EINVAL`.
//!
//! Locking: one `Mutex` around the table, held only to look up, insert or
//! remove — never across a call into the library, which may block (a
//! connect waits for the daemon, a resync for pins). A call therefore
//! clones the object out (the library's handles are cheap shared clones) and
//! works on the clone; a concurrent close of the same handle then makes the
//! library answer `ENOTCONN` rather than leaving a dangling reference.
//!
//! Fork: the table lock is taken around `fork()` (a `pthread_atfork`
//! handler, installed with the first handle), so that a child never inherits
//! it held by a parent thread that does not exist in the child. The lock is
//! a leaf — nothing else is locked while it is held — so taking it in the
//! prepare handler cannot deadlock with the library's own fork handlers. The
//! child keeps the table: its handles are the parent's objects, which the
//! library has detached, and they answer `ENOTCONN` until released.

use crate::{Conn, Error, FileH, Mapping, Result, Wcfs};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::Once;

/// One live handle's object.
pub(crate) enum Object {
    /// The mountpoint is kept as a C string so that `wcfs_mountpoint` can
    /// hand out a pointer that stays valid until the handle is released.
    Wcfs(Wcfs, CString),
    Conn(Conn),
    FileH(FileH),
    Mapping(Mapping),
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::Wcfs(..) => "wcfs_WCFS",
            Object::Conn(_) => "wcfs_Conn",
            Object::FileH(_) => "wcfs_FileH",
            Object::Mapping(_) => "wcfs_Mapping",
        }
    }
}

struct Table {
    next_id: usize,
    live: BTreeMap<usize, Object>,
}

/// Ids start well above 0 (NULL) and small integers a confused caller might
/// pass, and advance by 16 so that they never look like a neighbouring
/// valid handle after an off-by-one.
const FIRST_ID: usize = 0x10_0000;
const ID_STEP: usize = 16; // a power of two

static TABLE: Mutex<Table> = Mutex::new(Table {
    next_id: FIRST_ID,
    live: BTreeMap::new(),
});

extern "C" fn lock_before_fork() {
    // Held across fork(); released by the handlers below in both processes.
    std::mem::forget(TABLE.lock());
}

extern "C" fn unlock_after_fork() {
    // SAFETY: lock_before_fork took the lock and forgot its guard; in the
    // parent and in the child (a copy of the same memory) it is held exactly
    // once here, and parking_lot mutexes are not tied to an owner thread.
    unsafe { TABLE.force_unlock() };
}

fn install_fork_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handlers only lock/unlock TABLE (see above) and never
        // allocate or call into the library.
        let rc = unsafe {
            libc::pthread_atfork(
                Some(lock_before_fork),
                Some(unlock_after_fork),
                Some(unlock_after_fork),
            )
        };
        // ENOMEM only; without the handlers a fork while another thread
        // holds the lock could deadlock the child, which is no worse than
        // not trying.
        debug_assert_eq!(rc, 0, "pthread_atfork");
    });
}

/// Registers `obj` and returns its new handle id.
pub(crate) fn insert(obj: Object) -> usize {
    install_fork_handlers();
    let mut t = TABLE.lock();
    let id = t.next_id;
    t.next_id += ID_STEP;
    t.live.insert(id, obj);
    id
}

fn unknown(t: &Table, id: usize, want: &str) -> Error {
    if id == 0 {
        Error::invalid(format!("{want} handle is NULL"))
    } else if id >= FIRST_ID && id < t.next_id && (id - FIRST_ID) & (ID_STEP - 1) == 0 {
        Error::invalid(format!("{want} handle {id:#x} was already released"))
    } else {
        Error::invalid(format!("{id:#x} is not a {want} handle"))
    }
}

fn wrong_kind(id: usize, got: &Object, want: &str) -> Error {
    Error::invalid(format!("handle {id:#x} is a {}, not a {want}", got.kind()))
}

/// Runs `f` on the live object `id` under the table lock; `f` must only
/// clone or read (see the module doc).
pub(crate) fn with<T>(id: usize, want: &str, f: impl FnOnce(&Object) -> Option<T>) -> Result<T> {
    let t = TABLE.lock();
    match t.live.get(&id) {
        None => Err(unknown(&t, id, want)),
        Some(obj) => f(obj).ok_or_else(|| wrong_kind(id, obj, want)),
    }
}

/// Removes the live object `id` if it is of the wanted kind (`pick`), so that
/// it is released exactly once; the caller then closes it outside the lock.
pub(crate) fn remove<T>(
    id: usize,
    want: &str,
    pick: impl FnOnce(&Object) -> Option<T>,
) -> Result<T> {
    let mut t = TABLE.lock();
    let picked = match t.live.get(&id) {
        None => return Err(unknown(&t, id, want)),
        Some(obj) => pick(obj).ok_or_else(|| wrong_kind(id, obj, want))?,
    };
    t.live.remove(&id);
    Ok(picked)
}

/// How many handles are live now (for tests and leak checks).
pub(crate) fn live_count() -> usize {
    TABLE.lock().live.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_wrong_kind_and_bogus_ids_are_told_apart() {
        // Objects of the library cannot be made without a daemon here, so
        // exercise the table with its error paths: an id that was never
        // issued, NULL, and (below) one that was.
        let e = with(0, "wcfs_Conn", |_| Some(())).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.message().contains("NULL"), "{e}");
        let e = with(12345, "wcfs_Conn", |_| Some(())).unwrap_err();
        assert!(e.message().contains("not a wcfs_Conn"), "{e}");
        let issued_then_released = {
            let mut t = TABLE.lock();
            let id = t.next_id;
            t.next_id += ID_STEP;
            id
        };
        let e = remove(issued_then_released, "wcfs_FileH", |_| Some(())).unwrap_err();
        assert!(e.message().contains("already released"), "{e}");
        let e = with(issued_then_released + 1, "wcfs_FileH", |_| Some(())).unwrap_err();
        assert!(e.message().contains("not a wcfs_FileH"), "{e}");
    }
}
