//! Operator accounts: create, list, change role, disable and enable.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use tessera_core::api::{
    CreateUserRequest, CreateUserResponse, SecretString, UpdateUserRequest, UserView,
};
use tessera_core::password;
use tessera_core::roles::{Permission, Role};
use tessera_core::ErrorCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ClientIp};
use crate::auth::{hash_password, Operator};
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::users::UserRow;
use crate::store::{self, StoreError};
use crate::{tenancy, AppState};

pub use crate::auth::login::MAX_USERNAME_LEN;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(update_user))
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        UserView {
            id: u.id.to_string(),
            username: u.username.clone(),
            role: u.role,
            created_at: u.created_at.to_rfc3339(),
            disabled: u.disabled_at.is_some(),
            disabled_at: u.disabled_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// Usernames: 1–64 of `a-z 0-9 . _ @ -`, starting with a letter or digit, and
/// never shaped like a UUID (so a path segment is unambiguously one or the
/// other).
pub fn validate_username(name: &str) -> Result<(), ApiError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b));
    let ok_start = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > MAX_USERNAME_LEN || !ok_chars || !ok_start {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidUsername,
            "usernames are 1-64 characters of a-z, 0-9, '.', '_', '@', '-', starting with a letter or digit",
        ));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidUsername,
            "a username may not look like a user id",
        ));
    }
    Ok(())
}

/// Finds a user by id or by username, inside `tx`.
async fn find(tx: &mut store::Tx, tenant: &str, key: &str) -> ApiResult<UserRow> {
    let found = if uuid::Uuid::parse_str(key).is_ok() {
        store::users::by_id(&mut **tx, tenant, key).await?
    } else {
        store::users::by_username(&mut **tx, tenant, key).await?
    };
    found.ok_or_else(|| ApiError::not_found("user"))
}

/// Create an operator account.
#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    security(("operator_token" = [])),
    request_body = CreateUserRequest,
    responses(
        (status = 201, body = CreateUserResponse),
        (status = 403, body = ErrorBody),
        (status = 409, description = "username_taken", body = ErrorBody),
        (status = 422, description = "invalid_username, weak_password", body = ErrorBody),
    ))]
async fn create_user(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<CreateUserResponse>)> {
    let created = create(&state, ip, &op, &req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates an operator account, audited; a generated password is in the
/// result only. The API and the console both call this.
pub async fn create(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    req: &CreateUserRequest,
) -> ApiResult<CreateUserResponse> {
    op.require(Permission::ManageUsers)?;
    validate_username(&req.username)?;
    let (plain, generated) = match &req.password {
        Some(p) => {
            password::check_policy(p.expose())
                .map_err(|e| ApiError::unprocessable(ErrorCode::WeakPassword, e.to_string()))?;
            (Zeroizing::new(p.expose().to_owned()), false)
        }
        None => (Zeroizing::new(password::generate()), true),
    };
    let hash = hash_password(plain.clone()).await;
    let tenant = tenancy::of(op);
    let id = uuid::Uuid::now_v7().to_string();
    let now = state.now();
    state
        .db()
        .write(async |w| {
            store::users::insert(
                w,
                store::users::NewUser {
                    id: &id,
                    tenant_id: tenant,
                    username: &req.username,
                    password_hash: &hash,
                    role: req.role,
                    now,
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    ApiError::conflict(ErrorCode::UsernameTaken, "that username is taken")
                }
                other => other.into(),
            })?;
            w.audit(
                op.event(Action::UserCreated)
                    .ip(Some(ip.0))
                    .target(format!("user:{id}"))
                    .detail("username", req.username.clone())
                    .detail("role", req.role.as_str()),
            )
            .await?;
            Ok::<_, ApiError>(())
        })
        .await?;
    let user = store::users::by_id(state.db().pool(), tenant, &id)
        .await?
        .ok_or_else(|| ApiError::internal("created user vanished"))?;
    Ok(CreateUserResponse {
        user: UserView::from(&user),
        initial_password: generated.then(|| SecretString::new(plain.as_str())),
    })
}

/// List operator accounts.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    security(("operator_token" = [])),
    responses((status = 200, body = Vec<UserView>), (status = 403, body = ErrorBody)))]
async fn list_users(State(state): State<AppState>, op: Operator) -> ApiResult<Json<Vec<UserView>>> {
    op.require(Permission::ManageUsers)?;
    let users = store::users::list(state.db(), tenancy::of(&op)).await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

/// Change a user's role, or disable or enable the account. `user` is an id
/// or a username. Disabling ends all the user's sessions at once. A role
/// change or disabling also ends the viewer tokens the user minted and has
/// not used, and disconnects the user's open viewers that the new standing
/// no longer allows (`role_changed`, `user_disabled`).
#[utoipa::path(patch, path = "/api/v1/users/{user}", tag = "users",
    security(("operator_token" = [])),
    params(("user" = String, Path, description = "user id or username")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, body = UserView),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "last_admin, cannot_disable_self", body = ErrorBody),
    ))]
async fn update_user(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<UserView>> {
    update(&state, ip, &op, &key, &req)
        .await
        .map(|u| Json(UserView::from(&u)))
}

/// Changes a user's role and/or disables or enables the account, audited,
/// with everything that follows (sessions and viewers ended). The API and
/// the console both call this.
pub async fn update(
    state: &AppState,
    ip: ClientIp,
    op: &Operator,
    key: &str,
    req: &UpdateUserRequest,
) -> ApiResult<UserRow> {
    op.require(Permission::ManageUsers)?;
    if req.role.is_none() && req.disabled.is_none() {
        return Err(ApiError::unprocessable(
            ErrorCode::NothingToChange,
            "give `role` and/or `disabled`",
        ));
    }
    let tenant = tenancy::of(op);
    let user_id = state
        .db()
        .write(async |w| {
            store::tenants::lock(w, tenant).await?;
            // Read after taking the lock, so the checks below see settled state.
            let user = find(w, tenant, key).await?;
            let now = state.now();
            let actor = Actor::User(op.user_id.clone());
            let target = format!("user:{}", user.id);

            let demotes_admin =
                user.role == Role::Admin && req.role.is_some_and(|r| r != Role::Admin);
            let disables = req.disabled == Some(true) && user.disabled_at.is_none();
            if disables && user.id.as_str() == op.user_id {
                return Err(ApiError::conflict(
                    ErrorCode::CannotDisableSelf,
                    "you cannot disable your own account",
                ));
            }
            if (demotes_admin || (disables && user.role == Role::Admin))
                && user.disabled_at.is_none()
                && store::users::count_enabled_admins(w, tenant).await? <= 1
            {
                return Err(ApiError::conflict(
                    ErrorCode::LastAdmin,
                    "this is the last enabled admin; promote another first",
                ));
            }

            if let Some(role) = req.role.filter(|r| *r != user.role) {
                store::users::set_role(w, tenant, user.id.as_str(), role, now).await?;
                store::node_keys::revoke_unused_of_user(w, user.id.as_str()).await?;
                w.audit(
                    AuditEvent::new(tenant, actor.clone(), Action::UserRoleChanged)
                        .ip(Some(ip.0))
                        .target(target.clone())
                        .detail("username", user.username.clone())
                        .detail("from", user.role.as_str())
                        .detail("to", role.as_str()),
                )
                .await?;
            }
            match req.disabled {
                Some(true) if user.disabled_at.is_none() => {
                    store::users::disable(w, tenant, user.id.as_str(), now).await?;
                    store::node_keys::revoke_unused_of_user(w, user.id.as_str()).await?;
                    let ended = store::logins::revoke_all_of_user(
                        w,
                        user.id.as_str(),
                        None,
                        "user_disabled",
                        now,
                    )
                    .await?;
                    w.audit(
                        AuditEvent::new(tenant, actor.clone(), Action::UserDisabled)
                            .ip(Some(ip.0))
                            .target(target.clone())
                            .detail("username", user.username.clone())
                            .detail("revoked_sessions", ended),
                    )
                    .await?;
                }
                Some(false) if user.disabled_at.is_some() => {
                    store::users::enable(w, tenant, user.id.as_str(), now).await?;
                    w.audit(
                        AuditEvent::new(tenant, actor, Action::UserEnabled)
                            .ip(Some(ip.0))
                            .target(target)
                            .detail("username", user.username.clone()),
                    )
                    .await?;
                }
                _ => {}
            }
            Ok::<_, ApiError>(user.id)
        })
        .await?;
    let user = store::users::by_id(state.db().pool(), tenant, user_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    // Open viewers on this node follow the change at once, and on the
    // others as soon as they hear; the session sweep does the same on
    // every node within a heartbeat if the order is lost.
    crate::relay::user_changed(
        state.hub(),
        user.id.as_str(),
        user.role,
        user.disabled_at.is_some(),
    );
    let order = crate::cluster::orders::Order::UserChanged {
        user_id: user.id.to_string(),
        role: user.role,
        disabled: user.disabled_at.is_some(),
    };
    crate::cluster::orders::publish(state.cluster(), order).await;
    // The sessions a disabled operator opened end now, wherever they are
    // relayed (each end is an order to the node relaying it).
    if user.disabled_at.is_some() {
        crate::session::Sessions::of(state)
            .end_of_disabled_users()
            .await?;
    }
    Ok(user)
}
