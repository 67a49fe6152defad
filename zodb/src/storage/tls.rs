//! TLS for the networked storages that speak their own protocol over a
//! socket: NEO (`neos://`, as NEO sets it up in `neo/lib/app.py` and
//! `neo/lib/connector.py`) and ZEO (`zeos://`, as ZEO's `ClientStorage(ssl=…)`
//! does it). Right after the connect, a TLS handshake; then the storage's
//! own handshake and messages inside TLS.
//!
//! - **The server is checked** against the CA file of the zurl (`ca=`):
//!   its chain, validity, key usage and the handshake signatures, by
//!   rustls' WebPKI verifier. Whether its *host name* is checked depends on
//!   the protocol ([`NameCheck`]): NEO does not check names (nodes are
//!   addressed by IP, and every node's certificate is signed by the
//!   cluster's own CA); ZEO's client does, against the host of the address
//!   or the name given (`server_hostname=`), as Python's default context
//!   does.
//! - **Our certificate** (`cert=`, `key=`) is presented when the server
//!   asks: NEO always needs one; a ZEO server needs one when it
//!   authenticates clients (`<ssl> authenticate` in `runzeo`'s config).
//! - **Errors name the cause** — the server's certificate not signed by
//!   our CA, expired, for another host; the server wanting a certificate
//!   from us or refusing ours; a peer that does not speak TLS — with the
//!   files involved ([`TlsClient`] keeps their paths), never key material.
//!
//! A connection is one [`rustls::ClientConnection`] over the socket, shared
//! under a mutex by the connection's writer and its reader thread
//! ([`TlsReader`]): rustls' state is not split in halves. The socket is a
//! TCP or a Unix socket ([`Sock`]).

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, InvalidMessage,
    RootCertStore, SignatureScheme,
};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether the server's certificate must be valid for the name it is
/// reached by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameCheck {
    /// Checked (ZEO, as Python's default client context does).
    Yes,
    /// Not checked (NEO).
    No,
}

/// A client's TLS setup: rustls' configuration, and the files it was made
/// of (for messages).
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub ca: PathBuf,
    /// Our certificate, if we have one.
    pub cert: Option<PathBuf>,
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    // ring: it builds with a C compiler alone. (Deprecated for lacking
    // post-quantum key exchange, which NEO's TLS 1.2 does not offer.)
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client setup for CA file `ca`, with our certificate and key
/// `client` (`(cert, key)`: the key may be in the certificate's file, as
/// Python's `load_cert_chain` allows) if any. Err: which file is wrong,
/// and why.
pub fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    names: NameCheck,
) -> Result<TlsClient, String> {
    let provider = crypto();
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("ca {}: {e}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca {}: {e}", ca.display()))?;
    if cas.is_empty() {
        return Err(format!("ca {}: no certificate in it", ca.display()));
    }
    for c in cas {
        roots
            .add(c)
            .map_err(|e| format!("ca {}: {e}", ca.display()))?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("ca {}: {e}", ca.display()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match names {
        NameCheck::Yes => builder.with_webpki_verifier(inner),
        NameCheck::No => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(inner))),
    };
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("cert {}: {e}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("cert {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!("cert {}: no certificate in it", cert.display()));
            }
            // The error names the file, never shows what is in it.
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    format!("key {}: no private key in it", key.display())
                }
                e => format!("key {}: {e}", key.display()),
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("cert {} / key {}: {e}", cert.display(), key.display()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsClient {
        config: Arc::new(config),
        ca: ca.to_path_buf(),
        cert: client.map(|(c, _)| c.to_path_buf()),
    })
}

/// WebPKI verification without the host name check (see the module doc).
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

impl TlsClient {
    /// What `e` (met talking to `name`) means, in words, naming our files;
    /// rustls' own words in parentheses.
    pub(crate) fn describe(&self, e: &rustls::Error, name: &str) -> String {
        use rustls::Error as E;
        use CertificateError as C;
        let ca = self.ca.display();
        let what = match e {
            E::InvalidCertificate(c) => match c {
                C::UnknownIssuer => format!(
                    "the server's certificate is not signed by the CA in ca {ca} (or a chain to it)"
                ),
                C::Expired | C::ExpiredContext { .. } => {
                    "the server's certificate has expired".to_string()
                }
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet".to_string()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                    "the server's certificate is not valid for the host name {name:?} \
                     (server_hostname= names the one to check)"
                ),
                C::Revoked => "the server's certificate is revoked".to_string(),
                _ => "the server's certificate is refused".to_string(),
            },
            E::AlertReceived(a) => match (a, &self.cert) {
                (
                    AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
                    None,
                ) => "the server requires a client certificate (give cert= and key=)".to_string(),
                (
                    AlertDescription::UnknownCA
                    | AlertDescription::BadCertificate
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::CertificateExpired
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::AccessDenied
                    | AlertDescription::DecryptError,
                    Some(cert),
                ) => format!(
                    "the server refused our client certificate cert {}",
                    cert.display()
                ),
                _ => "the server ended the TLS session".to_string(),
            },
            E::InvalidMessage(
                InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion,
            ) => "the peer does not speak TLS (does it run without TLS?)".to_string(),
            _ => return format!("TLS: {e}"),
        };
        format!("{what} ({e})")
    }

    /// `e` from rustls in an io::Error, described.
    fn io_error(&self, e: rustls::Error, name: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self.describe(&e, name))
    }
}

/// A connected socket a TLS session runs over.
pub(crate) trait Sock: Send + Sync {
    fn read_sock(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_sock(&self, buf: &[u8]) -> io::Result<usize>;
}

impl Sock for TcpStream {
    fn read_sock(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
    fn write_sock(&self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
}

impl Sock for UnixStream {
    fn read_sock(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
    fn write_sock(&self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
}

/// A [`Sock`] as `Read + Write`, for rustls.
struct Io<'a, S: ?Sized>(&'a S);

impl<S: Sock + ?Sized> Read for Io<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_sock(buf)
    }
}

impl<S: Sock + ?Sized> Write for Io<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_sock(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether a server that said nothing after the connect is waiting for a
/// TLS handshake: sends a TLS ClientHello on `sock` (a connection of its
/// own to that server) and looks at the first bytes of the answer (a TLS record: handshake or
/// alert). A plain server that speaks first but is slow takes the hello
/// for a garbled first message of a connection we then drop.
pub(crate) fn speaks_tls(sock: &dyn Sock) -> bool {
    let Ok(b) = ClientConfig::builder_with_provider(crypto()).with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = b
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Refuse))
        .with_no_client_auth();
    let name = ServerName::try_from("probe").expect("a valid DNS name");
    let Ok(mut tls) = rustls::ClientConnection::new(Arc::new(config), name) else {
        return false;
    };
    while tls.wants_write() {
        if tls.write_tls(&mut Io(sock)).is_err() {
            return false;
        }
    }
    let mut got = [0u8; 2];
    let mut n = 0;
    while n < got.len() {
        match sock.read_sock(&mut got[n..]) {
            Ok(0) | Err(_) => return false,
            Ok(k) => n += k,
        }
    }
    // Content type handshake (22) or alert (21), version 3.x.
    matches!(got, [21 | 22, 3])
}

/// The verifier of [`speaks_tls`]: the probe trusts nothing.
#[derive(Debug)]
struct Refuse;

impl ServerCertVerifier for Refuse {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General("a probe only".into()))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("a probe only".into()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("a probe only".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crypto()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS session over a socket, shared by a connection's writer and reader.
pub(crate) struct TlsShared {
    tls: Mutex<rustls::ClientConnection>,
    sock: Box<dyn Sock>,
    client: TlsClient,
    /// The name the server is checked against (for messages).
    name: String,
}

impl TlsShared {
    /// TLS handshake on `sock` (blocking, bounded by its timeouts) with
    /// the server called `name` (a DNS name or an IP address; with
    /// [`NameCheck::No`], anything).
    pub(crate) fn handshake(
        client: &TlsClient,
        name: &str,
        sock: Box<dyn Sock>,
    ) -> io::Result<TlsShared> {
        let server_name = ServerName::try_from(name.to_string())
            .unwrap_or_else(|_| ServerName::try_from("server").expect("a valid DNS name"));
        let mut tls = rustls::ClientConnection::new(client.config.clone(), server_name)
            .map_err(|e| client.io_error(e, name))?;
        while tls.is_handshaking() {
            tls.complete_io(&mut Io(&*sock)).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    return io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake \
                         (does the server run with TLS, and accept our certificate?)",
                    );
                }
                let inner = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .cloned();
                match inner {
                    Some(r) => client.io_error(r, name),
                    None => e,
                }
            })?;
        }
        Ok(TlsShared {
            tls: Mutex::new(tls),
            sock,
            client: client.clone(),
            name: name.to_string(),
        })
    }

    /// Writes all of `data`, encrypted.
    pub(crate) fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut tls = self.tls.lock();
        tls.writer().write_all(data)?;
        while tls.wants_write() {
            tls.write_tls(&mut Io(&*self.sock))?;
        }
        Ok(())
    }
}

/// Plaintext from a [`TlsShared`], for the reader thread (and for the
/// protocol's handshake before it starts). rustls holds only a little
/// received plaintext (16 KiB): it is moved out after every record —
/// straight into the caller's buffer, and what does not fit into our own,
/// served first by the next read.
pub(crate) struct TlsReader {
    pub(crate) shared: Arc<TlsShared>,
    raw: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl TlsReader {
    pub(crate) fn new(shared: Arc<TlsShared>) -> TlsReader {
        TlsReader {
            shared,
            raw: vec![0; 64 << 10],
            plain: Vec::new(),
            pos: 0,
            eof: false,
        }
    }

    /// Moves what rustls decrypted into `buf`, what does not fit after
    /// what `plain` holds; how much went into `buf` (nothing when `plain`
    /// holds some: `buf` is full then).
    fn take(&mut self, tls: &mut rustls::ClientConnection, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match tls.reader().read(&mut buf[got..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(got);
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) => return Err(e),
            }
        }
        let mut chunk = [0u8; 16 << 10];
        loop {
            match tls.reader().read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(got);
                }
                Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.pos);
                buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
                self.pos += n;
                if self.pos == self.plain.len() {
                    self.plain.clear();
                    self.pos = 0;
                }
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            let shared = self.shared.clone();
            {
                // Decrypted already (with the handshake, say).
                let mut tls = shared.tls.lock();
                let n = self.take(&mut tls, buf)?;
                if n > 0 || self.eof {
                    return Ok(n);
                }
            }
            // Socket timeouts come back as they are: the reader's tick.
            let n = shared.sock.read_sock(&mut self.raw)?;
            if n == 0 {
                return Ok(0);
            }
            let mut tls = shared.tls.lock();
            let raw = std::mem::take(&mut self.raw);
            let mut rd = &raw[..n];
            let r = (|| -> io::Result<usize> {
                let mut got = 0;
                while !rd.is_empty() {
                    tls.read_tls(&mut rd)?;
                    tls.process_new_packets()
                        .map_err(|e| shared.client.io_error(e, &shared.name))?;
                    got += self.take(&mut tls, &mut buf[got..])?;
                }
                while tls.wants_write() {
                    tls.write_tls(&mut Io(&*shared.sock))?;
                }
                Ok(got)
            })();
            self.raw = raw;
            let got = r?;
            if got > 0 || self.eof {
                return Ok(got);
            }
        }
    }
}
