#![no_main]
// postgresql:// zurls and the files the libpq environment brings in (a
// password file, a service file), as the PostgreSQL storage reads them:
// every input gives Ok or Err, never a panic; the redacted form of a zurl
// that parses is stable, parses too, and has no password but "***".
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use zodb::storage::postgres::dsn::{self, Environment};

/// An environment whose files are the fuzzer's.
struct Env {
    pgpass: String,
    services: String,
}

impl Environment for Env {
    fn var(&self, name: &str) -> Option<String> {
        (name == "PGSERVICE" && !self.services.is_empty()).then(|| "s".to_string())
    }
    fn home(&self) -> Option<PathBuf> {
        Some("/home/f".into())
    }
    fn user_name(&self) -> Option<String> {
        Some("f".into())
    }
    fn exists(&self, _: &Path) -> bool {
        false
    }
    fn read(&self, p: &Path) -> Result<Option<String>, String> {
        Ok(match p.to_str() {
            Some("/home/f/.pgpass") => Some(self.pgpass.clone()),
            Some("/home/f/.pg_service.conf") => Some(self.services.clone()),
            _ => None,
        })
    }
    fn others_may_read(&self, _: &Path) -> bool {
        false
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let zurl = parts.next().unwrap_or("");
    let env = Env {
        pgpass: parts.next().unwrap_or("").to_string(),
        services: parts.next().unwrap_or("").to_string(),
    };
    let shown = dsn::redacted(zurl);
    if let Ok(uri) = dsn::parse_uri(zurl) {
        assert_eq!(dsn::redacted(&shown), shown, "redaction is stable");
        let again = dsn::parse_uri(&shown).expect("the redacted form of a URI parses");
        if uri.password.as_deref().is_some_and(|p| !p.is_empty()) {
            assert_eq!(again.password.as_deref(), Some("***"));
        }
        for (k, v) in &again.params {
            if k == "password" {
                assert_eq!(v, "***");
            }
        }
    }
    if let Ok(spec) = dsn::resolve(zurl, &env) {
        for h in &spec.hosts {
            let _ = h.shown();
            let _ = dsn::password_for(&spec, h, &env);
        }
        assert!(!spec.hosts.is_empty());
    }
    let _ = dsn::service_section(&env.services, "s");
    let _ = dsn::pgpass_lookup(&env.pgpass, "h", "5432", "d", "u");
});
