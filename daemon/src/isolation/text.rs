//! The words of the protocol: every line the daemon sends on `head/watch`
//! other than pins and `ok`, worded as upstream wcfs words them — its
//! clients match on these texts (SPEC §6).
//!
//! Upstream is written in Go, so some texts carry Go's formatting: `%q`
//! quoting ([`quote`]) and `time.Duration` ([`duration`]). Both are
//! re-implemented here from their documented behaviour.
//!
//! - watch setup errors: `<stream> error setup watch f<oid> @<at>: <why>`
//!   ([`setup_error`]) with the reasons of [`Why`];
//! - requests that do not parse: `<stream> error bad watch: <why>`;
//! - lines that are not frames, and replies nobody waits for:
//!   `0 error: <why>`, then the link is shut down;
//! - a pin answered wrongly or not in time: `0 fatal: pin #<blk> @<rev>:
//!   <why>`, then the client is killed.

use zodb::{Oid, Tid};

/// `@<at>` of a `watch <oid> -`: upstream's invalid tid.
pub(crate) const NO_AT: Tid = Tid(u64::MAX);

/// Why a watch setup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Why {
    /// Never opened under head/bigfile, or not a ZBigFile.
    NotKnown,
    /// `at` older than the link's current `at` for the file.
    GoingBack,
    /// `at` older than the kept history.
    TooFarBack { head: Tid, at: Tid },
    /// The file object changed (created, blksize or blktab replaced) at
    /// `rev` in `(at, head]`.
    Epoch { rev: Tid, head: Tid },
    /// Head did not reach `at` within the storage wait (the storage
    /// server is away, or `at` is in the future).
    HeadBehind {
        head: Tid,
        waited: std::time::Duration,
    },
    /// `at` is before the storage's pack point: its history is gone.
    Packed { packed: Tid },
    /// Anything of ours (EIO mode, a thread we could not start).
    Other(String),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NotKnown => write!(f, "file not yet known to wcfs or is not a ZBigFile"),
            Why::GoingBack => write!(f, "going back in history is forbidden"),
            Why::TooFarBack { head, at } => write!(
                f,
                "too far away back from head/at (@{head}); δt = {}",
                duration((head.unix_micros() - at.unix_micros()) as i128 * 1000)
            ),
            Why::Epoch { rev, head } => {
                write!(f, "file epoch detected @{rev} in between (at,head=@{head}]")
            }
            Why::HeadBehind { head, waited } => write!(
                f,
                "head/at (@{head}) did not reach at within {}",
                duration(waited.as_nanos() as i128)
            ),
            Why::Packed { packed } => write!(
                f,
                "the database was packed at @{packed}: history before it is gone"
            ),
            Why::Other(s) => write!(f, "{s}"),
        }
    }
}

/// `<stream> error setup watch f<file> @<at>: <why>` (without `\n`).
pub(crate) fn setup_error(stream: u64, file: Oid, at: Tid, why: &Why) -> String {
    format!("{stream} error setup watch f<{file}> @{at}: {why}")
}

/// Go's `strconv.Quote` of `b`: double quotes, `\"` and `\\`, the C
/// escapes, `\xNN` for other control bytes and for bytes that are not
/// UTF-8, `\uNNNN`/`\UNNNNNNNN` for other non-printable characters.
pub(crate) fn quote(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 2);
    out.push('"');
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                ' ' => out.push(' '),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_ascii() => out.push(c),
                // Go prints letters, marks, numbers, punctuation and
                // symbols; spaces and controls other than ' ' are escaped.
                c if !c.is_control() && !c.is_whitespace() => out.push(c),
                c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push_str(&format!("\\U{:08x}", c as u32)),
            }
        }
        for &x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out.push('"');
    out
}

/// Go's `time.Duration.String` of `ns` nanoseconds: `0s`, `1.5µs`,
/// `12.345ms`, `2m0.5s`, `1h0m0s`, with a leading `-` when negative.
pub(crate) fn duration(ns: i128) -> String {
    let neg = ns < 0;
    let mut u = ns.unsigned_abs();
    let mut s = String::new();
    const SEC: u128 = 1_000_000_000;
    if u < SEC {
        if u == 0 {
            return "0s".into();
        }
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (frac, int) = fraction(u, prec);
        s.push_str(&format!("{int}{frac}{unit}"));
    } else {
        let (frac, secs) = fraction(u, 9);
        u = secs;
        let sec = u % 60;
        u /= 60;
        if u > 0 {
            let min = u % 60;
            u /= 60;
            if u > 0 {
                s.push_str(&format!("{u}h"));
            }
            s.push_str(&format!("{min}m"));
        }
        s.push_str(&format!("{sec}{frac}s"));
    }
    if neg {
        s.insert(0, '-');
    }
    s
}

/// `v / 10^prec` as (".digits" without trailing zeros — empty when they
/// are all zero —, integer part).
fn fraction(v: u128, prec: u32) -> (String, u128) {
    let p = 10u128.pow(prec);
    let (int, frac) = (v / p, v % p);
    if frac == 0 {
        return (String::new(), int);
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (format!(".{}", digits.trim_end_matches('0')), int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(i128, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_500, "1.5µs"),
            (1_000_000, "1ms"),
            (12_345_678, "12.345678ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (120_500_000_000, "2m0.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (-1_500_000_000, "-1.5s"),
            (-999, "-999ns"),
        ];
        for &(ns, want) in cases {
            assert_eq!(duration(ns), want, "{ns}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(b"bla bla"), r#""bla bla""#);
        assert_eq!(quote(b"zzz hello\n"), r#""zzz hello\n""#);
        assert_eq!(quote(b"a\"b\\c\t\x01\x7f"), r#""a\"b\\c\t\x01\x7f""#);
        assert_eq!(quote("δt ok".as_bytes()), "\"δt ok\"");
        assert_eq!(quote(b"\xff\xfeA"), r#""\xff\xfeA""#);
        assert_eq!(quote("\u{a0}\u{2028}".as_bytes()), r#""\u00a0\u2028""#);
    }
}
