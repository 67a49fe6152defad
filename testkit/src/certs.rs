//! Certificates made at test time, for the TLS tests of the networked
//! storages (PostgreSQL, ZEO, NEO): a CA, certificates it signs for a
//! server and a client, and the bad ones a user meets — expired, issued for
//! another host name, signed by another CA.
//!
//! Made with `rcgen` (ECDSA P-256), written as PEM files into a directory
//! of the test's own. Private keys are written with mode 0600, since libpq
//! and PostgreSQL refuse a key that others can read.
//!
//! Every server certificate names `localhost` and `127.0.0.1` except
//! [`Pki::other_host`], which names only `other.example`: a client that
//! checks host names must refuse it for `localhost`.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files of one test's public-key infrastructure.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
    /// The CA everything below (except [`Pki::foreign`]) chains to.
    pub ca: PathBuf,
    /// For `localhost` and `127.0.0.1`, server authentication.
    pub server: CertFiles,
    /// Client authentication, common name as given to [`Pki::make`] (for
    /// PostgreSQL's `cert` login the database user's name).
    pub client: CertFiles,
    /// Like `server`, valid from 2020-01-01 to 2021-01-01 only.
    pub expired: CertFiles,
    /// A server certificate for `other.example` only.
    pub other_host: CertFiles,
    /// A server and client certificate signed by an unrelated CA.
    pub foreign: CertFiles,
    /// That unrelated CA.
    pub foreign_ca: PathBuf,
    /// A revocation list of the CA revoking `server`'s certificate.
    pub crl_revoking_server: PathBuf,
    /// A revocation list of the CA revoking nothing.
    pub crl_empty: PathBuf,
}

impl Pki {
    /// Makes the CA and all certificates in `dir` (created if missing).
    pub fn make(dir: &Path, client_cn: &str) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let (ca, ca_key, ca_pem) = make_ca("wcfs test CA");
        let (fca, fca_key, fca_pem) = make_ca("unrelated test CA");
        let issuer = Issuer::new(ca, ca_key);
        let foreign_issuer = Issuer::new(fca, fca_key);
        let server_names = || {
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ]
        };
        let both = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let write_ca = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        let ca_path = write_ca("ca.pem", &ca_pem);
        let foreign_ca = write_ca("foreign-ca.pem", &fca_pem);
        let leaf = |name: &str, cn: &str, sans, eku, expired: bool, issuer: &Issuer<KeyPair>| {
            let mut p = CertificateParams::default();
            // Distinct serials, known to the revocation lists.
            p.serial_number = Some(SerialNumber::from_slice(name.as_bytes()));
            p.distinguished_name.push(DnType::CommonName, cn);
            p.subject_alt_names = sans;
            p.extended_key_usages = eku;
            // Python's ssl with VERIFY_X509_STRICT (ZEO sets it, and
            // Python 3.13 by default) wants the issuer's key identifier.
            p.use_authority_key_identifier_extension = true;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.is_ca = IsCa::ExplicitNoCa;
            if expired {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            } else {
                p.not_before = rcgen::date_time_ymd(2025, 1, 1);
                p.not_after = rcgen::date_time_ymd(2099, 1, 1);
            }
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, issuer).unwrap();
            write_pair(dir, name, &cert.pem(), &key.serialize_pem())
        };
        let crl = |name: &str, revoked: Vec<RevokedCertParams>| {
            let params = CertificateRevocationListParams {
                this_update: rcgen::date_time_ymd(2025, 1, 1),
                next_update: rcgen::date_time_ymd(2099, 1, 1),
                crl_number: SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: revoked,
                key_identifier_method: KeyIdMethod::Sha256,
            };
            write_ca(name, &params.signed_by(&issuer).unwrap().pem().unwrap())
        };
        let crl_revoking_server = crl(
            "crl-revoking-server.pem",
            vec![RevokedCertParams {
                serial_number: SerialNumber::from_slice(b"server"),
                revocation_time: rcgen::date_time_ymd(2025, 6, 1),
                reason_code: None,
                invalidity_date: None,
            }],
        );
        let crl_empty = crl("crl-empty.pem", vec![]);
        Pki {
            crl_revoking_server,
            crl_empty,
            dir: dir.to_path_buf(),
            ca: ca_path,
            server: leaf(
                "server",
                "localhost",
                server_names(),
                both.clone(),
                false,
                &issuer,
            ),
            client: leaf(
                "client",
                client_cn,
                vec![],
                vec![ExtendedKeyUsagePurpose::ClientAuth],
                false,
                &issuer,
            ),
            expired: leaf(
                "expired",
                "localhost",
                server_names(),
                both.clone(),
                true,
                &issuer,
            ),
            other_host: leaf(
                "other-host",
                "other.example",
                vec![SanType::DnsName("other.example".try_into().unwrap())],
                both.clone(),
                false,
                &issuer,
            ),
            foreign: leaf(
                "foreign",
                client_cn,
                server_names(),
                both,
                false,
                &foreign_issuer,
            ),
            foreign_ca,
        }
    }
}

fn make_ca(cn: &str) -> (CertificateParams, KeyPair, String) {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2019, 1, 1);
    p.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    (p, key, pem)
}

fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> CertFiles {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    CertFiles { cert: c, key: k }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// An independent check of what was made: openssl's own verifier.
    fn verify(ca: &Path, cert: &Path, extra: &[&str]) -> (bool, String) {
        let out = Command::new("openssl")
            .arg("verify")
            .args(extra)
            .arg("-CAfile")
            .arg(ca)
            .arg(cert)
            .output()
            .expect("openssl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    #[test]
    fn certificates_verify_as_intended() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::make(dir.path(), "zodb");
        let ok = |c: &Path, extra: &[&str]| {
            let (good, out) = verify(&pki.ca, c, extra);
            assert!(good, "{}: {out}", c.display());
        };
        ok(&pki.server.cert, &["-verify_hostname", "localhost"]);
        ok(&pki.server.cert, &["-x509_strict"]);
        ok(&pki.client.cert, &["-x509_strict"]);
        ok(&pki.server.cert, &["-verify_ip", "127.0.0.1"]);
        ok(&pki.client.cert, &["-purpose", "sslclient"]);
        ok(&pki.other_host.cert, &[]);
        let (good, out) = verify(&pki.ca, &pki.expired.cert, &[]);
        assert!(!good && out.contains("expired"), "{out}");
        let (good, out) = verify(
            &pki.ca,
            &pki.other_host.cert,
            &["-verify_hostname", "localhost"],
        );
        assert!(!good && out.contains("ostname"), "{out}");
        let (good, _) = verify(&pki.ca, &pki.foreign.cert, &[]);
        assert!(!good);
        let (good, out) = verify(&pki.foreign_ca, &pki.foreign.cert, &[]);
        assert!(good, "{out}");
        let mode = std::fs::metadata(&pki.client.key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
