//! Why the agent's work with the server failed: one error for connecting,
//! the control channel's protocol and the state on disk, so the modules
//! that connect (`control`, `auto`, `trust`) share it without importing
//! each other.

use tessera_client::control::body_name;
use tessera_client::ClientError;
use tessera_proto::Body;

use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the server refused this device: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl AgentError {
    /// Errors that another attempt cannot fix.
    pub fn is_fatal(&self) -> bool {
        matches!(self, AgentError::State(_) | AgentError::Refused { .. })
    }

    /// A message other than the one the protocol expects. Names what
    /// arrived instead, never its contents (an offer carries a key).
    pub fn unexpected(wanted: &str, got: Option<Body>) -> AgentError {
        let got = match got {
            None => "the end of the connection",
            Some(body) => body_name(&body),
        };
        AgentError::Protocol(format!("expected {wanted}, got {got}"))
    }
}
