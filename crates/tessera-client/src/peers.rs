//! The device plane's trust API (`/api/v1/device/…`).

use reqwest::Method;
use tessera_core::api::RevokeRequest;

use crate::{encode_segment, ApiClient, ClientResult};

/// The device plane's trust API (`/api/v1/device/…`), used with a `cak_` key.
impl ApiClient {
    /// The devices this one can name as peers (id and name).
    pub async fn peers(&self) -> ClientResult<Vec<tessera_core::api::PeerSummary>> {
        self.call::<(), _>(Method::GET, "/api/v1/device/peers", None)
            .await
    }

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

    /// Ends an open exchange this device takes part in.
    pub async fn withdraw_exchange(&self, id: &str) -> ClientResult<()> {
        let path = format!(
            "/api/v1/device/trust/exchanges/{}/withdraw",
            encode_segment(id)
        );
        self.call_empty::<()>(Method::POST, &path, None).await
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
