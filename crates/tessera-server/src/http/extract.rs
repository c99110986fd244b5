//! Extractors that turn every way a request can be malformed into an
//! [`ApiError`] with a stable code, and never echo the offending value (a
//! password sent as a number must not come back in an error message).

use std::net::{IpAddr, SocketAddr};
use tessera_core::kinds::{SessionAccess, SessionChannel};
use tessera_core::ErrorCode;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::device::{
    check_key, check_scope, parse_device_key, DeviceAuthError, DevicePrincipal, KeyScope,
};
use crate::auth::{bearer_from, parse_operator_token, AuthError, Operator};
use crate::AppState;

/// A JSON body, deserialised with errors that name the field but not its value.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Maps a body-read failure; an over-limit body is 413 `body_too_large`.
/// The `access` field of a session or support-code request: `control` when
/// absent, else `control` or `view`.
pub fn session_access(field: Option<&str>) -> Result<SessionAccess, ApiError> {
    field.unwrap_or("control").parse().map_err(|_| {
        ApiError::unprocessable(ErrorCode::InvalidField, "`access` is control or view")
    })
}

pub fn session_channel(field: Option<&str>) -> Result<SessionChannel, ApiError> {
    field.unwrap_or("shell").parse().map_err(|_| {
        ApiError::unprocessable(ErrorCode::InvalidField, "`channel` is shell or screen")
    })
}

pub fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            "request body exceeds the size limit",
        )
    } else {
        ApiError::bad_request(
            ErrorCode::UnreadableBody,
            "the request body could not be read",
        )
    }
}

/// Deserialises JSON, naming the failing field and the kind of failure only.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = deserialize(&mut de)?;
    // Only whitespace may follow the document: trailing bytes or a second
    // document are refused, not ignored (something in front of the server
    // might read them differently).
    de.end().map_err(|_| {
        ApiError::bad_request(ErrorCode::MalformedJson, "request body is not valid JSON")
    })?;
    // PostgreSQL text cannot hold U+0000 (SQLite can): refused here, so a
    // NUL never reaches a query and both backends answer alike.
    if has_nul_escape(bytes) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "text may not contain NUL characters",
        ));
    }
    Ok(value)
}

/// Whether a parsed form carries a NUL in a name or value: refused for the
/// same reason as in JSON (PostgreSQL text cannot hold it).
pub fn form_has_nul(pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| k.contains('\0') || v.contains('\0'))
}

/// Whether JSON text holds a `\u0000` escape, the only way a JSON string
/// can carry a NUL (a raw NUL byte is not JSON at all). An escaped
/// backslash followed by `u0000` is not one.
fn has_nul_escape(bytes: &[u8]) -> bool {
    bytes.windows(6).enumerate().any(|(i, w)| {
        w == br"\u0000" && bytes[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0
    })
}

fn deserialize<T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::bad_request(ErrorCode::MalformedJson, "request body is not valid JSON")
            }
            serde_json::error::Category::Data => {
                let msg = inner.to_string();
                // serde names missing and unknown fields without their values.
                let message = if msg.starts_with("missing field") {
                    msg.split(" at line")
                        .next()
                        .unwrap_or("missing field")
                        .to_owned()
                } else {
                    format!("field `{path}` has an invalid value or type")
                };
                ApiError::unprocessable(ErrorCode::InvalidField, message)
            }
            serde_json::error::Category::Io => ApiError::bad_request(
                ErrorCode::UnreadableBody,
                "the request body could not be read",
            ),
        }
    })
}

/// Query-string parameters, with a stable error.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q).map(ApiQuery).map_err(|_| {
            ApiError::bad_request(ErrorCode::InvalidQuery, "query parameters are invalid")
        })
    }
}

/// The client's address: the socket peer, or, when the peer is a configured
/// trusted proxy, the address that proxy reports in `X-Forwarded-For`.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip_of(parts, state.trusted_proxies())))
    }
}

/// The base URL people use to reach this server: `--public-url` when set,
/// else the request's scheme (from the TLS setting) and `Host`.
///
/// Only `--public-url` is the operator's word: without it a client chooses
/// the `Host` it sends, so what rests on this (a proof's audience) binds
/// only as far as the operator configured it.
#[derive(Clone, Debug)]
pub struct ServerOrigin {
    /// `scheme://host[:port]`, without a trailing slash or path of its own
    /// when derived from `Host` (a `--public-url` keeps its path).
    pub base: String,
}

impl ServerOrigin {
    pub fn of(state: &AppState, headers: &axum::http::HeaderMap) -> ServerOrigin {
        if let Some(url) = &state.config().public_url {
            return ServerOrigin {
                base: url.trim_end_matches('/').to_owned(),
            };
        }
        let scheme = match state.config().tls {
            crate::config::TlsMode::Off => "http",
            _ => "https",
        };
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| state.config().listen.to_string());
        ServerOrigin {
            base: format!("{scheme}://{host}"),
        }
    }

    /// The audience a proof of key possession must name to be taken here
    /// ([`tessera_core::identity::audience_of`] of the base URL).
    pub fn audience(&self) -> String {
        tessera_core::identity::audience_of(&self.base).unwrap_or_else(|| self.base.clone())
    }
}

impl FromRequestParts<AppState> for ServerOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ServerOrigin::of(state, &parts.headers))
    }
}

/// See [`ClientIp`]; usable from middleware that has the parts.
pub fn client_ip_of(parts: &Parts, trusted: &[IpNet]) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let xff = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    crate::net::resolve_client_ip(peer, xff, trusted)
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_from(&parts.headers).ok_or(AuthError::MissingToken)?;
        let secret = parse_operator_token(token)?;
        let row = crate::store::logins::by_token_hash(state.db(), &secret.hash())
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let op = Operator::from_session(row, state.now())?;
        tracing::Span::current().record("user", op.user_id.as_str());
        Ok(op)
    }
}

impl FromRequestParts<AppState> for DevicePrincipal {
    type Rejection = ApiError;

    /// Every device route but the control channel: a support-code key is
    /// refused here (`403 support_key_scope`).
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate_device(parts, state, KeyScope::AnyDeviceRoute).await
    }
}

/// The principal of `/ws/device`: any live device key, a support-code
/// device's included (it serves its one session there).
pub struct ControlPrincipal(pub DevicePrincipal);

impl FromRequestParts<AppState> for ControlPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate_device(parts, state, KeyScope::ControlChannel)
            .await
            .map(ControlPrincipal)
    }
}

async fn authenticate_device(
    parts: &Parts,
    state: &AppState,
    scope: KeyScope,
) -> Result<DevicePrincipal, ApiError> {
    let token = bearer_from(&parts.headers).ok_or(DeviceAuthError::MissingKey)?;
    let secret = parse_device_key(token)?;
    let row = crate::store::devices::key_auth(state.db().pool(), &secret.hash())
        .await?
        .ok_or(DeviceAuthError::InvalidKey)?;
    if let Err(e) = check_key(&row) {
        let mut refusal = ApiError::from(e);
        // The device's own operator-given reason, so an agent told it was
        // revoked can say why (it names no secret).
        if let (DeviceAuthError::DeviceRevoked, Some(reason)) = (e, &row.device_revoked_reason) {
            refusal.message = format!("{} ({reason})", refusal.message);
        }
        return Err(refusal);
    }
    check_scope(&row, scope)?;
    tracing::Span::current().record("device", row.device_id.as_str());
    Ok(row.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Login {
        username: String,
        password: String,
    }

    #[test]
    fn json_errors_name_the_field_but_not_the_value() {
        let e = parse_json::<Login>(br#"{"username":"a","password":12345678901}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(e.message.contains("password"));
        assert!(!e.message.contains("12345678901"), "{}", e.message);

        let e = parse_json::<Login>(br#"{"username":"a"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.message, "missing field `password`");

        let e = parse_json::<Login>(b"{not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);

        // A NUL in any string is refused; the text `\u0000` is not a NUL.
        let e = parse_json::<Login>(br#"{"username":"a\u0000b","password":"b"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(parse_json::<Login>(br#"{"username":"a\\u0000b","password":"b"}"#).is_ok());
        let e = parse_json::<Login>(br#"{"username":"a\\\u0000","password":"b"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);

        // A valid document followed by anything but whitespace is refused.
        let doc = br#"{"username":"a","password":"b"}"#;
        assert!(parse_json::<Login>(&[doc.as_slice(), b" \n"].concat()).is_ok());
        for tail in [b" x".as_slice(), doc.as_slice(), b"}"] {
            let e = parse_json::<Login>(&[doc.as_slice(), tail].concat()).unwrap_err();
            assert_eq!(e.code, ErrorCode::MalformedJson);
        }
    }
}
