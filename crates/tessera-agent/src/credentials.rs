//! What this device authenticates with: the server it enrolled with, how
//! that server's TLS is trusted, its id, identity keys and device key.
//! Loaded from the state directory, or built in memory by the one-time
//! support agent.

use std::sync::Arc;

use tessera_client::{ApiClient, ClientError, TlsTrust};
use tessera_core::api::SecretString;
use tessera_core::identity::{DeviceId, DeviceKeys};

use crate::error::AgentError;
use crate::state::{AgentState, StateError};

/// What a connection authenticates with.
#[derive(Clone)]
pub struct Credentials {
    pub server: String,
    pub trust: TlsTrust,
    /// The device's id: named by its first identity key, kept across
    /// identity rotations.
    pub device_id: DeviceId,
    pub keys: Arc<DeviceKeys>,
    pub key: SecretString,
}

impl Credentials {
    /// An HTTP client authenticated as this device.
    pub fn client(&self) -> Result<ApiClient, ClientError> {
        Ok(ApiClient::new(&self.server, &self.trust)?.with_token(self.key.clone()))
    }

    pub fn load(state: &AgentState) -> Result<Credentials, AgentError> {
        let enrollment = state.enrollment()?;
        let device_id =
            DeviceId::parse(&enrollment.device_id).map_err(|_| StateError::Damaged {
                path: state.dir().join("enrollment.json"),
                why: "the device id is not valid".into(),
            })?;
        Ok(Credentials {
            trust: enrollment.trust(),
            server: enrollment.server,
            device_id,
            keys: Arc::new(state.identity()?),
            key: state.key()?,
        })
    }
}
