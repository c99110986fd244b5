//! Enrollment tokens (create, list, revoke) and enrolling with one.

use std::time::Duration;
use tessera_core::ErrorCode;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::Json;
use tessera_core::api::{
    CreateEnrollmentTokenRequest, CreatedEnrollmentToken, EnrollRequest, EnrollResponse,
    EnrollmentTokenView, SecretString,
};
use tessera_core::roles::Permission;
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::Timestamp;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::devices::validate_tags;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ClientIp, ServerOrigin};
use super::ratelimit;
use crate::auth::Operator;
use crate::enrollment::{self, token_state, Enrollment};
use crate::store::audit::Action;
use crate::store::enrollment::TokenRow;
use crate::{store, tenancy, AppState};

pub const MAX_USES: u32 = 10_000;
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let enroll = OpenApiRouter::new()
        .routes(routes!(enroll))
        .route_layer(from_fn_with_state(
            (state.clone(), state.limiters().enroll.clone()),
            ratelimit::enforce,
        ));
    OpenApiRouter::new()
        .merge(enroll)
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

pub fn token_view(t: &TokenRow, now: Timestamp) -> EnrollmentTokenView {
    EnrollmentTokenView {
        id: t.id.clone(),
        prefix: t.token_prefix.clone(),
        uses_total: t.uses_total,
        uses_remaining: t.uses_remaining,
        tags: t.tags.clone(),
        created_by: t.created_by.clone(),
        created_at: t.created_at.to_rfc3339(),
        expires_at: t.expires_at.to_rfc3339(),
        last_used_at: t.last_used_at.map(Timestamp::to_rfc3339),
        state: token_state(t, now).as_str().to_owned(),
    }
}

/// Create an enrollment token; the `etk_` secret is in this response only.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "enrollment",
    security(("operator_token" = [])),
    request_body = CreateEnrollmentTokenRequest,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    ApiJson(req): ApiJson<CreateEnrollmentTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedEnrollmentToken>)> {
    let created = create(&state, ip, &op, &req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates an enrollment token, audited by its prefix; the secret is in the
/// result only. The API and the console both call this.
pub async fn create(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    req: &CreateEnrollmentTokenRequest,
) -> ApiResult<CreatedEnrollmentToken> {
    op.require(Permission::ManageDevices)?;
    if !(1..=MAX_USES).contains(&req.uses) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            format!("`uses` must be 1-{MAX_USES}"),
        ));
    }
    let ttl = Duration::from_secs(req.ttl_seconds);
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "`ttl_seconds` must be between 60 and 2592000 (30 days)",
        ));
    }
    validate_tags(&req.tags)?;
    let secret = Secret::generate(SecretKind::EnrollmentToken);
    let id = uuid::Uuid::now_v7().to_string();
    let tenant = tenancy::of(op);
    let now = state
        .db()
        .write(async |w| {
            let now = w.now();
            store::enrollment::insert(
                w,
                store::enrollment::NewToken {
                    id: &id,
                    tenant_id: tenant,
                    token_hash: &secret.hash(),
                    token_prefix: &secret.prefix(),
                    uses: i64::from(req.uses),
                    tags: &req.tags,
                    created_by: &op.user_id,
                    now,
                    expires_at: now.plus(ttl),
                },
            )
            .await?;
            w.audit(
                op.event(Action::EnrollmentTokenCreated)
                    .ip(Some(ip.0))
                    .target(format!("enrollment_token:{id}"))
                    .detail("token", secret.prefix())
                    .detail("uses", req.uses)
                    .detail("ttl_seconds", req.ttl_seconds)
                    .detail("tags", req.tags.clone()),
            )
            .await?;
            Ok::<_, ApiError>(now)
        })
        .await?;
    let row = store::enrollment::by_hash(state.db().pool(), &secret.hash())
        .await?
        .ok_or_else(|| ApiError::internal("created token vanished"))?;
    Ok(CreatedEnrollmentToken {
        token: token_view(&row, now),
        secret: SecretString::new(secret.expose()),
    })
}

/// List enrollment tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "enrollment",
    security(("operator_token" = [])),
    responses((status = 200, body = Vec<EnrollmentTokenView>), (status = 403, body = ErrorBody)))]
async fn list_tokens(
    State(state): State<AppState>,
    op: Operator,
) -> ApiResult<Json<Vec<EnrollmentTokenView>>> {
    op.require(Permission::ManageDevices)?;
    let rows = store::enrollment::list(state.db(), tenancy::of(&op)).await?;
    let now = state.now();
    Ok(Json(rows.iter().map(|t| token_view(t, now)).collect()))
}

/// Revoke an enrollment token.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens/{id}/revoke", tag = "enrollment",
    security(("operator_token" = [])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    revoke(&state, ip, &op, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a live enrollment token, audited.
pub async fn revoke(state: &AppState, ip: ClientIp, op: &Operator, id: &str) -> ApiResult<()> {
    op.require(Permission::ManageDevices)?;
    let tenant = tenancy::of(op);
    state
        .db()
        .write(async |w| {
            let now = w.now();
            if !store::enrollment::revoke(w, tenant, id, &op.user_id, now).await? {
                return Err(ApiError::not_found("live enrollment token"));
            }
            w.audit(
                op.event(Action::EnrollmentTokenRevoked)
                    .ip(Some(ip.0))
                    .target(format!("enrollment_token:{id}")),
            )
            .await?;
            Ok(())
        })
        .await
}

/// Enroll a device with an enrollment token (device plane).
#[utoipa::path(post, path = "/api/v1/enroll", tag = "enrollment",
    request_body = EnrollRequest,
    responses(
        (status = 201, body = EnrollResponse),
        (status = 401, description = "invalid_token, token_expired, token_exhausted, token_revoked, invalid_proof", body = ErrorBody),
        (status = 403, description = "device_revoked", body = ErrorBody),
        (status = 409, description = "already_enrolled", body = ErrorBody),
        (status = 422, description = "invalid_identity, invalid_field", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
    ))]
async fn enroll(
    State(state): State<AppState>,
    ip: ClientIp,
    origin: ServerOrigin,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<(StatusCode, Json<EnrollResponse>)> {
    let expected_audience = origin.audience();
    let (device_id, key) = enrollment::enroll(
        state.db(),
        Enrollment {
            token: req.token.expose(),
            identity: &req.identity,
            name: &req.name,
            hostname: &req.hostname,
            os: &req.os,
            issued_at: req.issued_at,
            proof: req.proof.as_deref(),
            audience: req.audience.as_deref(),
            expected_audience: &expected_audience,
            ip: ip.0,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            device_id,
            device_key: SecretString::new(key.expose()),
        }),
    ))
}
