//! The decoded form of a pickle.

use bytes::Bytes;

/// A decoded pickle value.
///
/// This is the *data* a pickle describes, not Python objects: class
/// instantiation (`REDUCE`, `NEWOBJ`, `BUILD`, `INST`, `OBJ`) is kept as
/// structure for the layers above to interpret. Shared references (the memo)
/// are expanded into copies, so a value is a plain tree.
///
/// Two conversions happen during decoding because they are how byte strings
/// travel, not objects: `_codecs.encode(u'…', 'latin1')` (Python 3 writing
/// `bytes` at protocol ≤ 2) becomes [`Value::Bytes`], and so does
/// `__builtin__.bytes()` / `builtins.bytes()` with no arguments (empty bytes).
/// Python 2 `str` (`STRING`, `BINSTRING`, `SHORT_BINSTRING`) is
/// [`Value::Bytes`] too, which is how ZODB itself reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// An integer that does not fit in i64: little-endian two's complement,
    /// as `LONG1`/`LONG4` carry it.
    BigInt(Vec<u8>),
    Float(f64),
    Bytes(Bytes),
    /// Text (`unicode` in Python 2, `str` in Python 3).
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    FrozenSet(Vec<Value>),
    /// A reference to a global (class or function): `GLOBAL`, `STACK_GLOBAL`.
    Global {
        module: String,
        name: String,
    },
    /// A persistent id (`PERSID`, `BINPERSID`), as written. ZODB's reference
    /// forms are interpreted by [`crate::serialize`].
    PersistentId(Box<Value>),
    /// `callable(*args)`: `REDUCE`, and `INST`/`OBJ` (with a `Global` callable).
    Reduce {
        callable: Box<Value>,
        args: Box<Value>,
    },
    /// `cls.__new__(cls, *args, **kwargs)`: `NEWOBJ`, `NEWOBJ_EX`.
    NewObj {
        cls: Box<Value>,
        args: Box<Value>,
        kwargs: Option<Box<Value>>,
    },
    /// `obj.__setstate__(state)`: `BUILD`.
    Build {
        obj: Box<Value>,
        state: Box<Value>,
    },
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) => Some(v),
            _ => None,
        }
    }
    /// A tuple or a list: both occur where ZODB means "sequence".
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Global { .. } => "global",
            Value::PersistentId(_) => "persistent id",
            Value::Reduce { .. } => "reduce",
            Value::NewObj { .. } => "newobj",
            Value::Build { .. } => "build",
        }
    }
}
