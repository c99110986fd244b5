//! Sessions: their life from creation to end, across the database, the
//! relay hub and the device.
//!
//! ```text
//!   attended ─ bind code ─▶ pending ─ consent granted ─▶ active ─▶ ended
//!                              │  denied / timeout / device gone ─▶ ended
//!   managed ─ policy says consent ─▶ pending ─ …
//!           └ otherwise ────────────────────▶ active ─▶ ended
//! ```
//!
//! A pending session carries no traffic: the shell channel is opened on the
//! device only when the session becomes active, and viewer tokens are minted
//! only for active sessions. Every transition is a conditional UPDATE, so a
//! consent answer racing its timeout has exactly one outcome.

use std::time::Duration;
use tessera_core::ErrorCode;

use tessera_proto::v1::{ChannelKind, ChannelOpen, ConsentRequest, SessionEnded};
use tessera_proto::Body;

use crate::http::error::ApiError;
use crate::relay::{Access, SHELL_CHANNEL};
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::sessions::SessionRow;
use crate::store::{self, StoreError};
use crate::AppState;

/// The initial terminal size, until a viewer reports its own.
const INITIAL_COLS: u32 = 80;
const INITIAL_ROWS: u32 = 24;

pub fn max_access(row: &SessionRow) -> Access {
    if row.access == "control" {
        Access::Control
    } else {
        Access::ViewOnly
    }
}

fn notify_device(state: &AppState, device_id: &str, body: Body) {
    if let Some((_, notices)) = state.registry().notices(device_id) {
        // A full notice queue means the device is not reading at all; it
        // will be cut off by its heartbeat timeout.
        let _ = notices.try_send(crate::control::queued(body));
    }
}

/// Starts relaying an active session: opens it in the hub and asks the
/// device to start the shell. The device must be connected to this node.
pub async fn start_relay(state: &AppState, row: &SessionRow) -> Result<(), ApiError> {
    if row.state != "active" {
        return Err(ApiError::conflict(
            ErrorCode::SessionNotActive,
            "the session is not active",
        ));
    }
    let Some((conn_id, notices)) = state.registry().notices(&row.device_id) else {
        end(
            state,
            &row.id,
            "device_offline",
            "the device is not connected",
            Actor::System,
        )
        .await?;
        return Err(ApiError::conflict(
            ErrorCode::DeviceOffline,
            "the device is not connected to this server",
        ));
    };
    state.hub().open(
        &row.id,
        &row.tenant_id,
        &row.device_id,
        &row.device_name,
        conn_id,
        max_access(row),
    );
    // An end that landed between the caller's read and the open above found
    // nothing in the hub to tear down: look again now that it is there.
    let current = store::sessions::by_id_any_tenant(state.db().pool(), &row.id).await?;
    if current.is_none_or(|c| c.state != "active") {
        state.hub().end(&row.id, "ended", "the session ended");
        return Err(ApiError::conflict(
            ErrorCode::SessionNotActive,
            "the session ended",
        ));
    }
    let open = crate::control::queued(Body::ChannelOpen(ChannelOpen {
        session_id: row.id.clone(),
        channel_id: SHELL_CHANNEL,
        kind: ChannelKind::Shell.into(),
        cols: INITIAL_COLS,
        rows: INITIAL_ROWS,
    }));
    if notices.try_send(open).is_err() {
        end(
            state,
            &row.id,
            "device_unresponsive",
            "the device is not reading its connection",
            Actor::System,
        )
        .await?;
        return Err(ApiError::conflict(
            ErrorCode::DeviceOffline,
            "the device is not responding",
        ));
    }
    Ok(())
}

/// Ends a session everywhere: the row, the hub (viewers learn why), the
/// device (it closes the shell). A one-session device is revoked with it.
/// Returns false if the session had already ended.
pub async fn end(
    state: &AppState,
    id: &str,
    code: &str,
    reason: &str,
    actor: Actor,
) -> Result<bool, StoreError> {
    let ended = state
        .db()
        .write(async |w| {
            let Some(row) = store::sessions::by_id_any_tenant(w.conn(), id).await? else {
                return Ok::<_, StoreError>(None);
            };
            let now = w.now();
            if !store::sessions::end(w, id, code, reason, now).await? {
                return Ok(None);
            }
            w.audit(
                AuditEvent::new(&row.tenant_id, actor, Action::SessionEnded)
                    .target(format!("session:{id}"))
                    .detail("device_id", row.device_id.clone())
                    .detail("code", code)
                    .detail("reason", reason),
            )
            .await?;
            retire_ephemeral(w, &row, now).await?;
            Ok(Some(row))
        })
        .await?;
    let Some(row) = ended else {
        return Ok(false);
    };
    finish(state, &row.device_id, id, code, reason);
    Ok(true)
}

/// The relay side of an end: viewers and device are told.
fn finish(state: &AppState, device_id: &str, id: &str, code: &str, reason: &str) {
    state.hub().end(id, code, reason);
    notify_device(
        state,
        device_id,
        Body::SessionEnded(SessionEnded {
            session_id: id.to_owned(),
            code: code.to_owned(),
            reason: reason.to_owned(),
        }),
    );
}

/// A support-code device lives for its one session: when the session ends,
/// its key stops working.
async fn retire_ephemeral(
    tx: &mut store::Tx,
    row: &SessionRow,
    now: tessera_core::Timestamp,
) -> Result<(), StoreError> {
    if row.origin == "attended" {
        store::devices::revoke(
            tx,
            &row.tenant_id,
            &row.device_id,
            "attended session ended",
            "system",
            now,
        )
        .await?;
    }
    Ok(())
}

/// Asks the device (connected here) for consent, and arms the timeout.
pub fn request_consent(state: &AppState, row: &SessionRow) {
    let remaining = row
        .consent_deadline
        .map(|d| d.since(state.now()))
        .unwrap_or(state.config().consent_timeout);
    notify_device(
        state,
        &row.device_id,
        Body::ConsentRequest(ConsentRequest {
            session_id: row.id.clone(),
            technician: row
                .created_by_name
                .clone()
                .unwrap_or_else(|| "an operator".to_owned()),
            access: row.access.clone(),
            timeout_ms: u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX),
        }),
    );
    let state = state.clone();
    let id = row.id.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(remaining) => {}
            () = state.shutdown_token().cancelled() => return,
        }
        if let Err(e) = refuse_consent(
            &state,
            &id,
            "consent_timeout",
            "nobody answered the consent prompt in time",
            Action::ConsentTimedOut,
        )
        .await
        {
            tracing::warn!(error = %e, "cannot time out a consent request");
        }
    });
}

/// pending → denied (or timed out): the session ends before it began.
async fn refuse_consent(
    state: &AppState,
    id: &str,
    code: &str,
    reason: &str,
    action: Action,
) -> Result<bool, StoreError> {
    let now = state.now();
    let mut tx = state.db().begin_write().await?;
    let Some(row) = store::sessions::by_id_any_tenant(&mut *tx, id).await? else {
        return Ok(false);
    };
    if !store::sessions::decide_consent(&mut tx, id, false, code, reason, now).await? {
        return Ok(false);
    }
    state
        .audit(
            &mut tx,
            AuditEvent::new(&row.tenant_id, Actor::Device(row.device_id.clone()), action)
                .target(format!("session:{id}"))
                .detail("code", code),
        )
        .await?;
    state
        .audit(
            &mut tx,
            AuditEvent::new(&row.tenant_id, Actor::System, Action::SessionEnded)
                .target(format!("session:{id}"))
                .detail("device_id", row.device_id.clone())
                .detail("code", code)
                .detail("reason", reason),
        )
        .await?;
    retire_ephemeral(&mut tx, &row, now).await?;
    tx.commit().await?;
    finish(state, &row.device_id, id, code, reason);
    Ok(true)
}

/// The device's answer to a consent request.
pub async fn consent_answer(
    state: &AppState,
    device_id: &str,
    session_id: &str,
    granted: bool,
) -> Result<(), StoreError> {
    let Some(row) = store::sessions::by_id_any_tenant(state.db().pool(), session_id).await? else {
        return Ok(());
    };
    // A device answers only for its own sessions.
    if row.device_id != device_id {
        tracing::warn!(session = %session_id, "consent answer from another device ignored");
        return Ok(());
    }
    if !granted {
        refuse_consent(
            state,
            session_id,
            "consent_denied",
            "the person at the device declined",
            Action::ConsentDenied,
        )
        .await?;
        return Ok(());
    }
    let now = state.now();
    let mut tx = state.db().begin_write().await?;
    if !store::sessions::decide_consent(&mut tx, session_id, true, "", "", now).await? {
        return Ok(());
    }
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &row.tenant_id,
                Actor::Device(device_id.to_owned()),
                Action::ConsentGranted,
            )
            .target(format!("session:{session_id}"))
            .detail("access", row.access.clone()),
        )
        .await?;
    tx.commit().await?;
    if let Some(active) = store::sessions::by_id_any_tenant(state.db().pool(), session_id).await? {
        if let Err(e) = start_relay(state, &active).await {
            tracing::warn!(code = %e.code, "could not start a consented session");
        }
    }
    Ok(())
}

/// A device connection ended: the sessions whose shells lived on it end
/// (`device_disconnected`); sessions still waiting for consent end too
/// (`consent_abandoned`) unless the device already reconnected, whose new
/// connection asks again.
pub async fn connection_closed(state: &AppState, device_id: &str, conn_id: u64, reconnected: bool) {
    let reason = "the device disconnected";
    for id in state.hub().sessions_of_conn(device_id, conn_id) {
        if let Err(e) = end(state, &id, "device_disconnected", reason, Actor::System).await {
            tracing::warn!(error = %e, "cannot end a departed device's session");
        }
    }
    if reconnected {
        return;
    }
    match store::sessions::pending_for_device(state.db(), device_id).await {
        Ok(rows) => {
            for row in rows {
                let abandoned = refuse_consent(
                    state,
                    &row.id,
                    "consent_abandoned",
                    reason,
                    Action::ConsentAbandoned,
                )
                .await;
                if let Err(e) = abandoned {
                    tracing::warn!(error = %e, "cannot end a departed device's pending session");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list a departed device's sessions"),
    }
}

/// For the session sweep: pending sessions past their consent deadline
/// (their device may never have connected to be asked), and active
/// sessions whose device is gone from every node.
pub async fn sweep(state: &AppState) -> Result<(), StoreError> {
    let now = state.now();
    for id in store::sessions::pending_past_deadline(state.db(), now).await? {
        let reason = "nobody answered the consent prompt in time";
        refuse_consent(
            state,
            &id,
            "consent_timeout",
            reason,
            Action::ConsentTimedOut,
        )
        .await?;
    }
    let cutoff = now.minus(state.config().heartbeat_interval * 3);
    for id in store::sessions::active_with_device_gone(state.db(), cutoff).await? {
        if state.hub().get(&id).is_none() {
            end(
                state,
                &id,
                "device_disconnected",
                "the device is no longer connected",
                Actor::System,
            )
            .await?;
        }
    }
    Ok(())
}

/// A connecting device is asked about every session waiting on it.
pub async fn device_arrived(state: &AppState, device_id: &str) {
    match store::sessions::pending_for_device(state.db(), device_id).await {
        Ok(rows) => {
            for row in rows {
                request_consent(state, &row);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list sessions awaiting consent"),
    }
}

/// The device reported that a channel (the shell) ended.
pub async fn channel_closed(
    state: &AppState,
    device_id: &str,
    session_id: &str,
    exit_status: Option<i32>,
    why: &str,
) {
    let Some(live) = state.hub().get(session_id) else {
        return;
    };
    if live.device_id != device_id {
        return;
    }
    live.channel_closed(exit_status, why);
    let reason = match exit_status {
        Some(code) => format!("the shell exited with status {code}"),
        None if why.is_empty() => "the shell ended".to_owned(),
        None => format!("the shell ended: {why}"),
    };
    if let Err(e) = end(
        state,
        session_id,
        "shell_exited",
        &reason,
        Actor::Device(device_id.to_owned()),
    )
    .await
    {
        tracing::warn!(error = %e, "cannot end a session whose shell exited");
    }
}

/// Default time a person has to answer a consent prompt.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(60);
