//! The per-thread error text and the wrapper every entry point runs in.
//!
//! `call`/`call_value` run the body under `catch_unwind`, turn an `Err` into
//! a negative errno (or the function's neutral value) and record the
//! message, prefixed with the function's name, in a thread-local C string
//! that `wcfs_last_error()` hands out. The string is replaced by the next
//! failure of the same thread only, so it stays readable across successful
//! calls in between (like `errno`).

use crate::{Error, Result};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn record(func: &str, err: &Error) {
    let text = format!("{func}: {err}").replace('\0', "\\0");
    let text = CString::new(text).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::new(libc::EIO, format!("internal error: {what}"))
}

fn run<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    // AssertUnwindSafe: after a panic the only state we look at again is the
    // registry (a Mutex that parking_lot does not poison, and whose critical
    // sections cannot panic half-way) and the library's own objects, which
    // are then answered with errors rather than trusted blindly.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panic_error(p)))
}

/// Runs a status-returning entry point: 0, or the negative errno.
pub(super) fn call(func: &str, f: impl FnOnce() -> Result<()>) -> c_int {
    match run(f) {
        Ok(()) => 0,
        Err(e) => {
            record(func, &e);
            let errno = e.errno();
            -(if errno > 0 { errno } else { libc::EIO })
        }
    }
}

/// Runs a value-returning entry point: the value, or `fail` on error.
pub(super) fn call_value<T>(func: &str, fail: T, f: impl FnOnce() -> Result<T>) -> T {
    match run(f) {
        Ok(v) => v,
        Err(e) => {
            record(func, &e);
            fail
        }
    }
}

/// The message of the calling thread's last failure ("" if none yet). The
/// text belongs to the thread and stays valid until its next failing call.
#[no_mangle]
pub extern "C" fn wcfs_last_error() -> *const c_char {
    // The CString is replaced (not mutated) on the next failure only, and
    // lives as long as the thread.
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
