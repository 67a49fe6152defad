//! Storage URLs.
//!
//! A zurl names a storage: `file://PATH` or a plain path for a FileStorage,
//! `zeo://HOST:PORT` for a ZEO server.

use crate::storage::{Error, Resilience, Storage};
use std::path::PathBuf;
use std::sync::Arc;

/// What a zurl names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZUrl {
    File(PathBuf),
    Zeo { host: String, port: u16 },
}

/// Parses a zurl.
pub fn parse(zurl: &str) -> Result<ZUrl, Error> {
    let bad = |why: &str| Error::BadUrl {
        zurl: zurl.to_string(),
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
    if let Some((scheme, _)) = zurl.split_once("://") {
        return Err(bad(&format!(
            "unknown scheme {scheme:?} (want file:// or zeo://)"
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
        ] {
            assert!(matches!(parse(bad), Err(Error::BadUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn zeo_nobody_listening_is_a_clear_error() {
        // Port 1 on loopback: connection refused.
        let err = open("zeo://127.0.0.1:1").err().unwrap();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("connect"), "{err}");
    }
}
