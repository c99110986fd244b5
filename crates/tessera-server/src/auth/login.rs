//! Password login, shared by the JSON API and the `/device` page.

use std::net::IpAddr;
use std::time::Duration;

use tessera_core::password;
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::Timestamp;
use zeroize::Zeroizing;

use super::lockout::{self, Account, LockKey, Locked};
use super::verify_password;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::users::UserRow;
use crate::store::{self, Db, StoreError};
use crate::{tenancy, AppState};

pub const MAX_USERNAME_LEN: usize = 64;

/// Why a login (or a password check) is refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    LockedOut(Locked),
    #[error("username or password too long")]
    TooLong,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("username or password is incorrect")]
    InvalidCredentials,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a password login failed, as the audit row records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    UnknownUser,
    AccountDisabled,
    WrongPassword,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnknownUser => "unknown_user",
            FailureReason::AccountDisabled => "account_disabled",
            FailureReason::WrongPassword => "wrong_password",
        }
    }

    /// A disabled account's right password is no guess: it does not count
    /// toward the address's lockout.
    pub fn counts_toward_lockout(self) -> bool {
        self != FailureReason::AccountDisabled
    }

    pub fn into_error(self) -> LoginError {
        match self {
            FailureReason::AccountDisabled => LoginError::AccountDisabled,
            _ => LoginError::InvalidCredentials,
        }
    }
}

/// A fresh login session.
pub struct LoggedIn {
    pub token: Secret,
    pub session_id: String,
    pub expires_at: Timestamp,
    pub user: UserRow,
}

/// The two counts a wrong password adds to: the account's at this address,
/// and the address's over every account.
pub fn lock_keys(account: Account<'_>, ip: IpAddr) -> [LockKey; 2] {
    [
        LockKey::login_account(account, ip),
        LockKey::login_address(ip),
    ]
}

/// Admits one password check against both counts of [`lock_keys`] (it is
/// counted before it runs), or refuses while either is locked. The caller
/// ends it with `lockout::confirm_guess` or `lockout::refund`.
pub async fn admit_password_check(db: &Db, ip: IpAddr, keys: &[LockKey]) -> Result<(), LoginError> {
    lockout::admit_attempt(db, ip, keys)
        .await?
        .map_err(LoginError::LockedOut)
}

/// What a password login needs of the server.
#[derive(Clone, Copy)]
pub struct Logins<'a> {
    pub db: &'a Db,
    /// How long a login session lasts.
    pub session_ttl: Duration,
}

impl<'a> Logins<'a> {
    pub fn of(state: &'a AppState) -> Self {
        Logins {
            db: state.db(),
            session_ttl: state.config().session_ttl,
        }
    }
}

/// Checks a username and password and opens a login session. Every outcome
/// is audited; failures count toward the account's lockout at this address
/// and, far more leniently, the address's over all accounts.
pub async fn login(
    logins: Logins<'_>,
    ip: IpAddr,
    username: &str,
    password: &str,
) -> Result<LoggedIn, LoginError> {
    let Logins {
        db,
        session_ttl: ttl,
    } = logins;
    let now = db.now();
    let tenant = tenancy::for_anonymous();
    if username.len() > MAX_USERNAME_LEN || password.len() > password::MAX_PASSWORD_LEN * 4 {
        return Err(LoginError::TooLong);
    }
    let user = store::users::by_username(db.pool(), tenant, username).await?;
    let keys = lock_keys(
        match &user {
            Some(u) => Account::User(u.id.as_str()),
            None => Account::Unknown(username),
        },
        ip,
    );
    admit_password_check(db, ip, &keys).await?;
    let ok = verify_password(
        user.as_ref().map(|u| u.password_hash.clone()),
        Zeroizing::new(password.to_owned()),
    )
    .await;

    let user = match user {
        Some(u) if ok && u.disabled_at.is_none() => u,
        found => {
            let (reason, target) = match &found {
                None => (FailureReason::UnknownUser, None),
                Some(u) if ok => (FailureReason::AccountDisabled, Some(u)),
                Some(u) => (FailureReason::WrongPassword, Some(u)),
            };
            let mut event = AuditEvent::new(tenant, Actor::Anonymous, Action::LoginFailed)
                .ip(Some(ip))
                .detail("reason", reason.as_str());
            // The attempted name is recorded only when it is a real account:
            // a password typed into the username box must not be kept.
            if let Some(u) = target {
                event = event
                    .target(format!("user:{}", u.id))
                    .detail("username", u.username.clone());
            }
            db.write(async |w| {
                // Lockout rows before the audit row, in every transaction
                // that takes both: the other order deadlocks on PostgreSQL
                // against a parallel admission that locks and audits.
                if reason.counts_toward_lockout() {
                    lockout::confirm_guess(w, ip, &keys).await?;
                } else {
                    lockout::refund_in(w, &keys).await?;
                }
                w.audit(event).await?;
                Ok::<_, StoreError>(())
            })
            .await?;
            return Err(reason.into_error());
        }
    };

    db.write(async |w| {
        // The password was checked before this transaction began: make
        // sure it was not changed, nor the account disabled, in between,
        // so a login racing a password change cannot outlive it.
        let current = store::users::by_id(w.conn(), &user.tenant_id, user.id.as_str()).await?;
        if !current
            .is_some_and(|c| c.password_hash == user.password_hash && c.disabled_at.is_none())
        {
            return Err(LoginError::InvalidCredentials);
        }
        // The right password was no guess: its count is given back.
        lockout::refund_in(w, &keys).await?;
        let token = Secret::generate(SecretKind::OperatorToken);
        let session_id = uuid::Uuid::now_v7().to_string();
        let expires_at = now.plus(ttl);
        let ip_text = ip.to_string();
        store::logins::insert(
            w,
            store::logins::NewSession {
                id: &session_id,
                tenant_id: &user.tenant_id,
                user_id: user.id.as_str(),
                token_hash: &token.hash(),
                token_prefix: &token.prefix(),
                source_ip: Some(&ip_text),
                now,
                expires_at,
            },
        )
        .await?;
        w.audit(
            AuditEvent::new(
                &user.tenant_id,
                Actor::User(user.id.to_string()),
                Action::LoginSucceeded,
            )
            .ip(Some(ip))
            .target(format!("session:{session_id}"))
            .detail("username", user.username.clone()),
        )
        .await?;
        Ok(LoggedIn {
            token,
            session_id,
            expires_at,
            user: user.clone(),
        })
    })
    .await
}

/// Ends a login session (idempotent); audits the logout if it was live.
pub async fn logout(
    db: &Db,
    ip: IpAddr,
    tenant: &str,
    user_id: &str,
    session_id: &str,
) -> Result<(), StoreError> {
    db.write(async |w| {
        let now = w.now();
        if store::logins::revoke(w, session_id, "logout", now).await? {
            w.audit(
                AuditEvent::new(tenant, Actor::User(user_id.to_owned()), Action::Logout)
                    .ip(Some(ip))
                    .target(format!("session:{session_id}")),
            )
            .await?;
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_account_is_named_and_not_counted_as_a_guess() {
        assert!(matches!(
            FailureReason::AccountDisabled.into_error(),
            LoginError::AccountDisabled
        ));
        assert!(!FailureReason::AccountDisabled.counts_toward_lockout());
        for r in [FailureReason::UnknownUser, FailureReason::WrongPassword] {
            assert!(matches!(r.into_error(), LoginError::InvalidCredentials));
            assert!(r.counts_toward_lockout());
        }
        assert_eq!(FailureReason::WrongPassword.as_str(), "wrong_password");
        assert_eq!(FailureReason::UnknownUser.as_str(), "unknown_user");
        assert_eq!(FailureReason::AccountDisabled.as_str(), "account_disabled");
    }
}
