//! Storage URLs.
//!
//! A zurl names a storage: `file://PATH` or a plain path for a FileStorage,
//! `zeo://HOST:PORT` for a ZEO server, `neo://CLUSTER@HOST:PORT[,…]` for
//! a NEO cluster, `postgresql://…` (or `postgres://…`,
//! a libpq connection URI) for a RelStorage database in PostgreSQL.
//!
//! A zurl may hold a password (`postgresql://user:password@host/db`): it is
//! shown only [`redacted`] — in messages, logs, the daemon's `.wcfs/zurl`
//! and its mount source.

use crate::storage::{postgres, Error, Resilience, Storage};
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

/// What a zurl names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZUrl {
    File(PathBuf),
    Zeo {
        host: String,
        port: u16,
    },
    /// A libpq connection URI (checked, not yet resolved against the
    /// environment: that happens when it is opened).
    Postgres(String),
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
/// (`postgresql://user:***@host/db`); any other zurl as is.
pub fn redacted(zurl: &str) -> Cow<'_, str> {
    postgres::dsn::redacted(zurl)
}

/// Whether `zurl` holds anything [`redacted`] hides.
pub fn has_secret(zurl: &str) -> bool {
    postgres::dsn::has_secret(zurl)
}

/// Parses a zurl.
pub fn parse(zurl: &str) -> Result<ZUrl, Error> {
    let bad = |why: &str| Error::BadUrl {
        zurl: redacted(zurl).into_owned(),
        why: why.to_string(),
    };
    if zurl.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(rest) = zurl.strip_prefix("file://") {
        if rest.is_empty() {
            return Err(bad("no path"));
        }
        return Ok(ZUrl::File(PathBuf::from(rest)));
    }
    if let Some(rest) = zurl.strip_prefix("zeo://") {
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("want zeo://HOST:PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        return Ok(ZUrl::Zeo {
            host: host.to_string(),
            port,
        });
    }
    for (scheme, tls) in [("neo://", false), ("neos://", true)] {
        if let Some(rest) = zurl.strip_prefix(scheme) {
            return parse_neo(rest, tls).map_err(|why| bad(&why));
        }
    }
    if postgres::dsn::is_postgres_zurl(zurl) {
        postgres::dsn::check(zurl).map_err(|why| bad(&why))?;
        return Ok(ZUrl::Postgres(zurl.to_string()));
    }
    if let Some((scheme, _)) = zurl.split_once("://") {
        return Err(bad(&format!(
            "unknown scheme {scheme:?} (want file://, zeo://, neo://, neos:// or postgresql://)"
        )));
    }
    Ok(ZUrl::File(PathBuf::from(zurl)))
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
        ZUrl::Zeo { host, port } => {
            let opts = ZeoOptions {
                resilience: resilience.clone(),
                ..ZeoOptions::default()
            };
            Ok(Arc::new(ZeoStorage::open_with(&host, port, zurl, opts)?))
        }
        ZUrl::Postgres(uri) => Ok(Arc::new(postgres::PgStorage::open_with(
            &uri,
            resilience,
            postgres::PgOptions::default(),
        )?)),
        ZUrl::Neo {
            cluster,
            masters,
            tls,
        } => {
            use crate::storage::neo::{tls_config, NeoOptions, NeoStorage};
            let tls = match tls {
                Some(t) => {
                    Some(
                        tls_config(&t.ca, &t.cert, &t.key).map_err(|why| Error::BadUrl {
                            zurl: redacted(zurl).into_owned(),
                            why,
                        })?,
                    )
                }
                None => None,
            };
            let opts = NeoOptions {
                resilience: resilience.clone(),
                tls,
                ..NeoOptions::default()
            };
            Ok(Arc::new(NeoStorage::open_with(
                &cluster, masters, zurl, opts,
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ZUrl::Zeo {
                host: "localhost".into(),
                port: 8100
            }
        );
        assert_eq!(
            parse("zeo://[::1]:8100").unwrap(),
            ZUrl::Zeo {
                host: "::1".into(),
                port: 8100
            }
        );
        for bad in [
            "",
            "file://",
            "zeo://host",
            "zeo://:1",
            "zeo://h:99999",
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
    }
}
