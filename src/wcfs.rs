//! `Wcfs`: a joined or attached daemon.
//!
//! A thin handle: the mountpoint, and the Conns made through it so that
//! closing it takes them down (SPEC §8: closing a parent first is allowed,
//! the children then fail with `ENOTCONN` and their memory faults).
//!
//! While open, the handle keeps the mount's root directory open. A daemon
//! started by `join` runs with `-autoexit` and leaves once no client holds
//! anything open on it; a joined process that has not connected yet (or
//! between Conns) is still its client. The open directory also makes the
//! daemon's unmount-on-idle fail (it is the plain, not the lazy, unmount),
//! so once `attach` has it, the mount cannot vanish under us that way.

use crate::conn::ConnInner;
use crate::{fork, Conn, Error, Result, Tid};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

/// A wcfsd mount this process talks to. Cheap to clone (shared handle);
/// `close` releases it, after which its Conns fail with `ENOTCONN`.
#[derive(Clone)]
pub struct Wcfs {
    pub(crate) inner: Arc<WcfsInner>,
}

pub(crate) struct WcfsInner {
    pub(crate) mountpoint: PathBuf,
    gen: u64,
    st: Mutex<WcfsState>,
}

#[derive(Default)]
struct WcfsState {
    closed: bool,
    /// The mount's root directory, open until close (see the module docs).
    root: Option<std::fs::File>,
    conns: Vec<Weak<ConnInner>>,
}

impl WcfsInner {
    pub(crate) fn detached(&self) -> bool {
        self.gen != fork::generation()
    }
}

impl Wcfs {
    /// Finds the daemon serving `zurl` at its mountpoint
    /// (`wcfs_lifecycle::mountpoint_for`), starting `wcfsd` there when
    /// `autostart` is set and none serves (also over a dead mount).
    pub fn join(zurl: &str, autostart: bool) -> Result<Wcfs> {
        let join = || {
            let mnt = lifecycle::join(zurl, autostart)
                .map_err(|e| Error::new(e.errno(), format!("wcfs: join {zurl}: {e}")))?;
            Wcfs::attach(mnt)
        };
        match join() {
            // An idle autostarted daemon may unmount itself between the
            // lifecycle's health check and our attach: start it again, once.
            Err(_) if autostart => join(),
            r => r,
        }
    }

    /// Uses the daemon already mounted at `mountpoint`.
    pub fn attach(mountpoint: impl AsRef<Path>) -> Result<Wcfs> {
        let mountpoint = mountpoint.as_ref();
        let root = std::fs::File::open(mountpoint)
            .map_err(|e| Error::io(format!("wcfs: open {}", mountpoint.display()), e))?;
        let wc = Wcfs {
            inner: Arc::new(WcfsInner {
                mountpoint: mountpoint.to_path_buf(),
                gen: fork::generation(),
                st: Mutex::new(WcfsState {
                    root: Some(root),
                    ..WcfsState::default()
                }),
            }),
        };
        // A mount that serves answers head/at.
        wc.read_head_at()?;
        Ok(wc)
    }

    pub fn mountpoint(&self) -> &Path {
        &self.inner.mountpoint
    }

    fn check(&self) -> Result<()> {
        if self.inner.detached() {
            return Err(Error::not_connected(
                "wcfs: forked child: handle belongs to the parent",
            ));
        }
        if self.inner.st.lock().closed {
            return Err(Error::not_connected("wcfs: closed"));
        }
        Ok(())
    }

    fn read_head_at(&self) -> Result<Tid> {
        let p = self.inner.mountpoint.join("head/at");
        let s = std::fs::read_to_string(&p)
            .map_err(|e| Error::io(format!("wcfs: read {}", p.display()), e))?;
        s.trim().parse().map_err(|e| {
            Error::new(
                libc::EIO,
                format!("wcfs: {}: {s:?} is not a tid: {e}", p.display()),
            )
        })
    }

    /// The tid `head/` shows now.
    pub fn head_at(&self) -> Result<Tid> {
        self.check()?;
        self.read_head_at()
    }

    /// A view of the database as of `at`.
    pub fn connect(&self, at: Tid) -> Result<Conn> {
        self.check()?;
        let conn = ConnInner::connect(self.inner.clone(), at)?;
        let mut st = self.inner.st.lock();
        if st.closed {
            drop(st);
            conn.close(Error::not_connected("wcfs: closed"));
            return Err(Error::not_connected("wcfs: closed"));
        }
        st.conns.retain(|c| c.strong_count() > 0);
        st.conns.push(Arc::downgrade(&conn));
        Ok(Conn::from_inner(conn))
    }

    /// Releases the handle; its Conns go down. When it returns, nothing of
    /// the handle or its Conns refers to the mount any more (see
    /// `ConnInner::close`): no descriptor, no mapping, no pinner thread.
    pub fn close(&self) -> Result<()> {
        if self.inner.detached() {
            return Ok(());
        }
        let conns = {
            let mut st = self.inner.st.lock();
            if st.closed {
                return Err(Error::invalid("wcfs: already closed"));
            }
            st.closed = true;
            st.root = None;
            std::mem::take(&mut st.conns)
        };
        for c in conns.iter().filter_map(Weak::upgrade) {
            c.close(Error::not_connected("wcfs: closed (its WCFS was closed)"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Wcfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wcfs")
            .field("mountpoint", &self.inner.mountpoint)
            .finish_non_exhaustive()
    }
}
