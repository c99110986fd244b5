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
use tessera_core::Timestamp;

use super::{
    csrf_field, done, empty, fail, html_response, maybe_when, page, require_post, require_signed,
    url_escape, when, Nav, Signed,
};
use crate::http::devices::{self as api, is_online};
use crate::http::extract::ClientIp;
use crate::store::devices::DeviceRow;
use crate::{store, tenancy, AppState};

pub const PAGE_SIZE: usize = 50;

#[derive(Deserialize, Default, Clone)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: usize,
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

/// What a list page shows: the rows of one page, and how many matched.
pub struct Selection {
    pub rows: Vec<Row>,
    pub matched: usize,
    pub page: usize,
    pub pages: usize,
}

/// Filters (every word must appear in the name, hostname, OS, a tag or
/// the id), sorts (`name`, `-name`, `seen`, `-seen`, `online`, `os`) and
/// pages. Pure: the handler loads, this decides.
pub fn select(mut rows: Vec<Row>, q: &str, sort: &str, page: usize) -> Selection {
    let words: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
    rows.retain(|r| {
        words.iter().all(|w| {
            r.name.to_lowercase().contains(w)
                || r.hostname.to_lowercase().contains(w)
                || r.os.to_lowercase().contains(w)
                || r.id.to_lowercase().contains(w)
                || r.tags.iter().any(|t| t.contains(w.as_str()))
        })
    });
    let by_name = |a: &Row, b: &Row| a.name.to_lowercase().cmp(&b.name.to_lowercase());
    match sort {
        "-name" => rows.sort_by(|a, b| by_name(b, a)),
        "seen" => rows.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(by_name(a, b))),
        "-seen" => rows.sort_by(|a, b| a.last_seen.cmp(&b.last_seen).then(by_name(a, b))),
        "online" => rows.sort_by(|a, b| b.online.cmp(&a.online).then(by_name(a, b))),
        "os" => rows.sort_by(|a, b| a.os.cmp(&b.os).then(by_name(a, b))),
        _ => rows.sort_by(by_name),
    }
    let matched = rows.len();
    let pages = matched.div_ceil(PAGE_SIZE).max(1);
    let page = page.min(pages - 1);
    let rows = rows
        .into_iter()
        .skip(page * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    Selection {
        rows,
        matched,
        page,
        pages,
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

fn list_url(q: &str, sort: &str, page: usize) -> String {
    format!(
        "/devices?q={}&sort={}&page={page}",
        url_escape(q),
        url_escape(sort)
    )
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
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let tenant = tenancy::of(&s.op);
    let loaded = async {
        let devices = store::devices::list(state.db(), tenant).await?;
        let prefixes = store::devices::live_key_prefixes(state.db(), tenant).await?;
        Ok::<_, store::StoreError>((devices, prefixes))
    };
    let (devices, prefixes) = match loaded.await {
        Ok(x) => x,
        Err(e) => return fail(&s, Nav::Devices, e),
    };
    let total = devices.len();
    let rows = devices
        .iter()
        .map(|d| row_of(&state, d, &prefixes))
        .collect();
    let sel = select(rows, &q.q, &q.sort, q.page);
    let manage = s.op.role.allows(Permission::ManageDevices);
    let table = devices_table(&sel, &q, total, manage);
    // htmx asks for the table alone while someone types in the search box.
    if headers.contains_key("hx-request") {
        return html_response(StatusCode::OK, table);
    }
    let body = html! {
        h1 { "Devices" }
        form.search method="get" action="/devices" role="search" {
            label for="q" { "Search" }
            input #q type="search" name="q" value=(q.q) placeholder="name, host, OS, tag or id"
                hx-get="/devices" hx-trigger="input changed delay:300ms, search" hx-target="#devices"
                hx-select="#devices" hx-swap="outerHTML" hx-push-url="true" hx-include="closest form";
            label for="sort" { "Sort by" }
            select #sort name="sort" {
                @for (v, label) in [("name", "name A–Z"), ("-name", "name Z–A"), ("online", "online first"), ("seen", "last seen, newest"), ("-seen", "last seen, oldest"), ("os", "operating system")] {
                    option value=(v) selected[q.sort == v] { (label) }
                }
            }
            button type="submit" { "Apply" }
        }
        (table)
    };
    html_response(StatusCode::OK, page(&s, Nav::Devices, "Devices", body))
}

fn devices_table(sel: &Selection, q: &ListQuery, total: usize, manage: bool) -> Markup {
    html! {
        div #devices data-live-list="/devices" {
            @if total == 0 {
                (empty("No devices yet.", html! {
                    p { "To add one, run " code { "tessera agent enroll --server <this server's address>" } " on it and approve its code under "
                        a href="/pairings" { "Pairings" } ", or create an "
                        a href="/enrollment" { "enrollment token" } " for unattended installs." }
                    @if !manage { p.muted { "Your role cannot approve devices; ask an operator or an administrator." } }
                }))
            } @else if sel.matched == 0 {
                (empty("No device matches this search.", html! { p { a href="/devices" { "Show all devices" } } }))
            } @else {
                p.muted { (sel.matched) " of " (total) " devices" }
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
                @if sel.pages > 1 {
                    nav.pager aria-label="Pages" {
                        @if sel.page > 0 { a href=(list_url(&q.q, &q.sort, sel.page - 1)) { "← Previous" } }
                        span { "Page " (sel.page + 1) " of " (sel.pages) }
                        @if sel.page + 1 < sel.pages { a href=(list_url(&q.q, &q.sort, sel.page + 1)) { "Next →" } }
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
) -> Result<Markup, crate::http::error::ApiError> {
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
    let sessions: Vec<_> = store::sessions::list_visible(state.db(), tenant, &s.op.user_id, true)
        .await?
        .into_iter()
        .filter(|r| r.device_id == d.id)
        .take(10)
        .collect();
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

    fn row(name: &str, online: bool, seen: Option<i64>, tags: &[&str]) -> Row {
        Row {
            id: format!("ID{name}"),
            name: name.to_owned(),
            hostname: format!("{name}.lan"),
            os: "linux".to_owned(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            online,
            revoked: false,
            last_seen: seen.map(Timestamp::from_millis),
            key_prefix: None,
        }
    }

    #[test]
    fn search_sort_and_pages() {
        let rows = vec![
            row("beta", false, Some(5), &["lab"]),
            row("Alpha", true, Some(1), &[]),
            row("gamma", true, None, &["lab", "prod"]),
        ];
        let names = |s: Selection| s.rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(select(rows.clone(), "", "", 0)),
            ["Alpha", "beta", "gamma"]
        );
        assert_eq!(
            names(select(rows.clone(), "", "-name", 0)),
            ["gamma", "beta", "Alpha"]
        );
        assert_eq!(
            names(select(rows.clone(), "", "online", 0)),
            ["Alpha", "gamma", "beta"]
        );
        assert_eq!(
            names(select(rows.clone(), "", "seen", 0)),
            ["beta", "Alpha", "gamma"]
        );
        assert_eq!(names(select(rows.clone(), "LAB", "", 0)), ["beta", "gamma"]);
        assert_eq!(names(select(rows.clone(), "lab prod", "", 0)), ["gamma"]);
        assert_eq!(select(rows.clone(), "nothing", "", 0).matched, 0);

        let many: Vec<Row> = (0..120)
            .map(|i| row(&format!("d{i:03}"), false, None, &[]))
            .collect();
        let p = select(many.clone(), "", "", 2);
        assert_eq!((p.pages, p.page, p.rows.len(), p.matched), (3, 2, 20, 120));
        // A page past the end shows the last one.
        assert_eq!(select(many, "", "", 99).page, 2);
    }
}
