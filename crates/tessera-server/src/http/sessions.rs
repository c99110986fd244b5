//! Sessions for operators: open a managed session, list, show, end, and mint
//! viewer tokens.
// utoipa's `#[utoipa::path(params(…))]` expands into code that names the
// params type by its full path, outside any item an allow could sit on.
#![allow(unused_qualifications)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use tessera_core::api::{CreateSessionRequest, SecretString, SessionView, ViewerTokenResponse};
use tessera_core::identity::DeviceId;
use tessera_core::kinds::{Consent, EndCode, Origin, SessionState, ViewerAccess};
use tessera_core::roles::Permission;
use tessera_core::ErrorCode;
use tessera_core::Timestamp;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, ClientIp};
use crate::auth::viewer::{ViewerClaims, PURPOSE, TTL};
use crate::auth::Operator;
use crate::cluster::orders::{self, Holder, Start};
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::sessions::SessionRow;
use crate::{session, store, tenancy, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session, list_sessions))
        .routes(routes!(show_session))
        .routes(routes!(end_session))
        .routes(routes!(viewer_token))
}

pub fn session_view(s: &SessionRow) -> SessionView {
    SessionView::from(s)
}

impl From<&SessionRow> for SessionView {
    fn from(s: &SessionRow) -> SessionView {
        SessionView {
            id: s.id.to_string(),
            origin: s.origin.to_string(),
            device_id: s.device_id.clone(),
            device_name: s.device_name.clone(),
            created_by: s.created_by.clone(),
            created_by_name: s.created_by_name.clone(),
            access: s.access.to_string(),
            channel: s.channel.to_string(),
            consent: s.consent.to_string(),
            state: s.state.to_string(),
            created_at: s.created_at.to_rfc3339(),
            started_at: s.started_at.map(Timestamp::to_rfc3339),
            ended_at: s.ended_at.map(Timestamp::to_rfc3339),
            end_code: s.end_code.clone(),
            end_reason: s.end_reason.clone(),
        }
    }
}

/// Whether `op` may see `s`: an attended session whose consent was never
/// granted is visible to its creator only.
pub fn visible_to(s: &SessionRow, op: &Operator) -> bool {
    s.origin != Origin::Attended || s.consent == Consent::Granted || s.created_by == op.user_id
}

pub async fn find(state: &AppState, op: &Operator, id: &str) -> ApiResult<SessionRow> {
    store::sessions::by_id(state.db().pool(), tenancy::of(op), id)
        .await?
        .filter(|s| visible_to(s, op))
        .ok_or_else(|| ApiError::not_found("session"))
}

/// Looks a device up by id, fingerprint or (unique) name.
pub async fn find_device(
    state: &AppState,
    op: &Operator,
    key: &str,
) -> ApiResult<store::devices::DeviceRow> {
    if let Ok(id) = DeviceId::parse(key) {
        // A support-code device exists for its one attended session only:
        // nobody opens another session on it.
        if let Some(d) = store::devices::by_id(state.db().pool(), tenancy::of(op), id.as_str())
            .await?
            .filter(|d| !d.ephemeral)
        {
            return Ok(d);
        }
    }
    let named: Vec<_> = store::devices::list(state.db(), tenancy::of(op))
        .await?
        .into_iter()
        .filter(|d| d.name == key && d.revoked_at.is_none())
        .collect();
    match named.len() {
        1 => Ok(named
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found("device"))?),
        0 => Err(ApiError::not_found("device")),
        _ => Err(ApiError::conflict(
            ErrorCode::AmbiguousDevice,
            "several devices have that name; use its id",
        )),
    }
}

/// Open a managed session (a shell, or with `channel: screen` the device's
/// screen) on an online device.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions",
    security(("operator_token" = [])),
    request_body = CreateSessionRequest,
    responses(
        (status = 201, body = SessionView),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "device_offline, device_revoked, channel_unsupported", body = ErrorBody),
        (status = 503, description = "relay_unavailable: the device's node cannot be reached", body = ErrorBody),
    ))]
async fn create_session(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    let row = create(
        &state,
        ip,
        &op,
        &req.device,
        req.access.as_deref(),
        req.channel.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(session_view(&row))))
}

/// Opens a managed session on an online device (asking the person at it
/// first where the tenant requires consent). The API and the console both
/// call this.
pub async fn create(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    device: &str,
    access: Option<&str>,
    channel: Option<&str>,
) -> ApiResult<SessionRow> {
    op.require(Permission::Control)?;
    let access = super::extract::session_access(access)?;
    let channel = super::extract::session_channel(channel)?;
    let device = find_device(state, op, device).await?;
    if device.revoked_at.is_some() {
        return Err(ApiError::conflict(
            ErrorCode::DeviceRevoked,
            "the device is revoked",
        ));
    }
    // The device's agent may be connected to another node, which is asked
    // to start the session there (`cluster::orders::start`).
    let holder = orders::holder(state, &device.id).await?;
    match &holder {
        Holder::Nobody => {
            return Err(ApiError::conflict(
                ErrorCode::DeviceOffline,
                "the device is not connected to this server",
            ))
        }
        // Refused before anything is recorded: the start request would fail.
        Holder::Node(_) if !state.cluster().nats_connected() => {
            return Err(crate::session::SessionError::RelayUnavailable.into())
        }
        Holder::Here | Holder::Node(_) => {}
    }
    // Refused before anything is recorded or the device is asked: an
    // older agent would read a screen channel as the end of its connection.
    // (On another node, that node refuses it and the session ends
    // `channel_unsupported`.)
    if holder == Holder::Here
        && !crate::relay::screen::device_serves(channel, state.registry().protocol_of(&device.id))
    {
        return Err(ApiError::conflict(
            ErrorCode::ChannelUnsupported,
            "the device's agent is too old for screen sessions (it needs protocol 4); update it",
        ));
    }
    let tenant = tenancy::of(op);
    let now = state.now();
    let id = uuid::Uuid::now_v7().to_string();
    let consent = state
        .db()
        .write(async |w| {
            let require = store::tenants::require_consent_for_managed(w.conn(), tenant).await?;
            let consent = Consent::initial(Origin::Managed, require);
            store::sessions::insert(
                w,
                store::sessions::NewSession {
                    id: &id,
                    tenant_id: tenant,
                    origin: Origin::Managed,
                    device_id: &device.id,
                    created_by: &op.user_id,
                    access,
                    channel,
                    consent,
                    support_code_id: None,
                    now,
                    consent_deadline: (consent == Consent::Pending)
                        .then(|| now.plus(state.config().consent_timeout)),
                },
            )
            .await?;
            w.audit(
                AuditEvent::new(
                    tenant,
                    Actor::User(op.user_id.clone()),
                    Action::SessionCreated,
                )
                .ip(Some(ip.0))
                .target(format!("session:{id}"))
                .detail("origin", Origin::Managed.as_str())
                .detail("device_id", device.id.clone())
                .detail("access", access.as_str())
                .detail("channel", channel.as_str())
                .detail("consent", consent.as_str()),
            )
            .await?;
            if consent == Consent::Pending {
                w.audit(
                    AuditEvent::new(
                        tenant,
                        Actor::User(op.user_id.clone()),
                        Action::ConsentRequested,
                    )
                    .target(format!("session:{id}"))
                    .detail("device_id", device.id.clone()),
                )
                .await?;
            }
            Ok::<_, ApiError>(consent)
        })
        .await?;
    let row = find(state, op, &id).await?;
    let start = if consent == Consent::Pending {
        Start::Consent
    } else {
        Start::Relay
    };
    orders::start(state, &row, start).await?;
    find(state, op, &id).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Include ended sessions (default false).
    #[serde(default)]
    all: bool,
}

/// Sessions you may see (attended sessions awaiting consent only if you
/// created them).
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions",
    security(("operator_token" = [])),
    params(ListQuery),
    responses((status = 200, body = Vec<SessionView>), (status = 403, body = ErrorBody)))]
async fn list_sessions(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<SessionView>>> {
    op.require(Permission::View)?;
    let rows =
        store::sessions::list_visible(state.db(), tenancy::of(&op), &op.user_id, q.all).await?;
    Ok(Json(rows.iter().map(session_view).collect()))
}

/// One session.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody)))]
async fn show_session(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    op.require(Permission::View)?;
    Ok(Json(session_view(&find(&state, &op, &id).await?)))
}

/// End a session: viewers and the device are told at once.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/end", tag = "sessions",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody), (status = 409, description = "already_ended", body = ErrorBody)))]
async fn end_session(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    end(&state, &op, &id)
        .await
        .map(|row| Json(session_view(&row)))
}

/// Ends a session `op` may end (their own, or any with the control
/// permission); viewers and the device are told at once.
pub async fn end(state: &AppState, op: &Operator, id: &str) -> ApiResult<SessionRow> {
    let row = find(state, op, id).await?;
    if row.created_by != op.user_id {
        op.require(Permission::Control)?;
    }
    let reason = format!("ended by {}", op.username);
    if !session::end(
        state,
        id,
        EndCode::EndedByOperator,
        &reason,
        Actor::User(op.user_id.clone()),
    )
    .await?
    {
        return Err(ApiError::conflict(
            ErrorCode::AlreadyEnded,
            "the session has already ended",
        ));
    }
    // An automatic session routed here stops now, and its members are told.
    let routing = crate::automatic::Routing::of(state);
    crate::automatic::stop(&routing, id, EndCode::EndedByOperator.as_str(), &reason).await;
    find(state, op, id).await
}

/// Mint a viewer token for an active session: `control` for operators with
/// the control permission (if the session allows control), else
/// `view_only`. The token's value is never recorded.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/viewer-token", tag = "sessions",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = ViewerTokenResponse),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "consent_pending, session_ended", body = ErrorBody),
    ))]
async fn viewer_token(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<ViewerTokenResponse>> {
    mint_viewer_token(&state, ip, &op, &id).await.map(Json)
}

/// Mints a viewer token for `op` on an active session, recorded (by its
/// id) with its audit row before it is returned. The API and the console
/// (for its web terminal, with the cookie's login) both call this.
pub async fn mint_viewer_token(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    id: &str,
) -> ApiResult<ViewerTokenResponse> {
    let access = if op.role.allows(Permission::Control) {
        ViewerAccess::Control
    } else if op.role.allows(Permission::View) {
        ViewerAccess::ViewOnly
    } else {
        return Err(ApiError::forbidden(
            "viewing a session needs the `view` permission",
        ));
    };
    let row = find(state, op, id).await?;
    // The person at the device consented to one technician, by name: only
    // that one may join. Another needs a support code (and consent) of
    // their own.
    if row.origin == Origin::Attended && row.created_by != op.user_id {
        return Err(ApiError::forbidden(format!(
            "the person at the device consented to {}, not to you; \
             create a support code of your own and ask for their consent",
            row.created_by_name
                .as_deref()
                .unwrap_or("another technician")
        )));
    }
    match row.state {
        SessionState::Active => {}
        SessionState::Pending => {
            return Err(ApiError::conflict(
                ErrorCode::ConsentPending,
                "the person at the device has not answered yet",
            ))
        }
        SessionState::Ended => {
            return Err(ApiError::conflict(
                ErrorCode::SessionEnded,
                "the session has ended",
            ))
        }
    }
    let access = access.at_most(row.access.viewer());
    let now = state.now();
    let iat = now.as_millis().div_euclid(1000);
    let jti = uuid::Uuid::now_v7().to_string();
    let claims = ViewerClaims {
        sub: op.user_id.clone(),
        sid: row.id.to_string(),
        tid: row.tenant_id.clone(),
        access: access.as_str().to_owned(),
        purpose: PURPOSE.to_owned(),
        lid: op.session_id.clone(),
        iat,
        exp: iat + TTL.as_secs() as i64,
        jti: jti.clone(),
    };
    let keys = state.viewer_keys();
    let token = keys.mint(&claims).map_err(ApiError::internal)?;
    let event = AuditEvent::new(
        &row.tenant_id,
        Actor::User(op.user_id.clone()),
        Action::ViewerTokenMinted,
    )
    .ip(Some(ip.0))
    .target(format!("session:{}", row.id))
    .detail("access", access.as_str())
    .detail("token_id", jti.clone());
    let minted = store::node_keys::MintedToken {
        jti: &jti,
        tenant_id: &row.tenant_id,
        session_id: row.id.as_str(),
        user_id: &op.user_id,
        login_id: &op.session_id,
        access,
        kid: keys.kid(),
        expires_at: Timestamp::from_millis(claims.exp * 1000),
    };
    // The token exists only once it is recorded, with its audit row.
    state
        .db()
        .write(async |w| {
            store::node_keys::record_minted(w, &minted).await?;
            w.audit(event).await
        })
        .await?;
    Ok(ViewerTokenResponse {
        token: SecretString::new(token),
        access: access.as_str().to_owned(),
        expires_at: Timestamp::from_millis(claims.exp * 1000).to_rfc3339(),
        session_id: row.id.into_string(),
    })
}
