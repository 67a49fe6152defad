//! NEO's wire format, as protocol version 5 speaks it: a handshake, then a
//! stream of msgpack objects, one per packet, with no length prefix.
//!
//! - **Handshake**: each side sends msgpack `["NEO", 5]` first
//!   ([`HANDSHAKE`]); a peer that sends anything else is not one we can
//!   talk to ([`check_handshake`] says what it is instead: TLS, another
//!   version, not NEO at all).
//! - **Packets** are `[msg_id, code, [args…]]`. An answer carries the
//!   request's msg_id and the request's code with [`RESPONSE`] set;
//!   `Error` is [`ERROR`] with `[error code, message]`.
//! - **Framing**: msgpack says how long each object is, but only by walking
//!   it. [`frame_len`] walks the headers of the next object in a buffer
//!   without decoding or copying anything, and tells whether it is complete
//!   (and its length), incomplete, or invalid (too big, too deep, a
//!   reserved marker). Only a complete object is decoded (by `rmpv`), so a
//!   3 MiB answer arriving in pieces is walked a few times, not decoded
//!   each time, and a peer cannot make us allocate what it did not send.
//! - Enum values (node types, states, cell states, error codes) are msgpack
//!   ext types whose payload is the msgpack int ([`ext`]); bytes and text
//!   are msgpack bin — NEO/py decodes text arguments from bin and crashes
//!   on str, so we never send str.
//!
//! Codes are the registration order of `Packets` in neoppod's
//! `neo/lib/protocol.py` (the integration test checks them against the
//! installed neoppod).

use crate::types::{Oid, Tid};
use bytes::Bytes;
use rmpv::Value;

/// msgpack `["NEO", 5]`.
pub const HANDSHAKE: [u8; 6] = [0x92, 0xa3, b'N', b'E', b'O', PROTOCOL_VERSION];
pub const PROTOCOL_VERSION: u8 = 5;

/// Set in the code of an answer.
pub const RESPONSE: u16 = 0x8000;
/// `AnswerObject`, whose data [`decode_frame`] does not copy.
const ANSWER_OBJECT: u16 = code::ASK_OBJECT | RESPONSE;
/// The code of an `Error` answer.
pub const ERROR: u16 = 0x8000;

/// Packet codes (requests; their answers are `| RESPONSE`).
pub mod code {
    pub const REQUEST_IDENTIFICATION: u16 = 0x0001;
    pub const PING: u16 = 0x0002;
    pub const CLOSE_CLIENT: u16 = 0x0003;
    pub const NOT_PRIMARY_MASTER: u16 = 0x0005;
    pub const NOTIFY_NODE_INFORMATION: u16 = 0x0006;
    pub const SEND_PARTITION_TABLE: u16 = 0x000a;
    pub const NOTIFY_PARTITION_CHANGES: u16 = 0x000b;
    pub const STOP_OPERATION: u16 = 0x000d;
    pub const INVALIDATE_OBJECTS: u16 = 0x0016;
    pub const ASK_OBJECT: u16 = 0x0020;
    pub const ASK_TIDS: u16 = 0x0021;
    pub const ASK_TRANSACTION_INFORMATION: u16 = 0x0022;
    pub const NOTIFY_CLUSTER_INFORMATION: u16 = 0x002d;
    pub const ASK_TIDS_FROM: u16 = 0x0030;
    pub const ASK_OIDS_FROM: u16 = 0x0031;
    pub const ASK_LAST_TRANSACTION: u16 = 0x003c;
}

/// `ErrorCodes` (the payload of an `Error` answer).
pub mod errcode {
    pub const NOT_READY: i64 = 2;
    pub const OID_NOT_FOUND: i64 = 3;
    pub const TID_NOT_FOUND: i64 = 4;
    pub const OID_DOES_NOT_EXIST: i64 = 5;
    pub const PROTOCOL_ERROR: i64 = 6;
    pub const NON_READABLE_CELL: i64 = 10;
}

/// Ext type codes of the enums.
pub mod ext {
    pub const CELL_STATES: i8 = 0;
    pub const CLUSTER_STATES: i8 = 1;
    pub const ERROR_CODES: i8 = 2;
    pub const NODE_STATES: i8 = 3;
    pub const NODE_TYPES: i8 = 4;
}

pub const NODE_MASTER: i64 = 0;
pub const NODE_STORAGE: i64 = 1;
pub const NODE_CLIENT: i64 = 2;

pub const STATE_RUNNING: i64 = 2;

pub const CELL_UP_TO_DATE: i64 = 1;
pub const CELL_FEEDING: i64 = 2;

pub const CLUSTER_RUNNING: i64 = 2;

/// The SHA-1 NEO puts beside an object's data (of the data as sent).
///
/// With the CPU's SHA instructions where it has them (the `sha1` crate
/// picks them at run time): every byte loaded goes through here, and the
/// portable code was the largest cost of a cold read (more than half of
/// wcfsd's CPU time reading 2 MiB blocks).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(data).into()
}

/// SHA-1 of nothing-at-all as NEO writes it for a deletion: 20 zero bytes.
pub const ZERO_HASH: [u8; 20] = [0; 20];

/// Deepest nesting we accept (NEO's packets nest 4–5 levels).
pub const MAX_DEPTH: usize = 32;

/// Why bytes from a peer are not a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet larger than {max} bytes")]
    TooBig { max: usize },
    #[error("packet nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("invalid msgpack marker 0x{0:02x}")]
    BadMarker(u8),
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// The length of the msgpack object at the start of `buf`: `Ok(Some(n))`
/// when all `n` bytes are there, `Ok(None)` when more must be read first,
/// Err when it can never be a packet (a declared length past `max`,
/// nesting past [`MAX_DEPTH`], the reserved marker 0xc1).
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, WireError> {
    Ok(match frame_need(buf, max)? {
        Need::Frame(n) => Some(n),
        Need::AtLeast(_) => None,
    })
}

/// What [`frame_need`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A complete frame of this many bytes.
    Frame(usize),
    /// An incomplete one: it is at least this many bytes long in all (more
    /// than the buffer holds). Known from the headers read so far — for an
    /// object's answer, from its data's header, so that the reader can
    /// make room for the whole block at once.
    AtLeast(usize),
}

/// [`frame_len`], saying how long an incomplete frame is at least.
pub fn frame_need(buf: &[u8], max: usize) -> Result<Need, WireError> {
    // Items still expected at each open nesting level.
    let mut stack: Vec<u64> = Vec::new();
    let mut pos = 0usize;
    // One item to read at top level.
    let mut need: u64 = 1;
    // Cut short at `pos` (a marker or header missing): the item there and
    // every one still expected take at least a byte each. Saying so, not
    // just "one more byte", keeps a packet of many small items (a big
    // invalidation) from being walked again after every read.
    macro_rules! short {
        () => {
            Need::AtLeast(
                (buf.len() + 1).max(pos + 1 + (need + stack.iter().sum::<u64>()) as usize),
            )
        };
    }
    loop {
        if need == 0 {
            match stack.pop() {
                Some(n) => {
                    need = n;
                    continue;
                }
                None => return Ok(Need::Frame(pos)),
            }
        }
        need -= 1;
        let Some(&m) = buf.get(pos) else {
            return Ok(short!());
        };
        // (header bytes after the marker, payload bytes, child items)
        let be = |n: usize| -> Option<u64> {
            let b = buf.get(pos + 1..pos + 1 + n)?;
            Some(b.iter().fold(0u64, |a, &x| (a << 8) | x as u64))
        };
        let (hdr, payload, items): (usize, u64, u64) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * (m & 0x0f) as u64),
            0x90..=0x9f => (0, 0, (m & 0x0f) as u64),
            0xa0..=0xbf => (0, (m & 0x1f) as u64, 0),
            0xc1 => return Err(WireError::BadMarker(m)),
            0xc4 | 0xd9 => match be(1) {
                Some(n) => (1, n, 0),
                None => return Ok(short!()),
            },
            0xc5 | 0xda => match be(2) {
                Some(n) => (2, n, 0),
                None => return Ok(short!()),
            },
            0xc6 | 0xdb => match be(4) {
                Some(n) => (4, n, 0),
                None => return Ok(short!()),
            },
            // ext 8/16/32: length, then the type byte.
            0xc7 => match be(1) {
                Some(n) => (2, n, 0),
                None => return Ok(short!()),
            },
            0xc8 => match be(2) {
                Some(n) => (3, n, 0),
                None => return Ok(short!()),
            },
            0xc9 => match be(4) {
                Some(n) => (5, n, 0),
                None => return Ok(short!()),
            },
            0xca => (4, 0, 0),
            0xcb => (8, 0, 0),
            0xcc | 0xd0 => (1, 0, 0),
            0xcd | 0xd1 => (2, 0, 0),
            0xce | 0xd2 => (4, 0, 0),
            0xcf | 0xd3 => (8, 0, 0),
            // fixext 1/2/4/8/16: the type byte, then the data.
            0xd4 => (1, 1, 0),
            0xd5 => (1, 2, 0),
            0xd6 => (1, 4, 0),
            0xd7 => (1, 8, 0),
            0xd8 => (1, 16, 0),
            0xdc => match be(2) {
                Some(n) => (2, 0, n),
                None => return Ok(short!()),
            },
            0xdd => match be(4) {
                Some(n) => (4, 0, n),
                None => return Ok(short!()),
            },
            0xde => match be(2) {
                Some(n) => (2, 0, 2 * n),
                None => return Ok(short!()),
            },
            0xdf => match be(4) {
                Some(n) => (4, 0, 2 * n),
                None => return Ok(short!()),
            },
        };
        // Every item takes at least a byte: a declared count past `max`
        // can be refused now, as can a payload.
        let end = (pos as u64) + 1 + hdr as u64 + payload;
        if end > max as u64 || end + items > max as u64 {
            return Err(WireError::TooBig { max });
        }
        pos = end as usize;
        if items > 0 {
            if stack.len() + 1 >= MAX_DEPTH {
                return Err(WireError::TooDeep);
            }
            stack.push(need);
            need = items;
        }
        if pos > buf.len() {
            // Every item still expected takes at least a byte.
            let rest = need + stack.iter().sum::<u64>();
            return Ok(Need::AtLeast(pos + rest as usize));
        }
    }
}

/// One packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub id: u32,
    pub code: u16,
    pub args: Vec<Value>,
    /// An `AnswerObject`'s data (its `args[5]`, left Nil there) as a slice
    /// of the frame it came in ([`decode_frame`]): the block's bytes are
    /// not copied again after the socket read.
    pub data: Option<Bytes>,
}

impl Packet {
    pub fn is_response(&self) -> bool {
        self.code & RESPONSE != 0
    }
}

/// Decodes one complete frame (as [`frame_len`] delimited it).
pub fn decode_packet(frame: &[u8]) -> Result<Packet, WireError> {
    decode_frame(Bytes::copy_from_slice(frame))
}

/// Decodes one complete frame (as [`frame_len`] delimited it), keeping an
/// `AnswerObject`'s data as a slice of `frame` ([`Packet::data`]).
pub fn decode_frame(frame: Bytes) -> Result<Packet, WireError> {
    let bad = |why: &str| WireError::Malformed(why.to_string());
    let malformed = |e: &dyn std::fmt::Display| WireError::Malformed(e.to_string());
    let mut rd: &[u8] = &frame;
    let n = rmp::decode::read_array_len(&mut rd)
        .map_err(|_| bad("not an array [msg_id, code, args]"))?;
    if n != 3 {
        return Err(bad("want [msg_id, code, args]"));
    }
    let id = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH - 2)
        .map_err(|e| malformed(&e))?;
    let code = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH - 2)
        .map_err(|e| malformed(&e))?;
    let code = code
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .ok_or_else(|| bad("code is not a 16-bit unsigned int"))?;
    let id = id
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .ok_or_else(|| bad("msg_id is not a 32-bit unsigned int"))?;
    let nargs =
        rmp::decode::read_array_len(&mut rd).map_err(|_| bad("arguments are not an array"))?;
    let mut args = Vec::with_capacity((nargs as usize).min(16));
    let mut data = None;
    for i in 0..nargs {
        if code == ANSWER_OBJECT && i == 5 && matches!(rd.first(), Some(0xc4..=0xc6)) {
            let len = rmp::decode::read_bin_len(&mut rd).map_err(|e| malformed(&e))? as usize;
            if len > rd.len() {
                return Err(bad("data past the end of the packet"));
            }
            let at = frame.len() - rd.len();
            data = Some(frame.slice(at..at + len));
            rd = &rd[len..];
            args.push(Value::Nil);
            continue;
        }
        // (As deep as in the packet decoded whole: rmpv counts an array
        // as two levels.)
        let v = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH - 4)
            .map_err(|e| malformed(&e))?;
        args.push(v);
    }
    if !rd.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(Packet {
        id,
        code,
        args,
        data,
    })
}

/// Encodes a packet.
pub fn encode_packet(id: u32, code: u16, args: Vec<Value>) -> Vec<u8> {
    let v = Value::Array(vec![Value::from(id), Value::from(code), Value::Array(args)]);
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    rmpv::encode::write_value(&mut out, &v).expect("msgpack encode to a Vec");
    out
}

/// What the first bytes of a peer say when they are not our handshake.
pub fn check_handshake(got: &[u8]) -> Result<(), String> {
    if got == HANDSHAKE {
        return Ok(());
    }
    if got.first() == Some(&0x16) {
        return Err("the peer speaks TLS (a neos:// cluster?)".into());
    }
    if got.len() == 6 && got[..5] == HANDSHAKE[..5] {
        return Err(format!(
            "the peer speaks NEO protocol version {}, we speak {PROTOCOL_VERSION}",
            got[5]
        ));
    }
    Err(format!(
        "not a NEO node: handshake {:02x?}, want {HANDSHAKE:02x?}",
        got
    ))
}

// ---- values ----

/// An enum value of ext type `t`.
pub fn enum_value(t: i8, v: i64) -> Value {
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &Value::from(v)).expect("msgpack encode to a Vec");
    Value::Ext(t, payload)
}

/// The int of an enum of ext type `t`.
pub fn enum_of(v: &Value, t: i8) -> Option<i64> {
    match v {
        Value::Ext(tt, payload) if *tt == t => {
            let mut rd = &payload[..];
            let x = rmpv::decode::read_value_with_max_depth(&mut rd, 2).ok()?;
            if !rd.is_empty() {
                return None;
            }
            x.as_i64()
        }
        _ => None,
    }
}

pub fn bin(b: &[u8]) -> Value {
    Value::Binary(b.to_vec())
}

pub fn tid_value(t: Tid) -> Value {
    bin(&t.0.to_be_bytes())
}

pub fn oid_value(o: Oid) -> Value {
    bin(&o.0.to_be_bytes())
}

fn u64_of(v: &Value) -> Option<u64> {
    match v {
        Value::Binary(b) => Some(u64::from_be_bytes(b[..].try_into().ok()?)),
        _ => None,
    }
}

pub fn tid_of(v: &Value) -> Option<Tid> {
    u64_of(v).map(Tid)
}

pub fn oid_of(v: &Value) -> Option<Oid> {
    u64_of(v).map(Oid)
}

/// Text from a peer: bin (as NEO sends it) or str.
pub fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::String(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// `[host, port]`.
pub fn addr_of(v: &Value) -> Option<(String, u16)> {
    let a = v.as_array()?;
    if a.len() != 2 {
        return None;
    }
    Some((text_of(&a[0])?, u16::try_from(a[1].as_u64()?).ok()?))
}

// ---- messages ----

/// A node's address.
pub type Addr = (String, u16);
/// A partition table row: (storage nid, cell state) per cell.
pub type Row = Vec<(i32, i64)>;
/// A cell change: (partition, storage nid, new state).
pub type CellChange = (u32, i32, i64);

/// `RequestIdentification(CLIENT, nid, None, name, id_timestamp, extra)`.
pub fn request_identification(
    nid: Option<i32>,
    name: &str,
    id_timestamp: Option<f64>,
    read_only: bool,
) -> Vec<Value> {
    let extra = if read_only {
        vec![(bin(b"read_only"), Value::Boolean(true))]
    } else {
        vec![]
    };
    vec![
        enum_value(ext::NODE_TYPES, NODE_CLIENT),
        nid.map_or(Value::Nil, Value::from),
        Value::Nil,
        bin(name.as_bytes()),
        id_timestamp.map_or(Value::Nil, Value::F64),
        Value::Map(extra),
    ]
}

/// `AcceptIdentification(node_type, nid, your_nid)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Accept {
    pub node_type: i64,
    pub nid: Option<i32>,
    pub your_nid: Option<i32>,
}

fn nid_of(v: &Value) -> Option<Option<i32>> {
    match v {
        Value::Nil => Some(None),
        v => Some(Some(i32::try_from(v.as_i64()?).ok()?)),
    }
}

pub fn accept_of(args: &[Value]) -> Option<Accept> {
    if args.len() < 3 {
        return None;
    }
    Some(Accept {
        node_type: enum_of(&args[0], ext::NODE_TYPES)?,
        nid: nid_of(&args[1])?,
        your_nid: nid_of(&args[2])?,
    })
}

/// One entry of `NotifyNodeInformation`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub node_type: i64,
    pub addr: Option<(String, u16)>,
    pub nid: Option<i32>,
    pub state: i64,
    pub id_timestamp: Option<f64>,
}

/// `NotifyNodeInformation(timestamp, [[type, addr|None, nid, state, id_ts|None], …])`.
pub fn node_information_of(args: &[Value]) -> Option<Vec<NodeInfo>> {
    let list = args.get(1)?.as_array()?;
    list.iter()
        .map(|n| {
            let n = n.as_array()?;
            if n.len() < 5 {
                return None;
            }
            Some(NodeInfo {
                node_type: enum_of(&n[0], ext::NODE_TYPES)?,
                addr: match &n[1] {
                    Value::Nil => None,
                    a => Some(addr_of(a)?),
                },
                nid: nid_of(&n[2])?,
                state: enum_of(&n[3], ext::NODE_STATES)?,
                id_timestamp: match &n[4] {
                    Value::Nil => None,
                    Value::F64(f) => Some(*f),
                    Value::F32(f) => Some(*f as f64),
                    v => Some(v.as_f64()?),
                },
            })
        })
        .collect()
}

/// `SendPartitionTable(ptid, num_replicas, rows)`: rows of `[nid, state]`.
pub fn partition_table_of(args: &[Value]) -> Option<(u64, Vec<Row>)> {
    if args.len() < 3 {
        return None;
    }
    let ptid = args[0].as_u64().unwrap_or(0);
    let rows = args[2]
        .as_array()?
        .iter()
        .map(|row| {
            row.as_array()?
                .iter()
                .map(|cell| {
                    let c = cell.as_array()?;
                    if c.len() < 2 {
                        return None;
                    }
                    Some((nid_of(&c[0])??, enum_of(&c[1], ext::CELL_STATES)?))
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect::<Option<Vec<_>>>()?;
    Some((ptid, rows))
}

/// `NotifyPartitionChanges(ptid, num_replicas, [[offset, nid, state], …])`.
pub fn partition_changes_of(args: &[Value]) -> Option<(u64, Vec<CellChange>)> {
    if args.len() < 3 {
        return None;
    }
    let ptid = args[0].as_u64().unwrap_or(0);
    let cells = args[2]
        .as_array()?
        .iter()
        .map(|c| {
            let c = c.as_array()?;
            if c.len() < 3 {
                return None;
            }
            Some((
                u32::try_from(c[0].as_u64()?).ok()?,
                nid_of(&c[1])??,
                enum_of(&c[2], ext::CELL_STATES)?,
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((ptid, cells))
}

/// `InvalidateObjects(tid, [oid, …])`.
pub fn invalidation_of(args: &[Value]) -> Option<(Tid, Vec<Oid>)> {
    if args.len() < 2 {
        return None;
    }
    let tid = tid_of(&args[0])?;
    let oids = args[1]
        .as_array()?
        .iter()
        .map(oid_of)
        .collect::<Option<Vec<_>>>()?;
    Some((tid, oids))
}

/// `NotPrimaryMaster(primary_index | None, [[host, port], …])`: the
/// primary's address if named, and every master known.
pub fn not_primary_of(args: &[Value]) -> Option<(Option<Addr>, Vec<Addr>)> {
    if args.len() < 2 {
        return None;
    }
    let known = args[1]
        .as_array()?
        .iter()
        .map(addr_of)
        .collect::<Option<Vec<_>>>()?;
    let primary = match &args[0] {
        Value::Nil => None,
        v => Some(known.get(usize::try_from(v.as_u64()?).ok()?)?.clone()),
    };
    Some((primary, known))
}

/// `Error(code, message)`.
pub fn error_of(args: &[Value]) -> Option<(i64, String)> {
    if args.len() < 2 {
        return None;
    }
    let code = enum_of(&args[0], ext::ERROR_CODES).or_else(|| args[0].as_i64())?;
    Some((code, text_of(&args[1]).unwrap_or_default()))
}

/// `AnswerObject(oid, serial, next_serial, compression, checksum, data, data_serial)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectAnswer {
    pub oid: Oid,
    pub serial: Tid,
    pub compression: Option<u64>,
    pub checksum: Vec<u8>,
    pub data: Bytes,
    pub data_serial: Option<Tid>,
}

pub fn object_of(p: Packet) -> Option<ObjectAnswer> {
    let mut args = p.args;
    if args.len() < 7 {
        return None;
    }
    let data = match (p.data, std::mem::replace(&mut args[5], Value::Nil)) {
        (Some(d), _) => d,
        (None, Value::Binary(b)) => Bytes::from(b),
        _ => return None,
    };
    let checksum = match std::mem::replace(&mut args[4], Value::Nil) {
        Value::Binary(b) => b,
        _ => return None,
    };
    Some(ObjectAnswer {
        oid: oid_of(&args[0])?,
        serial: tid_of(&args[1])?,
        compression: match &args[3] {
            Value::Nil => None,
            v => Some(v.as_u64()?),
        },
        checksum,
        data,
        data_serial: match &args[6] {
            Value::Nil => None,
            v => Some(tid_of(v)?),
        },
    })
}

/// `AnswerTIDsFrom([tid, …])` / `AnswerTIDs([tid, …])`.
pub fn tids_of(args: &[Value]) -> Option<Vec<Tid>> {
    args.first()?.as_array()?.iter().map(tid_of).collect()
}

/// `AnswerOIDsFrom(next_min_oid | nil, [oid, …])`: where the next chunk
/// starts (None: this was the last) and this chunk's oids.
pub fn oids_from_of(args: &[Value]) -> Option<(Option<Oid>, Vec<Oid>)> {
    let next = match args.first()? {
        Value::Nil => None,
        v => Some(oid_of(v)?),
    };
    let oids = args
        .get(1)?
        .as_array()?
        .iter()
        .map(oid_of)
        .collect::<Option<Vec<_>>>()?;
    Some((next, oids))
}

/// `AnswerTransactionInformation(tid, user, desc, ext, packed, [oid, …])`:
/// (tid, oids).
pub fn transaction_information_of(args: &[Value]) -> Option<(Tid, Vec<Oid>)> {
    if args.len() < 6 {
        return None;
    }
    let oids = args[5]
        .as_array()?
        .iter()
        .map(oid_of)
        .collect::<Option<Vec<_>>>()?;
    Some((tid_of(&args[0])?, oids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn handshake_bytes_and_checks() {
        assert_eq!(enc(&Value::Array(vec!["NEO".into(), 5.into()])), HANDSHAKE);
        assert!(check_handshake(&HANDSHAKE).is_ok());
        let e = check_handshake(&[0x92, 0xa3, b'N', b'E', b'O', 4]).unwrap_err();
        assert!(e.contains("version 4"), "{e}");
        assert!(check_handshake(&[0x16, 3, 1, 0, 0, 0])
            .unwrap_err()
            .contains("TLS"));
        assert!(check_handshake(b"HTTP/1")
            .unwrap_err()
            .contains("not a NEO node"));
    }

    #[test]
    fn frame_len_of_every_prefix() {
        let p = encode_packet(
            7,
            0x8020,
            vec![
                bin(&[1; 8]),
                bin(&vec![9u8; 70000]),
                Value::Nil,
                enum_value(ext::NODE_TYPES, 2),
                Value::Map(vec![(bin(b"k"), Value::F64(1.5))]),
                Value::from(-5i64),
                Value::from(u64::MAX),
                Value::String("s".into()),
            ],
        );
        let mut two = p.clone();
        two.extend_from_slice(&p);
        assert_eq!(frame_len(&two, 1 << 20), Ok(Some(p.len())));
        for n in 0..p.len() {
            assert_eq!(frame_len(&p[..n], 1 << 20), Ok(None), "prefix {n}");
            // What the reader makes room for: more than it has, never
            // more than the packet.
            let Ok(Need::AtLeast(m)) = frame_need(&p[..n], 1 << 20) else {
                panic!("prefix {n}: not AtLeast");
            };
            assert!(
                n < m && m <= p.len(),
                "prefix {n}: at least {m} of {}",
                p.len()
            );
            // Once the big argument's header is in ([0x93, 7, 0xcd 80 20,
            // 0x98, 10 bytes of oid, then 0xc6 and 4 bytes of length), its
            // whole length is known.
            if n >= 21 {
                assert!(m >= 21 + 70000, "prefix {n}: at least {m}");
            }
        }
        let pk = decode_packet(&p).unwrap();
        assert_eq!((pk.id, pk.code, pk.args.len()), (7, 0x8020, 8));
        assert_eq!(enum_of(&pk.args[3], ext::NODE_TYPES), Some(2));
        // Too big for the limit: refused from the header alone.
        assert_eq!(
            frame_len(&p[..24], 1000),
            Err(WireError::TooBig { max: 1000 })
        );
    }

    /// Packets of many small items arriving 97 bytes at a time, walked
    /// when the reader would walk them (once it has what the last walk
    /// said is needed at least): the bound holds at every walk, and the
    /// walks are few. A walk cut short inside a payload always said how
    /// much of the rest is missing; one cut at an item's marker said "one
    /// more byte", so a packet of one-byte items (small ints, nils) was
    /// walked again after every read.
    #[test]
    fn many_small_items_are_walked_a_few_times() {
        let walks = |p: &[u8]| {
            let (mut walks, mut want, mut have) = (0, 1usize, 0usize);
            while have < p.len() {
                have = (have + 97).min(p.len());
                if have < want {
                    continue;
                }
                walks += 1;
                match frame_need(&p[..have], 1 << 24).unwrap() {
                    Need::Frame(n) => assert_eq!((n, have), (p.len(), p.len())),
                    Need::AtLeast(m) => {
                        assert!(
                            have < m && m <= p.len(),
                            "{have}: at least {m} of {}",
                            p.len()
                        );
                        want = m;
                    }
                }
            }
            walks
        };
        // An invalidation of 20,000 oids (10 bytes each): 2,000 reads.
        let oids: Vec<Value> = (0..20_000u64).map(|i| oid_value(Oid(i))).collect();
        let p = encode_packet(
            3,
            code::INVALIDATE_OBJECTS,
            vec![tid_value(Tid(9)), Value::Array(oids)],
        );
        let n = walks(&p);
        assert!(n < 120, "{n} walks for {} reads", p.len() / 97);
        // 50,000 one-byte items: 515 reads, each one walked before.
        let small: Vec<Value> = (0..50_000u64).map(|i| Value::from(i % 100)).collect();
        let p = encode_packet(4, code::PING, vec![Value::Array(small)]);
        let n = walks(&p);
        assert!(n < 10, "{n} walks for {} reads", p.len() / 97);
    }

    /// An object's data is a slice of the frame, not in the arguments;
    /// other packets keep every argument.
    #[test]
    fn object_data_is_a_slice_of_the_frame() {
        let args = vec![
            oid_value(Oid(1)),
            tid_value(Tid(2)),
            Value::Nil,
            0.into(),
            bin(&sha1(b"block")),
            bin(b"block"),
            Value::Nil,
        ];
        let frame = Bytes::from(encode_packet(3, ANSWER_OBJECT, args.clone()));
        let p = decode_frame(frame.clone()).unwrap();
        assert_eq!(p.args[5], Value::Nil);
        let data = p.data.clone().unwrap();
        assert_eq!(&data[..], b"block");
        // The same memory as the frame's.
        let at = data.as_ptr() as usize - frame.as_ptr() as usize;
        assert_eq!(&frame[at..at + 5], b"block");
        let o = object_of(p).unwrap();
        assert_eq!((&o.data[..], o.serial), (&b"block"[..], Tid(2)));
        assert_eq!(o.checksum, sha1(b"block"));
        // Not an AnswerObject: decoded whole.
        let p = decode_packet(&encode_packet(3, code::ASK_OBJECT, args.clone())).unwrap();
        assert_eq!((p.args, p.data), (args, None));
    }

    #[test]
    fn frame_len_refuses_lies_and_depth() {
        // An array claiming 2^32-1 items in 5 bytes.
        assert!(matches!(
            frame_len(&[0xdd, 0xff, 0xff, 0xff, 0xff], 1 << 20),
            Err(WireError::TooBig { .. })
        ));
        assert_eq!(frame_len(&[0xc1], 100), Err(WireError::BadMarker(0xc1)));
        let deep = vec![0x91u8; 100];
        assert_eq!(frame_len(&deep, 1 << 20), Err(WireError::TooDeep));
    }

    #[test]
    fn decode_rejects_non_packets() {
        for v in [
            Value::from(1),
            Value::Array(vec![1.into(), 2.into()]),
            Value::Array(vec![1.into(), 0x1_0000.into(), Value::Array(vec![])]),
            Value::Array(vec![(-1).into(), 1.into(), Value::Array(vec![])]),
            Value::Array(vec![1.into(), 1.into(), Value::Nil]),
        ] {
            assert!(decode_packet(&enc(&v)).is_err(), "{v:?}");
        }
    }

    /// What the fuzz target does, briefly, in every test run: random and
    /// mutated packets give packets or errors, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        let good = encode_packet(
            3,
            0x8020,
            vec![
                oid_value(Oid(1)),
                tid_value(Tid(2)),
                Value::Nil,
                1.into(),
                bin(&[0; 20]),
                bin(b"data"),
                Value::Nil,
            ],
        );
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut b = if i % 2 == 0 {
                good.clone()
            } else {
                (0..next() % 64).map(|_| next() as u8).collect()
            };
            for _ in 0..1 + next() % 4 {
                if !b.is_empty() {
                    let k = (next() % b.len() as u64) as usize;
                    b[k] = next() as u8;
                }
            }
            if let Ok(Some(n)) = frame_len(&b, 1 << 16) {
                assert!(n <= b.len());
                if let Ok(p) = decode_packet(&b[..n]) {
                    let _ = object_of(p.clone());
                    let _ = node_information_of(&p.args);
                    let _ = partition_table_of(&p.args);
                    let _ = not_primary_of(&p.args);
                    let _ = accept_of(&p.args);
                }
            }
            let _ = check_handshake(&b[..b.len().min(6)]);
        }
    }

    #[test]
    fn messages() {
        let ni = vec![
            Value::F64(1.0),
            Value::Array(vec![Value::Array(vec![
                enum_value(ext::NODE_TYPES, NODE_STORAGE),
                Value::Array(vec![bin(b"127.0.0.1"), 1234.into()]),
                1.into(),
                enum_value(ext::NODE_STATES, STATE_RUNNING),
                Value::F64(2.5),
            ])]),
        ];
        let n = node_information_of(&ni).unwrap();
        assert_eq!(n[0].addr, Some(("127.0.0.1".into(), 1234)));
        assert_eq!((n[0].nid, n[0].state), (Some(1), STATE_RUNNING));
        let np = vec![
            1.into(),
            Value::Array(vec![
                Value::Array(vec![bin(b"a"), 1.into()]),
                Value::Array(vec![bin(b"b"), 2.into()]),
            ]),
        ];
        assert_eq!(not_primary_of(&np).unwrap().0, Some(("b".into(), 2)));
        let err = vec![
            enum_value(ext::ERROR_CODES, errcode::OID_NOT_FOUND),
            bin(b"x"),
        ];
        assert_eq!(error_of(&err), Some((errcode::OID_NOT_FOUND, "x".into())));
    }

    #[test]
    fn answer_oids_from() {
        let oid = |n: u64| oid_value(Oid(n));
        let more = vec![oid(24), Value::Array(vec![oid(0), oid(12)])];
        assert_eq!(
            oids_from_of(&more),
            Some((Some(Oid(24)), vec![Oid(0), Oid(12)]))
        );
        let last = vec![Value::Nil, Value::Array(vec![])];
        assert_eq!(oids_from_of(&last), Some((None, vec![])));
        // An oid that is not 8 bytes, a missing list: malformed.
        assert_eq!(oids_from_of(&[bin(b"x"), Value::Array(vec![])]), None);
        assert_eq!(oids_from_of(&[Value::Nil]), None);
        assert_eq!(
            oids_from_of(&[Value::Nil, Value::Array(vec![bin(&[1; 7])])]),
            None
        );
    }
}
