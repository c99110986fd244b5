//! Devices: the searchable, sortable list with live presence, one device's
//! page (keys, tags, grants, recent sessions), and revoking with a
//! confirmation.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use tessera_core::roles::Permission;
use tessera_core::{ErrorCode, Timestamp};

use super::{
    csrf_field, done, empty, fail, html_response, maybe_when, page, require_post, require_signed,
    url_escape, when, Nav, Signed,
};
use crate::http::devices::{self as api, is_online};
use crate::http::error::ApiError;
use crate::http::extract::ClientIp;
use crate::store::device_list::{DeviceQuery, DeviceSort};
use crate::store::devices::DeviceRow;
use crate::{store, tenancy, AppState};

pub const PAGE_SIZE: i64 = 50;
/// The deepest page offered: offsets past this cost the database more
/// than any person paging by hand needs (search narrows instead).
pub const MAX_PAGE: i64 = 2_000;
/// Longest search text, and most words in it.
pub const MAX_SEARCH: usize = 200;
pub const MAX_WORDS: usize = 8;

/// The query string as it comes; [`ListRequest::parse`] checks it.
#[derive(Deserialize, Default, Clone)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: String,
}

/// A checked list request: words to search, an order, a 1-based page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRequest {
    pub q: String,
    pub words: Vec<String>,
    pub sort: DeviceSort,
    pub page: i64,
}

impl ListRequest {
    /// Refuses what no link of the console produces (an unknown sort, a
    /// page that is not a number or past [`MAX_PAGE`], an over-long search)
    /// with `invalid_query` and what to do instead.
    pub fn parse(q: &ListQuery) -> Result<ListRequest, ApiError> {
        let bad = |m: String| ApiError::bad_request(ErrorCode::InvalidQuery, m);
        let sort = DeviceSort::parse(q.sort.trim()).ok_or_else(|| {
            let known: Vec<_> = DeviceSort::ALL.iter().map(|s| s.as_str()).collect();
            bad(format!(
                "unknown sort {:?}: use one of {}",
                q.sort.chars().take(40).collect::<String>(),
                known.join(", ")
            ))
        })?;
        let page = match q.page.trim() {
            "" => 1,
            p => p
                .parse::<i64>()
                .ok()
                .filter(|p| (1..=MAX_PAGE).contains(p))
                .ok_or_else(|| {
                    bad(format!(
                        "page must be a number from 1 to {MAX_PAGE}; search to narrow the list instead of paging deeper"
                    ))
                })?,
        };
        if q.q.chars().count() > MAX_SEARCH {
            return Err(bad(format!(
                "the search is longer than {MAX_SEARCH} characters"
            )));
        }
        let words: Vec<String> = q.q.split_whitespace().map(str::to_lowercase).collect();
        if words.len() > MAX_WORDS {
            return Err(bad(format!("the search has more than {MAX_WORDS} words")));
        }
        Ok(ListRequest {
            q: q.q.trim().to_owned(),
            words,
            sort,
            page,
        })
    }

    fn url(&self, page: i64) -> String {
        format!(
            "/devices?q={}&sort={}&page={page}",
            url_escape(&self.q),
            url_escape(self.sort.as_str())
        )
    }
}

/// One row as the list shows it.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub tags: Vec<String>,
    pub online: bool,
    pub revoked: bool,
    pub last_seen: Option<Timestamp>,
    pub key_prefix: Option<String>,
}

/// What a list page shows: the rows of one page, how many matched, and
/// how many devices there are at all.
pub struct Selection {
    pub rows: Vec<Row>,
    pub matched: i64,
    pub total: i64,
    pub page: i64,
}

impl Selection {
    pub fn pages(&self) -> i64 {
        ((self.matched + PAGE_SIZE - 1) / PAGE_SIZE).max(1)
    }
}

fn row_of(state: &AppState, d: &DeviceRow, prefixes: &HashMap<String, String>) -> Row {
    let local = state.registry().is_connected(&d.id);
    Row {
        id: d.id.clone(),
        name: d.name.clone(),
        hostname: d.hostname.clone(),
        os: d.os.clone(),
        tags: d.tags.clone(),
        online: is_online(d, state.now(), state.config().heartbeat_interval, local),
        revoked: d.revoked_at.is_some(),
        last_seen: d.last_seen_at,
        key_prefix: prefixes.get(&d.id).cloned(),
    }
}

/// Presence as the page shows it; the live script rewrites it in place.
pub fn presence(id: &str, online: bool, revoked: bool) -> Markup {
    let (class, text) = match (revoked, online) {
        (true, _) => ("presence revoked", "revoked"),
        (false, true) => ("presence online", "online"),
        (false, false) => ("presence offline", "offline"),
    };
    html! { span class=(class) data-presence=(id) { (text) } }
}

/// Loads one page: the database searches, sorts and pages; this node's
/// registry then marks who is online.
async fn load(
    state: &AppState,
    tenant: &str,
    req: &ListRequest,
) -> Result<Selection, store::StoreError> {
    let query = DeviceQuery {
        tenant: tenant.to_owned(),
        words: req.words.clone(),
        sort: req.sort,
        online_since: state.now().minus(state.config().heartbeat_interval * 2),
        offset: (req.page - 1) * PAGE_SIZE,
        limit: PAGE_SIZE,
    };
    let found = store::device_list::page(state.db(), &query).await?;
    let total = if req.words.is_empty() {
        found.matched
    } else {
        store::device_list::count(state.db(), tenant).await?
    };
    let ids: Vec<String> = found.rows.iter().map(|d| d.id.clone()).collect();
    let prefixes = store::device_list::live_key_prefixes(state.db(), &ids).await?;
    Ok(Selection {
        rows: found
            .rows
            .iter()
            .map(|d| row_of(state, d, &prefixes))
            .collect(),
        matched: found.matched,
        total,
        page: req.page,
    })
}

/// `GET /devices`
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = s.op.require(Permission::View) {
        return fail(&s, Nav::Devices, e);
    }
    let req = match q
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))
        .and_then(|Query(q)| ListRequest::parse(&q))
    {
        Ok(r) => r,
        Err(e) => return fail(&s, Nav::Devices, e),
    };
    let sel = match load(&state, tenancy::of(&s.op), &req).await {
        Ok(x) => x,
        Err(e) => return fail(&s, Nav::Devices, e),
    };
    let manage = s.op.role.allows(Permission::ManageDevices);
    let table = devices_table(&sel, &req, manage);
    // htmx asks for the table alone while someone types in the search box.
    if headers.contains_key("hx-request") {
        return html_response(StatusCode::OK, table);
    }
    let body = html! {
        h1 { "Devices" }
        form.search method="get" action="/devices" role="search" {
            label for="q" { "Search" }
            input #q type="search" name="q" value=(req.q) maxlength=(MAX_SEARCH) placeholder="name, host, OS, tag, id or key prefix"
                hx-get="/devices" hx-trigger="input changed delay:300ms, search" hx-target="#devices"
                hx-select="#devices" hx-swap="outerHTML" hx-push-url="true" hx-include="closest form";
            label for="sort" { "Sort by" }
            select #sort name="sort" {
                @for v in DeviceSort::ALL {
                    option value=(v.as_str()) selected[req.sort == v] { (v.label()) }
                }
            }
            button type="submit" { "Apply" }
        }
        (table)
    };
    html_response(StatusCode::OK, page(&s, Nav::Devices, "Devices", body))
}

fn devices_table(sel: &Selection, req: &ListRequest, manage: bool) -> Markup {
    let pages = sel.pages();
    html! {
        div #devices data-live-list="/devices" data-total=(sel.total) {
            @if sel.total == 0 {
                (empty("No devices yet.", html! {
                    p { "To add one, run " code { "tessera agent enroll --server <this server's address>" } " on it and approve its code under "
                        a href="/pairings" { "Pairings" } ", or create an "
                        a href="/enrollment" { "enrollment token" } " for unattended installs." }
                    @if !manage { p.muted { "Your role cannot approve devices; ask an operator or an administrator." } }
                }))
            } @else if sel.matched == 0 {
                (empty("No device matches this search.", html! { p { a href="/devices" { "Show all devices" } } }))
            } @else if sel.rows.is_empty() {
                (empty(&format!("There is no page {}: the list has {} page{}.", sel.page, pages, if pages == 1 { "" } else { "s" }), html! {
                    p { a href=(req.url(pages)) { "Go to the last page" } " or " a href=(req.url(1)) { "the first page" } }
                }))
            } @else {
                p.muted { (sel.matched) " of " (sel.total) " devices" }
                div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Last seen" }
                        th scope="col" { "OS" } th scope="col" { "Tags" } th scope="col" { "Key" }
                    } }
                    tbody {
                        @for r in &sel.rows {
                            tr {
                                td { a href=(format!("/devices/{}", r.id)) { (r.name) } br; span.muted { (r.hostname) } }
                                td { (presence(&r.id, r.online, r.revoked)) }
                                td { (maybe_when(r.last_seen, "never")) }
                                td { (r.os) }
                                td { @for t in &r.tags { span.tag { (t) } " " } }
                                td { @if let Some(p) = &r.key_prefix { code { (p) "…" } } @else { span.muted { "none" } } }
                            }
                        }
                    }
                }
                }
                @if pages > 1 {
                    nav.pager aria-label="Pages" {
                        @if sel.page > 1 { a rel="prev" href=(req.url(sel.page - 1)) { "← Previous" } }
                        span { "Page " (sel.page) " of " (pages) }
                        @if sel.page < pages.min(MAX_PAGE) { a rel="next" href=(req.url(sel.page + 1)) { "Next →" } }
                    }
                }
            }
        }
    }
}

/// `GET /devices/{id}`
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match device_page(&state, &s, &id, None).await {
        Ok(body) => html_response(StatusCode::OK, page(&s, Nav::Devices, "Device", body)),
        Err(e) => fail(&s, Nav::Devices, e),
    }
}

/// `POST /devices/{id}/keys`: a new key, shown on the device's page in
/// this response only.
pub async fn issue_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, _) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let issued = match api::issue(&state, &s.op, &id).await {
        Ok(k) => k,
        Err(e) => return fail(&s, Nav::Devices, e),
    };
    let shown = (
        issued.device_key.expose().to_owned(),
        issued.key.prefix.clone(),
    );
    match device_page(&state, &s, &id, Some(shown)).await {
        Ok(body) => html_response(StatusCode::CREATED, page(&s, Nav::Devices, "Device", body)),
        Err(e) => fail(&s, Nav::Devices, e),
    }
}

async fn device_page(
    state: &AppState,
    s: &Signed,
    id: &str,
    issued: Option<(String, String)>,
) -> Result<Markup, ApiError> {
    s.op.require(Permission::View)?;
    let d = api::find(state, &s.op, id).await?;
    let manage = s.op.role.allows(Permission::ManageDevices);
    let control = s.op.role.allows(Permission::Control);
    let keys = if manage {
        api::keys_of(state, &s.op, id).await?
    } else {
        Vec::new()
    };
    let tenant = tenancy::of(&s.op);
    let mut grants = Vec::new();
    for g in store::trust::list_grants(state.db(), tenant, Some(&d.id)).await? {
        grants.push(crate::http::trust::grant_view(state.db(), &g).await?);
    }
    let sessions =
        store::sessions::recent_for_device(state.db(), tenant, &s.op.user_id, &d.id, 10).await?;
    let local = state.registry().is_connected(&d.id);
    let online = is_online(&d, state.now(), state.config().heartbeat_interval, local);
    let revoked = d.revoked_at.is_some();
    Ok(html! {
        h1 { (d.name) " " (presence(&d.id, online, revoked)) }
        dl.facts {
            dt { "Hostname" } dd { (d.hostname) }
            dt { "Operating system" } dd { (d.os) }
            dt { "Agent" } dd { (d.agent_version.as_deref().unwrap_or("unknown")) }
            dt { "Fingerprint" } dd { code { (tessera_core::identity::fingerprint(&d.ed25519_public)) } }
            dt { "Last seen" } dd { (maybe_when(d.last_seen_at, "never")) @if let Some(ip) = &d.last_ip { " from " (ip) } }
            dt { "Enrolled" } dd { (when(d.created_at)) " via " (d.enrolled_via) }
            @if let Some(at) = d.revoked_at {
                dt { "Revoked" } dd { (when(at)) ": " (d.revoked_reason.as_deref().unwrap_or("")) }
            }
        }
        @if control && online && !revoked {
            form.inline method="post" action="/sessions" {
                (csrf_field(s))
                input type="hidden" name="device" value=(d.id);
                button type="submit" { "Open a terminal" }
            }
            " "
            form.inline method="post" action="/sessions" {
                (csrf_field(s))
                input type="hidden" name="device" value=(d.id);
                input type="hidden" name="channel" value="screen";
                button type="submit" { "Open the screen" }
            }
        }
        h2 { "Tags" }
        p { @for t in &d.tags { span.tag { (t) } " " } @if d.tags.is_empty() { span.muted { "No tags." } } }
        @if manage && !revoked {
            form.inline method="post" action=(format!("/devices/{}/tags", d.id)) {
                (csrf_field(s))
                label { "Add tag " input name="add" pattern="[a-z0-9:._-]{1,64}" title="a-z, 0-9, ':', '.', '_', '-'"; }
                " "
                label { "Remove tag " input name="remove"; }
                " " button type="submit" { "Save tags" }
            }
        }
        @if manage {
            h2 { "Keys" }
            @if let Some((secret, prefix)) = &issued {
                section.secret role="status" {
                    p { strong { "New key " (prefix) "… — copy it now: it is shown only this once." } }
                    p { code #new-secret { (secret) } " " button type="button" data-copy="#new-secret" hidden { "Copy" } }
                    p { "It is pending until the device first uses it; revoke the old key once the device has switched." }
                }
            }
            @if !revoked && !d.ephemeral {
                form method="post" action=(format!("/devices/{}/keys", d.id)) {
                    (csrf_field(s))
                    button type="submit" { "Issue a new key" }
                }
            }
            @if keys.is_empty() { p.muted { "No keys." } } @else {
                div.scroll { table {
                    thead { tr { th { "Prefix" } th { "State" } th { "Created" } th { "Last used" } th { span.sr { "Actions" } } } }
                    tbody {
                        @for k in &keys {
                            tr {
                                td { code { (k.key_prefix) "…" } }
                                td { @if k.revoked_at.is_some() { "revoked" } @else if k.activated_at.is_none() { "pending" } @else { "active" } }
                                td { (when(k.created_at)) }
                                td { (maybe_when(k.last_used_at, "never")) }
                                td { @if k.revoked_at.is_none() {
                                    form method="post" action=(format!("/devices/{}/keys/{}/revoke", d.id, k.id)) {
                                        (csrf_field(s))
                                        button.danger type="submit" { "Revoke key " (k.key_prefix) }
                                    }
                                } }
                            }
                        }
                    }
                } }
            }
        }
        h2 { "Trust and grants" }
        @if grants.is_empty() { p.muted { "This device has no automatic-join grants." } } @else {
            div.scroll { table {
                thead { tr { th { "Granter" } th { "May be joined by" } th { "Scopes" } th { "Expires" } th { "State" } } }
                tbody { @for g in &grants { tr {
                    td { (g.granter_name.as_deref().unwrap_or(&g.granter)) }
                    td { (g.grantee_name.as_deref().unwrap_or(&g.grantee)) }
                    td { (g.scopes.join(", ")) }
                    td { (g.expires_at) }
                    td { (g.state.replace('_', " ")) }
                } } }
            } }
        }
        h2 { "Recent sessions" }
        @if sessions.is_empty() { p.muted { "No sessions yet." } } @else {
            ul { @for r in &sessions { li {
                (r.origin.as_str()) " session by " (r.created_by_name.as_deref().unwrap_or("?")) ", " (when(r.created_at)) ": "
                (r.state.as_str())
                @if let Some(reason) = &r.end_reason { " (" (reason) ")" }
            } } }
        }
        @if manage && !revoked {
            h2 { "Danger zone" }
            p { a.button.danger href=(format!("/devices/{}/revoke", d.id)) { "Revoke this device…" } }
        }
    })
}

/// `GET /devices/{id}/revoke`: what revoking does, and the form that does it.
pub async fn confirm_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = s.op.require(Permission::ManageDevices) {
        return fail(&s, Nav::Devices, e);
    }
    let d = match api::find(&state, &s.op, &id).await {
        Ok(d) => d,
        Err(e) => return fail(&s, Nav::Devices, e),
    };
    let body = html! {
        h1 { "Revoke " (d.name) "?" }
        p.warn { "Revoking cuts the device off at once: its keys stop working, its sessions end, and it cannot come back without being enrolled again. This cannot be undone." }
        form method="post" action=(format!("/devices/{}/revoke", d.id)) {
            (csrf_field(&s))
            p { label { "Reason (kept in the audit log)" br; input name="reason" maxlength="200" placeholder="e.g. laptop lost"; } }
            p { button.danger type="submit" { "Revoke " (d.name) } " " a href=(format!("/devices/{}", d.id)) { "Cancel" } }
        }
    };
    html_response(
        StatusCode::OK,
        page(&s, Nav::Devices, "Revoke device", body),
    )
}

/// `POST /devices/{id}/revoke`
pub async fn revoke(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, form) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let reason = form.text("reason").map(str::to_owned);
    match api::revoke(&state, ip, &s.op, &id, reason).await {
        Ok(d) => done(&format!("/devices/{}", d.id)),
        Err(e) => fail(&s, Nav::Devices, e),
    }
}

/// `POST /devices/{id}/keys/{key}/revoke`
pub async fn revoke_key(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path((id, key)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, form) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let reason = form.text("reason").map(str::to_owned);
    match api::revoke_one_key(&state, ip, &s.op, &id, &key, reason).await {
        Ok(k) => done(&format!("/devices/{}", k.device_id)),
        Err(e) => fail(&s, Nav::Devices, e),
    }
}

/// `POST /devices/{id}/tags`
pub async fn tags(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, form) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let list = |name: &str| -> Vec<String> {
        form.text(name)
            .map(|v| {
                v.split([',', ' '])
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    match api::retag(&state, ip, &s.op, &id, &list("add"), &list("remove")).await {
        Ok(d) => done(&format!("/devices/{}", d.id)),
        Err(e) => fail(&s, Nav::Devices, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(q: &str, sort: &str, page: &str) -> Result<ListRequest, ApiError> {
        ListRequest::parse(&ListQuery {
            q: q.to_owned(),
            sort: sort.to_owned(),
            page: page.to_owned(),
        })
    }

    #[test]
    fn list_requests_are_checked_before_any_query() {
        let r = ask("  Lab  PROD ", "", "").expect("defaults");
        assert_eq!(
            (r.words.clone(), r.sort, r.page),
            (
                vec!["lab".to_owned(), "prod".to_owned()],
                DeviceSort::Name,
                1
            )
        );
        assert_eq!(ask("", "online", "3").expect("ok").page, 3);
        for (q, sort, page) in [
            ("", "name; DROP TABLE devices", ""),
            ("", "", "0"),
            ("", "", "-1"),
            ("", "", "two"),
            ("", "", "2001"),
            ("a b c d e f g h i", "", ""),
        ] {
            let e = ask(q, sort, page).expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
        assert!(ask(&"x".repeat(MAX_SEARCH + 1), "", "").is_err());
    }

    #[test]
    fn page_links_keep_the_search_and_sort() {
        let r = ask("a&b", "-seen", "").expect("ok");
        assert_eq!(r.url(4), "/devices?q=a%26b&sort=-seen&page=4");
    }
}
