//! `Wcfs`: a joined or attached daemon.

use crate::{Conn, Result, Tid};
use std::path::Path;

/// A wcfsd mount this process talks to. Cheap to clone (shared handle);
/// `close` releases it, after which its Conns fail with `ENOTCONN`.
#[derive(Clone)]
pub struct Wcfs {}

impl Wcfs {
    /// Finds the daemon serving `zurl` at its mountpoint
    /// (`wcfs_lifecycle::mountpoint_for`), starting `wcfsd` there when
    /// `autostart` is set and none serves (also over a dead mount).
    pub fn join(_zurl: &str, _autostart: bool) -> Result<Wcfs> {
        todo!("libwcfs: join")
    }

    /// Uses the daemon already mounted at `mountpoint`.
    pub fn attach(_mountpoint: impl AsRef<Path>) -> Result<Wcfs> {
        todo!("libwcfs: attach")
    }

    pub fn mountpoint(&self) -> &Path {
        todo!("libwcfs: mountpoint")
    }

    /// The tid `head/` shows now.
    pub fn head_at(&self) -> Result<Tid> {
        todo!("libwcfs: head_at")
    }

    /// A view of the database as of `at`.
    pub fn connect(&self, _at: Tid) -> Result<Conn> {
        todo!("libwcfs: connect")
    }

    pub fn close(&self) -> Result<()> {
        todo!("libwcfs: close")
    }
}
