//! `/device`: the RFC 8628 verification page, server-rendered and working
//! without JavaScript.
//!
//! An operator signs in (a cookie holding an operator login token:
//! `HttpOnly`, `SameSite=Strict`, `Secure` under TLS), types the code the
//! device shows (or follows `verification_uri_complete`), sees what is
//! asking — name, hostname, OS, source address, time, and the DeviceId
//! fingerprint — and approves or denies. The page says plainly that this
//! authorises a *device*, to blunt remote phishing. Forms carry a CSRF token
//! derived from the session, pages forbid framing, and nothing is cached.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tessera_core::codes::display_user_code;
use tessera_core::identity::DeviceId;
use tessera_core::roles::Permission;
use tessera_core::ErrorCode;
use tessera_core::Timestamp;

use super::console::session::{self, csrf_for, csrf_ok, same_origin, session_cookie, Form};
use super::error::{retry_after, ApiError};
use super::extract::ClientIp;
use crate::auth::lockout::Locked;
use crate::auth::login::{self, LoginError};
use crate::auth::Operator;
use crate::pairing::PairingError;
use crate::store::pairings::PairingRow;
use crate::{pairing, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/device", get(show).post(decide))
        .route("/device/login", post(sign_in))
        .route("/device/logout", post(sign_out))
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Tessera</title><link rel=\"stylesheet\" href=\"{css}\"></head>\
         <body class=\"narrow\">{body}</body></html>",
        title = escape(title),
        css = super::console::assets::url("console.css"),
    );
    let mut resp = (status, html).into_response();
    super::console::secure_html(resp.headers_mut());
    resp
}

fn error_page(e: impl Into<ApiError>) -> Response {
    let e: ApiError = e.into();
    page(
        e.status,
        "Error",
        &format!(
            "<h1>Something went wrong</h1><p class=\"error\">{}</p><p><a href=\"/device\">Back</a></p>",
            escape(&e.message)
        ),
    )
}

/// A form shown again under a lockout's words ("locked out for 14 minutes
/// …; try again after 05:31 UTC"), with the wait in `Retry-After` too.
fn locked_page(title: &str, body: &str, locked: &Locked) -> Response {
    let mut resp = page(StatusCode::TOO_MANY_REQUESTS, title, body);
    if let Some(v) = retry_after(locked.remaining) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The signed-in operator and their session token, if any.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<(Operator, String)> {
    session::signed_in(state, headers)
        .await
        .map(|s| (s.op, s.token))
}

#[derive(Deserialize)]
pub struct ShowQuery {
    user_code: Option<String>,
}

fn login_form(user_code: Option<&str>, error: Option<&str>) -> String {
    let code = user_code.map(escape).unwrap_or_default();
    format!(
        "<h1>Approve a device</h1>\
         <p>A device is asking to join Tessera. Sign in as an operator to see what it is.</p>\
         {err}<form method=\"post\" action=\"/device/login\">\
         <input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
         <p><label>Username<br><input name=\"username\" autocomplete=\"username\" required></label></p>\
         <p><label>Password<br><input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
         <p><button type=\"submit\">Sign in</button></p></form>",
        err = error.map(|e| format!("<p class=\"error\">{}</p>", escape(e))).unwrap_or_default(),
    )
}

fn code_form(op: &Operator, csrf: &str, error: Option<&str>) -> String {
    format!(
        "<h1>Approve a device</h1><p>Signed in as <b>{user}</b>.</p>{err}\
         <form method=\"get\" action=\"/device\">\
         <p><label>Code shown on the device<br><input name=\"user_code\" placeholder=\"XXXX-XXXX\" \
         autocomplete=\"off\" autocapitalize=\"characters\" required></label></p>\
         <p><button type=\"submit\">Continue</button></p></form>{logout}",
        user = escape(&op.username),
        err = error
            .map(|e| format!("<p class=\"error\">{}</p>", escape(e)))
            .unwrap_or_default(),
        logout = logout_form(csrf),
    )
}

fn logout_form(csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/device/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\">Sign out</button></form>"
    )
}

fn details_page(op: &Operator, csrf: &str, p: &PairingRow, now: Timestamp) -> String {
    let fingerprint = DeviceId::parse(&p.device_id)
        .map(|d| d.grouped())
        .unwrap_or_else(|_| p.device_id.clone());
    let minutes_left = p.expires_at.since(now).as_secs() / 60;
    format!(
        "<h1>Approve a device?</h1>\
         <p class=\"warn\"><b>You are authorising a device</b> to join Tessera as a managed machine. \
         Approve only if you started this on that device yourself, just now. \
         If someone sent you this code, deny it.</p>\
         <table>\
         <tr><td>Device name</td><td><b>{name}</b></td></tr>\
         <tr><td>Hostname</td><td>{host}</td></tr>\
         <tr><td>Operating system</td><td>{os}</td></tr>\
         <tr><td>Requested from</td><td>{ip}</td></tr>\
         <tr><td>Requested at</td><td>{at} (expires in {left} min)</td></tr>\
         <tr><td>Code</td><td><code>{code}</code></td></tr>\
         <tr><td>Device fingerprint</td><td><code>{fp}</code></td></tr>\
         </table>\
         <p>Check that the fingerprint matches the one the device printed.</p>\
         <form method=\"post\" action=\"/device\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>\
         <p>Signed in as {user}.</p>{logout}",
        name = escape(&p.name),
        host = escape(&p.hostname),
        os = escape(&p.os),
        ip = escape(p.source_ip.as_deref().unwrap_or("unknown")),
        at = escape(&p.created_at.to_rfc3339()),
        left = minutes_left,
        code = escape(&display_user_code(&p.user_code)),
        fp = escape(&fingerprint),
        user = escape(&op.username),
        logout = logout_form(csrf),
    )
}

/// `GET /device[?user_code=…]`
async fn show(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<ShowQuery>,
) -> Response {
    let code = q.user_code.filter(|c| !c.trim().is_empty());
    let Some((op, token)) = signed_in(&state, &headers).await else {
        return page(
            StatusCode::OK,
            "Sign in",
            &login_form(code.as_deref(), None),
        );
    };
    let csrf = csrf_for(&token);
    let Some(code) = code else {
        return page(
            StatusCode::OK,
            "Approve a device",
            &code_form(&op, &csrf, None),
        );
    };
    if let Err(e) = op.require(Permission::ManageDevices) {
        return error_page(e);
    }
    if let Err(wait) = state.limiters().pairing_lookup.check(ip.0) {
        state
            .metrics()
            .rate_limited(state.limiters().pairing_lookup.name());
        return error_page(ApiError::too_many_requests(
            ErrorCode::RateLimited,
            "too many attempts; wait a moment",
            wait,
        ));
    }
    match pairing::find_pending(state.db(), &op, ip.0, &code).await {
        Ok(p) => page(
            StatusCode::OK,
            "Approve a device?",
            &details_page(&op, &csrf, &p, state.now()),
        ),
        Err(PairingError::NotFound) => page(
            StatusCode::NOT_FOUND,
            "Approve a device",
            &code_form(
                &op,
                &csrf,
                Some("No pending device has that code. Check it, or start again on the device."),
            ),
        ),
        Err(PairingError::LockedOut(locked)) => locked_page(
            "Approve a device",
            &code_form(&op, &csrf, Some(&locked.to_string())),
            &locked,
        ),
        Err(e @ PairingError::NotPending) => page(
            StatusCode::CONFLICT,
            "Approve a device",
            &code_form(&op, &csrf, Some(&e.to_string())),
        ),
        Err(e) => error_page(e),
    }
}

fn cross_site() -> Response {
    error_page(ApiError::forbidden("cross-site form submission refused"))
}

fn form_fields(body: Result<Bytes, BytesRejection>) -> Result<Vec<(String, String)>, ApiError> {
    Form::parse(body).map(|f| f.0)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn back_to(code: Option<&str>) -> String {
    match code.filter(|c| !c.is_empty()) {
        Some(c) => format!("/device?user_code={}", url_escape(c)),
        None => "/device".to_owned(),
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `POST /device/login`
async fn sign_in(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let fields = match form_fields(body) {
        Ok(fields) => fields,
        Err(e) => return error_page(e),
    };
    let code = field(&fields, "user_code");
    let (Some(user), Some(password)) = (field(&fields, "username"), field(&fields, "password"))
    else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in",
            &login_form(code, Some("Enter a username and password.")),
        );
    };
    if let Err(wait) = state.limiters().login.check(ip.0) {
        state.metrics().rate_limited(state.limiters().login.name());
        return error_page(ApiError::too_many_requests(
            ErrorCode::RateLimited,
            "too many attempts; wait a moment",
            wait,
        ));
    }
    match login::login(login::Logins::of(&state), ip.0, user, password).await {
        Ok(done) => {
            let mut resp = Redirect::to(&back_to(code)).into_response();
            let ttl = state.config().session_ttl.as_secs();
            resp.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&state, done.token.expose(), ttl),
            );
            resp
        }
        Err(LoginError::LockedOut(locked)) => locked_page(
            "Sign in",
            &login_form(code, Some(&locked.to_string())),
            &locked,
        ),
        Err(e @ (LoginError::AccountDisabled | LoginError::InvalidCredentials)) => page(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            &login_form(code, Some(&e.to_string())),
        ),
        Err(e) => error_page(e),
    }
}

/// `POST /device/logout`
async fn sign_out(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let fields = match form_fields(body) {
        Ok(fields) => fields,
        Err(e) => return error_page(e),
    };
    if let Some((op, token)) = signed_in(&state, &headers).await {
        if !csrf_ok(&token, field(&fields, "csrf")) {
            return error_page(ApiError::forbidden("the form expired; reload the page"));
        }
        if let Err(e) =
            login::logout(state.db(), ip.0, &op.tenant_id, &op.user_id, &op.session_id).await
        {
            return error_page(e);
        }
        crate::cluster::orders::login_ended(&state, &op.session_id).await;
    }
    let mut resp = Redirect::to("/device").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    resp
}

/// `POST /device`: approve or deny.
async fn decide(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let fields = match form_fields(body) {
        Ok(fields) => fields,
        Err(e) => return error_page(e),
    };
    let Some((op, token)) = signed_in(&state, &headers).await else {
        return page(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            &login_form(
                field(&fields, "user_code"),
                Some("Your session ended; sign in again."),
            ),
        );
    };
    if !csrf_ok(&token, field(&fields, "csrf")) {
        return error_page(ApiError::forbidden("the form expired; reload the page"));
    }
    let approve = match field(&fields, "decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return error_page(ApiError::bad_request(
                ErrorCode::InvalidField,
                "choose approve or deny",
            ))
        }
    };
    let code = field(&fields, "user_code").unwrap_or("");
    match pairing::decide(state.db(), &op, ip.0, code, approve).await {
        Ok(p) => {
            let verb = if approve { "approved" } else { "denied" };
            let next = if approve {
                "It will finish joining within a few seconds."
            } else {
                "It will not be able to join with this code."
            };
            page(
                StatusCode::OK,
                "Done",
                &format!(
                    "<h1>Device {verb}</h1><p><b>{}</b> ({}) was {verb}. {next}</p><p><a href=\"/device\">Approve another device</a></p>",
                    escape(&p.name),
                    escape(&p.hostname)
                ),
            )
        }
        Err(e) => error_page(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
