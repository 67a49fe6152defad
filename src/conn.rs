//! `Conn`: a view of the database as of `at`, its watch link and pinner.

use crate::{FileH, Oid, Result, Tid};

/// A view as of `at()`. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Conn {}

impl Conn {
    pub fn at(&self) -> Tid {
        todo!("libwcfs: Conn::at")
    }

    /// Moves the view forward to `at`; going back is an error that takes the
    /// Conn down.
    pub fn resync(&self, _at: Tid) -> Result<()> {
        todo!("libwcfs: Conn::resync")
    }

    /// Opens ZBigFile `foid` under this view.
    pub fn open(&self, _foid: Oid) -> Result<FileH> {
        todo!("libwcfs: Conn::open")
    }

    pub fn close(&self) -> Result<()> {
        todo!("libwcfs: Conn::close")
    }
}
