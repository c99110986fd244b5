//! Signing in and out, and changing one's own password.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::session::{self, same_origin, session_cookie, Form};
use super::{bare_page, fail, html_response, page, refusal, require_post, require_signed, Nav};
use crate::auth::login::{self, LoginError};
use crate::http::error::{retry_after, ApiError};
use crate::http::extract::ClientIp;
use crate::AppState;

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path on this site: never `//host` or `https://…` (an open
/// redirect would let a link sign someone in and send them elsewhere).
pub fn local_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

fn login_form(next: &str, error: Option<&str>) -> Markup {
    bare_page(
        "Sign in",
        html! {
            h1 { "Sign in to Tessera" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                p { label { "Username" br; input name="username" autocomplete="username" required autofocus; } }
                p { label { "Password" br; input name="password" type="password" autocomplete="current-password" required; } }
                p { button type="submit" { "Sign in" } }
            }
            p.muted { "The first administrator's password is printed by the server when it starts for the first time." }
        },
    )
}

/// `GET /login`
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = local_next(q.next.as_deref());
    if session::signed_in(&state, &headers).await.is_some() {
        return Redirect::to(next).into_response();
    }
    html_response(StatusCode::OK, login_form(next, None))
}

/// `POST /login`
pub async fn sign_in(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !same_origin(&headers) {
        return refusal(
            StatusCode::FORBIDDEN,
            "Sign-in forms from other sites are refused.",
        );
    }
    let form = match Form::parse(body) {
        Ok(f) => f,
        Err(e) => return refusal(e.status, &e.message),
    };
    let next = local_next(form.get("next")).to_owned();
    let (Some(user), Some(password)) = (form.text("username"), form.get("password")) else {
        return html_response(
            StatusCode::BAD_REQUEST,
            login_form(&next, Some("Enter a username and a password.")),
        );
    };
    if let Err(wait) = state.limiters().login.check(ip.0) {
        state.metrics().rate_limited(state.limiters().login.name());
        let mut resp = html_response(
            StatusCode::TOO_MANY_REQUESTS,
            login_form(
                &next,
                Some(&format!(
                    "Too many sign-in attempts from your address. Wait {} seconds, then try again.",
                    wait.as_secs().max(1)
                )),
            ),
        );
        if let Some(v) = retry_after(wait) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    match login::login(login::Logins::of(&state), ip.0, user, password).await {
        Ok(done) => {
            let mut resp = Redirect::to(&next).into_response();
            let ttl = state.config().session_ttl.as_secs();
            resp.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&state, done.token.expose(), ttl),
            );
            resp
        }
        Err(LoginError::LockedOut(locked)) => {
            let text = format!("Sign-in refused: {locked}.");
            let mut resp = html_response(
                StatusCode::TOO_MANY_REQUESTS,
                login_form(&next, Some(&text)),
            );
            if let Some(v) = retry_after(locked.remaining) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Err(LoginError::AccountDisabled) => html_response(
            StatusCode::UNAUTHORIZED,
            login_form(
                &next,
                Some("This account is disabled. Ask an administrator to enable it."),
            ),
        ),
        Err(LoginError::InvalidCredentials | LoginError::TooLong) => html_response(
            StatusCode::UNAUTHORIZED,
            login_form(
                &next,
                Some("The username or password is incorrect. Check them and try again."),
            ),
        ),
        Err(e) => {
            let e = ApiError::from(e);
            refusal(e.status, &e.message)
        }
    }
}

/// `POST /logout`: ends the login on every server, then clears the cookie.
pub async fn sign_out(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, _) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let op = &s.op;
    if let Err(e) =
        login::logout(state.db(), ip.0, &op.tenant_id, &op.user_id, &op.session_id).await
    {
        return fail(&s, Nav::Account, e);
    }
    crate::cluster::orders::login_ended(&state, &op.session_id).await;
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    resp
}

fn password_form(error: Option<&str>, csrf: &super::Signed) -> Markup {
    html! {
        h1 { "Change your password" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form method="post" action="/account/password" {
            (super::csrf_field(csrf))
            p { label { "Current password" br; input name="current" type="password" autocomplete="current-password" required; } }
            p { label { "New password" br; input name="new" type="password" autocomplete="new-password" required minlength="12"; } }
            p { button type="submit" { "Change password" } }
        }
        p.muted { "Changing it signs you out everywhere else." }
    }
}

/// `GET /account/password`
pub async fn password_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let s = match require_signed(&state, &headers, &uri).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    html_response(
        StatusCode::OK,
        page(&s, Nav::Account, "Password", password_form(None, &s)),
    )
}

/// `POST /account/password`
pub async fn change_password(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (s, form) = match require_post(&state, &headers, body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let (Some(current), Some(new)) = (form.get("current"), form.get("new")) else {
        return html_response(
            StatusCode::BAD_REQUEST,
            page(
                &s,
                Nav::Account,
                "Password",
                password_form(Some("Enter both passwords."), &s),
            ),
        );
    };
    match crate::http::auth::change_own_password(&state, ip, &s.op, current, new).await {
        Ok(ended) => html_response(
            StatusCode::OK,
            page(
                &s,
                Nav::Account,
                "Password",
                html! {
                    h1 { "Password changed" }
                    p role="status" { "Your password was changed. " (ended) " other sign-in(s) were ended." }
                    p { a href="/" { "Back to the overview" } }
                },
            ),
        ),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => html_response(
            e.status,
            page(
                &s,
                Nav::Account,
                "Password",
                password_form(Some(&e.message), &s),
            ),
        ),
        Err(e) => fail(&s, Nav::Account, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(local_next(Some("/devices?q=a")), "/devices?q=a");
        assert_eq!(local_next(Some("//evil.example/")), "/");
        assert_eq!(local_next(Some("https://evil.example/")), "/");
        assert_eq!(local_next(Some("/\\evil.example")), "/");
        assert_eq!(local_next(None), "/");
    }
}
