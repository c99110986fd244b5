//! Automatic-join grants: a device's signed permission for another to join
//! it without a person at either end, and their revocation.

use std::net::IpAddr;

use tessera_core::trust::{AutoJoinGrant, Signed, Withdrawal};

use super::{check_grant_shape, grant_is_stale, issued_by_me, peer, subject, TrustError};
use crate::auth::device::DevicePrincipal;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::trust::GrantRow;
use crate::store::{self, Db, StoreError};

/// Stores `me`'s signed grant; a newer grant to the same device renews,
/// superseding the older. Returns the stored grant.
pub async fn create(
    db: &Db,
    me: &DevicePrincipal,
    ip: IpAddr,
    signed: &Signed<AutoJoinGrant>,
) -> Result<GrantRow, TrustError> {
    let g = &signed.statement;
    let now = db.now();
    let why = "a device grants only for itself";
    issued_by_me(signed, &g.granter, g.issued_at, me, why, now)?;
    check_grant_shape(g, now)?;
    let grantee = peer(db, me, &g.grantee).await?;
    let previous = store::trust::current_grant(db.pool(), &me.device_id, &grantee.id).await?;
    if grant_is_stale(g, previous.as_ref()) {
        return Err(TrustError::Superseded(
            "a newer grant to this device exists",
        ));
    }
    db.write(async |w| {
        store::trust::insert_grant(w, &me.tenant_id, g, &signed.signature, now)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => TrustError::Superseded("that grant was already submitted"),
                other => other.into(),
            })?;
        let replaced = store::trust::supersede(w, &me.device_id, &grantee.id, &g.id).await?;
        let action = if replaced.is_empty() {
            Action::GrantCreated
        } else {
            Action::GrantRenewed
        };
        let scopes: Vec<&str> = g.scopes.iter().map(|s| s.as_str()).collect();
        w.audit(
            AuditEvent::new(&me.tenant_id, Actor::Device(me.device_id.clone()), action)
                .ip(Some(ip))
                .target(format!("grant:{}", g.id))
                .detail("grantee", grantee.id.clone())
                .detail("scopes", scopes.join(","))
                .detail("expires_at", g.expires_at.to_rfc3339())
                .detail("replaces", replaced.join(",")),
        )
        .await?;
        Ok::<_, TrustError>(())
    })
    .await?;
    by_id(db, &g.id).await
}

/// A grant by id, revoked or not.
pub async fn by_id(db: &Db, id: &str) -> Result<GrantRow, TrustError> {
    store::trust::grant_by_id(db.pool(), id)
        .await?
        .ok_or(TrustError::NotFound("grant"))
}

/// Who revokes a grant, and why.
pub struct Revocation<'a> {
    pub tenant: &'a str,
    pub actor: Actor,
    /// `device:<id>` or `user:<id>`.
    pub by: &'a str,
    pub reason: &'a str,
    pub ip: IpAddr,
}

/// Revokes a live grant and audits it.
pub async fn revoke(db: &Db, id: &str, r: Revocation<'_>) -> Result<(), TrustError> {
    db.write(async |w| {
        let now = w.now();
        if !store::trust::revoke_grant(w, id, r.by, r.reason, now).await? {
            return Err(TrustError::NotFound("live grant"));
        }
        w.audit(
            AuditEvent::new(r.tenant, r.actor.clone(), Action::GrantRevoked)
                .ip(Some(r.ip))
                .target(format!("grant:{id}"))
                .detail("reason", r.reason),
        )
        .await?;
        Ok(())
    })
    .await
}

/// The granting device withdraws its grant (`subject` = `grant:<id>`).
pub async fn withdraw(
    db: &Db,
    me: &DevicePrincipal,
    ip: IpAddr,
    signed: &Signed<Withdrawal>,
) -> Result<(), TrustError> {
    let st = &signed.statement;
    let why = "a device withdraws only its own statements";
    issued_by_me(signed, &st.issuer, st.issued_at, me, why, db.now())?;
    let id = subject(&st.subject, "grant:", "subject must be grant:<id>")?;
    let g = by_id(db, id).await?;
    if g.grant.granter != me.device_id {
        return Err(TrustError::NotFound("grant"));
    }
    revoke(
        db,
        id,
        Revocation {
            tenant: &g.tenant_id,
            actor: Actor::Device(me.device_id.clone()),
            by: &format!("device:{}", me.device_id),
            reason: "withdrawn by the granting device",
            ip,
        },
    )
    .await
}
