//! JSON shapes of the HTTP API, shared by the server (which documents them in
//! its OpenAPI document) and every client (`tessera ctl`, the agent, tests).
//! Times are RFC 3339 strings in UTC.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::roles::{Permission, Role};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

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
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
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
    pub username: String,
    pub role: Role,
    /// Omit to have the server generate one, returned once.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
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

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}
