//! Sessions, viewer tokens, policy, and the client's TLS configuration.

use std::sync::Arc;

use reqwest::Method;

use crate::{encode_segment, ApiClient, ClientResult};

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
