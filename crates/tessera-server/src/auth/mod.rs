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

use axum::http::{header, HeaderMap};
use tessera_core::roles::{Permission, Role};
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::Timestamp;
use zeroize::Zeroizing;

use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::logins::SessionRow;
use crate::tenancy::TenantScoped;

/// Why an operator is not let in, or not let do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("log in first: missing bearer token")]
    MissingToken,
    #[error("the token is not valid")]
    InvalidToken,
    #[error("this endpoint takes an operator login token")]
    WrongCredentialType,
    #[error("this login session was ended; log in again")]
    SessionRevoked,
    #[error("this login session has expired; log in again")]
    SessionExpired,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("this action needs the `{}` permission", .0.as_str())]
    Forbidden(Permission),
}

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
    pub fn require(&self, p: Permission) -> Result<(), AuthError> {
        if self.role.allows(p) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(p))
        }
    }
}

/// Why a login session does not authenticate, in the order it is checked.
pub fn check_session(row: &SessionRow, now: Timestamp) -> Result<(), AuthError> {
    if row.revoked_at.is_some() {
        return Err(AuthError::SessionRevoked);
    }
    if row.expires_at <= now {
        return Err(AuthError::SessionExpired);
    }
    if row.user_disabled_at.is_some() {
        return Err(AuthError::AccountDisabled);
    }
    Ok(())
}

/// The bearer token in `headers`, if any.
pub fn bearer_from(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Parses an operator token, refusing other planes' credentials by kind.
pub fn parse_operator_token(token: &str) -> Result<Secret, AuthError> {
    match SecretKind::of(token) {
        Some(SecretKind::OperatorToken) => {
            Secret::parse(SecretKind::OperatorToken, token).map_err(|_| AuthError::InvalidToken)
        }
        Some(_) => Err(AuthError::WrongCredentialType),
        None => Err(AuthError::InvalidToken),
    }
}

impl Operator {
    /// The operator behind a login session row, if the session is live.
    pub fn from_session(row: SessionRow, now: Timestamp) -> Result<Operator, AuthError> {
        check_session(&row, now)?;
        Ok(Operator {
            user_id: row.user_id,
            username: row.username,
            role: row.role,
            tenant_id: row.tenant_id,
            session_id: row.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(revoked: bool, expires: i64, disabled: bool) -> SessionRow {
        SessionRow {
            id: "s".into(),
            tenant_id: "t".into(),
            user_id: "u".into(),
            username: "alice".into(),
            role: Role::Viewer,
            expires_at: Timestamp::from_millis(expires),
            revoked_at: revoked.then(|| Timestamp::from_millis(1)),
            user_disabled_at: disabled.then(|| Timestamp::from_millis(1)),
        }
    }

    #[test]
    fn a_session_is_refused_for_the_first_reason_that_applies() {
        let now = Timestamp::from_millis(1_000);
        assert_eq!(check_session(&session(false, 2_000, false), now), Ok(()));
        assert_eq!(
            check_session(&session(true, 500, true), now),
            Err(AuthError::SessionRevoked)
        );
        assert_eq!(
            check_session(&session(false, 1_000, true), now),
            Err(AuthError::SessionExpired)
        );
        assert_eq!(
            check_session(&session(false, 2_000, true), now),
            Err(AuthError::AccountDisabled)
        );
        let op = Operator::from_session(session(false, 2_000, false), now).unwrap();
        assert_eq!(op.session_id, "s");
        assert_eq!(
            op.require(Permission::ManageUsers),
            Err(AuthError::Forbidden(Permission::ManageUsers))
        );
    }

    #[test]
    fn only_operator_tokens_are_taken() {
        let t = Secret::generate(SecretKind::OperatorToken);
        assert!(parse_operator_token(t.expose()).is_ok());
        let k = Secret::generate(SecretKind::DeviceKey);
        assert_eq!(
            parse_operator_token(k.expose()).err(),
            Some(AuthError::WrongCredentialType)
        );
        assert_eq!(
            parse_operator_token("nonsense").err(),
            Some(AuthError::InvalidToken)
        );
    }
}
