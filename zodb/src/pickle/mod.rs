//! Pickle decoding.
//!
//! ZODB stores every object as pickles, written over the years by Python 2
//! (protocols 0–2) and Python 3 (protocols 2–5). This module turns one pickle
//! into a [`Value`]: the *data* the pickle describes, never Python objects.
//! Nothing is imported or called; class instantiation is kept as structure
//! (`Reduce`, `NewObj`, `Build`) for the layers above to interpret.
//!
//! # Design
//!
//! A pickle is a program for a stack machine whose memo lets later opcodes
//! refer to earlier objects *and mutate them*: Python pickles a list as
//! "create empty list, memoize it, append the items", so a list referenced
//! twice must be seen filled both times, and a list may even contain itself.
//! To get these semantics exactly, decoding runs in two phases:
//!
//! 1. The opcodes are executed against an arena of nodes. The stack and the
//!    memo hold node indices; `APPEND`, `SETITEMS`, `ADDITEMS` and `BUILD`
//!    mutate nodes in place, so every reference sees the mutation, as in
//!    Python. Executing an opcode adds at most one node, so the arena is
//!    bounded by the pickle's length.
//! 2. At `STOP`, the node on top of the stack is expanded into an owned
//!    [`Value`] tree: shared references become copies.
//!
//! # Limits
//!
//! The input may be hostile (a corrupt or crafted database). Hence:
//!
//! - every length field is checked against the bytes that remain before
//!   anything is allocated, and all arithmetic on input-derived numbers is
//!   checked, so a length of 2⁶⁴−1 is a `Truncated` error, not an abort;
//! - phase 1 is a loop, not recursion, so opcode nesting costs no stack;
//! - phase 2 refuses values nested deeper than [`MAX_DEPTH`]. That bounds the
//!   recursion of the expansion and of the `Drop` of the result, and it is
//!   also how cycles made through the memo (a list that contains itself) are
//!   refused: a tree cannot represent them;
//! - phase 2 refuses to produce more than `16 × pickle length + 4096` nodes
//!   or to copy more than `32 × pickle length + 1 MiB` bytes of text, so
//!   the memo cannot be used to make a small pickle expand exponentially
//!   ("billion laughs": a list of two references to a list of two references
//!   to …);
//! - decimal integers longer than 4300 digits are refused, as Python 3.11
//!   does, because converting them is quadratic.
//!
//! Byte strings are zero-copy slices of the input buffer, so a record
//! holding a 2 MiB block costs no copy of the block.
//!
//! # What maps to what
//!
//! - `None`/`True`/`False`, ints (`INT`, `BININT*`, `LONG*`; `I01`/`I00`
//!   are the booleans Python 2 wrote at protocol 0): [`Value::None`],
//!   [`Value::Bool`], [`Value::Int`] when the value fits in i64, else
//!   [`Value::BigInt`] (minimal little-endian two's complement);
//! - floats (`FLOAT` text, `BINFLOAT`): [`Value::Float`];
//! - byte strings — `BINBYTES*`, `SHORT_BINBYTES`, `BYTEARRAY8`, and Python 2
//!   `str` (`STRING` with its repr escapes, `BINSTRING`, `SHORT_BINSTRING`)
//!   — are [`Value::Bytes`]. So are the two call forms Python 3 uses for
//!   `bytes` at protocol ≤ 2: `_codecs.encode(u'…', 'latin1')` (any
//!   spelling of latin-1 that Python's codec registry accepts; characters
//!   above U+00FF are an error, as in Python) and `bytes()` with no
//!   arguments (from `builtins` or Python 2's `__builtin__`);
//! - text (`UNICODE` raw-unicode-escape, `BINUNICODE*`): [`Value::Str`].
//!   Python tolerates lone surrogates in text, Rust strings cannot hold them:
//!   they are an error (a surrogate pair written as two `\u` escapes, as
//!   narrow Python 2 builds did, is combined);
//! - tuples, lists, dicts, sets, frozensets: the matching variants, in the
//!   pickle's order. Dict keys and set items are not deduplicated: Python
//!   never writes duplicates and equality of Python values is not ours to
//!   emulate;
//! - `GLOBAL`/`STACK_GLOBAL`: [`Value::Global`], names as written (no
//!   Python 2 → 3 renaming);
//! - `PERSID`/`BINPERSID`: [`Value::PersistentId`] (the text form is a
//!   [`Value::Str`]);
//! - `REDUCE`, `INST`, `OBJ`: [`Value::Reduce`] (for `INST` the callable is
//!   the `Global`, for both the arguments are a tuple); `NEWOBJ`,
//!   `NEWOBJ_EX`: [`Value::NewObj`]; `BUILD`: [`Value::Build`], which
//!   *replaces* the object in place so that memo references to it see the
//!   state, as Python's in-place `__setstate__` would;
//! - the extension registry (`EXT1/2/4`) and out-of-band buffers
//!   (`NEXT_BUFFER`, `READONLY_BUFFER`) need context a database record does
//!   not have: [`Error::Unsupported`]. So are `APPEND(S)`, `SETITEM(S)` and
//!   `ADDITEMS` on something other than a list, dict or set (Python would
//!   call the object's methods; a tree of data cannot say that).

mod value;
pub use value::Value;

use bytes::Bytes;
use std::collections::HashMap;

/// Values nested deeper than this are refused.
pub const MAX_DEPTH: usize = 256;

/// Longest decimal integer accepted (Python 3.11's default limit).
const MAX_DECIMAL_DIGITS: usize = 4300;

/// The highest pickle protocol there is.
const HIGHEST_PROTOCOL: u8 = 5;

/// Why a pickle could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("pickle: truncated at byte {pos}")]
    Truncated { pos: usize },
    #[error("pickle: invalid opcode 0x{op:02x} at byte {pos}")]
    BadOpcode { op: u8, pos: usize },
    #[error("pickle: at byte {pos}: {why}")]
    Invalid { pos: usize, why: String },
    #[error("pickle: at byte {pos}: unsupported: {what}")]
    Unsupported { pos: usize, what: String },
    #[error("pickle: too large or too deep: {why}")]
    Limit { why: String },
}

/// Decodes the pickle that starts at `buf[start..]`.
///
/// Returns the value and the position just after its STOP opcode. Byte
/// strings in the result are zero-copy slices of `buf`. For the two pickles
/// of a ZODB record, which share a memo, use [`Unpickler`] (or
/// [`crate::serialize::decode_record`]).
pub fn decode(buf: &Bytes, start: usize) -> Result<(Value, usize), Error> {
    let mut u = Unpickler::new(buf, start)?;
    let v = u.load()?;
    Ok((v, u.pos()))
}

/// One object under construction. Containers refer to other nodes by index
/// so that mutation through the memo is seen by every referrer.
enum Node {
    /// Anything that contains no other node.
    Leaf(Value),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    FrozenSet(Vec<usize>),
    PersistentId(usize),
    Reduce(usize, usize),
    NewObj(usize, usize, Option<usize>),
    Build(usize, usize),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Leaf(v) => v.kind(),
            Node::Tuple(_) => "tuple",
            Node::List(_) => "list",
            Node::Dict(_) => "dict",
            Node::Set(_) => "set",
            Node::FrozenSet(_) => "frozenset",
            Node::PersistentId(_) => "persistent id",
            Node::Reduce(..) => "reduce",
            Node::NewObj(..) => "newobj",
            Node::Build(..) => "build",
        }
    }
}

/// Decodes consecutive pickles that share one memo.
///
/// ZODB writes both halves of a record with one pickler and reads them with
/// one unpickler, so the state pickle may refer to memo entries of the class
/// pickle (`BINGET 0` for the class of a child of the same class). As in
/// Python's `Unpickler.load`, each [`Unpickler::load`] starts with an empty
/// stack but keeps the memo.
pub struct Unpickler<'a> {
    buf: &'a Bytes,
    /// Where the first pickle starts: the expansion budget of a pickle
    /// counts everything read so far, since it may expand earlier memo
    /// entries.
    start: usize,
    pos: usize,
    /// Start of the opcode being executed, for error messages.
    op_pos: usize,
    nodes: Vec<Node>,
    stack: Vec<usize>,
    /// Stack lengths at each open MARK. Python's unpickler isolates the
    /// items above a mark: nothing may pop below it, which we mirror.
    marks: Vec<usize>,
    memo: HashMap<u64, usize>,
}

type R<T> = Result<T, Error>;

impl<'a> Unpickler<'a> {
    /// An unpickler reading from `buf[start..]`.
    pub fn new(buf: &'a Bytes, start: usize) -> Result<Self, Error> {
        if start > buf.len() {
            return Err(Error::Truncated { pos: start });
        }
        Ok(Unpickler {
            buf,
            start,
            pos: start,
            op_pos: start,
            nodes: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        })
    }

    /// Decodes the next pickle; afterwards [`Unpickler::pos`] is just past
    /// its STOP.
    pub fn load(&mut self) -> Result<Value, Error> {
        self.stack.clear();
        self.marks.clear();
        let root = self.run()?;
        self.expand(root, self.pos - self.start)
    }

    /// The position in the buffer where the next pickle would start.
    pub fn pos(&self) -> usize {
        self.pos
    }

    // ---- errors ----

    fn invalid(&self, why: impl Into<String>) -> Error {
        Error::Invalid {
            pos: self.op_pos,
            why: why.into(),
        }
    }

    fn unsupported(&self, what: impl Into<String>) -> Error {
        Error::Unsupported {
            pos: self.op_pos,
            what: what.into(),
        }
    }

    // ---- reading the input ----

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> R<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(Error::Truncated { pos: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `n` bytes as a range of the input; `n` comes from the input,
    /// so it is checked before anything relies on it.
    fn take_range(&mut self, n: u64) -> R<(usize, usize)> {
        let n = usize::try_from(n).map_err(|_| Error::Truncated { pos: self.pos })?;
        if n > self.remaining() {
            return Err(Error::Truncated {
                pos: self.buf.len(),
            });
        }
        let a = self.pos;
        self.pos += n;
        Ok((a, a + n))
    }

    fn take(&mut self, n: u64) -> R<&'a [u8]> {
        let (a, b) = self.take_range(n)?;
        let buf: &'a Bytes = self.buf;
        Ok(&buf[a..b])
    }

    fn take_array<const N: usize>(&mut self) -> R<[u8; N]> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32le(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn u64le(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// A signed 4-byte length (`BINSTRING`, `LONG4`): negative is corrupt.
    fn i32len(&mut self) -> R<u64> {
        let n = i32::from_le_bytes(self.take_array()?);
        u64::try_from(n).map_err(|_| self.invalid("negative length"))
    }

    /// A newline-terminated argument, without the newline.
    fn line(&mut self) -> R<&'a [u8]> {
        let buf: &'a Bytes = self.buf;
        let rest = &buf[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Error::Truncated { pos: buf.len() })?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    fn utf8_line(&mut self) -> R<String> {
        let l = self.line()?;
        match std::str::from_utf8(l) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.invalid("name is not UTF-8")),
        }
    }

    fn utf8(&self, b: &[u8]) -> R<Value> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(s.to_owned())),
            Err(_) => Err(self.invalid("text is not valid UTF-8 (or holds surrogates)")),
        }
    }

    fn bytes_slice(&mut self, n: u64) -> R<Value> {
        let (a, b) = self.take_range(n)?;
        Ok(Value::Bytes(self.buf.slice(a..b)))
    }

    // ---- the stack ----

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn add(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn push(&mut self, n: Node) {
        let i = self.add(n);
        self.stack.push(i);
    }

    fn push_leaf(&mut self, v: Value) {
        self.push(Node::Leaf(v))
    }

    fn pop(&mut self) -> R<usize> {
        if self.stack.len() <= self.fence() {
            return Err(self.invalid("stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.invalid("stack underflow"))
    }

    fn top(&self) -> R<usize> {
        if self.stack.len() <= self.fence() {
            return Err(self.invalid("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.invalid("stack underflow"))
    }

    /// Removes the innermost MARK and returns the items above it.
    fn pop_mark(&mut self) -> R<Vec<usize>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.invalid("no MARK on the stack"))?;
        Ok(self.stack.split_off(m))
    }

    /// For `APPENDS`/`SETITEMS`/`ADDITEMS`: the items above the mark and the
    /// target just below it, which must lie above the enclosing mark.
    fn pop_mark_with_target(&mut self) -> R<(usize, Vec<usize>)> {
        let items = self.pop_mark()?;
        let target = self.top()?;
        Ok((target, items))
    }

    fn is_tuple(&self, i: usize) -> bool {
        matches!(self.nodes[i], Node::Tuple(_))
    }

    // ---- execution ----

    fn run(&mut self) -> R<usize> {
        loop {
            self.op_pos = self.pos;
            let op = self.byte()?;
            match op {
                b'.' => return self.pop(), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    // POP: with nothing above the mark, Python drops the mark.
                    if self.stack.len() > self.fence() {
                        self.pop()?;
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.stack.push(t);
                }
                b'N' => self.push_leaf(Value::None),
                0x88 => self.push_leaf(Value::Bool(true)),
                0x89 => self.push_leaf(Value::Bool(false)),
                b'I' => {
                    let l = self.line()?;
                    let v = match l {
                        b"00" => Value::Bool(false),
                        b"01" => Value::Bool(true),
                        _ => self.decimal(l)?,
                    };
                    self.push_leaf(v)
                }
                b'L' => {
                    let l = self.line()?;
                    let l = l.strip_suffix(b"L").unwrap_or(l);
                    let v = self.decimal(l)?;
                    self.push_leaf(v)
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push_leaf(Value::Int(v.into()))
                }
                b'K' => {
                    let v = self.byte()?;
                    self.push_leaf(Value::Int(v.into()))
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.push_leaf(Value::Int(v.into()))
                }
                0x8a => {
                    let n = self.byte()?;
                    let b = self.take(n.into())?;
                    self.push_leaf(int_from_le(b))
                }
                0x8b => {
                    let n = self.i32len()?;
                    let b = self.take(n)?;
                    self.push_leaf(int_from_le(b))
                }
                b'F' => {
                    let l = self.line()?;
                    let f = std::str::from_utf8(l)
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .ok_or_else(|| self.invalid("bad FLOAT"))?;
                    self.push_leaf(Value::Float(f))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take_array()?);
                    self.push_leaf(Value::Float(v))
                }
                b'S' => {
                    let l = self.line()?;
                    let v = self.string_repr(l)?;
                    self.push_leaf(v)
                }
                b'T' => {
                    let n = self.i32len()?;
                    let v = self.bytes_slice(n)?;
                    self.push_leaf(v)
                }
                b'U' | b'C' => {
                    let n = self.byte()?;
                    let v = self.bytes_slice(n.into())?;
                    self.push_leaf(v)
                }
                b'B' => {
                    let n = self.u32le()?;
                    let v = self.bytes_slice(n.into())?;
                    self.push_leaf(v)
                }
                0x8e | 0x96 => {
                    // BINBYTES8, BYTEARRAY8
                    let n = self.u64le()?;
                    let v = self.bytes_slice(n)?;
                    self.push_leaf(v)
                }
                b'V' => {
                    let l = self.line()?;
                    let s = raw_unicode_escape(l).map_err(|why| self.invalid(why))?;
                    self.push_leaf(Value::Str(s))
                }
                b'X' => {
                    let n = self.u32le()?;
                    let b = self.take(n.into())?;
                    let v = self.utf8(b)?;
                    self.push_leaf(v)
                }
                0x8c => {
                    let n = self.byte()?;
                    let b = self.take(n.into())?;
                    let v = self.utf8(b)?;
                    self.push_leaf(v)
                }
                0x8d => {
                    let n = self.u64le()?;
                    let b = self.take(n)?;
                    let v = self.utf8(b)?;
                    self.push_leaf(v)
                }
                b')' => self.push(Node::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < self.fence() + n {
                        return Err(self.invalid("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Node::Tuple(items))
                }
                b']' => self.push(Node::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))
                }
                b'}' => self.push(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Node::Dict(pairs))
                }
                0x8f => self.push(Node::Set(Vec::new())),
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::FrozenSet(items))
                }
                b'a' => {
                    let v = self.pop()?;
                    let l = self.top()?;
                    self.extend_list(l, vec![v])?
                }
                b'e' => {
                    let (l, items) = self.pop_mark_with_target()?;
                    self.extend_list(l, items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.extend_dict(d, vec![(k, v)])?
                }
                b'u' => {
                    let (d, items) = self.pop_mark_with_target()?;
                    let pairs = self.pairs(items)?;
                    self.extend_dict(d, pairs)?
                }
                0x90 => {
                    let (s, items) = self.pop_mark_with_target()?;
                    if !items.is_empty() {
                        match &mut self.nodes[s] {
                            Node::Set(v) => v.extend(items),
                            n => {
                                let k = n.kind();
                                return Err(self.unsupported(format!("ADDITEMS to a {k}")));
                            }
                        }
                    }
                }
                b'p' => {
                    let l = self.line()?;
                    let k = self.memo_key(l)?;
                    self.memo_put(k)?
                }
                b'q' => {
                    let k = self.byte()?;
                    self.memo_put(k.into())?
                }
                b'r' => {
                    let k = self.u32le()?;
                    self.memo_put(k.into())?
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                b'g' => {
                    let l = self.line()?;
                    let k = self.memo_key(l)?;
                    self.memo_get(k)?
                }
                b'h' => {
                    let k = self.byte()?;
                    self.memo_get(k.into())?
                }
                b'j' => {
                    let k = self.u32le()?;
                    self.memo_get(k.into())?
                }
                b'c' => {
                    let module = self.utf8_line()?;
                    let name = self.utf8_line()?;
                    self.push_leaf(Value::Global { module, name })
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (module, name) = match (&self.nodes[module], &self.nodes[name]) {
                        (Node::Leaf(Value::Str(m)), Node::Leaf(Value::Str(n))) => {
                            (m.clone(), n.clone())
                        }
                        _ => return Err(self.invalid("STACK_GLOBAL requires two str")),
                    };
                    self.push_leaf(Value::Global { module, name })
                }
                b'P' => {
                    let l = self.line()?;
                    if !l.is_ascii() {
                        return Err(self.invalid("PERSID must be ASCII"));
                    }
                    let v = self.utf8(l)?;
                    let i = self.add(Node::Leaf(v));
                    self.push(Node::PersistentId(i))
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Node::PersistentId(pid))
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    if !self.is_tuple(args) {
                        return Err(self.invalid("REDUCE arguments are not a tuple"));
                    }
                    let n = self.reduce(callable, args)?;
                    self.push(n)
                }
                b'i' => {
                    let module = self.utf8_line()?;
                    let name = self.utf8_line()?;
                    let items = self.pop_mark()?;
                    let g = self.add(Node::Leaf(Value::Global { module, name }));
                    let args = self.add(Node::Tuple(items));
                    self.push(Node::Reduce(g, args))
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err(self.invalid("OBJ without a class"));
                    }
                    let cls = items.remove(0);
                    let args = self.add(Node::Tuple(items));
                    self.push(Node::Reduce(cls, args))
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    if !self.is_tuple(args) {
                        return Err(self.invalid("NEWOBJ arguments are not a tuple"));
                    }
                    self.push(Node::NewObj(cls, args, None))
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    if !self.is_tuple(args) {
                        return Err(self.invalid("NEWOBJ_EX arguments are not a tuple"));
                    }
                    if !matches!(self.nodes[kwargs], Node::Dict(_)) {
                        return Err(self.invalid("NEWOBJ_EX keyword arguments are not a dict"));
                    }
                    self.push(Node::NewObj(cls, args, Some(kwargs)))
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.top()?;
                    // In place, so that memo references see the built object.
                    let moved = std::mem::replace(&mut self.nodes[obj], Node::Leaf(Value::None));
                    let moved = self.add(moved);
                    self.nodes[obj] = Node::Build(moved, state);
                }
                0x80 => {
                    let p = self.byte()?;
                    if p > HIGHEST_PROTOCOL {
                        return Err(self.invalid(format!("unsupported protocol {p}")));
                    }
                }
                0x95 => {
                    // FRAME is only a read-ahead hint, but a frame longer
                    // than the input means the pickle was cut short.
                    let n = self.u64le()?;
                    if n > self.remaining() as u64 {
                        return Err(Error::Truncated {
                            pos: self.buf.len(),
                        });
                    }
                }
                0x82..=0x84 => return Err(self.unsupported("extension registry (EXT1/2/4)")),
                0x97 | 0x98 => return Err(self.unsupported("out-of-band buffers")),
                _ => {
                    return Err(Error::BadOpcode {
                        op,
                        pos: self.op_pos,
                    })
                }
            }
        }
    }

    fn pairs(&self, items: Vec<usize>) -> R<Vec<(usize, usize)>> {
        if items.len() & 1 != 0 {
            return Err(self.invalid("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    fn extend_list(&mut self, l: usize, items: Vec<usize>) -> R<()> {
        if items.is_empty() {
            return Ok(()); // Python does not even look at the target then.
        }
        match &mut self.nodes[l] {
            Node::List(v) => {
                v.extend(items);
                Ok(())
            }
            n => {
                let k = n.kind();
                Err(self.unsupported(format!("appending to a {k}")))
            }
        }
    }

    fn extend_dict(&mut self, d: usize, pairs: Vec<(usize, usize)>) -> R<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        match &mut self.nodes[d] {
            Node::Dict(v) => {
                v.extend(pairs);
                Ok(())
            }
            n => {
                let k = n.kind();
                Err(self.unsupported(format!("setting items of a {k}")))
            }
        }
    }

    fn memo_key(&self, l: &[u8]) -> R<u64> {
        std::str::from_utf8(l)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| self.invalid("bad memo key"))
    }

    fn memo_put(&mut self, k: u64) -> R<()> {
        let t = self.top()?;
        self.memo.insert(k, t);
        Ok(())
    }

    fn memo_get(&mut self, k: u64) -> R<()> {
        let i = *self
            .memo
            .get(&k)
            .ok_or_else(|| self.invalid(format!("memo key {k} not found")))?;
        self.stack.push(i);
        Ok(())
    }

    /// `REDUCE`, with the two call forms that are really byte strings
    /// turned into bytes.
    fn reduce(&self, callable: usize, args: usize) -> R<Node> {
        let plain = Node::Reduce(callable, args);
        let Node::Leaf(Value::Global { module, name }) = &self.nodes[callable] else {
            return Ok(plain);
        };
        let Node::Tuple(a) = &self.nodes[args] else {
            return Ok(plain);
        };
        match (module.as_str(), name.as_str(), a.as_slice()) {
            ("builtins" | "__builtin__", "bytes", []) => Ok(Node::Leaf(Value::Bytes(Bytes::new()))),
            ("_codecs", "encode", [s, enc]) => {
                let (Node::Leaf(Value::Str(s)), Node::Leaf(Value::Str(enc))) =
                    (&self.nodes[*s], &self.nodes[*enc])
                else {
                    return Ok(plain);
                };
                if !is_latin1(enc) {
                    return Ok(plain);
                }
                let mut out = Vec::with_capacity(s.len());
                for c in s.chars() {
                    let b = u8::try_from(u32::from(c)).map_err(|_| {
                        self.invalid(format!("_codecs.encode: {c:?} is not latin-1"))
                    })?;
                    out.push(b);
                }
                Ok(Node::Leaf(Value::Bytes(Bytes::from(out))))
            }
            _ => Ok(plain),
        }
    }

    /// A decimal integer as `INT`/`LONG` write it.
    fn decimal(&self, l: &[u8]) -> R<Value> {
        let (neg, digits) = match l.first() {
            Some(b'-') => (true, &l[1..]),
            Some(b'+') => (false, &l[1..]),
            _ => (false, l),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(self.invalid("bad integer"));
        }
        // Python 3 reads these with base 0, where a leading zero would mean
        // octal in C and an error in Python; nothing writes them.
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(self.invalid("integer with leading zero"));
        }
        if digits.len() > MAX_DECIMAL_DIGITS {
            return Err(Error::Limit {
                why: format!("integer of {} digits", digits.len()),
            });
        }
        // Magnitude, little-endian base 256.
        let mut mag: Vec<u8> = Vec::new();
        for &d in digits {
            let mut carry = u32::from(d - b'0');
            for b in mag.iter_mut() {
                let v = u32::from(*b) * 10 + carry;
                *b = (v & 0xff) as u8;
                carry = v >> 8;
            }
            if carry != 0 {
                mag.push(carry as u8);
            }
        }
        // Two's complement: one spare byte keeps the sign bit free.
        mag.push(0);
        if neg {
            let mut carry = 1u16;
            for b in mag.iter_mut() {
                let v = u16::from(!*b) + carry;
                *b = (v & 0xff) as u8;
                carry = v >> 8;
            }
        }
        Ok(int_from_le(&mag))
    }

    /// Python 2 `STRING`: a quoted repr with backslash escapes.
    fn string_repr(&self, l: &[u8]) -> R<Value> {
        let inner = match l {
            [q @ (b'\'' | b'"'), inner @ .., e] if e == q => inner,
            _ => return Err(self.invalid("STRING argument is not quoted")),
        };
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            let c = inner[i];
            i += 1;
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let Some(&e) = inner.get(i) else {
                return Err(self.invalid("trailing \\ in STRING"));
            };
            i += 1;
            match e {
                b'\\' | b'\'' | b'"' => out.push(e),
                b'a' => out.push(7),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(11),
                b'0'..=b'7' => {
                    let mut v = u32::from(e - b'0');
                    for _ in 0..2 {
                        match inner.get(i) {
                            Some(&d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    // Python keeps the low byte of \400..\777.
                    out.push((v & 0xff) as u8);
                }
                b'x' => {
                    let h = inner.get(i..i + 2).and_then(hex_byte);
                    let Some(h) = h else {
                        return Err(self.invalid("bad \\x escape in STRING"));
                    };
                    out.push(h);
                    i += 2;
                }
                // Unknown escapes stay as written, as in Python.
                _ => out.extend_from_slice(&[b'\\', e]),
            }
        }
        Ok(Value::Bytes(Bytes::from(out)))
    }

    // ---- expansion into a tree ----

    fn expand(&self, root: usize, pickle_len: usize) -> R<Value> {
        let mut budget = Budget {
            nodes: pickle_len.saturating_mul(16).saturating_add(4096),
            bytes: pickle_len.saturating_mul(32).saturating_add(1 << 20),
        };
        self.value(root, 0, &mut budget)
    }

    fn value(&self, i: usize, depth: usize, b: &mut Budget) -> R<Value> {
        if depth > MAX_DEPTH {
            return Err(Error::Limit {
                why: format!("nested deeper than {MAX_DEPTH} (or a cycle through the memo)"),
            });
        }
        b.nodes = b.nodes.checked_sub(1).ok_or_else(|| Error::Limit {
            why: "too many values (shared references expand too much)".into(),
        })?;
        let d = depth + 1;
        let seq = |v: &[usize], b: &mut Budget| -> R<Vec<Value>> {
            // Each item costs at least one node, so the budget check above
            // bounds this allocation too.
            if v.len() > b.nodes {
                return Err(Error::Limit {
                    why: "too many values".into(),
                });
            }
            v.iter().map(|&j| self.value(j, d, b)).collect()
        };
        let boxed =
            |j: usize, b: &mut Budget| -> R<Box<Value>> { Ok(Box::new(self.value(j, d, b)?)) };
        Ok(match &self.nodes[i] {
            Node::Leaf(v) => {
                let copied = match v {
                    Value::Str(s) => s.len(),
                    Value::BigInt(x) => x.len(),
                    Value::Global { module, name } => module.len() + name.len(),
                    _ => 0,
                };
                b.bytes = b.bytes.checked_sub(copied).ok_or_else(|| Error::Limit {
                    why: "too much text (shared references expand too much)".into(),
                })?;
                v.clone()
            }
            Node::Tuple(v) => Value::Tuple(seq(v, b)?),
            Node::List(v) => Value::List(seq(v, b)?),
            Node::Set(v) => Value::Set(seq(v, b)?),
            Node::FrozenSet(v) => Value::FrozenSet(seq(v, b)?),
            Node::Dict(v) => {
                if v.len() > b.nodes {
                    return Err(Error::Limit {
                        why: "too many values".into(),
                    });
                }
                let mut out = Vec::with_capacity(v.len());
                for &(k, x) in v {
                    out.push((self.value(k, d, b)?, self.value(x, d, b)?));
                }
                Value::Dict(out)
            }
            Node::PersistentId(j) => Value::PersistentId(boxed(*j, b)?),
            Node::Reduce(c, a) => Value::Reduce {
                callable: boxed(*c, b)?,
                args: boxed(*a, b)?,
            },
            Node::NewObj(c, a, k) => Value::NewObj {
                cls: boxed(*c, b)?,
                args: boxed(*a, b)?,
                kwargs: match k {
                    Some(k) => Some(boxed(*k, b)?),
                    None => None,
                },
            },
            Node::Build(o, s) => Value::Build {
                obj: boxed(*o, b)?,
                state: boxed(*s, b)?,
            },
        })
    }
}

struct Budget {
    nodes: usize,
    bytes: usize,
}

/// An integer from little-endian two's complement, as `LONG1`/`LONG4`
/// carry it: `Int` when it fits, else the minimal `BigInt`.
fn int_from_le(b: &[u8]) -> Value {
    let mut n = b.len();
    // Drop sign-extension bytes that carry no information.
    while n > 1 {
        let (last, prev) = (b[n - 1], b[n - 2]);
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    let b = &b[..n];
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() <= 8 {
        let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(b);
        return Value::Int(i64::from_le_bytes(a));
    }
    Value::BigInt(b.to_vec())
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn hex_byte(h: &[u8]) -> Option<u8> {
    Some(hex_digit(h[0])? << 4 | hex_digit(*h.get(1)?)?)
}

/// Whether Python's codec registry resolves `enc` to latin-1: it lowercases
/// the name, turns runs of punctuation into `_`, then looks up aliases.
fn is_latin1(enc: &str) -> bool {
    let mut norm = String::with_capacity(enc.len());
    let mut gap = false;
    for c in enc.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            if gap && !norm.is_empty() {
                norm.push('_');
            }
            gap = false;
            norm.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    let norm = norm.replace('.', "_");
    matches!(
        norm.as_str(),
        "latin_1"
            | "latin1"
            | "latin"
            | "l1"
            | "8859"
            | "cp819"
            | "csisolatin1"
            | "ibm819"
            | "iso8859"
            | "iso8859_1"
            | "iso_8859_1"
            | "iso_8859_1_1987"
            | "iso_ir_100"
    )
}

/// Python's `raw-unicode-escape` decoding (`UNICODE` opcode): bytes are
/// latin-1 characters, except that `\uXXXX` and `\UXXXXXXXX` after an odd
/// number of backslashes are escapes.
fn raw_unicode_escape(l: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(l.len());
    let mut pending_high: Option<u32> = None;
    let mut i = 0;
    let flush = |out: &mut String, p: &mut Option<u32>| -> Result<(), String> {
        match p.take() {
            Some(h) => Err(format!("lone surrogate U+{h:04X}")),
            None => {
                let _ = out;
                Ok(())
            }
        }
    };
    while i < l.len() {
        if l[i] != b'\\' {
            flush(&mut out, &mut pending_high)?;
            out.push(char::from(l[i]));
            i += 1;
            continue;
        }
        let run_start = i;
        while i < l.len() && l[i] == b'\\' {
            i += 1;
        }
        let run = i - run_start;
        let esc = (run % 2 == 1).then(|| l.get(i)).flatten();
        let width = match esc {
            Some(b'u') => 4,
            Some(b'U') => 8,
            _ => 0,
        };
        if width == 0 {
            flush(&mut out, &mut pending_high)?;
            out.push_str(&"\\".repeat(run));
            continue;
        }
        if run > 1 {
            flush(&mut out, &mut pending_high)?;
            out.push_str(&"\\".repeat(run - 1));
        }
        i += 1;
        let hex = l.get(i..i + width).ok_or("truncated \\u escape")?;
        let mut cp: u32 = 0;
        for &h in hex {
            cp = cp * 16 + u32::from(hex_digit(h).ok_or("truncated \\u escape")?);
        }
        i += width;
        match (pending_high.take(), cp) {
            (Some(h), 0xDC00..=0xDFFF) => {
                let c = 0x10000 + ((h - 0xD800) << 10) + (cp - 0xDC00);
                out.push(char::from_u32(c).ok_or("bad surrogate pair")?);
            }
            (Some(h), _) => return Err(format!("lone surrogate U+{h:04X}")),
            (None, 0xD800..=0xDBFF) => pending_high = Some(cp),
            (None, _) => {
                let c = char::from_u32(cp)
                    .ok_or_else(|| format!("\\U{cp:08x} out of range or a lone surrogate"))?;
                out.push(c);
            }
        }
    }
    flush(&mut out, &mut pending_high)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: &[u8]) -> Result<Value, Error> {
        decode(&Bytes::copy_from_slice(b), 0).map(|(v, _)| v)
    }

    #[test]
    fn basics() {
        assert_eq!(d(b"I01\n.").unwrap(), Value::Bool(true));
        assert_eq!(d(b"I00\n.").unwrap(), Value::Bool(false));
        assert_eq!(d(b"I-12\n.").unwrap(), Value::Int(-12));
        assert_eq!(d(b"L123L\n.").unwrap(), Value::Int(123));
        assert_eq!(
            d(b"L-9223372036854775808\n.").unwrap(),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            d(b"L9223372036854775808\n.").unwrap(),
            Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])
        );
        assert_eq!(
            d(b"L-9223372036854775809\n.").unwrap(),
            Value::BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff])
        );
        assert_eq!(
            d(b"S'a\\x41\\n\\'\\101'\n.").unwrap(),
            Value::Bytes(Bytes::from_static(b"aA\n'A"))
        );
        assert_eq!(
            d(b"V\\u00e9\\\\u\\U0001F600\n.").unwrap(),
            Value::Str("é\\\\u😀".into())
        );
        assert_eq!(d(b"Vx\\ud83d\\ude00\n.").unwrap(), Value::Str("x😀".into()));
        assert!(d(b"V\\ud83d\n.").is_err());
        assert!(is_latin1("latin1") && is_latin1("Latin-1") && is_latin1("ISO-8859-1"));
        assert!(is_latin1("iso_8859_1:1987") && !is_latin1("utf-8"));
        assert_eq!(d(b"F-1.5\n.").unwrap(), Value::Float(-1.5));
        assert!(matches!(d(b"Fnan\n.").unwrap(), Value::Float(f) if f.is_nan()));
        assert_eq!(d(b"Finf\n.").unwrap(), Value::Float(f64::INFINITY));
        assert_eq!(d(b"F1e+300\n.").unwrap(), Value::Float(1e300));
    }
}
