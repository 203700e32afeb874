//! Client certificates (mTLS). The TLS listener asks every caller for a certificate but does
//! not require one, and checks during the handshake only that the caller holds the
//! certificate's private key. Which profile a certificate proves — a pinned SHA-256 fingerprint,
//! or a chain to a profile's CA — is decided per request, against the current snapshot, so
//! configuration changes need no new listener. A certificate forwarded in a header is read only
//! when `--client-cert-header` names it, and only from `--trusted-proxies`.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::Digest;

/// The certificate chain a caller presented, with the leaf's fingerprint.
#[derive(Debug)]
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub fingerprint: [u8; 32],
}

impl ClientCert {
    /// From the chain a TLS connection received (leaf first).
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<Arc<Self>> {
        let leaf = chain.first()?;
        Some(Arc::new(Self {
            fingerprint: sha2::Sha256::digest(leaf.as_ref()).into(),
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
        }))
    }

    /// Whether the chain leads to `verifier`'s CA (validity period, signatures, and the
    /// client-authentication key usage all checked).
    pub fn chains_to(&self, verifier: &dyn ClientCertVerifier) -> bool {
        let (leaf, intermediates) = self.chain.split_first().expect("a chain has a leaf");
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok()
    }
}

/// A certificate a trusted proxy forwarded in a header: URL-encoded PEM, as nginx's
/// `$ssl_client_escaped_cert` gives it. The proxy has checked possession of the key.
pub fn from_forwarded_header(value: &http::HeaderValue) -> Option<Arc<ClientCert>> {
    use rustls::pki_types::pem::PemObject;
    let text = percent_encoding::percent_decode(value.as_bytes())
        .decode_utf8()
        .ok()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .ok()?;
    ClientCert::from_chain(&chain)
}

/// Parses a hex fingerprint, with or without `:` separators.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    crate::auth::token::parse_hash(&text.replace(':', "").to_ascii_lowercase())
}

/// A verifier for one profile's CA.
pub fn ca_verifier(ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("cannot read the CA certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("cannot use the CA: {e}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's verifier: a certificate is optional; when one is presented, the caller must
/// prove it holds its key. Whose it is gets decided per request.
#[derive(Debug)]
pub struct OptionalClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl OptionalClientCert {
    pub fn new() -> Self {
        Self {
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl Default for OptionalClientCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deliberately deferred: the request's authentication stage checks the chain against
        // the profile the certificate claims, using the snapshot of that moment.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
