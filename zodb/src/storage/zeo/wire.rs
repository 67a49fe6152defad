//! ZEO protocol 5 on the wire: frames, message encoding and decoding.
//!
//! A ZEO connection is a stream of *frames*: a 4-byte big-endian length,
//! then that many bytes. The server's first frame announces the protocol —
//! `Z5` (messages are pickles) or `M5` (msgpack); the client answers with
//! the protocol it speaks. Every later frame is one message, a pickled
//! tuple `(msgid, async_flag, method, args)`:
//!
//! - a call from us: `(n, False, "loadBefore", (oid, tid))`;
//! - its reply: `(n, 0, ".reply", result)`, or, when the server method
//!   raised, `(n, 2, ".reply", ("module.ExceptionClass", args_or_dict))`;
//! - a one-way call from the server: `(0, True, "invalidateTransaction",
//!   (tid, [oid, …]))`, `(0, True, "info", {…})`.
//!
//! We speak both codecs ([`Codec`]), answering with the one the server
//! announced. Our requests use a handful of types (ints, bools, text,
//! bytes, tuples, None), so the encoders are a few opcodes of pickle
//! protocol 3 (what the Python side uses) and the matching msgpack
//! formats (msgpack through `rmpv`, as for NEO). Replies are decoded with
//! the crate's unpickler, or with `rmpv`'s borrowing msgpack decoder, into
//! the same [`Value`]s (a msgpack array is a
//! tuple, as ZEO's `use_list=False` reads it); byte strings are slices of
//! the frame either way (a 2 MiB block is not copied after it arrived).
//!
//! For the server, msgpack is the cheaper encoding of big replies
//! (`msgpack.packb` is little more than a copy; its pickler writes into a
//! `BytesIO`), though end to end its other per-reply costs dominate (see
//! the `zeo_read` bench of wcfsd).
//!
//! The peer may be hostile or broken: a frame longer than the configured
//! maximum is refused before anything is allocated for it, and a frame's
//! buffer is only grown as its bytes arrive, so memory per connection stays
//! bounded by the maximum frame size; every decoding failure is an error,
//! never a panic. [`FrameReader`] keeps its state across read timeouts, so
//! the connection's reader can wake up periodically (to check deadlines)
//! without losing its place in a half-received frame.

use crate::pickle::{self, Value};
use bytes::Bytes;
use std::io::{self, Read};

/// The protocol we speak by default: pickle marshalling, version 5.
pub const PROTOCOL: &[u8] = b"Z5";

/// How messages are marshalled: the first byte of the protocol name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `Z`: pickle (the default of `runzeo`).
    Pickle,
    /// `M`: msgpack (`runzeo` with `msgpack true` / `$ZEO_MSGPACK`).
    Msgpack,
}

impl Codec {
    /// The protocol name we answer the announcement with.
    pub fn protocol(self) -> &'static [u8] {
        match self {
            Codec::Pickle => b"Z5",
            Codec::Msgpack => b"M5",
        }
    }
}

/// Why a frame or message could not be received.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection (cleanly, between frames, or in the
    /// middle of one).
    #[error("connection closed by server{}", if *.mid_frame { " in the middle of a message" } else { "" })]
    Closed { mid_frame: bool },
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Read timed out (the reader's periodic wake-up); the frame reader
    /// keeps its state.
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads frames from a byte stream, resumably.
pub struct FrameReader {
    max: usize,
    /// Bytes read from the stream and not consumed yet: `stage[lo..hi]`.
    stage: Vec<u8>,
    lo: usize,
    hi: usize,
    /// The frame being received: its buffer, how much of it is filled, and
    /// its announced length.
    cur: Option<(Vec<u8>, usize, usize)>,
}

const STAGE: usize = 64 << 10;

/// How much of a frame's buffer is allocated ahead of the bytes received.
const GROW: usize = 4 << 20;

impl FrameReader {
    /// A reader refusing frames longer than `max` bytes.
    pub fn new(max: usize) -> FrameReader {
        FrameReader {
            max,
            stage: vec![0; STAGE],
            lo: 0,
            hi: 0,
            cur: None,
        }
    }

    /// Whether a frame is partly received.
    pub fn mid_frame(&self) -> bool {
        self.cur.is_some() || self.hi > self.lo
    }

    fn fill_stage(&mut self, r: &mut impl Read) -> Result<(), WireError> {
        if self.lo > 0 {
            self.stage.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        let n = read_some(r, &mut self.stage[self.hi..])?;
        if n == 0 {
            return Err(WireError::Closed {
                mid_frame: self.mid_frame(),
            });
        }
        self.hi += n;
        Ok(())
    }

    /// Reads the next whole frame. On [`WireError::Timeout`] nothing is
    /// lost: call again to continue.
    pub fn next(&mut self, r: &mut impl Read) -> Result<Bytes, WireError> {
        loop {
            let Some((buf, filled, len)) = &mut self.cur else {
                if self.hi - self.lo < 4 {
                    self.fill_stage(r)?;
                    continue;
                }
                let h = &self.stage[self.lo..self.lo + 4];
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
                if len > self.max as u64 {
                    return Err(WireError::TooLarge { len, max: self.max });
                }
                self.lo += 4;
                let len = len as usize;
                self.cur = Some((vec![0; len.min(GROW)], 0, len));
                continue;
            };
            let avail = self.hi - self.lo;
            if avail > 0 {
                let k = avail.min(*len - *filled);
                grow(buf, *filled + k, *len);
                buf[*filled..*filled + k].copy_from_slice(&self.stage[self.lo..self.lo + k]);
                self.lo += k;
                *filled += k;
            }
            if *filled == *len {
                let (buf, _, _) = self.cur.take().expect("frame in progress");
                return Ok(Bytes::from(buf));
            }
            if *len - *filled >= STAGE {
                // Big frame: straight into its buffer.
                grow(buf, *filled + STAGE, *len);
                let end = buf.len();
                let n = read_some(r, &mut buf[*filled..end])?;
                if n == 0 {
                    return Err(WireError::Closed { mid_frame: true });
                }
                *filled += n;
            } else {
                self.fill_stage(r)?;
            }
        }
    }
}

/// Grows `buf` to hold at least `need` bytes (at most `len`), a chunk ahead.
fn grow(buf: &mut Vec<u8>, need: usize, len: usize) {
    if buf.len() < need {
        buf.resize((need + GROW).min(len).max(need), 0);
    }
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, WireError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(WireError::Timeout)
            }
            Err(e) => return Err(WireError::Io(e)),
        }
    }
}

/// A frame: length prefix and body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + 4);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

// ---- encoding ----

/// Pickles `v` (protocol 3) into `out`. Only the types requests and test
/// replies need: None, bools, ints that fit in i64, bytes, text, tuples,
/// lists and dicts; anything else is an error.
pub fn encode(v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    out.extend_from_slice(&[0x80, 3]); // PROTO 3
    encode_value(v, out, 0)?;
    out.push(b'.'); // STOP
    Ok(())
}

fn encode_value(v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    if depth > 64 {
        return Err("value nested too deep to encode".into());
    }
    match v {
        Value::None => out.push(b'N'),
        Value::Bool(true) => out.push(0x88),
        Value::Bool(false) => out.push(0x89),
        Value::Int(i) => {
            if (0..256).contains(i) {
                out.extend_from_slice(&[b'K', *i as u8]);
            } else if (0..65536).contains(i) {
                out.push(b'M');
                out.extend_from_slice(&(*i as u16).to_le_bytes());
            } else if let Ok(i) = i32::try_from(*i) {
                out.push(b'J');
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                out.extend_from_slice(&[0x8a, 8]); // LONG1, 8 bytes
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
        Value::Bytes(b) => {
            if b.len() < 256 {
                out.extend_from_slice(&[b'C', b.len() as u8]);
            } else {
                let n = u32::try_from(b.len()).map_err(|_| "bytes too long to encode")?;
                out.push(b'B');
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(b);
        }
        Value::Str(s) => {
            let n = u32::try_from(s.len()).map_err(|_| "text too long to encode")?;
            out.push(b'X');
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Tuple(items) => match items.len() {
            0 => out.push(b')'),
            1..=3 => {
                for it in items {
                    encode_value(it, out, depth + 1)?;
                }
                out.push([0x85, 0x86, 0x87][items.len() - 1]);
            }
            _ => {
                out.push(b'(');
                for it in items {
                    encode_value(it, out, depth + 1)?;
                }
                out.push(b't');
            }
        },
        Value::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                for it in items {
                    encode_value(it, out, depth + 1)?;
                }
                out.push(b'e');
            }
        }
        Value::Dict(items) => {
            out.push(b'}');
            if !items.is_empty() {
                out.push(b'(');
                for (k, v) in items {
                    encode_value(k, out, depth + 1)?;
                    encode_value(v, out, depth + 1)?;
                }
                out.push(b'u');
            }
        }
        other => return Err(format!("cannot encode a {}", other.kind())),
    }
    Ok(())
}

/// A message frame: `(msgid, async_flag, method, args)` pickled, with its
/// length prefix.
pub fn message_frame(msgid: i64, flag: Value, method: &str, args: Value) -> Vec<u8> {
    message_frame_with(Codec::Pickle, msgid, flag, method, args)
}

/// A message frame in the given codec.
pub fn message_frame_with(
    codec: Codec,
    msgid: i64,
    flag: Value,
    method: &str,
    args: Value,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    let msg = Value::Tuple(vec![
        Value::Int(msgid),
        flag,
        Value::Str(method.to_string()),
        args,
    ]);
    // Everything in a message is of a type the encoders handle.
    match codec {
        Codec::Pickle => encode(&msg, &mut body),
        Codec::Msgpack => encode_msgpack(&msg, &mut body, 0),
    }
    .expect("request values are encodable");
    frame(&body)
}

/// Msgpack encoding of the same types [`encode`] takes (tuples and lists
/// both become arrays), through `rmpv` — the crate's one msgpack codec,
/// shared with the NEO driver.
pub fn encode_msgpack(v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    let mv = to_rmpv(v, depth)?;
    rmpv::encode::write_value(out, &mv).map_err(|e| e.to_string())
}

fn to_rmpv(v: &Value, depth: usize) -> Result<rmpv::Value, String> {
    if depth > 64 {
        return Err("value nested too deep to encode".into());
    }
    let too_long = |n: usize, what: &str| {
        u32::try_from(n)
            .map(|_| ())
            .map_err(|_| format!("{what} too long to encode"))
    };
    Ok(match v {
        Value::None => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::Boolean(*b),
        Value::Int(i) => rmpv::Value::from(*i),
        Value::Bytes(b) => {
            too_long(b.len(), "bytes")?;
            rmpv::Value::Binary(b.to_vec())
        }
        Value::Str(t) => {
            too_long(t.len(), "text")?;
            rmpv::Value::String(t.as_str().into())
        }
        Value::Tuple(items) | Value::List(items) => rmpv::Value::Array(
            items
                .iter()
                .map(|it| to_rmpv(it, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Dict(items) => rmpv::Value::Map(
            items
                .iter()
                .map(|(k, v)| Ok((to_rmpv(k, depth + 1)?, to_rmpv(v, depth + 1)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("cannot encode a {}", other.kind())),
    })
}

/// Decodes one msgpack value from `buf[pos..]`: the value and the position
/// after it. Arrays become tuples, maps dicts (in order), `bin` slices of
/// `buf` (rmpv's borrowing decoder: a 2 MiB block is not copied); ext
/// types and nesting beyond [`pickle::MAX_DEPTH`] are errors.
pub fn decode_msgpack(buf: &Bytes, pos: usize) -> Result<(Value, usize), WireError> {
    let all = buf
        .get(pos..)
        .ok_or_else(|| malformed("msgpack: truncated"))?;
    let mut rd = all;
    // rmpv counts a level for every value, bin and str included: one more
    // than our nesting, plus one for the leaves.
    let v = rmpv::decode::read_value_ref_with_max_depth(&mut rd, pickle::MAX_DEPTH + 2).map_err(
        |e| match e {
            rmpv::decode::Error::DepthLimitExceeded => malformed("msgpack: nested too deep"),
            e => malformed(format!(
                "msgpack: {e} (at byte {})",
                pos + all.len() - rd.len()
            )),
        },
    )?;
    let end = pos + all.len() - rd.len();
    Ok((from_rmpv(buf, &v)?, end))
}

fn from_rmpv(buf: &Bytes, v: &rmpv::ValueRef<'_>) -> Result<Value, WireError> {
    use rmpv::ValueRef as R;
    Ok(match v {
        R::Nil => Value::None,
        R::Boolean(b) => Value::Bool(*b),
        R::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => {
                // Little-endian two's complement, as pickle's LONG1.
                let mut le = u.to_le_bytes().to_vec();
                le.push(0);
                Value::BigInt(le)
            }
            _ => return Err(malformed("msgpack: integer out of range")),
        },
        R::F32(f) => Value::Float(*f as f64),
        R::F64(f) => Value::Float(*f),
        R::String(s) => Value::Str(
            s.as_str()
                .ok_or_else(|| malformed("msgpack: invalid UTF-8 in str"))?
                .to_string(),
        ),
        R::Binary(b) => {
            // A slice of `buf`: where it starts in it.
            let off = b.as_ptr() as usize - buf.as_ptr() as usize;
            Value::Bytes(buf.slice(off..off + b.len()))
        }
        R::Array(items) => Value::Tuple(
            items
                .iter()
                .map(|it| from_rmpv(buf, it))
                .collect::<Result<_, _>>()?,
        ),
        R::Map(items) => Value::Dict(
            items
                .iter()
                .map(|(k, v)| Ok((from_rmpv(buf, k)?, from_rmpv(buf, v)?)))
                .collect::<Result<_, WireError>>()?,
        ),
        R::Ext(t, _) => return Err(malformed(format!("msgpack: unsupported type (ext {t})"))),
    })
}

// ---- decoding ----

/// An exception the server raised for a call.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerError {
    /// Qualified class name, e.g. `ZODB.POSException.POSKeyError`.
    pub class: String,
    /// The exception's arguments, shortened for messages.
    pub args: String,
}

impl ServerError {
    /// The class name without its module.
    pub fn name(&self) -> &str {
        self.class.rsplit('.').next().unwrap_or(&self.class)
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server raised {}{}", self.class, self.args)
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The answer to our call `msgid`.
    Reply {
        msgid: i64,
        result: Result<Value, ServerError>,
    },
    /// A call from the server (`oneway`: no reply expected).
    Call {
        msgid: i64,
        oneway: bool,
        method: String,
        args: Value,
    },
}

fn malformed(why: impl Into<String>) -> WireError {
    WireError::Malformed(why.into())
}

/// Decodes one pickled message frame (without its length prefix).
pub fn decode_message(frame: &Bytes) -> Result<Message, WireError> {
    decode_message_with(Codec::Pickle, frame)
}

/// Decodes one message frame in the given codec.
pub fn decode_message_with(codec: Codec, frame: &Bytes) -> Result<Message, WireError> {
    let (v, end) = match codec {
        Codec::Pickle => pickle::decode(frame, 0).map_err(|e| malformed(e.to_string()))?,
        Codec::Msgpack => decode_msgpack(frame, 0)?,
    };
    if end != frame.len() {
        return Err(malformed(format!(
            "{} bytes after the message",
            frame.len() - end
        )));
    }
    let Value::Tuple(mut parts) = v else {
        return Err(malformed(format!("a {}, want a 4-tuple", v.kind())));
    };
    if parts.len() != 4 {
        return Err(malformed(format!(
            "a {}-tuple, want (msgid, flag, method, args)",
            parts.len()
        )));
    }
    let args = parts.pop().expect("4 parts");
    let method = match parts.pop().expect("4 parts") {
        Value::Str(s) => s,
        other => return Err(malformed(format!("method is a {}", other.kind()))),
    };
    let flag = match &parts[1] {
        Value::Bool(b) => *b as i64,
        Value::Int(i) => *i,
        other => return Err(malformed(format!("flag is a {}", other.kind()))),
    };
    let msgid = match &parts[0] {
        Value::Int(i) => *i,
        other => return Err(malformed(format!("msgid is a {}", other.kind()))),
    };
    if method == ".reply" {
        let result = if flag != 0 {
            Err(server_error(args)?)
        } else {
            Ok(args)
        };
        return Ok(Message::Reply { msgid, result });
    }
    Ok(Message::Call {
        msgid,
        oneway: flag != 0,
        method,
        args,
    })
}

/// `("module.Class", args_or_dict)` as ZEO 5 sends a raised exception.
fn server_error(v: Value) -> Result<ServerError, WireError> {
    let Value::Tuple(mut parts) = v else {
        return Err(malformed(format!("exception reply is a {}", v.kind())));
    };
    if parts.len() != 2 {
        return Err(malformed("exception reply is not (class, args)"));
    }
    let args = parts.pop().expect("2 parts");
    let class = match parts.pop().expect("2 parts") {
        Value::Str(s) => s,
        other => return Err(malformed(format!("exception class is a {}", other.kind()))),
    };
    let mut args = format!("{args:?}");
    if args.len() > 200 {
        let mut cut = 200;
        while !args.is_char_boundary(cut) {
            cut -= 1;
        }
        args.truncate(cut);
        args.push('…');
    }
    Ok(ServerError { class, args })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: Value) {
        let mut out = vec![];
        encode(&v, &mut out).unwrap();
        let (got, end) = pickle::decode(&Bytes::from(out.clone()), 0).unwrap();
        assert_eq!(end, out.len());
        assert_eq!(got, v);
    }

    #[test]
    fn encode_decodes_back() {
        for i in [
            0i64,
            1,
            255,
            256,
            65535,
            65536,
            -1,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            roundtrip(Value::Int(i));
        }
        roundtrip(Value::Tuple(vec![]));
        roundtrip(Value::Tuple(vec![
            Value::Int(7),
            Value::Bool(false),
            Value::Str("loadBefore".into()),
            Value::Tuple(vec![
                Value::Bytes(Bytes::from_static(&[0; 8])),
                Value::Bytes(Bytes::from(vec![1; 300])),
                Value::None,
                Value::Bool(true),
                Value::List(vec![Value::Int(1), Value::Str("é".into())]),
                Value::Dict(vec![(Value::Str("k".into()), Value::List(vec![]))]),
            ]),
        ]));
    }

    #[test]
    fn frames_split_anywhere() {
        let mut stream = vec![];
        let bodies: Vec<Vec<u8>> = vec![
            b"Z5".to_vec(),
            vec![],
            (0..200_000u32).map(|i| i as u8).collect(),
            vec![9; 3],
        ];
        for b in &bodies {
            stream.extend_from_slice(&frame(b));
        }
        // A reader handing out 1..7 bytes at a time, with timeouts between.
        struct Trickle<'a>(&'a [u8], usize, bool);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.2 = !self.2;
                if self.2 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = (self.1 % 7 + 1).min(buf.len()).min(self.0.len());
                self.1 += 1;
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = Trickle(&stream, 0, false);
        let mut fr = FrameReader::new(1 << 20);
        for b in &bodies {
            let got = loop {
                match fr.next(&mut r) {
                    Ok(f) => break f,
                    Err(WireError::Timeout) => continue,
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(&got[..], &b[..]);
        }
        assert!(matches!(
            loop {
                match fr.next(&mut r) {
                    Err(WireError::Timeout) => continue,
                    other => break other,
                }
            },
            Err(WireError::Closed { mid_frame: false })
        ));
    }

    #[test]
    fn oversized_and_cut_frames() {
        let mut fr = FrameReader::new(1000);
        let mut s: &[u8] = &[0, 0, 0x10, 0];
        assert!(matches!(
            fr.next(&mut s),
            Err(WireError::TooLarge { len: 4096, .. })
        ));
        let mut fr = FrameReader::new(1000);
        let mut s: &[u8] = &[0, 0, 0, 10, 1, 2];
        assert!(matches!(
            fr.next(&mut s),
            Err(WireError::Closed { mid_frame: true })
        ));
    }

    #[test]
    fn msgpack_refuses_ext_depth_and_bad_text() {
        let b = |v: &[u8]| Bytes::from(v.to_vec());
        let e = decode_msgpack(&b(&[0xd4, 0x04, 0x02]), 0).unwrap_err();
        assert!(e.to_string().contains("ext"), "{e}");
        let deep = b(&[0x91; 400]);
        let e = decode_msgpack(&deep, 0).unwrap_err();
        assert!(e.to_string().contains("nested too deep"), "{e}");
        let e = decode_msgpack(&b(&[0xa2, 0xff, 0xfe]), 0).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
        // An array claiming 2^32-1 items in 5 bytes: an error, no allocation.
        assert!(decode_msgpack(&b(&[0xdd, 0xff, 0xff, 0xff, 0xff]), 0).is_err());
        // bin is a slice of the frame.
        let f = b(&[0x92, 0xc4, 0x02, b'a', b'b', 0x01]);
        let (v, end) = decode_msgpack(&f, 0).unwrap();
        assert_eq!(end, 6);
        let Value::Tuple(t) = v else { panic!() };
        let Value::Bytes(ab) = &t[0] else { panic!() };
        assert_eq!(ab.as_ptr(), f[3..].as_ptr());
    }

    #[test]
    fn msgpack_round_trip_and_python_bytes() {
        let v = Value::Tuple(vec![
            Value::Int(7),
            Value::Bool(false),
            Value::Str("loadBefore".into()),
            Value::Tuple(vec![
                Value::Bytes(Bytes::from_static(&[0; 8])),
                Value::Bytes(Bytes::from(vec![1; 70000])),
                Value::None,
                Value::Int(-1),
                Value::Int(-33),
                Value::Int(200),
                Value::Int(i64::MIN),
                Value::Str("x".repeat(40)),
                Value::Dict(vec![(Value::Str("k".into()), Value::Tuple(vec![]))]),
            ]),
        ]);
        let mut out = vec![];
        encode_msgpack(&v, &mut out, 0).unwrap();
        let (back, end) = decode_msgpack(&Bytes::from(out.clone()), 0).unwrap();
        assert_eq!((back, end), (v, out.len()));
        // msgpack.packb((3, 0, '.reply', (b'ab', 1.5, 2**64-1, -200)), use_bin_type=True)
        let py = b"\x94\x03\x00\xa6.reply\x94\xc4\x02ab\xcb?\xf8\x00\x00\x00\x00\x00\x00\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xd1\xff8";
        match decode_message_with(Codec::Msgpack, &Bytes::from_static(py)).unwrap() {
            Message::Reply {
                msgid: 3,
                result: Ok(Value::Tuple(t)),
            } => {
                assert_eq!(t[0], Value::Bytes(Bytes::from_static(b"ab")));
                assert_eq!(t[1], Value::Float(1.5));
                assert!(matches!(t[2], Value::BigInt(_)));
                assert_eq!(t[3], Value::Int(-200));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &b""[..],
            b"\x94\x03",
            b"\xdd\xff\xff\xff\xff",
            b"\xc7\x01\x00",
        ] {
            assert!(decode_message_with(Codec::Msgpack, &Bytes::from(bad.to_vec())).is_err());
        }
    }

    #[test]
    fn messages() {
        let f = message_frame(
            3,
            Value::Int(0),
            ".reply",
            Value::Bytes(Bytes::from_static(b"12345678")),
        );
        let m = decode_message(&Bytes::from(f[4..].to_vec())).unwrap();
        assert_eq!(
            m,
            Message::Reply {
                msgid: 3,
                result: Ok(Value::Bytes(Bytes::from_static(b"12345678")))
            }
        );
        let f = message_frame(
            4,
            Value::Int(2),
            ".reply",
            Value::Tuple(vec![
                Value::Str("ZODB.POSException.POSKeyError".into()),
                Value::Tuple(vec![Value::Bytes(Bytes::from_static(
                    b"\0\0\0\0\0\0\0\x07",
                ))]),
            ]),
        );
        match decode_message(&Bytes::from(f[4..].to_vec())).unwrap() {
            Message::Reply {
                msgid: 4,
                result: Err(e),
            } => assert_eq!(e.name(), "POSKeyError"),
            other => panic!("{other:?}"),
        }
        for bad in [&b""[..], b"\x80\x03K\x01.", b"\x80\x03)."] {
            assert!(decode_message(&Bytes::from(bad.to_vec())).is_err());
        }
    }
}
