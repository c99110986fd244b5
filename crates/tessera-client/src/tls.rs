//! Which server certificates a client accepts.
//!
//! Besides the usual public roots, a client can pin the SHA-256 fingerprint
//! that `tessera server --tls-self-signed` prints, or trust a CA file. A pin
//! still checks that the server holds the certificate's private key (the
//! handshake signature); it only replaces the chain-of-trust question.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ClientError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsTrust {
    /// The public web PKI roots.
    #[default]
    PublicRoots,
    /// Exactly the certificate with this SHA-256 fingerprint (hex, colons
    /// and case ignored).
    Fingerprint(String),
    /// Certificates chaining to the CA(s) in this PEM file.
    CaFile(PathBuf),
}

/// The message a pin mismatch fails the handshake with; the client
/// recognises it to name the problem.
pub(crate) const PIN_MISMATCH: &str =
    "the server's certificate does not match the pinned fingerprint";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a fingerprint like `AB:CD:…` or `abcd…` into 32 bytes.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], ClientError> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let bytes = data_encoding::HEXLOWER
        .decode(hex.as_bytes())
        .map_err(|_| ClientError::Tls("fingerprint must be 64 hex digits".into()))?;
    bytes
        .try_into()
        .map_err(|_| ClientError::Tls("fingerprint must be 64 hex digits (SHA-256)".into()))
}

/// The rustls configuration for `trust`, shared by HTTP and WebSocket.
pub fn client_config(trust: &TlsTrust) -> Result<ClientConfig, ClientError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let config = match trust {
        TlsTrust::PublicRoots => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::CaFile(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                fingerprint: parse_fingerprint(fp)?,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if bool::from(seen.ct_eq(&self.fingerprint)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(PIN_MISMATCH.into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hexed = "AB".repeat(32);
        let coloned = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&hexed).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&coloned).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}
