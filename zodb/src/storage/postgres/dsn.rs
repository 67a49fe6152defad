//! `postgresql://` zurls: libpq's connection URI, with what the libpq
//! environment adds.
//!
//! A zurl is untrusted text (it comes from a command line, a client's
//! join), and so are the files this module reads for it: everything here
//! returns a clear error, never panics, and never shows a password (the
//! errors quote the zurl in its [`redacted`] form only).
//!
//! # The URI
//!
//! `postgresql://[user[:password]@][host][:port][,host[:port]…][/dbname][?param=value&…]`,
//! `postgres://` too — as libpq reads it, with one difference: the user
//! part ends at the first `@` before any `/` *or `?`* (libpq looks past a
//! `?`: a `?`, like a `/`, `@` or `:` in a user name or password, must be
//! percent-encoded — which RFC 3986 asks anyway — else the zurl is refused
//! or read as a host, never read differently with a password shown); a
//! host in `[…]` is an IPv6 address; every part is
//! percent-decoded; a host that decodes to an absolute path (`%2Ftmp`) is a
//! directory holding the server's Unix socket; a query parameter names any
//! connection parameter (`host`, `port`, `dbname`, `user`, `password`, …)
//! and wins over the same part given before the `?`.
//!
//! # What fills in the rest
//!
//! As libpq does, in this order, for every parameter the URI leaves out:
//! the service named by `service=` or `$PGSERVICE` (a section of
//! `$PGSERVICEFILE` or `~/.pg_service.conf`, else of
//! `$PGSYSCONFDIR/pg_service.conf`, default `/etc/postgresql-common`), then
//! the environment (`PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`,
//! `PGPASSWORD`, `PGPASSFILE`, `PGCONNECT_TIMEOUT`, `PGAPPNAME`,
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGSSLCRL`,
//! `PGSSLSNI`, `PGSSLNEGOTIATION`, `PGOPTIONS`, `PGTARGETSESSIONATTRS`),
//! then the defaults
//! (the Unix socket directory `/var/run/postgresql` — `/tmp` if that does
//! not exist —, port 5432, the user running us, a database named as the
//! user; for TLS, `sslmode=prefer` and the files under `~/.postgresql/`:
//! see [`super::tls`]). A password still missing is looked up, per host, in the password
//! file (`passfile=`, `$PGPASSFILE`, else `~/.pgpass`), which is ignored —
//! with a warning — when others may read it, as libpq does.
//!
//! # What is not supported
//!
//! `hostaddr`, GSSAPI, encrypted client keys (`sslpassword`), `sslcrldir`,
//! `sslcertmode`, and `target_session_attrs` other than `any` and
//! `read-write`. Unknown parameters are refused, as libpq refuses them.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A zurl of ours: `postgresql://` or `postgres://`.
pub fn is_postgres_zurl(zurl: &str) -> bool {
    zurl.starts_with("postgresql://") || zurl.starts_with("postgres://")
}

/// Parameters whose values are secrets (redacted when shown).
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// `zurl` as it may be shown: for a `postgresql://` zurl, the password of
/// the user part and the values of `password=` (and `sslpassword=`)
/// parameters replaced by `***` (`postgresql://user:***@host/db`); any
/// other zurl as is. It never fails, and errs on the side of hiding: for a
/// URI that parses the parts are libpq's, for one that does not the user
/// part runs to the last `@` before the path and every parameter whose
/// name has "pass" in it is hidden; a user name that looks like parameters
/// (`?`, `=`, `&`, "pass") is hidden whole.
pub fn redacted(zurl: &str) -> Cow<'_, str> {
    let Some(scheme) = ["postgresql://", "postgres://"]
        .into_iter()
        .find(|s| zurl.starts_with(*s))
    else {
        return Cow::Borrowed(zurl);
    };
    let exact = parse_uri(zurl).is_ok();
    let rest = &zurl[scheme.len()..];
    let mut out = String::with_capacity(zurl.len());
    out.push_str(scheme);
    let at = if exact {
        // Ours and libpq's reading agree (parse_uri checks).
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        rest[..auth_end].find('@')
    } else {
        // As far as libpq would look, and to the last '@'.
        let slash = rest.find('/').unwrap_or(rest.len());
        rest[..slash].rfind('@')
    };
    let rest = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            if user.contains(['?', '=', '&']) || is_secret_key(user, true) {
                out.push_str("***");
            } else {
                out.push_str(user);
            }
            if userinfo.contains(':') {
                out.push_str(":***");
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    // An '@' in the parameters is written %40 (the same to libpq) when
    // the zurl parses: a '/' that kept libpq from reading a user part up to
    // that '@' may have been in a password we drop.
    let at_sign = |s: &str| {
        if exact {
            s.replace('@', "%40")
        } else {
            s.to_string()
        }
    };
    match rest.split_once('?') {
        None => out.push_str(rest),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, kv) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match kv.split_once('=') {
                    Some((k, _)) if is_secret_key(k, !exact) => {
                        out.push_str(&at_sign(k));
                        out.push_str("=***");
                    }
                    _ => out.push_str(&at_sign(kv)),
                }
            }
        }
    }
    if out == zurl {
        Cow::Borrowed(zurl)
    } else {
        Cow::Owned(out)
    }
}

/// Whether a (percent-encoded) parameter name names a secret: decoded
/// loosely, so that `pass%77ord` is caught too; `loose`: any name with
/// "pass" in it.
fn is_secret_key(k: &str, loose: bool) -> bool {
    let k = percent_decode(k).unwrap_or_else(|_| k.as_bytes().to_vec());
    let k = String::from_utf8_lossy(&k).to_ascii_lowercase();
    SECRET_PARAMS.contains(&k.as_str()) || (loose && k.contains("pass"))
}

/// Whether `zurl` has anything [`redacted`] hides.
pub fn has_secret(zurl: &str) -> bool {
    matches!(redacted(zurl), Cow::Owned(_))
}

/// The parts of a URI, percent-decoded, nothing filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uri {
    pub user: Option<String>,
    pub password: Option<String>,
    /// `(host, port)` as written; empty strings for parts left out.
    pub hosts: Vec<(String, String)>,
    pub dbname: Option<String>,
    /// Query parameters in order.
    pub params: Vec<(String, String)>,
}

fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            let h = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid %-escape %{}", String::from_utf8_lossy(hex)))?;
            if h == 0 {
                return Err("%00 (a NUL byte) in the URI".into());
            }
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    let v = percent_decode(s).map_err(|e| format!("{what}: {e}"))?;
    String::from_utf8(v).map_err(|_| format!("{what}: not UTF-8 once %-decoded"))
}

/// Parses a `postgresql://` URI (see the module doc). Errors say what is
/// wrong, without quoting the URI (the caller quotes it, redacted).
pub fn parse_uri(zurl: &str) -> Result<Uri, String> {
    let rest = zurl
        .strip_prefix("postgresql://")
        .or_else(|| zurl.strip_prefix("postgres://"))
        .ok_or("want postgresql:// or postgres://")?;
    if zurl.contains(['\0', '\n', '\r']) {
        return Err("control characters in the URI".into());
    }
    let mut uri = Uri::default();
    // User part: up to the first '@' before the path or the parameters.
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let slash = rest.find('/').unwrap_or(rest.len());
    if !rest[..auth_end].contains('@') && rest[..slash].contains('@') {
        // libpq would read a user part up to that '@'.
        return Err("'@' after '?' before any '/' (percent-encode '?' and '@' \
                    in a user name or password)"
            .into());
    }
    let mut rest = match rest[..auth_end].find('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                uri.user = Some(decode(user, "user")?);
            }
            if let Some(p) = password {
                uri.password = Some(decode(p, "password")?);
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    // Hosts: host[:port] separated by ','.
    loop {
        let (host, after) = if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or("missing ']' after an IPv6 address")?;
            let h = &r[..close];
            if h.is_empty() {
                return Err("empty IPv6 address []".into());
            }
            if !h
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(format!("invalid IPv6 address [{h}]"));
            }
            (h.to_string(), &r[close + 1..])
        } else {
            let end = rest.find([':', ',', '/', '?']).unwrap_or(rest.len());
            if rest[..end].contains('@') {
                return Err("'@' in a host name (a password with '@' must be written %40)".into());
            }
            if rest[..end].contains(['[', ']']) {
                return Err("'[' or ']' in a host name".into());
            }
            (decode(&rest[..end], "host")?, &rest[end..])
        };
        let (port, after) = match after.strip_prefix(':') {
            Some(p) => {
                let end = p.find([',', '/', '?']).unwrap_or(p.len());
                let port = decode(&p[..end], "port")?;
                if !port.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("invalid port {:?}", short(&port)));
                }
                (port, &p[end..])
            }
            None => (String::new(), after),
        };
        if !(after.is_empty() || after.starts_with([',', '/', '?'])) {
            return Err("unexpected characters after a host".into());
        }
        uri.hosts.push((host, port));
        match after.strip_prefix(',') {
            Some(r) => rest = r,
            None => {
                rest = after;
                break;
            }
        }
    }
    if uri.hosts.len() == 1 && uri.hosts[0] == (String::new(), String::new()) {
        uri.hosts.clear();
    }
    // Database.
    if let Some(r) = rest.strip_prefix('/') {
        let end = r.find('?').unwrap_or(r.len());
        if end > 0 {
            uri.dbname = Some(decode(&r[..end], "database name")?);
        }
        rest = &r[end..];
    }
    // Parameters.
    if let Some(q) = rest.strip_prefix('?') {
        for kv in q.split('&') {
            if kv.is_empty() {
                continue; // "?a=1&&b=2", a trailing '&': as libpq
            }
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("parameter {:?} has no value", short(kv)))?;
            let k = decode(k, "parameter name")?;
            let v = decode(v, &format!("parameter {k}"))?;
            if k == "ssl" {
                // libpq's JDBC-compatible spelling.
                if v != "true" {
                    return Err(format!("parameter ssl={v}: only ssl=true is known"));
                }
                uri.params.push(("sslmode".into(), "require".into()));
                continue;
            }
            uri.params.push((k, v));
        }
    } else if !rest.is_empty() {
        return Err(format!("unexpected {:?}", short(rest)));
    }
    Ok(uri)
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Where to connect: one host of the zurl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(String),
    /// The directory of the server's Unix socket.
    Unix(PathBuf),
}

/// One host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub target: Target,
    pub port: u16,
}

impl Host {
    /// `host:port` or the socket path, for messages.
    pub fn shown(&self) -> String {
        match &self.target {
            Target::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Target::Tcp(h) => format!("{h}:{}", self.port),
            Target::Unix(d) => format!("{}/.s.PGSQL.{}", d.display(), self.port),
        }
    }
}

pub use super::tls::{RootCert, SslMode, TlsSpec};

/// Everything needed to connect, with the environment applied.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnSpec {
    pub hosts: Vec<Host>,
    pub user: String,
    /// Given in the zurl, a service or `$PGPASSWORD`.
    pub password: Option<String>,
    /// Where to look a password up when none is given.
    pub passfile: Option<PathBuf>,
    pub dbname: String,
    pub connect_timeout: Option<Duration>,
    pub application_name: Option<String>,
    pub options: Option<String>,
    /// `sslmode` and the files of TLS (see [`super::tls`]).
    pub tls: TlsSpec,
    /// `target_session_attrs=read-write`.
    pub read_write: bool,
    pub keepalives_idle: Option<Duration>,
}

impl std::fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSpec")
            .field("hosts", &self.hosts)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("passfile", &self.passfile)
            .field("dbname", &self.dbname)
            .field("connect_timeout", &self.connect_timeout)
            .field("application_name", &self.application_name)
            .field("options", &self.options)
            .field("tls", &self.tls)
            .field("read_write", &self.read_write)
            .field("keepalives_idle", &self.keepalives_idle)
            .finish()
    }
}

/// What the process around us provides: the environment, the home
/// directory, the user name, and files. A trait so that tests (and the
/// fuzzer) give their own.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
    fn user_name(&self) -> Option<String>;
    fn exists(&self, p: &Path) -> bool;
    /// A file's text, `None` when it does not exist (an error when it
    /// exists but cannot be read).
    fn read(&self, p: &Path) -> Result<Option<String>, String>;
    /// Whether group or others may access the file (a password file that
    /// they may is ignored).
    fn others_may_read(&self, p: &Path) -> bool;
}

/// The environment of this process.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return Some(PathBuf::from(h));
        }
        passwd_entry().map(|(_, home)| home)
    }
    fn user_name(&self) -> Option<String> {
        passwd_entry().map(|(name, _)| name)
    }
    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }
    fn read(&self, p: &Path) -> Result<Option<String>, String> {
        match std::fs::read(p) {
            Ok(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| format!("{}: not UTF-8", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }
    fn others_may_read(&self, p: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
}

/// The name and home directory of the effective user, from the password
/// database.
fn passwd_entry() -> Option<(String, PathBuf)> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: passwd is plain data (all-zero is valid); getpwuid_r fills it
    // with pointers into `buf`, which outlives every use below; `result` is
    // either null or points at `pw`.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pw.pw_name.is_null() || pw.pw_dir.is_null() {
            return None;
        }
        let name = CStr::from_ptr(pw.pw_name).to_str().ok()?.to_string();
        let dir = PathBuf::from(std::ffi::OsStr::from_bytes(
            CStr::from_ptr(pw.pw_dir).to_bytes(),
        ));
        Some((name, dir))
    }
}

/// Connection parameters we know, with the environment variable that
/// provides each.
const PARAMS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("service", Some("PGSERVICE")),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslsni", Some("PGSSLSNI")),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("options", Some("PGOPTIONS")),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("client_encoding", Some("PGCLIENTENCODING")),
];

/// Parameters libpq knows that we refuse to ignore silently.
const UNSUPPORTED: &[&str] = &[
    "hostaddr",
    "sslcrldir",
    "sslpassword",
    "sslcertmode",
    "sslcompression",
    "requirepeer",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "replication",
    "channel_binding",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "load_balance_hosts",
];

/// A parameter map, keyed by name.
type Params = std::collections::BTreeMap<String, String>;

/// Checks what the zurl itself says — the URI and the values of its
/// parameters — without the environment (nothing is read). Errors say what
/// is wrong, without quoting the zurl.
pub fn check(zurl: &str) -> Result<(), String> {
    struct Nothing;
    impl Environment for Nothing {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn home(&self) -> Option<PathBuf> {
            None
        }
        fn user_name(&self) -> Option<String> {
            Some("-".into())
        }
        fn exists(&self, _: &Path) -> bool {
            false
        }
        fn read(&self, _: &Path) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn others_may_read(&self, _: &Path) -> bool {
            false
        }
    }
    let p = uri_params(zurl)?;
    spec_of(&p, &Nothing).map(|_| ())
}

/// The parameters a URI gives, checked to be ones we know.
fn uri_params(zurl: &str) -> Result<Params, String> {
    let uri = parse_uri(zurl)?;
    let mut p = Params::new();
    if let Some(u) = uri.user {
        p.insert("user".into(), u);
    }
    if let Some(pw) = uri.password {
        p.insert("password".into(), pw);
    }
    if !uri.hosts.is_empty() {
        let hosts: Vec<&str> = uri.hosts.iter().map(|(h, _)| h.as_str()).collect();
        let ports: Vec<&str> = uri.hosts.iter().map(|(_, p)| p.as_str()).collect();
        if hosts.iter().any(|h| !h.is_empty()) {
            p.insert("host".into(), hosts.join(","));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            p.insert("port".into(), ports.join(","));
        }
    }
    if let Some(d) = uri.dbname {
        p.insert("dbname".into(), d);
    }
    for (k, v) in uri.params {
        check_param(&k)?;
        p.insert(k, v);
    }
    Ok(p)
}

/// Parses `zurl` and fills in what it leaves out from `env` (see the module
/// doc). Errors say what is wrong, without quoting the zurl.
pub fn resolve(zurl: &str, env: &dyn Environment) -> Result<ConnSpec, String> {
    let mut p = uri_params(zurl)?;
    // The service first, then the environment (as libpq).
    let service = p.get("service").cloned().or_else(|| env.var("PGSERVICE"));
    if let Some(name) = service {
        for (k, v) in service_params(&name, env)? {
            p.entry(k).or_insert(v);
        }
    }
    for (k, var) in PARAMS {
        if let Some(var) = var {
            if !p.contains_key(*k) {
                if let Some(v) = env.var(var) {
                    p.insert(k.to_string(), v);
                }
            }
        }
    }
    spec_of(&p, env)
}

fn check_param(k: &str) -> Result<(), String> {
    if UNSUPPORTED.contains(&k) {
        return Err(format!("parameter {k} is not supported by wcfs"));
    }
    if !PARAMS.iter().any(|(n, _)| *n == k) {
        return Err(format!("unknown connection parameter {:?}", short(k)));
    }
    Ok(())
}

fn spec_of(p: &Params, env: &dyn Environment) -> Result<ConnSpec, String> {
    let get = |k: &str| p.get(k).map(String::as_str);
    let user = match get("user") {
        Some(u) if !u.is_empty() => u.to_string(),
        _ => env
            .user_name()
            .ok_or("no user given and the user running us has no name")?,
    };
    let dbname = match get("dbname") {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => user.clone(),
    };
    // Hosts and ports.
    let hosts: Vec<String> = match get("host") {
        Some(h) if !h.is_empty() => h.split(',').map(str::to_string).collect(),
        _ => vec![String::new()],
    };
    let ports: Vec<String> = match get("port") {
        Some(p) if !p.is_empty() => p.split(',').map(str::to_string).collect(),
        _ => vec![String::new()],
    };
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(format!(
            "{} ports for {} hosts (give one port, or one per host)",
            ports.len(),
            hosts.len()
        ));
    }
    let mut out = Vec::with_capacity(hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        let port = ports.get(i).unwrap_or(&ports[0]);
        let port = if port.is_empty() {
            5432
        } else {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("invalid port {:?}", short(port))),
            }
        };
        let target = if h.is_empty() {
            let d = Path::new("/var/run/postgresql");
            Target::Unix(if env.exists(d) {
                d.to_path_buf()
            } else {
                PathBuf::from("/tmp")
            })
        } else if h.starts_with('/') {
            Target::Unix(PathBuf::from(h))
        } else if h.starts_with('@') {
            return Err("abstract Unix sockets (@name) are not supported".into());
        } else {
            Target::Tcp(h.clone())
        };
        out.push(Host { target, port });
    }
    let seconds = |k: &str| -> Result<Option<Duration>, String> {
        match get(k) {
            None | Some("") => Ok(None),
            Some(v) => match v.trim().parse::<i64>() {
                // As libpq: 0 or negative means wait forever, 1 means 2.
                Ok(n) if n <= 0 => Ok(None),
                Ok(n) => Ok(Some(Duration::from_secs(n.max(2) as u64))),
                Err(_) => Err(format!("invalid {k} {:?} (want seconds)", short(v))),
            },
        }
    };
    let connect_timeout = seconds("connect_timeout")?;
    let tls = tls_of(p, env)?;
    let read_write = match get("target_session_attrs").unwrap_or("any") {
        "any" => false,
        "read-write" => true,
        a => {
            return Err(format!(
                "target_session_attrs={}: wcfs supports any and read-write",
                short(a)
            ))
        }
    };
    match get("client_encoding") {
        None | Some("") => {}
        Some(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
        Some(e) => {
            return Err(format!(
                "client_encoding={}: wcfs speaks UTF8 only",
                short(e)
            ))
        }
    }
    let keepalives_idle = match get("keepalives") {
        Some("0") => None,
        _ => Some(seconds("keepalives_idle")?.unwrap_or(Duration::from_secs(10))),
    };
    let passfile = match get("passfile") {
        Some(f) if !f.is_empty() => Some(PathBuf::from(f)),
        _ => env.home().map(|h| h.join(".pgpass")),
    };
    Ok(ConnSpec {
        hosts: out,
        user,
        password: get("password").map(str::to_string),
        passfile,
        dbname,
        connect_timeout,
        application_name: get("application_name")
            .or(get("fallback_application_name"))
            .map(str::to_string),
        options: get("options").filter(|o| !o.is_empty()).map(str::to_string),
        tls,
        read_write,
        keepalives_idle,
    })
}

/// The TLS settings: libpq's defaults for what is not given (files under
/// `~/.postgresql/`), checked for what libpq refuses.
fn tls_of(p: &Params, env: &dyn Environment) -> Result<TlsSpec, String> {
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let file = |k: &str, default: &str| -> Option<PathBuf> {
        match get(k) {
            Some(f) => Some(PathBuf::from(f)),
            None => env.home().map(|h| h.join(".postgresql").join(default)),
        }
    };
    let rootcert = match get("sslrootcert") {
        Some("system") => Some(RootCert::System),
        _ => file("sslrootcert", "root.crt").map(RootCert::File),
    };
    let mode = match get("sslmode") {
        None if rootcert == Some(RootCert::System) => SslMode::VerifyFull,
        None => SslMode::Prefer,
        Some(m) => SslMode::parse(m).ok_or_else(|| format!("invalid sslmode {:?}", short(m)))?,
    };
    if rootcert == Some(RootCert::System) && mode != SslMode::VerifyFull {
        return Err(format!(
            "weak sslmode {} may not be used with sslrootcert=system (use verify-full)",
            mode.name()
        ));
    }
    let sni = match get("sslsni") {
        None | Some("1") => true,
        Some("0") => false,
        Some(v) => return Err(format!("invalid sslsni {:?} (want 0 or 1)", short(v))),
    };
    let direct = match get("sslnegotiation") {
        None | Some("postgres") => false,
        Some("direct") => true,
        Some(v) => {
            return Err(format!(
                "invalid sslnegotiation {:?} (want postgres or direct)",
                short(v)
            ))
        }
    };
    if direct && !mode.requires_tls() {
        return Err(format!(
            "weak sslmode {} may not be used with sslnegotiation=direct (use require, verify-ca \
             or verify-full)",
            mode.name()
        ));
    }
    Ok(TlsSpec {
        mode,
        rootcert,
        cert: file("sslcert", "postgresql.crt"),
        key: file("sslkey", "postgresql.key"),
        crl: file("sslcrl", "root.crl"),
        sni,
        direct,
    })
}

/// The parameters of service `name`: from the user's service file if it
/// has the section, else from the system's (as libpq).
fn service_params(name: &str, env: &dyn Environment) -> Result<Vec<(String, String)>, String> {
    let user_file = env
        .var("PGSERVICEFILE")
        .map(PathBuf::from)
        .or_else(|| env.home().map(|h| h.join(".pg_service.conf")));
    let sys_file = PathBuf::from(
        env.var("PGSYSCONFDIR")
            .unwrap_or_else(|| "/etc/postgresql-common".into()),
    )
    .join("pg_service.conf");
    for file in user_file.iter().chain([&sys_file]) {
        let Some(text) = env.read(file)? else {
            continue;
        };
        if let Some(params) = service_section(&text, name)
            .map_err(|e| format!("service file {}: {e}", file.display()))?
        {
            for (k, _) in &params {
                if k == "service" {
                    return Err(format!(
                        "service file {}: nested service specifications are not supported",
                        file.display()
                    ));
                }
                check_param(k).map_err(|e| format!("service file {}: {e}", file.display()))?;
            }
            return Ok(params);
        }
    }
    Err(format!("definition of service {:?} not found", short(name)))
}

/// The `key=value` lines of section `[name]` of a service file (None when
/// it has no such section).
pub fn service_section(text: &str, name: &str) -> Result<Option<Vec<(String, String)>>, String> {
    let mut found: Option<Vec<(String, String)>> = None;
    let mut inside = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(sec) = line.strip_prefix('[') {
            let sec = sec
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: unterminated section name", n + 1))?;
            if found.is_some() && inside {
                break;
            }
            inside = sec == name;
            if inside {
                found = Some(Vec::new());
            }
            continue;
        }
        if !inside {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: want key=value", n + 1))?;
        if let Some(f) = found.as_mut() {
            f.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(found)
}

/// The password for connecting to `host` as `spec.user` from the password
/// file, if the spec has none of its own. A file others may read is
/// ignored, with a warning (as libpq).
pub fn password_for(spec: &ConnSpec, host: &Host, env: &dyn Environment) -> Option<String> {
    if let Some(p) = &spec.password {
        return Some(p.clone());
    }
    let file = spec.passfile.as_ref()?;
    let text = match env.read(file) {
        Ok(Some(t)) => t,
        Ok(None) => return None,
        Err(e) => {
            log::warn!("password file {e} (ignored)");
            return None;
        }
    };
    if env.others_may_read(file) {
        log::warn!(
            "password file {} has group or world access; permissions should be u=rw (0600) \
             or less (ignored)",
            file.display()
        );
        return None;
    }
    let hostname = match &host.target {
        Target::Tcp(h) => h.as_str(),
        Target::Unix(_) => "localhost",
    };
    pgpass_lookup(
        &text,
        hostname,
        &host.port.to_string(),
        &spec.dbname,
        &spec.user,
    )
}

/// The password of the first line of a `.pgpass` text matching (`*`
/// matches anything; `\` escapes `:` and `\`).
pub fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        let ok = |f: &str, v: &str| f == "*" || f == v;
        if ok(&fields[0], host)
            && ok(&fields[1], port)
            && ok(&fields[2], db)
            && ok(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

/// A `.pgpass` line into its fields: the first four split at unescaped
/// `:`, the fifth is the rest; escapes removed.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().unwrap_or(&mut String::new()).push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeEnv {
        vars: HashMap<String, String>,
        files: HashMap<PathBuf, String>,
        open: Vec<PathBuf>,
    }

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            Some("/home/u".into())
        }
        fn user_name(&self) -> Option<String> {
            Some("osuser".into())
        }
        fn exists(&self, p: &Path) -> bool {
            p == Path::new("/var/run/postgresql")
        }
        fn read(&self, p: &Path) -> Result<Option<String>, String> {
            Ok(self.files.get(p).cloned())
        }
        fn others_may_read(&self, p: &Path) -> bool {
            self.open.iter().any(|o| o == p)
        }
    }

    fn env(vars: &[(&str, &str)]) -> FakeEnv {
        FakeEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn tcp(h: &str, port: u16) -> Host {
        Host {
            target: Target::Tcp(h.into()),
            port,
        }
    }

    #[test]
    fn uri_forms() {
        let u = parse_uri("postgresql://u%40x:p%3Aw@h1:5433,[::1]:5434,h3/my%20db?application_name=a&connect_timeout=3").unwrap();
        assert_eq!(u.user.as_deref(), Some("u@x"));
        assert_eq!(u.password.as_deref(), Some("p:w"));
        assert_eq!(
            u.hosts,
            vec![
                ("h1".into(), "5433".into()),
                ("::1".into(), "5434".into()),
                ("h3".into(), String::new())
            ]
        );
        assert_eq!(u.dbname.as_deref(), Some("my db"));
        assert_eq!(
            u.params,
            vec![
                ("application_name".into(), "a".into()),
                ("connect_timeout".into(), "3".into())
            ]
        );
        assert_eq!(parse_uri("postgres://").unwrap(), Uri::default());
        assert_eq!(
            parse_uri("postgresql:///db").unwrap().dbname.as_deref(),
            Some("db")
        );
        let u = parse_uri("postgresql://%2Ftmp%2Fsock:5000/db").unwrap();
        assert_eq!(u.hosts, vec![("/tmp/sock".into(), "5000".into())]);
        let u = parse_uri("postgresql://@h").unwrap();
        assert_eq!((u.user, u.password), (None, None));
        let u = parse_uri("postgresql://u:@h").unwrap();
        assert_eq!(u.password.as_deref(), Some(""));
        for bad in [
            "zeo://x",
            "postgresql://[::1",
            "postgresql://[]",
            "postgresql://h/db?novalue",
            "postgresql://h/db?a=%zz",
            "postgresql://h/db?a=%4",
            "postgresql://u:p@ss@h/db",
            "postgresql://h]x/db",
            "postgresql://[::1]x/db",
            "postgresql://h/%ff",
            "postgresql://h/a%00b",
            "postgresql://h/db\n",
            "postgresql://h/db?ssl=false",
            "postgresql://u:1234?a=b@h/db",
            "postgresql://h?password=x@y",
            "postgresql://h:5x/db",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction() {
        for (z, want) in [
            ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
            (
                "postgres://u:s%40c@h:5/db?x=1",
                "postgres://u:***@h:5/db?x=1",
            ),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            (
                "postgresql://h/db?user=u&password=secret&application_name=a",
                "postgresql://h/db?user=u&password=***&application_name=a",
            ),
            (
                "postgresql://h/db?pass%77ord=s",
                "postgresql://h/db?pass%77ord=***",
            ),
            // Malformed: more is hidden.
            ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
            (
                "postgresql://h/db?password=%zz",
                "postgresql://h/db?password=***",
            ),
            (
                "postgresql://h/db?Passwd=x&y",
                "postgresql://h/db?Passwd=***&y",
            ),
            ("postgresql://h?password=x@y", "postgresql://***@y"),
            ("postgresql://a=b:c@y", "postgresql://***:***@y"),
            ("postgresql://u:p@h/db?nov", "postgresql://u:***@h/db?nov"),
            ("postgresql://h/d b?x", "postgresql://h/d b?x"),
            // A '?' in a password must be encoded; unencoded, more is hidden.
            ("postgresql://u:p?x@h/db", "postgresql://u:***@h/db"),
            ("postgresql://u:1234?a=b@h/db", "postgresql://u:***@h/db"),
            ("postgresql://u:p%3Fx@h/db", "postgresql://u:***@h/db"),
            (
                "postgresql://u:p@h?password=x",
                "postgresql://u:***@h?password=***",
            ),
            ("zeo://h:1", "zeo://h:1"),
            ("/a/data.fs", "/a/data.fs"),
            ("postgresql://u:@h/db", "postgresql://u:***@h/db"),
            // The '/' that kept libpq from reading "?x=1&password=..." as a
            // user part went with the password: the '@' after it is %40.
            (
                "postgresql://?x=1&password=a/b&k@=v",
                "postgresql://?x=1&password=***&k%40=v",
            ),
        ] {
            assert_eq!(redacted(z), want, "{z}");
            assert!(!redacted(z).contains("secret"));
        }
        assert!(has_secret("postgresql://u:x@h"));
        assert!(!has_secret("postgresql://u@h"));
        assert!(matches!(redacted("postgresql://h/db"), Cow::Borrowed(_)));
        // The redacted form of a zurl that parses parses too and is stable
        // (found by the pg_zurl fuzz target).
        for z in [
            "postgresql://?x=1&password=a/b&k@=v",
            "postgresql://?h99on_name=i999e=a&password=n_nam999stres:///dAb?host=[[[sword=&passwor@=sd&pasword=x",
        ] {
            assert!(parse_uri(z).is_ok(), "{z}");
            let shown = redacted(z);
            assert!(parse_uri(&shown).is_ok(), "{shown}");
            assert_eq!(redacted(&shown), shown, "{z}");
        }
    }

    #[test]
    fn environment_fills_in() {
        let e = env(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "6000"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGDATABASE", "envdb"),
            ("PGCONNECT_TIMEOUT", "7"),
        ]);
        let s = resolve("postgresql://", &e).unwrap();
        assert_eq!(s.hosts, vec![tcp("envhost", 6000)]);
        assert_eq!(
            (s.user.as_str(), s.password.as_deref(), s.dbname.as_str()),
            ("envuser", Some("envpw"), "envdb")
        );
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(7)));
        // The URI wins.
        let s = resolve("postgresql://u:p@h:1/d", &e).unwrap();
        assert_eq!(s.hosts, vec![tcp("h", 1)]);
        assert_eq!(
            (s.user.as_str(), s.password.as_deref(), s.dbname.as_str()),
            ("u", Some("p"), "d")
        );
        // Query parameters win over the URI parts.
        let s = resolve("postgresql://h:1/d?host=q&port=2&dbname=e&user=v", &e).unwrap();
        assert_eq!(s.hosts, vec![tcp("q", 2)]);
        assert_eq!((s.user.as_str(), s.dbname.as_str()), ("v", "e"));
        // Defaults.
        let s = resolve("postgresql://", &env(&[])).unwrap();
        assert_eq!(
            s.hosts,
            vec![Host {
                target: Target::Unix("/var/run/postgresql".into()),
                port: 5432
            }]
        );
        assert_eq!((s.user.as_str(), s.dbname.as_str()), ("osuser", "osuser"));
        assert_eq!(s.password, None);
        assert_eq!(s.passfile, Some(PathBuf::from("/home/u/.pgpass")));
        assert_eq!(s.tls.mode, SslMode::Prefer);
        assert_eq!(
            s.tls.rootcert,
            Some(RootCert::File("/home/u/.postgresql/root.crt".into()))
        );
        assert_eq!(
            (s.tls.cert.clone(), s.tls.key.clone(), s.tls.crl.clone()),
            (
                Some("/home/u/.postgresql/postgresql.crt".into()),
                Some("/home/u/.postgresql/postgresql.key".into()),
                Some("/home/u/.postgresql/root.crl".into())
            )
        );
        // Several hosts, one port or one each.
        let s = resolve("postgresql://a,b,c/d?port=1,2", &env(&[])).unwrap_err();
        assert!(s.contains("ports"), "{s}");
        // A query parameter wins over the URI's ports.
        let s = resolve("postgresql://a,b:7/d?port=5", &env(&[])).unwrap();
        assert_eq!(s.hosts, vec![tcp("a", 5), tcp("b", 5)]);
        let s = resolve("postgresql://a:1,b:2/d", &env(&[])).unwrap();
        assert_eq!(s.hosts, vec![tcp("a", 1), tcp("b", 2)]);
        let s = resolve("postgresql://a,b/d?port=9", &env(&[])).unwrap();
        assert_eq!(s.hosts, vec![tcp("a", 9), tcp("b", 9)]);
        let s = resolve("postgresql:///d?host=/run/pg", &env(&[])).unwrap();
        assert_eq!(
            s.hosts,
            vec![Host {
                target: Target::Unix("/run/pg".into()),
                port: 5432
            }]
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        for (z, why) in [
            ("postgresql://h/d?sslmode=bogus", "invalid sslmode"),
            (
                "postgresql://h/d?sslrootcert=system&sslmode=require",
                "weak sslmode require",
            ),
            (
                "postgresql://h/d?sslnegotiation=direct",
                "weak sslmode prefer",
            ),
            (
                "postgresql://h/d?sslnegotiation=fast",
                "invalid sslnegotiation",
            ),
            ("postgresql://h/d?sslsni=2", "invalid sslsni"),
            ("postgresql://h/d?sslpassword=x", "not supported"),
            ("postgresql://h/d?hostaddr=1.2.3.4", "not supported"),
            (
                "postgresql://h/d?frobnicate=1",
                "unknown connection parameter",
            ),
            ("postgresql://h:0/d", "invalid port"),
            ("postgresql://h:99999/d", "invalid port"),
            ("postgresql://h:x/d", "invalid port"),
            (
                "postgresql://h/d?connect_timeout=soon",
                "invalid connect_timeout",
            ),
            (
                "postgresql://h/d?target_session_attrs=standby",
                "target_session_attrs",
            ),
            ("postgresql://h/d?client_encoding=latin1", "UTF8"),
        ] {
            let e = resolve(z, &env(&[])).unwrap_err();
            assert!(e.contains(why), "{z}: {e}");
        }
        let e = resolve("postgresql://h/d", &env(&[("PGSSLMODE", "verify-fast")])).unwrap_err();
        assert!(e.contains("invalid sslmode"), "{e}");
    }

    #[test]
    fn tls_settings() {
        // Every mode, from the zurl; ssl=true is require.
        for m in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            let s = resolve(&format!("postgresql://h/d?sslmode={m}"), &env(&[])).unwrap();
            assert_eq!(s.tls.mode.name(), m);
        }
        let s = resolve("postgresql://h/d?ssl=true", &env(&[])).unwrap();
        assert_eq!(s.tls.mode, SslMode::Require);
        // From the environment.
        let e = env(&[
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLROOTCERT", "/e/ca.pem"),
            ("PGSSLCERT", "/e/c.pem"),
            ("PGSSLKEY", "/e/c.key"),
            ("PGSSLCRL", "/e/crl.pem"),
            ("PGSSLSNI", "0"),
        ]);
        let s = resolve("postgresql://h/d", &e).unwrap();
        assert_eq!(
            s.tls,
            TlsSpec {
                mode: SslMode::VerifyCa,
                rootcert: Some(RootCert::File("/e/ca.pem".into())),
                cert: Some("/e/c.pem".into()),
                key: Some("/e/c.key".into()),
                crl: Some("/e/crl.pem".into()),
                sni: false,
                direct: false,
            }
        );
        // The zurl wins over the environment.
        let s = resolve(
            "postgresql://h/d?sslmode=verify-full&sslrootcert=/z/ca.pem&sslnegotiation=direct",
            &e,
        )
        .unwrap();
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        assert_eq!(s.tls.rootcert, Some(RootCert::File("/z/ca.pem".into())));
        assert_eq!(s.tls.cert, Some("/e/c.pem".into()));
        assert!(s.tls.direct);
        // From a service file, over the environment.
        let mut e = env(&[("PGSSLMODE", "disable")]);
        e.files.insert(
            "/home/u/.pg_service.conf".into(),
            "[tls]\nhost=h\nsslmode=verify-full\nsslcert=/s/c.pem\nsslkey=/s/c.key\n".into(),
        );
        let s = resolve("postgresql://?service=tls", &e).unwrap();
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            (s.tls.cert, s.tls.key),
            (Some("/s/c.pem".into()), Some("/s/c.key".into()))
        );
        // sslrootcert=system: verify-full by default.
        let s = resolve("postgresql://h/d?sslrootcert=system", &env(&[])).unwrap();
        assert_eq!(
            (s.tls.mode, s.tls.rootcert),
            (SslMode::VerifyFull, Some(RootCert::System))
        );
    }

    #[test]
    fn services() {
        let mut e = env(&[("PGSERVICE", "main")]);
        e.files.insert(
            "/home/u/.pg_service.conf".into(),
            "# mine\n[other]\nhost=o\n[main]\nhost = svchost\nport=7000\n dbname=svcdb\n".into(),
        );
        e.files.insert(
            "/etc/postgresql-common/pg_service.conf".into(),
            "[sys]\nhost=syshost\nuser=sysuser\n".into(),
        );
        e.vars.insert("PGDATABASE".into(), "envdb".into());
        let s = resolve("postgresql://u@/", &e).unwrap();
        assert_eq!(s.hosts, vec![tcp("svchost", 7000)]);
        // The service wins over the environment, the URI over both.
        assert_eq!((s.user.as_str(), s.dbname.as_str()), ("u", "svcdb"));
        let s = resolve("postgresql:///x?service=sys", &e).unwrap();
        assert_eq!(s.hosts, vec![tcp("syshost", 5432)]);
        assert_eq!((s.user.as_str(), s.dbname.as_str()), ("sysuser", "x"));
        let err = resolve("postgresql://?service=nope", &e).unwrap_err();
        assert!(err.contains("not found"), "{err}");
        e.files
            .insert("/home/u/.pg_service.conf".into(), "[main\nhost=x\n".into());
        let err = resolve("postgresql://", &e).unwrap_err();
        assert!(err.contains("unterminated"), "{err}");
    }

    #[test]
    fn password_file() {
        let text = "# comment\nother:*:*:*:no\nh:5432:db:u:p\\:w\\\\x\n*:*:*:u:star\nlocalhost:*:*:*:sock\n";
        assert_eq!(
            pgpass_lookup(text, "h", "5432", "db", "u").as_deref(),
            Some("p:w\\x")
        );
        assert_eq!(
            pgpass_lookup(text, "h", "5433", "db", "u").as_deref(),
            Some("star")
        );
        assert_eq!(
            pgpass_lookup(text, "localhost", "1", "x", "v").as_deref(),
            Some("sock")
        );
        assert_eq!(pgpass_lookup(text, "z", "1", "x", "v"), None);
        let mut e = env(&[]);
        e.files.insert("/home/u/.pgpass".into(), text.into());
        let spec = resolve("postgresql://u@h/db", &e).unwrap();
        assert_eq!(
            password_for(&spec, &spec.hosts[0], &e).as_deref(),
            Some("p:w\\x")
        );
        let spec = resolve("postgresql://v@%2Frun/x", &e).unwrap();
        assert_eq!(
            password_for(&spec, &spec.hosts[0], &e).as_deref(),
            Some("sock")
        );
        // Given passwords win; a file others may read is ignored.
        let spec = resolve("postgresql://u:given@h/db", &e).unwrap();
        assert_eq!(
            password_for(&spec, &spec.hosts[0], &e).as_deref(),
            Some("given")
        );
        e.open.push("/home/u/.pgpass".into());
        let spec = resolve("postgresql://u@h/db", &e).unwrap();
        assert_eq!(password_for(&spec, &spec.hosts[0], &e), None);
        // passfile= and $PGPASSFILE.
        let spec = resolve("postgresql://u@h/db?passfile=/p", &e).unwrap();
        assert_eq!(spec.passfile, Some(PathBuf::from("/p")));
        let spec = resolve("postgresql://u@h/db", &env(&[("PGPASSFILE", "/q")])).unwrap();
        assert_eq!(spec.passfile, Some(PathBuf::from("/q")));
    }

    #[test]
    fn check_without_the_environment() {
        assert!(check("postgresql://u:p@h:5/d?application_name=x&service=s").is_ok());
        assert!(check("postgresql://").is_ok());
        assert!(check("postgresql://h/d?sslmode=verify-full&sslcert=/c&sslkey=/k").is_ok());
        for bad in [
            "postgresql://h/d?sslmode=required",
            "postgresql://h:0/d",
            "postgresql://h/d?nope=1",
            "postgresql://[::1",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let spec = resolve("postgresql://u:sekrit@h/db", &env(&[])).unwrap();
        assert!(!format!("{spec:?}").contains("sekrit"));
    }
}
