//! Errors of joining, starting, checking and stopping: each says which zurl
//! and mountpoint, what was found there and what to do about it, and maps
//! to an errno for the C ABI (`wcfs_join` returns it negated).

use std::fmt;
use std::path::PathBuf;

/// Why a daemon could not be joined, started or stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The zurl cannot name a database (empty, or with NUL or newline)
    /// (`EINVAL`).
    BadZurl { zurl: String },
    /// Nothing serves the zurl and we were not asked to start it (`ENOENT`).
    NotServing { zurl: String, mountpoint: PathBuf },
    /// A daemon was mounted there but is gone: the mount answers
    /// `ENOTCONN` (`ENOTCONN`).
    Dead { zurl: String, mountpoint: PathBuf },
    /// The daemon is there but does not answer (`ETIMEDOUT`).
    Stuck {
        zurl: String,
        mountpoint: PathBuf,
        why: String,
    },
    /// The daemon answers, but wrongly (`EIO`).
    Unhealthy {
        zurl: String,
        mountpoint: PathBuf,
        why: String,
    },
    /// Something that is not the wcfsd of this zurl is mounted there (`EBUSY`).
    Foreign {
        zurl: String,
        mountpoint: PathBuf,
        what: String,
    },
    /// The wcfsd of the zurl runs as another user (this uid); its mount is
    /// private to that user (`EACCES`).
    OtherUser {
        zurl: String,
        mountpoint: PathBuf,
        uid: u32,
    },
    /// Something under the mount root that we did not create, or a mount
    /// root we cannot trust: a symbolic link, another owner, a hard link,
    /// the wrong type (`EPERM`). Nothing was done through it.
    Unsafe { path: PathBuf, why: String },
    /// `serve` found a healthy daemon already serving the zurl (`EEXIST`).
    AlreadyServed {
        zurl: String,
        mountpoint: PathBuf,
        pid: Option<u32>,
    },
    /// No wcfsd binary to start (`ENOENT`).
    NoDaemonBinary { tried: String },
    /// The daemon we started exited or did not get ready (`EIO`, or
    /// `ETIMEDOUT` when it timed out).
    StartFailed {
        zurl: String,
        why: String,
        log: PathBuf,
        log_tail: String,
        timed_out: bool,
    },
    /// Another process holds the start/stop lock for too long (`ETIMEDOUT`).
    LockTimeout { lock: PathBuf },
    /// A system call failed.
    Io {
        context: String,
        errno: i32,
        msg: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl fmt::Display, e: std::io::Error) -> Error {
        Error::Io {
            context: context.to_string(),
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            msg: e.to_string(),
        }
    }

    /// The positive errno that classifies this failure.
    pub fn errno(&self) -> i32 {
        match self {
            Error::BadZurl { .. } => libc::EINVAL,
            Error::NotServing { .. } | Error::NoDaemonBinary { .. } => libc::ENOENT,
            Error::Dead { .. } => libc::ENOTCONN,
            Error::Stuck { .. } | Error::LockTimeout { .. } => libc::ETIMEDOUT,
            Error::Unhealthy { .. } => libc::EIO,
            Error::Foreign { .. } => libc::EBUSY,
            Error::AlreadyServed { .. } => libc::EEXIST,
            Error::OtherUser { .. } => libc::EACCES,
            Error::Unsafe { .. } => libc::EPERM,
            Error::StartFailed { timed_out, .. } => {
                if *timed_out {
                    libc::ETIMEDOUT
                } else {
                    libc::EIO
                }
            }
            Error::Io { errno, .. } => *errno,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::shown;
        match self {
            Error::BadZurl { zurl } => write!(
                f,
                "invalid zurl {:?}: want file://PATH, a path to a data.fs, \
                 zeo://HOST:PORT, zeo:///SOCKET, postgresql://... or demo:(BASE)/(DELTA)",
                crate::public_zurl(zurl)
            ),
            Error::NotServing { zurl, mountpoint } => write!(
                f,
                "no wcfsd serves {zurl} (nothing mounted at {}); start one with \
                 `wcfsd serve {zurl}`, or join with autostart",
                mountpoint.display(),
                zurl = shown(zurl)
            ),
            Error::Dead { zurl, mountpoint } => write!(
                f,
                "the wcfsd that served {zurl} at {} is gone (the mount answers \
                 ENOTCONN); join with autostart to start a new one, or clean up \
                 with `wcfsd stop {zurl}`",
                mountpoint.display(),
                zurl = shown(zurl)
            ),
            Error::Stuck {
                zurl,
                mountpoint,
                why,
            } => write!(
                f,
                "the wcfsd serving {zurl} at {} does not answer: {why}; \
                 `wcfsd stop {zurl}` kills it",
                mountpoint.display(),
                zurl = shown(zurl)
            ),
            Error::Unhealthy {
                zurl,
                mountpoint,
                why,
            } => write!(
                f,
                "the wcfsd serving {zurl} at {} is unhealthy: {why}",
                mountpoint.display(),
                zurl = shown(zurl)
            ),
            Error::Foreign {
                zurl,
                mountpoint,
                what,
            } => write!(
                f,
                "{} (the mountpoint of {zurl}) has {what} mounted on it, not a \
                 wcfsd serving {zurl}; not touching it",
                mountpoint.display(),
                zurl = shown(zurl)
            ),
            Error::OtherUser {
                zurl,
                mountpoint,
                uid,
            } => write!(
                f,
                "{zurl} is served at {} by the wcfsd of uid {uid}, whose mount only that \
                 user can use (it is not mounted allow_other); join as uid {uid}, or stop \
                 it (as that user or root) to serve it as yourself",
                mountpoint.display(),
                zurl = shown(zurl)
            ),
            Error::Unsafe { path, why } => write!(
                f,
                "refusing {}: it {why}; wcfs uses only what it created itself there \
                 (remove it, as its owner or root, if it is a leftover)",
                path.display()
            ),
            Error::AlreadyServed {
                zurl,
                mountpoint,
                pid,
            } => {
                write!(
                    f,
                    "{} is already served at {}",
                    shown(zurl),
                    mountpoint.display()
                )?;
                if let Some(pid) = pid {
                    write!(f, " by wcfsd pid {pid}")?;
                }
                Ok(())
            }
            Error::NoDaemonBinary { tried } => write!(
                f,
                "cannot find the wcfsd binary to start (tried {tried}); set \
                 $WCFS_WCFSD to its path"
            ),
            Error::StartFailed {
                zurl,
                why,
                log,
                log_tail,
                ..
            } => {
                write!(
                    f,
                    "starting wcfsd for {}: {why} (log: {})",
                    shown(zurl),
                    log.display()
                )?;
                if !log_tail.is_empty() {
                    write!(f, ":\n{log_tail}")?;
                }
                Ok(())
            }
            Error::LockTimeout { lock } => write!(
                f,
                "another process holds {} for too long (starting or stopping the \
                 daemon?)",
                lock.display()
            ),
            Error::Io { context, msg, .. } => write!(f, "{context}: {msg}"),
        }
    }
}

impl std::error::Error for Error {}
