//! The device plane's principal: a device authenticated by its `cak_` key.
//!
//! Only `cak_` keys are accepted here; an operator token is refused by its
//! kind. A key authenticates only while it is active (a rotation's new key
//! is not, until the device confirms it) and neither it nor its device is
//! revoked. Revocation is checked on every request, against the database, so
//! it holds across nodes at once.
//!
//! A support-code device's key is scoped to its one session's control
//! channel (issue 12, finding 8): every other device route refuses it with
//! [`DeviceAuthError::SupportKeyScope`], so a one-time agent cannot push
//! events under its technician's name, look up peers or take part in trust.

use tessera_core::secret::{Secret, SecretKind};

use crate::store::devices::KeyAuthRow;
use crate::tenancy::TenantScoped;

/// Why a device key does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceAuthError {
    #[error("missing device key (Authorization: Bearer cak_…)")]
    MissingKey,
    #[error("the device key is not valid")]
    InvalidKey,
    #[error("this endpoint takes a device key")]
    WrongCredentialType,
    #[error("this device has been revoked")]
    DeviceRevoked,
    #[error("this device key has been revoked")]
    KeyRevoked,
    #[error("this device key has not been confirmed yet")]
    KeyNotActive,
    #[error("a support-code key serves its own session's control channel only")]
    SupportKeyScope,
}

/// Which device routes a key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// Every device route: an enrolled or paired device.
    AnyDeviceRoute,
    /// `/ws/device` only, where a support-code device serves its session.
    ControlChannel,
}

/// Whether a live key may be used where `scope` says: a support-code
/// (ephemeral) device's key only on its control channel.
pub fn check_scope(row: &KeyAuthRow, scope: KeyScope) -> Result<(), DeviceAuthError> {
    match scope {
        KeyScope::AnyDeviceRoute if row.ephemeral => Err(DeviceAuthError::SupportKeyScope),
        _ => Ok(()),
    }
}

#[derive(Clone, Debug)]
pub struct DevicePrincipal {
    pub device_id: String,
    pub key_id: String,
    pub key_prefix: String,
    pub tenant_id: String,
    pub owner_user_id: String,
    pub ed25519_public: [u8; 32],
    /// A support-code device: its key serves its one session's control
    /// channel, and on it only that session's traffic.
    pub support_session_only: bool,
}

impl TenantScoped for DevicePrincipal {
    fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
}

/// Why a key does not authenticate, most specific first.
pub fn check_key(row: &KeyAuthRow) -> Result<(), DeviceAuthError> {
    if row.device_revoked_at.is_some() {
        return Err(DeviceAuthError::DeviceRevoked);
    }
    if row.key_revoked_at.is_some() {
        return Err(DeviceAuthError::KeyRevoked);
    }
    if row.key_activated_at.is_none() {
        return Err(DeviceAuthError::KeyNotActive);
    }
    Ok(())
}

/// Parses a device key, refusing other planes' credentials by kind.
pub fn parse_device_key(token: &str) -> Result<Secret, DeviceAuthError> {
    match SecretKind::of(token) {
        Some(SecretKind::DeviceKey) => {
            Secret::parse(SecretKind::DeviceKey, token).map_err(|_| DeviceAuthError::InvalidKey)
        }
        Some(_) => Err(DeviceAuthError::WrongCredentialType),
        None => Err(DeviceAuthError::InvalidKey),
    }
}

impl From<KeyAuthRow> for DevicePrincipal {
    fn from(row: KeyAuthRow) -> Self {
        DevicePrincipal {
            device_id: row.device_id,
            key_id: row.key_id,
            key_prefix: row.key_prefix,
            tenant_id: row.tenant_id,
            owner_user_id: row.owner_user_id,
            ed25519_public: row.ed25519_public,
            support_session_only: row.ephemeral,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::Timestamp;

    fn key(activated: bool, key_revoked: bool, device_revoked: bool) -> KeyAuthRow {
        let t = Some(Timestamp::from_millis(1));
        KeyAuthRow {
            key_id: "k".into(),
            key_prefix: "cak_x".into(),
            device_id: "d".into(),
            tenant_id: "t".into(),
            owner_user_id: "u".into(),
            ed25519_public: [0; 32],
            key_activated_at: t.filter(|_| activated),
            key_revoked_at: t.filter(|_| key_revoked),
            device_revoked_at: t.filter(|_| device_revoked),
            device_revoked_reason: None,
            ephemeral: false,
        }
    }

    #[test]
    fn a_support_key_is_scoped_to_its_control_channel() {
        let mut row = key(true, false, false);
        assert_eq!(check_scope(&row, KeyScope::AnyDeviceRoute), Ok(()));
        row.ephemeral = true;
        assert_eq!(
            check_scope(&row, KeyScope::AnyDeviceRoute),
            Err(DeviceAuthError::SupportKeyScope)
        );
        assert_eq!(check_scope(&row, KeyScope::ControlChannel), Ok(()));
    }

    #[test]
    fn a_key_is_refused_for_its_most_specific_reason() {
        assert_eq!(check_key(&key(true, false, false)), Ok(()));
        assert_eq!(
            check_key(&key(false, true, true)),
            Err(DeviceAuthError::DeviceRevoked)
        );
        assert_eq!(
            check_key(&key(false, true, false)),
            Err(DeviceAuthError::KeyRevoked)
        );
        assert_eq!(
            check_key(&key(false, false, false)),
            Err(DeviceAuthError::KeyNotActive)
        );
        let op = Secret::generate(SecretKind::OperatorToken);
        assert_eq!(
            parse_device_key(op.expose()).err(),
            Some(DeviceAuthError::WrongCredentialType)
        );
    }
}
