//! TLS to PostgreSQL: the driver against throwaway clusters with `ssl = on`
//! (`hostssl … cert`, `hostnossl … reject`) and without TLS, with
//! certificates made here (`testkit::certs`).
//!
//! The oracle for what each setting means is libpq itself: for every
//! case, `psql` (the server's own client) connects with the same zurl,
//! and the driver must succeed exactly when psql does, over TLS exactly
//! when psql is — both read from the server's `pg_stat_ssl`, not from
//! the client. Failures must name their cause.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use testkit::certs::Pki;
use testkit::PgServer;
use zodb::storage::postgres::PgStorage;

const DB: &str = "zodb";
/// The role that logs in by client certificate (the client's CN).
const CERT_USER: &str = "wcfs_cert";

/// A database holding RelStorage's (empty) tables.
fn init_db(pg: &PgServer) {
    pg.create_db(DB);
    testkit::run_python("python/pg_oracle/pgoracle.py", &["init", &pg.zurl(DB)]);
}

struct Servers {
    pki: Pki,
    tls: PgServer,
    plain: PgServer,
    _dir: tempfile::TempDir,
}

/// A TLS cluster and a plain one, shared by the tests of this binary.
fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::make(&dir.path().join("pki"), CERT_USER);
        let tls = PgServer::start_tls(&pki.ca, &pki.server.cert, &pki.server.key);
        init_db(&tls);
        tls.create_reader(CERT_USER, "unused", DB);
        let plain = PgServer::start();
        init_db(&plain);
        Servers {
            pki,
            tls,
            plain,
            _dir: dir,
        }
    })
}

/// What a connection got, as the server saw it: None (no connection),
/// or whether it is over TLS.
type Outcome = Option<bool>;

/// psql with `zurl`: libpq's outcome (and its error). Its application
/// name gets a prefix, so that its backend, which may linger a moment
/// after psql exits, is never taken for ours.
fn psql(zurl: &str) -> (Outcome, String) {
    let zurl = zurl.replace("application_name=", "application_name=libpq-");
    let out = Command::new(testkit::pg::pg_bin().join("psql"))
        .args(["-X", "-q", "-A", "-t", "-d", &zurl, "-c"])
        .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .env("PGCONNECT_TIMEOUT", "20")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run psql");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return (None, err);
    }
    (Some(text == "t"), err)
}

/// The driver with `zurl` (whose application_name is `app`): its outcome
/// as the server reports it, or the error.
fn ours(pg: &PgServer, zurl: &str, app: &str) -> (Outcome, String) {
    match PgStorage::open(zurl) {
        Ok(st) => {
            let ssl = pg.psql(
                "postgres",
                &format!(
                    "SELECT DISTINCT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                     WHERE a.application_name = '{app}'"
                ),
            );
            drop(st);
            assert!(ssl == "t" || ssl == "f", "{app}: pg_stat_ssl says {ssl:?}");
            (Some(ssl == "t"), String::new())
        }
        Err(e) => {
            eprintln!("{app}: {e}");
            (None, e.to_string())
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Every sslmode, against the TLS server and the plain one, with and
/// without a root certificate file, as `postgres` and (TLS server) as the
/// certificate role: the driver agrees with libpq in every case.
#[test]
fn every_sslmode_as_libpq() {
    let s = servers();
    let none = path(&s.pki.dir.join("no-such-root.crt"));
    let no_cert = format!("&sslcert={}", path(&s.pki.dir.join("no-such-client.crt")));
    let with_cert = format!(
        "&sslcert={}&sslkey={}",
        path(&s.pki.client.cert),
        path(&s.pki.client.key)
    );
    let mut table = Vec::new();
    let mut n = 0;
    for (sname, pg) in [("tls", &s.tls), ("plain", &s.plain)] {
        for (user, cert) in [("postgres", &no_cert), (CERT_USER, &with_cert)] {
            if sname == "plain" && user == CERT_USER {
                continue; // no certificate login without TLS
            }
            for root in [path(&s.pki.ca), none.clone()] {
                for mode in [
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ] {
                    n += 1;
                    let app = format!("tlsmode{n}");
                    let zurl = pg.zurl_with(
                        user,
                        "localhost",
                        DB,
                        &format!("sslmode={mode}&sslrootcert={root}{cert}&application_name={app}"),
                    );
                    let (want, libpq_err) = psql(&zurl);
                    let (got, err) = ours(pg, &zurl, &app);
                    assert_eq!(
                        got, want,
                        "{zurl}: ours {got:?} ({err}), libpq {want:?} ({libpq_err})"
                    );
                    if got.is_none() {
                        // No key material, ever; the cause named.
                        assert!(!err.contains("PRIVATE KEY"), "{err}");
                        if root == none && mode.starts_with("verify") {
                            // (Checked before connecting: libpq finds it
                            // out after the server agreed to TLS.)
                            assert!(
                                err.contains(&none) && err.contains("does not exist"),
                                "{err}"
                            );
                        } else if sname == "plain" {
                            assert!(err.contains("does not offer TLS"), "{zurl}: {err}");
                        } else if mode == "disable" {
                            assert!(err.contains("refuses connections without TLS"), "{err}");
                        }
                    }
                    table.push(((sname, user, root == none, mode), got));
                }
            }
        }
    }
    // libpq's rules as the issue states them, so that a broken oracle is
    // caught too: prefer (the default) uses TLS when offered; allow gets
    // TLS from a server refusing plain logins; require and stricter never
    // go plain.
    let get = |k: (&str, &str, bool, &str)| table.iter().find(|(t, _)| *t == k).unwrap().1;
    assert_eq!(get(("tls", "postgres", true, "prefer")), Some(true));
    assert_eq!(get(("tls", "postgres", true, "allow")), Some(true));
    assert_eq!(get(("tls", "postgres", true, "disable")), None);
    assert_eq!(get(("tls", CERT_USER, false, "verify-full")), Some(true));
    assert_eq!(get(("plain", "postgres", true, "prefer")), Some(false));
    assert_eq!(get(("plain", "postgres", true, "require")), None);
    assert_eq!(get(("plain", "postgres", false, "verify-ca")), None);
    assert_eq!(get(("tls", "postgres", true, "verify-ca")), None);
}

/// The server's certificate: verify-full checks the host name (and IP
/// addresses), verify-ca does not; an expired certificate and one of
/// another CA are refused, with the cause named; require without a root
/// file checks nothing. Each case also against psql.
#[test]
fn server_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::make(&dir.path().join("pki"), CERT_USER);
    let mut pg = PgServer::start_tls(&pki.ca, &pki.server.cert, &pki.server.key);
    init_db(&pg);
    let ca = path(&pki.ca);
    let none = path(&dir.path().join("none.crt"));
    let mut n = 0;
    let mut case_with =
        |pg: &PgServer, host: &str, mode: &str, root: &str, more: &str, want_err: Option<&str>| {
            n += 1;
            let app = format!("tlscert{n}");
            let zurl = pg.zurl_with(
                "postgres",
                host,
                DB,
                &format!("sslmode={mode}&sslrootcert={root}&application_name={app}{more}"),
            );
            let (want, libpq_err) = psql(&zurl);
            let (got, err) = ours(pg, &zurl, &app);
            assert_eq!(
                got, want,
                "{zurl}: ours {got:?} ({err}), libpq {want:?} ({libpq_err})"
            );
            match want_err {
                None => assert_eq!(got, Some(true), "{zurl}: {err}"),
                Some(cause) => assert!(err.contains(cause), "{zurl}: {err}"),
            }
        };
    // The right certificate, by name and by address.
    case_with(&pg, "localhost", "verify-full", &ca, "", None);
    case_with(&pg, "127.0.0.1", "verify-full", &ca, "", None);
    // Revocation lists: one revoking it, one revoking nothing, one of
    // another CA (no list for ours), none at all.
    let crl = |p: &Path| format!("&sslcrl={}", path(p));
    let revoked = crl(&pki.crl_revoking_server);
    case_with(
        &pg,
        "localhost",
        "verify-full",
        &ca,
        &revoked,
        Some("the server's certificate is revoked"),
    );
    case_with(
        &pg,
        "localhost",
        "verify-ca",
        &ca,
        &crl(&pki.crl_empty),
        None,
    );
    let nocrl = crl(&dir.path().join("none.crl"));
    case_with(&pg, "localhost", "verify-ca", &ca, &nocrl, None);
    // (require without a root file checks nothing, revocation neither.)
    case_with(&pg, "localhost", "require", &none, &revoked, None);
    let mut case = |pg: &PgServer, host: &str, mode: &str, root: &str, want: Option<&str>| {
        case_with(pg, host, mode, root, "", want)
    };
    // Another host's certificate.
    pg.set_tls_files(&pki.ca, &pki.other_host.cert, &pki.other_host.key);
    pg.pg_ctl_restart("fast");
    case(
        &pg,
        "localhost",
        "verify-full",
        &ca,
        Some("is not for host \"localhost\" (wrong host name"),
    );
    case(
        &pg,
        "127.0.0.1",
        "verify-full",
        &ca,
        Some("is not for host \"127.0.0.1\""),
    );
    case(&pg, "localhost", "verify-ca", &ca, None);
    // An expired one.
    pg.set_tls_files(&pki.ca, &pki.expired.cert, &pki.expired.key);
    pg.pg_ctl_restart("fast");
    case(
        &pg,
        "localhost",
        "verify-ca",
        &ca,
        Some("the server's certificate has expired"),
    );
    case(&pg, "localhost", "require", &none, None);
    // Require with a root file checks the chain, as libpq.
    case(
        &pg,
        "localhost",
        "require",
        &ca,
        Some("the server's certificate has expired"),
    );
    // One of another CA.
    pg.set_tls_files(&pki.ca, &pki.foreign.cert, &pki.foreign.key);
    pg.pg_ctl_restart("fast");
    case(
        &pg,
        "localhost",
        "verify-full",
        &ca,
        Some(&format!(
            "not signed by a CA of sslrootcert {ca} (unknown CA)"
        )),
    );
    case(
        &pg,
        "localhost",
        "verify-full",
        &path(&pki.foreign_ca),
        None,
    );
    // prefer: a failed TLS attempt is retried plain (refused here).
    case(
        &pg,
        "localhost",
        "prefer",
        &ca,
        Some("refuses connections without TLS"),
    );
}

/// Client certificates: the role of the certificate's CN logs in with it
/// (the server sees its DN); without one, with one of another CA, or with
/// a key file others may read, the error says which and shows the paths,
/// never the key.
#[test]
fn client_certificate_login() {
    let s = servers();
    let pg = &s.tls;
    let ca = path(&s.pki.ca);
    let open = |cert: &Path, key: &Path, app: &str| {
        let zurl = pg.zurl_with(
            CERT_USER,
            "localhost",
            DB,
            &format!(
                "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}&application_name={app}",
                path(cert),
                path(key)
            ),
        );
        let r = PgStorage::open(&zurl);
        let (want, libpq_err) = psql(&zurl);
        assert_eq!(
            r.is_ok(),
            want.is_some(),
            "{zurl}: ours {:?}, libpq {libpq_err}",
            r.as_ref().err().map(|e| e.to_string())
        );
        r
    };
    let st = open(&s.pki.client.cert, &s.pki.client.key, "certlogin").unwrap();
    let dn = pg.psql(
        "postgres",
        "SELECT DISTINCT s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'certlogin'",
    );
    assert_eq!(dn, format!("/CN={CERT_USER}"));
    drop(st);

    let missing = s.pki.dir.join("missing.crt");
    let e = open(&missing, &s.pki.client.key, "nocert")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("wants a client certificate and none was sent")
            && e.contains(&format!("sslcert {} does not exist", path(&missing))),
        "{e}"
    );

    let e = open(&s.pki.foreign.cert, &s.pki.foreign.key, "foreign")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!(
            "the server refused our client certificate {}",
            path(&s.pki.foreign.cert)
        )),
        "{e}"
    );

    // A key file others may read: refused before connecting (libpq too).
    let open_key = s.pki.dir.join("open.key");
    std::fs::copy(&s.pki.client.key, &open_key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = open(&s.pki.client.cert, &open_key, "openkey")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!(
            "private key file {} has group or world access",
            path(&open_key)
        )),
        "{e}"
    );
    let key_text = std::fs::read_to_string(&open_key).unwrap();
    for l in key_text.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!e.contains(l), "key material in the error: {e}");
    }
    // A key that is not one: the path, not the content.
    let junk: PathBuf = s.pki.dir.join("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = open(&s.pki.client.cert, &junk, "junkkey")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&format!("sslkey {}", path(&junk))), "{e}");
    assert!(!e.contains("not a key"), "{e}");
}
