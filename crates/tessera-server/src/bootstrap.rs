//! The first administrator.
//!
//! On a database that has never been bootstrapped, exactly one starting
//! process (even among several racing on one PostgreSQL) creates an `admin`
//! account with a random password and returns it, for the caller to print
//! once on the console. It is never logged and never stored in plaintext.

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
