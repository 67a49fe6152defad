//! TLS for `neos://` clusters, as NEO sets it up (`neo/lib/app.py`,
//! `neo/lib/connector.py`): right after the TCP connect, a TLS handshake
//! with both sides authenticated — we present our certificate and key,
//! and the node's certificate must chain to the cluster's CA — then the
//! NEO handshake and packets inside TLS.
//!
//! NEO does not check host names (nodes are addressed by IP, and every
//! node's certificate is signed by the cluster's own CA): we do not
//! either. Anything else about the certificate — its chain, validity,
//! key usage, the handshake signatures — is checked by rustls' WebPKI
//! verifier.
//!
//! A connection is one [`rustls::ClientConnection`] over the socket, shared
//! under a mutex by the connection's writer and its reader thread
//! ([`TlsReader`]): rustls' state is not split in halves.

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

/// The client configuration of a `neos://` zurl: trust `ca`, present
/// `cert` with `key`. Err: which file is wrong, and why.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, String> {
    // ring: it builds with a C compiler alone. (Deprecated for lacking
    // post-quantum key exchange, which NEO's TLS 1.2 does not offer.)
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cert {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("cert {}: no certificate in it", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key {}: {e}", key.display()))?;
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("ca {}: {e}", ca.display()))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| format!("cert {} / key {}: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(config))
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

/// A TLS session over a socket, shared by a connection's writer and reader.
pub(super) struct TlsShared {
    tls: Mutex<rustls::ClientConnection>,
    sock: TcpStream,
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl TlsShared {
    /// TLS handshake on `sock` (blocking, bounded by its timeouts).
    pub(super) fn handshake(
        config: Arc<ClientConfig>,
        host: &str,
        mut sock: TcpStream,
    ) -> io::Result<TlsShared> {
        let name = ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("neo").expect("a valid DNS name"));
        let mut tls = rustls::ClientConnection::new(config, name).map_err(tls_err)?;
        while tls.is_handshaking() {
            tls.complete_io(&mut sock).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake \
                         (does the node run with TLS, and accept our certificate?)",
                    )
                } else {
                    e
                }
            })?;
        }
        Ok(TlsShared {
            tls: Mutex::new(tls),
            sock,
        })
    }

    /// Writes all of `data`, encrypted.
    pub(super) fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut tls = self.tls.lock();
        tls.writer().write_all(data)?;
        while tls.wants_write() {
            tls.write_tls(&mut &self.sock)?;
        }
        Ok(())
    }
}

/// Plaintext from a [`TlsShared`], for the reader thread (and for the NEO
/// handshake before it starts). rustls holds only a little received
/// plaintext: it is moved out after every record.
pub(super) struct TlsReader {
    pub(super) shared: Arc<TlsShared>,
    raw: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl TlsReader {
    pub(super) fn new(shared: Arc<TlsShared>) -> TlsReader {
        TlsReader {
            shared,
            raw: vec![0; 64 << 10],
            plain: Vec::new(),
            pos: 0,
            eof: false,
        }
    }

    /// Moves what rustls decrypted into `plain`.
    fn drain(&mut self, tls: &mut rustls::ClientConnection) -> io::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        loop {
            match tls.reader().read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
            {
                let shared = self.shared.clone();
                let mut tls = shared.tls.lock();
                self.drain(&mut tls)?;
                if !self.plain.is_empty() || self.eof {
                    continue;
                }
            }
            // Socket timeouts come back as they are: the reader's tick.
            let n = (&self.shared.sock).read(&mut self.raw)?;
            if n == 0 {
                return Ok(0);
            }
            let shared = self.shared.clone();
            let mut tls = shared.tls.lock();
            let raw = std::mem::take(&mut self.raw);
            let mut rd = &raw[..n];
            let r = (|| -> io::Result<()> {
                while !rd.is_empty() {
                    tls.read_tls(&mut rd)?;
                    tls.process_new_packets().map_err(tls_err)?;
                    self.drain(&mut tls)?;
                }
                while tls.wants_write() {
                    tls.write_tls(&mut &shared.sock)?;
                }
                Ok(())
            })();
            self.raw = raw;
            r?;
        }
    }
}
