//! Login, logout, who-am-I and password change.

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::Json;
use tessera_core::api::{
    ChangePasswordRequest, ChangePasswordResponse, LoginRequest, LoginResponse, SecretString,
    UserView, WhoAmI,
};
use tessera_core::password;
use tessera_core::ErrorCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ClientIp};
use super::ratelimit;
use crate::auth::lockout::{self, Account};
use crate::auth::{hash_password, login, verify_password, Operator};
use crate::store;
use crate::store::audit::Action;
use crate::AppState;

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
    let done = login::login(
        login::Logins::of(&state),
        ip.0,
        &req.username,
        req.password.expose(),
    )
    .await?;
    Ok(Json(LoginResponse {
        token: SecretString::new(done.token.expose()),
        expires_at: done.expires_at.to_rfc3339(),
        user: UserView::from(&done.user),
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
    login::logout(state.db(), ip.0, &op.tenant_id, &op.user_id, &op.session_id).await?;
    crate::cluster::orders::login_ended(&state, &op.session_id).await;
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
    let revoked = change_own_password(
        &state,
        ip,
        &op,
        req.current_password.expose(),
        req.new_password.expose(),
    )
    .await?;
    Ok(Json(ChangePasswordResponse {
        revoked_sessions: revoked,
    }))
}

/// Changes `op`'s own password after checking the current one (counted
/// toward lockout like a login), and ends their other login sessions.
/// Returns how many were ended. The API and the console both call this.
pub async fn change_own_password(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    current: &str,
    new: &str,
) -> ApiResult<u64> {
    password::check_policy(new)
        .map_err(|e| ApiError::unprocessable(ErrorCode::WeakPassword, e.to_string()))?;
    let user = store::users::by_id(state.db().pool(), &op.tenant_id, &op.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let keys = login::lock_keys(Account::User(&op.user_id), ip.0);
    login::admit_password_check(state.db(), ip.0, &keys).await?;
    let ok = verify_password(
        Some(user.password_hash.clone()),
        Zeroizing::new(current.to_owned()),
    )
    .await;
    if ok {
        lockout::refund(state.db(), &keys).await?;
    } else {
        state
            .db()
            .write(async |w| lockout::confirm_guess(w, ip.0, &keys).await)
            .await?;
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidCredentials,
            "the current password is incorrect",
        ));
    }
    let hash = hash_password(Zeroizing::new(new.to_owned())).await;
    let revoked = state
        .db()
        .write(async |w| {
            let now = w.now();
            store::users::set_password(w, &op.tenant_id, &op.user_id, &hash, now).await?;
            let revoked = store::logins::revoke_all_of_user(
                w,
                &op.user_id,
                Some(&op.session_id),
                "password_changed",
                now,
            )
            .await?;
            w.audit(
                op.event(Action::PasswordChanged)
                    .ip(Some(ip.0))
                    .target(format!("user:{}", op.user_id))
                    .detail("revoked_sessions", revoked),
            )
            .await?;
            Ok::<_, ApiError>(revoked)
        })
        .await?;
    Ok(revoked)
}
