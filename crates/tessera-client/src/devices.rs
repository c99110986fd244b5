//! Devices, enrollment, pairing (OAuth device flow) and events.

use reqwest::Method;
use serde::de::DeserializeOwned;
use tessera_core::api::{
    CreateEnrollmentTokenRequest, CreatedEnrollmentToken, DeviceAuthorizationResponse,
    DeviceKeyView, DeviceTokenResponse, DeviceView, EnrollRequest, EnrollResponse,
    EnrollmentTokenView, EventBatch, EventPage, IngestResponse, IssuedKey, OAuthError, PairingView,
    RevokeRequest, TagsRequest,
};

use crate::{encode_segment, ApiClient, ClientError, ClientResult};

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
            .await
            .map_err(|e| crate::error::transport_error(e, &self.base))?;
        let status = resp.status();
        let retry_after = crate::error::retry_after_of(resp.headers());
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
                status: status.as_u16(),
                detail: e.to_string(),
            });
        }
        if let Ok(e) = serde_json::from_slice::<OAuthError>(&bytes) {
            return Err(ClientError::OAuth(e));
        }
        // What the server's own layers answer before the OAuth handler
        // runs (a rate limit, with its Retry-After) is the usual envelope.
        Err(
            crate::error::envelope_error(status, retry_after, &bytes).unwrap_or_else(|| {
                ClientError::Unexpected {
                    status: status.as_u16(),
                    detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                }
            }),
        )
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
