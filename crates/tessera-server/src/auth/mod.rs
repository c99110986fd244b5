//! Who is calling, and may they do this.
//!
//! The operator plane accepts only `otk_` bearer tokens. A device key (`cak_`)
//! or any other credential is refused here by its kind before any lookup, so
//! a credential of one plane can never authenticate on another.

pub mod device;
pub mod lockout;
pub mod login;
pub mod ratelimit;
pub mod viewer;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use tessera_core::roles::{Permission, Role};
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::ErrorCode;
use tessera_core::Timestamp;
use zeroize::Zeroizing;

use crate::http::error::ApiError;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::logins::SessionRow;
use crate::tenancy::TenantScoped;
use crate::AppState;

/// Argon2id off the async workers: a hash costs tens of milliseconds of CPU.
pub async fn hash_password(password: Zeroizing<String>) -> String {
    tokio::task::spawn_blocking(move || tessera_core::password::hash(&password))
        .await
        .unwrap_or_else(|_| "!".to_owned())
}

/// Verifies off the async workers; `None` as the hash spends the same time
/// on a dummy, so unknown usernames answer as slowly as wrong passwords.
pub async fn verify_password(phc: Option<String>, password: Zeroizing<String>) -> bool {
    tokio::task::spawn_blocking(move || match phc {
        Some(phc) => tessera_core::password::verify(&phc, &password),
        None => {
            tessera_core::password::verify_dummy(&password);
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// An authenticated operator, resolved from a live login session.
#[derive(Clone, Debug)]
pub struct Operator {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub tenant_id: String,
    pub session_id: String,
}

impl TenantScoped for Operator {
    fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
}

impl Operator {
    /// An audit event of this operator's, in their tenant.
    pub fn event(&self, action: Action) -> AuditEvent {
        AuditEvent::new(&self.tenant_id, Actor::User(self.user_id.clone()), action)
    }

    /// `403 forbidden` unless the operator's role grants `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.role.allows(p) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this action needs the `{}` permission",
                p.as_str()
            )))
        }
    }
}

/// Why a login session does not authenticate, in the order it is checked.
pub fn check_session(row: &SessionRow, now: Timestamp) -> Result<(), ApiError> {
    if row.revoked_at.is_some() {
        return Err(ApiError::unauthorized(
            ErrorCode::SessionRevoked,
            "this login session was ended; log in again",
        ));
    }
    if row.expires_at <= now {
        return Err(ApiError::unauthorized(
            ErrorCode::SessionExpired,
            "this login session has expired; log in again",
        ));
    }
    if row.user_disabled_at.is_some() {
        return Err(ApiError::unauthorized(
            ErrorCode::AccountDisabled,
            "this account is disabled",
        ));
    }
    Ok(())
}

/// The bearer token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_from(&parts.headers)
}

/// The bearer token in `headers`, if any.
pub fn bearer_from(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Parses an operator token, refusing other planes' credentials by kind.
pub fn parse_operator_token(token: &str) -> Result<Secret, ApiError> {
    match SecretKind::of(token) {
        Some(SecretKind::OperatorToken) => Secret::parse(SecretKind::OperatorToken, token)
            .map_err(|_| ApiError::unauthorized(ErrorCode::InvalidToken, "the token is not valid")),
        Some(_) => Err(ApiError::unauthorized(
            ErrorCode::WrongCredentialType,
            "this endpoint takes an operator login token",
        )),
        None => Err(ApiError::unauthorized(
            ErrorCode::InvalidToken,
            "the token is not valid",
        )),
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized(
                ErrorCode::Unauthenticated,
                "log in first: missing bearer token",
            )
        })?;
        let secret = parse_operator_token(token)?;
        let row = crate::store::logins::by_token_hash(state.db(), &secret.hash())
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized(ErrorCode::InvalidToken, "the token is not valid")
            })?;
        check_session(&row, state.now())?;
        let op = Operator {
            user_id: row.user_id,
            username: row.username,
            role: row.role,
            tenant_id: row.tenant_id,
            session_id: row.id,
        };
        tracing::Span::current().record("user", op.user_id.as_str());
        Ok(op)
    }
}
