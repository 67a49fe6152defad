//! Transaction ids and object ids.
//!
//! Both are 8-byte big-endian integers in storage and 16 lower-case hex digits
//! in text. A tid also encodes the UTC time of its commit: the high 32 bits
//! count minutes since 1900-01-01 00:00 (months of 31 days, years of 12
//! months — the encoding is not a calendar, it is only monotone), the low 32
//! bits are the seconds within that minute scaled by 2^32/60.

use std::fmt;
use std::str::FromStr;

/// Error returned when parsing a 16-hex-digit tid or oid fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {text:?}: want 16 hex digits")]
pub struct ParseIdError {
    what: &'static str,
    text: String,
}

fn parse_hex16(what: &'static str, s: &str) -> Result<u64, ParseIdError> {
    let err = || ParseIdError {
        what,
        text: s.chars().take(64).collect(),
    };
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err());
    }
    u64::from_str_radix(s, 16).map_err(|_| err())
}

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn new(v: u64) -> Self {
                Self(v)
            }
            pub const fn from_bytes(b: [u8; 8]) -> Self {
                Self(u64::from_be_bytes(b))
            }
            pub const fn to_bytes(self) -> [u8; 8] {
                self.0.to_be_bytes()
            }
            /// Reads an id from the first 8 bytes of `b`; `None` if `b` is shorter.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                let a: [u8; 8] = b.get(..8)?.try_into().ok()?;
                Some(Self::from_bytes(a))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, ":{:016x}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                parse_hex16($what, s).map(Self)
            }
        }
    };
}

id_type!(Tid, "tid");
id_type!(Oid, "oid");

impl Tid {
    /// The largest tid: "as of the latest state".
    pub const MAX: Tid = Tid(u64::MAX);
    /// The zero tid; no transaction has it.
    pub const ZERO: Tid = Tid(0);

    /// The UTC time this tid encodes.
    pub fn time(self) -> TidTime {
        let minutes = self.0 >> 32;
        let frac = self.0 & 0xffff_ffff;
        let minute = minutes % 60;
        let hours = minutes / 60;
        let hour = hours % 24;
        let days = hours / 24;
        let day = days % 31 + 1;
        let months = days / 31;
        let month = months % 12 + 1;
        let year = months / 12 + 1900;
        TidTime {
            year: year as u32,
            month: month as u32,
            day: day as u32,
            hour: hour as u32,
            minute: minute as u32,
            second: frac as f64 * 60.0 / 4294967296.0,
        }
    }

    /// Seconds since the Unix epoch that this tid encodes (microsecond
    /// precision is all a tid carries in practice).
    pub fn unix_time(self) -> f64 {
        let t = self.time();
        days_from_civil(t.year as i64, t.month, t.day) as f64 * 86400.0
            + t.hour as f64 * 3600.0
            + t.minute as f64 * 60.0
            + t.second
    }
}

impl Tid {
    /// Microseconds since the Unix epoch, in integers: the seconds of the
    /// low 32 bits to the nanosecond (truncated), then rounded half up to
    /// the microsecond — the time ZODB/py's `TimeStamp` prints and
    /// upstream wcfs computes with.
    pub fn unix_micros(self) -> i64 {
        let t = self.time();
        let sixty = (self.0 & 0xffff_ffff) * 60;
        let sec = sixty >> 32;
        let nsec = ((sixty - (sec << 32)) * 1_000_000_000) >> 32;
        let days = days_from_civil(t.year as i64, t.month, t.day);
        let secs = ((days * 24 + t.hour as i64) * 60 + t.minute as i64) * 60 + sec as i64;
        secs * 1_000_000 + (nsec / 1000) as i64 + i64::from(nsec % 1000 >= 500)
    }
}

/// The broken-down UTC time a [`Tid`] encodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TidTime {
    pub year: u32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: f64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Days beyond the end
/// of a month (which a tid can encode, its months having 31 days) simply run
/// on into the next month.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m as i64 + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_roundtrip() {
        let t: Tid = "0285cbac3851eb99".parse().unwrap();
        assert_eq!(t.0, 0x0285cbac3851eb99);
        assert_eq!(t.to_string(), "0285cbac3851eb99");
        assert!("0285cbac3851eb9".parse::<Tid>().is_err());
        assert!("0285cbac3851eb9g".parse::<Oid>().is_err());
        assert!("+285cbac3851eb99".parse::<Oid>().is_err());
        assert_eq!(Oid::from_bytes([0, 0, 0, 0, 0, 0, 1, 2]).0, 0x102);
    }

    #[test]
    fn time_matches_formula() {
        // 2018-04-03 12:34:56.5 encoded with the SPEC's formula.
        let (y, mo, d, h, mi) = (2018u64, 4u64, 3u64, 12u64, 34u64);
        let hi = ((((y - 1900) * 12 + mo - 1) * 31 + d - 1) * 24 + h) * 60 + mi;
        let lo = (56.5f64 * 4294967296.0 / 60.0) as u64;
        let t = Tid((hi << 32) | lo).time();
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute),
            (2018, 4, 3, 12, 34)
        );
        assert!((t.second - 56.5).abs() < 1e-6);
        let unix = Tid((hi << 32) | lo).unix_time();
        assert!((unix - 1522758896.5).abs() < 1e-3, "{unix}");
        assert_eq!(Tid((hi << 32) | lo).unix_micros(), 1_522_758_896_500_000);
    }

    #[test]
    fn unix_micros_rounds_like_zodb() {
        // ZODB/py: TimeStamp(p64(0x037969f722a53488)) prints
        // 2008-10-24 05:11:08.120000 (the nanoseconds end in ...999).
        let t = Tid(0x037969f722a53488);
        assert_eq!(t.unix_micros() % 60_000_000, 8_120_000);
        // Day 31 of a 30-day month runs on into the next month.
        let hi = (((2020 - 1900) * 12 + 3) * 31 + 30) * 24 * 60; // "April 31"
        assert_eq!(Tid(hi << 32).unix_micros(), 1_588_291_200_000_000); // May 1
    }
}
