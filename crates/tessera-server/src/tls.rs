//! TLS for the listener: certificate files, or a self-signed certificate
//! generated once into the data directory.

use std::path::{Path, PathBuf};

use axum_server::tls_rustls::RustlsConfig;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write TLS material at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid certificate or key: {0}")]
    Invalid(String),
}

/// Installs ring as rustls' process-wide provider. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// SHA-256 of a certificate's DER, as colon-separated upper-case hex pairs.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn first_cert_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| TlsError::Invalid("no certificate in PEM".into()))?
        .map(|c| c.to_vec())
        .map_err(|e| TlsError::Invalid(e.to_string()))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Loads PEM files; returns the rustls config and the leaf's fingerprint.
pub async fn from_files(cert: &Path, key: &Path) -> Result<(RustlsConfig, String), TlsError> {
    install_crypto_provider();
    let cert_pem = read(cert)?;
    let fp = fingerprint(&first_cert_der(&cert_pem)?);
    let config = RustlsConfig::from_pem(cert_pem.into_bytes(), read(key)?.into_bytes())
        .await
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    Ok((config, fp))
}

/// Uses `<data_dir>/tls/{cert,key}.pem`, generating them on first use for
/// `localhost`, the loopback addresses and `extra_names`.
pub async fn self_signed(
    data_dir: &Path,
    extra_names: &[String],
) -> Result<(RustlsConfig, String), TlsError> {
    let dir = data_dir.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !cert.exists() || !key.exists() {
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        names.extend(extra_names.iter().cloned());
        names.dedup();
        let certified = rcgen::generate_simple_self_signed(names)?;
        std::fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
            path: dir.clone(),
            source,
        })?;
        crate::fsutil::write_private(&key, certified.key_pair.serialize_pem().as_bytes()).map_err(
            |source| TlsError::Io {
                path: key.clone(),
                source,
            },
        )?;
        std::fs::write(&cert, certified.cert.pem()).map_err(|source| TlsError::Io {
            path: cert.clone(),
            source,
        })?;
    }
    from_files(&cert, &key).await
}
