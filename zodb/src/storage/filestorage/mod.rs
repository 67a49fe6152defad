//! FileStorage (`data.fs`, format FS21), read-only.
//!
//! (Module prose to be written with the driver.)

use super::{Error, Loaded, Storage, Watcher};
use crate::types::{Oid, Tid};
use std::path::Path;

/// A FileStorage opened read-only.
pub struct FileStorage {
    url: String,
}

impl FileStorage {
    /// Opens `path`; `url` is the zurl it was named by (kept for messages).
    pub fn open(path: &Path, url: &str) -> Result<FileStorage, Error> {
        let _ = path;
        Ok(FileStorage { url: url.to_string() })
    }
}

impl Storage for FileStorage {
    fn url(&self) -> &str {
        &self.url
    }
    fn load(&self, oid: Oid, at: Tid) -> Result<Loaded, Error> {
        let _ = (oid, at);
        todo!()
    }
    fn last_tid(&self) -> Result<Tid, Error> {
        todo!()
    }
    fn watch(&self, after: Tid) -> Result<Box<dyn Watcher>, Error> {
        let _ = after;
        todo!()
    }
}
