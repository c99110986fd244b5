//! Cookie sessions for the web pages (the console and `/device`): the
//! cookie holds an operator login token, the same kind the API takes as a
//! bearer, so logging out, disabling the user or changing the password ends
//! a browser's session exactly as it ends a CLI's.
//!
//! Every state-changing request is a form post that must (1) come from this
//! site (`Sec-Fetch-Site`, else `Origin`) and (2) carry the CSRF token
//! derived from the session: only a page that holds the cookie's value can
//! compute it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use tessera_core::secret::{hex, Secret, SecretKind};
use tessera_core::ErrorCode;

use crate::auth::Operator;
use crate::config::TlsMode;
use crate::http::error::ApiError;
use crate::http::extract::{body_error, form_has_nul};
use crate::{store, AppState};

pub const COOKIE: &str = "tessera_session";

/// A signed-in browser: the operator and the CSRF token its forms carry.
pub struct Signed {
    pub op: Operator,
    pub csrf: String,
    /// The cookie's login token (to end it on logout).
    pub token: String,
}

/// The session cookie's token, if the request has one.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The signed-in operator, if the cookie names a live login of an enabled
/// user (the same check as the API's bearer token).
pub async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<Signed> {
    let token = session_token(headers)?;
    let secret = Secret::parse(SecretKind::OperatorToken, &token).ok()?;
    let row = store::logins::by_token_hash(state.db(), &secret.hash())
        .await
        .ok()??;
    let op = Operator::from_session(row, state.now()).ok()?;
    tracing::Span::current().record("user", op.user_id.as_str());
    Some(Signed {
        op,
        csrf: csrf_for(&token),
        token,
    })
}

/// A CSRF token bound to the session: only someone who holds the session
/// cookie's value can compute it.
pub fn csrf_for(session_token: &str) -> String {
    hex(&Sha256::digest(format!("tessera/csrf/v1\0{session_token}")))
}

pub fn csrf_ok(session_token: &str, presented: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(csrf_for(session_token).as_bytes())))
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

/// A parsed form.
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// The form's fields; an unparsable form reads as empty (each handler
    /// then asks for what is missing), an oversized body or a NUL anywhere
    /// is refused.
    pub fn parse(body: Result<Bytes, BytesRejection>) -> Result<Form, ApiError> {
        let body = body.map_err(body_error)?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        if form_has_nul(&fields) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidField,
                "text may not contain NUL characters",
            ));
        }
        Ok(Form(fields))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field with surrounding blanks removed; empty reads as absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }
}

/// The session cookie: `HttpOnly`, `SameSite=Strict`, `Secure` under TLS,
/// for the whole site (the console and `/device` share it).
pub fn session_cookie(state: &AppState, token: &str, max_age: u64) -> HeaderValue {
    let secure = if matches!(state.config().tls, TlsMode::Off) {
        ""
    } else {
        "; Secure"
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("tessera_session=; Path=/; Max-Age=0"))
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
    fn csrf_tokens_bind_to_the_session() {
        let t = csrf_for("otk_a");
        assert!(csrf_ok("otk_a", Some(&t)));
        assert!(!csrf_ok("otk_b", Some(&t)));
        assert!(!csrf_ok("otk_a", None));
        assert!(!csrf_ok("otk_a", Some("")));
    }

    #[test]
    fn the_cookie_reads_among_others() {
        let h = headers(&[("cookie", "a=b; tessera_session=otk_x; c=d")]);
        assert_eq!(session_token(&h).as_deref(), Some("otk_x"));
        assert_eq!(session_token(&headers(&[("cookie", "a=b")])), None);
    }
}
