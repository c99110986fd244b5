//! Reading the audit log, its signed checkpoints and the node keys that
//! verify them, and the server's own verification of both.
// utoipa's `#[utoipa::path(params(…))]` expands into code that names the
// params type by its full path, outside any item an allow could sit on.
#![allow(unused_qualifications)]

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tessera_core::api::{
    AuditCheckpointPage, AuditCheckpointView, AuditEntryView, AuditPage, AuditVerifyReport,
    NodeKeyView,
};
use tessera_core::audit::Checkpoint;
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
use crate::{checkpoint, store, tenancy, AppState};

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .routes(routes!(list_checkpoints, create_checkpoint))
        .routes(routes!(list_node_keys))
        .routes(routes!(verify_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action, e.g. `login_failed`.
    action: Option<String>,
    /// Only this actor, e.g. `user:<id>` or `ip:203.0.113.9`.
    actor: Option<String>,
    /// Only rows about this target, e.g. `device:<id>` or `session:<id>`.
    target: Option<String>,
    /// Only rows at or after this time: RFC 3339 in UTC (`Z`), 1970 or
    /// later.
    #[param(format = DateTime, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?Z$")]
    since: Option<String>,
    /// Only rows before this time: RFC 3339 in UTC (`Z`), 1970 or later.
    #[param(format = DateTime, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?Z$")]
    until: Option<String>,
    /// Only rows after this sequence number (the paging cursor).
    after: Option<i64>,
    /// Only rows before this sequence number (the paging cursor when
    /// `order=newest`).
    before: Option<i64>,
    /// `oldest` (default) or `newest` first.
    #[param(pattern = "^(oldest|newest)$")]
    order: Option<String>,
    /// Page size, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Page size of `limit`, or the default; refused outside 1–1000.
fn page_size(limit: Option<i64>) -> ApiResult<i64> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("`limit` must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(limit)
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

/// Audit rows, oldest first (or newest first with `order=newest`),
/// filtered and paged by sequence number.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    security(("operator_token" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_audit(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    op.require(Permission::AuditRead)?;
    let limit = page_size(q.limit)?;
    let newest_first = match q.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "`order` must be `oldest` or `newest`",
            ))
        }
    };
    let filter = Filter {
        tenant_id: Some(tenancy::of(&op).to_owned()),
        action: q.action,
        actor: q.actor,
        target: q.target,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
        after_seq: q.after,
        before_seq: q.before,
        newest_first,
        limit,
    };
    let rows = store::audit::list(state.db(), &filter).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.content.seq))
        .flatten();
    let (next_after, next_before) = if newest_first {
        (None, next)
    } else {
        (next, None)
    };
    Ok(Json(AuditPage {
        entries: rows.iter().map(entry_view).collect(),
        next_after,
        next_before,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckpointQuery {
    /// Only checkpoints of rows after this sequence number (the cursor).
    after: Option<i64>,
    /// With `after`: also the checkpoints of row `after` by keys whose id
    /// sorts after this one (the cursor is the pair).
    after_kid: Option<String>,
    /// Page size, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

pub fn checkpoint_view(c: &Checkpoint) -> AuditCheckpointView {
    AuditCheckpointView {
        seq: c.seq,
        hash: hex(&c.hash),
        signed_at: c.signed_at.to_rfc3339(),
        kid: c.kid.clone(),
        signature: hex(&c.signature),
    }
}

/// Signed checkpoints of the audit chain, by row and key, paged by
/// `(after, after_kid)`.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit",
    security(("operator_token" = [])),
    params(CheckpointQuery),
    responses((status = 200, body = AuditCheckpointPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_checkpoints(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<CheckpointQuery>,
) -> ApiResult<Json<AuditCheckpointPage>> {
    op.require(Permission::AuditRead)?;
    let limit = page_size(q.limit)?;
    let list = store::checkpoints::list(
        state.db(),
        q.after.unwrap_or(0),
        q.after_kid.as_deref(),
        limit,
    )
    .await?;
    // The cursor is (seq, kid): two nodes' checkpoints of one row may
    // straddle a page end, and the second is on the next page.
    let next = (list.len() as i64 == limit).then(|| list.last()).flatten();
    Ok(Json(AuditCheckpointPage {
        checkpoints: list.iter().map(checkpoint_view).collect(),
        next_after: next.map(|c| c.seq),
        next_after_kid: next.map(|c| c.kid.clone()),
    }))
}

/// Signs the chain head now, unless a checkpoint already covers it, and
/// returns the checkpoint that covers it (none while the log is empty).
/// `tessera ctl audit export` calls this so its file ends at a signed row.
#[utoipa::path(post, path = "/api/v1/audit/checkpoints", tag = "audit",
    security(("operator_token" = [])),
    responses((status = 200, body = Option<AuditCheckpointView>),
        (status = 409, description = "audit_log_rewritten: the log no longer holds the head \
            this node signed last; it signs nothing until that is resolved", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_checkpoint(
    State(state): State<AppState>,
    op: Operator,
) -> ApiResult<Json<Option<AuditCheckpointView>>> {
    op.require(Permission::AuditRead)?;
    let c = checkpoint::write(&state, checkpoint::When::Uncovered)
        .await
        .map_err(|e| match e {
            checkpoint::WriteError::Store(e) => ApiError::from(e),
            checkpoint::WriteError::Refused(why) => {
                ApiError::conflict(ErrorCode::AuditLogRewritten, why)
            }
        })?;
    Ok(Json(c.as_ref().map(checkpoint_view)))
}

/// Every node's public key (`node_keys`), which verify the checkpoints.
/// Keep a copy from a time you trust: a verifier that takes the keys from
/// a database someone rewrote can be fooled by a key they added.
#[utoipa::path(get, path = "/api/v1/audit/keys", tag = "audit",
    security(("operator_token" = [])),
    responses((status = 200, body = Vec<NodeKeyView>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_node_keys(
    State(state): State<AppState>,
    op: Operator,
) -> ApiResult<Json<Vec<NodeKeyView>>> {
    op.require(Permission::AuditRead)?;
    let keys = store::checkpoints::node_keys(&mut *state.db().pool().acquire().await?).await?;
    Ok(Json(
        keys.iter()
            .map(|k| NodeKeyView {
                kid: k.kid.clone(),
                public_key: hex(&k.public_key),
                created_at: k.created_at.to_rfc3339(),
            })
            .collect(),
    ))
}

/// The server walks the whole chain and every checkpoint: links, hashes,
/// signatures (against `node_keys`), each checkpoint's row still carrying
/// the signed hash, and no old row left unsigned. Answers 200 either way;
/// `ok` says which.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    security(("operator_token" = [])),
    responses((status = 200, body = AuditVerifyReport),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn verify_audit(
    State(state): State<AppState>,
    op: Operator,
) -> ApiResult<Json<AuditVerifyReport>> {
    op.require(Permission::AuditRead)?;
    let r = checkpoint::verify(&state).await?;
    Ok(Json(AuditVerifyReport {
        ok: r.problem.is_none(),
        problem: r.problem,
        rows: r.rows,
        head_seq: r.head_seq,
        head_hash: hex(&r.head),
        checkpoints: r.checkpoints,
        last_checkpoint: r.last_checkpoint.as_ref().map(checkpoint_view),
    }))
}
