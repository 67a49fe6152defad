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
    // try_with: a call from a thread-local destructor (thread exit) must
    // not panic here, outside catch_unwind; the message is then dropped.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = text);
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
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: wcfs_last_error returns this thread's valid C string.
        unsafe { CStr::from_ptr(wcfs_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_eio_with_its_text() {
        assert_eq!(call("wcfs_x", || panic!("boom {}", 7)), -libc::EIO);
        assert_eq!(last(), "wcfs_x: internal error: boom 7");
        assert_eq!(call_value("wcfs_y", 42u64, || panic!("static")), 42);
        assert_eq!(last(), "wcfs_y: internal error: static");
    }

    #[test]
    fn errors_are_negative_errno_and_success_keeps_the_text() {
        assert_eq!(
            call("wcfs_z", || Err(Error::not_connected("gone"))),
            -libc::ENOTCONN
        );
        assert_eq!(call("wcfs_ok", || Ok(())), 0);
        assert_eq!(last(), "wcfs_z: gone");
        // An errno of 0 must not look like success.
        assert_eq!(call("wcfs_w", || Err(Error::new(0, "odd"))), -libc::EIO);
        // Interior NULs do not truncate or lose the message.
        call("wcfs_n", || Err(Error::invalid("a\0b")));
        assert_eq!(last(), "wcfs_n: a\\0b");
    }

    #[test]
    fn the_text_is_per_thread() {
        call("wcfs_main", || Err(Error::invalid("main")));
        std::thread::spawn(|| {
            assert_eq!(last(), "");
            call("wcfs_other", || Err(Error::invalid("other")));
        })
        .join()
        .unwrap();
        assert_eq!(last(), "wcfs_main: main");
    }
}
