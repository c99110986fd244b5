//! The I/O of a screen session's decisions: screen messages from the
//! device into the session, and what the relay owes the device (its
//! configuration, credits, keyframe requests, viewer input and releases).

use tessera_proto::v1::Screen;
use tessera_proto::Body;

use super::screen::Refusal;
use super::{LiveSession, ScreenOutcome};
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::AppState;

/// How long viewer input waits for room in the device's input queue
/// before it is dropped (counted as `device_busy`).
const INPUT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A screen message from `device_id`: into its session, if the session is
/// its own screen session on this connection. A refusal ends the
/// device's connection with its close code.
pub async fn from_device(
    state: &AppState,
    device_id: &str,
    conn_id: u64,
    screen: Screen,
) -> Result<(), Refusal> {
    let Some(live) = state.hub().get(&screen.session_id) else {
        // Ended meanwhile: what was in flight is dropped.
        return Ok(());
    };
    if live.device_id != device_id || live.conn_id != conn_id {
        return Ok(());
    }
    if live.channel != tessera_core::kinds::SessionChannel::Screen {
        return Err(Refusal {
            code: 1008,
            reason: "not_a_screen_session",
        });
    }
    let out = live.screen_from_device(screen.body)?;
    deliver(state, &live, out).await;
    Ok(())
}

/// Carries out what a screen decision owes the device, the metrics and
/// the audit log. Returns false if the device's connection is gone.
pub async fn deliver(state: &AppState, live: &LiveSession, out: ScreenOutcome) -> bool {
    state.metrics().screen(&out);
    let registry = state.registry();
    let mut alive = true;
    if !out.notices.is_empty() {
        if let Some((conn, notices)) = registry.notices(&live.device_id) {
            if conn == live.conn_id {
                for n in out.notices {
                    // A full notice queue means the device is not reading
                    // at all: its write timeout will end it.
                    let _ = notices.try_send(crate::control::queued(n));
                }
            }
        }
    }
    if let Some(input) = out.input {
        alive = send_input(state, live, input).await;
    }
    if let Some(c) = out.configured {
        let action = if c.first {
            Action::ScreenOpened
        } else {
            Action::ScreenReconfigured
        };
        let event = AuditEvent::new(
            &live.tenant_id,
            Actor::Device(live.device_id.clone()),
            action,
        )
        .target(format!("session:{}", live.id))
        .detail("codec", c.codec)
        .detail("monitor", c.monitor)
        .detail("viewers", live.viewer_count());
        if let Err(e) = state.db().audit(event).await {
            tracing::warn!(error = %e, "cannot audit a screen channel's configuration");
        }
    }
    alive
}

/// Queues viewer input (or a release) behind that viewer's earlier input
/// on the device's input queue; false if the connection is gone.
pub async fn send_input(state: &AppState, live: &LiveSession, input: Body) -> bool {
    let Some(queue) = state.registry().input(&live.device_id) else {
        return false;
    };
    if state.registry().conn_of(&live.device_id) != Some(live.conn_id) {
        return false;
    }
    match queue
        .send_timeout(crate::control::queued(input), INPUT_WAIT)
        .await
    {
        Ok(()) => true,
        Err(crate::control::QueueError::Full) => {
            state.metrics().input_dropped("device_busy");
            true
        }
        Err(crate::control::QueueError::Closed) => false,
    }
}
