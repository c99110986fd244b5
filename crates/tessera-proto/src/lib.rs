//! Tessera's wire messages, generated from `proto/tessera.proto`, and the
//! protocol's size limits and version. No logic lives here.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tessera.v1.rs"));
}

pub mod keys;

pub use v1::envelope::Body;
pub use v1::Envelope;

/// Protocol version spoken by this build. Version 2 adds automatic sessions
/// between trusted devices and their end-to-end encryption; version 3 the
/// viewer presence notices (`ViewerJoined`, `ViewerLeft`) to the device;
/// version 4 screen channels (`Screen`).
pub const PROTOCOL_VERSION: u32 = 4;
/// The oldest version that can take part in automatic sessions.
pub const AUTO_SESSION_VERSION: u32 = 2;
/// The oldest version told who joins and leaves its sessions (older agents
/// would read an unknown message as the end of the connection).
pub const PRESENCE_VERSION: u32 = 3;
/// The oldest version that can open a screen channel (older agents are
/// refused one with `channel_unsupported` before it is asked).
pub const SCREEN_VERSION: u32 = 4;
/// Oldest protocol version this build accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket message a device may send (checked before buffering).
pub const MAX_DEVICE_FRAME: usize = 4 * 1024 * 1024;
/// Largest WebSocket message a viewer may send.
pub const MAX_VIEWER_FRAME: usize = 64 * 1024;
/// Largest `ClipboardText.text`, in bytes, either way: the one cap the
/// server enforces, the agent reads from its display and the viewer sends.
pub const MAX_CLIPBOARD_TEXT: usize = 32 * 1024;

/// Connection roles (in `Hello.role`).
pub mod role {
    /// The device's agent: one per device, newer replaces older.
    pub const AGENT: u32 = 0;
    /// A client of the same device alongside its agent.
    pub const CLIENT: u32 = 1;
}

/// Application close codes (4000–4999 are for applications).
pub mod close {
    /// The device or key was revoked.
    pub const REVOKED: u16 = 4001;
    /// Authentication or identity proof failed.
    pub const AUTH_FAILED: u16 = 4003;
    /// Protocol versions have nothing in common.
    pub const INCOMPATIBLE: u16 = 4004;
    /// No heartbeat within the allowed time.
    pub const HEARTBEAT_TIMEOUT: u16 = 4008;
    /// A newer connection of the same device replaced this one.
    pub const REPLACED: u16 = 4009;
    /// The server is stopping (RFC 6455 "going away"): devices and viewers
    /// reconnect, through the load balancer to another node if there is one.
    pub const GOING_AWAY: u16 = 1001;
    /// The reason text sent with [`GOING_AWAY`].
    pub const SHUTTING_DOWN: &str = "server_shutting_down";
}

impl std::fmt::Debug for v1::SessionKeyGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeyGrant")
            .field("key", &"<redacted>")
            .field("epoch", &self.epoch)
            .field("member_index", &self.member_index)
            .field("origin_key", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for v1::RotateKeyOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateKeyOffer")
            .field("key_id", &self.key_id)
            .field("device_key", &"<redacted>")
            .finish()
    }
}

impl Envelope {
    pub fn of(body: Body) -> Envelope {
        Envelope { body: Some(body) }
    }
}
