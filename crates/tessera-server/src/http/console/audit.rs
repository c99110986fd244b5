//! The audit log: filtered by action, actor, target and time, newest first,
//! paged by sequence number; and verifying the chain on demand.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tessera_core::roles::Permission;
use tessera_core::secret::hex;
use tessera_core::{ErrorCode, Timestamp};

use super::{
    csrf_field, empty, fail, html_response, page, require_post, require_signed, url_escape, when,
    Nav, Signed,
};
use crate::http::error::ApiError;
use crate::store::audit::Filter;
use crate::{checkpoint, store, tenancy, AppState};

pub const PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    target: String,
    /// `YYYY-MM-DD` (UTC), from an `<input type=date>`.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Rows older than this sequence number (the next page).
    #[serde(default)]
    before: String,
    /// Rows newer than this sequence number (the previous page).
    #[serde(default)]
    after: String,
}

/// The page's filters, checked: a date or cursor that does not parse is
/// refused with `invalid_query`, never silently dropped (which would show
/// rows the operator did not ask for).
fn filter_of(q: &AuditQuery, tenant: &str) -> Result<Filter, ApiError> {
    let bad = |m: &str| ApiError::bad_request(ErrorCode::InvalidQuery, m.to_owned());
    let day = |v: &str, name: &str| -> Result<Option<Timestamp>, ApiError> {
        match v.trim() {
            "" => Ok(None),
            d => parse_day(d).map(Some).ok_or_else(|| {
                bad(&format!(
                    "{name} must be a date (YYYY-MM-DD) or an RFC 3339 time"
                ))
            }),
        }
    };
    let seq = |v: &str, name: &str| -> Result<Option<i64>, ApiError> {
        match v.trim() {
            "" => Ok(None),
            n => n
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| {
                    bad(&format!(
                        "{name} must be a row number (from the page's links)"
                    ))
                }),
        }
    };
    let (before_seq, after_seq) = (seq(&q.before, "before")?, seq(&q.after, "after")?);
    if before_seq.is_some() && after_seq.is_some() {
        return Err(bad("give either before or after, not both"));
    }
    for (v, name) in [
        (&q.action, "action"),
        (&q.actor, "actor"),
        (&q.target, "target"),
    ] {
        if v.chars().count() > 200 {
            return Err(bad(&format!("{name} is longer than 200 characters")));
        }
    }
    Ok(Filter {
        tenant_id: Some(tenant.to_owned()),
        action: opt(&q.action),
        actor: opt(&q.actor),
        target: opt(&q.target),
        since: day(&q.since, "since")?,
        until: day(&q.until, "until")?,
        after_seq,
        before_seq,
        // Paging back (`after`) reads oldest first and turns the page round.
        newest_first: after_seq.is_none(),
        limit: PAGE,
    })
}

/// A date field: midnight UTC of `YYYY-MM-DD`, or a full RFC 3339 time.
pub fn parse_day(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    Timestamp::parse_rfc3339(s).or_else(|| Timestamp::parse_rfc3339(&format!("{s}T00:00:00Z")))
}

fn opt(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// `GET /audit`
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match q {
        Ok(Query(q)) => render(&state, &s, &q, None).await,
        Err(e) => fail(
            &s,
            Nav::Audit,
            ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()),
        ),
    }
}

async fn render(
    state: &AppState,
    s: &Signed,
    q: &AuditQuery,
    verified: Option<checkpoint::Report>,
) -> Response {
    if let Err(e) = s.op.require(Permission::AuditRead) {
        return fail(s, Nav::Audit, e);
    }
    let filter = match filter_of(q, tenancy::of(&s.op)) {
        Ok(f) => f,
        Err(e) => return fail(s, Nav::Audit, e),
    };
    let mut rows = match store::audit::list(state.db(), &filter).await {
        Ok(r) => r,
        Err(e) => return fail(s, Nav::Audit, e),
    };
    if !filter.newest_first {
        rows.reverse();
    }
    let url = |cursor: &str| {
        format!(
            "/audit?action={}&actor={}&target={}&since={}&until={}&{cursor}",
            url_escape(&q.action),
            url_escape(&q.actor),
            url_escape(&q.target),
            url_escape(&q.since),
            url_escape(&q.until)
        )
    };
    // Older rows exist past a full page read newest first, or whenever we
    // paged back; newer ones whenever a cursor was given.
    let full = rows.len() as i64 == PAGE;
    let older = (full || filter.after_seq.is_some())
        .then(|| {
            rows.last()
                .map(|r| url(&format!("before={}", r.content.seq)))
        })
        .flatten();
    let newer = (filter.before_seq.is_some() || (filter.after_seq.is_some() && full))
        .then(|| {
            rows.first()
                .map(|r| url(&format!("after={}", r.content.seq)))
        })
        .flatten();
    let paged = filter.before_seq.is_some() || filter.after_seq.is_some();
    let body = html! {
        h1 { "Audit log" }
        @if let Some(r) = &verified {
            @if let Some(problem) = &r.problem {
                p.error role="alert" { "The chain does NOT verify: " (problem) }
            } @else {
                p.ok role="status" { "The chain verifies: " (r.rows) " rows, head #" (r.head_seq) " ("
                    code { (hex(&r.head).get(..16).unwrap_or("")) "…" } "), " (r.checkpoints) " signed checkpoints." }
            }
        }
        form method="post" action="/audit/verify" {
            (csrf_field(s))
            button type="submit" { "Verify chain" }
        }
        form.filters method="get" action="/audit" {
            label { "Action " input name="action" value=(q.action) placeholder="e.g. device_revoked"; }
            label { "Actor " input name="actor" value=(q.actor) placeholder="user:<id>"; }
            label { "Target " input name="target" value=(q.target) placeholder="device:<id>"; }
            label { "From (UTC) " input type="date" name="since" value=(q.since); }
            label { "Before (UTC) " input type="date" name="until" value=(q.until); }
            button type="submit" { "Filter" }
            " " a href="/audit" { "Clear" }
        }
        @if rows.is_empty() && paged {
            (empty("No more rows this way.", html! { p { a href=(url("")) { "Back to the newest rows" } } }))
        } @else if rows.is_empty() {
            (empty("No audit rows match.", html! { p { a href="/audit" { "Show all rows" } } }))
        } @else {
            div.scroll { table.audit {
                thead { tr { th { "#" } th { "When" } th { "Action" } th { "Actor" } th { "Target" } th { "From" } th { "Details" } } }
                tbody { @for r in &rows { tr {
                    td { (r.content.seq) }
                    td { (when(r.content.occurred_at)) }
                    td { code { (r.content.action) } }
                    td { (r.content.actor) }
                    td { (r.content.target.as_deref().unwrap_or("")) }
                    td { (r.content.source_ip.as_deref().unwrap_or("")) }
                    td { code.details { (r.content.details) } }
                } } }
            } }
            @if older.is_some() || newer.is_some() {
                nav.pager aria-label="Pages" {
                    @if let Some(u) = &newer { a rel="prev" href=(u) { "← Newer rows" } }
                    @if let Some(u) = &older { a rel="next" href=(u) { "Older rows →" } }
                }
            }
        }
    };
    html_response(StatusCode::OK, page(s, Nav::Audit, "Audit", body))
}

/// `POST /audit/verify`: walks the chain and checkpoints, and shows the
/// result above the newest rows.
pub async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, _) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(e) = s.op.require(Permission::AuditRead) {
        return fail(&s, Nav::Audit, e);
    }
    match checkpoint::verify(&state).await {
        Ok(r) => render(&state, &s, &AuditQuery::default(), Some(r)).await,
        Err(e) => fail(&s, Nav::Audit, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_utc_midnight() {
        let t = parse_day("2026-01-02").expect("a date");
        assert_eq!(t.to_rfc3339(), "2026-01-02T00:00:00.000Z");
        assert!(parse_day("").is_none());
        assert!(parse_day("yesterday").is_none());
    }
}
