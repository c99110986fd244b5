//! Login, logout, who-am-I and password change.

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::Json;
use tessera_core::api::{
    ChangePasswordRequest, ChangePasswordResponse, LoginRequest, LoginResponse, SecretString,
    WhoAmI,
};
use tessera_core::password;
use tessera_core::secret::{Secret, SecretKind};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ClientIp};
use super::users::user_view;
use crate::audit::{Action, Actor, AuditEvent};
use crate::auth::lockout::FailureOutcome;
use crate::auth::{hash_password, ratelimit, verify_password, Operator};
use crate::store;
use crate::{tenancy, AppState};

pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let login = OpenApiRouter::new()
        .routes(routes!(login))
        .route_layer(from_fn_with_state(
            (state.clone(), state.limiters().login.clone()),
            ratelimit::enforce,
        ));
    let password = OpenApiRouter::new()
        .routes(routes!(change_password))
        .route_layer(from_fn_with_state(
            (state.clone(), state.limiters().password.clone()),
            ratelimit::enforce,
        ));
    OpenApiRouter::new()
        .merge(login)
        .merge(password)
        .routes(routes!(logout))
        .routes(routes!(whoami))
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("invalid_credentials", "username or password is incorrect")
}

fn locked_out(remaining: std::time::Duration) -> ApiError {
    ApiError::too_many_requests(
        "locked_out",
        "too many failed attempts from this address; try again later",
        remaining,
    )
}

/// Counts a failed password check from `ip` toward its lockout, and records
/// the lockout when this failure triggers one.
async fn count_failure(state: &AppState, tx: &mut store::Tx, ip: ClientIp) -> ApiResult<()> {
    if let FailureOutcome::LockedOut { until } =
        state.login_lockout().record_failure(&ip.0, state.now())
    {
        state
            .audit(
                tx,
                AuditEvent::new(
                    tenancy::for_anonymous(),
                    Actor::Anonymous,
                    Action::LockoutTriggered,
                )
                .ip(Some(ip.0))
                .detail("until", until.to_rfc3339()),
            )
            .await?;
    }
    Ok(())
}

/// Log in with username and password; returns an operator token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, description = "invalid_credentials, account_disabled", body = ErrorBody),
        (status = 429, description = "rate_limited, locked_out", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let now = state.now();
    state
        .login_lockout()
        .check(&ip.0, now)
        .map_err(locked_out)?;
    let tenant = tenancy::for_anonymous();
    if req.username.len() > super::users::MAX_USERNAME_LEN
        || req.password.expose().len() > password::MAX_PASSWORD_LEN * 4
    {
        return Err(ApiError::unprocessable(
            "invalid_field",
            "username or password too long",
        ));
    }
    let user = store::users::by_username(state.db().pool(), tenant, &req.username).await?;
    let ok = verify_password(
        user.as_ref().map(|u| u.password_hash.clone()),
        Zeroizing::new(req.password.expose().to_owned()),
    )
    .await;

    let mut tx = state.db().begin_write().await?;
    let user = match user {
        Some(u) if ok && u.disabled_at.is_none() => u,
        found => {
            let (reason, target) = match &found {
                None => ("unknown_user", None),
                Some(u) if ok => ("account_disabled", Some(u)),
                Some(u) => ("wrong_password", Some(u)),
            };
            let mut event = AuditEvent::new(tenant, Actor::Anonymous, Action::LoginFailed)
                .ip(Some(ip.0))
                .detail("reason", reason);
            // The attempted name is recorded only when it is a real account:
            // a password typed into the username box must not be kept.
            if let Some(u) = target {
                event = event
                    .target(format!("user:{}", u.id))
                    .detail("username", u.username.clone());
            }
            state.audit(&mut tx, event).await?;
            if reason != "account_disabled" {
                count_failure(&state, &mut tx, ip).await?;
            }
            tx.commit().await?;
            return Err(if reason == "account_disabled" {
                ApiError::unauthorized("account_disabled", "this account is disabled")
            } else {
                invalid_credentials()
            });
        }
    };

    let token = Secret::generate(SecretKind::OperatorToken);
    let session_id = uuid::Uuid::now_v7().to_string();
    let expires_at = now.plus(state.config().session_ttl);
    let ip_text = ip.0.to_string();
    store::sessions::insert(
        &mut tx,
        store::sessions::NewSession {
            id: &session_id,
            tenant_id: &user.tenant_id,
            user_id: &user.id,
            token_hash: &token.hash(),
            token_prefix: &token.prefix(),
            source_ip: Some(&ip_text),
            now,
            expires_at,
        },
    )
    .await?;
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &user.tenant_id,
                Actor::User(user.id.clone()),
                Action::LoginSucceeded,
            )
            .ip(Some(ip.0))
            .target(format!("session:{session_id}"))
            .detail("username", user.username.clone()),
        )
        .await?;
    tx.commit().await?;
    Ok(Json(LoginResponse {
        token: SecretString::new(token.expose()),
        expires_at: expires_at.to_rfc3339(),
        user: user_view(&user),
    }))
}

/// End this login session at once, on every server sharing the database.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("operator_token" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
) -> ApiResult<StatusCode> {
    let mut tx = state.db().begin_write().await?;
    if store::sessions::revoke(&mut tx, &op.session_id, "logout", state.now()).await? {
        state
            .audit(
                &mut tx,
                AuditEvent::new(
                    &op.tenant_id,
                    Actor::User(op.user_id.clone()),
                    Action::Logout,
                )
                .ip(Some(ip.0))
                .target(format!("session:{}", op.session_id)),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The authenticated operator and what they may do.
#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth",
    security(("operator_token" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn whoami(op: Operator) -> Json<WhoAmI> {
    Json(WhoAmI {
        permissions: op.role.permissions().to_vec(),
        user_id: op.user_id,
        username: op.username,
        role: op.role,
        tenant_id: op.tenant_id,
        session_id: op.session_id,
    })
}

/// Change your own password. Ends every other login session of yours.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth",
    security(("operator_token" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, body = ChangePasswordResponse),
        (status = 401, description = "invalid_credentials", body = ErrorBody),
        (status = 422, description = "weak_password", body = ErrorBody),
        (status = 429, description = "rate_limited, locked_out", body = ErrorBody),
    ))]
async fn change_password(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> ApiResult<Json<ChangePasswordResponse>> {
    state
        .login_lockout()
        .check(&ip.0, state.now())
        .map_err(locked_out)?;
    password::check_policy(req.new_password.expose())
        .map_err(|e| ApiError::unprocessable("weak_password", e.to_string()))?;
    let user = store::users::by_id(state.db().pool(), &op.tenant_id, &op.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let ok = verify_password(
        Some(user.password_hash.clone()),
        Zeroizing::new(req.current_password.expose().to_owned()),
    )
    .await;
    if !ok {
        let mut tx = state.db().begin_write().await?;
        count_failure(&state, &mut tx, ip).await?;
        tx.commit().await?;
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "the current password is incorrect",
        ));
    }
    let hash = hash_password(Zeroizing::new(req.new_password.expose().to_owned())).await;
    let now = state.now();
    let mut tx = state.db().begin_write().await?;
    store::users::set_password(&mut tx, &op.tenant_id, &op.user_id, &hash, now).await?;
    let revoked = store::sessions::revoke_all_of_user(
        &mut tx,
        &op.user_id,
        Some(&op.session_id),
        "password_changed",
        now,
    )
    .await?;
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &op.tenant_id,
                Actor::User(op.user_id.clone()),
                Action::PasswordChanged,
            )
            .ip(Some(ip.0))
            .target(format!("user:{}", op.user_id))
            .detail("revoked_sessions", revoked),
        )
        .await?;
    tx.commit().await?;
    Ok(Json(ChangePasswordResponse {
        revoked_sessions: revoked,
    }))
}
