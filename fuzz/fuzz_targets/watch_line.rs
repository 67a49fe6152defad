#![no_main]
// head/watch lines as a client may write them, and -pintimeout values: the
// daemon's parsers must answer every input with Ok or Err, never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for raw in data.split(|&b| b == b'\n') {
        if let Ok((_stream, msg)) = wcfsd::protocol::parse_frame(raw) {
            let _ = wcfsd::protocol::parse_request(msg);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = wcfsd::cli::parse_duration(s);
    }
});
