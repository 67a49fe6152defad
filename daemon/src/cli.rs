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
       wcfsd serve [options] ZURL        the same at ZURL's own mountpoint, in the foreground
       wcfsd start [options] ZURL        the same in the background, unless already served;
                                         prints the mountpoint once it serves
       wcfsd status [-timeout D] ZURL    whether the daemon of ZURL is healthy (exit status 0),
                                         absent (3), dead (1), stuck/unhealthy/foreign (4)
       wcfsd stop [-timeout D] ZURL      unmount and end the daemon of ZURL (a stuck or dead
                                         one too: its FUSE connection is aborted, it is killed
                                         and its mount detached)
       wcfsd ls ZURL                     list the ZBigFiles of a database (a data.fs, PostgreSQL)
                                         and check every block loads

ZURL is file://PATH or a plain path to a data.fs, zeo://HOST:PORT for a ZEO server, or
postgresql://[USER[:PASSWORD]@]HOST[:PORT][/DB][?PARAM=VALUE...] (postgres:// too; a libpq
URI, the libpq environment PGHOST, PGUSER, PGPASSWORD, ~/.pgpass, PGSERVICE... filling in the
rest) for a RelStorage database in PostgreSQL, on the primary or any streaming replica. A
password is never shown: .wcfs/zurl, the mount source and logs have postgresql://USER:***@...
ZURL's own mountpoint is /dev/shm/wcfs/<sha1 hex of ZURL>: where clients joining ZURL
(wcfs_join) look, and where they start `wcfsd -autoexit ZURL MOUNTPOINT` in the background
when asked to. Background daemons log to /dev/shm/wcfs/<sha1>.log. The binary joining
clients start is $WCFS_WCFSD, else wcfsd next to libwcfs.so (or in its prefix's bin/), else
next to the program, else on $PATH.
$WCFS_MOUNT_ROOT names another directory than /dev/shm/wcfs (for tests). Anything there
that is not wcfs's own (a symbolic link, another user's entry, a hard link) is refused.

options (single or double dash):
  -debug           enable debugging features (.wcfs/debug/) and debug logging
  -autoexit        exit when no client has been active for a while: unmount
                   and exit once no file or directory of the mount has been
                   open and no request has come for 30s ($WCFS_AUTOEXIT_IDLE,
                   a Go duration, overrides the period); an unmount the
                   kernel refuses (mount still in use) keeps the daemon serving
  -pintimeout D    kill clients that don't answer a pin within D
                   (Go duration syntax: 30s, 1m, 500ms, 1h2m3.5s); default 30s
  -storagewait D   while the storage server (zeo://, neo://, postgresql://) is
                   away or silent, a read or a watch setup that needs it waits
                   up to D for the reconnect and its answer, then fails (EIO,
                   or an error reply); default 30s
  -trace.fuse      log every FUSE request
  -uring           serve over FUSE over io_uring when the kernel offers it
                   (Linux >= 6.14, /sys/module/fuse/parameters/enable_uring
                   = Y): requests are then served on their caller's CPU
                   (experimental; default false: /dev/fuse)
  -h, -help        this help
  -V, -version     the version of wcfsd and the libwcfs ABI it is released with

status and stop: -timeout D is how long the daemon has to answer before it is
called stuck (default 5s).

accepted and ignored (glog compatibility): -logtostderr, -alsologtostderr,
-v N, -log_dir D.";

/// libwcfs's ABI version, from its one definition (`src/ffi/abi.rs` of
/// the workspace). wcfsd does not link libwcfs, but ships with it: the
/// version line tells which library (`libwcfs.so.<abi>`) it belongs to.
mod abi {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../src/ffi/abi.rs"));
}
pub use abi::WCFS_ABI_VERSION;

/// What `wcfsd -version` prints: the package version, then the libwcfs
/// ABI. The first line is `wcfsd <version>`, the form help2man (the man
/// page, packaging/) and scripts expect.
pub fn version_text() -> String {
    format!(
        "wcfsd {}\nlibwcfs ABI {WCFS_ABI_VERSION} (libwcfs.so.{WCFS_ABI_VERSION})",
        env!("CARGO_PKG_VERSION")
    )
}

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
    /// How long a request that needs an absent storage server waits for
    /// it (SPEC §3 "Storage servers come and go").
    pub storage_wait: Duration,
    pub trace_fuse: bool,
    /// Serve requests over FUSE over io_uring when the kernel offers it
    /// (`-uring`, off by default while experimental; see `fs::uring`).
    pub uring: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            debug: false,
            autoexit: false,
            autoexit_idle: AUTOEXIT_IDLE,
            pintimeout: Duration::from_secs(30),
            storage_wait: Duration::from_secs(30),
            trace_fuse: false,
            uring: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    Version,
    Ls(String),
    Serve {
        zurl: String,
        mountpoint: PathBuf,
        opts: Options,
    },
    /// `serve`: at the zurl's own mountpoint, in the foreground.
    ServeZurl {
        zurl: String,
        opts: Options,
    },
    /// `start`: in the background; `args` are the options as given, for
    /// the daemon started (validated here).
    Start {
        zurl: String,
        args: Vec<String>,
    },
    Status {
        zurl: String,
        timeout: Option<Duration>,
    },
    Stop {
        zurl: String,
        timeout: Option<Duration>,
    },
}

/// Options and positional arguments of a command line.
struct Parsed {
    opts: Options,
    pos: Vec<String>,
    /// The option arguments as given (flags with their values).
    raw: Vec<String>,
    help: bool,
    version: bool,
}

/// Parses the arguments (without argv[0]).
pub fn parse(args: &[String]) -> Result<Command, String> {
    if let [cmd, rest @ ..] = args {
        match cmd.as_str() {
            "ls" => {
                return match rest {
                    [zurl] => Ok(Command::Ls(zurl.clone())),
                    _ => Err("usage: wcfsd ls ZURL".into()),
                }
            }
            "serve" | "start" => {
                let p = parse_opts(rest)?;
                if let Some(c) = p.info() {
                    return Ok(c);
                }
                let [zurl] = <[String; 1]>::try_from(p.pos)
                    .map_err(|pos| format!("{cmd}: want ZURL, got {} argument(s)", pos.len()))?;
                check_zurl(&zurl)?;
                return Ok(if cmd == "serve" {
                    Command::ServeZurl { zurl, opts: p.opts }
                } else {
                    Command::Start { zurl, args: p.raw }
                });
            }
            "status" | "stop" => {
                let (zurl, timeout) = parse_status_args(cmd, rest)?;
                check_zurl(&zurl)?;
                return Ok(if cmd == "status" {
                    Command::Status { zurl, timeout }
                } else {
                    Command::Stop { zurl, timeout }
                });
            }
            _ => {}
        }
    }
    let p = parse_opts(args)?;
    if let Some(c) = p.info() {
        return Ok(c);
    }
    match <[String; 2]>::try_from(p.pos) {
        Ok([zurl, mountpoint]) => check_zurl(&zurl).map(|()| Command::Serve {
            zurl,
            mountpoint: PathBuf::from(mountpoint),
            opts: p.opts,
        }),
        Err(pos) => Err(format!(
            "want ZURL and MOUNTPOINT, got {} argument(s)",
            pos.len()
        )),
    }
}

/// A zurl that cannot name a storage (a bad URI, an unknown scheme) is a
/// usage error: said at once, with the zurl shown without its password.
fn check_zurl(zurl: &str) -> Result<(), String> {
    zodb::zurl::parse(zurl)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `status|stop [-timeout D] ZURL`.
fn parse_status_args(cmd: &str, args: &[String]) -> Result<(String, Option<Duration>), String> {
    let usage = || format!("usage: wcfsd {cmd} [-timeout D] ZURL");
    let mut timeout = None;
    let mut zurl = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let flag = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
        match flag.map(|f| f.split_once('=').unwrap_or((f, ""))) {
            Some(("timeout", inline)) => {
                let v = if inline.is_empty() {
                    it.next().ok_or_else(usage)?.as_str()
                } else {
                    inline
                };
                timeout = Some(
                    parse_duration(v)
                        .map_err(|e| format!("invalid value {v:?} for -timeout: {e}"))?,
                );
            }
            Some(_) => return Err(usage()),
            None if zurl.is_none() => zurl = Some(arg.clone()),
            None => return Err(usage()),
        }
    }
    Ok((zurl.ok_or_else(usage)?, timeout))
}

impl Parsed {
    /// `-help` or `-version`, which win over everything else given (the
    /// first of them, as parsing stops there).
    fn info(&self) -> Option<Command> {
        if self.help {
            Some(Command::Help)
        } else if self.version {
            Some(Command::Version)
        } else {
            None
        }
    }
}

/// The daemon's options and the positional arguments.
fn parse_opts(args: &[String]) -> Result<Parsed, String> {
    let mut p = Parsed {
        opts: Options::default(),
        pos: Vec::new(),
        raw: Vec::new(),
        help: false,
        version: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            p.pos.push(arg.clone());
            continue;
        };
        if flag.is_empty() {
            // "--": the rest is positional (Go's flag package stops at "--").
            p.pos.extend(it.by_ref().cloned());
            break;
        }
        p.raw.push(arg.clone());
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let raw = &mut p.raw;
        let mut value = |name: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => {
                    let v = it
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("flag needs an argument: -{name}"))?;
                    raw.push(v.clone());
                    Ok(v)
                }
            }
        };
        let bool_value = |name: &str| -> Result<bool, String> {
            match inline.as_deref() {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => Ok(true),
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => Ok(false),
                Some(v) => Err(format!("invalid boolean value {v:?} for -{name}")),
            }
        };
        let opts = &mut p.opts;
        match name {
            "h" | "help" => {
                p.help = true;
                break;
            }
            "V" | "version" => {
                p.version = true;
                break;
            }
            "debug" => opts.debug = bool_value(name)?,
            "autoexit" => opts.autoexit = bool_value(name)?,
            "trace.fuse" => opts.trace_fuse = bool_value(name)?,
            "uring" => opts.uring = bool_value(name)?,
            "pintimeout" => {
                let v = value(name)?;
                opts.pintimeout = parse_duration(&v)
                    .map_err(|e| format!("invalid value {v:?} for -pintimeout: {e}"))?;
            }
            "storagewait" => {
                let v = value(name)?;
                opts.storage_wait = parse_duration(&v)
                    .map_err(|e| format!("invalid value {v:?} for -storagewait: {e}"))?;
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
    Ok(p)
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
    fn version() {
        let v = version_text();
        let lines: Vec<&str> = v.lines().collect();
        assert_eq!(lines[0], format!("wcfsd {}", env!("CARGO_PKG_VERSION")));
        assert_eq!(
            lines[1],
            format!("libwcfs ABI {WCFS_ABI_VERSION} (libwcfs.so.{WCFS_ABI_VERSION})")
        );
        assert_eq!(lines.len(), 2);
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
        let (_, _, o) = serve("-storagewait 1.5s z m");
        assert_eq!(o.storage_wait, Duration::from_millis(1500));
        assert_eq!(o.pintimeout, Options::default().pintimeout);
        assert!(parse(&args("-storagewait -1s z m")).is_err());
        let (_, _, o) = serve("z m");
        assert_eq!(o, Options::default());
        let (_, _, o) = serve("-debug=false z m");
        assert!(!o.debug);
        assert_eq!(parse(&args("--help")), Ok(Command::Help));
        assert_eq!(parse(&args("ls z")), Ok(Command::Ls("z".into())));
        assert_eq!(
            parse(&args("serve -autoexit -pintimeout 1m z")),
            Ok(Command::ServeZurl {
                zurl: "z".into(),
                opts: Options {
                    autoexit: true,
                    pintimeout: Duration::from_secs(60),
                    ..Options::default()
                }
            })
        );
        assert_eq!(
            parse(&args("start -autoexit z -pintimeout 1m -debug=true")),
            Ok(Command::Start {
                zurl: "z".into(),
                args: args("-autoexit -pintimeout 1m -debug=true"),
            })
        );
        assert_eq!(
            parse(&args("status z")),
            Ok(Command::Status {
                zurl: "z".into(),
                timeout: None
            })
        );
        assert_eq!(
            parse(&args("stop --timeout=2s z")),
            Ok(Command::Stop {
                zurl: "z".into(),
                timeout: Some(Duration::from_secs(2))
            })
        );
        assert_eq!(
            parse(&args("status -timeout 500ms z")),
            Ok(Command::Status {
                zurl: "z".into(),
                timeout: Some(Duration::from_millis(500))
            })
        );
        assert_eq!(parse(&args("serve -h")), Ok(Command::Help));
        for v in [
            "-version",
            "--version",
            "-V",
            "--V",
            "-debug -version z m",
            "start -V",
        ] {
            assert_eq!(parse(&args(v)), Ok(Command::Version), "{v}");
        }
        assert_eq!(parse(&args("-version -h")), Ok(Command::Version));
        for bad in [
            "z",
            "z m x",
            "-nope z m",
            "-pintimeout",
            "-pintimeout 3 z m",
            "ls",
            "serve",
            "serve z m",
            "serve -nope z",
            "start",
            "start -pintimeout z",
            "status",
            "status z y",
            "status -debug z",
            "stop -timeout z",
            "stop -timeout 3 z",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
