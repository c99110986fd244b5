//! Pairing approvals for operators (the CLI's view of `/device`).

use axum::extract::{Path, State};
use axum::Json;
use tessera_core::api::PairingView;
use tessera_core::identity::DeviceId;
use tessera_core::roles::Permission;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiResult, ErrorBody};
use super::extract::ClientIp;
use super::ratelimit;
use crate::auth::Operator;
use crate::store::pairings::PairingRow;
use crate::{pairing, store, tenancy, AppState};

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let decide = OpenApiRouter::new()
        .routes(routes!(approve))
        .routes(routes!(deny))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), state.limiters().pairing_lookup.clone()),
            ratelimit::enforce,
        ));
    OpenApiRouter::new()
        .merge(decide)
        .routes(routes!(list_pairings))
}

impl From<&PairingRow> for PairingView {
    fn from(p: &PairingRow) -> Self {
        PairingView {
            id: p.id.to_string(),
            device_id: p.device_id.clone(),
            fingerprint: DeviceId::parse(&p.device_id)
                .map(|d| d.grouped())
                .unwrap_or_else(|_| p.device_id.clone()),
            name: p.name.clone(),
            hostname: p.hostname.clone(),
            os: p.os.clone(),
            source_ip: p.source_ip.clone(),
            requested_at: p.created_at.to_rfc3339(),
            expires_at: p.expires_at.to_rfc3339(),
        }
    }
}

/// Pending pairing requests.
#[utoipa::path(get, path = "/api/v1/pairings", tag = "pairing",
    security(("operator_token" = [])),
    responses((status = 200, body = Vec<PairingView>), (status = 403, body = ErrorBody)))]
async fn list_pairings(
    State(state): State<AppState>,
    op: Operator,
) -> ApiResult<Json<Vec<PairingView>>> {
    op.require(Permission::ManageDevices)?;
    let rows = store::pairings::list_pending(state.db(), tenancy::of(&op), state.now()).await?;
    Ok(Json(rows.iter().map(PairingView::from).collect()))
}

/// Approve the pairing shown as `user_code` on the device.
#[utoipa::path(post, path = "/api/v1/pairings/{user_code}/approve", tag = "pairing",
    security(("operator_token" = [])),
    params(("user_code" = String, Path, description = "XXXX-XXXX, any case, dash optional")),
    responses((status = 200, body = PairingView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn approve(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path(code): Path<String>,
) -> ApiResult<Json<PairingView>> {
    let p = pairing::decide(state.db(), &op, ip.0, &code, true).await?;
    Ok(Json(PairingView::from(&p)))
}

/// Deny the pairing shown as `user_code` on the device.
#[utoipa::path(post, path = "/api/v1/pairings/{user_code}/deny", tag = "pairing",
    security(("operator_token" = [])),
    params(("user_code" = String, Path, description = "XXXX-XXXX")),
    responses((status = 200, body = PairingView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn deny(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path(code): Path<String>,
) -> ApiResult<Json<PairingView>> {
    let p = pairing::decide(state.db(), &op, ip.0, &code, false).await?;
    Ok(Json(PairingView::from(&p)))
}
