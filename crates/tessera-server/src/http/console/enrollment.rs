//! Bringing devices in: pairing approvals (the `/device` flow's approve and
//! deny, listed) and enrollment tokens (created and shown once, listed,
//! revoked).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::html;
use tessera_core::api::CreateEnrollmentTokenRequest;
use tessera_core::codes::display_user_code;
use tessera_core::identity::DeviceId;
use tessera_core::roles::Permission;
use tessera_core::ErrorCode;

use super::devices::presence;
use super::{
    csrf_field, done, empty, fail, html_response, maybe_when, page, require_post, require_signed,
    when, Nav,
};
use crate::enrollment::token_state;
use crate::http::error::ApiError;
use crate::http::extract::ClientIp;
use crate::{pairing, store, tenancy, AppState};

/// `GET /pairings`
pub async fn pairings(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = s.op.require(Permission::ManageDevices) {
        return fail(&s, Nav::Pairings, e);
    }
    let now = state.now();
    let rows = match store::pairings::list_pending(state.db(), tenancy::of(&s.op), now).await {
        Ok(r) => r,
        Err(e) => return fail(&s, Nav::Pairings, e),
    };
    let body = html! {
        h1 { "Pairings" }
        p { "Devices that ran " code { "tessera agent enroll" } " and wait for an operator. "
            strong { "Approve only a device you started this on yourself, just now" }
            ": check that the code and the fingerprint match what the device printed. If someone sent you a code, deny it." }
        p { a href="/pairings" { "Refresh the list" } }
        div #pairings {
        @if rows.is_empty() {
            (empty("No device is waiting for approval.", html! {
                p { "Run " code { "tessera agent enroll --server <this server's address>" } " on a machine; its code appears here within a few seconds." }
            }))
        } @else {
            @for p in &rows {
                section.card aria-label=(format!("Pairing {}", p.name)) {
                    h2 { (p.name) }
                    dl.facts {
                        dt { "Code" } dd { code { (display_user_code(&p.user_code)) } }
                        dt { "Hostname" } dd { (p.hostname) }
                        dt { "Operating system" } dd { (p.os) }
                        dt { "Requested from" } dd { (p.source_ip.as_deref().unwrap_or("unknown")) }
                        dt { "Requested" } dd { (when(p.created_at)) ", expires " (when(p.expires_at)) }
                        dt { "Fingerprint" } dd { code { (DeviceId::parse(&p.device_id).map(|d| d.grouped()).unwrap_or_else(|_| p.device_id.clone())) } }
                    }
                    form method="post" action="/pairings/decide" {
                        (csrf_field(&s))
                        input type="hidden" name="user_code" value=(p.user_code);
                        button type="submit" name="decision" value="approve" { "Approve " (p.name) }
                        " "
                        button.danger type="submit" name="decision" value="deny" { "Deny " (p.name) }
                    }
                }
            }
        }
        }
        p.muted { "A code from a device that is not listed: " a href="/device" { "enter it on the approval page" } "." }
    };
    html_response(StatusCode::OK, page(&s, Nav::Pairings, "Pairings", body))
}

/// `POST /pairings/decide`: the same decision as `/device` and the API.
pub async fn decide(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, form) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let approve = match form.get("decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return fail(
                &s,
                Nav::Pairings,
                ApiError::bad_request(ErrorCode::InvalidField, "choose approve or deny"),
            )
        }
    };
    if let Err(wait) = state.limiters().pairing_lookup.check(ip.0) {
        return fail(
            &s,
            Nav::Pairings,
            ApiError::too_many_requests(
                ErrorCode::RateLimited,
                "too many attempts; wait a moment",
                wait,
            ),
        );
    }
    let code = form.get("user_code").unwrap_or("");
    let p = match pairing::decide(state.db(), &s.op, ip.0, code, approve).await {
        Ok(p) => p,
        Err(e) => return fail(&s, Nav::Pairings, e),
    };
    let body = html! {
        @if approve {
            h1 { "Device approved" }
            p role="status" { strong { (p.name) } " (" (p.hostname) ") was approved. It finishes joining within a few seconds: "
                (presence(&p.device_id, false, false)) }
            p { a href=(format!("/devices/{}", p.device_id)) { "Open its page" } " · " a href="/pairings" { "Back to pairings" } }
        } @else {
            h1 { "Device denied" }
            p role="status" { strong { (p.name) } " (" (p.hostname) ") was denied; it cannot join with this code." }
            p { a href="/pairings" { "Back to pairings" } }
        }
    };
    html_response(StatusCode::OK, page(&s, Nav::Pairings, "Pairing", body))
}

/// `GET /enrollment`
pub async fn tokens(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = s.op.require(Permission::ManageDevices) {
        return fail(&s, Nav::Enrollment, e);
    }
    tokens_page(&state, &s, None).await
}

async fn tokens_page(
    state: &AppState,
    s: &super::Signed,
    created: Option<(String, String)>,
) -> Response {
    let rows = match store::enrollment::list(state.db(), tenancy::of(&s.op)).await {
        Ok(r) => r,
        Err(e) => return fail(s, Nav::Enrollment, e),
    };
    let now = state.now();
    let body = html! {
        h1 { "Enrollment tokens" }
        @if let Some((secret, prefix)) = &created {
            section.secret role="status" {
                h2 { "Token " (prefix) "… created" }
                p { strong { "Copy it now: it is shown only this once." } " Give it to the machines to enroll:" }
                p { code #new-secret { (secret) } " " button type="button" data-copy="#new-secret" hidden { "Copy" } }
                p { code { "tessera agent enroll --server <this server's address> --token <the token>" } }
            }
        }
        h2 { "Create a token" }
        form method="post" action="/enrollment" {
            (csrf_field(s))
            p { label { "Devices it may enroll" br; input name="uses" type="number" min="1" max="10000" value="1" required; } }
            p { label { "Valid for" br;
                select name="ttl" {
                    option value="3600" { "1 hour" }
                    option value="86400" selected { "1 day" }
                    option value="604800" { "7 days" }
                    option value="2592000" { "30 days" }
                }
            } }
            p { label { "Tags for the devices (comma-separated, optional)" br; input name="tags" pattern="[a-z0-9:._, -]*"; } }
            p { button type="submit" { "Create token" } }
        }
        h2 { "Tokens" }
        @if rows.is_empty() {
            (empty("No enrollment tokens yet.", html! { p { "Create one above for unattended installs (scripts, images)." } }))
        } @else {
            div.scroll { table {
                thead { tr { th { "Prefix" } th { "State" } th { "Uses left" } th { "Expires" } th { "Last used" } th { "Tags" } th { span.sr { "Actions" } } } }
                tbody { @for t in &rows {
                    @let st = token_state(t, now).as_str();
                    tr {
                        td { code { (t.token_prefix) "…" } }
                        td { (st) }
                        td { (t.uses_remaining) " of " (t.uses_total) }
                        td { (when(t.expires_at)) }
                        td { (maybe_when(t.last_used_at, "never")) }
                        td { (t.tags.join(", ")) }
                        td { @if st == "active" {
                            form method="post" action=(format!("/enrollment/{}/revoke", t.id)) {
                                (csrf_field(s))
                                button.danger type="submit" { "Revoke " (t.token_prefix) }
                            }
                        } }
                    }
                } }
            } }
        }
    };
    html_response(StatusCode::OK, page(s, Nav::Enrollment, "Enrollment", body))
}

/// `POST /enrollment`: creates a token and shows its secret in this
/// response only (never in a URL, never again).
pub async fn create_token(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, form) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let invalid = |m: &str| ApiError::unprocessable(ErrorCode::InvalidField, m.to_owned());
    let parsed = (|| {
        let uses = form
            .text("uses")
            .unwrap_or("1")
            .parse::<u32>()
            .map_err(|_| {
                invalid("“Devices it may enroll” must be a whole number from 1 to 10000.")
            })?;
        let ttl_seconds = form
            .text("ttl")
            .unwrap_or("86400")
            .parse::<u64>()
            .map_err(|_| invalid("Choose how long the token is valid."))?;
        let tags = form
            .text("tags")
            .map(|t| {
                t.split([',', ' '])
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok::<_, ApiError>(CreateEnrollmentTokenRequest {
            uses,
            ttl_seconds,
            tags,
        })
    })();
    let req = match parsed {
        Ok(r) => r,
        Err(e) => return fail(&s, Nav::Enrollment, e),
    };
    match crate::http::enroll::create(&state, ip, &s.op, &req).await {
        Ok(created) => {
            let shown = (
                created.secret.expose().to_owned(),
                created.token.prefix.clone(),
            );
            let mut resp = tokens_page(&state, &s, Some(shown)).await;
            *resp.status_mut() = StatusCode::CREATED;
            resp
        }
        Err(e) => fail(&s, Nav::Enrollment, e),
    }
}

/// `POST /enrollment/{id}/revoke`
pub async fn revoke_token(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, _) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match crate::http::enroll::revoke(&state, ip, &s.op, &id).await {
        Ok(()) => done("/enrollment"),
        Err(e) => fail(&s, Nav::Enrollment, e),
    }
}
