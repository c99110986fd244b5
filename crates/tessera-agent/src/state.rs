//! The agent's state directory.
//!
//! | file | holds | mode |
//! |---|---|---|
//! | `identity.key` | Ed25519 seed ‖ X25519 secret (64 bytes) | 0600 |
//! | `device.json` | server URL (and alternates), DeviceId, TLS trust | 0600 |
//! | `device.key` | the `cak_` device key | 0600 |
//!
//! The directory is created 0700. Every write goes to a temporary file that
//! is synced and renamed into place, so a crash never leaves half a key. The
//! agent refuses to use a key file that group or others can read.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_client::TlsTrust;
use tessera_core::api::SecretString;
use tessera_core::identity::DeviceKeys;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "{path} is readable by group or others (mode {mode:04o}); fix it with: chmod 600 {path}"
    )]
    InsecureKeyFile { path: PathBuf, mode: u32 },
    #[error("{path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("this device is not enrolled yet (no {path}); run `tessera agent enroll` first")]
    NotEnrolled { path: PathBuf },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What enrollment leaves behind, besides the key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Enrollment {
    /// The server this device enrolled with: the first it connects to.
    pub server: String,
    /// Other servers sharing its database, tried in turn after `server`
    /// (absent from files written before there were any, and from those
    /// that name none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternates: Vec<String>,
    pub device_id: String,
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

impl Enrollment {
    pub fn trust(&self) -> TlsTrust {
        match (&self.tls_fingerprint, &self.ca_cert) {
            (Some(fp), _) => TlsTrust::Fingerprint(fp.clone()),
            (None, Some(ca)) => TlsTrust::CaFile(ca.clone()),
            (None, None) => TlsTrust::PublicRoots,
        }
    }
}

/// A state directory.
#[derive(Clone, Debug)]
pub struct AgentState {
    dir: PathBuf,
}

/// Refuses a secret file that anyone but its owner can read.
pub fn check_private(path: &Path) -> Result<(), StateError> {
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StateError::InsecureKeyFile {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically, mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

impl AgentState {
    pub fn new(dir: impl Into<PathBuf>) -> AgentState {
        AgentState { dir: dir.into() }
    }

    /// The default: `<data dir>/tessera-agent`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("tessera-agent")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn identity_path(&self) -> PathBuf {
        self.dir.join("identity.key")
    }

    fn enrollment_path(&self) -> PathBuf {
        self.dir.join("device.json")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("device.key")
    }

    fn ensure_dir(&self) -> Result<(), StateError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))
    }

    /// The device's identity, created on first use.
    pub fn identity_or_create(&self) -> Result<DeviceKeys, StateError> {
        let path = self.identity_path();
        if path.exists() {
            return self.identity();
        }
        self.ensure_dir()?;
        let keys = DeviceKeys::generate();
        write_private(&path, &keys.to_bytes())?;
        Ok(keys)
    }

    /// The device's identity; it must exist and be private.
    pub fn identity(&self) -> Result<DeviceKeys, StateError> {
        let path = self.identity_path();
        if !path.exists() {
            return Err(StateError::NotEnrolled { path });
        }
        check_private(&path)?;
        let bytes = Zeroizing::new(fs::read(&path).map_err(io(&path))?);
        DeviceKeys::from_bytes(&bytes).ok_or_else(|| StateError::Damaged {
            path,
            why: "not a 64-byte key pair".into(),
        })
    }

    pub fn save_enrollment(&self, e: &Enrollment, key: &SecretString) -> Result<(), StateError> {
        self.ensure_dir()?;
        self.save_key(key)?;
        let json = serde_json::to_vec_pretty(e).map_err(|err| StateError::Damaged {
            path: self.enrollment_path(),
            why: err.to_string(),
        })?;
        write_private(&self.enrollment_path(), &json)
    }

    /// Replaces the device key (after a rotation).
    pub fn save_key(&self, key: &SecretString) -> Result<(), StateError> {
        write_private(&self.key_path(), key.expose().as_bytes())
    }

    fn next_key_path(&self) -> PathBuf {
        self.dir.join("device.key.next")
    }

    /// Stores a rotation's new key beside the current one.
    pub fn save_next_key(&self, key: &SecretString) -> Result<(), StateError> {
        write_private(&self.next_key_path(), key.expose().as_bytes())
    }

    /// A rotation's new key, if one is waiting.
    pub fn next_key(&self) -> Result<Option<SecretString>, StateError> {
        let path = self.next_key_path();
        if !path.exists() {
            return Ok(None);
        }
        check_private(&path)?;
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        Ok(Some(SecretString::new(text.trim())))
    }

    /// Makes the rotation's new key the device key.
    pub fn promote_next_key(&self) -> Result<(), StateError> {
        fs::rename(self.next_key_path(), self.key_path()).map_err(io(&self.key_path()))
    }

    pub fn enrollment(&self) -> Result<Enrollment, StateError> {
        let path = self.enrollment_path();
        if !path.exists() {
            return Err(StateError::NotEnrolled { path });
        }
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|e| StateError::Damaged {
            path,
            why: e.to_string(),
        })
    }

    pub fn key(&self) -> Result<SecretString, StateError> {
        let path = self.key_path();
        if !path.exists() {
            return Err(StateError::NotEnrolled { path });
        }
        check_private(&path)?;
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        Ok(SecretString::new(text.trim()))
    }

    fn next_identity_path(&self) -> PathBuf {
        self.dir.join("identity.key.next")
    }

    /// Stores the next identity key beside the current one (before the
    /// server is told of the rotation).
    pub fn save_next_identity(&self, keys: &DeviceKeys) -> Result<(), StateError> {
        write_private(&self.next_identity_path(), &keys.to_bytes())
    }

    /// The next identity key, if a rotation left one.
    pub fn next_identity(&self) -> Result<Option<DeviceKeys>, StateError> {
        let path = self.next_identity_path();
        if !path.exists() {
            return Ok(None);
        }
        check_private(&path)?;
        let bytes = Zeroizing::new(fs::read(&path).map_err(io(&path))?);
        Ok(DeviceKeys::from_bytes(&bytes))
    }

    /// Makes the next identity key the current one. Already done (by the
    /// running agent, reconnecting after the rotation) is fine.
    pub fn promote_next_identity(&self) -> Result<(), StateError> {
        match fs::rename(self.next_identity_path(), self.identity_path()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(io(&self.identity_path())),
        }
    }

    pub fn is_enrolled(&self) -> bool {
        self.enrollment_path().exists() && self.key_path().exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let state = AgentState::new(dir.path().join("s"));
        let a = state.identity_or_create().unwrap();
        let b = state.identity_or_create().unwrap();
        assert_eq!(a.device_id(), b.device_id());
        let mode = fs::metadata(dir.path().join("s/identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = fs::metadata(dir.path().join("s"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
    }

    #[test]
    fn a_readable_key_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let state = AgentState::new(dir.path());
        state.identity_or_create().unwrap();
        let path = dir.path().join("identity.key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = state.identity().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("chmod 600") && msg.contains("identity.key") && msg.contains("0644"),
            "{msg}"
        );
    }

    #[test]
    fn a_file_from_before_alternates_loads_and_is_written_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let state = AgentState::new(dir.path());
        let old = r#"{"server":"http://127.0.0.1:8080","device_id":"ABCD","tls_fingerprint":null,"ca_cert":null}"#;
        write_private(&dir.path().join("device.json"), old.as_bytes()).unwrap();
        let e = state.enrollment().unwrap();
        assert_eq!(e.server, "http://127.0.0.1:8080");
        assert!(e.alternates.is_empty());
        let again = serde_json::to_string(&e).unwrap();
        assert_eq!(again, old, "no new field in a file that names no alternate");

        let with = r#"{"server":"https://a.example","alternates":["https://b.example","https://c.example"],"device_id":"ABCD"}"#;
        write_private(&dir.path().join("device.json"), with.as_bytes()).unwrap();
        assert_eq!(
            state.enrollment().unwrap().alternates,
            ["https://b.example", "https://c.example"]
        );
    }

    #[test]
    fn not_enrolled_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let state = AgentState::new(dir.path());
        let msg = state.enrollment().unwrap_err().to_string();
        assert!(msg.contains("tessera agent enroll"), "{msg}");
    }
}
