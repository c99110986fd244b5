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
    #[error(
        "{path} is not a Tessera audit head file (expected `{HEAD_HEADER}`, a row number \
         and a hash); it is written by the server, do not edit it"
    )]
    HeadMalformed { path: PathBuf },
}

/// The first line of the file that remembers the last audit head this node
/// signed (`<node key path>.audit-head`).
const HEAD_HEADER: &str = "tessera-audit-head-v1";

/// An audit chain head this node signed: row `seq` had hash `hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedHead {
    pub seq: i64,
    pub hash: [u8; 32],
}

/// The last head this node signed, kept in memory and (for a key read from
/// a file) in `<node key path>.audit-head`, outside the database: a
/// database writer cannot make the node forget what it signed.
#[derive(Debug, Default)]
struct HeadMemory {
    path: Option<PathBuf>,
    head: std::sync::Mutex<Option<SignedHead>>,
    /// Set once the node found the log contradicting `head`.
    alarm: std::sync::atomic::AtomicBool,
    /// Held by the one checkpoint being signed on this node, from its
    /// check to remembering what it signed (see `checkpoint::write`).
    signing: tokio::sync::Mutex<()>,
}

/// Where the last signed audit head of the key at `key_path` is kept.
pub fn head_path(key_path: &Path) -> PathBuf {
    let mut name = key_path.as_os_str().to_owned();
    name.push(".audit-head");
    PathBuf::from(name)
}

fn read_head(path: &Path) -> Result<Option<SignedHead>, NodeKeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(NodeKeyError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let malformed = || NodeKeyError::HeadMalformed {
        path: path.to_owned(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEAD_HEADER) {
        return Err(malformed());
    }
    let mut fields = lines.next().ok_or_else(malformed)?.split_whitespace();
    let seq = fields
        .next()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|&s| s > 0)
        .ok_or_else(malformed)?;
    let hash = fields
        .next()
        .and_then(|h| data_encoding::HEXLOWER.decode(h.as_bytes()).ok())
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(malformed)?;
    Ok(Some(SignedHead { seq, hash }))
}

/// Replaces the file at `path` with `head`, atomically (a temporary file
/// of mode 0600, synced, then renamed over it).
fn write_head(path: &Path, head: SignedHead) -> Result<(), NodeKeyError> {
    let failed = |source| NodeKeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let text = format!(
        "{HEAD_HEADER}\n{} {}\n",
        head.seq,
        data_encoding::HEXLOWER.encode(&head.hash)
    );
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)?;
    if let Some(dir) = path.parent() {
        // The rename itself must survive a crash.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// The node's Ed25519 signing key and its public key id.
pub struct NodeKey {
    signing: SigningKey,
    kid: String,
    head: HeadMemory,
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
                Ok(text) => {
                    let mut key = Self::load(path, &Zeroizing::new(text))?;
                    key.keep_head_in(path)?;
                    return Ok(key);
                }
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
                Ok(()) => {
                    let mut key = Self::from_signing(key);
                    key.keep_head_in(path)?;
                    return Ok(key);
                }
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
        NodeKey {
            signing,
            kid,
            head: HeadMemory::default(),
        }
    }

    /// Reads the last signed audit head kept next to the key file, and
    /// keeps later ones there.
    fn keep_head_in(&mut self, key_path: &Path) -> Result<(), NodeKeyError> {
        let path = head_path(key_path);
        let head = read_head(&path)?;
        self.head = HeadMemory {
            path: Some(path),
            head: std::sync::Mutex::new(head),
            alarm: Default::default(),
            signing: Default::default(),
        };
        Ok(())
    }

    /// Waits until no other checkpoint is being signed on this node; the
    /// guard lets the next one in.
    pub async fn signing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.head.signing.lock().await
    }

    /// The last audit chain head this node signed, if any.
    pub fn signed_head(&self) -> Option<SignedHead> {
        *self.head.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that this node signed `head` (ignored if it remembers a
    /// later one), in memory and in the head file.
    pub fn remember_signed(&self, head: SignedHead) -> Result<(), NodeKeyError> {
        let mut current = self.head.head.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_some_and(|c| c.seq >= head.seq) {
            return Ok(());
        }
        *current = Some(head);
        match &self.head.path {
            Some(path) => write_head(path, head),
            None => Ok(()),
        }
    }

    /// Where the signed head is kept, for the operator's eyes.
    pub fn head_file(&self) -> Option<&Path> {
        self.head.path.as_deref()
    }

    /// Marks the audit alarm raised; true the first time only.
    pub fn raise_audit_alarm(&self) -> bool {
        !self
            .head
            .alarm
            .swap(true, std::sync::atomic::Ordering::SeqCst)
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
    fn the_signed_audit_head_survives_a_reload_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(key.signed_head(), None);
        let head = SignedHead {
            seq: 7,
            hash: [3u8; 32],
        };
        key.remember_signed(head).unwrap();
        key.remember_signed(SignedHead {
            seq: 5,
            hash: [1u8; 32],
        })
        .unwrap();
        assert_eq!(key.signed_head(), Some(head));
        let file = head_path(&path);
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        let again = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(again.signed_head(), Some(head));
        std::fs::write(&file, "junk\n").unwrap();
        assert!(matches!(
            NodeKey::load_or_create(&path),
            Err(NodeKeyError::HeadMalformed { .. })
        ));
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
