//! Command line of `wcfsd` (SPEC §4).
//!
//! Go-style flags, as upstream's wcfs (written in Go) takes them: `-flag`
//! and `--flag` are the same, a value is the next argument or follows `=`.
//! The glog flags upstream's tooling passes (`-logtostderr`,
//! `-alsologtostderr`, `-v N`, `-log_dir D`) are accepted and ignored: we
//! always log to stderr. Parsing is kept free of side effects so that it can
//! be tested without a mount.

use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: wcfsd [options] ZURL MOUNTPOINT   serve the ZBigFiles of ZURL over FUSE at MOUNTPOINT
       wcfsd ls ZURL                     list the ZBigFiles of a database and check every block loads

ZURL is file://PATH or a plain path to a data.fs (zeo://HOST:PORT: not supported yet).

options (single or double dash):
  -debug           enable debugging features (.wcfs/debug/) and debug logging
  -autoexit        exit when no client has been active for a while: unmount
                   and exit once no file or directory of the mount has been
                   open and no request has come for 30s ($WCFS_AUTOEXIT_IDLE,
                   a Go duration, overrides the period); an unmount the
                   kernel refuses (mount still in use) keeps the daemon serving
  -pintimeout D    kill clients that don't answer a pin within D
                   (Go duration syntax: 30s, 1m, 500ms, 1h2m3.5s); default 30s
  -trace.fuse      log every FUSE request
  -h, -help        this help

accepted and ignored (glog compatibility): -logtostderr, -alsologtostderr,
-v N, -log_dir D.";

/// Default idle period of `-autoexit`.
pub const AUTOEXIT_IDLE: Duration = Duration::from_secs(30);

/// Environment variable overriding [`AUTOEXIT_IDLE`] (a Go duration; for
/// tests, which cannot wait half a minute).
pub const AUTOEXIT_IDLE_ENV: &str = "WCFS_AUTOEXIT_IDLE";

/// The idle period of `-autoexit` given the value of [`AUTOEXIT_IDLE_ENV`].
pub fn autoexit_idle(env: Option<&str>) -> Result<Duration, String> {
    match env {
        None | Some("") => Ok(AUTOEXIT_IDLE),
        Some(v) => {
            parse_duration(v).map_err(|e| format!("invalid ${AUTOEXIT_IDLE_ENV} {v:?}: {e}"))
        }
    }
}

/// Options of the serving daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub debug: bool,
    pub autoexit: bool,
    /// With `autoexit`: how long without clients before exiting.
    pub autoexit_idle: Duration,
    pub pintimeout: Duration,
    pub trace_fuse: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            debug: false,
            autoexit: false,
            autoexit_idle: AUTOEXIT_IDLE,
            pintimeout: Duration::from_secs(30),
            trace_fuse: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    Ls(String),
    Serve {
        zurl: String,
        mountpoint: PathBuf,
        opts: Options,
    },
}

/// Parses the arguments (without argv[0]).
pub fn parse(args: &[String]) -> Result<Command, String> {
    if let [cmd, rest @ ..] = args {
        if cmd == "ls" {
            return match rest {
                [zurl] => Ok(Command::Ls(zurl.clone())),
                _ => Err("usage: wcfsd ls ZURL".into()),
            };
        }
    }
    let mut opts = Options::default();
    let mut pos = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            pos.push(arg.clone());
            continue;
        };
        if flag.is_empty() {
            // "--": the rest is positional (Go's flag package stops at "--").
            pos.extend(it.by_ref().cloned());
            break;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("flag needs an argument: -{name}")),
            }
        };
        let bool_value = |name: &str| -> Result<bool, String> {
            match inline.as_deref() {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => Ok(true),
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => Ok(false),
                Some(v) => Err(format!("invalid boolean value {v:?} for -{name}")),
            }
        };
        match name {
            "h" | "help" => return Ok(Command::Help),
            "debug" => opts.debug = bool_value(name)?,
            "autoexit" => opts.autoexit = bool_value(name)?,
            "trace.fuse" => opts.trace_fuse = bool_value(name)?,
            "pintimeout" => {
                let v = value(name)?;
                opts.pintimeout = parse_duration(&v)
                    .map_err(|e| format!("invalid value {v:?} for -pintimeout: {e}"))?;
            }
            "logtostderr" | "alsologtostderr" => {
                bool_value(name)?;
            }
            "v" | "log_dir" => {
                value(name)?;
            }
            _ => return Err(format!("flag provided but not defined: -{name}")),
        }
    }
    match <[String; 2]>::try_from(pos) {
        Ok([zurl, mountpoint]) => Ok(Command::Serve {
            zurl,
            mountpoint: PathBuf::from(mountpoint),
            opts,
        }),
        Err(pos) => Err(format!(
            "want ZURL and MOUNTPOINT, got {} argument(s)",
            pos.len()
        )),
    }
}

/// Parses a Go duration: an optionally signed sequence of decimal numbers,
/// each with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`,
/// `m`, `h`), e.g. `300ms`, `1h2m3.5s`; a bare `0` is allowed. Negative
/// durations are refused: a timeout cannot be negative.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err("negative duration".into());
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let numlen = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..numlen];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(format!("invalid number in {s:?}"));
        }
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid number in {s:?}"))?;
        rest = &rest[numlen..];
        let unitlen = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unitlen] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit in duration {s:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unitlen..];
        total += n * scale;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn durations() {
        let ok =
            |s: &str, ms: u64| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        ok("30s", 30_000);
        ok("1m", 60_000);
        ok("500ms", 500);
        ok("1h2m3.5s", 3_723_500);
        ok("0", 0);
        ok("1.5h", 5_400_000);
        ok("+2s", 2000);
        ok("1000us", 1);
        ok("1000000ns", 1);
        assert_eq!(autoexit_idle(None), Ok(AUTOEXIT_IDLE));
        assert_eq!(autoexit_idle(Some("2s")), Ok(Duration::from_secs(2)));
        assert!(autoexit_idle(Some("2")).is_err());
        for bad in ["", "30", "1x", "-1s", "s", ".s", "1..2s", "1h 2m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags() {
        let serve = |s: &str| match parse(&args(s)) {
            Ok(Command::Serve {
                zurl,
                mountpoint,
                opts,
            }) => (zurl, mountpoint, opts),
            x => panic!("{s}: {x:?}"),
        };
        let (z, m, o) = serve("-debug --pintimeout 1m -trace.fuse file:///a/data.fs /mnt");
        assert_eq!(
            (z.as_str(), m.to_str().unwrap()),
            ("file:///a/data.fs", "/mnt")
        );
        assert!(o.debug && o.trace_fuse && !o.autoexit);
        assert_eq!(o.pintimeout, Duration::from_secs(60));
        let (_, _, o) =
            serve("-logtostderr -v 1 -log_dir /tmp --alsologtostderr -pintimeout=2s -autoexit z m");
        assert_eq!(o.pintimeout, Duration::from_secs(2));
        assert!(o.autoexit && !o.debug);
        let (_, _, o) = serve("z m");
        assert_eq!(o, Options::default());
        let (_, _, o) = serve("-debug=false z m");
        assert!(!o.debug);
        assert_eq!(parse(&args("--help")), Ok(Command::Help));
        assert_eq!(parse(&args("ls z")), Ok(Command::Ls("z".into())));
        for bad in [
            "z",
            "z m x",
            "-nope z m",
            "-pintimeout",
            "-pintimeout 3 z m",
            "ls",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
