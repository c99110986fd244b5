//! The stable, machine-readable codes of the API's error envelope
//! (`{"error": {"code": …, "message": …}}`) and of WebSocket close reasons.
//!
//! Clients branch on these (the agent stops for good on
//! [`ErrorCode::DeviceRevoked`] and [`ErrorCode::KeyRevoked`]), so a code is
//! API: add new ones, never rename one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::kinds::{words, UnknownWord};

words! {
    /// Every code the server answers with.
    pub enum ErrorCode: "error code" {
        // The request itself.
        MalformedJson = "malformed_json",
        InvalidField = "invalid_field",
        InvalidQuery = "invalid_query",
        UnreadableBody = "unreadable_body",
        BodyTooLarge = "body_too_large",
        UnsupportedMediaType = "unsupported_media_type",
        MethodNotAllowed = "method_not_allowed",
        NotFound = "not_found",
        Conflict = "conflict",
        Internal = "internal",
        Unavailable = "unavailable",
        /// The database cannot be reached (down, restarting, out of
        /// connections): come back after `Retry-After`. The request did not
        /// take effect, unless the connection broke during its commit.
        StorageUnavailable = "storage_unavailable",
        WebsocketRequired = "websocket_required",
        // Who is asking.
        Unauthenticated = "unauthenticated",
        WrongCredentialType = "wrong_credential_type",
        InvalidCredentials = "invalid_credentials",
        Forbidden = "forbidden",
        AccountDisabled = "account_disabled",
        SessionExpired = "session_expired",
        SessionRevoked = "session_revoked",
        RateLimited = "rate_limited",
        LockedOut = "locked_out",
        // Users.
        UsernameTaken = "username_taken",
        InvalidUsername = "invalid_username",
        WeakPassword = "weak_password",
        LastAdmin = "last_admin",
        CannotDisableSelf = "cannot_disable_self",
        NothingToChange = "nothing_to_change",
        // Devices, keys, enrollment and pairing.
        InvalidIdentity = "invalid_identity",
        InvalidTag = "invalid_tag",
        AmbiguousDevice = "ambiguous_device",
        AlreadyEnrolled = "already_enrolled",
        AlreadyRevoked = "already_revoked",
        DeviceRevoked = "device_revoked",
        DeviceOffline = "device_offline",
        KeyRevoked = "key_revoked",
        KeyNotActive = "key_not_active",
        RotationPending = "rotation_pending",
        UnknownRotation = "unknown_rotation",
        InvalidToken = "invalid_token",
        TokenExpired = "token_expired",
        TokenUsed = "token_used",
        TokenExhausted = "token_exhausted",
        TokenRevoked = "token_revoked",
        PairingNotPending = "pairing_not_pending",
        /// A real code that was already used (another binder won the race).
        CodeUsed = "code_used",
        /// A real code that expired or was revoked before it was used.
        CodeExpired = "code_expired",
        InvalidEvent = "invalid_event",
        BatchTooLarge = "batch_too_large",
        SupportKeyScope = "support_key_scope",
        InvalidProof = "invalid_proof",
        // Sessions and viewers.
        SessionNotActive = "session_not_active",
        SessionEnded = "session_ended",
        AlreadyEnded = "already_ended",
        ConsentPending = "consent_pending",
        TooManyViewers = "too_many_viewers",
        TooManyConnections = "too_many_connections",
        WrongSession = "wrong_session",
        /// The device's agent is too old for the session's channel (a
        /// screen needs protocol 4).
        ChannelUnsupported = "channel_unsupported",
        /// The session is held by another node that this one cannot reach
        /// right now (NATS is down, or that node stopped answering).
        RelayUnavailable = "relay_unavailable",
        // Trust between devices.
        BadSignature = "bad_signature",
        StaleStatement = "stale_statement",
        InvalidGrant = "invalid_grant",
        ExchangeNotOpen = "exchange_not_open",
        // The audit log.
        /// The log no longer holds the head this node signed: it refuses
        /// to sign a rewritten log.
        AuditLogRewritten = "audit_log_rewritten",
    }
}

impl ErrorCode {
    /// Codes after which a device's credential will never work again.
    pub fn is_revocation(self) -> bool {
        matches!(self, ErrorCode::DeviceRevoked | ErrorCode::KeyRevoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(c
                .as_str()
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '_'));
        }
        assert!(ErrorCode::KeyRevoked.is_revocation());
        assert_eq!("device_revoked".parse(), Ok(ErrorCode::DeviceRevoked));
    }
}
