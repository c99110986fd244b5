//! The periodic background work, in one place: each tick calls the
//! domains' own sweeps, so what runs when (and at what interval) reads
//! here, and what each sweep does reads in its domain.

use tessera_core::Timestamp;

use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, Db, StoreResult};
use crate::AppState;

/// Runs `tick` once per heartbeat interval until shutdown.
async fn every_heartbeat<F: AsyncFnMut(&AppState)>(state: AppState, mut tick: F) {
    let mut interval = tokio::time::interval(state.config().heartbeat_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown_token().cancelled() => return,
            _ = interval.tick() => {}
        }
        tick(&state).await;
    }
}

/// Once per heartbeat interval: this node's lease is renewed, the devices
/// connected here were seen, and those revoked on another node are cut off
/// ([`crate::control::sweep`]).
pub async fn presence(state: AppState) {
    every_heartbeat(state, async |state: &AppState| {
        let until = crate::cluster::lease_until(state.now(), state.config().heartbeat_interval);
        if let Err(e) = store::nodes::renew(state.db(), state.cluster().node_id(), until).await {
            tracing::warn!(error = %e, "presence sweep: cannot renew this node's lease");
        }
        crate::control::sweep(state.registry(), state.db()).await;
        // A node gone without a word (killed) leaves its share of the rate
        // limits when its lease lapses; the count is also the metric's.
        crate::cluster::orders::count_nodes(state).await;
    })
    .await
}

/// Once per heartbeat interval: viewers whose login ended are cut off,
/// support codes that lapsed unused are expired, sessions that lapsed end,
/// grants that lapsed are recorded, automatic sessions lose members whose
/// standing changed (and stop if ended elsewhere), and expired viewer
/// tokens are forgotten.
pub async fn sessions(state: AppState) {
    every_heartbeat(state, async |state: &AppState| {
        crate::relay::sweep(state.hub(), state.db()).await;
        if let Err(e) = expire_support_codes(state.db()).await {
            tracing::warn!(error = %e, "session sweep: cannot expire support codes");
        }
        if let Err(e) = crate::session::sweep(state).await {
            tracing::warn!(error = %e, "session sweep: cannot end lapsed sessions");
        }
        if let Err(e) = record_expired_grants(state.db(), state.now()).await {
            tracing::warn!(error = %e, "session sweep: cannot record expired grants");
        }
        // Ended elsewhere, or a member's standing changed (on any node).
        if let Err(e) = crate::automatic::recheck(state).await {
            tracing::warn!(error = %e, "session sweep: cannot re-check automatic sessions");
        }
        // An hour past expiry, whatever the clocks of the nodes say.
        let stale = state.now().minus(std::time::Duration::from_secs(3600));
        if let Err(e) = store::node_keys::purge_expired(state.db(), stale).await {
            tracing::warn!(error = %e, "session sweep: cannot forget expired viewer tokens");
        }
        if let Err(e) = store::proofs::purge_expired(state.db(), stale).await {
            tracing::warn!(error = %e, "session sweep: cannot forget spent proofs");
        }
    })
    .await
}

/// At start-up, then once per heartbeat interval: the audit chain's head
/// is signed when enough rows or time have passed since the last
/// checkpoint (see [`crate::checkpoint`]). The shutdown path writes the last.
pub async fn audit_checkpoints(state: AppState) {
    if let Err(e) = crate::checkpoint::write(&state, crate::checkpoint::When::Uncovered).await {
        tracing::warn!(error = %e, "cannot write the start-up audit checkpoint");
    }
    every_heartbeat(state, async |state: &AppState| {
        match crate::checkpoint::write(state, crate::checkpoint::When::Due).await {
            // Raised as an alarm (logged once, counted, audited) already.
            Ok(_) | Err(crate::checkpoint::WriteError::Refused(_)) => {}
            Err(e) => tracing::warn!(error = %e, "audit sweep: cannot write a checkpoint"),
        }
    })
    .await
}

/// Grants that lapsed get one `grant_expired` row each.
async fn record_expired_grants(db: &Db, now: Timestamp) -> StoreResult<()> {
    db.write(async |w| {
        for (id, tenant, granter, grantee) in store::trust::take_newly_expired(w, now).await? {
            w.audit(
                AuditEvent::new(&tenant, Actor::System, Action::GrantExpired)
                    .target(format!("grant:{id}"))
                    .detail("granter", granter)
                    .detail("grantee", grantee),
            )
            .await?;
        }
        Ok(())
    })
    .await
}

/// Support codes that lapsed unused are marked expired and audited.
async fn expire_support_codes(db: &Db) -> StoreResult<()> {
    db.write(async |w| {
        let now = w.now();
        for (id, tenant) in store::support_codes::expire_lapsed(w, now).await? {
            w.audit(
                AuditEvent::new(&tenant, Actor::System, Action::SupportCodeExpired)
                    .target(format!("support_code:{id}")),
            )
            .await?;
        }
        Ok(())
    })
    .await
}
