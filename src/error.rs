//! Errors of the client library: an errno (what C callers get, negated) and
//! a message that says what failed and why.

use std::fmt;

/// A failure: `errno()` classifies it (`EINVAL`, `EIO`, `ENOTCONN`, ...),
/// `Display` explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    errno: i32,
    msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(errno: i32, msg: impl Into<String>) -> Self {
        Error {
            errno,
            msg: msg.into(),
        }
    }

    /// Bad argument (`EINVAL`).
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(libc::EINVAL, msg)
    }

    /// The handle or its parent is closed, or the Conn went down (`ENOTCONN`).
    pub fn not_connected(msg: impl Into<String>) -> Self {
        Self::new(libc::ENOTCONN, msg)
    }

    /// A system call failed: `context` says what we were doing.
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        Self::new(errno, format!("{context}: {err}"))
    }

    /// The positive errno of this failure.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}
