//! Why the agent's work with the server failed: one error for connecting,
//! the control channel's protocol and the state on disk, so the modules
//! that connect (`control`, `auto`, `trust`) share it without importing
//! each other.

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

/// A message's kind, for errors and logs.
pub fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Challenge(_) => "Challenge",
        Body::Hello(_) => "Hello",
        Body::Welcome(_) => "Welcome",
        Body::Heartbeat(_) => "Heartbeat",
        Body::HeartbeatAck(_) => "HeartbeatAck",
        Body::Error(_) => "Error",
        Body::Revoked(_) => "Revoked",
        Body::RotateKeyRequest(_) => "RotateKeyRequest",
        Body::RotateKeyOffer(_) => "RotateKeyOffer",
        Body::RotateKeyConfirm(_) => "RotateKeyConfirm",
        Body::RotateKeyDone(_) => "RotateKeyDone",
        Body::ChannelOpen(_) => "ChannelOpen",
        Body::ChannelData(_) => "ChannelData",
        Body::ChannelResize(_) => "ChannelResize",
        Body::ChannelClose(_) => "ChannelClose",
        Body::SessionEnded(_) => "SessionEnded",
        Body::ConsentRequest(_) => "ConsentRequest",
        Body::ConsentResponse(_) => "ConsentResponse",
        Body::ViewerReady(_) => "ViewerReady",
        Body::AutoSessionCreate(_) => "AutoSessionCreate",
        Body::AutoSessionCreated(_) => "AutoSessionCreated",
        Body::AutoJoinInvite(_) => "AutoJoinInvite",
        Body::AutoJoinAnswer(_) => "AutoJoinAnswer",
        Body::E2eHandshake(_) => "E2eHandshake",
        Body::E2eData(_) => "E2eData",
        Body::MemberLeft(_) => "MemberLeft",
    }
}
