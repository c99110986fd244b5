//! The device plane's principal: a device authenticated by its `cak_` key.
//!
//! Only `cak_` keys are accepted here; an operator token is refused by its
//! kind. A key authenticates only while it is active (a rotation's new key
//! is not, until the device confirms it) and neither it nor its device is
//! revoked. Revocation is checked on every request, against the database, so
//! it holds across nodes at once.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::ErrorCode;

use super::bearer;
use crate::http::error::ApiError;
use crate::store::devices::KeyAuthRow;
use crate::tenancy::TenantScoped;
use crate::AppState;

#[derive(Clone, Debug)]
pub struct DevicePrincipal {
    pub device_id: String,
    pub key_id: String,
    pub key_prefix: String,
    pub tenant_id: String,
    pub owner_user_id: String,
    pub ed25519_public: [u8; 32],
}

impl TenantScoped for DevicePrincipal {
    fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
}

/// Why a key does not authenticate, most specific first.
pub fn check_key(row: &KeyAuthRow) -> Result<(), ApiError> {
    if row.device_revoked_at.is_some() {
        return Err(ApiError::unauthorized(
            ErrorCode::DeviceRevoked,
            "this device has been revoked",
        ));
    }
    if row.key_revoked_at.is_some() {
        return Err(ApiError::unauthorized(
            ErrorCode::KeyRevoked,
            "this device key has been revoked",
        ));
    }
    if row.key_activated_at.is_none() {
        return Err(ApiError::unauthorized(
            ErrorCode::KeyNotActive,
            "this device key has not been confirmed yet",
        ));
    }
    Ok(())
}

/// Parses a device key, refusing other planes' credentials by kind.
pub fn parse_device_key(token: &str) -> Result<Secret, ApiError> {
    match SecretKind::of(token) {
        Some(SecretKind::DeviceKey) => Secret::parse(SecretKind::DeviceKey, token).map_err(|_| {
            ApiError::unauthorized(ErrorCode::InvalidToken, "the device key is not valid")
        }),
        Some(_) => Err(ApiError::unauthorized(
            ErrorCode::WrongCredentialType,
            "this endpoint takes a device key",
        )),
        None => Err(ApiError::unauthorized(
            ErrorCode::InvalidToken,
            "the device key is not valid",
        )),
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
        }
    }
}

impl FromRequestParts<AppState> for DevicePrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized(
                ErrorCode::Unauthenticated,
                "missing device key (Authorization: Bearer cak_…)",
            )
        })?;
        let secret = parse_device_key(token)?;
        let row = crate::store::devices::key_auth(state.db().pool(), &secret.hash())
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized(ErrorCode::InvalidToken, "the device key is not valid")
            })?;
        check_key(&row)?;
        tracing::Span::current().record("device", row.device_id.as_str());
        Ok(row.into())
    }
}
