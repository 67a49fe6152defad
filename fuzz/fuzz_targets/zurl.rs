#![no_main]
// Every zurl form (file://, zeo:// with ?storage= and Unix sockets, zeos://,
// postgresql://, demo:(BASE)/(DELTA) nested): every input gives Ok or Err,
// never a panic, in bounded time; a demo: zurl that parses is exactly
// "demo:(" BASE ")/(" DELTA ")" with both parts zurls; the redaction of a
// zurl that parses is stable,
// changes nothing in a zurl without a secret, and never shows a password.
use libfuzzer_sys::fuzz_target;
use zodb::zurl::{self, ZUrl, ZeoAddr};

fuzz_target!(|data: &[u8]| {
    let Ok(z) = std::str::from_utf8(data) else {
        return;
    };
    let shown = zurl::redacted(z);
    let parsed = zurl::parse(z);
    match &parsed {
        // (Of a zurl that does not parse, the redacted form hides more
        // than needed, not always in one step: pg_zurl has the details.)
        Ok(_) => assert_eq!(zurl::redacted(&shown), shown, "redaction is stable"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match parsed {
        Ok(ZUrl::Demo { base, delta }) => {
            assert_eq!(format!("demo:({base})/({delta})"), z, "exact split");
            assert!(zurl::parse(&base).is_ok() && zurl::parse(&delta).is_ok());
            if !zurl::has_secret(z) {
                assert_eq!(shown, z);
            }
        }
        Ok(ZUrl::Zeo { storage, addr, tls }) => {
            assert!(!storage.is_empty());
            assert_eq!(shown, z, "a zeo zurl has no secret");
            // zeos:// alone is TLS, with a CA, a key only with a
            // certificate, a host name to check on a Unix socket.
            assert_eq!(tls.is_some(), z.starts_with("zeos://"));
            if let Some(t) = tls {
                assert!(!t.ca.as_os_str().is_empty());
                assert!(t.key.is_none() || t.cert.is_some());
                assert!(!matches!(addr, ZeoAddr::Unix(_)) || t.server_hostname.is_some());
            }
        }
        _ => {}
    }
});
