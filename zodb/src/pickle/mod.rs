//! Pickle decoding.
//!
//! (Module prose to be written with the decoder: design, limits, what maps to what.)

mod value;
pub use value::Value;

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
/// Returns the value and the position just after its STOP opcode (ZODB
/// records hold two pickles back to back). Byte strings in the result are
/// zero-copy slices of `buf`.
pub fn decode(buf: &bytes::Bytes, start: usize) -> Result<(Value, usize), Error> {
    let _ = (buf, start);
    todo!("pickle decoder")
}
