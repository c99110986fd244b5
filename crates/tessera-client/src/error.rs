//! What can go wrong talking to the server, and how an error answer is read.

use reqwest::StatusCode;
use serde::Deserialize;
use tessera_core::api::OAuthError;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with its error envelope.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<u64>,
    },
    #[error("cannot reach the server: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("unexpected answer from the server (HTTP {status}): {detail}")]
    Unexpected { status: u16, detail: String },
    #[error("invalid server URL: {0}")]
    Url(String),
    /// What was typed as the server has no `http://` or `https://` in front
    /// (`127.0.0.1:8080`), so it is no URL at all.
    #[error("`{given}` is not a URL: did you mean `{suggestion}`?")]
    NotAUrl { given: String, suggestion: String },
    /// An `https://` URL reached a server that speaks plain HTTP: the TLS
    /// handshake got an HTTP answer back.
    #[error("the server at {url} answered plain HTTP, not TLS")]
    PlainHttpServer { url: String },
    /// An `http://` URL reached a server whose answer is no HTTP at all —
    /// what a TLS server's alert looks like to an HTTP parser.
    #[error("the server at {url} did not answer in plain HTTP")]
    NotPlainHttp { url: String },
    /// The server's certificate does not chain to a trusted authority —
    /// typically `tessera server --tls-self-signed` reached without a pin.
    #[error("the server's certificate at {url} is not signed by a known authority")]
    UnknownIssuer { url: String },
    /// The pinned fingerprint is not the one of the certificate the server
    /// presented: another server, a regenerated certificate, or an attack.
    #[error("the server's certificate at {url} does not match the pinned fingerprint")]
    FingerprintMismatch { url: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    /// An RFC 6749 error from the OAuth endpoints, with the server's
    /// `error_description` when it sent one.
    #[error("{}", oauth_words(.0))]
    OAuth(OAuthError),
}

fn oauth_words(e: &OAuthError) -> String {
    match &e.error_description {
        Some(d) if !d.is_empty() => format!("{d} ({})", e.error),
        _ => e.error.clone(),
    }
}

impl ClientError {
    /// The stable error code, when the server gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            ClientError::OAuth(e) => Some(&e.error),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// Names a failed request's cause when it is a mistake the user can fix
/// (wrong scheme, missing certificate pin); otherwise keeps the transport
/// error as is. `url` is the server the request went to.
pub(crate) fn transport_error(e: reqwest::Error, url: &url::Url) -> ClientError {
    if url.scheme() == "http" && answer_was_not_http(&e) {
        return ClientError::NotPlainHttp {
            url: url.origin().ascii_serialization(),
        };
    }
    named_tls_error(&e, url).unwrap_or(ClientError::Transport(e))
}

/// Whether the answer failed to parse as HTTP from its first bytes. hyper
/// does not export its parse error kinds, so its message is matched; the
/// test `http_to_a_tls_server_says_to_use_https` notices if it changes.
fn answer_was_not_http(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.to_string() == "invalid HTTP version parsed" {
            return true;
        }
        next = err.source();
    }
    false
}

/// The typed error for a TLS failure the user can fix, if `e` is one.
/// Shared by HTTP (reqwest) and WebSocket (tungstenite) connections.
pub(crate) fn named_tls_error(
    e: &(dyn std::error::Error + 'static),
    url: &url::Url,
) -> Option<ClientError> {
    // A WebSocket URL names the same server as its https:// origin.
    let server = url
        .origin()
        .ascii_serialization()
        .replacen("wss://", "https://", 1);
    match tls_cause(e)? {
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            Some(ClientError::PlainHttpServer { url: server })
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            Some(ClientError::UnknownIssuer { url: server })
        }
        rustls::Error::General(m) if m == crate::tls::PIN_MISMATCH => {
            Some(ClientError::FingerprintMismatch { url: server })
        }
        _ => None,
    }
}

/// The rustls error somewhere in `e`'s chain. An `io::Error` hides the
/// error it wraps from `source()`, so each one is opened by hand.
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(t) = tls_cause(inner) {
                return Some(t);
            }
        }
        next = err.source();
    }
    None
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
    message: String,
}

pub(crate) async fn error_from(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let retry_after = retry_after_of(resp.headers());
    let bytes = resp.bytes().await.unwrap_or_default();
    envelope_error(status, retry_after, &bytes).unwrap_or_else(|| ClientError::Unexpected {
        status: status.as_u16(),
        detail: status
            .canonical_reason()
            .unwrap_or("no error body")
            .to_owned(),
    })
}

/// The `Retry-After` seconds of an answer, when it has them.
pub(crate) fn retry_after_of(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// [`ClientError::Api`] from the server's error envelope, if `bytes` is one.
pub(crate) fn envelope_error(
    status: StatusCode,
    retry_after: Option<u64>,
    bytes: &[u8],
) -> Option<ClientError> {
    let env = serde_json::from_slice::<ErrorEnvelope>(bytes).ok()?;
    Some(ClientError::Api {
        status: status.as_u16(),
        code: env.error.code,
        message: env.error.message,
        retry_after,
    })
}

/// Whether a status is the "not logged in" kind.
pub fn is_unauthorized(e: &ClientError) -> bool {
    e.status() == Some(StatusCode::UNAUTHORIZED.as_u16())
}
