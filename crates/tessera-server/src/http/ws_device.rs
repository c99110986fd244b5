//! `GET /ws/device`: a device's control connection. The `cak_` key is
//! checked before the upgrade, and one of the device's connection slots
//! taken (`409 too_many_connections` when it holds them all, so two
//! devices cannot pin the server's memory with connections); the
//! connection itself (identity proof, heartbeats, relay traffic) is
//! `control::connection`.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tessera_core::ErrorCode;
use tessera_proto::MAX_DEVICE_FRAME;

use super::error::ApiError;
use super::extract::{ClientIp, ControlPrincipal};
use crate::control::connection::{self, READ_BUFFER, WRITE_BUFFER};
use crate::control::Registry;
use crate::AppState;

/// `GET /ws/device`: authenticate the key, then upgrade.
pub async fn upgrade(
    State(state): State<AppState>,
    ip: ClientIp,
    ControlPrincipal(device): ControlPrincipal,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                ErrorCode::WebsocketRequired,
                "this endpoint speaks WebSocket",
            )
            .into_response()
        }
    };
    let cap = state.config().max_connections_per_device;
    let Some(slot) = Registry::reserve(&state, &device.device_id, cap) else {
        return ApiError::conflict(
            ErrorCode::TooManyConnections,
            format!("this device already has {cap} connections to this server; close one first"),
        )
        .into_response();
    };
    ws.max_message_size(MAX_DEVICE_FRAME)
        .max_frame_size(MAX_DEVICE_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| connection::serve(socket, state, device, ip.0, slot))
}
