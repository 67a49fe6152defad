//! TLS to the PostgreSQL server, with libpq's meaning of every setting.
//!
//! The settings (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `sslcrl`,
//! `sslsni`, `sslnegotiation`) come from the zurl, a service file or the
//! `PGSSL…` environment ([`super::dsn`] resolves them into a [`TlsSpec`]);
//! the files they name are read at every connect, as libpq reads them, so
//! a renewed certificate is picked up by the next reconnect.
//!
//! # What each `sslmode` does (libpq's rules)
//!
//! | mode | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `allow` | only if a plain login is refused | as `require` |
//! | `prefer` (default) | if the server offers it; a TLS attempt that fails is retried plain | as `require` |
//! | `require` | always | checked against `sslrootcert` if that file exists, else not at all |
//! | `verify-ca` | always | must chain to `sslrootcert` (which must exist) |
//! | `verify-full` | always | as `verify-ca`, and must name the host we connect to |
//!
//! A connection over a Unix socket never uses TLS (libpq does not ask for
//! it there; the server would not offer it). `sslrootcert=system` trusts the
//! system's CAs and asks for `verify-full` (weaker modes are refused, as
//! libpq refuses them).
//!
//! Defaults, as libpq's: `~/.postgresql/root.crt`, `root.crl`,
//! `postgresql.crt` and `postgresql.key`. A client certificate file that
//! does not exist means no client certificate; one that exists needs its
//! key, and a key file that group or others may read is refused (0600 or
//! less when it is ours, 0640 or less when root owns it). A CRL file that
//! does not exist is ignored (libpq ignores it too); one that exists must
//! parse, and then every certificate of the chain must have a CRL.
//!
//! # How
//!
//! rustls (ring) through `tokio-postgres-rustls`, which also gives SCRAM
//! its channel binding (`tls-server-end-point`). What libpq leaves to
//! OpenSSL's verifier is rustls' WebPKI verifier, with the host name check
//! taken off for `verify-ca` and the whole chain check for a `require`
//! without root certificate (the handshake's signatures are always
//! checked). One difference: WebPKI checks host names against the
//! certificate's subjectAltName only; libpq falls back to the common name
//! of a certificate that has none.
//!
//! Errors name the cause and the files involved, never their contents.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// A plain connection will not do.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// Which CAs to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the system's trusted CAs.
    System,
}

/// The TLS settings of a connection, the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    pub mode: SslMode,
    /// None: no home directory to find the default in.
    pub rootcert: Option<RootCert>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    /// Send the host name (SNI) when it is a name (`sslsni`, default on).
    pub sni: bool,
    /// `sslnegotiation=direct`: TLS at once, no SSLRequest first.
    pub direct: bool,
}

impl TlsSpec {
    /// No TLS (`sslmode=disable`).
    pub fn disabled() -> TlsSpec {
        TlsSpec {
            mode: SslMode::Disable,
            rootcert: None,
            cert: None,
            key: None,
            crl: None,
            sni: true,
            direct: false,
        }
    }

    fn rootcert_shown(&self) -> String {
        match &self.rootcert {
            Some(RootCert::File(p)) => p.display().to_string(),
            Some(RootCert::System) => "system".into(),
            None => "(none)".into(),
        }
    }
}

/// The rustls client configuration for `spec` (whose mode is not
/// `disable`), reading its files now. Err: which file, and why.
pub(crate) fn client_config(spec: &TlsSpec) -> Result<ClientConfig, String> {
    // ring: it builds with a C compiler alone, as for NEO's TLS.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verify_chain = match &spec.rootcert {
        Some(RootCert::System) => true,
        Some(RootCert::File(p)) if p.exists() => true,
        Some(RootCert::File(p)) if matches!(spec.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(format!(
                "root certificate file {} does not exist: sslmode={} needs the CA that signed the \
                 server's certificate there (give sslrootcert, or use sslmode=require not to \
                 check the server's certificate)",
                p.display(),
                spec.mode.name()
            ));
        }
        None if matches!(spec.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(format!(
                "sslmode={} needs a root certificate file: no sslrootcert given, and no home \
                 directory to find ~/.postgresql/root.crt in",
                spec.mode.name()
            ));
        }
        _ => false,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if verify_chain {
        let roots = roots(spec)?;
        let mut b = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let crls = crls(spec)?;
        if !crls.is_empty() {
            b = b.with_crls(crls);
        }
        let webpki = b
            .build()
            .map_err(|e| format!("sslrootcert {}: {e}", spec.rootcert_shown()))?;
        if spec.mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(AnyName(webpki))
        }
    } else {
        Arc::new(NoChain(provider.clone()))
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert(spec)? {
        Some((chain, key)) => {
            let (c, k) = (path_of(&spec.cert), path_of(&spec.key));
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("sslcert {c} / sslkey {k}: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = spec.sni;
    if spec.direct {
        // A server taking TLS at once wants to know it speaks PostgreSQL.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Ok(config)
}

fn path_of(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or("(none)".into(), |p| p.display().to_string())
}

fn roots(spec: &TlsSpec) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match &spec.rootcert {
        Some(RootCert::System) => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or(String::new(), |e| format!(" ({e})"));
                return Err(format!(
                    "sslrootcert=system: no trusted CA certificate found on this system{why}"
                ));
            }
        }
        Some(RootCert::File(p)) => {
            let what = |e: &dyn std::fmt::Display| format!("sslrootcert {}: {e}", p.display());
            let cas = CertificateDer::pem_file_iter(p)
                .map_err(|e| what(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| what(&e))?;
            if cas.is_empty() {
                return Err(what(&"no certificate in it"));
            }
            for c in cas {
                roots.add(c).map_err(|e| what(&e))?;
            }
        }
        None => {}
    }
    Ok(roots)
}

fn crls(spec: &TlsSpec) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let Some(p) = &spec.crl else {
        return Ok(Vec::new());
    };
    if !p.exists() {
        return Ok(Vec::new());
    }
    let what = |e: &dyn std::fmt::Display| format!("sslcrl {}: {e}", p.display());
    let crls = CertificateRevocationListDer::pem_file_iter(p)
        .map_err(|e| what(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| what(&e))?;
    if crls.is_empty() {
        return Err(what(&"no certificate revocation list in it"));
    }
    Ok(crls)
}

type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The client certificate and key, if the certificate file exists.
fn client_cert(spec: &TlsSpec) -> Result<Option<ClientCert>, String> {
    let Some(cert) = &spec.cert else {
        return Ok(None);
    };
    match std::fs::metadata(cert) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("sslcert {}: {e}", cert.display())),
        Ok(_) => {}
    }
    let what = |e: &dyn std::fmt::Display| format!("sslcert {}: {e}", cert.display());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| what(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| what(&e))?;
    if chain.is_empty() {
        return Err(what(&"no certificate in it"));
    }
    let Some(key) = &spec.key else {
        return Err(format!(
            "certificate {} present, but no private key file (sslkey) and no home directory \
             for ~/.postgresql/postgresql.key",
            cert.display()
        ));
    };
    check_key_file(key, cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "sslkey {}: {e} (a PEM private key, unencrypted: sslpassword is not supported)",
            key.display()
        )
    })?;
    Ok(Some((chain, key_der)))
}

/// libpq's rules for the key file: there, a regular file, and not open to
/// others — 0600 or less when it is ours, 0640 or less when root owns it
/// (so that a system-managed key can be shared with a group).
fn check_key_file(key: &Path, cert: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::metadata(key) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "certificate {} present, but not private key file {}",
                cert.display(),
                key.display()
            ))
        }
        Err(e) => return Err(format!("sslkey {}: {e}", key.display())),
    };
    if !m.is_file() {
        return Err(format!(
            "private key file {} is not a regular file",
            key.display()
        ));
    }
    let mode = m.mode();
    let bad = if m.uid() == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    };
    if bad {
        return Err(format!(
            "private key file {} has group or world access (mode {:04o}); it must be u=rw (0600) \
             or less if owned by the current user, or u=rw,g=r (0640) or less if owned by root",
            key.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

/// WebPKI verification without the host name check (`verify-ca`, and
/// `require`/`prefer`/`allow` with a root certificate file).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// No check of the server's certificate (`require` without a root
/// certificate file, as libpq): encryption without authentication. The
/// handshake's signatures are still checked against the certificate sent.
#[derive(Debug)]
struct NoChain(Arc<CryptoProvider>);

impl ServerCertVerifier for NoChain {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `tokio-postgres-rustls`' connector, noting whether a handshake was
/// started (so that a failed `prefer` attempt is retried plain only when it
/// was a TLS one, as libpq does, and so that we know what we got), and
/// reading the socket through a buffer: rustls asks the socket for 4 KiB
/// at a time, which made a cold read over TLS pay four system calls per
/// record (measured: TLS cost a third of the read rate; with the buffer,
/// one read takes what the socket has, up to [`READ_BUFFER`]).
pub(crate) struct Tracked {
    inner: tokio_postgres_rustls::MakeRustlsConnect,
    pub(crate) started: Arc<AtomicBool>,
}

/// The socket's read buffer under TLS.
const READ_BUFFER: usize = 256 << 10;

type Buffered<S> = tokio::io::BufReader<S>;
type Inner = tokio_postgres_rustls::MakeRustlsConnect;

impl Tracked {
    pub(crate) fn new(config: ClientConfig) -> Tracked {
        Tracked {
            inner: tokio_postgres_rustls::MakeRustlsConnect::new(config),
            started: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for Tracked
where
    S: tokio::io::AsyncRead,
    Inner: tokio_postgres::tls::MakeTlsConnect<Buffered<S>>,
{
    type Stream = <Inner as tokio_postgres::tls::MakeTlsConnect<Buffered<S>>>::Stream;
    type TlsConnect =
        TrackedConnect<<Inner as tokio_postgres::tls::MakeTlsConnect<Buffered<S>>>::TlsConnect>;
    type Error = <Inner as tokio_postgres::tls::MakeTlsConnect<Buffered<S>>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(TrackedConnect {
            inner: self.inner.make_tls_connect(domain)?,
            started: self.started.clone(),
        })
    }
}

pub(crate) struct TrackedConnect<T> {
    inner: T,
    started: Arc<AtomicBool>,
}

impl<S, T> tokio_postgres::tls::TlsConnect<S> for TrackedConnect<T>
where
    S: tokio::io::AsyncRead,
    T: tokio_postgres::tls::TlsConnect<Buffered<S>>,
{
    type Stream = T::Stream;
    type Error = T::Error;
    type Future = T::Future;

    fn connect(self, stream: S) -> T::Future {
        self.started.store(true, Ordering::Relaxed);
        self.inner
            .connect(tokio::io::BufReader::with_capacity(READ_BUFFER, stream))
    }
}

/// The rustls error behind a failed connect, if any.
fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = src {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r);
            }
        }
        src = c.source();
    }
    None
}

/// What a failed connect means for the user, when TLS is why: a sentence
/// naming the cause (and the files concerned), to put before the error
/// itself. `tls`: whether a handshake was started.
pub(crate) fn cause(
    e: &tokio_postgres::Error,
    spec: &TlsSpec,
    host: &str,
    tls: bool,
) -> Option<String> {
    if let Some(r) = rustls_error(e) {
        return Some(match r {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => format!(
                    "the server's certificate is not signed by a CA of sslrootcert {} (unknown CA)",
                    spec.rootcert_shown()
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "the server's certificate is not for host {host:?} (wrong host name; \
                     sslmode=verify-full checks it)"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired".into()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet".into()
                }
                CertificateError::Revoked => format!(
                    "the server's certificate is revoked (sslcrl {})",
                    path_of(&spec.crl)
                ),
                CertificateError::UnknownRevocationStatus => format!(
                    "no revocation list for the server's certificate chain in sslcrl {}",
                    path_of(&spec.crl)
                ),
                _ => format!(
                    "the server's certificate is refused (sslrootcert {})",
                    spec.rootcert_shown()
                ),
            },
            rustls::Error::AlertReceived(a) => match a {
                AlertDescription::CertificateRequired => format!(
                    "the server wants a client certificate and none was sent{}",
                    no_cert_why(spec)
                ),
                AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::AccessDenied
                | AlertDescription::DecryptError => format!(
                    "the server refused our client certificate {} ({a:?})",
                    path_of(&spec.cert)
                ),
                _ => format!("the server ended the TLS handshake ({a:?})"),
            },
            _ => "the TLS handshake failed".into(),
        });
    }
    if let Some(db) = e.as_db_error() {
        let m = db.message();
        if m.contains("client certificate") && client_cert_missing(spec) {
            return Some(format!(
                "the server wants a client certificate and none was sent{}",
                no_cert_why(spec)
            ));
        }
        if m.contains("no encryption") && !tls {
            return Some(format!(
                "the server refuses connections without TLS (sslmode={})",
                spec.mode.name()
            ));
        }
        return None;
    }
    let s = e.to_string();
    let mut chain = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        chain.push_str(&c.to_string());
        src = c.source();
    }
    if chain.contains("server does not support TLS") {
        return Some(format!(
            "the server does not offer TLS, and sslmode={} requires it",
            spec.mode.name()
        ));
    }
    if s.contains("TLS") && tls {
        return Some("the TLS handshake failed".into());
    }
    None
}

fn client_cert_missing(spec: &TlsSpec) -> bool {
    spec.cert.as_ref().is_none_or(|c| !c.exists())
}

fn no_cert_why(spec: &TlsSpec) -> String {
    match &spec.cert {
        Some(c) if !c.exists() => format!(" (sslcert {} does not exist)", c.display()),
        Some(_) => String::new(),
        None => " (no sslcert given)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        let cert = dir.path().join("c");
        std::fs::write(&key, "x").unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, root),
            (0o644, false),
            (0o660, false),
            (0o604, false),
        ] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check_key_file(&key, &cert);
            assert_eq!(r.is_ok(), ok, "{mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains(&key.display().to_string()), "{e}");
            }
        }
        let e = check_key_file(&dir.path().join("none"), &cert).unwrap_err();
        assert!(e.contains("not private key file"), "{e}");
        let e = check_key_file(dir.path(), &cert).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn verify_modes_need_a_root_file() {
        let mut spec = TlsSpec::disabled();
        spec.mode = SslMode::VerifyCa;
        spec.rootcert = Some(RootCert::File("/nonexistent/root.crt".into()));
        let e = client_config(&spec).unwrap_err();
        assert!(
            e.contains("/nonexistent/root.crt") && e.contains("does not exist"),
            "{e}"
        );
        // require without a root file: no check, a config all the same.
        spec.mode = SslMode::Require;
        assert!(client_config(&spec).is_ok());
    }
}
