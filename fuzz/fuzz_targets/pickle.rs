#![no_main]
// Pickle decoder + ZODB record decoding on arbitrary bytes: must never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = bytes::Bytes::copy_from_slice(data);
    let _ = zodb::pickle::decode(&buf, 0);
    let _ = zodb::serialize::decode_record(&buf);
});
