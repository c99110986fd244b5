//! Support codes: create one (shown once), then watch it go from waiting
//! to awaiting consent to live (or ended, with the reason) without
//! reloading: while any code of yours is in flight, the list refreshes
//! itself every two seconds (htmx).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{html, Markup};
use tessera_core::api::CreateSupportCodeRequest;
use tessera_core::kinds::{SessionState, SupportCodeState};
use tessera_core::roles::Permission;
use tessera_core::Timestamp;

use super::{
    csrf_field, empty, fail, html_response, page, require_post, require_signed, when, Nav, Signed,
};
use crate::http::extract::ClientIp;
use crate::store::sessions::SessionRow;
use crate::store::support_codes::SupportCodeRow;
use crate::{store, tenancy, AppState};

/// How many of one's codes the page lists.
pub const SHOWN: i64 = 20;

/// Where a code stands, for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Waiting,
    Expired,
    Withdrawn,
    AwaitingConsent,
    Live,
    Ended,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Waiting => "waiting for the person to enter it",
            Stage::Expired => "expired unused",
            Stage::Withdrawn => "withdrawn",
            Stage::AwaitingConsent => "awaiting the person's consent",
            Stage::Live => "live",
            Stage::Ended => "ended",
        }
    }

    /// Still changing on its own.
    pub fn in_flight(self) -> bool {
        matches!(self, Stage::Waiting | Stage::AwaitingConsent)
    }
}

/// Pure: a code's stage from its row and its session's, if bound.
pub fn stage(code: &SupportCodeRow, session: Option<&SessionRow>, now: Timestamp) -> Stage {
    match (code.state, session) {
        (_, Some(s)) => match s.state {
            SessionState::Pending => Stage::AwaitingConsent,
            SessionState::Active => Stage::Live,
            SessionState::Ended => Stage::Ended,
        },
        (SupportCodeState::Active, None) if code.expires_at > now => Stage::Waiting,
        (SupportCodeState::Active | SupportCodeState::Expired, None) => Stage::Expired,
        (SupportCodeState::Revoked, None) => Stage::Withdrawn,
        (SupportCodeState::Consumed, None) => Stage::AwaitingConsent,
    }
}

/// `GET /support`
pub async fn show(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    render(&state, &s, &headers, None).await
}

async fn codes(state: &AppState, s: &Signed) -> Result<Markup, store::StoreError> {
    let tenant = tenancy::of(&s.op);
    let rows = store::support_codes::of_creator(state.db(), tenant, &s.op.user_id, SHOWN).await?;
    let now = state.now();
    let mut items = Vec::new();
    for c in &rows {
        let session = match &c.session_id {
            Some(id) => store::sessions::by_id(state.db().pool(), tenant, id).await?,
            None => None,
        };
        items.push((c, stage(c, session.as_ref(), now), session));
    }
    let polling = items.iter().any(|(_, st, _)| st.in_flight());
    Ok(html! {
        div #codes hx-get=[polling.then_some("/support")] hx-trigger=[polling.then_some("every 2s")]
            hx-select=[polling.then_some("#codes")] hx-swap=[polling.then_some("outerHTML")] {
            @if items.is_empty() {
                (empty("You have not created any support codes.", html! {
                    p { "Create one above, then read it to the person at the machine: they run "
                        code { "tessera agent support --server <this server's address>" } " and type it." }
                }))
            } @else {
                div.scroll { table {
                    thead { tr { th { "Created" } th { "Access" } th { "State" } th { "Session" } } }
                    tbody { @for (c, st, session) in &items { tr {
                        td { (when(c.created_at)) }
                        td { (c.access.as_str()) }
                        td { span.stage data-stage=(format!("{st:?}").to_lowercase()) { (st.label()) } }
                        td {
                            @if let Some(sess) = session {
                                @if *st == Stage::Live {
                                    a.button id=(format!("open-{}", sess.id)) href=(super::sessions::viewer_path(&sess.id, sess.channel)) { (super::sessions::open_label(sess.channel, true)) }
                                } @else if let Some(r) = &sess.end_reason { (r) }
                            }
                        }
                    } } }
                } }
            }
        }
    })
}

async fn render(
    state: &AppState,
    s: &Signed,
    headers: &HeaderMap,
    created: Option<(String, String)>,
) -> Response {
    if let Err(e) = s.op.require(Permission::Control) {
        return fail(s, Nav::Support, e);
    }
    let list = match codes(state, s).await {
        Ok(m) => m,
        Err(e) => return fail(s, Nav::Support, e),
    };
    if headers.contains_key("hx-request") {
        return html_response(StatusCode::OK, list);
    }
    let body = html! {
        h1 { "Support codes" }
        @if let Some((code, expires)) = &created {
            section.secret role="status" {
                h2 { "Your support code" }
                p.code { code #new-secret { (code) } " " button type="button" data-copy="#new-secret" hidden { "Copy" } }
                p { "Read it to the person at the machine. It works once, until " (expires) ". "
                    strong { "It is shown only this once." } }
            }
        }
        form.inline method="post" action="/support" {
            (csrf_field(s))
            label { "Access " select name="access" {
                option value="control" selected { "control (see and type)" }
                option value="view" { "view only" }
            } }
            " "
            label { "For " select name="channel" {
                option value="shell" selected { "a terminal" }
                option value="screen" { "the screen" }
            } }
            " "
            label { "Valid for " select name="ttl" {
                option value="900" { "15 minutes" }
                option value="1800" selected { "30 minutes" }
                option value="3600" { "1 hour" }
            } }
            " " button type="submit" { "Create support code" }
        }
        h2 { "Your codes" }
        (list)
    };
    html_response(StatusCode::OK, page(s, Nav::Support, "Support", body))
}

/// `POST /support`: a new code, shown in this response only.
pub async fn create(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, form) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let req = CreateSupportCodeRequest {
        access: form.text("access").map(str::to_owned),
        ttl_seconds: form.text("ttl").and_then(|t| t.parse().ok()),
        channel: form.text("channel").map(str::to_owned),
    };
    match crate::http::support::create_code(&state, ip, &s.op, &req).await {
        Ok(c) => {
            let expires = Timestamp::parse_rfc3339(&c.expires_at)
                .map(|t| when(t).into_string())
                .unwrap_or_default();
            let shown = (c.code.expose().to_owned(), strip_tags(&expires));
            let mut resp = render(&state, &s, &HeaderMap::new(), Some(shown)).await;
            *resp.status_mut() = StatusCode::CREATED;
            resp
        }
        Err(e) => fail(&s, Nav::Support, e),
    }
}

/// The text of a small piece of markup (for a time inside a sentence).
fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in html.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(state: SupportCodeState, expires_ms: i64) -> SupportCodeRow {
        SupportCodeRow {
            id: "c".into(),
            tenant_id: "t".into(),
            access: tessera_core::kinds::SessionAccess::Control,
            channel: tessera_core::kinds::SessionChannel::Shell,
            created_by: "u".into(),
            created_by_name: "u".into(),
            created_at: Timestamp::from_millis(0),
            expires_at: Timestamp::from_millis(expires_ms),
            state,
            session_id: None,
        }
    }

    #[test]
    fn a_code_goes_from_waiting_to_expired_or_withdrawn() {
        let now = Timestamp::from_millis(1000);
        assert_eq!(
            stage(&code(SupportCodeState::Active, 2000), None, now),
            Stage::Waiting
        );
        assert_eq!(
            stage(&code(SupportCodeState::Active, 500), None, now),
            Stage::Expired
        );
        assert_eq!(
            stage(&code(SupportCodeState::Expired, 500), None, now),
            Stage::Expired
        );
        assert_eq!(
            stage(&code(SupportCodeState::Revoked, 2000), None, now),
            Stage::Withdrawn
        );
        assert!(Stage::Waiting.in_flight() && Stage::AwaitingConsent.in_flight());
        assert!(!Stage::Live.in_flight() && !Stage::Ended.in_flight());
    }

    #[test]
    fn strip_tags_keeps_text() {
        assert_eq!(strip_tags("<time a=\"b\">12:00 UTC</time>"), "12:00 UTC");
    }
}
