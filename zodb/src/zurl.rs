//! Storage URLs.
//!
//! A zurl names a storage, in the forms upstream wendelin.core's
//! `zstor_2zurl` writes them (and a few more):
//!
//! - `file://PATH` or a plain path: a FileStorage;
//! - `zeo://HOST:PORT` (`zeo://[V6ADDR]:PORT`): a ZEO server over TCP;
//!   `zeo:///PATH` (any address with a `/` and no `:PORT`): a ZEO server on
//!   a Unix socket. Either takes `?storage=NAME` for a storage other than
//!   `1` (what `runzeo` serves from `<filestorage NAME>` sections). The
//!   name is taken as written, up to the end (upstream does not escape
//!   it): everything after the last `?storage=`;
//! - `zeos://HOST:PORT?ca=PATH[&cert=PATH[&key=PATH]][&server_hostname=NAME][&storage=NAME]`
//!   (also `zeos:///SOCKET?…`, which needs `server_hostname=`): a ZEO
//!   server over TLS, as ZEO's `ClientStorage(ssl=…)` reaches it — the
//!   server's certificate checked against the CA `ca` and for the host
//!   name (`server_hostname`, else the host of the address); our
//!   certificate `cert` with its `key` (else the key in `cert`'s file)
//!   when the server authenticates clients. Here the parameters are
//!   `&`-separated and URL-quoted, and the address ends at the first `?`;
//! - `postgresql://…` (or `postgres://…`, a libpq connection URI): a
//!   RelStorage database in PostgreSQL (TLS with libpq's `sslmode=…`,
//!   `sslrootcert=…`, `sslcert=…`, `sslkey=…`);
//! - `neo://CLUSTER@HOST:PORT[,HOST:PORT…]`: a NEO cluster by its name and
//!   masters; `neos://…?ca=PATH&cert=PATH&key=PATH` with TLS (values
//!   URL-quoted);
//! - `demo:(BASE)/(DELTA)`: a DemoStorage, changes kept in the storage
//!   DELTA over the read-only storage BASE (see [`crate::storage::demo`]).
//!   BASE and DELTA are zurls written as they are, unescaped — they may
//!   themselves be `demo:` zurls, or hold parentheses and slashes. The
//!   split is the one `)/(` after which both sides are valid zurls; when
//!   several are, the one that leaves both sides' parentheses balanced
//!   (which nesting always does); when that still leaves a choice, the
//!   zurl is refused as ambiguous rather than guessed.
//!
//! A zurl may hold a password (`postgresql://user:password@host/db`, also
//! inside a `demo:` zurl): it is shown only [`redacted`] — in messages,
//! logs, the daemon's `.wcfs/zurl` and its mount source.
//!
//! Nothing here rewrites a zurl: the daemon's mountpoint is named by the
//! zurl exactly as given, and `.wcfs/zurl` reads it back as given, which is
//! what upstream's client compares when it joins.

use crate::storage::{postgres, Error, Resilience, Storage};
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a ZEO server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZeoAddr {
    Tcp {
        host: String,
        port: u16,
    },
    /// A Unix socket (a relative path is relative to the daemon's working
    /// directory, as a relative FileStorage path is).
    Unix(PathBuf),
}

/// What a zurl names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZUrl {
    File(PathBuf),
    Zeo {
        addr: ZeoAddr,
        /// The storage's name on the server (`1` unless `?storage=`).
        storage: String,
        /// `zeos://…`: over TLS.
        tls: Option<ZeoTls>,
    },
    /// A libpq connection URI (checked, not yet resolved against the
    /// environment: that happens when it is opened).
    Postgres(String),
    /// A DemoStorage: the zurls of its base and of its changes (each
    /// checked to parse), exactly as written.
    Demo {
        base: String,
        delta: String,
    },
    /// A NEO cluster: its name and masters (`neo://NAME@HOST:PORT,…`);
    /// `neos://…?ca=&cert=&key=` with TLS.
    Neo {
        cluster: String,
        masters: Vec<(String, u16)>,
        tls: Option<NeoTls>,
    },
}

/// The TLS files of a `neos://` zurl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeoTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS parameters of a `zeos://` zurl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZeoTls {
    /// The CA the server's certificate must chain to.
    pub ca: PathBuf,
    /// Our certificate, for a server that authenticates clients.
    pub cert: Option<PathBuf>,
    /// Its key (None: in `cert`'s file).
    pub key: Option<PathBuf>,
    /// The name the server's certificate must be valid for (None: the
    /// host of the address).
    pub server_hostname: Option<String>,
}

/// `%XX` escapes decoded (zurl values are URL-quoted).
fn unquote(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once unquoted"))
}

/// `neo://CLUSTER@HOST:PORT[,HOST:PORT…]`, `neos://…?ca=…&cert=…&key=…`.
fn parse_neo(rest: &str, tls: bool) -> Result<ZUrl, String> {
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let main = main.trim_end_matches('/');
    let (cluster, masters) = main
        .rsplit_once('@')
        .ok_or("want neo://CLUSTER@HOST:PORT[,HOST:PORT…]")?;
    let cluster = unquote(cluster)?;
    if cluster.is_empty() {
        return Err("no cluster name".into());
    }
    let mut ms = Vec::new();
    for m in masters.split(',') {
        let (host, port) = m
            .rsplit_once(':')
            .ok_or_else(|| format!("master {m:?}: want HOST:PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("master {m:?}: no host"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("master {m:?}: bad port"))?;
        ms.push((host.to_string(), port));
    }
    let (mut ca, mut cert, mut key) = (None, None, None);
    for kv in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("parameter {kv:?} has no value"))?;
        let v = PathBuf::from(unquote(v)?);
        match k {
            "ca" => ca = Some(v),
            "cert" => cert = Some(v),
            "key" => key = Some(v),
            _ => return Err(format!("unknown parameter {k:?} (want ca, cert, key)")),
        }
    }
    let tls = if tls {
        match (ca, cert, key) {
            (Some(ca), Some(cert), Some(key)) => Some(NeoTls { ca, cert, key }),
            _ => return Err("neos:// needs ca=, cert= and key=".into()),
        }
    } else {
        if ca.is_some() || cert.is_some() || key.is_some() {
            return Err("ca=, cert= and key= are for neos:// (TLS)".into());
        }
        None
    };
    Ok(ZUrl::Neo {
        cluster,
        masters: ms,
        tls,
    })
}

/// `zurl` as it may be shown: a password in it replaced by `***`
/// (`postgresql://user:***@host/db`, also inside a `demo:` zurl); any
/// other zurl as is.
pub fn redacted(zurl: &str) -> Cow<'_, str> {
    if zurl.starts_with(DEMO) {
        return match parse_nested(zurl, 0, &mut 0) {
            Ok(ZUrl::Demo { base, delta }) => {
                let (b, d) = (redacted(&base), redacted(&delta));
                if matches!((&b, &d), (Cow::Borrowed(_), Cow::Borrowed(_))) {
                    return Cow::Borrowed(zurl);
                }
                let out = format!("{DEMO}({b})/({d})");
                // Shown as it reads: the redacted parts must split the
                // same way (a password may have held the `)/(` or the
                // parenthesis that made the split), else hide it all.
                match parse_nested(&out, 0, &mut 0) {
                    Ok(ZUrl::Demo { base, delta }) if base == b && delta == d => Cow::Owned(out),
                    _ => Cow::Owned(format!("{DEMO}***")),
                }
            }
            // Where a password might be cannot be told: hide it all.
            _ if zurl.contains('@') => Cow::Owned(format!("{DEMO}***")),
            _ => Cow::Borrowed(zurl),
        };
    }
    postgres::dsn::redacted(zurl)
}

/// Whether `zurl` holds anything [`redacted`] hides.
pub fn has_secret(zurl: &str) -> bool {
    matches!(redacted(zurl), Cow::Owned(_))
}

const DEMO: &str = "demo:";

/// How deep `demo:` zurls may nest, and how many sub-zurls parsing one may
/// try: a zurl is a short string a person wrote (or upstream did); these
/// bound the work a hostile one can cause.
const DEMO_MAX_DEPTH: usize = 16;
const DEMO_MAX_TRIES: usize = 512;

/// Parses a zurl.
pub fn parse(zurl: &str) -> Result<ZUrl, Error> {
    let mut tries = 0;
    parse_nested(zurl, 0, &mut tries).map_err(|why| Error::BadUrl {
        zurl: redacted(zurl).into_owned(),
        why,
    })
}

fn parse_nested(zurl: &str, depth: usize, tries: &mut usize) -> Result<ZUrl, String> {
    *tries += 1;
    if *tries > DEMO_MAX_TRIES {
        return Err("too many ways to read its demo: parts".into());
    }
    if zurl.is_empty() {
        return Err("empty".into());
    }
    if let Some(rest) = zurl.strip_prefix("file://") {
        if rest.is_empty() {
            return Err("no path".into());
        }
        return Ok(ZUrl::File(PathBuf::from(rest)));
    }
    if let Some(rest) = zurl.strip_prefix("zeo://") {
        return parse_zeo(rest);
    }
    if let Some(rest) = zurl.strip_prefix("zeos://") {
        return parse_zeos(rest);
    }
    if let Some(rest) = zurl.strip_prefix(DEMO) {
        return parse_demo(rest, depth, tries);
    }
    for (scheme, tls) in [("neo://", false), ("neos://", true)] {
        if let Some(rest) = zurl.strip_prefix(scheme) {
            return parse_neo(rest, tls);
        }
    }
    if postgres::dsn::is_postgres_zurl(zurl) {
        postgres::dsn::check(zurl)?;
        return Ok(ZUrl::Postgres(zurl.to_string()));
    }
    if let Some((scheme, _)) = zurl.split_once("://") {
        return Err(format!(
            "unknown scheme {scheme:?} (want file://, zeo://, zeos://, neo://, neos://, postgresql:// or demo:)"
        ));
    }
    Ok(ZUrl::File(PathBuf::from(zurl)))
}

/// `HOST:PORT`, `[V6]:PORT` or a socket path, then `?storage=NAME`.
fn parse_zeo(rest: &str) -> Result<ZUrl, String> {
    const Q: &str = "?storage=";
    let (addr, storage) = match rest.rfind(Q) {
        Some(i) => (&rest[..i], &rest[i + Q.len()..]),
        None => (rest, "1"),
    };
    if storage.is_empty() {
        return Err("empty storage name".into());
    }
    let storage = storage.to_string();
    // HOST:PORT (a trailing '/' allowed), the port all digits.
    let tcp = addr
        .strip_suffix('/')
        .unwrap_or(addr)
        .rsplit_once(':')
        .filter(|(h, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.contains('/')
        });
    if let Some((host, port)) = tcp {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err("no host".into());
        }
        if host.contains('?') {
            return Err("unknown parameter (a zeo:// zurl takes ?storage=NAME only)".into());
        }
        let port: u16 = port.parse().map_err(|_| "bad port".to_string())?;
        return Ok(ZUrl::Zeo {
            addr: ZeoAddr::Tcp {
                host: host.to_string(),
                port,
            },
            storage,
            tls: None,
        });
    }
    if addr.contains('/') {
        if addr == "/" || addr.ends_with('/') {
            return Err("a Unix socket path names a directory".into());
        }
        return Ok(ZUrl::Zeo {
            addr: ZeoAddr::Unix(PathBuf::from(addr)),
            storage,
            tls: None,
        });
    }
    if addr.contains('?') {
        return Err("unknown parameter (a zeo:// zurl takes ?storage=NAME only)".into());
    }
    if addr.contains(':') {
        return Err("bad port".into());
    }
    Err("want zeo://HOST:PORT or zeo:///SOCKET/PATH".into())
}

/// `ADDRESS?ca=…[&cert=…][&key=…][&server_hostname=…][&storage=…]` (see
/// the module doc).
fn parse_zeos(rest: &str) -> Result<ZUrl, String> {
    const WANT: &str = "want zeos://HOST:PORT?ca=PATH[&cert=PATH&key=PATH][&server_hostname=NAME]";
    let (addr, query) = rest.split_once('?').ok_or(WANT)?;
    let (mut ca, mut cert, mut key, mut name, mut storage) = (None, None, None, None, None);
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("parameter {kv:?} has no value"))?;
        let v = unquote(v)?;
        if v.is_empty() {
            return Err(format!("{k}= is empty"));
        }
        let slot = match k {
            "ca" => &mut ca,
            "cert" => &mut cert,
            "key" => &mut key,
            "server_hostname" => &mut name,
            "storage" => &mut storage,
            _ => {
                return Err(format!(
                    "unknown parameter {k:?} (want ca, cert, key, server_hostname, storage)"
                ))
            }
        };
        if slot.replace(v).is_some() {
            return Err(format!("{k}= given twice"));
        }
    }
    let ca = ca
        .ok_or_else(|| format!("zeos:// needs ca= (the CA to check the server against); {WANT}"))?;
    if key.is_some() && cert.is_none() {
        return Err("key= without cert=".into());
    }
    if addr.contains('?') || addr.is_empty() {
        return Err(WANT.into());
    }
    let ZUrl::Zeo { addr, .. } = parse_zeo(addr).map_err(|e| e.replace("zeo://", "zeos://"))?
    else {
        unreachable!("parse_zeo gives ZUrl::Zeo");
    };
    if matches!(addr, ZeoAddr::Unix(_)) && name.is_none() {
        return Err(
            "zeos:// over a Unix socket needs server_hostname= (the name the server's certificate is for)"
                .into(),
        );
    }
    Ok(ZUrl::Zeo {
        addr,
        storage: storage.unwrap_or_else(|| "1".into()),
        tls: Some(ZeoTls {
            ca: ca.into(),
            cert: cert.map(PathBuf::from),
            key: key.map(PathBuf::from),
            server_hostname: name,
        }),
    })
}

/// Whether every ')' in `s` closes an earlier '('.
fn balanced(s: &str) -> bool {
    let mut depth = 0usize;
    for b in s.bytes() {
        match b {
            b'(' => depth += 1,
            b')' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => {}
        }
    }
    depth == 0
}

/// `(BASE)/(DELTA)` (see the module doc for how it is split).
fn parse_demo(rest: &str, depth: usize, tries: &mut usize) -> Result<ZUrl, String> {
    const WANT: &str = "want demo:(BASE_ZURL)/(DELTA_ZURL)";
    if depth >= DEMO_MAX_DEPTH {
        return Err(format!("demo: zurls nested deeper than {DEMO_MAX_DEPTH}"));
    }
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| WANT.to_string())?;
    // The splits that leave both sides balanced first: nesting always
    // does, and then only one of them (the outermost) is tried in depth.
    // Only when none of those reads does a split with stray parentheses
    // count — and then only when it is the one that reads.
    let splits: Vec<(&str, &str)> = inner
        .match_indices(")/(")
        .map(|(i, _)| (&inner[..i], &inner[i + 3..]))
        .collect();
    let (even, odd): (Vec<_>, Vec<_>) = splits
        .into_iter()
        .partition(|(b, d)| balanced(b) && balanced(d));
    let mut first_err = None;
    for group in [even, odd] {
        let mut valid = Vec::new();
        for (base, delta) in group {
            let r = parse_nested(base, depth + 1, tries)
                .and_then(|_| parse_nested(delta, depth + 1, tries));
            match r {
                Ok(_) => valid.push((base, delta)),
                Err(e) => {
                    if *tries > DEMO_MAX_TRIES {
                        return Err(e);
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        match valid[..] {
            [] => continue,
            [pick] => {
                return Ok(ZUrl::Demo {
                    base: pick.0.to_string(),
                    delta: pick.1.to_string(),
                })
            }
            _ => {
                return Err(format!(
                    "ambiguous: {} ways to split it into (BASE)/(DELTA)",
                    valid.len()
                ))
            }
        }
    }
    Err(match first_err {
        Some(e) => format!("{WANT}: {e}"),
        None => WANT.into(),
    })
}
/// Opens the storage a zurl names, with the default [`Resilience`].
pub fn open(zurl: &str) -> Result<Arc<dyn Storage>, Error> {
    open_with(zurl, &Resilience::default())
}

/// Opens the storage a zurl names; a networked one rides through losing its
/// server as `resilience` says.
pub fn open_with(zurl: &str, resilience: &Resilience) -> Result<Arc<dyn Storage>, Error> {
    use crate::storage::zeo::{ZeoOptions, ZeoStorage};
    match parse(zurl)? {
        ZUrl::File(path) => Ok(Arc::new(crate::storage::filestorage::FileStorage::open(
            &path, zurl,
        )?)),
        ZUrl::Zeo { addr, storage, tls } => {
            let (tls, server_hostname) = match tls {
                Some(t) => {
                    let cert = t.cert.as_deref();
                    let client = cert.map(|c| (c, t.key.as_deref().unwrap_or(c)));
                    let setup = crate::storage::zeo::tls_config(&t.ca, client).map_err(|why| {
                        Error::BadUrl {
                            zurl: redacted(zurl).into_owned(),
                            why,
                        }
                    })?;
                    (Some(setup), t.server_hostname)
                }
                None => (None, None),
            };
            let opts = ZeoOptions {
                storage,
                resilience: resilience.clone(),
                tls,
                server_hostname,
                ..ZeoOptions::default()
            };
            Ok(Arc::new(ZeoStorage::open_addr(addr, zurl, opts)?))
        }
        ZUrl::Postgres(uri) => Ok(Arc::new(postgres::PgStorage::open_with(
            &uri,
            resilience,
            postgres::PgOptions::default(),
        )?)),
        ZUrl::Demo { base, delta } => {
            let base = open_with(&base, resilience)?;
            let delta = open_with(&delta, resilience)?;
            Ok(Arc::new(crate::storage::demo::DemoStorage::new(
                zurl, base, delta,
            )?))
        }
        ZUrl::Neo { .. } => Ok(Arc::new(open_neo(zurl, resilience)?)),
    }
}

/// Opens the NEO cluster a `neo://` or `neos://` zurl names (for what
/// only a NEO storage does: `wcfsd ls` lists its objects).
pub fn open_neo(
    zurl: &str,
    resilience: &Resilience,
) -> Result<crate::storage::neo::NeoStorage, Error> {
    use crate::storage::neo::{tls_config, NeoOptions, NeoStorage};
    let ZUrl::Neo {
        cluster,
        masters,
        tls,
    } = parse(zurl)?
    else {
        return Err(Error::BadUrl {
            zurl: redacted(zurl).into_owned(),
            why: "not a neo:// zurl".into(),
        });
    };
    let tls = match tls {
        Some(t) => Some(
            tls_config(&t.ca, &t.cert, &t.key).map_err(|why| Error::BadUrl {
                zurl: redacted(zurl).into_owned(),
                why,
            })?,
        ),
        None => None,
    };
    let opts = NeoOptions {
        resilience: resilience.clone(),
        tls,
        ..NeoOptions::default()
    };
    NeoStorage::open_with(&cluster, masters, zurl, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, storage: &str) -> ZUrl {
        ZUrl::Zeo {
            addr: ZeoAddr::Tcp {
                host: host.into(),
                port,
            },
            storage: storage.into(),
            tls: None,
        }
    }

    fn unix(path: &str, storage: &str) -> ZUrl {
        ZUrl::Zeo {
            addr: ZeoAddr::Unix(path.into()),
            storage: storage.into(),
            tls: None,
        }
    }

    fn with_tls(z: ZUrl, tls: ZeoTls) -> ZUrl {
        match z {
            ZUrl::Zeo { addr, storage, .. } => ZUrl::Zeo {
                addr,
                storage,
                tls: Some(tls),
            },
            _ => unreachable!(),
        }
    }

    #[test]
    fn zeos_forms() {
        let t = |ca: &str, cert: Option<&str>, key: Option<&str>, name: Option<&str>| ZeoTls {
            ca: ca.into(),
            cert: cert.map(Into::into),
            key: key.map(Into::into),
            server_hostname: name.map(Into::into),
        };
        assert_eq!(
            parse("zeos://localhost:8100?ca=/c.pem").unwrap(),
            with_tls(tcp("localhost", 8100, "1"), t("/c.pem", None, None, None))
        );
        assert_eq!(
            parse(
                "zeos://[::1]:1?ca=/c&cert=/d%20e&key=/k&server_hostname=zeo.example&storage=a%26b"
            )
            .unwrap(),
            with_tls(
                tcp("::1", 1, "a&b"),
                t("/c", Some("/d e"), Some("/k"), Some("zeo.example"))
            )
        );
        assert_eq!(
            parse("zeos:///run/zeo.sock?server_hostname=h&ca=c&cert=x").unwrap(),
            with_tls(
                unix("/run/zeo.sock", "1"),
                t("c", Some("x"), None, Some("h"))
            )
        );
        for bad in [
            "zeos://h:1",
            "zeos://h:1?",
            "zeos://h:1?cert=/x",
            "zeos://h:1?ca=",
            "zeos://h:1?ca=/c&key=/k",
            "zeos://h:1?ca=/c&ca=/d",
            "zeos://h:1?ca=/c&bogus=1",
            "zeos://h:1?ca=/c&storage",
            "zeos://h?ca=/c",
            "zeos://?ca=/c",
            "zeos:///run/zeo.sock?ca=/c",
            "zeos://h:1?storage=x?ca=/c",
        ] {
            let e = parse(bad);
            assert!(matches!(e, Err(Error::BadUrl { .. })), "{bad}: {e:?}");
        }
        // Files that are not there: a clear error naming which.
        let e = open("zeos://127.0.0.1:1?ca=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(matches!(e, Error::BadUrl { .. }), "{e}");
        assert!(e.to_string().contains("ca /nonexistent/ca.pem"), "{e}");
    }

    fn demo(base: &str, delta: &str) -> ZUrl {
        ZUrl::Demo {
            base: base.into(),
            delta: delta.into(),
        }
    }

    #[test]
    fn parse_forms() {
        assert_eq!(
            parse("file:///a/b.fs").unwrap(),
            ZUrl::File("/a/b.fs".into())
        );
        assert_eq!(parse("/a/b.fs").unwrap(), ZUrl::File("/a/b.fs".into()));
        assert_eq!(parse("rel/b.fs").unwrap(), ZUrl::File("rel/b.fs".into()));
        assert_eq!(
            parse("zeo://localhost:8100").unwrap(),
            tcp("localhost", 8100, "1")
        );
        assert_eq!(parse("zeo://[::1]:8100").unwrap(), tcp("::1", 8100, "1"));
        assert_eq!(parse("zeo://h:1/").unwrap(), tcp("h", 1, "1"));
        for bad in [
            "",
            "file://",
            "zeo://host",
            "zeo://:1",
            "zeo://h:99999",
            "zeo://h:1?foo=bar",
            "zeo://h:1?storage=",
            "zeo://h:x",
            "zeo:///",
            "zeo:///run/",
            "neo://x",
            "neo://@h:1",
            "neo://c@h",
            "neo://c@h:1,",
            "neo://c@h:1?ca=x",
            "neos://c@h:1?ca=x",
            "neos://c@h:1?ca=a&cert=b&key=c&bogus=1",
            "postgresql://[::1",
            "postgres://h/db?novalue",
        ] {
            assert!(matches!(parse(bad), Err(Error::BadUrl { .. })), "{bad}");
        }
    }

    /// Every form upstream's `zstor_2zurl` writes for ZEO and DemoStorage
    /// (its own test's cases).
    #[test]
    fn upstream_forms() {
        assert_eq!(
            parse("zeo:///path/to/zeo.sock").unwrap(),
            unix("/path/to/zeo.sock", "1")
        );
        assert_eq!(
            parse("zeo:///path/to/zeo.sock?storage=test").unwrap(),
            unix("/path/to/zeo.sock", "test")
        );
        assert_eq!(
            parse("zeo://127.0.0.1:1234?storage=test").unwrap(),
            tcp("127.0.0.1", 1234, "test")
        );
        assert_eq!(
            parse("zeo://[::1]:1234?storage=test").unwrap(),
            tcp("::1", 1234, "test")
        );
        assert_eq!(
            parse("demo:(zeo://1.2.3.4:5?storage=base)/(file:///tmp/x/delta.fs)").unwrap(),
            demo("zeo://1.2.3.4:5?storage=base", "file:///tmp/x/delta.fs")
        );
        // A relative socket path (upstream writes the client's address as
        // is): needs a '/' to tell it from a host.
        assert_eq!(
            parse("zeo://run/zeo.sock?storage=a?b").unwrap(),
            unix("run/zeo.sock", "a?b")
        );
        // The name is everything after the last ?storage=.
        assert_eq!(
            parse("zeo:///a?storage=b?storage=c").unwrap(),
            unix("/a?storage=b", "c")
        );
    }

    #[test]
    fn demo_nesting_and_odd_paths() {
        // Nested on either side, several levels.
        let inner = "demo:(file:///b.fs)/(file:///d1.fs)";
        let z = format!("demo:({inner})/(file:///d2.fs)");
        assert_eq!(parse(&z).unwrap(), demo(inner, "file:///d2.fs"));
        let z2 = format!("demo:(file:///x.fs)/({z})");
        assert_eq!(parse(&z2).unwrap(), demo("file:///x.fs", &z));
        let z3 = format!("demo:({z})/({z2})");
        assert_eq!(parse(&z3).unwrap(), demo(&z, &z2));
        assert!(matches!(parse(&z3).unwrap(), ZUrl::Demo { .. }));
        // Parentheses and slashes inside the parts.
        assert_eq!(
            parse("demo:(file:///d(1)/b (copy).fs)/(file:///tmp/δ/(x).fs)").unwrap(),
            demo("file:///d(1)/b (copy).fs", "file:///tmp/δ/(x).fs")
        );
        // Two readings; only one balanced on both sides.
        assert_eq!(
            parse("demo:(/a(x)/(y)b)/(/c)").unwrap(),
            demo("/a(x)/(y)b", "/c")
        );
        // An unbalanced parenthesis in one part, when only one split gives
        // two valid zurls.
        assert_eq!(
            parse("demo:(file:///a(b.fs)/(zeo://h:1)").unwrap(),
            demo("file:///a(b.fs", "zeo://h:1")
        );
        // Two readings, neither balanced on both sides: refused.
        let e = parse("demo:(file:///a)/(file:///b)/(file:///c)").unwrap_err();
        assert!(e.to_string().contains("ambiguous"), "{e}");
        for bad in [
            "demo:",
            "demo:()/()",
            "demo:(file:///a)",
            "demo:(file:///a)/(file:///b",
            "demo:file:///a/file:///b",
            "demo:(file:///a)/(neo://x)",
            "demo:(zeo://h)/(file:///b)",
        ] {
            assert!(matches!(parse(bad), Err(Error::BadUrl { .. })), "{bad}");
        }
        // Deep nesting and many splits are bounded, not exponential.
        let mut z = "file:///a".to_string();
        for _ in 0..40 {
            z = format!("demo:({z})/(file:///b)");
        }
        assert!(parse(&z).is_err());
        let many = format!("demo:({})", ["file:///x"; 200].join(")/("));
        let t0 = std::time::Instant::now();
        assert!(parse(&many).is_err());
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
    }

    /// Random nested demo: zurls over leaves with parentheses, slashes,
    /// `)/(` and `?storage=` in them: with balanced parentheses in every
    /// leaf, the parse gives back exactly the parts; with stray ones, it
    /// gives an exact split or an error, never a panic.
    #[test]
    fn demo_random_nesting() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        const BALANCED: &[&str] = &[
            "file:///a/b.fs",
            "file:///d(1)/x (copy).fs",
            "/rel/(p)/q.fs",
            "zeo://h:1?storage=s",
            "zeo:///run/(z)/zeo.sock?storage=a(b)",
            "zeo://[::1]:9",
        ];
        const STRAY: &[&str] = &["file:///a(b.fs", "/x)y", "file:///p)/(q", "file:///x)/(y"];
        fn gen(rnd: &mut dyn FnMut(u64) -> u64, depth: u32, leaves: &[&str]) -> String {
            if depth == 0 || rnd(3) == 0 {
                return leaves[rnd(leaves.len() as u64) as usize].to_string();
            }
            let b = gen(rnd, depth - 1, leaves);
            let d = gen(rnd, depth - 1, leaves);
            format!("demo:({b})/({d})")
        }
        assert!(BALANCED.iter().all(|l| balanced(l)));
        assert!(STRAY.iter().all(|l| !balanced(l)));
        let balanced: Vec<&str> = BALANCED.to_vec();
        let mut all = balanced.clone();
        all.extend(STRAY);
        for i in 0..3000 {
            let strict = i % 2 == 0;
            let leaves = if strict { &balanced } else { &all };
            let b = gen(&mut rnd, 3, leaves);
            let d = gen(&mut rnd, 3, leaves);
            let z = format!("demo:({b})/({d})");
            match parse(&z) {
                Ok(ZUrl::Demo { base, delta }) => {
                    assert_eq!(format!("demo:({base})/({delta})"), z);
                    if strict {
                        assert_eq!((base.as_str(), delta.as_str()), (b.as_str(), d.as_str()));
                    }
                }
                Ok(other) => panic!("{z}: {other:?}"),
                Err(e) => assert!(!strict, "{z}: {e}"),
            }
        }
    }

    #[test]
    fn demo_redacted() {
        let z = "demo:(postgresql://u:sekrit@h/db)/(file:///d.fs)";
        assert_eq!(redacted(z), "demo:(postgresql://u:***@h/db)/(file:///d.fs)");
        assert!(has_secret(z));
        let e = parse("demo:(postgresql://u:sekrit@h/db?nov)/(file:///d.fs)").unwrap_err();
        assert!(!e.to_string().contains("sekrit"), "{e}");
        // Redacting a part that changes how the whole splits: hidden
        // whole, and stable (found by the zurl fuzz target).
        let z = "demo:(postgresql://uxx4Hdemo:(@s//c4Hdemo:(@s//c)xxxxx/u:Hқb)/(postgs)xxxxx/u:Hқb)/(postgst)";
        assert!(parse(z).is_ok());
        let shown = redacted(z);
        assert_eq!(shown, "demo:***");
        assert_eq!(redacted(&shown), shown);
        let plain = "demo:(zeo://h:1?storage=b)/(file:///d.fs)";
        assert!(matches!(redacted(plain), Cow::Borrowed(s) if s == plain));
        assert!(!has_secret(plain));
    }

    #[test]
    fn neo_zurls() {
        assert_eq!(
            parse("neo://db@127.0.0.1:1,[::1]:2").unwrap(),
            ZUrl::Neo {
                cluster: "db".into(),
                masters: vec![("127.0.0.1".into(), 1), ("::1".into(), 2)],
                tls: None,
            }
        );
        assert_eq!(
            parse("neos://db@h:1?ca=%2Fc%20a&cert=/c&key=/k").unwrap(),
            ZUrl::Neo {
                cluster: "db".into(),
                masters: vec![("h".into(), 1)],
                tls: Some(NeoTls {
                    ca: "/c a".into(),
                    cert: "/c".into(),
                    key: "/k".into()
                }),
            }
        );
        // Files that are not there: a clear error naming which.
        let e = open("neos://db@h:1?ca=/nonexistent/ca.pem&cert=b&key=c")
            .err()
            .unwrap();
        assert!(matches!(e, Error::BadUrl { .. }), "{e}");
        assert!(e.to_string().contains("ca /nonexistent/ca.pem"), "{e}");
        // Nobody listening: a clear error naming the master.
        let e = open("neo://db@127.0.0.1:1").err().unwrap();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }

    #[test]
    fn postgres_zurls() {
        for z in [
            "postgresql://u:p@h/db",
            "postgres://",
            "postgresql:///db?host=/run",
        ] {
            assert_eq!(parse(z).unwrap(), ZUrl::Postgres(z.into()));
        }
        // The password never shows in a parse error.
        let e = parse("postgresql://u:sekrit@h/db?nov").unwrap_err();
        assert!(!e.to_string().contains("sekrit"), "{e}");
        assert!(e.to_string().contains("u:***@h"), "{e}");
        assert_eq!(redacted("postgresql://u:p@h/db"), "postgresql://u:***@h/db");
        assert_eq!(redacted("zeo://h:1"), "zeo://h:1");
    }

    #[test]
    fn postgres_nobody_listening_is_a_clear_error() {
        let err = open("postgresql://u:sekrit@127.0.0.1:1/db").err().unwrap();
        let s = err.to_string();
        assert!(matches!(err, Error::Io { .. }), "{s}");
        assert!(s.contains("connect") && s.contains("127.0.0.1:1"), "{s}");
        assert!(!s.contains("sekrit"), "{s}");
    }

    #[test]
    fn zeo_nobody_listening_is_a_clear_error() {
        // Port 1 on loopback: connection refused.
        let err = open("zeo://127.0.0.1:1").err().unwrap();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("connect"), "{err}");
        // Nobody at a socket path.
        let err = open("zeo:///nonexistent/zeo.sock").err().unwrap();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let s = err.to_string();
        assert!(
            s.contains("connect") && s.contains("/nonexistent/zeo.sock"),
            "{s}"
        );
    }
}
