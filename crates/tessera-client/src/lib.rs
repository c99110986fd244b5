//! A typed client for the Tessera HTTP API, used by `tessera ctl`, the agent
//! and the tests. It speaks HTTP only; what to do with the answers is the
//! caller's business. `control` holds the device side of the control
//! channel's handshake; `viewer` the viewer WebSocket.
//!
//! This module holds the client and its request plumbing; the calls are
//! grouped by the part of the API they use (`accounts`, `devices`,
//! `sessions`, `peers`).

mod accounts;
pub mod control;
mod devices;
mod error;
pub mod lookup;
mod peers;
pub mod screen;
mod sessions;
pub mod tls;
pub mod viewer;

use std::sync::Arc;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_core::api::SecretString;

pub use crate::accounts::AuditQuery;
use crate::error::error_from;
pub use crate::error::{is_unauthorized, ClientError, ClientResult};
pub use crate::tls::TlsTrust;

/// A connection to one Tessera server, optionally authenticated.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: url::Url,
    token: Option<SecretString>,
    tls: Arc<rustls::ClientConfig>,
}

impl ApiClient {
    pub fn new(server: &str, trust: &TlsTrust) -> ClientResult<Self> {
        let base = parse_server_url(server)?;
        let tls = tls::client_config(trust)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ApiClient {
            http,
            base,
            token: None,
            tls: Arc::new(tls),
        })
    }

    pub fn with_token(mut self, token: SecretString) -> Self {
        self.token = Some(token);
        self
    }

    pub fn base_url(&self) -> &url::Url {
        &self.base
    }

    /// The `ws(s)://` URL of a WebSocket path on this server.
    pub fn ws_url(&self, path: &str) -> ClientResult<url::Url> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let scheme = if self.base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        url.set_scheme(scheme)
            .map_err(|_| ClientError::Url("cannot make a WebSocket URL".into()))?;
        Ok(url)
    }

    /// Sends a request and decodes a JSON answer or the error envelope.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<T> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            status: status.as_u16(),
            detail: e.to_string(),
        })
    }

    /// Sends a request whose success has no body.
    pub async fn call_empty<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<()> {
        self.send(method, path, body).await.map(|_| ())
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<reqwest::Response> {
        let url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| error::transport_error(e, &self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from(resp).await)
    }
}

/// Reads what a user typed as the server: an `http://` or `https://` URL.
/// A bare `host:port` (the usual slip, which `url` reads as a relative URL
/// or as a URL whose scheme is the host name) gets a suggestion instead of
/// the parser's words.
pub fn parse_server_url(server: &str) -> ClientResult<url::Url> {
    let server = server.trim();
    let not_a_url = || {
        let host = match server.strip_prefix('[') {
            // `[::1]:8080`: an IPv6 address in brackets.
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => server.split([':', '/']).next().unwrap_or_default(),
        };
        // A loopback or bare address is most likely a local test server
        // on plain HTTP; a name is most likely a real one behind TLS.
        let scheme = if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
            "http"
        } else {
            "https"
        };
        ClientError::NotAUrl {
            given: server.to_owned(),
            suggestion: format!("{scheme}://{server}"),
        }
    };
    match url::Url::parse(server) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(u),
        Ok(_) if !server.contains("://") => Err(not_a_url()),
        Ok(u) => Err(ClientError::Url(format!(
            "`{server}`: {}:// is not supported; use an http:// or https:// URL",
            u.scheme()
        ))),
        Err(url::ParseError::RelativeUrlWithoutBase) => Err(not_a_url()),
        Err(e) => Err(ClientError::Url(format!("`{server}`: {e}"))),
    }
}

/// Percent-encodes one path segment.
pub(crate) fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(crate) fn serde_urlencoded_string<T: Serialize>(q: &T) -> String {
    let v = serde_json::to_value(q).unwrap_or_default();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            out.append_pair(&k, &s);
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_and_port_is_no_url_and_gets_a_suggestion() {
        for (typed, meant) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("localhost:8080", "http://localhost:8080"),
            ("tessera.example:8443", "https://tessera.example:8443"),
            ("[::1]:8080", "http://[::1]:8080"),
        ] {
            match parse_server_url(typed) {
                Err(ClientError::NotAUrl { given, suggestion }) => {
                    assert_eq!(given, typed);
                    assert_eq!(suggestion, meant);
                }
                other => panic!("{typed}: {other:?}"),
            }
        }
        assert!(parse_server_url("http://127.0.0.1:8080").is_ok());
        assert!(matches!(
            parse_server_url("ftp://example.com"),
            Err(ClientError::Url(_))
        ));
    }
}
