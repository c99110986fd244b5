//! The WebSocket opening handshake on the server's side (RFC 6455 §4.2):
//! an extractor that checks the request is an upgrade to WebSocket, and
//! the `101 Switching Protocols` answer that hands the connection to
//! [`crate::ws::WebSocket`]. What to accept is decided by plain functions
//! ([`accept_key`], [`choose_protocol`]), tested directly.

use axum::extract::FromRequestParts;
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use sha1::{Digest, Sha1};
use tessera_core::ErrorCode;

use super::error::ApiError;

use crate::ws::WebSocket;

/// A request to upgrade to WebSocket, checked; [`Upgrade::on_upgrade`]
/// answers it.
pub struct Upgrade {
    key: HeaderValue,
    offered: Vec<String>,
    on_upgrade: OnUpgrade,
}

/// The request is not a WebSocket upgrade this server can accept
/// (`426 websocket_required`).
#[derive(Debug, PartialEq, Eq)]
pub enum NotWebSocket {
    NotGet,
    MissingUpgrade,
    WrongVersion,
    MissingKey,
    /// The connection cannot be taken over (HTTP/2, or already taken).
    NotUpgradable,
}

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            ErrorCode::WebsocketRequired,
            "this endpoint speaks WebSocket",
        )
        .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(NotWebSocket::NotGet);
        }
        let key = check_request(&parts.headers)?.clone();
        let offered = offered_protocols(&parts.headers);
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(NotWebSocket::NotUpgradable)?;
        Ok(Self {
            key,
            offered,
            on_upgrade,
        })
    }
}

impl Upgrade {
    /// Answers `101 Switching Protocols` (naming the first protocol the
    /// client offered that `supported` holds, if any) and, once the
    /// connection is handed over, runs `serve` on it with messages capped
    /// at `max_message` bytes.
    pub fn on_upgrade<F, Fut>(
        self,
        supported: &[&'static str],
        max_message: usize,
        serve: F,
    ) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let protocol = choose_protocol(&self.offered, supported);
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            // The client went away before the answer reached it: nothing
            // to serve.
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            serve(WebSocket::serve(upgraded, max_message)).await;
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept_key(self.key.as_bytes())) {
            headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(p) = protocol {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
        }
        response
    }
}

/// RFC 6455 §4.2.1: a GET with `Connection: upgrade`, `Upgrade:
/// websocket`, `Sec-WebSocket-Version: 13` and a key. Returns the key.
fn check_request(headers: &HeaderMap) -> Result<&HeaderValue, NotWebSocket> {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(CONNECTION, "upgrade") || !has_token(UPGRADE, "websocket") {
        return Err(NotWebSocket::MissingUpgrade);
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(NotWebSocket::WrongVersion);
    }
    headers
        .get(SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or(NotWebSocket::MissingKey)
}

fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first protocol the client offered that the server speaks.
pub fn choose_protocol(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    offered
        .iter()
        .find_map(|o| supported.iter().copied().find(|s| s == o))
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    data_encoding::BASE64.encode(&sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_one_rfc_6455_gives() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn the_first_offer_the_server_speaks_is_chosen() {
        let offered = |s: &[&str]| s.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        let supported = ["tessera.viewer"];
        assert_eq!(
            choose_protocol(&offered(&["tessera.token.x", "tessera.viewer"]), &supported),
            Some("tessera.viewer")
        );
        assert_eq!(choose_protocol(&offered(&["chat"]), &supported), None);
        assert_eq!(choose_protocol(&[], &supported), None);
    }

    #[test]
    fn a_request_that_is_not_an_upgrade_is_named() {
        let mut h = HeaderMap::new();
        assert_eq!(check_request(&h), Err(NotWebSocket::MissingUpgrade));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(check_request(&h), Err(NotWebSocket::WrongVersion));
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(check_request(&h), Err(NotWebSocket::WrongVersion));
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        assert_eq!(check_request(&h), Err(NotWebSocket::MissingKey));
        h.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert!(check_request(&h).is_ok());
    }
}
