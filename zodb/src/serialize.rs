//! ZODB's record format: class description + state, persistent references.
//!
//! (Module prose to be written with the implementation.)

use crate::pickle::{self, Value};
use crate::types::Oid;
use bytes::Bytes;

/// A class named by module and name, e.g. `BTrees.LOBTree` / `LOBTree`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClassName {
    pub module: String,
    pub name: String,
}

impl std::fmt::Display for ClassName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// A reference from one persistent object to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentRef {
    pub oid: Oid,
    /// The referenced object's class, when the reference carries it.
    pub class: Option<ClassName>,
    /// The database name, for cross-database references.
    pub database: Option<String>,
    /// True for weak references (`['w', …]`, `[oid]`).
    pub weak: bool,
}

/// A decoded data record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub class: ClassName,
    /// The state pickle; persistent references in it are
    /// [`Value::PersistentId`] — see [`persistent_ref`].
    pub state: Value,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Pickle(#[from] pickle::Error),
    #[error("bad class description: {0}")]
    BadClass(String),
    #[error("bad persistent reference: {0}")]
    BadRef(String),
    #[error("{0} bytes of trailing garbage after the state pickle")]
    Trailing(usize),
}

/// Decodes a data record (two pickles back to back).
pub fn decode_record(data: &Bytes) -> Result<Record, Error> {
    let _ = (data, pickle::decode);
    todo!("decode_record")
}

/// Interprets a persistent id (`Value::PersistentId(pid)`'s inner value) in
/// any of the forms ZODB writes.
pub fn persistent_ref(pid: &Value) -> Result<PersistentRef, Error> {
    let _ = pid;
    todo!("persistent_ref")
}
