#![no_main]
// FileStorage parsing on arbitrary bytes (to be wired to the in-memory reader).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = data;
});
