//! The tenant's session policy.

use axum::extract::State;
use axum::Json;
use tessera_core::api::Policy;
use tessera_core::roles::Permission;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ClientIp};
use crate::auth::Operator;
use crate::store::audit::Action;
use crate::{store, tenancy, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_policy, set_policy))
}

/// The session policy.
#[utoipa::path(get, path = "/api/v1/policy", tag = "policy",
    security(("operator_token" = [])),
    responses((status = 200, body = Policy), (status = 403, body = ErrorBody)))]
async fn get_policy(State(state): State<AppState>, op: Operator) -> ApiResult<Json<Policy>> {
    op.require(Permission::View)?;
    let on =
        store::tenants::require_consent_for_managed(state.db().pool(), tenancy::of(&op)).await?;
    Ok(Json(Policy {
        require_consent_for_managed: on,
    }))
}

/// Change the session policy (admins).
#[utoipa::path(put, path = "/api/v1/policy", tag = "policy",
    security(("operator_token" = [])),
    request_body = Policy,
    responses((status = 200, body = Policy), (status = 403, body = ErrorBody)))]
async fn set_policy(
    State(state): State<AppState>,
    ip: ClientIp,
    op: Operator,
    ApiJson(req): ApiJson<Policy>,
) -> ApiResult<Json<Policy>> {
    op.require(Permission::ManageUsers)?;
    let tenant = tenancy::of(&op);
    state
        .db()
        .write(async |w| {
            store::tenants::set_require_consent_for_managed(
                w,
                tenant,
                req.require_consent_for_managed,
            )
            .await?;
            w.audit(op.event(Action::PolicyChanged).ip(Some(ip.0)).detail(
                "require_consent_for_managed",
                req.require_consent_for_managed,
            ))
            .await?;
            Ok::<_, store::StoreError>(())
        })
        .await?;
    Ok(Json(req))
}
