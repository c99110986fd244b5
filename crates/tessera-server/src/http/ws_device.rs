//! `GET /ws/device`: a device's control connection. The `cak_` key is
//! checked before the upgrade, and one of the device's connection slots
//! taken (`409 too_many_connections` when it holds them all, so two
//! devices cannot pin the server's memory with connections); the
//! connection itself (identity proof, heartbeats, relay traffic) is
//! `control::connection`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tessera_core::ErrorCode;
use tessera_proto::MAX_DEVICE_FRAME;

use super::error::ApiError;
use super::extract::{ClientIp, ControlPrincipal};
use super::ws_upgrade::{NotWebSocket, Upgrade};
use crate::control::connection;
use crate::control::Registry;
use crate::AppState;

/// `GET /ws/device`: authenticate the key, then upgrade.
pub async fn upgrade(
    State(state): State<AppState>,
    ip: ClientIp,
    ControlPrincipal(device): ControlPrincipal,
    ws: Result<Upgrade, NotWebSocket>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(not) => return not.into_response(),
    };
    let cap = state.config().max_connections_per_device;
    let Some(slot) = Registry::reserve(&state, &device.device_id, cap) else {
        return ApiError::conflict(
            ErrorCode::TooManyConnections,
            format!("this device already has {cap} connections to this server; close one first"),
        )
        .into_response();
    };
    ws.on_upgrade(&[], MAX_DEVICE_FRAME, move |socket| {
        connection::serve(socket, state, device, ip.0, slot)
    })
}
