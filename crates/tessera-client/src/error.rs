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
    #[error("TLS setup: {0}")]
    Tls(String),
    /// An RFC 6749 error from the OAuth endpoints.
    #[error("{}", .0.error)]
    OAuth(OAuthError),
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
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
        Ok(env) => ClientError::Api {
            status: status.as_u16(),
            code: env.error.code,
            message: env.error.message,
            retry_after,
        },
        Err(_) => ClientError::Unexpected {
            status: status.as_u16(),
            detail: status
                .canonical_reason()
                .unwrap_or("no error body")
                .to_owned(),
        },
    }
}

/// Whether a status is the "not logged in" kind.
pub fn is_unauthorized(e: &ClientError) -> bool {
    e.status() == Some(StatusCode::UNAUTHORIZED.as_u16())
}
