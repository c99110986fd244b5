//! Telling the device who is in its session: the person at an attended
//! machine sees "alice is connected (controlling)" and "alice left".
//!
//! Only a name and an access mode go to the device, never a token or an
//! id. Agents older than [`PRESENCE_VERSION`] are not told (they would
//! read an unknown message as the end of their connection).

use tessera_proto::v1::{ViewerJoined, ViewerLeft};
use tessera_proto::{Body, PRESENCE_VERSION};

use super::{Access, LiveSession};
use crate::AppState;

/// The name the device is shown for an operator: their username, or
/// "an operator" if it cannot be read.
pub(super) async fn name_of(state: &AppState, tenant: &str, user_id: &str) -> String {
    match crate::store::users::by_id(state.db().pool(), tenant, user_id).await {
        Ok(Some(u)) => u.username,
        _ => "an operator".to_owned(),
    }
}

/// Queues `body` on the connection the session's shell lives on, if the
/// device is still there on that connection and speaks presence.
fn tell(state: &AppState, live: &LiveSession, body: Body) {
    if state
        .registry()
        .protocol_of(&live.device_id)
        .is_none_or(|v| v < PRESENCE_VERSION)
    {
        return;
    }
    if let Some((conn_id, notices)) = state.registry().notices(&live.device_id) {
        if conn_id == live.conn_id {
            // A full notice queue means the device is not reading at all;
            // it will be cut off by its heartbeat timeout.
            let _ = notices.try_send(crate::control::queued(body));
        }
    }
}

pub(super) fn joined(state: &AppState, live: &LiveSession, name: &str, access: Access) {
    tell(
        state,
        live,
        Body::ViewerJoined(ViewerJoined {
            session_id: live.id.clone(),
            name: name.to_owned(),
            access: access.as_str().to_owned(),
            viewers: u32::try_from(live.viewer_count()).unwrap_or(u32::MAX),
        }),
    );
}

/// A viewer left (`reason` is `left` or the word of a kick); nothing is
/// said once the session itself is over: the device is told that instead.
pub(super) fn left(state: &AppState, live: &LiveSession, name: &str, access: Access, reason: &str) {
    if state.hub().get(&live.id).is_none() {
        return;
    }
    tell(
        state,
        live,
        Body::ViewerLeft(ViewerLeft {
            session_id: live.id.clone(),
            name: name.to_owned(),
            access: access.as_str().to_owned(),
            reason: reason.to_owned(),
            viewers: u32::try_from(live.viewer_count()).unwrap_or(u32::MAX),
        }),
    );
}
