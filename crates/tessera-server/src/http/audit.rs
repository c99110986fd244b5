//! Reading the audit log.
// utoipa's `#[utoipa::path(params(…))]` expands into code that names the
// params type by its full path, outside any item an allow could sit on.
#![allow(unused_qualifications)]

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tessera_core::api::{AuditEntryView, AuditPage};
use tessera_core::roles::Permission;
use tessera_core::secret::hex;
use tessera_core::ErrorCode;
use tessera_core::Timestamp;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use crate::auth::Operator;
use crate::store::audit::{AuditRow, Filter};
use crate::{store, tenancy, AppState};

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action, e.g. `login_failed`.
    action: Option<String>,
    /// Only this actor, e.g. `user:<id>` or `ip:203.0.113.9`.
    actor: Option<String>,
    /// Only rows at or after this time (RFC 3339).
    since: Option<String>,
    /// Only rows before this time (RFC 3339).
    until: Option<String>,
    /// Only rows after this sequence number (the paging cursor).
    after: Option<i64>,
    /// Page size, 1–1000; default 100.
    limit: Option<i64>,
}

fn parse_time(name: &str, v: Option<&str>) -> ApiResult<Option<Timestamp>> {
    v.map(|s| {
        Timestamp::parse_rfc3339(s).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("`{name}` must be an RFC 3339 time"),
            )
        })
    })
    .transpose()
}

pub fn entry_view(r: &AuditRow) -> AuditEntryView {
    AuditEntryView {
        seq: r.content.seq,
        occurred_at: r.content.occurred_at.to_rfc3339(),
        tenant_id: r.content.tenant_id.clone(),
        actor: r.content.actor.clone(),
        action: r.content.action.clone(),
        target: r.content.target.clone(),
        source_ip: r.content.source_ip.clone(),
        details: serde_json::from_str(&r.content.details).unwrap_or(serde_json::Value::Null),
        prev_hash: hex(&r.prev_hash),
        hash: hex(&r.hash),
    }
}

/// Audit rows, oldest first, filtered and paged by sequence number.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    security(("operator_token" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_audit(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    op.require(Permission::AuditRead)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("`limit` must be between 1 and {MAX_PAGE}"),
        ));
    }
    let filter = Filter {
        tenant_id: Some(tenancy::of(&op).to_owned()),
        action: q.action,
        actor: q.actor,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
        after_seq: q.after,
        limit,
    };
    let rows = store::audit::list(state.db(), &filter).await?;
    let next_after = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.content.seq))
        .flatten();
    Ok(Json(AuditPage {
        entries: rows.iter().map(entry_view).collect(),
        next_after,
    }))
}
