//! The device registry: list, show, tag, revoke; and each device's keys.

// utoipa's `#[utoipa::path(params(…))]` expands into code that names the
// params type by its full path, outside any item an allow could sit on.
#![allow(unused_qualifications)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use tessera_core::api::{
    DeviceKeyView, DeviceView, IssuedKey, RevokeRequest, SecretString, TagsRequest,
};
use tessera_core::identity::DeviceId;
use tessera_core::roles::Permission;
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::ErrorCode;
use tessera_core::Timestamp;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, ClientIp};
use crate::auth::Operator;
use crate::cluster::orders::{self, Order};
use crate::store::audit::Action;
use crate::store::device_list::{DeviceQuery, DeviceSort};
use crate::store::devices::{DeviceRow, KeyRow};
use crate::{enrollment, store, tenancy, AppState};

pub const MAX_TAGS: usize = 32;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices))
        .routes(routes!(show_device))
        .routes(routes!(revoke_device))
        .routes(routes!(tag_device))
        .routes(routes!(list_keys, issue_key))
        .routes(routes!(revoke_key))
}

/// Online: connected to this node, or (for another node's connection) seen
/// within two heartbeat intervals since its latest connect.
pub fn is_online(
    d: &DeviceRow,
    now: Timestamp,
    heartbeat: std::time::Duration,
    local: bool,
) -> bool {
    if d.revoked_at.is_some() {
        return false;
    }
    if local {
        return true;
    }
    let connected = match (d.connected_at, d.disconnected_at) {
        (Some(c), Some(dis)) => c > dis,
        (Some(_), None) => true,
        _ => false,
    };
    connected
        && d.last_seen_at
            .is_some_and(|seen| seen >= now.minus(heartbeat * 2))
}

pub fn device_view(state: &AppState, d: &DeviceRow) -> DeviceView {
    let local = state.registry().is_connected(&d.id);
    // The current key's, which after a rotation is no longer the id.
    let fingerprint = tessera_core::identity::fingerprint(&d.ed25519_public);
    DeviceView {
        id: d.id.clone(),
        fingerprint,
        name: d.name.clone(),
        hostname: d.hostname.clone(),
        os: d.os.clone(),
        agent_version: d.agent_version.clone(),
        tags: d.tags.clone(),
        online: is_online(d, state.now(), state.config().heartbeat_interval, local),
        last_seen_at: d.last_seen_at.map(Timestamp::to_rfc3339),
        last_ip: d.last_ip.clone(),
        enrolled_via: d.enrolled_via.clone(),
        enrolled_by: d.enrolled_by.clone(),
        owner_user_id: d.owner_user_id.clone(),
        created_at: d.created_at.to_rfc3339(),
        revoked: d.revoked_at.is_some(),
        revoked_at: d.revoked_at.map(Timestamp::to_rfc3339),
        revoked_reason: d.revoked_reason.clone(),
    }
}

impl From<&KeyRow> for DeviceKeyView {
    fn from(k: &KeyRow) -> Self {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if k.activated_at.is_none() {
            "pending"
        } else {
            "active"
        };
        DeviceKeyView {
            id: k.id.clone(),
            prefix: k.key_prefix.clone(),
            state: state.to_owned(),
            created_at: k.created_at.to_rfc3339(),
            created_by: k.created_by.clone(),
            last_used_at: k.last_used_at.map(Timestamp::to_rfc3339),
            revoked_at: k.revoked_at.map(Timestamp::to_rfc3339),
            revoked_reason: k.revoked_reason.clone(),
        }
    }
}

/// Tags: 1–64 of `a-z 0-9 : . _ -`.
pub fn validate_tags(tags: &[String]) -> Result<(), ApiError> {
    for t in tags {
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":._-".contains(&b));
        if !ok {
            return Err(ApiError::unprocessable(
                ErrorCode::InvalidTag,
                "tags are 1-64 characters of a-z, 0-9, ':', '.', '_', '-'",
            ));
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidTag,
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    Ok(())
}

fn clean_reason(r: Option<String>) -> Result<String, ApiError> {
    let r = r.unwrap_or_else(|| "revoked by an operator".to_owned());
    if r.chars().count() > 200 || r.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "`reason` must be at most 200 printable characters",
        ));
    }
    Ok(r)
}

/// A device `op` may see, else 404 as if it did not exist: a support-code
/// device whose person has not consented is its technician's alone (its
/// name, host, OS and owner are theirs to know; nobody else may act on it).
pub async fn find(state: &AppState, op: &Operator, id: &str) -> ApiResult<DeviceRow> {
    let id = DeviceId::parse(id).map_err(|_| ApiError::not_found("device"))?;
    let d = store::devices::by_id(state.db().pool(), tenancy::of(op), id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    let hidden = d.ephemeral
        && d.owner_user_id != op.user_id
        && !store::devices::consented(state.db().pool(), &d.id).await?;
    if hidden {
        return Err(ApiError::not_found("device"));
    }
    Ok(d)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceListQuery {
    /// Words that must each match the name, hostname, OS, a tag, or the
    /// start of the id or of a live key's prefix (case-insensitive); at
    /// most 8 words and 200 characters.
    #[param(max_length = 200)]
    q: Option<String>,
    /// `name` (default), `-name`, `seen`, `-seen`, `online` or `os`.
    #[param(pattern = "^(name|-name|seen|-seen|online|os)?$")]
    sort: Option<String>,
    /// At most this many devices (1–1000); all of them when unset.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Skip this many (with `limit`, for paging; at most 100,000).
    #[param(minimum = 0, maximum = 100000)]
    offset: Option<i64>,
}

/// Largest `limit`, and deepest `offset`, of the device list.
pub const MAX_LIST_LIMIT: i64 = 1_000;
pub const MAX_LIST_OFFSET: i64 = 100_000;

/// Checks a list query and turns it into the store's (pure).
fn device_query(
    q: DeviceListQuery,
    tenant: &str,
    online_since: Timestamp,
) -> ApiResult<DeviceQuery> {
    let bad = |m: &str| ApiError::bad_request(ErrorCode::InvalidQuery, m.to_owned());
    let sort = DeviceSort::parse(q.sort.as_deref().unwrap_or(""))
        .ok_or_else(|| bad("`sort` must be name, -name, seen, -seen, online or os"))?;
    let text = q.q.unwrap_or_default();
    if text.chars().count() > 200 || text.split_whitespace().count() > 8 {
        return Err(bad("`q` takes at most 8 words and 200 characters"));
    }
    let limit = match q.limit {
        None => i64::MAX,
        Some(l) if (1..=MAX_LIST_LIMIT).contains(&l) => l,
        Some(_) => return Err(bad("`limit` must be from 1 to 1000")),
    };
    let offset = match q.offset {
        None => 0,
        Some(o) if (0..=MAX_LIST_OFFSET).contains(&o) => o,
        Some(_) => return Err(bad("`offset` must be from 0 to 100000")),
    };
    Ok(DeviceQuery {
        tenant: tenant.to_owned(),
        words: text.split_whitespace().map(str::to_lowercase).collect(),
        sort,
        online_since,
        offset,
        limit,
    })
}

/// List devices: all of them by name, or searched, sorted and paged by
/// the database with `q`, `sort`, `limit` and `offset` (the console's
/// device list uses the same query). The total of matches is in the
/// `x-total-count` header.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    security(("operator_token" = [])),
    params(DeviceListQuery),
    responses((status = 200, body = Vec<DeviceView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_devices(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<DeviceListQuery>,
) -> ApiResult<([(&'static str, String); 1], Json<Vec<DeviceView>>)> {
    op.require(Permission::View)?;
    let since = state.now().minus(state.config().heartbeat_interval * 2);
    let query = device_query(q, tenancy::of(&op), since)?;
    let found = store::device_list::page(state.db(), &query).await?;
    Ok((
        [("x-total-count", found.matched.to_string())],
        Json(found.rows.iter().map(|d| device_view(&state, d)).collect()),
    ))
}

/// Show one device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "DeviceId, grouped or not")),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody)))]
async fn show_device(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceView>> {
    op.require(Permission::View)?;
    let d = find(&state, &op, &id).await?;
    Ok(Json(device_view(&state, &d)))
}

/// Revoke a device and all its keys; its control connection is closed at
/// once on every node (within one heartbeat if NATS is down).
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "devices",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "DeviceId")),
    request_body = RevokeRequest,
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody), (status = 409, description = "already_revoked", body = ErrorBody)))]
async fn revoke_device(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> ApiResult<Json<DeviceView>> {
    let d = revoke(&state, ip, &op, &id, req.reason).await?;
    Ok(Json(device_view(&state, &d)))
}

/// Revokes a device and all its keys, audited, and cuts its connection;
/// returns the device as it now is. The API and the console both call this.
pub async fn revoke(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    id: &str,
    reason: Option<String>,
) -> ApiResult<DeviceRow> {
    op.require(Permission::ManageDevices)?;
    let reason = clean_reason(reason)?;
    let d = find(state, op, id).await?;
    state
        .db()
        .write(async |w| {
            if !store::devices::revoke(
                w,
                tenancy::of(op),
                &d.id,
                &reason,
                &format!("user:{}", op.user_id),
                state.now(),
            )
            .await?
            {
                return Err(ApiError::conflict(
                    ErrorCode::AlreadyRevoked,
                    "this device is already revoked",
                ));
            }
            w.audit(
                op.event(Action::DeviceRevoked)
                    .ip(Some(ip.0))
                    .target(format!("device:{}", d.id))
                    .detail("device_name", d.name.clone())
                    .detail("reason", reason.clone()),
            )
            .await?;
            Ok::<_, ApiError>(())
        })
        .await?;
    // Its automatic sessions lose it (audited) before its connection goes.
    crate::automatic::standing_changed(state).await;
    state
        .registry()
        .revoke_device(&d.id, ErrorCode::DeviceRevoked, &reason);
    let order = Order::DeviceRevoked {
        device_id: d.id.clone(),
        reason,
    };
    orders::publish(state.cluster(), order).await;
    find(state, op, id).await
}

/// Add and remove tags.
#[utoipa::path(post, path = "/api/v1/devices/{id}/tags", tag = "devices",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "DeviceId")),
    request_body = TagsRequest,
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn tag_device(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TagsRequest>,
) -> ApiResult<Json<DeviceView>> {
    let d = retag(&state, ip, &op, &id, &req.add, &req.remove).await?;
    Ok(Json(device_view(&state, &d)))
}

/// Adds and removes a device's tags, audited.
pub async fn retag(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    id: &str,
    add: &[String],
    remove: &[String],
) -> ApiResult<DeviceRow> {
    op.require(Permission::ManageDevices)?;
    validate_tags(add)?;
    validate_tags(remove)?;
    let tenant = tenancy::of(op);
    find(state, op, id).await?;
    state
        .db()
        .write(async |w| {
            let key = DeviceId::parse(id).map_err(|_| ApiError::not_found("device"))?;
            let d = store::devices::by_id(w.conn(), tenant, key.as_str())
                .await?
                .ok_or_else(|| ApiError::not_found("device"))?;
            let mut tags: Vec<String> = d
                .tags
                .iter()
                .filter(|t| !remove.contains(t))
                .cloned()
                .collect();
            for t in add {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
            tags.sort();
            validate_tags(&tags)?;
            store::devices::set_tags(w, tenant, &d.id, &tags).await?;
            w.audit(
                op.event(Action::DeviceTagged)
                    .ip(Some(ip.0))
                    .target(format!("device:{}", d.id))
                    .detail("tags", tags.clone()),
            )
            .await?;
            Ok::<_, ApiError>(())
        })
        .await?;
    find(state, op, id).await
}

/// A device's keys (prefixes only; a key is shown once, when issued).
#[utoipa::path(get, path = "/api/v1/devices/{id}/keys", tag = "devices",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "DeviceId")),
    responses((status = 200, body = Vec<DeviceKeyView>), (status = 404, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<DeviceKeyView>>> {
    let keys = keys_of(&state, &op, &id).await?;
    Ok(Json(keys.iter().map(DeviceKeyView::from).collect()))
}

/// A device's keys, for an operator who may manage devices.
pub async fn keys_of(state: &AppState, op: &Operator, id: &str) -> ApiResult<Vec<KeyRow>> {
    op.require(Permission::ManageDevices)?;
    let d = find(state, op, id).await?;
    Ok(store::devices::list_keys(state.db(), tenancy::of(op), &d.id).await?)
}

/// Issue a new key for a device; the key is in this response only.
#[utoipa::path(post, path = "/api/v1/devices/{id}/keys", tag = "devices",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "DeviceId")),
    responses((status = 201, body = IssuedKey), (status = 404, body = ErrorBody), (status = 409, description = "device_revoked, support_key_scope", body = ErrorBody)))]
async fn issue_key(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<IssuedKey>)> {
    let issued = issue(&state, &op, &id).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Issues a new key for a device; the key is in the result only. The API
/// and the console both call this.
pub async fn issue(state: &AppState, op: &Operator, id: &str) -> ApiResult<IssuedKey> {
    op.require(Permission::ManageDevices)?;
    let d = find(state, op, id).await?;
    if d.revoked_at.is_some() {
        return Err(ApiError::conflict(
            ErrorCode::DeviceRevoked,
            "a revoked device gets no new keys",
        ));
    }
    if d.ephemeral {
        return Err(ApiError::conflict(
            ErrorCode::SupportKeyScope,
            "a support-code device has its one session's key only",
        ));
    }
    let secret = Secret::generate(SecretKind::DeviceKey);
    let key_id = state
        .db()
        .write(async |w| {
            let key_id = enrollment::issue_key(
                w,
                tenancy::of(op),
                &d.id,
                &secret,
                &format!("user:{}", op.user_id),
                "issued_by_operator",
            )
            .await?;
            Ok::<_, ApiError>(key_id)
        })
        .await?;
    let keys = store::devices::list_keys(state.db(), tenancy::of(op), &d.id).await?;
    let key = keys
        .iter()
        .find(|k| k.id == key_id)
        .map(DeviceKeyView::from)
        .ok_or_else(|| ApiError::internal("issued key vanished"))?;
    Ok(IssuedKey {
        key,
        device_key: SecretString::new(secret.expose()),
    })
}

/// Revoke one key of a device; a connection using it is closed.
#[utoipa::path(post, path = "/api/v1/devices/{id}/keys/{key_id}/revoke", tag = "devices",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "DeviceId"), ("key_id" = String, Path, description = "key id")),
    request_body = RevokeRequest,
    responses((status = 200, body = DeviceKeyView), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path((id, key_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> ApiResult<Json<DeviceKeyView>> {
    revoke_one_key(&state, ip, &op, &id, &key_id, req.reason)
        .await
        .map(|k| Json(DeviceKeyView::from(&k)))
}

/// Revokes one key of a device, audited, and closes a connection using it.
pub async fn revoke_one_key(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    id: &str,
    key_id: &str,
    reason: Option<String>,
) -> ApiResult<KeyRow> {
    op.require(Permission::ManageDevices)?;
    let reason = clean_reason(reason)?;
    let d = find(state, op, id).await?;
    let tenant = tenancy::of(op);
    state
        .db()
        .write(async |w| {
            if !store::devices::revoke_key(w, tenant, &d.id, key_id, &reason, state.now()).await? {
                return Err(ApiError::not_found("live key"));
            }
            w.audit(
                op.event(Action::KeyRevoked)
                    .ip(Some(ip.0))
                    .target(format!("device:{}", d.id))
                    .detail("key_id", key_id.to_owned())
                    .detail("reason", reason.clone()),
            )
            .await?;
            Ok::<_, ApiError>(())
        })
        .await?;
    state
        .registry()
        .revoke_key(key_id, ErrorCode::KeyRevoked, &reason);
    let order = Order::KeyRevoked {
        key_id: key_id.to_owned(),
        reason,
    };
    orders::publish(state.cluster(), order).await;
    let keys = store::devices::list_keys(state.db(), tenant, &d.id).await?;
    keys.into_iter()
        .find(|k| k.id == key_id)
        .ok_or_else(|| ApiError::not_found("key"))
}
