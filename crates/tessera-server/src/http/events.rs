//! Event ingestion from devices, and reading events for operators.
// utoipa's `#[utoipa::path(params(…))]` expands into code that names the
// params type by its full path, outside any item an allow could sit on.
#![allow(unused_qualifications)]

use axum::extract::{DefaultBodyLimit, State};
use axum::Json;
use serde::Deserialize;
use tessera_core::api::{EventBatch, EventPage, EventView, IngestResponse};
use tessera_core::events::{bucket, event_id, normalise_subject, validate_kind, DEFAULT_BUCKET_MS};
use tessera_core::identity::DeviceId;
use tessera_core::roles::Permission;
use tessera_core::ErrorCode;
use tessera_core::Timestamp;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use crate::auth::device::DevicePrincipal;
use crate::auth::Operator;
use crate::store::events::{Filter, NewEvent};
use crate::{store, tenancy, AppState};

pub const MAX_BATCH_EVENTS: usize = 1000;
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

pub fn routes() -> OpenApiRouter<AppState> {
    let ingest = OpenApiRouter::new()
        .routes(routes!(ingest))
        .route_layer(DefaultBodyLimit::max(MAX_BATCH_BYTES));
    OpenApiRouter::new()
        .merge(ingest)
        .routes(routes!(list_events))
}

/// Validates a whole batch; the first bad event rejects all of it.
pub fn prepare(
    batch: &EventBatch,
    tenant: &str,
    owner: &str,
    now: Timestamp,
) -> Result<Vec<NewEvent>, ApiError> {
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BatchTooLarge,
            format!("at most {MAX_BATCH_EVENTS} events per batch"),
        ));
    }
    let horizon = now.plus(std::time::Duration::from_secs(24 * 3600));
    batch
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let bad = |what: String| {
                ApiError::unprocessable(ErrorCode::InvalidEvent, format!("events[{i}]: {what}"))
            };
            validate_kind(&e.kind).map_err(|err| bad(err.to_string()))?;
            let subject = normalise_subject(&e.subject).map_err(|err| bad(err.to_string()))?;
            let occurred_at = Timestamp::parse_rfc3339(&e.occurred_at)
                .ok_or_else(|| bad("occurred_at must be an RFC 3339 time".into()))?;
            if occurred_at > horizon {
                return Err(bad("occurred_at is more than a day in the future".into()));
            }
            if !e.attributes.is_object() {
                return Err(bad("attributes must be a JSON object".into()));
            }
            let attributes = tessera_core::audit::canonical_json(&e.attributes);
            if attributes.len() > MAX_ATTRIBUTES_BYTES {
                return Err(bad(format!(
                    "attributes exceed {MAX_ATTRIBUTES_BYTES} bytes"
                )));
            }
            Ok(NewEvent {
                event_id: event_id(
                    tenant,
                    owner,
                    &e.kind,
                    &subject,
                    bucket(occurred_at, DEFAULT_BUCKET_MS),
                ),
                kind: e.kind.clone(),
                subject,
                occurred_at,
                attributes,
            })
        })
        .collect()
}

/// Push a batch of events (device plane). Each event is stored once per
/// canonical id; see `tessera_core::events` for the derivation. A batch is
/// stored whole or not at all, so a device that got no answer, or `503
/// storage_unavailable`, sends the same batch again: events already stored
/// come back as `duplicates`.
#[utoipa::path(post, path = "/api/v1/events", tag = "events",
    security(("device_key" = [])),
    request_body = EventBatch,
    responses(
        (status = 200, body = IngestResponse),
        (status = 401, description = "device_revoked, key_revoked, invalid_token", body = ErrorBody),
        (status = 413, description = "batch_too_large, body_too_large", body = ErrorBody),
        (status = 422, description = "invalid_event", body = ErrorBody),
    ))]
async fn ingest(
    State(state): State<AppState>,
    device: DevicePrincipal,
    ApiJson(batch): ApiJson<EventBatch>,
) -> ApiResult<Json<IngestResponse>> {
    let now = state.now();
    let events = prepare(&batch, &device.tenant_id, &device.owner_user_id, now)?;
    let mut tx = state.db().begin_write().await?;
    // Re-check the key inside the transaction, taking its row lock: a batch
    // that arrives after a revocation is refused whole.
    if !store::devices::hold_live_key(&mut tx, &device.device_id, &device.key_id, now).await? {
        tx.rollback().await?;
        return Err(ApiError::unauthorized(
            ErrorCode::DeviceRevoked,
            "this device or key has been revoked",
        ));
    }
    let accepted = store::events::insert_batch(
        &mut tx,
        &device.tenant_id,
        &device.owner_user_id,
        &device.device_id,
        &events,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(IngestResponse {
        accepted,
        duplicates: events.len() as u64 - accepted,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this kind.
    kind: Option<String>,
    /// Only from this device: its id, grouped in fours or not, any case.
    #[param(pattern = r"^([A-Za-z2-7]{4}-?){12}[A-Za-z2-7]{3}[AQaq]$")]
    device: Option<String>,
    /// Only events that occurred at or after this time: RFC 3339 in UTC
    /// (`Z`), 1970 or later.
    #[param(format = DateTime, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?Z$")]
    since: Option<String>,
    /// Paging cursor from `next_after`: `<milliseconds>:<event id>`.
    #[param(pattern = r"^-?[0-9]{1,18}:")]
    after: Option<String>,
    /// Page size, 1–1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Events, in the order they were received.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    security(("operator_token" = [])),
    params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    op: Operator,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<EventPage>> {
    op.require(Permission::View)?;
    let invalid = |m: &str| ApiError::bad_request(ErrorCode::InvalidQuery, m.to_owned());
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid("`limit` must be between 1 and 1000"));
    }
    let since = q
        .since
        .as_deref()
        .map(|s| {
            Timestamp::parse_rfc3339(s).ok_or_else(|| invalid("`since` must be an RFC 3339 time"))
        })
        .transpose()?;
    let after = q
        .after
        .as_deref()
        .map(|a| {
            a.split_once(':')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| invalid("`after` must be a cursor from `next_after`"))
        })
        .transpose()?;
    let device_id = q
        .device
        .as_deref()
        .map(|d| {
            DeviceId::parse(d)
                .map(|d| d.to_string())
                .map_err(|_| invalid("`device` is not a device id"))
        })
        .transpose()?;
    let rows = store::events::list(
        state.db(),
        tenancy::of(&op),
        &Filter {
            kind: q.kind,
            device_id,
            since,
            limit,
            after,
        },
    )
    .await?;
    let next_after = (rows.len() as i64 == limit)
        .then(|| {
            rows.last()
                .map(|r| format!("{}:{}", r.received_at.as_millis(), r.event_id))
        })
        .flatten();
    Ok(Json(EventPage {
        events: rows
            .iter()
            .map(|r| EventView {
                event_id: r.event_id.clone(),
                kind: r.kind.clone(),
                subject: r.subject.clone(),
                occurred_at: r.occurred_at.to_rfc3339(),
                attributes: serde_json::from_str(&r.attributes).unwrap_or_default(),
                device_id: r.device_id.clone(),
                owner_user_id: r.owner_user_id.clone(),
                received_at: r.received_at.to_rfc3339(),
            })
            .collect(),
        next_after,
    }))
}
