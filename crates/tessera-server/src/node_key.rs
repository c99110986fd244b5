//! This node's signing key: Ed25519, kept in a file (`node.key` in the data
//! directory, mode 0600, or a path the operator gives) and never in the
//! database.
//!
//! The threat it answers: whoever holds a copy of the database (a backup, a
//! replica, a read-only credential) must not be able to mint a credential.
//! The database keeps only each node's public half (`node_keys`), which
//! every node reads to verify what another node signed.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use data_encoding::BASE64URL_NOPAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

/// The first line of a node key file.
const HEADER: &str = "tessera-node-key-v1";

/// Why the node key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeKeyError {
    #[error("cannot read the node key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the node key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Tessera node key (expected a `{HEADER}` file)")]
    Malformed { path: PathBuf },
    #[error(
        "the node key {path} can be read by other users (mode {mode:o}); \
         run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("cannot encode the node key: {0}")]
    Encode(String),
}

/// The node's Ed25519 signing key and its public key id.
pub struct NodeKey {
    signing: SigningKey,
    kid: String,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.kid)
    }
}

impl NodeKey {
    /// Reads the key at `path`, or creates it there (mode 0600, never
    /// replacing a file another process wrote first).
    pub fn load_or_create(path: &Path) -> Result<NodeKey, NodeKeyError> {
        loop {
            match std::fs::read_to_string(path) {
                Ok(text) => return Self::load(path, &Zeroizing::new(text)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(NodeKeyError::Read {
                        path: path.to_owned(),
                        source,
                    })
                }
            }
            let key = SigningKey::from_bytes(&tessera_core::secret::random_bytes());
            let text = Zeroizing::new(format!(
                "{HEADER}\n{}\n",
                BASE64URL_NOPAD.encode(key.as_bytes())
            ));
            let created = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| {
                    f.write_all(text.as_bytes())?;
                    f.sync_all()
                });
            match created {
                Ok(()) => return Ok(Self::from_signing(key)),
                // Another process won the race: read what it wrote.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(NodeKeyError::Write {
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
    }

    /// A fresh key held in memory only (tests, tools); a server uses
    /// [`NodeKey::load_or_create`].
    pub fn generate() -> NodeKey {
        Self::from_signing(SigningKey::from_bytes(&tessera_core::secret::random_bytes()))
    }

    /// The key with this Ed25519 seed (the protocol's test vectors).
    pub fn from_seed(seed: &[u8; 32]) -> NodeKey {
        Self::from_signing(SigningKey::from_bytes(seed))
    }

    fn load(path: &Path, text: &str) -> Result<NodeKey, NodeKeyError> {
        let mode = std::fs::metadata(path)
            .map_err(|source| NodeKeyError::Read {
                path: path.to_owned(),
                source,
            })?
            .mode();
        if mode & 0o077 != 0 {
            return Err(NodeKeyError::Exposed {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let malformed = || NodeKeyError::Malformed {
            path: path.to_owned(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(malformed());
        }
        let seed = lines
            .next()
            .and_then(|l| BASE64URL_NOPAD.decode(l.trim().as_bytes()).ok())
            .map(Zeroizing::new)
            .ok_or_else(malformed)?;
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| malformed())?;
        Ok(Self::from_signing(SigningKey::from_bytes(seed)))
    }

    fn from_signing(signing: SigningKey) -> NodeKey {
        let kid = kid_of(&signing.verifying_key().to_bytes());
        NodeKey { signing, kid }
    }

    /// The public key's id: what a token's `kid` header names.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `message` (an audit checkpoint's bytes, see
    /// `tessera_core::audit::Checkpoint::message`).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(message).to_bytes()
    }

    /// The key in the PKCS#8 form the JWT library signs with.
    pub fn pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, NodeKeyError> {
        self.signing
            .to_pkcs8_der()
            .map(|d| Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|e| NodeKeyError::Encode(e.to_string()))
    }
}

/// `nk_` and the first 16 hex digits of SHA-256 of the public key.
pub fn kid_of(public: &[u8; 32]) -> String {
    tessera_core::audit::node_kid(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_and_reads_back_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let made = NodeKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(made.kid(), again.kid());
        assert_eq!(made.public_key(), again.public_key());
        assert!(!format!("{made:?}").contains(&BASE64URL_NOPAD.encode(made.signing.as_bytes())));
    }

    #[test]
    fn an_exposed_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(matches!(
            NodeKey::load_or_create(&path),
            Err(NodeKeyError::Exposed { .. })
        ));
        let other = dir.path().join("other.key");
        std::fs::write(&other, "hello\n").unwrap();
        std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        assert!(matches!(
            NodeKey::load_or_create(&other),
            Err(NodeKeyError::Malformed { .. })
        ));
    }
}
