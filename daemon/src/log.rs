//! A tiny logger: glog-style timestamped lines on stderr.
//!
//! Upstream wcfs logs through glog, and tools that start the daemon expect
//! its look; we keep the format (`I1125 21:38:12.123456 pid target] msg`) but
//! none of glog's machinery — the glog flags are accepted and ignored by the
//! CLI. Everything goes to stderr, unbuffered per line, so a crash never
//! loses the reason.
//!
//! Levels: info and above always; debug with `-debug` for our own targets
//! (not for the PostgreSQL client's, which logs every statement);
//! fuser's per-request debug lines (target `fuser::…`) only with
//! `-trace.fuse`, since they are one line per FUSE request.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

struct Logger {
    debug: bool,
    trace_fuse: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger (once; later calls are ignored).
pub fn init(debug: bool, trace_fuse: bool) {
    let logger = LOGGER.get_or_init(|| Logger { debug, trace_fuse });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(if debug || trace_fuse {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        // fuser's lines, and ours of requests over io_uring (fs::uring).
        let fuser = m.target().starts_with("fuser") || m.target() == "fuse_trace";
        match m.level() {
            Level::Error | Level::Warn => true,
            // fuser logs mount chatter at info level: keep it for -trace.fuse.
            Level::Info => !fuser || self.trace_fuse,
            Level::Debug => {
                if fuser {
                    self.trace_fuse
                } else {
                    // The PostgreSQL client logs every statement it runs.
                    self.debug && !m.target().starts_with("tokio_postgres")
                }
            }
            Level::Trace => false,
        }
    }

    fn log(&self, r: &Record) {
        let level = r.level();
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!(
            "{}{} {:>7} {}] {}\n",
            match level {
                Level::Error => 'E',
                Level::Warn => 'W',
                Level::Info => 'I',
                Level::Debug | Level::Trace => 'D',
            },
            timestamp(SystemTime::now()),
            std::process::id(),
            r.target(),
            Escaped(r.args())
        );
        // One write per line: lines of concurrent threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// A message with its control characters escaped (`\n`, `\r`, `\t`,
/// `\u{1b}`, …): one record is one line, and nothing in a message — a
/// zurl, a path, a client's text — can end a line or forge another, or
/// send escape sequences to a terminal showing the log.
struct Escaped<'a>(&'a std::fmt::Arguments<'a>);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let msg = match self.0.as_str() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(self.0.to_string()),
        };
        for c in msg.chars() {
            if c.is_control() {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// `MMDD HH:MM:SS.uuuuuu` in UTC, as glog prints it.
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, sod) = ((secs / 86400) as i64, secs % 86400);
    let (_, month, day) = civil_from_days(days);
    format!(
        "{month:02}{day:02} {:02}:{:02}:{:02}.{:06}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn messages_are_one_line() {
        let zurl = "file:///tmp/a\nI1125 forged] b\r\u{1b}[2J\u{85}c";
        let got = Escaped(&format_args!("serving {zurl}")).to_string();
        assert_eq!(
            got,
            "serving file:///tmp/a\\nI1125 forged] b\\r\\u{1b}[2J\\u{85}c"
        );
        assert!(!got.chars().any(char::is_control), "{got:?}");
        let plain = Escaped(&format_args!("plain {} é", 1)).to_string();
        assert_eq!(plain, "plain 1 é");
    }

    #[test]
    fn timestamps() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(timestamp(t), "1114 22:13:20.123456");
    }
}
