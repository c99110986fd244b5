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
use tessera_core::Timestamp;

use super::{
    csrf_field, empty, fail, html_response, page, require_post, require_signed, url_escape, when,
    Nav, Signed,
};
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
    before: Option<i64>,
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
    let q = q.map(|Query(q)| q).unwrap_or_default();
    render(&state, &s, &q, None).await
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
    let filter = Filter {
        tenant_id: Some(tenancy::of(&s.op).to_owned()),
        action: opt(&q.action),
        actor: opt(&q.actor),
        target: opt(&q.target),
        since: parse_day(&q.since),
        until: parse_day(&q.until),
        after_seq: None,
        before_seq: q.before,
        newest_first: true,
        limit: PAGE,
    };
    let rows = match store::audit::list(state.db(), &filter).await {
        Ok(r) => r,
        Err(e) => return fail(s, Nav::Audit, e),
    };
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.content.seq))
        .flatten();
    let next_url = next.map(|seq| {
        format!(
            "/audit?action={}&actor={}&target={}&since={}&until={}&before={seq}",
            url_escape(&q.action),
            url_escape(&q.actor),
            url_escape(&q.target),
            url_escape(&q.since),
            url_escape(&q.until)
        )
    });
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
        @if rows.is_empty() {
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
            @if let Some(u) = next_url { nav.pager aria-label="Pages" { a href=(u) { "Older rows →" } } }
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
