//! Logging in, the operator's own account, users, and the audit log.

use reqwest::Method;
use serde::Serialize;
use tessera_core::api::{
    AuditCheckpointPage, AuditCheckpointView, AuditPage, AuditVerifyReport, ChangePasswordRequest,
    ChangePasswordResponse, CreateUserRequest, CreateUserResponse, LoginRequest, LoginResponse,
    NodeKeyView, SecretString, UpdateUserRequest, UserView, WhoAmI,
};

use crate::{encode_segment, serde_urlencoded_string, ApiClient, ClientResult};

/// Filters for [`ApiClient::audit_page`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// `oldest` (the server's default) or `newest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

impl ApiClient {
    pub async fn login(
        &self,
        username: &str,
        password: SecretString,
    ) -> ClientResult<LoginResponse> {
        let req = LoginRequest {
            username: username.to_owned(),
            password,
        };
        self.call(Method::POST, "/api/v1/auth/login", Some(&req))
            .await
    }

    pub async fn logout(&self) -> ClientResult<()> {
        self.call_empty::<()>(Method::POST, "/api/v1/auth/logout", None)
            .await
    }

    pub async fn whoami(&self) -> ClientResult<WhoAmI> {
        self.call::<(), _>(Method::GET, "/api/v1/auth/whoami", None)
            .await
    }

    pub async fn change_password(
        &self,
        req: &ChangePasswordRequest,
    ) -> ClientResult<ChangePasswordResponse> {
        self.call(Method::POST, "/api/v1/auth/password", Some(req))
            .await
    }

    pub async fn create_user(&self, req: &CreateUserRequest) -> ClientResult<CreateUserResponse> {
        self.call(Method::POST, "/api/v1/users", Some(req)).await
    }

    pub async fn list_users(&self) -> ClientResult<Vec<UserView>> {
        self.call::<(), _>(Method::GET, "/api/v1/users", None).await
    }

    pub async fn update_user(&self, user: &str, req: &UpdateUserRequest) -> ClientResult<UserView> {
        let path = format!("/api/v1/users/{}", encode_segment(user));
        self.call(Method::PATCH, &path, Some(req)).await
    }

    pub async fn audit_page(&self, q: &AuditQuery) -> ClientResult<AuditPage> {
        let query = serde_urlencoded_string(q);
        let path = if query.is_empty() {
            "/api/v1/audit".to_owned()
        } else {
            format!("/api/v1/audit?{query}")
        };
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// Signed checkpoints of rows after `after`, at most 1000.
    pub async fn audit_checkpoints(&self, after: i64) -> ClientResult<AuditCheckpointPage> {
        self.audit_checkpoints_page(after, None, 1000).await
    }

    /// Signed checkpoints after the cursor (`after`, `after_kid`: a page's
    /// `next_after` and `next_after_kid`), at most `limit`.
    pub async fn audit_checkpoints_page(
        &self,
        after: i64,
        after_kid: Option<&str>,
        limit: i64,
    ) -> ClientResult<AuditCheckpointPage> {
        let mut path = format!("/api/v1/audit/checkpoints?after={after}&limit={limit}");
        if let Some(kid) = after_kid {
            path.push_str("&after_kid=");
            path.extend(url::form_urlencoded::byte_serialize(kid.as_bytes()));
        }
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// Asks the server to sign the chain head now (if no checkpoint covers
    /// it); returns the covering checkpoint.
    pub async fn audit_checkpoint_now(&self) -> ClientResult<Option<AuditCheckpointView>> {
        self.call::<(), _>(Method::POST, "/api/v1/audit/checkpoints", None)
            .await
    }

    /// Every node's public key.
    pub async fn audit_node_keys(&self) -> ClientResult<Vec<NodeKeyView>> {
        self.call::<(), _>(Method::GET, "/api/v1/audit/keys", None)
            .await
    }

    /// The server's own verification of the chain and its checkpoints.
    pub async fn audit_verify(&self) -> ClientResult<AuditVerifyReport> {
        self.call::<(), _>(Method::GET, "/api/v1/audit/verify", None)
            .await
    }
}
