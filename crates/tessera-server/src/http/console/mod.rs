//! The web console: server-rendered pages (maud) for operators, at `/`.
//!
//! Layers: these handlers read the cookie session ([`session`]), parse a
//! form, and call the same functions the JSON API's handlers call (for
//! example [`crate::http::devices::revoke`]), so a permission, a check or
//! an audit row cannot differ between the two. They only render.
//!
//! Every page gets [`secure_html`]'s headers: a Content-Security-Policy
//! that allows only this server's own scripts and styles (no inline script
//! or style at all), forbids framing, and keeps responses out of caches.
//! Scripts are progressive enhancement: every page and form works without
//! them; with them, presence updates live (server-sent events), lists
//! search as you type (htmx), the web terminal runs (xterm.js) and the
//! screen viewer draws a screen session on a canvas (fzstd).

pub mod account;
pub mod assets;
pub mod audit;
pub mod devices;
pub mod enrollment;
pub mod grants;
pub mod overview;
pub mod presence;
pub mod screen;
pub mod session;
pub mod sessions;
pub mod support;
pub mod users;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use tessera_core::roles::{Permission, Role};
use tessera_core::Timestamp;

use self::session::{csrf_ok, same_origin, Form, Signed};
use super::error::ApiError;
use crate::AppState;

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; font-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets/{file}", get(assets::serve))
        .route("/", get(overview::show))
        .route("/login", get(account::login_page).post(account::sign_in))
        .route("/logout", post(account::sign_out))
        .route(
            "/account/password",
            get(account::password_page).post(account::change_password),
        )
        .route("/devices", get(devices::list))
        .route("/devices/{id}", get(devices::show))
        .route(
            "/devices/{id}/revoke",
            get(devices::confirm_revoke).post(devices::revoke),
        )
        .route("/devices/{id}/tags", post(devices::tags))
        .route("/devices/{id}/keys", post(devices::issue_key))
        .route("/devices/{id}/keys/{key}/revoke", post(devices::revoke_key))
        .route("/events/presence", get(presence::stream))
        .route("/pairings", get(enrollment::pairings))
        .route("/pairings/decide", post(enrollment::decide))
        .route(
            "/enrollment",
            get(enrollment::tokens).post(enrollment::create_token),
        )
        .route("/enrollment/{id}/revoke", post(enrollment::revoke_token))
        .route("/sessions", get(sessions::list).post(sessions::open))
        .route("/sessions/{id}/end", post(sessions::end))
        .route("/sessions/{id}/terminal", get(sessions::terminal))
        .route("/sessions/{id}/screen", get(screen::show))
        .route("/sessions/{id}/viewer-token", post(sessions::viewer_token))
        .route("/support", get(support::show).post(support::create))
        .route("/grants", get(grants::list))
        .route("/grants/{id}/revoke", post(grants::revoke))
        .route("/audit", get(audit::list))
        .route("/audit/verify", post(audit::verify))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}", post(users::update))
}

/// The headers of every HTML page.
pub fn secure_html(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
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
}

/// An HTML response with the console's headers.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (status, markup.into_string()).into_response();
    secure_html(resp.headers_mut());
    resp
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Devices,
    Pairings,
    Enrollment,
    Sessions,
    Support,
    Grants,
    Audit,
    Users,
    Account,
}

/// A whole page: the navigation for `s`'s role, then `body`.
pub fn page(s: &Signed, nav: Nav, title: &str, body: Markup) -> Markup {
    let admin = s.op.role.allows(Permission::ManageUsers);
    let manage = s.op.role.allows(Permission::ManageDevices);
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(n == nav).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Tessera" }
                    nav aria-label="Main" {
                        ul {
                            (item(Nav::Overview, "/", "Overview"))
                            (item(Nav::Devices, "/devices", "Devices"))
                            @if manage {
                                (item(Nav::Pairings, "/pairings", "Pairings"))
                                (item(Nav::Enrollment, "/enrollment", "Enrollment"))
                            }
                            (item(Nav::Sessions, "/sessions", "Sessions"))
                            @if s.op.role.allows(Permission::Control) {
                                (item(Nav::Support, "/support", "Support codes"))
                            }
                            (item(Nav::Grants, "/grants", "Grants"))
                            @if s.op.role.allows(Permission::AuditRead) {
                                (item(Nav::Audit, "/audit", "Audit"))
                            }
                            @if admin { (item(Nav::Users, "/users", "Users")) }
                        }
                    }
                    div.who {
                        a href="/account/password" aria-current=[(nav == Nav::Account).then_some("page")] {
                            (s.op.username) " (" (s.op.role.as_str()) ")"
                        }
                        form method="post" action="/logout" {
                            (csrf_field(s))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A page for someone not signed in.
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.narrow { main #main { (body) } }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx must not add inline styles or evaluate attributes: the
            // CSP forbids both.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
            title { (title) " · Tessera" }
            link rel="stylesheet" href=(assets::url("console.css"));
            script src=(assets::url("htmx-2.0.4.min.js")) defer {}
            script src=(assets::url("console.js")) defer {}
        }
    }
}

pub fn csrf_field(s: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A time as UTC text, which the console's script rewrites into the
/// browser's local time zone (UTC stays in the tooltip).
pub fn when(t: Timestamp) -> Markup {
    let utc = t.to_rfc3339();
    let shown = utc
        .get(..19)
        .map(|s| s.replace('T', " "))
        .unwrap_or_else(|| utc.clone());
    html! { time datetime=(utc) title=(format!("{shown} UTC")) { (shown) " UTC" } }
}

pub fn maybe_when(t: Option<Timestamp>, none: &str) -> Markup {
    match t {
        Some(t) => when(t),
        None => html! { span.muted { (none) } },
    }
}

/// A short explanation under a heading when there is nothing to list.
pub fn empty(text: &str, next: Markup) -> Markup {
    html! { div.empty { p { (text) } (next) } }
}

/// The GET side: the signed-in operator, else a redirect to sign in that
/// comes back here.
pub async fn require_signed(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Signed, Response> {
    match session::signed_in(state, headers).await {
        Some(s) => Ok(s),
        None => {
            let back = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Err(Redirect::to(&format!("/login?next={}", url_escape(back))).into_response())
        }
    }
}

/// The POST side: same-site, signed in, and the form's CSRF token right;
/// otherwise a refusal page (403) and nothing happens.
pub async fn require_post(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Signed, Form), Response> {
    if !same_origin(headers) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "This form did not come from this console, so it was refused. Open the console and try again.",
        ));
    }
    let form = Form::parse(body).map_err(|e| refusal(e.status, &e.message))?;
    let Some(s) = session::signed_in(state, headers).await else {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "Your session has ended. Sign in again, then repeat what you were doing.",
        ));
    };
    if !csrf_ok(&s.token, form.get("csrf")) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "This form has expired or was not issued to you (its security token is missing or wrong). Reload the page and try again.",
        ));
    }
    Ok((s, form))
}

/// A refusal before anyone is known (no navigation).
pub fn refusal(status: StatusCode, message: &str) -> Response {
    html_response(
        status,
        bare_page(
            "Refused",
            html! {
                h1 { "Not done" }
                p.error role="alert" { (message) }
                p { a href="/" { "Back to the console" } }
            },
        ),
    )
}

/// An error from a domain function, in words, inside the console.
pub fn fail(s: &Signed, nav: Nav, e: impl Into<ApiError>) -> Response {
    let e: ApiError = e.into();
    let next = match e.status {
        StatusCode::FORBIDDEN => {
            "Your role does not allow this. Ask an administrator if you need it."
        }
        StatusCode::NOT_FOUND => "It may have been removed, or you may not be allowed to see it.",
        StatusCode::CONFLICT => "Reload the page to see its current state.",
        StatusCode::TOO_MANY_REQUESTS => "Wait a moment, then try again.",
        s if s.is_server_error() => "Try again; if it keeps failing, check the server's log.",
        _ => "Check what you entered and try again.",
    };
    let mut resp = html_response(
        e.status,
        page(
            s,
            nav,
            "Not done",
            html! {
                h1 { "Not done" }
                p.error role="alert" { (e.message) }
                p { (next) }
                p { a href="/" { "Back to the overview" } }
            },
        ),
    );
    if let Some(v) = e.retry_after.and_then(super::error::retry_after) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// After a form that changed something: back to a page (303, so a reload
/// does not post again).
pub fn done(to: &str) -> Response {
    Redirect::to(to).into_response()
}

pub fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A role's name for people.
pub fn role_label(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Operator => "operator",
        Role::Viewer => "viewer (read-only)",
    }
}
