//! Live automatic sessions checked again: a member whose standing changed
//! (its grant revoked or lapsed, trust withdrawn on either side, a key
//! changed, its device revoked) is removed, and a session whose row ended
//! elsewhere stops routing. Called at once after each such change on this
//! node, and by the session sweep once per heartbeat for changes made on
//! another node.

use tessera_core::kinds::{EndCode, RejectionReason};
use tessera_core::trust::Scope;
use tessera_proto::AUTO_SESSION_VERSION;

use super::{decide, drop_member, end, stop, Facts, Routing};
use crate::store::{self, StoreError};
use crate::AppState;

/// After a change to grants, trust, keys or devices on this node: the
/// members it affects leave their automatic sessions now, not a heartbeat
/// later, here and on the nodes routing sessions that members connected
/// here belong to (asked, and answered once they checked). A failure is
/// logged; the sweep tries again.
pub async fn standing_changed(state: &AppState) {
    if let Err(e) = recheck(state).await {
        tracing::warn!(error = %e, "cannot re-check automatic sessions");
    }
    super::remote::recheck_hubs(&Routing::of(state)).await;
}

/// Checks every automatic session this node routes (see the module), and
/// forgets those routed by a node that is gone (their members here are
/// told).
pub async fn recheck(state: &AppState) -> Result<(), StoreError> {
    let r = Routing::of(state);
    super::remote::forget_lost_hubs(&r, state.now()).await?;
    if r.cluster.nats().is_some() && !r.cluster.nats_connected() {
        super::remote::cut_off(&r).await;
    }
    let live: Vec<(String, String, Scope, Vec<String>)> = r
        .auto
        .lock()
        .iter()
        .map(|(id, s)| {
            let members = s.members.keys().cloned().collect();
            (id.clone(), s.creator.clone(), s.scope, members)
        })
        .collect();
    let db = state.db();
    for (id, creator, scope, members) in live {
        let row = store::sessions::by_id_any_tenant(db.pool(), &id).await?;
        if let Some(ended) = row.as_ref().filter(|r| r.ended_at.is_some()) {
            let code = ended.end_code.as_deref().unwrap_or(EndCode::Ended.as_str());
            stop(&r, &id, code, ended.end_reason.as_deref().unwrap_or("")).await;
            continue;
        }
        let Some(creator_row) = store::devices::by_id_any_tenant(db.pool(), &creator).await? else {
            continue;
        };
        if creator_row.revoked_at.is_some() {
            let why = "the device that created the session was revoked";
            end(&r, &id, EndCode::DeviceRevoked, why).await;
            continue;
        }
        let rows = store::members::for_members(db, &creator, &members).await?;
        let now = state.now();
        for m in &members {
            let device = rows.devices.get(m);
            // What the member's connection already showed (online, its
            // protocol, its place) stands; its standing is checked again.
            let facts = Facts {
                device,
                same_tenant: device.is_some_and(|d| d.tenant_id == creator_row.tenant_id),
                position: 2,
                online: true,
                protocol: Some(AUTO_SESSION_VERSION),
                creator_trusts_member: rows.creator_trusts.get(m),
                member_trusts_creator: rows.trusts_creator.get(m),
                grant: rows.grants.get(m),
            };
            let reason = if device.is_some_and(|d| d.revoked_at.is_some()) {
                Some("device_revoked")
            } else {
                decide(&creator_row, &facts, scope, usize::MAX, now)
                    .err()
                    .map(RejectionReason::as_str)
            };
            if let Some(reason) = reason {
                drop_member(&r, &id, m, reason).await?;
            }
        }
    }
    Ok(())
}
