//! Sessions: live, awaiting consent (only to their technician) and ended
//! with the reason; open a terminal or a screen on a device, end a session,
//! and the web terminal itself (the screen viewer is [`super::screen`]).
//!
//! The web terminal gets its viewer token from
//! `POST /sessions/{id}/viewer-token` (cookie session, CSRF token in the
//! `x-csrf-token` header, same-site only): the same minting as the API's,
//! for the cookie's login, so signing out or being disabled ends it too.
//! The page's script hands the token to `/ws/viewer` as a WebSocket
//! subprotocol; it never appears in a URL.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::html;
use serde::Deserialize;
use tessera_core::ids::SessionId;
use tessera_core::kinds::{Origin, SessionChannel, SessionState};
use tessera_core::roles::Permission;
use tessera_core::ErrorCode;

use super::session::{self, csrf_ok, same_origin};
use super::{
    assets, csrf_field, done, empty, fail, html_response, maybe_when, page, require_post,
    require_signed, when, Nav, Signed,
};
use crate::http::devices::is_online;
use crate::http::error::ApiError;
use crate::http::extract::ClientIp;
use crate::http::sessions as api;
use crate::store::sessions::{Listed, SessionRow};
use crate::{store, tenancy, AppState};

/// Sessions per page, for the live and the ended list alike.
pub const PAGE: i64 = 50;
/// The deepest page offered (see the devices list).
pub const MAX_PAGE: i64 = 2_000;
/// Online devices offered in the "open a terminal" menu; past that, open
/// one from the device's page.
pub const ONLINE_SHOWN: i64 = 200;

#[derive(Deserialize, Default)]
pub struct SessionsQuery {
    /// Page of the live list (pending and active), from 1.
    #[serde(default)]
    live: String,
    /// Page of the ended list, from 1.
    #[serde(default)]
    ended: String,
}

/// A page number from the query: empty is the first; anything else must
/// be 1..=[`MAX_PAGE`].
pub fn page_number(v: &str, name: &str) -> Result<i64, ApiError> {
    match v.trim() {
        "" => Ok(1),
        p => p
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=MAX_PAGE).contains(p))
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    format!("{name} must be a page number from 1 to {MAX_PAGE}"),
                )
            }),
    }
}

fn sessions_url(live: i64, ended: i64) -> String {
    format!("/sessions?live={live}&ended={ended}")
}

/// A page of rows read with one extra: the page, and whether more follow.
fn split_page(mut rows: Vec<SessionRow>) -> (Vec<SessionRow>, bool) {
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    (rows, more)
}

pub(super) fn may_end(s: &Signed, r: &SessionRow) -> bool {
    r.created_by == s.op.user_id || s.op.role.allows(Permission::Control)
}

/// Whether `s` may open `r`'s viewer (its terminal or its screen): an
/// attended one only by the technician the person consented to.
fn may_open(s: &Signed, r: &SessionRow) -> bool {
    s.op.role.allows(Permission::View)
        && (r.origin != Origin::Attended || r.created_by == s.op.user_id)
}

/// The page that shows `r`: its terminal or its screen.
pub(super) fn viewer_path(id: &SessionId, channel: SessionChannel) -> String {
    match channel {
        SessionChannel::Shell => format!("/sessions/{id}/terminal"),
        SessionChannel::Screen => format!("/sessions/{id}/screen"),
    }
}

/// The open link's words for `channel`.
pub(super) fn open_label(channel: SessionChannel, control: bool) -> &'static str {
    match (channel, control) {
        (SessionChannel::Shell, true) => "Open terminal",
        (SessionChannel::Screen, true) => "Open screen",
        (SessionChannel::Shell, false) => "Watch (view only)",
        (SessionChannel::Screen, false) => "Watch screen (view only)",
    }
}

/// `GET /sessions`
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    q: Result<Query<SessionsQuery>, QueryRejection>,
) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = s.op.require(Permission::View) {
        return fail(&s, Nav::Sessions, e);
    }
    let pages = q
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))
        .and_then(|Query(q)| {
            Ok((
                page_number(&q.live, "live")?,
                page_number(&q.ended, "ended")?,
            ))
        });
    let (live_page, ended_page) = match pages {
        Ok(p) => p,
        Err(e) => return fail(&s, Nav::Sessions, e),
    };
    let tenant = tenancy::of(&s.op);
    let now = state.now();
    let hb = state.config().heartbeat_interval;
    let control = s.op.role.allows(Permission::Control);
    let loaded = async {
        let live = store::sessions::page(
            state.db(),
            tenant,
            &s.op.user_id,
            Listed::Live,
            (live_page - 1) * PAGE,
            PAGE,
        )
        .await?;
        let ended = store::sessions::page(
            state.db(),
            tenant,
            &s.op.user_id,
            Listed::Ended,
            (ended_page - 1) * PAGE,
            PAGE,
        )
        .await?;
        let online = if control {
            store::device_list::online(state.db(), tenant, now.minus(hb * 2), ONLINE_SHOWN + 1)
                .await?
        } else {
            Vec::new()
        };
        Ok::<_, store::StoreError>((live, ended, online))
    };
    let (live, ended, mut online) = match loaded.await {
        Ok(x) => x,
        Err(e) => return fail(&s, Nav::Sessions, e),
    };
    let more_online = online.len() as i64 > ONLINE_SHOWN;
    online.truncate(ONLINE_SHOWN as usize);
    online.retain(|d| is_online(d, now, hb, state.registry().is_connected(&d.id)));
    let (live, more_live) = split_page(live);
    let (ended, more_ended) = split_page(ended);
    let active: Vec<_> = live
        .iter()
        .filter(|r| r.state == SessionState::Active)
        .collect();
    let waiting: Vec<_> = live
        .iter()
        .filter(|r| r.state == SessionState::Pending)
        .collect();
    let here = sessions_url(live_page, ended_page);
    let body = html! {
        h1 { "Sessions" }
        @if control {
            @if online.is_empty() {
                p.muted { "No device is online to open a terminal or a screen on." }
            } @else {
                form.inline method="post" action="/sessions" {
                    (csrf_field(&s))
                    label { "Open on " select name="device" {
                        @for d in &online { option value=(d.id) { (d.name) " (" (d.hostname) ")" } }
                    } }
                    " "
                    label { "a " select name="channel" {
                        option value="shell" { "terminal" }
                        option value="screen" { "screen" }
                    } }
                    " " button type="submit" { "Open" }
                }
                @if more_online {
                    p.muted { "The first " (ONLINE_SHOWN) " online devices by name; open another from its page under " a href="/devices?sort=online" { "Devices" } "." }
                }
            }
        }
        div #sessions hx-get=(here) hx-trigger="every 5s" hx-select="#sessions" hx-swap="outerHTML" {
            h2 { "Live" }
            @if live.is_empty() && live_page > 1 {
                (empty("No live sessions on this page.", html! { p { a href=(sessions_url(1, ended_page)) { "First page of live sessions" } } }))
            } @else if active.is_empty() { (empty("No live sessions.", html! {})) } @else {
                (table(&s, &active, true))
            }
            h2 { "Awaiting consent" }
            @if waiting.is_empty() { (empty("No session is waiting for the person at a device.", html! {})) } @else {
                (table(&s, &waiting, false))
            }
            @if live_page > 1 || more_live {
                nav.pager aria-label="Pages of live sessions" {
                    @if live_page > 1 { a rel="prev" href=(sessions_url(live_page - 1, ended_page)) { "← Newer live sessions" } }
                    span { "Page " (live_page) }
                    @if more_live && live_page < MAX_PAGE { a rel="next" href=(sessions_url(live_page + 1, ended_page)) { "Older live sessions →" } }
                }
            }
            h2 { "Ended" }
            @if ended.is_empty() && ended_page > 1 {
                (empty("No ended sessions on this page.", html! { p { a href=(sessions_url(live_page, 1)) { "First page of ended sessions" } } }))
            } @else if ended.is_empty() { (empty("No ended sessions yet.", html! {})) } @else {
                div.scroll { table {
                    thead { tr { th { "Device" } th { "Kind" } th { "By" } th { "Ended" } th { "Why" } } }
                    tbody { @for r in &ended { tr {
                        td { (r.device_name) } td { (r.origin.as_str()) }
                        td { (r.created_by_name.as_deref().unwrap_or("?")) }
                        td { (maybe_when(r.ended_at, "")) }
                        td { (r.end_reason.as_deref().unwrap_or(r.end_code.as_deref().unwrap_or(""))) }
                    } } }
                } }
            }
            @if ended_page > 1 || more_ended {
                nav.pager aria-label="Pages of ended sessions" {
                    @if ended_page > 1 { a rel="prev" href=(sessions_url(live_page, ended_page - 1)) { "← More recently ended" } }
                    span { "Page " (ended_page) }
                    @if more_ended && ended_page < MAX_PAGE { a rel="next" href=(sessions_url(live_page, ended_page + 1)) { "Ended earlier →" } }
                }
            }
        }
    };
    html_response(StatusCode::OK, page(&s, Nav::Sessions, "Sessions", body))
}

fn table(s: &Signed, rows: &[&SessionRow], live: bool) -> maud::Markup {
    html! {
        div.scroll { table {
            thead { tr { th { "Device" } th { "Kind" } th { "Channel" } th { "Access" } th { "By" } th { "Since" } th { span.sr { "Actions" } } } }
            tbody { @for r in rows { tr {
                td { (r.device_name) } td { (r.origin.as_str()) } td { (r.channel.as_str()) } td { (r.access.as_str()) }
                td { (r.created_by_name.as_deref().unwrap_or("?")) }
                td { (when(r.started_at.unwrap_or(r.created_at))) }
                td {
                    @if live && may_open(s, r) {
                        // Ids let htmx keep keyboard focus across the list's refresh.
                        a.button id=(format!("open-{}", r.id)) href=(viewer_path(&r.id, r.channel)) {
                            (open_label(r.channel, s.op.role.allows(Permission::Control)))
                        }
                        " "
                    }
                    @if may_end(s, r) {
                        form.inline method="post" action=(format!("/sessions/{}/end", r.id)) {
                            (csrf_field(s))
                            button.danger id=(format!("end-{}", r.id)) type="submit" { "End session" }
                        }
                    }
                }
            } } }
        } }
    }
}

/// `POST /sessions`: opens a managed shell or screen (`channel`), then its
/// terminal or screen page.
pub async fn open(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, form) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let device = form.text("device").unwrap_or("");
    match api::create(&state, ip, &s.op, device, None, form.text("channel")).await {
        Ok(r) if r.state == SessionState::Pending => done("/sessions"),
        Ok(r) => done(&viewer_path(&r.id, r.channel)),
        Err(e) => fail(&s, Nav::Sessions, e),
    }
}

/// `POST /sessions/{id}/end`
pub async fn end(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, _) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match api::end(&state, &s.op, &id).await {
        Ok(_) => done("/sessions"),
        Err(e) => fail(&s, Nav::Sessions, e),
    }
}

/// `GET /sessions/{id}/terminal`
pub async fn terminal(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let r = match api::find(&state, &s.op, &id).await {
        Ok(r) => r,
        Err(e) => return fail(&s, Nav::Sessions, e),
    };
    if r.channel != SessionChannel::Shell {
        let e = ApiError::conflict(
            ErrorCode::ChannelUnsupported,
            format!(
                "this is a screen session, not a shell: open its screen at /sessions/{0}/screen (or `tessera view {0}`)",
                r.id
            ),
        );
        return fail(&s, Nav::Sessions, e);
    }
    let control = s.op.role.allows(Permission::Control)
        && r.access == tessera_core::kinds::SessionAccess::Control;
    let body = html! {
        link rel="stylesheet" href=(assets::url("xterm-5.5.0.css"));
        h1 { "Terminal: " (r.device_name) }
        @if !control {
            p.banner.readonly #readonly role="note" { "View only: you can watch, and your keystrokes are not sent." }
        }
        p #term-status role="status" aria-live="polite" { "Connecting…" }
        noscript { p.error { "The web terminal needs JavaScript. Use " code { "tessera connect" } " instead." } }
        div #terminal.terminal data-session=(r.id) data-csrf=(s.csrf) data-control=(if control { "1" } else { "0" })
            tabindex="0" aria-label=(format!("Terminal of {}", r.device_name)) {}
        p.muted { "Copy: select text with the mouse (it goes to the clipboard where the browser allows). Paste: Ctrl+Shift+V or your browser's paste." }
        form.inline method="post" action=(format!("/sessions/{}/end", r.id)) {
            (csrf_field(&s))
            @if may_end(&s, &r) { button.danger type="submit" { "End session" } }
        }
        " " a href="/sessions" { "Back to sessions" }
        script src=(assets::url("xterm-5.5.0.js")) defer {}
        script src=(assets::url("xterm-addon-fit-0.10.0.js")) defer {}
        script src=(assets::url("protobuf.js")) defer {}
        script src=(assets::url("terminal.js")) defer {}
    };
    html_response(StatusCode::OK, page(&s, Nav::Sessions, "Terminal", body))
}

/// `POST /sessions/{id}/viewer-token`: a viewer token for the cookie's
/// login, as JSON, for the page's script. Refused across sites and
/// without the page's CSRF token in `x-csrf-token`.
pub async fn viewer_token(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    _body: Bytes,
) -> Response {
    let refuse = |e: ApiError| e.into_response();
    if !same_origin(&headers) {
        return refuse(ApiError::forbidden("cross-site request refused"));
    }
    let Some(s) = session::signed_in(&state, &headers).await else {
        return refuse(ApiError::unauthorized(
            ErrorCode::Unauthenticated,
            "your session has ended; sign in again",
        ));
    };
    let presented = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if !csrf_ok(&s.token, presented) {
        return refuse(ApiError::forbidden(
            "missing or wrong CSRF token; reload the page",
        ));
    }
    match api::mint_viewer_token(&state, ip, &s.op, &id).await {
        Ok(t) => {
            let mut resp = Json(t).into_response();
            resp.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(e) => refuse(e),
    }
}
