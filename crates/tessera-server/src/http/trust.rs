//! Trust between devices, on the device plane (`/api/v1/device/…`, `cak_`
//! keys), and grants for operators (`/api/v1/grants`): requests in, views
//! out. The checks and changes are the [`crate::trust`] module's.
// utoipa's `#[utoipa::path(params(…))]` expands into code that names the
// params type by its full path, outside any item an allow could sit on.
#![allow(unused_qualifications)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use tessera_core::api::{
    AttestationView, CreateExchangeRequest, ExchangeStepRequest, ExchangeView, GrantView,
    PeerSummary, PeerView, RevokeRequest,
};
use tessera_core::identity::IdentityDocument;
use tessera_core::roles::Permission;
use tessera_core::trust::{
    fingerprint, grant_state, key_from_hex, AutoJoinGrant, KeyRotation, Signed, TrustAttestation,
    Withdrawal,
};
use tessera_core::{ErrorCode, Timestamp};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, ClientIp};
use crate::auth::device::DevicePrincipal;
use crate::auth::Operator;
use crate::store::audit::Actor;
use crate::store::trust::{ExchangeRow, GrantRow};
use crate::store::{self, Db, StoreError};
use crate::trust::{self, attestations, exchanges, grants, hex, rotation};
use crate::{tenancy, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(peer))
        .routes(routes!(create_exchange, list_exchanges))
        .routes(routes!(respond))
        .routes(routes!(reveal))
        .routes(routes!(withdraw_exchange))
        .routes(routes!(attest, list_trust))
        .routes(routes!(withdraw_trust))
        .routes(routes!(create_grant, device_grants))
        .routes(routes!(withdraw_grant))
        .routes(routes!(rotate_identity))
        .routes(routes!(rotations))
        .routes(routes!(peers))
        .routes(routes!(operator_grants))
        .routes(routes!(operator_revoke_grant))
}

/// The devices this one can name (its tenant's unrevoked devices), by id
/// and name: what device commands resolve a typed name or id prefix in.
#[utoipa::path(get, path = "/api/v1/device/peers", tag = "trust",
    security(("device_key" = [])),
    responses((status = 200, body = Vec<PeerSummary>), (status = 401, body = ErrorBody)))]
async fn peers(
    State(state): State<AppState>,
    me: DevicePrincipal,
) -> ApiResult<Json<Vec<PeerSummary>>> {
    Ok(Json(
        trust::peers(state.db(), &me)
            .await?
            .into_iter()
            .map(|d| PeerSummary {
                device_id: d.id,
                name: d.name,
            })
            .collect(),
    ))
}

/// The server's view of a peer device's current keys.
#[utoipa::path(get, path = "/api/v1/device/peers/{id}", tag = "trust",
    security(("device_key" = [])),
    params(("id" = String, Path, description = "DeviceId")),
    responses((status = 200, body = PeerView), (status = 404, body = ErrorBody)))]
async fn peer(
    State(state): State<AppState>,
    me: DevicePrincipal,
    Path(id): Path<String>,
) -> ApiResult<Json<PeerView>> {
    let d = trust::peer(state.db(), &me, &id).await?;
    let doc = IdentityDocument {
        ed25519: d.ed25519_public,
        x25519: d.x25519_public,
        signature: store::devices::identity_signature(state.db(), &d.id).await?,
    };
    Ok(Json(PeerView {
        identity: doc.encode(),
        ed25519: hex(&d.ed25519_public),
        x25519: hex(&d.x25519_public),
        fingerprint: fingerprint(&d.ed25519_public),
        key_epoch: store::devices::key_epoch(state.db(), &d.id).await?,
        online: state.registry().is_connected(&d.id),
        name: d.name,
        device_id: d.id,
    }))
}

impl From<ExchangeRow> for ExchangeView {
    fn from(e: ExchangeRow) -> Self {
        ExchangeView {
            id: e.id.into_string(),
            initiator: e.initiator,
            responder: e.responder,
            commitment: e.commitment,
            state: e.state.as_str().to_owned(),
            responder_identity: e.responder_identity,
            responder_nonce: e.responder_nonce,
            initiator_identity: e.initiator_identity,
            initiator_nonce: e.initiator_nonce,
            expires_at: e.expires_at.to_rfc3339(),
        }
    }
}

/// Start a SAS exchange with a peer: commit to this device's identity and
/// nonce before seeing the peer's.
#[utoipa::path(post, path = "/api/v1/device/trust/exchanges", tag = "trust",
    security(("device_key" = [])),
    request_body = CreateExchangeRequest,
    responses((status = 201, body = ExchangeView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_exchange(
    State(state): State<AppState>,
    me: DevicePrincipal,
    ApiJson(req): ApiJson<CreateExchangeRequest>,
) -> ApiResult<(StatusCode, Json<ExchangeView>)> {
    let e = exchanges::open(state.db(), &me, &req.peer, &req.commitment).await?;
    Ok((StatusCode::CREATED, Json(ExchangeView::from(e))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeerQuery {
    /// The other device.
    peer: String,
}

/// Open SAS exchanges between this device and a peer, either way round.
#[utoipa::path(get, path = "/api/v1/device/trust/exchanges", tag = "trust",
    security(("device_key" = [])),
    params(PeerQuery),
    responses((status = 200, body = Vec<ExchangeView>)))]
async fn list_exchanges(
    State(state): State<AppState>,
    me: DevicePrincipal,
    ApiQuery(q): ApiQuery<PeerQuery>,
) -> ApiResult<Json<Vec<ExchangeView>>> {
    let rows = exchanges::between(state.db(), &me, &q.peer)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(ErrorCode::InvalidQuery, "`peer` is not a device id")
        })?;
    Ok(Json(rows.into_iter().map(ExchangeView::from).collect()))
}

/// The responder reveals its identity and nonce.
#[utoipa::path(post, path = "/api/v1/device/trust/exchanges/{id}/respond", tag = "trust",
    security(("device_key" = [])),
    params(("id" = String, Path, description = "exchange id")),
    request_body = ExchangeStepRequest,
    responses((status = 200, body = ExchangeView), (status = 409, body = ErrorBody)))]
async fn respond(
    State(state): State<AppState>,
    me: DevicePrincipal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExchangeStepRequest>,
) -> ApiResult<Json<ExchangeView>> {
    let e = exchanges::respond(state.db(), &me, &id, &req.identity, &req.nonce).await?;
    Ok(Json(ExchangeView::from(e)))
}

/// The initiator reveals what it committed to.
#[utoipa::path(post, path = "/api/v1/device/trust/exchanges/{id}/reveal", tag = "trust",
    security(("device_key" = [])),
    params(("id" = String, Path, description = "exchange id")),
    request_body = ExchangeStepRequest,
    responses((status = 200, body = ExchangeView), (status = 409, body = ErrorBody)))]
async fn reveal(
    State(state): State<AppState>,
    me: DevicePrincipal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExchangeStepRequest>,
) -> ApiResult<Json<ExchangeView>> {
    let e = exchanges::reveal(state.db(), &me, &id, &req.identity, &req.nonce).await?;
    Ok(Json(ExchangeView::from(e)))
}

/// Either side ends an open exchange (an interrupted `tessera trust add`).
#[utoipa::path(post, path = "/api/v1/device/trust/exchanges/{id}/withdraw", tag = "trust",
    security(("device_key" = [])),
    params(("id" = String, Path, description = "exchange id")),
    responses((status = 204), (status = 404, description = "no open exchange of this device has that id", body = ErrorBody)))]
async fn withdraw_exchange(
    State(state): State<AppState>,
    me: DevicePrincipal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    exchanges::withdraw(state.db(), &me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Record this device's signed trust in a peer.
#[utoipa::path(post, path = "/api/v1/device/trust/attestations", tag = "trust",
    security(("device_key" = [])),
    request_body = Signed<TrustAttestation>,
    responses((status = 201, body = AttestationView), (status = 409, description = "withdrawn", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn attest(
    State(state): State<AppState>,
    ip: ClientIp,
    me: DevicePrincipal,
    ApiJson(signed): ApiJson<Signed<TrustAttestation>>,
) -> ApiResult<(StatusCode, Json<AttestationView>)> {
    let done = attestations::attest(state.db(), &me, ip.0, &signed).await?;
    let a = &signed.statement;
    Ok((
        StatusCode::CREATED,
        Json(AttestationView {
            truster: me.device_id.clone(),
            trusted: done.peer.id,
            trusted_fingerprint: fingerprint(&key_from_hex(&a.trusted_ed25519).unwrap_or_default()),
            issued_at: a.issued_at.to_rfc3339(),
            mutual: done.mutual,
        }),
    ))
}

/// This device's attestations and those about it.
#[utoipa::path(get, path = "/api/v1/device/trust/attestations", tag = "trust",
    security(("device_key" = [])),
    responses((status = 200, body = Vec<AttestationView>)))]
async fn list_trust(
    State(state): State<AppState>,
    me: DevicePrincipal,
) -> ApiResult<Json<Vec<AttestationView>>> {
    let rows = store::trust::attestations_of(state.db(), &me.device_id).await?;
    let mut out = Vec::new();
    for r in rows {
        let other = if r.truster == me.device_id {
            &r.trusted
        } else {
            &r.truster
        };
        let (a, b) = (
            store::devices::by_id_any_tenant(state.db().pool(), &me.device_id).await?,
            store::devices::by_id_any_tenant(state.db().pool(), other).await?,
        );
        let is_mutual = match (a, b) {
            (Some(a), Some(b)) => attestations::mutual(state.db(), &a, &b).await?,
            _ => false,
        };
        out.push(AttestationView {
            trusted_fingerprint: fingerprint(&key_from_hex(&r.trusted_ed25519).unwrap_or_default()),
            truster: r.truster,
            trusted: r.trusted,
            issued_at: r.issued_at.to_rfc3339(),
            mutual: is_mutual,
        });
    }
    Ok(Json(out))
}

/// Withdraw this device's trust in a peer (`subject` = `trust:<device id>`).
#[utoipa::path(post, path = "/api/v1/device/trust/withdraw", tag = "trust",
    security(("device_key" = [])),
    request_body = Signed<Withdrawal>,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn withdraw_trust(
    State(state): State<AppState>,
    ip: ClientIp,
    me: DevicePrincipal,
    ApiJson(signed): ApiJson<Signed<Withdrawal>>,
) -> ApiResult<StatusCode> {
    attestations::withdraw(state.db(), &me, ip.0, &signed).await?;
    crate::automatic::standing_changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A grant as operators and devices see it, with its state now.
pub async fn grant_view(db: &Db, g: &GrantRow) -> Result<GrantView, StoreError> {
    let granter = store::devices::by_id_any_tenant(db.pool(), &g.grant.granter).await?;
    let grantee = store::devices::by_id_any_tenant(db.pool(), &g.grant.grantee).await?;
    let current_fp = grantee
        .as_ref()
        .map(|d| fingerprint(&d.ed25519_public))
        .unwrap_or_default();
    let st = grant_state(&g.grant, g.revoked_at.is_some(), &current_fp, db.now());
    Ok(GrantView {
        id: g.grant.id.clone(),
        granter: g.grant.granter.clone(),
        granter_name: granter.map(|d| d.name),
        grantee: g.grant.grantee.clone(),
        grantee_name: grantee.map(|d| d.name),
        grantee_fingerprint: g.grant.grantee_fingerprint.clone(),
        scopes: g
            .grant
            .scopes
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        issued_at: g.grant.issued_at.to_rfc3339(),
        expires_at: g.grant.expires_at.to_rfc3339(),
        state: st.as_str().to_owned(),
        last_used_at: g.last_used_at.map(Timestamp::to_rfc3339),
        revoked_reason: g.revoked_reason.clone(),
    })
}

/// Store this device's signed automatic-join grant (a newer grant to the
/// same device renews, superseding the older).
#[utoipa::path(post, path = "/api/v1/device/grants", tag = "trust",
    security(("device_key" = [])),
    request_body = Signed<AutoJoinGrant>,
    responses((status = 201, body = GrantView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_grant(
    State(state): State<AppState>,
    ip: ClientIp,
    me: DevicePrincipal,
    ApiJson(signed): ApiJson<Signed<AutoJoinGrant>>,
) -> ApiResult<(StatusCode, Json<GrantView>)> {
    let row = grants::create(state.db(), &me, ip.0, &signed).await?;
    Ok((
        StatusCode::CREATED,
        Json(grant_view(state.db(), &row).await?),
    ))
}

/// Grants this device made or received.
#[utoipa::path(get, path = "/api/v1/device/grants", tag = "trust",
    security(("device_key" = [])),
    responses((status = 200, body = Vec<GrantView>)))]
async fn device_grants(
    State(state): State<AppState>,
    me: DevicePrincipal,
) -> ApiResult<Json<Vec<GrantView>>> {
    let rows = store::trust::list_grants(state.db(), &me.tenant_id, Some(&me.device_id)).await?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(grant_view(state.db(), r).await?);
    }
    Ok(Json(out))
}

/// The granter withdraws its grant (`subject` = `grant:<id>`).
#[utoipa::path(post, path = "/api/v1/device/grants/withdraw", tag = "trust",
    security(("device_key" = [])),
    request_body = Signed<Withdrawal>,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn withdraw_grant(
    State(state): State<AppState>,
    ip: ClientIp,
    me: DevicePrincipal,
    ApiJson(signed): ApiJson<Signed<Withdrawal>>,
) -> ApiResult<StatusCode> {
    grants::withdraw(state.db(), &me, ip.0, &signed).await?;
    crate::automatic::standing_changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate this device's identity key: a statement signed by the current key
/// names the next one. Grants pinned to the old key stop working until the
/// granting devices re-verify.
#[utoipa::path(post, path = "/api/v1/device/identity/rotate", tag = "trust",
    security(("device_key" = [])),
    request_body = Signed<KeyRotation>,
    responses((status = 200, body = PeerView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rotate_identity(
    State(state): State<AppState>,
    ip: ClientIp,
    me: DevicePrincipal,
    ApiJson(signed): ApiJson<Signed<KeyRotation>>,
) -> ApiResult<Json<PeerView>> {
    rotation::rotate(state.db(), &me, ip.0, &signed).await?;
    crate::automatic::standing_changed(&state).await;
    // Live connections proved the old key: they reconnect with the new one.
    // (Single node: other nodes' connections keep the old proof until they
    // reconnect.)
    state.registry().reconnect_device(&me.device_id);
    peer(State(state), me.clone(), Path(me.device_id.clone())).await
}

/// A device's identity rotations, oldest first: a peer holding an old pin
/// can follow the chain of signatures to the current key.
#[utoipa::path(get, path = "/api/v1/device/peers/{id}/rotations", tag = "trust",
    security(("device_key" = [])),
    params(("id" = String, Path, description = "DeviceId")),
    responses((status = 200, body = [Signed<KeyRotation>])))]
async fn rotations(
    State(state): State<AppState>,
    me: DevicePrincipal,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Signed<KeyRotation>>>> {
    let d = trust::peer(state.db(), &me, &id).await?;
    Ok(Json(rotation::chain(state.db(), &d.id).await?))
}

/// Who may auto-join whom: every current grant, with its state.
#[utoipa::path(get, path = "/api/v1/grants", tag = "trust",
    security(("operator_token" = [])),
    responses((status = 200, body = Vec<GrantView>), (status = 403, body = ErrorBody)))]
async fn operator_grants(
    State(state): State<AppState>,
    op: Operator,
) -> ApiResult<Json<Vec<GrantView>>> {
    op.require(Permission::View)?;
    let rows = store::trust::list_grants(state.db(), tenancy::of(&op), None).await?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(grant_view(state.db(), r).await?);
    }
    Ok(Json(out))
}

/// Revoke a grant server-side.
#[utoipa::path(post, path = "/api/v1/grants/{id}/revoke", tag = "trust",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "grant id")),
    request_body = RevokeRequest,
    responses((status = 200, body = GrantView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn operator_revoke_grant(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> ApiResult<Json<GrantView>> {
    revoke_grant_as_operator(&state, ip, &op, &id, req.reason)
        .await
        .map(Json)
}

/// An operator revokes a grant server-side, audited. The API and the
/// console both call this.
pub async fn revoke_grant_as_operator(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    id: &str,
    reason: Option<String>,
) -> ApiResult<GrantView> {
    op.require(Permission::ManageDevices)?;
    let g = store::trust::grant_by_id(state.db().pool(), id)
        .await?
        .filter(|g| g.tenant_id == tenancy::of(op))
        .ok_or_else(|| ApiError::not_found("grant"))?;
    let reason = reason.unwrap_or_else(|| format!("revoked by {}", op.username));
    let reason = trust::revocation_reason(&reason);
    grants::revoke(
        state.db(),
        id,
        grants::Revocation {
            tenant: &g.tenant_id,
            actor: Actor::User(op.user_id.clone()),
            by: &format!("user:{}", op.user_id),
            reason: &reason,
            ip: ip.0,
        },
    )
    .await?;
    crate::automatic::standing_changed(state).await;
    let g = grants::by_id(state.db(), id).await?;
    Ok(grant_view(state.db(), &g).await?)
}
