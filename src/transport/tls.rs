//! TLS for the QUIC connections (spec/03-session.md §2).
//!
//! Each node makes a fresh self-signed ECDSA P-256 certificate at start. TLS 1.3 with
//! mutual authentication proves that each end holds the private key of the certificate it
//! shows; *who* the end is comes afterwards, from HELLO: a Dilithium signature over this
//! connection's exporter secret. So the certificate verifiers here accept any certificate
//! but still check every handshake signature.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use thiserror::Error;

/// ALPN of session connections (spec/03).
pub const ALPN: &[u8] = b"dna/1";
/// ALPN of DHT connections (spec/04 §5.1).
pub const ALPN_DHT: &[u8] = b"dna-dht/1";
/// The server name a dialer puts in its ClientHello (identity comes from HELLO, not SNI).
pub const SERVER_NAME: &str = "dna";

/// Building the TLS configuration failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// A certificate and its private key.
pub struct CertifiedKey {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    /// PKCS#8 private key.
    pub key: PrivateKeyDer<'static>,
}

impl CertifiedKey {
    /// A fresh self-signed certificate.
    pub fn generate() -> Result<CertifiedKey, TlsError> {
        let c = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])?;
        Ok(CertifiedKey {
            cert: c.cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_pair.serialize_der())),
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate, verifies TLS 1.3 handshake signatures.
#[derive(Debug)]
struct AnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyCert {
    fn new() -> Arc<AnyCert> {
        Arc::new(AnyCert {
            algorithms: provider().signature_verification_algorithms,
        })
    }

    /// TLS 1.2 is never offered.
    fn tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    /// The handshake signature must verify against the certificate's key.
    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AnyCert::tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for AnyCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AnyCert::tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// rustls server configuration: TLS 1.3, client certificate required, ALPN `dna/1`.
pub fn server_config(key: &CertifiedKey) -> Result<rustls::ServerConfig, TlsError> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(AnyCert::new())
        .with_single_cert(vec![key.cert.clone()], key.key.clone_key())?;
    c.alpn_protocols = vec![ALPN.to_vec(), ALPN_DHT.to_vec()];
    Ok(c)
}

/// rustls client configuration: TLS 1.3, presents our certificate, ALPN `dna/1`.
pub fn client_config(key: &CertifiedKey) -> Result<rustls::ClientConfig, TlsError> {
    client_config_alpn(key, ALPN)
}

/// rustls client configuration offering one ALPN.
pub fn client_config_alpn(
    key: &CertifiedKey,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(AnyCert::new())
        .with_client_auth_cert(vec![key.cert.clone()], key.key.clone_key())?;
    c.alpn_protocols = vec![alpn.to_vec()];
    Ok(c)
}

/// quinn's client crypto config for DHT connections.
pub fn quic_dht_client(
    key: &CertifiedKey,
) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    quinn::crypto::rustls::QuicClientConfig::try_from(client_config_alpn(key, ALPN_DHT)?)
        .map_err(|e| TlsError::Quic(e.to_string()))
}

/// quinn's crypto configs built from the rustls ones.
pub fn quic_configs(
    key: &CertifiedKey,
) -> Result<
    (
        quinn::crypto::rustls::QuicServerConfig,
        quinn::crypto::rustls::QuicClientConfig,
    ),
    TlsError,
> {
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server_config(key)?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client_config(key)?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok((server, client))
}
