//! TLS for checks. Each connection gets its own rustls client config, so no
//! session is resumed and every check pays (and times) a full handshake, and
//! so its verifier can record the leaf certificate *before* judging it: an
//! expired or untrusted certificate still reports its dates and names.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::model::TlsDetails;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// What every handshake shares: the crypto provider and the trusted roots.
pub struct Tls {
    provider: Arc<CryptoProvider>,
    verifier: Arc<WebPkiServerVerifier>,
}

/// A finished handshake, or why it failed, with the certificates either way
/// when the server got as far as sending them.
pub struct Handshake {
    pub result: std::io::Result<TlsStream<TcpStream>>,
    /// The chain the server presented: the leaf first, then the
    /// intermediates it sent.
    pub chain: Vec<CertificateDer<'static>>,
}

impl Tls {
    /// Trusts the webpki roots (Mozilla's list) plus the certificates in
    /// `ca_files` (PEM), for sites behind a private CA.
    pub fn new(ca_files: &[PathBuf]) -> Result<Tls, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for path in ca_files {
            let bad = |message: String| TlsSetupError::CaFile {
                path: path.clone(),
                message,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?;
        Ok(Tls { provider, verifier })
    }

    /// Runs a handshake over `tcp` for `host` (a name, or an IP literal with
    /// or without the URL's brackets: then the certificate must name that
    /// IP), offering HTTP/2 and HTTP/1.1. With `verify` off any certificate
    /// and key is accepted, however weak (an old appliance's 1024-bit RSA),
    /// as curl's `--insecure` does; its details are still recorded.
    pub async fn handshake(&self, tcp: TcpStream, host: &str, verify: bool) -> Handshake {
        let capture = Arc::new(Capture {
            verifier: verify.then(|| self.verifier.clone()),
            provider: self.provider.clone(),
            chain: Mutex::new(Vec::new()),
        });
        // `[::1]` in a URL is the IP ::1 to TLS.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(capture.clone())
                    .with_no_client_auth()
            });
        let result = match (config, ServerName::try_from(host.to_owned())) {
            (Err(e), _) => Err(std::io::Error::other(e)),
            (_, Err(e)) => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)),
            (Ok(mut config), Ok(name)) => {
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
            }
        };
        let chain = std::mem::take(&mut *capture.chain.lock().expect("chain lock"));
        Handshake { result, chain }
    }
}

/// Records the presented chain, then verifies it (or not).
#[derive(Debug)]
struct Capture {
    /// `None`: accept any certificate (`verify_tls = false`).
    verifier: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.chain.lock().expect("chain lock") = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        match &self.verifier {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.verifier.is_none() {
            // Insecure: a key too weak for webpki (RSA under 2048 bits) is
            // accepted like any certificate. Nothing is proven without
            // verification anyway.
            return Ok(HandshakeSignatureValid::assertion());
        }
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.verifier.is_none() {
            return Ok(HandshakeSignatureValid::assertion());
        }
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Expiry, subject and issuer of a DER certificate, as of `now`.
pub fn details(der: &[u8], now: DateTime<Utc>) -> Option<TlsDetails> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)?;
    Some(TlsDetails {
        not_after,
        days_left: (not_after - now).num_seconds() as f64 / 86_400.0,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        version: None,
    })
}

/// The certificate of `chain` (leaf first) that expires first, as of `now`:
/// the one `min_cert_days` judges, since the site breaks when any of them
/// expires. Certificates that do not parse are skipped.
pub fn expires_first(chain: &[CertificateDer<'_>], now: DateTime<Utc>) -> Option<TlsDetails> {
    chain
        .iter()
        .filter_map(|der| details(der, now))
        .min_by_key(|d| d.not_after)
}

/// What a handshake failure most likely means, for the message: a server
/// that refuses every suite and version rustls offers is one that speaks
/// only what rustls does not implement (CBC-mode suites, TLS 1.0/1.1, RSA
/// key exchange). sitewatch does not fall back to those: rustls does not
/// implement them, and a browser refuses most of them too.
pub fn hint(error: &str) -> &'static str {
    if error.contains("HandshakeFailure")
        || error.contains("ProtocolVersion")
        || error.contains("InsufficientSecurity")
        || error.contains("PeerIncompatible")
    {
        " (the server offers no cipher suite or TLS version in common: it may speak only \
         CBC-mode suites, TLS 1.0/1.1 or RSA key exchange, which rustls and modern browsers \
         do not)"
    } else {
        ""
    }
}

/// `TLSv1.3` / `TLSv1.2` of an established connection.
pub fn version(stream: &TlsStream<TcpStream>) -> Option<String> {
    let (_, conn) = stream.get_ref();
    conn.protocol_version()
        .and_then(|v| v.as_str())
        .map(|s| s.replace("TLSv1_", "TLSv1."))
}

/// True when the server chose HTTP/2 by ALPN.
pub fn negotiated_h2(stream: &TlsStream<TcpStream>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}
