//! Password login, shared by the JSON API and the `/device` page.

use std::net::IpAddr;
use std::time::Duration;
use tessera_core::ErrorCode;

use tessera_core::password;
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::Timestamp;
use zeroize::Zeroizing;

use super::lockout::FailureOutcome;
use super::verify_password;
use crate::http::error::ApiError;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::users::UserRow;
use crate::store::{self, Tx};
use crate::{tenancy, AppState};

pub const MAX_USERNAME_LEN: usize = 64;

/// A fresh login session.
pub struct LoggedIn {
    pub token: Secret,
    pub session_id: String,
    pub expires_at: Timestamp,
    pub user: UserRow,
}

pub fn locked_out(remaining: Duration) -> ApiError {
    ApiError::too_many_requests(
        ErrorCode::LockedOut,
        "too many failed attempts from this address; try again later",
        remaining,
    )
}

/// Counts a failed check from `ip` toward its lockout, and records the
/// lockout when this failure triggers one.
pub async fn count_failure(state: &AppState, tx: &mut Tx, ip: IpAddr) -> Result<(), ApiError> {
    if let FailureOutcome::LockedOut { until } =
        state.login_lockout().record_failure(&ip, state.now())
    {
        state
            .audit(
                tx,
                AuditEvent::new(
                    tenancy::for_anonymous(),
                    Actor::Anonymous,
                    Action::LockoutTriggered,
                )
                .ip(Some(ip))
                .detail("until", until.to_rfc3339()),
            )
            .await?;
    }
    Ok(())
}

/// Checks a username and password and opens a login session. Every outcome
/// is audited; failures count toward the address's lockout.
pub async fn login(
    state: &AppState,
    ip: IpAddr,
    username: &str,
    password: &str,
) -> Result<LoggedIn, ApiError> {
    let now = state.now();
    state.login_lockout().check(&ip, now).map_err(locked_out)?;
    let tenant = tenancy::for_anonymous();
    if username.len() > MAX_USERNAME_LEN || password.len() > password::MAX_PASSWORD_LEN * 4 {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "username or password too long",
        ));
    }
    let user = store::users::by_username(state.db().pool(), tenant, username).await?;
    let ok = verify_password(
        user.as_ref().map(|u| u.password_hash.clone()),
        Zeroizing::new(password.to_owned()),
    )
    .await;

    let mut tx = state.db().begin_write().await?;
    let user = match user {
        Some(u) if ok && u.disabled_at.is_none() => u,
        found => {
            let (reason, target) = match &found {
                None => ("unknown_user", None),
                Some(u) if ok => ("account_disabled", Some(u)),
                Some(u) => ("wrong_password", Some(u)),
            };
            let mut event = AuditEvent::new(tenant, Actor::Anonymous, Action::LoginFailed)
                .ip(Some(ip))
                .detail("reason", reason);
            // The attempted name is recorded only when it is a real account:
            // a password typed into the username box must not be kept.
            if let Some(u) = target {
                event = event
                    .target(format!("user:{}", u.id))
                    .detail("username", u.username.clone());
            }
            state.audit(&mut tx, event).await?;
            if reason != "account_disabled" {
                count_failure(state, &mut tx, ip).await?;
            }
            tx.commit().await?;
            return Err(if reason == "account_disabled" {
                ApiError::unauthorized(ErrorCode::AccountDisabled, "this account is disabled")
            } else {
                ApiError::unauthorized(
                    ErrorCode::InvalidCredentials,
                    "username or password is incorrect",
                )
            });
        }
    };

    // The password was checked before this transaction began: make sure
    // it was not changed, nor the account disabled, in between, so a login
    // racing a password change cannot outlive it.
    let current = store::users::by_id(&mut *tx, &user.tenant_id, &user.id).await?;
    if !current.is_some_and(|c| c.password_hash == user.password_hash && c.disabled_at.is_none()) {
        tx.rollback().await?;
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidCredentials,
            "username or password is incorrect",
        ));
    }
    let token = Secret::generate(SecretKind::OperatorToken);
    let session_id = uuid::Uuid::now_v7().to_string();
    let expires_at = now.plus(state.config().session_ttl);
    let ip_text = ip.to_string();
    store::logins::insert(
        &mut tx,
        store::logins::NewSession {
            id: &session_id,
            tenant_id: &user.tenant_id,
            user_id: &user.id,
            token_hash: &token.hash(),
            token_prefix: &token.prefix(),
            source_ip: Some(&ip_text),
            now,
            expires_at,
        },
    )
    .await?;
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &user.tenant_id,
                Actor::User(user.id.clone()),
                Action::LoginSucceeded,
            )
            .ip(Some(ip))
            .target(format!("session:{session_id}"))
            .detail("username", user.username.clone()),
        )
        .await?;
    tx.commit().await?;
    Ok(LoggedIn {
        token,
        session_id,
        expires_at,
        user,
    })
}

/// Ends a login session (idempotent); audits the logout if it was live.
pub async fn logout(
    state: &AppState,
    ip: IpAddr,
    tenant: &str,
    user_id: &str,
    session_id: &str,
) -> Result<(), ApiError> {
    let mut tx = state.db().begin_write().await?;
    if store::logins::revoke(&mut tx, session_id, "logout", state.now()).await? {
        state
            .audit(
                &mut tx,
                AuditEvent::new(tenant, Actor::User(user_id.to_owned()), Action::Logout)
                    .ip(Some(ip))
                    .target(format!("session:{session_id}")),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
