//! ZODB's record format: class description + state, persistent references.
//!
//! A data record is two pickles back to back (see the docstring of
//! `ZODB/serialize.py`, which is the authority on the forms below):
//!
//! 1. the *class description*, enough to create an empty object (a ghost);
//! 2. the *state*, which Python would pass to `__setstate__`.
//!
//! ZODB writes both pickles with one pickler and reads them with one
//! unpickler, so they share a memo: the state may refer back to objects of
//! the class pickle (typically the class itself, when a BTree node's
//! children are of its own class). [`decode_record`] decodes them with one
//! [`pickle::Unpickler`] for that reason.
//!
//! Nothing may follow the state pickle: trailing bytes mean the record is not
//! what we think it is, so they are an error rather than ignored.
//!
//! # Class descriptions
//!
//! ZODB writes or has written these forms (numbers as in the docstring):
//!
//! | form | pickled as |
//! |---|---|
//! | 1 | the class: `GLOBAL` |
//! | 2, 6 | `(class, args)`: `__getnewargs__()` or the legacy `__getinitargs__()` |
//! | 5 | `(class, None)` |
//! | 3, 7, 4 | `((module, name), None)` or `((module, name), args)` (persistent classes, legacy) |
//!
//! We only need the class's name, so the arguments are checked for shape
//! (`None` or a tuple) and dropped. A class that is itself a persistent
//! object (a persistent reference instead of a `GLOBAL`) would need another
//! load to be named; it is refused with [`Error::BadClass`]. Module and
//! class names may be Python 2 `str` ([`Value::Bytes`]) in the tuple forms;
//! they must be UTF-8.
//!
//! # Persistent references
//!
//! Inside the state, a reference to another persistent object is a pickle
//! persistent id ([`Value::PersistentId`]) in one of these forms, all of
//! which [`persistent_ref`] understands:
//!
//! | form | meaning |
//! |---|---|
//! | `oid` | plain reference (classes with `__getnewargs__`) |
//! | `(oid, class)` | reference with the class cached; class as `GLOBAL` or `(module, name)` |
//! | `['w', (oid,)]`, `['w', (oid, db)]` | weak reference, optionally to another database |
//! | `['n', (db, oid)]` | cross-database plain reference |
//! | `['m', (db, oid, class)]` | cross-database reference with class |
//! | `[oid]` | legacy weak reference |
//!
//! Oids must be exactly 8 bytes. Python 2 wrote them as `str`, which we
//! already decode to bytes; Python 3 reading a Python 2 pickle as ASCII
//! yields text for all-ASCII oids, and ZODB accepts that, so ASCII
//! [`Value::Str`] oids are accepted too. The reference kind (`'w'`, …) and
//! database names may likewise be text or Python 2 bytes. A class in a
//! reference is only a hint for making ghosts, so `None` there (which old
//! ZODBs wrote) or a persistent class gives `class: None` instead of an
//! error.

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
    // One unpickler for both: the state may refer to the class pickle's memo.
    let mut u = pickle::Unpickler::new(data, 0)?;
    let meta = u.load()?;
    let class = class_description(&meta)?;
    let state = u.load()?;
    let end = u.pos();
    if end != data.len() {
        return Err(Error::Trailing(data.len() - end));
    }
    Ok(Record { class, state })
}

/// Decodes only the class description of a record (the first pickle).
pub fn decode_class(data: &Bytes) -> Result<ClassName, Error> {
    let (meta, _) = pickle::decode(data, 0)?;
    class_description(&meta)
}

/// The class named by a record's first pickle, in any documented form.
pub fn class_description(meta: &Value) -> Result<ClassName, Error> {
    let bad = |why: &str| Error::BadClass(format!("{why}: {}", short(meta)));
    match meta {
        Value::Global { module, name } => Ok(ClassName {
            module: module.clone(),
            name: name.clone(),
        }),
        Value::Tuple(t) => {
            let [cls, args] = t.as_slice() else {
                return Err(bad("tuple is not (class, args)"));
            };
            if !matches!(args, Value::None | Value::Tuple(_)) {
                return Err(bad("class arguments are neither None nor a tuple"));
            }
            match cls {
                Value::Global { module, name } => Ok(ClassName {
                    module: module.clone(),
                    name: name.clone(),
                }),
                Value::Tuple(_) => {
                    names_tuple(cls).ok_or_else(|| bad("(module, name) is not two strings"))
                }
                Value::PersistentId(_) => {
                    Err(bad("the class is a persistent object (unsupported)"))
                }
                _ => Err(bad("not a class")),
            }
        }
        Value::PersistentId(_) => Err(bad("the class is a persistent object (unsupported)")),
        _ => Err(bad("not a class")),
    }
}

/// Interprets a persistent id (`Value::PersistentId(pid)`'s inner value) in
/// any of the forms ZODB writes.
pub fn persistent_ref(pid: &Value) -> Result<PersistentRef, Error> {
    let bad = |why: &str| Error::BadRef(format!("{why}: {}", short(pid)));
    let plain = |oid: Oid, class, database, weak| PersistentRef {
        oid,
        class,
        database,
        weak,
    };
    match pid {
        Value::Bytes(_) | Value::Str(_) => Ok(plain(oid_of(pid)?, None, None, false)),
        Value::Tuple(t) => match t.as_slice() {
            [oid, class] => Ok(plain(oid_of(oid)?, ref_class(class)?, None, false)),
            _ => Err(bad("tuple reference is not (oid, class)")),
        },
        Value::List(l) => match l.as_slice() {
            [oid] => Ok(plain(oid_of(oid)?, None, None, true)),
            [kind, args] => {
                let kind = text(kind).ok_or_else(|| bad("reference type is not a string"))?;
                let args = args
                    .as_seq()
                    .ok_or_else(|| bad("reference arguments are not a tuple"))?;
                match (kind.as_str(), args) {
                    ("w", [oid]) => Ok(plain(oid_of(oid)?, None, None, true)),
                    ("w", [oid, db]) => Ok(plain(oid_of(oid)?, None, Some(db_name(db)?), true)),
                    ("n", [db, oid]) => Ok(plain(oid_of(oid)?, None, Some(db_name(db)?), false)),
                    ("m", [db, oid, class]) => Ok(plain(
                        oid_of(oid)?,
                        ref_class(class)?,
                        Some(db_name(db)?),
                        false,
                    )),
                    ("w" | "n" | "m", _) => Err(bad("wrong number of arguments")),
                    _ => Err(bad("unknown reference type")),
                }
            }
            _ => Err(bad("list reference of unknown form")),
        },
        _ => Err(bad("unknown form")),
    }
}

/// Text that Python 2 may have written as `str` (bytes) or `unicode`.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        _ => None,
    }
}

fn names_tuple(v: &Value) -> Option<ClassName> {
    match v.as_tuple()? {
        [m, n] => Some(ClassName {
            module: text(m)?,
            name: text(n)?,
        }),
        _ => None,
    }
}

fn oid_of(v: &Value) -> Result<Oid, Error> {
    let b: &[u8] = match v {
        Value::Bytes(b) => b,
        Value::Str(s) if s.is_ascii() => s.as_bytes(),
        _ => return Err(Error::BadRef(format!("oid is not bytes: {}", short(v)))),
    };
    if b.len() != 8 {
        return Err(Error::BadRef(format!("oid of {} bytes, not 8", b.len())));
    }
    Oid::from_slice(b).ok_or_else(|| Error::BadRef("oid of wrong length".into()))
}

fn db_name(v: &Value) -> Result<String, Error> {
    text(v).ok_or_else(|| Error::BadRef(format!("database name is not a string: {}", short(v))))
}

fn ref_class(v: &Value) -> Result<Option<ClassName>, Error> {
    match v {
        Value::Global { module, name } => Ok(Some(ClassName {
            module: module.clone(),
            name: name.clone(),
        })),
        Value::Tuple(_) => names_tuple(v)
            .map(Some)
            .ok_or_else(|| Error::BadRef(format!("class is not (module, name): {}", short(v)))),
        Value::None | Value::PersistentId(_) => Ok(None),
        _ => Err(Error::BadRef(format!("class is not a class: {}", short(v)))),
    }
}

/// A bounded rendering of a value for error messages: records can be
/// megabytes and hostile, so formatting stops early instead of rendering
/// everything and cutting afterwards.
fn short(v: &Value) -> String {
    use std::fmt::Write;
    struct Capped(String);
    impl Write for Capped {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if self.0.len() >= 200 {
                    return Err(std::fmt::Error);
                }
                self.0.push(c);
            }
            Ok(())
        }
    }
    let mut w = Capped(String::new());
    if write!(w, "{v:?}").is_err() {
        w.0.push('…');
    }
    w.0
}
