//! Trust between devices, on the device plane (`/api/v1/device/…`, `cak_`
//! keys), and grants for operators (`/api/v1/grants`).
//!
//! The server stores and relays; it never decides whom a device trusts. It
//! checks every signed statement against the signer's current key, refuses
//! stale and replayed ones, and keeps tombstones: a withdrawn attestation or
//! a revoked grant is not brought back by re-sending it.

use std::time::Duration;
use tessera_core::ErrorCode;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use tessera_core::api::{
    AttestationView, CreateExchangeRequest, ExchangeStepRequest, ExchangeView, GrantView, PeerView,
    RevokeRequest,
};
use tessera_core::identity::{DeviceId, IdentityDocument};
use tessera_core::roles::Permission;
use tessera_core::trust::{
    fingerprint, grant_state, key_from_hex, AutoJoinGrant, KeyRotation, Signed, TrustAttestation,
    Withdrawal,
};
use tessera_core::Timestamp;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, ClientIp};
use crate::auth::device::DevicePrincipal;
use crate::auth::Operator;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::devices::DeviceRow;
use crate::store::trust::{ExchangeRow, GrantRow};
use crate::store::{self, StoreError};
use crate::{tenancy, AppState};

/// How far a statement's `issued_at` may be from the server's clock.
const FRESHNESS: Duration = Duration::from_secs(600);
/// How long a SAS exchange stays open.
const EXCHANGE_TTL: Duration = Duration::from_secs(600);
/// The longest a grant may run.
const MAX_GRANT: Duration = Duration::from_secs(366 * 24 * 3600);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(peer))
        .routes(routes!(create_exchange, list_exchanges))
        .routes(routes!(respond))
        .routes(routes!(reveal))
        .routes(routes!(attest, list_trust))
        .routes(routes!(withdraw_trust))
        .routes(routes!(create_grant, device_grants))
        .routes(routes!(withdraw_grant))
        .routes(routes!(rotate_identity))
        .routes(routes!(rotations))
        .routes(routes!(operator_grants))
        .routes(routes!(operator_revoke_grant))
}

fn hex(b: &[u8; 32]) -> String {
    tessera_core::secret::hex(b)
}

/// A device of the caller's tenant, by id; never a one-session device.
async fn peer_row(state: &AppState, me: &DevicePrincipal, id: &str) -> ApiResult<DeviceRow> {
    let id = DeviceId::parse(id).map_err(|_| ApiError::not_found("device"))?;
    store::devices::by_id(state.db().pool(), tenancy::of(me), id.as_str())
        .await?
        .filter(|d| !d.ephemeral && d.revoked_at.is_none())
        .ok_or_else(|| ApiError::not_found("device"))
}

fn fresh(issued_at: Timestamp, now: Timestamp) -> ApiResult<()> {
    if issued_at.since(now) > FRESHNESS || now.since(issued_at) > FRESHNESS {
        return Err(ApiError::unprocessable(
            ErrorCode::StaleStatement,
            "the statement's time is more than ten minutes from the server's clock",
        ));
    }
    Ok(())
}

async fn my_row(state: &AppState, me: &DevicePrincipal) -> ApiResult<DeviceRow> {
    store::devices::by_id_any_tenant(state.db().pool(), &me.device_id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))
}

fn bad_signature() -> ApiError {
    ApiError::unprocessable(
        ErrorCode::BadSignature,
        "the signature does not verify with the signer's current key",
    )
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
    let d = peer_row(&state, &me, &id).await?;
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

fn exchange_view(e: &ExchangeRow) -> ExchangeView {
    ExchangeView {
        id: e.id.clone(),
        initiator: e.initiator.clone(),
        responder: e.responder.clone(),
        commitment: e.commitment.clone(),
        state: e.state.clone(),
        responder_identity: e.responder_identity.clone(),
        responder_nonce: e.responder_nonce.clone(),
        initiator_identity: e.initiator_identity.clone(),
        initiator_nonce: e.initiator_nonce.clone(),
        expires_at: e.expires_at.to_rfc3339(),
    }
}

fn hex32(s: &str, what: &str) -> ApiResult<()> {
    key_from_hex(s).map(|_| ()).ok_or_else(|| {
        ApiError::unprocessable(
            ErrorCode::InvalidField,
            format!("`{what}` must be 64 hex digits"),
        )
    })
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
    hex32(&req.commitment, "commitment")?;
    let peer = peer_row(&state, &me, &req.peer).await?;
    if peer.id == me.device_id {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "a device cannot trust itself",
        ));
    }
    let now = state.now();
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = state.db().begin_write().await?;
    store::trust::insert_exchange(
        &mut tx,
        &store::trust::NewExchange {
            id: &id,
            tenant: &me.tenant_id,
            initiator: &me.device_id,
            responder: &peer.id,
            commitment: &req.commitment,
        },
        now,
        now.plus(EXCHANGE_TTL),
    )
    .await?;
    tx.commit().await?;
    let e = store::trust::exchange_by_id(state.db(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("exchange"))?;
    Ok((StatusCode::CREATED, Json(exchange_view(&e))))
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
    let peer = DeviceId::parse(&q.peer)
        .map_err(|_| ApiError::bad_request(ErrorCode::InvalidQuery, "`peer` is not a device id"))?;
    let rows =
        store::trust::exchanges_between(state.db(), &me.device_id, peer.as_str(), state.now())
            .await?;
    Ok(Json(rows.iter().map(exchange_view).collect()))
}

fn check_step(req: &ExchangeStepRequest, me: &DevicePrincipal) -> ApiResult<()> {
    hex32(&req.nonce, "nonce")?;
    let doc = IdentityDocument::decode(&req.identity)
        .map_err(|e| ApiError::unprocessable(ErrorCode::InvalidIdentity, e.to_string()))?;
    // The identity must be the caller's current one.
    if doc.ed25519 != me.ed25519_public {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidIdentity,
            "that is not this device's current identity",
        ));
    }
    Ok(())
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
    check_step(&req, &me)?;
    if !store::trust::respond(
        state.db(),
        &id,
        &me.device_id,
        &req.identity,
        &req.nonce,
        state.now(),
    )
    .await?
    {
        return Err(ApiError::conflict(
            ErrorCode::ExchangeNotOpen,
            "no open exchange awaits this device's answer",
        ));
    }
    let e = store::trust::exchange_by_id(state.db(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("exchange"))?;
    Ok(Json(exchange_view(&e)))
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
    check_step(&req, &me)?;
    if !store::trust::reveal(
        state.db(),
        &id,
        &me.device_id,
        &req.identity,
        &req.nonce,
        state.now(),
    )
    .await?
    {
        return Err(ApiError::conflict(
            ErrorCode::ExchangeNotOpen,
            "no answered exchange awaits this device's reveal",
        ));
    }
    let e = store::trust::exchange_by_id(state.db(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("exchange"))?;
    Ok(Json(exchange_view(&e)))
}

/// Whether the pair trusts each other, to the keys each holds now.
async fn mutual(state: &AppState, a: &DeviceRow, b: &DeviceRow) -> Result<bool, StoreError> {
    let ab = store::trust::latest_attestation(state.db().pool(), &a.id, &b.id).await?;
    let ba = store::trust::latest_attestation(state.db().pool(), &b.id, &a.id).await?;
    Ok(
        ab.is_some_and(|x| x.withdrawn_at.is_none() && x.trusted_ed25519 == hex(&b.ed25519_public))
            && ba.is_some_and(|x| {
                x.withdrawn_at.is_none() && x.trusted_ed25519 == hex(&a.ed25519_public)
            }),
    )
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
    let a = &signed.statement;
    if a.truster != me.device_id {
        return Err(ApiError::forbidden("a device attests only for itself"));
    }
    signed
        .verify(&me.ed25519_public)
        .map_err(|_| bad_signature())?;
    let now = state.now();
    fresh(a.issued_at, now)?;
    let peer = peer_row(&state, &me, &a.trusted).await?;
    if key_from_hex(&a.trusted_ed25519).is_none() || key_from_hex(&a.trusted_x25519).is_none() {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "pinned keys must be 64 hex digits",
        ));
    }
    // Revocation wins: an attestation no newer than its withdrawal is a replay.
    if let Some(prev) =
        store::trust::latest_attestation(state.db().pool(), &me.device_id, &peer.id).await?
    {
        if a.issued_at <= prev.issued_at || prev.withdrawn_at.is_some_and(|w| a.issued_at <= w) {
            return Err(ApiError::conflict(
                ErrorCode::StaleStatement,
                "a newer statement about this peer exists",
            ));
        }
    }
    let mut tx = state.db().begin_write().await?;
    store::trust::insert_attestation(
        &mut tx,
        store::trust::NewAttestation {
            id: &uuid::Uuid::now_v7().to_string(),
            tenant_id: &me.tenant_id,
            truster: &me.device_id,
            trusted: &peer.id,
            trusted_ed25519: &a.trusted_ed25519,
            trusted_x25519: &a.trusted_x25519,
            issued_at: a.issued_at,
            signature: &signed.signature,
            now,
        },
    )
    .await?;
    tx.commit().await?;
    let me_row = my_row(&state, &me).await?;
    let is_mutual = mutual(&state, &me_row, &peer).await?;
    let mut tx = state.db().begin_write().await?;
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &me.tenant_id,
                Actor::Device(me.device_id.clone()),
                Action::TrustEstablished,
            )
            .ip(Some(ip.0))
            .target(format!("device:{}", peer.id))
            .detail(
                "pinned_fingerprint",
                fingerprint(&key_from_hex(&a.trusted_ed25519).unwrap_or_default()),
            )
            .detail(
                "pin_matches_server",
                a.trusted_ed25519 == hex(&peer.ed25519_public),
            )
            .detail("mutual", is_mutual),
        )
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(AttestationView {
            truster: me.device_id.clone(),
            trusted: peer.id.clone(),
            trusted_fingerprint: fingerprint(&key_from_hex(&a.trusted_ed25519).unwrap_or_default()),
            issued_at: a.issued_at.to_rfc3339(),
            mutual: is_mutual,
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
            (Some(a), Some(b)) => mutual(&state, &a, &b).await?,
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
    let w = &signed.statement;
    if w.issuer != me.device_id {
        return Err(ApiError::forbidden(
            "a device withdraws only its own statements",
        ));
    }
    signed
        .verify(&me.ed25519_public)
        .map_err(|_| bad_signature())?;
    let now = state.now();
    fresh(w.issued_at, now)?;
    let peer = w.subject.strip_prefix("trust:").ok_or_else(|| {
        ApiError::unprocessable(ErrorCode::InvalidField, "subject must be trust:<device id>")
    })?;
    let mut tx = state.db().begin_write().await?;
    if !store::trust::withdraw_attestation(&mut tx, &me.device_id, peer, now).await? {
        return Err(ApiError::not_found("attestation"));
    }
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &me.tenant_id,
                Actor::Device(me.device_id.clone()),
                Action::TrustRemoved,
            )
            .ip(Some(ip.0))
            .target(format!("device:{peer}")),
        )
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn grant_view(state: &AppState, g: &GrantRow) -> Result<GrantView, StoreError> {
    let granter = store::devices::by_id_any_tenant(state.db().pool(), &g.grant.granter).await?;
    let grantee = store::devices::by_id_any_tenant(state.db().pool(), &g.grant.grantee).await?;
    let current_fp = grantee
        .as_ref()
        .map(|d| fingerprint(&d.ed25519_public))
        .unwrap_or_default();
    let st = grant_state(&g.grant, g.revoked_at.is_some(), &current_fp, state.now());
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
    let g = &signed.statement;
    if g.granter != me.device_id {
        return Err(ApiError::forbidden("a device grants only for itself"));
    }
    signed
        .verify(&me.ed25519_public)
        .map_err(|_| bad_signature())?;
    let now = state.now();
    fresh(g.issued_at, now)?;
    if g.scopes.is_empty()
        || g.expires_at <= now
        || g.expires_at.since(g.issued_at) > MAX_GRANT
        || uuid::Uuid::parse_str(&g.id).is_err()
    {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidGrant,
            "a grant needs an id, a scope and an expiry within a year",
        ));
    }
    let grantee = peer_row(&state, &me, &g.grantee).await?;
    let previous =
        store::trust::current_grant(state.db().pool(), &me.device_id, &grantee.id).await?;
    if previous
        .as_ref()
        .is_some_and(|p| g.issued_at <= p.grant.issued_at)
    {
        return Err(ApiError::conflict(
            ErrorCode::StaleStatement,
            "a newer grant to this device exists",
        ));
    }
    let mut tx = state.db().begin_write().await?;
    store::trust::insert_grant(&mut tx, &me.tenant_id, g, &signed.signature, now)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::conflict(
                ErrorCode::StaleStatement,
                "that grant was already submitted",
            ),
            other => other.into(),
        })?;
    let replaced = store::trust::supersede(&mut tx, &me.device_id, &grantee.id, &g.id).await?;
    let action = if replaced.is_empty() {
        Action::GrantCreated
    } else {
        Action::GrantRenewed
    };
    let scopes: Vec<&str> = g.scopes.iter().map(|s| s.as_str()).collect();
    state
        .audit(
            &mut tx,
            AuditEvent::new(&me.tenant_id, Actor::Device(me.device_id.clone()), action)
                .ip(Some(ip.0))
                .target(format!("grant:{}", g.id))
                .detail("grantee", grantee.id.clone())
                .detail("scopes", scopes.join(","))
                .detail("expires_at", g.expires_at.to_rfc3339())
                .detail("replaces", replaced.join(",")),
        )
        .await?;
    tx.commit().await?;
    let row = store::trust::grant_by_id(state.db().pool(), &g.id)
        .await?
        .ok_or_else(|| ApiError::not_found("grant"))?;
    Ok((StatusCode::CREATED, Json(grant_view(&state, &row).await?)))
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
        out.push(grant_view(&state, r).await?);
    }
    Ok(Json(out))
}

async fn revoke(
    state: &AppState,
    tenant: &str,
    id: &str,
    actor: Actor,
    by: &str,
    reason: &str,
    ip: ClientIp,
) -> ApiResult<()> {
    let mut tx = state.db().begin_write().await?;
    if !store::trust::revoke_grant(&mut tx, id, by, reason, state.now()).await? {
        return Err(ApiError::not_found("live grant"));
    }
    state
        .audit(
            &mut tx,
            AuditEvent::new(tenant, actor, Action::GrantRevoked)
                .ip(Some(ip.0))
                .target(format!("grant:{id}"))
                .detail("reason", reason),
        )
        .await?;
    tx.commit().await?;
    Ok(())
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
    let w = &signed.statement;
    if w.issuer != me.device_id {
        return Err(ApiError::forbidden(
            "a device withdraws only its own statements",
        ));
    }
    signed
        .verify(&me.ed25519_public)
        .map_err(|_| bad_signature())?;
    fresh(w.issued_at, state.now())?;
    let id = w.subject.strip_prefix("grant:").ok_or_else(|| {
        ApiError::unprocessable(ErrorCode::InvalidField, "subject must be grant:<id>")
    })?;
    let g = store::trust::grant_by_id(state.db().pool(), id)
        .await?
        .filter(|g| g.grant.granter == me.device_id)
        .ok_or_else(|| ApiError::not_found("grant"))?;
    revoke(
        &state,
        &g.tenant_id,
        id,
        Actor::Device(me.device_id.clone()),
        &format!("device:{}", me.device_id),
        "withdrawn by the granting device",
        ip,
    )
    .await?;
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
    let r = &signed.statement;
    if r.device != me.device_id || r.old_ed25519 != hex(&me.ed25519_public) {
        return Err(ApiError::forbidden(
            "a device rotates only its own current key",
        ));
    }
    signed
        .verify(&me.ed25519_public)
        .map_err(|_| bad_signature())?;
    let now = state.now();
    fresh(r.issued_at, now)?;
    let doc = IdentityDocument::decode(&r.new_identity)
        .map_err(|e| ApiError::unprocessable(ErrorCode::InvalidIdentity, e.to_string()))?;
    let statement = serde_json::to_string(r).map_err(ApiError::internal)?;
    let mut tx = state.db().begin_write().await?;
    let moved = store::trust::rotate_identity(
        &mut tx,
        store::trust::Rotation {
            device_id: &me.device_id,
            epoch: r.epoch,
            old_ed25519: &me.ed25519_public,
            new_ed25519: &doc.ed25519,
            new_x25519: &doc.x25519,
            new_signature: &doc.signature,
            statement: &statement,
            signature: &signed.signature,
            now,
        },
    )
    .await?;
    if !moved {
        return Err(ApiError::conflict(
            ErrorCode::StaleStatement,
            "the epoch or the old key does not match the device's current key",
        ));
    }
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &me.tenant_id,
                Actor::Device(me.device_id.clone()),
                Action::IdentityKeyRotated,
            )
            .ip(Some(ip.0))
            .target(format!("device:{}", me.device_id))
            .detail("epoch", r.epoch)
            .detail("old_fingerprint", fingerprint(&me.ed25519_public))
            .detail("new_fingerprint", fingerprint(&doc.ed25519)),
        )
        .await?;
    tx.commit().await?;
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
    let d = peer_row(&state, &me, &id).await?;
    let rows = store::trust::rotations_of(state.db(), &d.id).await?;
    let out = rows
        .into_iter()
        .filter_map(|(statement, signature)| {
            serde_json::from_str(&statement)
                .ok()
                .map(|statement| Signed {
                    statement,
                    signature,
                })
        })
        .collect();
    Ok(Json(out))
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
        out.push(grant_view(&state, r).await?);
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
    op.require(Permission::ManageDevices)?;
    let g = store::trust::grant_by_id(state.db().pool(), &id)
        .await?
        .filter(|g| g.tenant_id == tenancy::of(&op))
        .ok_or_else(|| ApiError::not_found("grant"))?;
    let reason = req
        .reason
        .unwrap_or_else(|| format!("revoked by {}", op.username));
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    revoke(
        &state,
        &g.tenant_id,
        &id,
        Actor::User(op.user_id.clone()),
        &format!("user:{}", op.user_id),
        &reason,
        ip,
    )
    .await?;
    let g = store::trust::grant_by_id(state.db().pool(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("grant"))?;
    Ok(Json(grant_view(&state, &g).await?))
}
