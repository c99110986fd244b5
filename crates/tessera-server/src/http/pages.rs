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
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tessera_core::codes::display_user_code;
use tessera_core::identity::DeviceId;
use tessera_core::roles::Permission;
use tessera_core::secret::{hex, Secret, SecretKind};
use tessera_core::ErrorCode;
use tessera_core::Timestamp;

use super::error::{retry_after, ApiError};
use super::extract::{body_error, form_has_nul, ClientIp};
use crate::auth::lockout::Locked;
use crate::auth::login::{self, LoginError};
use crate::auth::Operator;
use crate::config::TlsMode;
use crate::pairing::PairingError;
use crate::store::pairings::PairingRow;
use crate::{pairing, store, AppState};

const COOKIE: &str = "tessera_session";

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
         <title>{title} · Tessera</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:38rem;margin:3rem auto;padding:0 1rem;color:#1d2430}}\
         h1{{font-size:1.4rem}} .warn{{background:#fff4d6;border:1px solid #e0b84c;padding:.8rem;border-radius:6px}}\
         table{{border-collapse:collapse;margin:1rem 0}} td{{padding:.3rem .8rem .3rem 0;vertical-align:top}}\
         td:first-child{{color:#5b6472}} code{{font-size:1.05rem;word-break:break-all}}\
         input{{font-size:1.1rem;padding:.4rem}} button{{font-size:1rem;padding:.5rem 1.2rem;margin-right:.6rem}}\
         .error{{color:#a4161a}}</style></head><body>{body}</body></html>",
        title = escape(title),
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it Chromium posts this page's own forms
        // with `Origin: null`. `same-origin` still sends nothing to other sites.
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
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

/// The session cookie's token, if the request has one.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The signed-in operator and their session token, if any.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<(Operator, String)> {
    let token = session_token(headers)?;
    let secret = Secret::parse(SecretKind::OperatorToken, &token).ok()?;
    let row = store::logins::by_token_hash(state.db(), &secret.hash())
        .await
        .ok()??;
    Some((Operator::from_session(row, state.now()).ok()?, token))
}

/// A CSRF token bound to the session: only someone who holds the session
/// cookie's value can compute it.
fn csrf_for(session_token: &str) -> String {
    hex(&Sha256::digest(format!("tessera/csrf/v1\0{session_token}")))
}

fn csrf_ok(session_token: &str, presented: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(csrf_for(session_token).as_bytes())))
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

/// Refuses cross-site form posts (including login CSRF, where another site
/// signs the browser in to the attacker's account): browsers say where a
/// request came from in `Sec-Fetch-Site` and `Origin`.
///
/// `Sec-Fetch-Site` is decisive when present: the browser sets it and no
/// page can. `Origin` alone is unreliable: a browser sends `Origin: null`
/// on a same-origin form post whenever the page's referrer policy withholds
/// the referrer, so it is only consulted by browsers too old to send
/// `Sec-Fetch-Site`, where `null` is refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (Some("null"), _) => false,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn cross_site() -> Response {
    error_page(ApiError::forbidden("cross-site form submission refused"))
}

/// The form's fields; an unparsable form reads as empty (each handler then
/// asks for what is missing), an oversized body or a NUL anywhere is
/// refused with a page.
fn form_fields(body: Result<Bytes, BytesRejection>) -> Result<Vec<(String, String)>, ApiError> {
    let body = body.map_err(body_error)?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if form_has_nul(&fields) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "text may not contain NUL characters",
        ));
    }
    Ok(fields)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn session_cookie(state: &AppState, token: &str, max_age: u64) -> HeaderValue {
    let secure = if matches!(state.config().tls, TlsMode::Off) {
        ""
    } else {
        "; Secure"
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/device; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("tessera_session=; Max-Age=0"))
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_site_posts_are_recognised() {
        assert!(same_origin(&headers(&[("host", "t.example:8443")])));
        assert!(same_origin(&headers(&[
            ("host", "t.example:8443"),
            ("origin", "https://t.example:8443")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "t"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "t.example"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "t.example"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "t.example"),
            ("origin", "null")
        ])));
        assert!(
            same_origin(&headers(&[
                ("host", "t.example"),
                ("origin", "null"),
                ("sec-fetch-site", "same-origin")
            ])),
            "what Chromium sends for a same-origin post under a strict referrer policy"
        );
        assert!(!same_origin(&headers(&[
            ("host", "t.example"),
            ("origin", "https://t.example"),
            ("sec-fetch-site", "same-site")
        ])));
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
