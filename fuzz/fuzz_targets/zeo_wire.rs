#![no_main]
// What a ZEO server sends, as the client's reader sees it: a byte stream
// cut into frames (arriving in pieces of any size, with timeouts between)
// and each frame decoded as a message, pickled and msgpacked. Every input
// must give frames or a clear error, never a panic nor an allocation beyond
// the frame limit; a decoded value that an encoder accepts must decode
// back to itself.
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::io::{self, Read};
use zodb::pickle::Value;
use zodb::storage::zeo::wire::{self, Codec, FrameReader, Message, WireError};

/// Hands out the stream in pieces of 1..=`step` bytes, a timeout before
/// every other piece.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
    n: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.n += 1;
        if self.n % 2 == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let k = (self.n % self.step + 1).min(buf.len()).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

fn lists_as_tuples(v: Value) -> Value {
    match v {
        Value::List(items) | Value::Tuple(items) => {
            Value::Tuple(items.into_iter().map(lists_as_tuples).collect())
        }
        Value::Dict(items) => Value::Dict(
            items
                .into_iter()
                .map(|(k, v)| (lists_as_tuples(k), lists_as_tuples(v)))
                .collect(),
        ),
        other => other,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let mut r = Pieces {
        data: stream,
        step: 1 + first as usize * 64,
        n: 0,
    };
    let mut fr = FrameReader::new(1 << 20);
    loop {
        let frame = match fr.next(&mut r) {
            Ok(f) => f,
            Err(WireError::Timeout) => continue,
            Err(_) => break,
        };
        assert!(frame.len() <= 1 << 20);
        for codec in [Codec::Pickle, Codec::Msgpack] {
            let Ok(msg) = wire::decode_message_with(codec, &frame) else {
                continue;
            };
            let v = match msg {
                Message::Reply { result: Ok(v), .. } => v,
                Message::Call { args, .. } => args,
                Message::Reply { result: Err(_), .. } => continue,
            };
            let mut enc = Vec::new();
            if wire::encode(&v, &mut enc).is_ok() {
                let (back, end) = zodb::pickle::decode(&Bytes::from(enc.clone()), 0)
                    .expect("our own pickle decodes");
                assert_eq!(end, enc.len());
                assert_eq!(back, v);
            }
            let mut enc = Vec::new();
            if wire::encode_msgpack(&v, &mut enc, 0).is_ok() {
                let (back, end) = wire::decode_msgpack(&Bytes::from(enc.clone()), 0)
                    .expect("our own msgpack decodes");
                assert_eq!(end, enc.len());
                // Lists come back as tuples (msgpack has one array type).
                assert_eq!(back, lists_as_tuples(v.clone()));
            }
        }
    }
});
