//! Key rotation over the control connection: the device asks, the server
//! offers a new (inactive) key, and the device's confirmation activates it
//! and revokes the one this connection authenticated with.

use tessera_core::secret::{Secret, SecretKind};
use tessera_core::ErrorCode;
use tessera_proto::v1::{RotateKeyDone, RotateKeyOffer};
use tessera_proto::Body;

use super::Session;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, StoreError};

pub(super) const REVOKED_CODE: ErrorCode = ErrorCode::KeyRevoked;

/// Why a rotation step was refused; the device reads the code and message.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("a rotation is already waiting for confirmation")]
    Pending,
    #[error("no rotation with that key id is pending on this connection")]
    Unknown,
    #[error("the offered key is no longer pending")]
    NoLongerPending,
    #[error("this device or key has been revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RotationError {
    /// The stable code the device sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            RotationError::Pending => ErrorCode::RotationPending,
            RotationError::Unknown | RotationError::NoLongerPending => ErrorCode::UnknownRotation,
            RotationError::Revoked => REVOKED_CODE,
            RotationError::Store(StoreError::Conflict) => ErrorCode::Conflict,
            RotationError::Store(_) => ErrorCode::Internal,
        }
    }

    /// What the device is told. Internal causes are logged, never sent.
    pub fn message(&self) -> String {
        match self {
            RotationError::Store(StoreError::Conflict) => "already exists".to_owned(),
            RotationError::Store(e) => {
                tracing::error!(error = %e, "internal error");
                "internal server error; see the server log".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl Session {
    pub(super) async fn offer_rotation(&mut self) -> Result<Body, RotationError> {
        if self.pending_rotation.is_some() {
            return Err(RotationError::Pending);
        }
        let secret = Secret::generate(SecretKind::DeviceKey);
        let key_id = uuid::Uuid::now_v7().to_string();
        let now = self.state.now();
        let d = &self.device;
        self.state
            .db()
            .write(async |w| {
                // A key revoked since this connection opened must not mint its
                // successor (the presence sweep may not have cut us off yet).
                if !store::devices::hold_live_key(w, &d.device_id, &d.key_id, now).await? {
                    return Err(RotationError::Revoked);
                }
                store::devices::insert_key(
                    w,
                    store::devices::NewKey {
                        id: &key_id,
                        tenant_id: &d.tenant_id,
                        device_id: &d.device_id,
                        key_hash: &secret.hash(),
                        key_prefix: &secret.prefix(),
                        created_by: &format!("device:{}", d.device_id),
                        active: false,
                        now,
                    },
                )
                .await?;
                w.audit(
                    AuditEvent::new(
                        &d.tenant_id,
                        Actor::Device(d.device_id.clone()),
                        Action::KeyIssued,
                    )
                    .target(format!("device:{}", d.device_id))
                    .detail("key_id", key_id.clone())
                    .detail("key", secret.prefix())
                    .detail("reason", "rotation_requested"),
                )
                .await?;
                Ok(())
            })
            .await?;
        self.pending_rotation = Some(key_id.clone());
        Ok(Body::RotateKeyOffer(RotateKeyOffer {
            key_id,
            device_key: secret.expose().to_owned(),
        }))
    }

    pub(super) async fn confirm_rotation(&mut self, key_id: &str) -> Result<Body, RotationError> {
        if self.pending_rotation.as_deref() != Some(key_id) {
            return Err(RotationError::Unknown);
        }
        let now = self.state.now();
        let d = &self.device;
        self.state
            .db()
            .write(async |w| {
                if !store::devices::hold_live_key(w, &d.device_id, &d.key_id, now).await? {
                    return Err(RotationError::Revoked);
                }
                if !store::devices::activate_key(w, &d.device_id, key_id, now).await? {
                    return Err(RotationError::NoLongerPending);
                }
                if !store::devices::revoke_key(
                    w,
                    &d.tenant_id,
                    &d.device_id,
                    &d.key_id,
                    "rotated",
                    now,
                )
                .await?
                {
                    return Err(RotationError::Revoked);
                }
                w.audit(
                    AuditEvent::new(
                        &d.tenant_id,
                        Actor::Device(d.device_id.clone()),
                        Action::KeyRotated,
                    )
                    .target(format!("device:{}", d.device_id))
                    .detail("old_key_id", d.key_id.clone())
                    .detail("new_key_id", key_id),
                )
                .await?;
                Ok(())
            })
            .await?;
        self.state
            .registry()
            .set_key(&d.device_id, self.conn_id, key_id);
        self.device.key_id = key_id.to_owned();
        self.pending_rotation = None;
        Ok(Body::RotateKeyDone(RotateKeyDone {
            key_id: key_id.to_owned(),
        }))
    }
}
