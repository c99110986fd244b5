//! The first administrator, and getting back in when an administrator's
//! password is lost.
//!
//! On a database that has never been bootstrapped, exactly one starting
//! process (even among several racing on one PostgreSQL) creates an `admin`
//! account with a random password and returns it, for the caller to print
//! once on the console. It is never logged and never stored in plaintext.
//!
//! `tessera server reset-admin` gives an administrator a new random
//! password the same way. It needs the database itself (the data directory
//! or the database URL), not the API: whoever can write the database can
//! already do anything, so it grants nothing new, and it is audited.

use tessera_core::password;
use tessera_core::roles::Role;
use zeroize::Zeroizing;

use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, Db, StoreResult};
use crate::tenancy::BOOTSTRAP_TENANT;

pub const BOOTSTRAP_USERNAME: &str = "admin";

/// The one-time credential of the bootstrap admin.
pub struct BootstrapAdmin {
    pub username: String,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapAdmin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

pub async fn ensure_admin(db: &Db) -> StoreResult<Option<BootstrapAdmin>> {
    db.write(async |w| {
        let now = w.now();
        if !store::tenants::claim_bootstrap(w, BOOTSTRAP_TENANT, now).await? {
            return Ok(None);
        }
        let secret = Zeroizing::new(password::generate());
        let hash = crate::auth::hash_password(secret.clone()).await;
        let id = uuid::Uuid::now_v7().to_string();
        store::users::insert(
            w,
            store::users::NewUser {
                id: &id,
                tenant_id: BOOTSTRAP_TENANT,
                username: BOOTSTRAP_USERNAME,
                password_hash: &hash,
                role: Role::Admin,
                now,
            },
        )
        .await?;
        w.audit(
            AuditEvent::new(
                BOOTSTRAP_TENANT,
                Actor::System,
                Action::BootstrapAdminCreated,
            )
            .target(format!("user:{id}"))
            .detail("username", BOOTSTRAP_USERNAME),
        )
        .await?;
        Ok(Some(BootstrapAdmin {
            username: BOOTSTRAP_USERNAME.to_owned(),
            password: secret,
        }))
    })
    .await
}

/// Why an administrator's password cannot be reset.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("there is no user named `{0}`")]
    NoSuchUser(String),
    #[error("`{username}` is a {role}, not an admin: only an admin's password is reset this way (an admin resets the others' from the console or `tessera ctl users`)")]
    NotAnAdmin {
        username: String,
        role: &'static str,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// What a reset did, with the new password to print once.
pub struct AdminReset {
    pub admin: BootstrapAdmin,
    /// The account was disabled and is enabled again.
    pub reenabled: bool,
    /// Signed-in sessions of the account that were ended.
    pub revoked_sessions: u64,
}

/// Gives the admin `username` (of the first tenant) a new random password:
/// its signed-in sessions end, its wrong-password locks are forgotten, a
/// disabled account is enabled again, and the reset is audited (actor
/// `system`, `via` `reset-admin`) — in one transaction.
pub async fn reset_admin(db: &Db, username: &str) -> Result<AdminReset, ResetError> {
    let secret = Zeroizing::new(password::generate());
    let hash = crate::auth::hash_password(secret.clone()).await;
    db.write(async |w| {
        let now = w.now();
        let user = store::users::by_username(w.conn(), BOOTSTRAP_TENANT, username)
            .await?
            .ok_or_else(|| ResetError::NoSuchUser(username.to_owned()))?;
        if user.role != Role::Admin {
            return Err(ResetError::NotAnAdmin {
                username: user.username,
                role: user.role.as_str(),
            });
        }
        let id = user.id.to_string();
        store::users::set_password(w, BOOTSTRAP_TENANT, &id, &hash, now).await?;
        let reenabled = store::users::enable(w, BOOTSTRAP_TENANT, &id, now).await?;
        let revoked_sessions =
            store::logins::revoke_all_of_user(w, &id, None, "password_reset", now).await?;
        let forgotten_locks = store::lockouts::forget_account(w, &id).await?;
        w.audit(
            AuditEvent::new(BOOTSTRAP_TENANT, Actor::System, Action::AdminPasswordReset)
                .target(format!("user:{id}"))
                .detail("username", user.username.clone())
                .detail("via", "reset-admin")
                .detail("reenabled", reenabled)
                .detail("revoked_sessions", revoked_sessions)
                .detail("forgotten_locks", forgotten_locks),
        )
        .await?;
        Ok(AdminReset {
            admin: BootstrapAdmin {
                username: user.username,
                password: secret,
            },
            reenabled,
            revoked_sessions,
        })
    })
    .await
}
