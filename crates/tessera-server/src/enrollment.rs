//! Enrolling devices with enrollment tokens (trust on first use), and the
//! key issuing that enrollment and pairing share.

use std::net::IpAddr;
use tessera_core::ErrorCode;

use tessera_core::identity::IdentityDocument;
use tessera_core::secret::{Secret, SecretKind};

use crate::http::error::ApiError;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::enrollment::TokenRow;
use crate::store::{self, StoreError, StoreResult, Tx};
use crate::AppState;

/// The state of a token, as listed and as enrollment explains a refusal.
pub fn token_state(t: &TokenRow, now: tessera_core::Timestamp) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at <= now {
        "expired"
    } else if t.uses_remaining <= 0 {
        "exhausted"
    } else {
        "active"
    }
}

/// Inserts an active key for a device and audits it.
pub async fn insert_key(
    state: &AppState,
    tx: &mut Tx,
    tenant: &str,
    device_id: &str,
    key: &Secret,
    created_by: &str,
    reason: &str,
) -> StoreResult<String> {
    let key_id = uuid::Uuid::now_v7().to_string();
    store::devices::insert_key(
        tx,
        store::devices::NewKey {
            id: &key_id,
            tenant_id: tenant,
            device_id,
            key_hash: &key.hash(),
            key_prefix: &key.prefix(),
            created_by,
            active: true,
            now: state.now(),
        },
    )
    .await?;
    let actor = match created_by.strip_prefix("user:") {
        Some(u) => Actor::User(u.to_owned()),
        None => Actor::System,
    };
    state
        .audit(
            tx,
            AuditEvent::new(tenant, actor, Action::KeyIssued)
                .target(format!("device:{device_id}"))
                .detail("key_id", key_id.clone())
                .detail("key", key.prefix())
                .detail("reason", reason),
        )
        .await?;
    Ok(key_id)
}

/// What a device sends to enroll.
pub struct Enrollment<'a> {
    pub token: &'a str,
    pub identity: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub ip: IpAddr,
}

/// Validates the descriptive fields a device reports about itself.
pub fn validate_device_fields(name: &str, hostname: &str, os: &str) -> Result<(), ApiError> {
    for (field, value, max) in [
        ("name", name, 128),
        ("hostname", hostname, 255),
        ("os", os, 128),
    ] {
        if value.trim().is_empty()
            || value.chars().count() > max
            || value.chars().any(char::is_control)
        {
            return Err(ApiError::unprocessable(
                ErrorCode::InvalidField,
                format!("`{field}` must be 1-{max} printable characters"),
            ));
        }
    }
    Ok(())
}

/// Enrolls a device with an enrollment token: one use is taken atomically,
/// and the device and its first key are created in the same transaction.
pub async fn enroll(state: &AppState, e: Enrollment<'_>) -> Result<(String, Secret), ApiError> {
    validate_device_fields(e.name, e.hostname, e.os)?;
    let doc = IdentityDocument::decode(e.identity)
        .map_err(|err| ApiError::unprocessable(ErrorCode::InvalidIdentity, err.to_string()))?;
    let device_id = doc
        .device_id()
        .map_err(|err| ApiError::unprocessable(ErrorCode::InvalidIdentity, err.to_string()))?;
    let token = match SecretKind::of(e.token) {
        Some(SecretKind::EnrollmentToken) => {
            Secret::parse(SecretKind::EnrollmentToken, e.token).ok()
        }
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::unauthorized(ErrorCode::InvalidToken, "not a valid enrollment token")
    })?;

    let now = state.now();
    let mut tx = state.db().begin_write().await?;
    let Some(used) = store::enrollment::consume(&mut tx, &token.hash(), now).await? else {
        tx.rollback().await?;
        return Err(refusal(state, &token, e.ip).await);
    };
    if let Some(existing) = store::devices::by_id_any_tenant(&mut *tx, device_id.as_str()).await? {
        tx.rollback().await?;
        return Err(if existing.revoked_at.is_some() {
            ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                ErrorCode::DeviceRevoked,
                "this device identity was revoked; it cannot enroll again",
            )
        } else {
            ApiError::conflict(
                ErrorCode::AlreadyEnrolled,
                "this device identity is already enrolled",
            )
        });
    }
    store::devices::insert(
        &mut tx,
        store::devices::NewDevice {
            id: device_id.as_str(),
            tenant_id: &used.tenant_id,
            ed25519_public: &doc.ed25519,
            x25519_public: &doc.x25519,
            identity_signature: &doc.signature,
            name: e.name.trim(),
            hostname: e.hostname.trim(),
            os: e.os.trim(),
            tags: &used.tags,
            enrolled_via: "enrollment_token",
            enrolled_by: &format!("token:{}", used.id),
            owner_user_id: &used.created_by,
            ephemeral: false,
            now,
        },
    )
    .await
    .map_err(|err| match err {
        StoreError::Conflict => ApiError::conflict(
            ErrorCode::AlreadyEnrolled,
            "this device identity is already enrolled",
        ),
        other => other.into(),
    })?;
    let key = Secret::generate(SecretKind::DeviceKey);
    insert_key(
        state,
        &mut tx,
        &used.tenant_id,
        device_id.as_str(),
        &key,
        &format!("token:{}", used.id),
        "enrollment",
    )
    .await?;
    let device_actor = Actor::Device(device_id.to_string());
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &used.tenant_id,
                device_actor.clone(),
                Action::DeviceEnrolled,
            )
            .ip(Some(e.ip))
            .target(format!("device:{device_id}"))
            .detail("via", "enrollment_token")
            .detail("token_id", used.id.clone())
            .detail("device_name", e.name.trim()),
        )
        .await?;
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &used.tenant_id,
                device_actor.clone(),
                Action::EnrollmentTokenUsed,
            )
            .ip(Some(e.ip))
            .target(format!("enrollment_token:{}", used.id))
            .detail("device_id", device_id.to_string())
            .detail("uses_remaining", used.uses_remaining),
        )
        .await?;
    if used.uses_remaining == 0 {
        state
            .audit(
                &mut tx,
                AuditEvent::new(
                    &used.tenant_id,
                    device_actor,
                    Action::EnrollmentTokenExhausted,
                )
                .target(format!("enrollment_token:{}", used.id)),
            )
            .await?;
    }
    tx.commit().await?;
    Ok((device_id.to_string(), key))
}

/// Explains why a token could not be used, and audits refusals of real
/// tokens (an unknown string is not worth a row).
async fn refusal(state: &AppState, token: &Secret, ip: IpAddr) -> ApiError {
    let found = match store::enrollment::by_hash(state.db().pool(), &token.hash()).await {
        Ok(found) => found,
        Err(e) => return e.into(),
    };
    let Some(t) = found else {
        return ApiError::unauthorized(ErrorCode::InvalidToken, "unknown enrollment token");
    };
    let state_name = token_state(&t, state.now());
    let audited: Result<(), StoreError> = async {
        let mut tx = state.db().begin_write().await?;
        state
            .audit(
                &mut tx,
                AuditEvent::new(&t.tenant_id, Actor::Anonymous, Action::EnrollmentRefused)
                    .ip(Some(ip))
                    .target(format!("enrollment_token:{}", t.id))
                    .detail("reason", state_name),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    if let Err(e) = audited {
        tracing::warn!(error = %e, "cannot audit an enrollment refusal");
    }
    match state_name {
        "revoked" => {
            ApiError::unauthorized(ErrorCode::TokenRevoked, "this enrollment token was revoked")
        }
        "expired" => {
            ApiError::unauthorized(ErrorCode::TokenExpired, "this enrollment token has expired")
        }
        _ => ApiError::unauthorized(
            ErrorCode::TokenExhausted,
            "this enrollment token has no uses left",
        ),
    }
}
