//! Users (admins only): add one (a generated password shown once), change
//! a role, disable or enable.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::html;
use tessera_core::api::{CreateUserRequest, UpdateUserRequest};
use tessera_core::roles::{Permission, Role};
use tessera_core::ErrorCode;

use super::{
    csrf_field, done, fail, html_response, page, require_post, require_signed, role_label, when,
    Nav, Signed,
};
use crate::http::error::ApiError;
use crate::http::extract::ClientIp;
use crate::http::users as api;
use crate::{store, tenancy, AppState};

fn parse_role(v: Option<&str>) -> Result<Role, ApiError> {
    v.and_then(Role::parse)
        .ok_or_else(|| ApiError::unprocessable(ErrorCode::InvalidField, "choose a role"))
}

/// `GET /users`
pub async fn list(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    render(&state, &s, None).await
}

async fn render(state: &AppState, s: &Signed, created: Option<(String, String)>) -> Response {
    if let Err(e) = s.op.require(Permission::ManageUsers) {
        return fail(s, Nav::Users, e);
    }
    let users = match store::users::list(state.db(), tenancy::of(&s.op)).await {
        Ok(u) => u,
        Err(e) => return fail(s, Nav::Users, e),
    };
    let body = html! {
        h1 { "Users" }
        @if let Some((name, pw)) = &created {
            section.secret role="status" {
                h2 { "User " (name) " added" }
                p { strong { "Their password is shown only this once:" } " " code #new-secret { (pw) } " "
                    button type="button" data-copy="#new-secret" hidden { "Copy" } }
                p { "Give it to them privately; they can change it under their name, top right." }
            }
        }
        h2 { "Add a user" }
        form.inline method="post" action="/users" {
            (csrf_field(s))
            label { "Username " input name="username" required pattern="[a-z0-9][a-z0-9._@-]{0,63}" title="lower-case letters, digits, . _ @ -"; }
            " "
            label { "Role " select name="role" {
                @for r in Role::ALL { option value=(r.as_str()) selected[r == Role::Operator] { (role_label(r)) } }
            } }
            " " button type="submit" { "Add user" }
        }
        h2 { "Accounts" }
        div.scroll { table {
            thead { tr { th { "Username" } th { "Role" } th { "State" } th { "Created" } th { span.sr { "Actions" } } } }
            tbody { @for u in &users { tr {
                td { (u.username) }
                td {
                    form.inline method="post" action=(format!("/users/{}", u.id)) {
                        (csrf_field(s))
                        label { span.sr { "Role of " (u.username) } select name="role" {
                            @for r in Role::ALL { option value=(r.as_str()) selected[r == u.role] { (role_label(r)) } }
                        } }
                        " " button type="submit" { "Change role" }
                    }
                }
                td { @if u.disabled_at.is_some() { "disabled" } @else { "active" } }
                td { (when(u.created_at)) }
                td {
                    @if u.id.as_str() != s.op.user_id {
                        form.inline method="post" action=(format!("/users/{}", u.id)) {
                            (csrf_field(s))
                            @if u.disabled_at.is_some() {
                                input type="hidden" name="disabled" value="false";
                                button type="submit" { "Enable " (u.username) }
                            } @else {
                                input type="hidden" name="disabled" value="true";
                                button.danger type="submit" { "Disable " (u.username) }
                            }
                        }
                    }
                }
            } } }
        } }
        p.muted { "Disabling a user signs them out everywhere at once: the console, the CLI and any open terminal." }
    };
    html_response(StatusCode::OK, page(s, Nav::Users, "Users", body))
}

/// `POST /users`: adds a user with a generated password, shown once.
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
    let role = match parse_role(form.get("role")) {
        Ok(r) => r,
        Err(e) => return fail(&s, Nav::Users, e),
    };
    let req = CreateUserRequest {
        username: form.text("username").unwrap_or("").to_owned(),
        password: None,
        role,
    };
    match api::create(&state, ip, &s.op, &req).await {
        Ok(created) => {
            let pw = created
                .initial_password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            let mut resp = render(&state, &s, Some((created.user.username.clone(), pw))).await;
            *resp.status_mut() = StatusCode::CREATED;
            resp
        }
        Err(e) => fail(&s, Nav::Users, e),
    }
}

/// `POST /users/{id}`: a role change, or disable/enable.
pub async fn update(
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
    let role = match form.get("role") {
        Some(v) => match parse_role(Some(v)) {
            Ok(r) => Some(r),
            Err(e) => return fail(&s, Nav::Users, e),
        },
        None => None,
    };
    let disabled = match form.get("disabled") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let req = UpdateUserRequest { role, disabled };
    match api::update(&state, ip, &s.op, &id, &req).await {
        Ok(_) => done("/users"),
        Err(e) => fail(&s, Nav::Users, e),
    }
}
