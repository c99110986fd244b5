//! JSON shapes of the HTTP API, shared by the server (which documents them in
//! its OpenAPI document) and every client (`tessera ctl`, the agent, tests).
//! Times are RFC 3339 strings in UTC.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::roles::{Permission, Role};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Integer fields that take any JSON number with a whole value: JSON
/// Schema's `integer` is a value, not a spelling, so `87436.0` is one, and
/// a client that writes it so must not be refused. A fraction, or a value
/// outside the field's type, is still refused.
mod whole_number {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    fn of<'de, D, T>(n: serde_json::Number) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64> + TryFrom<u64>,
    {
        let wrong = || D::Error::custom("expected a whole number in range");
        if let Some(u) = n.as_u64() {
            return T::try_from(u).map_err(|_| wrong());
        }
        if let Some(i) = n.as_i64() {
            return T::try_from(i).map_err(|_| wrong());
        }
        let f = n.as_f64().ok_or_else(wrong)?;
        // Past 2^53 a float no longer holds every whole number exactly.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if f.fract() != 0.0 || f.abs() > EXACT {
            return Err(wrong());
        }
        // In range and whole, so the cast is exact.
        T::try_from(f as i64).map_err(|_| wrong())
    }

    pub(super) fn exact<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64> + TryFrom<u64>,
    {
        of::<D, T>(serde_json::Number::deserialize(d)?)
    }

    pub(super) fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64> + TryFrom<u64>,
    {
        Option::<serde_json::Number>::deserialize(d)?
            .map(of::<D, T>)
            .transpose()
    }
}

/// A secret string inside a request or response (a password, a token shown
/// once). Its `Debug` is redacted so a logged struct does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString::new)
    }
}

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(Zeroizing::new(s.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginRequest {
    pub username: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub password: SecretString,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginResponse {
    /// Operator bearer token (`otk_…`). Shown once.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: SecretString,
    pub expires_at: String,
    pub user: UserView,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub created_at: String,
    pub disabled: bool,
    pub disabled_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WhoAmI {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub permissions: Vec<Permission>,
    pub tenant_id: String,
    pub session_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ChangePasswordRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub current_password: SecretString,
    /// 12–1024 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, format = Password, min_length = 12, max_length = 1024)
    )]
    pub new_password: SecretString,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ChangePasswordResponse {
    /// The user's other login sessions, ended by the change.
    pub revoked_sessions: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateUserRequest {
    /// 1–64 of `a-z 0-9 . _ @ -`, starting with a letter or digit, and not
    /// shaped like a UUID.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 64,
            pattern = r"^[a-z0-9][a-z0-9._@-]{0,63}$"
        )
    )]
    pub username: String,
    pub role: Role,
    /// Omit to have the server generate one, returned once. 12–1024
    /// characters.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, format = Password, min_length = 12, max_length = 1024)
    )]
    #[serde(default)]
    pub password: Option<SecretString>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateUserResponse {
    pub user: UserView,
    /// Present only when the server generated the password.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub initial_password: Option<SecretString>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UpdateUserRequest {
    /// At least one of `role` and `disabled` is given and not null (the
    /// document says so with an `anyOf`), else `nothing_to_change`.
    #[serde(default)]
    pub role: Option<Role>,
    /// `true` disables the account and ends its sessions; `false` enables it.
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEntryView {
    pub seq: i64,
    pub occurred_at: String,
    pub tenant_id: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous row.
    pub prev_hash: String,
    /// Hex SHA-256 of this row (see `tessera_core::audit`).
    pub hash: String,
}

impl AuditEntryView {
    /// What the row's hash covers, as `tessera_core::audit` hashes it;
    /// `None` if the time is not RFC 3339.
    pub fn content(&self) -> Option<crate::audit::AuditContent> {
        Some(crate::audit::AuditContent {
            seq: self.seq,
            occurred_at: crate::Timestamp::parse_rfc3339(&self.occurred_at)?,
            tenant_id: self.tenant_id.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            source_ip: self.source_ip.clone(),
            details: crate::audit::canonical_json(&self.details),
        })
    }

    /// `prev_hash` and `hash` as bytes; `None` unless both are 64 hex digits.
    pub fn hashes(&self) -> Option<([u8; 32], [u8; 32])> {
        Some((unhex(&self.prev_hash)?, unhex(&self.hash)?))
    }
}

/// `N` bytes from hex digits (either case), or `None`.
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()?
        .try_into()
        .ok()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
    /// With `order=newest`: pass as `before` for the next (older) page;
    /// absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// A node's signed statement that audit row `seq` has hash `hash` (see
/// `tessera_core::audit::Checkpoint` for the signed bytes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditCheckpointView {
    pub seq: i64,
    /// Hex SHA-256 of row `seq`.
    pub hash: String,
    pub signed_at: String,
    /// The node key that signed it (see `GET /api/v1/audit/keys`).
    pub kid: String,
    /// Hex Ed25519 signature.
    pub signature: String,
}

impl AuditCheckpointView {
    /// The signed statement; `None` if a field is not in its wire form.
    pub fn checkpoint(&self) -> Option<crate::audit::Checkpoint> {
        Some(crate::audit::Checkpoint {
            seq: self.seq,
            hash: unhex(&self.hash)?,
            signed_at: crate::Timestamp::parse_rfc3339(&self.signed_at)?,
            kid: self.kid.clone(),
            signature: unhex(&self.signature)?,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditCheckpointPage {
    pub checkpoints: Vec<AuditCheckpointView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
    /// Pass as `after_kid` with `next_after`.
    #[serde(default)]
    pub next_after_kid: Option<String>,
}

/// A node's public key, as every node publishes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NodeKeyView {
    pub kid: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
    pub created_at: String,
}

/// The server's own walk of the audit chain and its checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditVerifyReport {
    /// True when the chain links, every checkpoint's signature verifies
    /// against `node_keys` and names a row that still has the signed hash,
    /// and no row older than the checkpoint interval is left unsigned.
    pub ok: bool,
    /// What broke, in words, when `ok` is false.
    pub problem: Option<String>,
    /// Rows verified before the walk stopped.
    pub rows: u64,
    pub head_seq: i64,
    /// Hex hash of the last verified row.
    pub head_hash: String,
    pub checkpoints: u64,
    pub last_checkpoint: Option<AuditCheckpointView>,
}

// ---- devices ------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceView {
    /// DeviceId: base32 SHA-256 of the device's Ed25519 key.
    pub id: String,
    /// The current key's fingerprint ([`crate::identity::fingerprint`]):
    /// the id grouped in fours until the key is rotated.
    pub fingerprint: String,
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: Option<String>,
    pub tags: Vec<String>,
    pub online: bool,
    pub last_seen_at: Option<String>,
    pub last_ip: Option<String>,
    /// `pairing` or `enrollment_token`.
    pub enrolled_via: String,
    /// `user:<id>` or `token:<id>`.
    pub enrolled_by: String,
    pub owner_user_id: String,
    pub created_at: String,
    pub revoked: bool,
    pub revoked_at: Option<String>,
    pub revoked_reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceKeyView {
    pub id: String,
    /// Public prefix of the key (`cak_abcdefgh`); the key itself is never shown again.
    pub prefix: String,
    /// `active`, `pending` (rotation not yet confirmed) or `revoked`.
    pub state: String,
    pub created_at: String,
    pub created_by: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct IssuedKey {
    pub key: DeviceKeyView,
    /// The new `cak_` key. Shown once.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub device_key: SecretString,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RevokeRequest {
    /// Why, for the audit log and the device's user: at most 200
    /// characters, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")
    )]
    #[serde(default)]
    pub reason: Option<String>,
}

/// A device tag, as the OpenAPI document describes it (the API carries
/// tags as plain strings): 1–64 of `a-z 0-9 : . _ -`.
#[cfg(feature = "openapi")]
#[derive(ToSchema)]
#[schema(pattern = r"^[a-z0-9:._-]{1,64}$")]
pub struct Tag(pub String);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TagsRequest {
    /// Tags are 1–64 of `a-z 0-9 : . _ -`; a device has at most 32.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Tag>, max_items = 32))]
    #[serde(default)]
    pub add: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Tag>))]
    #[serde(default)]
    pub remove: Vec<String>,
}

// ---- enrollment ---------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateEnrollmentTokenRequest {
    /// How many devices may enroll with it (1–10000).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    #[serde(deserialize_with = "whole_number::exact")]
    pub uses: u32,
    /// Lifetime in seconds (60 s – 30 days).
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 2592000))]
    #[serde(deserialize_with = "whole_number::exact")]
    pub ttl_seconds: u64,
    /// Tags given to every device enrolled with it.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Tag>, max_items = 32))]
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnrollmentTokenView {
    pub id: String,
    pub prefix: String,
    pub uses_total: i64,
    pub uses_remaining: i64,
    pub tags: Vec<String>,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub last_used_at: Option<String>,
    /// `active`, `expired`, `exhausted` or `revoked`.
    pub state: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedEnrollmentToken {
    pub token: EnrollmentTokenView,
    /// The `etk_` token. Shown once.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub secret: SecretString,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnrollRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: SecretString,
    /// The device's identity document (docs/PROTOCOL.md §1): base64url
    /// without padding of 129 bytes, the first being version 1, so 172
    /// characters starting `A` and one of `Q`–`f`. Its self-signature must
    /// verify (`invalid_identity`), which no pattern can say.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 172,
            max_length = 172,
            pattern = r"^A[Q-Za-f][A-Za-z0-9_-]{170}$"
        )
    )]
    pub identity: String,
    /// 1–128 characters, not blank, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    /// 1–255 characters, not blank, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub hostname: String,
    /// 1–128 characters, not blank, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub os: String,
    /// Unix milliseconds when `proof` was made; within five minutes of the
    /// server's clock.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number::optional"
    )]
    pub issued_at: Option<i64>,
    /// Proof that the sender holds the identity key: base64url of its
    /// signature under `pairing-request` over `tessera-agent`, `name`,
    /// `hostname`, `os`, `issued_at`, the purpose `enroll` and
    /// `audience` (docs/PROTOCOL.md §3.1). Required and single-use; refused
    /// as `invalid_proof` when absent, stale, wrong or used before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// The origin (`scheme://host[:port]`) of the server the proof is meant
    /// for; it must be this server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 300))]
    pub audience: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnrollResponse {
    pub device_id: String,
    /// The device's `cak_` key. Shown once.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub device_key: SecretString,
}

// ---- pairing (RFC 8628) ------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PairingView {
    /// The pairing's id. The user code is deliberately not listed: approving
    /// takes the code read off the device itself.
    pub id: String,
    pub device_id: String,
    pub fingerprint: String,
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub source_ip: Option<String>,
    pub requested_at: String,
    pub expires_at: String,
}

/// RFC 8628 §3.2 device authorization response.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceAuthorizationResponse {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub device_code: SecretString,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// RFC 6749 §5.1 token response, plus the device id.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceTokenResponse {
    /// The device's `cak_` key.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub access_token: SecretString,
    /// Always `Bearer`.
    pub token_type: String,
    pub device_id: String,
}

/// RFC 6749 §5.2 error response.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct OAuthError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

// ---- events -------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventIn {
    /// `a-z 0-9 . _ -`, 1–64 characters.
    pub kind: String,
    pub subject: String,
    /// RFC 3339.
    pub occurred_at: String,
    /// A JSON object.
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub attributes: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventBatch {
    /// At most 1000 events; the whole body at most 1 MiB.
    pub events: Vec<EventIn>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct IngestResponse {
    /// Events stored for the first time.
    pub accepted: u64,
    /// Events already stored (same canonical id), not stored again.
    pub duplicates: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventView {
    pub event_id: String,
    pub kind: String,
    pub subject: String,
    pub occurred_at: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub attributes: serde_json::Value,
    pub device_id: String,
    pub owner_user_id: String,
    pub received_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

// ---- sessions -----------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SessionView {
    pub id: String,
    /// `attended`, `managed` or `automatic`.
    pub origin: String,
    pub device_id: String,
    pub device_name: String,
    pub created_by: String,
    pub created_by_name: Option<String>,
    /// What the session allows at most: `view` or `control`.
    pub access: String,
    /// What it carries: `shell` or `screen` (absent from older servers:
    /// a shell).
    #[serde(default = "shell_channel")]
    pub channel: String,
    /// `not_required`, `pending`, `granted` or `denied`.
    pub consent: String,
    /// `pending` (awaiting consent), `active` or `ended`.
    pub state: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// Why it ended, machine-readable (`consent_denied`, `shell_exited`, …).
    pub end_code: Option<String>,
    pub end_reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateSessionRequest {
    /// The device: its id (grouped or not) or its name.
    pub device: String,
    /// `control` (default) or `view`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::kinds::SessionAccess>))]
    #[serde(default)]
    pub access: Option<String>,
    /// `shell` (default) or `screen` (the device's agent must speak
    /// protocol 4, else `channel_unsupported`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::kinds::SessionChannel>))]
    #[serde(default)]
    pub channel: Option<String>,
}

fn shell_channel() -> String {
    "shell".to_owned()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ViewerTokenResponse {
    /// Signed, session-scoped, short-lived; pass as `Authorization: Bearer`
    /// to `/ws/viewer?session=<id>`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: SecretString,
    /// `control` or `view_only`.
    pub access: String,
    pub expires_at: String,
    pub session_id: String,
}

// ---- support codes ------------------------------------------------------

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateSupportCodeRequest {
    /// `control` (default) or `view`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::kinds::SessionAccess>))]
    #[serde(default)]
    pub access: Option<String>,
    /// Lifetime in seconds; default 1800 (30 minutes), 60–86400.
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 86400))]
    #[serde(default, deserialize_with = "whole_number::optional")]
    pub ttl_seconds: Option<u64>,
    /// `shell` (default) or `screen`: what the session carries once the
    /// person at the machine consents.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::kinds::SessionChannel>))]
    #[serde(default)]
    pub channel: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedSupportCode {
    pub id: String,
    /// `XXX-XXX-XXX`; shown once.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: SecretString,
    pub access: String,
    pub expires_at: String,
    /// `shell` or `screen`.
    #[serde(default = "shell_channel")]
    pub channel: String,
}

/// What the person at the machine may learn about a code before using it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SupportCodePreview {
    pub valid: bool,
    /// The technician who asked for the session.
    pub requested_by: String,
    pub access: String,
    pub expires_at: String,
    /// What the technician will get once consented: `shell` or `screen`.
    #[serde(default = "shell_channel")]
    pub channel: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BindSupportCodeRequest {
    /// `XXX-XXX-XXX` (in the body, not the URL, so it stays out of proxy logs).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: SecretString,
    /// The one-time agent's (ephemeral) identity document, in the form
    /// `EnrollRequest::identity` describes.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 172,
            max_length = 172,
            pattern = r"^A[Q-Za-f][A-Za-z0-9_-]{170}$"
        )
    )]
    pub identity: String,
    /// 1–128 characters, not blank, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    /// 1–255 characters, not blank, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub hostname: String,
    /// 1–128 characters, not blank, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub os: String,
    /// Unix milliseconds when `proof` was made; within five minutes of the
    /// server's clock.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number::optional"
    )]
    pub issued_at: Option<i64>,
    /// Proof that the sender holds the identity key: base64url of its
    /// signature under `pairing-request` over `tessera-agent`, `name`,
    /// `hostname`, `os`, `issued_at`, the purpose `support-bind` and
    /// `audience` (docs/PROTOCOL.md §3.1). Required and single-use; refused
    /// as `invalid_proof` when absent, stale, wrong or used before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// The origin (`scheme://host[:port]`) of the server the proof is meant
    /// for; it must be this server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 300))]
    pub audience: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BoundSupportCode {
    pub session_id: String,
    pub device_id: String,
    /// Key for this one session's control connection.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub device_key: SecretString,
    pub technician: String,
    pub access: String,
}

// ---- policy -------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Policy {
    /// Managed sessions ask the device for consent first (default false).
    pub require_consent_for_managed: bool,
}

// ---- trust between devices (device plane) --------------------------------

/// The server's view of a peer's keys: a hint that the peer's own pin must
/// match, never a source of trust.
/// A device this one can name: what `GET /api/v1/device/peers` lists, so
/// device commands accept a peer's name or id prefix.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PeerSummary {
    pub device_id: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PeerView {
    pub device_id: String,
    pub name: String,
    /// The current identity document (base64url).
    pub identity: String,
    pub ed25519: String,
    pub x25519: String,
    pub fingerprint: String,
    pub key_epoch: u32,
    pub online: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreateExchangeRequest {
    pub peer: String,
    /// Hex SHA-256 commitment to this device's identity and nonce.
    pub commitment: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExchangeStepRequest {
    /// Identity document (base64url).
    pub identity: String,
    /// Hex nonce (32 bytes).
    pub nonce: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExchangeView {
    pub id: String,
    pub initiator: String,
    pub responder: String,
    pub commitment: String,
    /// `committed`, `responded` or `revealed`.
    pub state: String,
    pub responder_identity: Option<String>,
    pub responder_nonce: Option<String>,
    pub initiator_identity: Option<String>,
    pub initiator_nonce: Option<String>,
    pub expires_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AttestationView {
    pub truster: String,
    pub trusted: String,
    pub trusted_fingerprint: String,
    pub issued_at: String,
    /// Whether the other side attested too, to the keys each holds now.
    pub mutual: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GrantView {
    pub id: String,
    /// The device that lets itself be auto-joined.
    pub granter: String,
    pub granter_name: Option<String>,
    /// The device that may auto-join it.
    pub grantee: String,
    pub grantee_name: Option<String>,
    pub grantee_fingerprint: String,
    pub scopes: Vec<String>,
    pub issued_at: String,
    pub expires_at: String,
    /// `active`, `expiring_soon`, `expired`, `revoked`, `key_mismatch`.
    pub state: String,
    pub last_used_at: Option<String>,
    pub revoked_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_fields_take_whole_numbers_in_any_spelling_and_refuse_fractions() {
        let token = |body: &str| serde_json::from_str::<CreateEnrollmentTokenRequest>(body);
        let ok = token(r#"{"uses": 920.0, "ttl_seconds": 87436.0}"#).unwrap();
        assert_eq!((ok.uses, ok.ttl_seconds), (920, 87436));
        let ok = token(r#"{"uses": 1, "ttl_seconds": 8.7436e4}"#).unwrap();
        assert_eq!(ok.ttl_seconds, 87436);
        for bad in [
            r#"{"uses": 1.5, "ttl_seconds": 60}"#,
            r#"{"uses": -1, "ttl_seconds": 60}"#,
            r#"{"uses": 4294967296, "ttl_seconds": 60}"#,
            r#"{"uses": 1, "ttl_seconds": -60.0}"#,
            r#"{"uses": 1, "ttl_seconds": 1e300}"#,
            r#"{"uses": "1", "ttl_seconds": 60}"#,
        ] {
            assert!(token(bad).is_err(), "{bad}");
        }
        let code = |body: &str| serde_json::from_str::<CreateSupportCodeRequest>(body);
        assert_eq!(
            code(r#"{"ttl_seconds": 600.0}"#).unwrap().ttl_seconds,
            Some(600)
        );
        assert_eq!(code(r#"{"ttl_seconds": null}"#).unwrap().ttl_seconds, None);
        assert_eq!(code("{}").unwrap().ttl_seconds, None);
        assert!(code(r#"{"ttl_seconds": 600.25}"#).is_err());
    }

    #[test]
    fn the_identity_document_pattern_describes_real_documents() {
        let doc = crate::identity::DeviceKeys::generate().document().encode();
        assert_eq!(doc.len(), 172);
        assert!(doc.starts_with('A'));
        assert!(
            matches!(doc.as_bytes()[1], b'Q'..=b'Z' | b'a'..=b'f'),
            "{doc}"
        );
        assert!(doc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
