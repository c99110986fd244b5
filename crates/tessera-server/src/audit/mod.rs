//! Audit events: what is recorded, in typed form, before it becomes a row.
//!
//! Every call site names an [`Action`] and fills [`AuditEvent::details`] with
//! ids, names and reasons. There is deliberately no way to pass a secret type
//! here: callers hand over `Secret::prefix()` when a credential must be named.

use std::net::IpAddr;

use serde_json::{Map, Value};
use tessera_core::audit::canonical_json;
use tessera_core::Timestamp;

use crate::store::{self, StoreResult, Tx};

/// Who acted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    User(String),
    Device(String),
    /// An unauthenticated caller, known by address.
    Anonymous,
    System,
}

impl Actor {
    pub fn render(&self, ip: Option<IpAddr>) -> String {
        match self {
            Actor::User(id) => format!("user:{id}"),
            Actor::Device(id) => format!("device:{id}"),
            Actor::Anonymous => match ip {
                Some(ip) => format!("ip:{ip}"),
                None => "anonymous".to_owned(),
            },
            Actor::System => "system".to_owned(),
        }
    }
}

/// Everything the audit log records. The string forms are stable: they are
/// what `GET /api/v1/audit?action=` filters on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    BootstrapAdminCreated,
    LoginSucceeded,
    LoginFailed,
    LockoutTriggered,
    Logout,
    PasswordChanged,
    UserCreated,
    UserRoleChanged,
    UserDisabled,
    UserEnabled,
    PairingRequested,
    PairingApproved,
    PairingDenied,
    DeviceEnrolled,
    DeviceAuthFailed,
    DeviceRevoked,
    DeviceTagged,
    KeyIssued,
    KeyRotated,
    KeyRevoked,
    EnrollmentTokenCreated,
    EnrollmentTokenUsed,
    EnrollmentTokenExhausted,
    EnrollmentTokenRevoked,
    EnrollmentRefused,
    SessionCreated,
    SessionJoined,
    SessionLeft,
    SessionEnded,
    ConsentRequested,
    ConsentGranted,
    ConsentDenied,
    ConsentTimedOut,
    ConsentAbandoned,
    SupportCodeCreated,
    SupportCodeConsumed,
    SupportCodeExpired,
    SupportCodeRefused,
    ViewerTokenMinted,
    ViewerThrottled,
    PolicyChanged,
    TrustEstablished,
    TrustRemoved,
    GrantCreated,
    GrantRenewed,
    GrantRevoked,
    GrantExpired,
    IdentityKeyRotated,
    AutoSessionCreated,
    AutoJoin,
    AutoMemberLeft,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::BootstrapAdminCreated => "bootstrap_admin_created",
            Action::LoginSucceeded => "login_succeeded",
            Action::LoginFailed => "login_failed",
            Action::LockoutTriggered => "lockout_triggered",
            Action::Logout => "logout",
            Action::PasswordChanged => "password_changed",
            Action::UserCreated => "user_created",
            Action::UserRoleChanged => "user_role_changed",
            Action::UserDisabled => "user_disabled",
            Action::UserEnabled => "user_enabled",
            Action::PairingRequested => "pairing_requested",
            Action::PairingApproved => "pairing_approved",
            Action::PairingDenied => "pairing_denied",
            Action::DeviceEnrolled => "device_enrolled",
            Action::DeviceAuthFailed => "device_auth_failed",
            Action::DeviceRevoked => "device_revoked",
            Action::DeviceTagged => "device_tagged",
            Action::KeyIssued => "key_issued",
            Action::KeyRotated => "key_rotated",
            Action::KeyRevoked => "key_revoked",
            Action::EnrollmentTokenCreated => "enrollment_token_created",
            Action::EnrollmentTokenUsed => "enrollment_token_used",
            Action::EnrollmentTokenExhausted => "enrollment_token_exhausted",
            Action::EnrollmentTokenRevoked => "enrollment_token_revoked",
            Action::EnrollmentRefused => "enrollment_refused",
            Action::SessionCreated => "session_created",
            Action::SessionJoined => "session_joined",
            Action::SessionLeft => "session_left",
            Action::SessionEnded => "session_ended",
            Action::ConsentRequested => "consent_requested",
            Action::ConsentGranted => "consent_granted",
            Action::ConsentDenied => "consent_denied",
            Action::ConsentTimedOut => "consent_timed_out",
            Action::ConsentAbandoned => "consent_abandoned",
            Action::SupportCodeCreated => "support_code_created",
            Action::SupportCodeConsumed => "support_code_consumed",
            Action::SupportCodeExpired => "support_code_expired",
            Action::SupportCodeRefused => "support_code_refused",
            Action::ViewerTokenMinted => "viewer_token_minted",
            Action::ViewerThrottled => "viewer_throttled",
            Action::PolicyChanged => "policy_changed",
            Action::TrustEstablished => "trust_established",
            Action::TrustRemoved => "trust_removed",
            Action::GrantCreated => "grant_created",
            Action::GrantRenewed => "grant_renewed",
            Action::GrantRevoked => "grant_revoked",
            Action::GrantExpired => "grant_expired",
            Action::IdentityKeyRotated => "identity_key_rotated",
            Action::AutoSessionCreated => "auto_session_created",
            Action::AutoJoin => "auto_join",
            Action::AutoMemberLeft => "auto_member_left",
        }
    }
}

/// One event to append.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub tenant_id: String,
    pub actor: Actor,
    pub action: Action,
    pub target: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub details: Map<String, Value>,
}

impl AuditEvent {
    pub fn new(tenant_id: &str, actor: Actor, action: Action) -> Self {
        AuditEvent {
            tenant_id: tenant_id.to_owned(),
            actor,
            action,
            target: None,
            source_ip: None,
            details: Map::new(),
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn ip(mut self, ip: Option<IpAddr>) -> Self {
        self.source_ip = ip;
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Appends `event` inside `tx`, so it commits or rolls back with the change
/// it records.
pub async fn record(tx: &mut Tx, now: Timestamp, event: AuditEvent) -> StoreResult<i64> {
    let actor = event.actor.render(event.source_ip);
    let ip = event.source_ip.map(|ip| ip.to_string());
    let details = canonical_json(&Value::Object(event.details));
    store::audit::append(
        tx,
        store::audit::NewEntry {
            occurred_at: now,
            tenant_id: &event.tenant_id,
            actor: &actor,
            action: event.action.as_str(),
            target: event.target.as_deref(),
            source_ip: ip.as_deref(),
            details,
        },
    )
    .await
}
