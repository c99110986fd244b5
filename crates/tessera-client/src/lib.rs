//! A typed client for the Tessera HTTP API, used by `tessera ctl`, the agent
//! and the tests. It speaks HTTP only; what to do with the answers is the
//! caller's business.

pub mod control;
pub mod tls;
pub mod viewer;

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_core::api::{
    AuditPage, ChangePasswordRequest, ChangePasswordResponse, CreateEnrollmentTokenRequest,
    CreateUserRequest, CreateUserResponse, CreatedEnrollmentToken, DeviceAuthorizationResponse,
    DeviceKeyView, DeviceTokenResponse, DeviceView, EnrollRequest, EnrollResponse,
    EnrollmentTokenView, EventBatch, EventPage, IngestResponse, IssuedKey, LoginRequest,
    LoginResponse, OAuthError, PairingView, RevokeRequest, SecretString, TagsRequest,
    UpdateUserRequest, UserView, WhoAmI,
};

pub use crate::tls::TlsTrust;

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
    pub limit: Option<i64>,
}

/// A connection to one Tessera server, optionally authenticated.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: url::Url,
    token: Option<SecretString>,
    tls: Arc<rustls::ClientConfig>,
}

impl ApiClient {
    pub fn new(server: &str, trust: &TlsTrust) -> ClientResult<Self> {
        let base = url::Url::parse(server).map_err(|e| ClientError::Url(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Url("use an http:// or https:// URL".into()));
        }
        let tls = tls::client_config(trust)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ApiClient {
            http,
            base,
            token: None,
            tls: Arc::new(tls),
        })
    }

    pub fn with_token(mut self, token: SecretString) -> Self {
        self.token = Some(token);
        self
    }

    pub fn base_url(&self) -> &url::Url {
        &self.base
    }

    /// The `ws(s)://` URL of a WebSocket path on this server.
    pub fn ws_url(&self, path: &str) -> ClientResult<url::Url> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let scheme = if self.base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        url.set_scheme(scheme)
            .map_err(|_| ClientError::Url("cannot make a WebSocket URL".into()))?;
        Ok(url)
    }

    /// Sends a request and decodes a JSON answer or the error envelope.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<T> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            status: status.as_u16(),
            detail: e.to_string(),
        })
    }

    /// Sends a request whose success has no body.
    pub async fn call_empty<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<()> {
        self.send(method, path, body).await.map(|_| ())
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<reqwest::Response> {
        let url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from(resp).await)
    }

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
}

impl ApiClient {
    // ---- devices (operator plane) -------------------------------------

    pub async fn list_devices(&self) -> ClientResult<Vec<DeviceView>> {
        self.call::<(), _>(Method::GET, "/api/v1/devices", None)
            .await
    }

    pub async fn device(&self, id: &str) -> ClientResult<DeviceView> {
        let path = format!("/api/v1/devices/{}", encode_segment(id));
        self.call::<(), _>(Method::GET, &path, None).await
    }

    pub async fn revoke_device(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> ClientResult<DeviceView> {
        let path = format!("/api/v1/devices/{}/revoke", encode_segment(id));
        self.call(Method::POST, &path, Some(&RevokeRequest { reason }))
            .await
    }

    pub async fn tag_device(&self, id: &str, req: &TagsRequest) -> ClientResult<DeviceView> {
        let path = format!("/api/v1/devices/{}/tags", encode_segment(id));
        self.call(Method::POST, &path, Some(req)).await
    }

    pub async fn device_keys(&self, id: &str) -> ClientResult<Vec<DeviceKeyView>> {
        let path = format!("/api/v1/devices/{}/keys", encode_segment(id));
        self.call::<(), _>(Method::GET, &path, None).await
    }

    pub async fn issue_device_key(&self, id: &str) -> ClientResult<IssuedKey> {
        let path = format!("/api/v1/devices/{}/keys", encode_segment(id));
        self.call::<(), _>(Method::POST, &path, None).await
    }

    pub async fn revoke_device_key(
        &self,
        id: &str,
        key_id: &str,
        reason: Option<String>,
    ) -> ClientResult<DeviceKeyView> {
        let path = format!(
            "/api/v1/devices/{}/keys/{}/revoke",
            encode_segment(id),
            encode_segment(key_id)
        );
        self.call(Method::POST, &path, Some(&RevokeRequest { reason }))
            .await
    }

    // ---- enrollment ---------------------------------------------------

    pub async fn create_enrollment_token(
        &self,
        req: &CreateEnrollmentTokenRequest,
    ) -> ClientResult<CreatedEnrollmentToken> {
        self.call(Method::POST, "/api/v1/enrollment-tokens", Some(req))
            .await
    }

    pub async fn enrollment_tokens(&self) -> ClientResult<Vec<EnrollmentTokenView>> {
        self.call::<(), _>(Method::GET, "/api/v1/enrollment-tokens", None)
            .await
    }

    pub async fn revoke_enrollment_token(&self, id: &str) -> ClientResult<()> {
        let path = format!("/api/v1/enrollment-tokens/{}/revoke", encode_segment(id));
        self.call_empty::<()>(Method::POST, &path, None).await
    }

    /// Device plane: enroll with an enrollment token.
    pub async fn enroll(&self, req: &EnrollRequest) -> ClientResult<EnrollResponse> {
        self.call(Method::POST, "/api/v1/enroll", Some(req)).await
    }

    // ---- pairing ------------------------------------------------------

    pub async fn pairings(&self) -> ClientResult<Vec<PairingView>> {
        self.call::<(), _>(Method::GET, "/api/v1/pairings", None)
            .await
    }

    pub async fn decide_pairing(
        &self,
        user_code: &str,
        approve: bool,
    ) -> ClientResult<PairingView> {
        let verb = if approve { "approve" } else { "deny" };
        let path = format!("/api/v1/pairings/{}/{verb}", encode_segment(user_code));
        self.call::<(), _>(Method::POST, &path, None).await
    }

    /// RFC 8628 §3.1, as a device.
    pub async fn device_authorization(
        &self,
        form: &[(&str, &str)],
    ) -> ClientResult<DeviceAuthorizationResponse> {
        self.oauth_form("/oauth/device_authorization", form).await
    }

    /// RFC 8628 §3.4, as a device: one poll.
    pub async fn device_token(
        &self,
        device_code: &str,
        client_id: &str,
    ) -> ClientResult<DeviceTokenResponse> {
        self.oauth_form(
            "/oauth/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", client_id),
            ],
        )
        .await
    }

    async fn oauth_form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> ClientResult<T> {
        let url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
                status: status.as_u16(),
                detail: e.to_string(),
            });
        }
        match serde_json::from_slice::<OAuthError>(&bytes) {
            Ok(e) => Err(ClientError::OAuth(e)),
            Err(_) => Err(ClientError::Unexpected {
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }

    // ---- events -------------------------------------------------------

    /// Device plane: push a batch of events.
    pub async fn push_events(&self, batch: &EventBatch) -> ClientResult<IngestResponse> {
        self.call(Method::POST, "/api/v1/events", Some(batch)).await
    }

    pub async fn events(&self, query: &[(&str, String)]) -> ClientResult<EventPage> {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let path = if q.is_empty() {
            "/api/v1/events".to_owned()
        } else {
            format!("/api/v1/events?{q}")
        };
        self.call::<(), _>(Method::GET, &path, None).await
    }
}

async fn error_from(resp: reqwest::Response) -> ClientError {
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

/// Percent-encodes one path segment.
fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn serde_urlencoded_string<T: Serialize>(q: &T) -> String {
    let v = serde_json::to_value(q).unwrap_or_default();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            out.append_pair(&k, &s);
        }
    }
    out.finish()
}

/// Whether a status is the "not logged in" kind.
pub fn is_unauthorized(e: &ClientError) -> bool {
    e.status() == Some(StatusCode::UNAUTHORIZED.as_u16())
}

impl ApiClient {
    // ---- sessions -----------------------------------------------------

    pub async fn create_session(
        &self,
        req: &tessera_core::api::CreateSessionRequest,
    ) -> ClientResult<tessera_core::api::SessionView> {
        self.call(Method::POST, "/api/v1/sessions", Some(req)).await
    }

    pub async fn sessions(
        &self,
        include_ended: bool,
    ) -> ClientResult<Vec<tessera_core::api::SessionView>> {
        let path = if include_ended {
            "/api/v1/sessions?all=true"
        } else {
            "/api/v1/sessions"
        };
        self.call::<(), _>(Method::GET, path, None).await
    }

    pub async fn session(&self, id: &str) -> ClientResult<tessera_core::api::SessionView> {
        let path = format!("/api/v1/sessions/{}", encode_segment(id));
        self.call::<(), _>(Method::GET, &path, None).await
    }

    pub async fn end_session(&self, id: &str) -> ClientResult<tessera_core::api::SessionView> {
        let path = format!("/api/v1/sessions/{}/end", encode_segment(id));
        self.call::<(), _>(Method::POST, &path, None).await
    }

    pub async fn viewer_token(
        &self,
        id: &str,
    ) -> ClientResult<tessera_core::api::ViewerTokenResponse> {
        let path = format!("/api/v1/sessions/{}/viewer-token", encode_segment(id));
        self.call::<(), _>(Method::POST, &path, None).await
    }

    // ---- support codes --------------------------------------------------

    pub async fn create_support_code(
        &self,
        req: &tessera_core::api::CreateSupportCodeRequest,
    ) -> ClientResult<tessera_core::api::CreatedSupportCode> {
        self.call(Method::POST, "/api/v1/support-codes", Some(req))
            .await
    }

    pub async fn preview_support_code(
        &self,
        code: &str,
    ) -> ClientResult<tessera_core::api::SupportCodePreview> {
        let path = format!("/api/v1/support-codes/{}", encode_segment(code));
        self.call::<(), _>(Method::GET, &path, None).await
    }

    pub async fn bind_support_code(
        &self,
        req: &tessera_core::api::BindSupportCodeRequest,
    ) -> ClientResult<tessera_core::api::BoundSupportCode> {
        self.call(Method::POST, "/api/v1/support-codes/bind", Some(req))
            .await
    }

    // ---- policy -------------------------------------------------------

    pub async fn policy(&self) -> ClientResult<tessera_core::api::Policy> {
        self.call::<(), _>(Method::GET, "/api/v1/policy", None)
            .await
    }

    pub async fn set_policy(
        &self,
        p: &tessera_core::api::Policy,
    ) -> ClientResult<tessera_core::api::Policy> {
        self.call(Method::PUT, "/api/v1/policy", Some(p)).await
    }

    /// The rustls configuration this client trusts, for WebSockets.
    pub fn tls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.tls
    }
}

/// The device plane's trust API (`/api/v1/device/…`), used with a `cak_` key.
impl ApiClient {
    pub async fn peer(&self, id: &str) -> ClientResult<tessera_core::api::PeerView> {
        let path = format!("/api/v1/device/peers/{}", encode_segment(id));
        self.call::<(), _>(Method::GET, &path, None).await
    }

    pub async fn peer_rotations(
        &self,
        id: &str,
    ) -> ClientResult<Vec<tessera_core::trust::Signed<tessera_core::trust::KeyRotation>>> {
        let path = format!("/api/v1/device/peers/{}/rotations", encode_segment(id));
        self.call::<(), _>(Method::GET, &path, None).await
    }

    pub async fn create_exchange(
        &self,
        req: &tessera_core::api::CreateExchangeRequest,
    ) -> ClientResult<tessera_core::api::ExchangeView> {
        self.call(Method::POST, "/api/v1/device/trust/exchanges", Some(req))
            .await
    }

    pub async fn exchanges(
        &self,
        peer: &str,
    ) -> ClientResult<Vec<tessera_core::api::ExchangeView>> {
        let path = format!(
            "/api/v1/device/trust/exchanges?peer={}",
            encode_segment(peer)
        );
        self.call::<(), _>(Method::GET, &path, None).await
    }

    pub async fn exchange_step(
        &self,
        id: &str,
        step: &str,
        req: &tessera_core::api::ExchangeStepRequest,
    ) -> ClientResult<tessera_core::api::ExchangeView> {
        let path = format!(
            "/api/v1/device/trust/exchanges/{}/{step}",
            encode_segment(id)
        );
        self.call(Method::POST, &path, Some(req)).await
    }

    pub async fn attest(
        &self,
        s: &tessera_core::trust::Signed<tessera_core::trust::TrustAttestation>,
    ) -> ClientResult<tessera_core::api::AttestationView> {
        self.call(Method::POST, "/api/v1/device/trust/attestations", Some(s))
            .await
    }

    pub async fn attestations(&self) -> ClientResult<Vec<tessera_core::api::AttestationView>> {
        self.call::<(), _>(Method::GET, "/api/v1/device/trust/attestations", None)
            .await
    }

    pub async fn withdraw_trust(
        &self,
        s: &tessera_core::trust::Signed<tessera_core::trust::Withdrawal>,
    ) -> ClientResult<()> {
        self.call_empty(Method::POST, "/api/v1/device/trust/withdraw", Some(s))
            .await
    }

    pub async fn submit_grant(
        &self,
        s: &tessera_core::trust::Signed<tessera_core::trust::AutoJoinGrant>,
    ) -> ClientResult<tessera_core::api::GrantView> {
        self.call(Method::POST, "/api/v1/device/grants", Some(s))
            .await
    }

    pub async fn my_grants(&self) -> ClientResult<Vec<tessera_core::api::GrantView>> {
        self.call::<(), _>(Method::GET, "/api/v1/device/grants", None)
            .await
    }

    pub async fn withdraw_grant(
        &self,
        s: &tessera_core::trust::Signed<tessera_core::trust::Withdrawal>,
    ) -> ClientResult<()> {
        self.call_empty(Method::POST, "/api/v1/device/grants/withdraw", Some(s))
            .await
    }

    pub async fn rotate_identity(
        &self,
        s: &tessera_core::trust::Signed<tessera_core::trust::KeyRotation>,
    ) -> ClientResult<tessera_core::api::PeerView> {
        self.call(Method::POST, "/api/v1/device/identity/rotate", Some(s))
            .await
    }

    // ---- grants (operator plane) ------------------------------------------

    pub async fn grants(&self) -> ClientResult<Vec<tessera_core::api::GrantView>> {
        self.call::<(), _>(Method::GET, "/api/v1/grants", None)
            .await
    }

    pub async fn revoke_grant(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> ClientResult<tessera_core::api::GrantView> {
        let path = format!("/api/v1/grants/{}/revoke", encode_segment(id));
        self.call(Method::POST, &path, Some(&RevokeRequest { reason }))
            .await
    }
}
