//! What every viewer does to join a session, whatever it shows: wait until
//! the person at the device has decided (attended sessions), then take a
//! viewer token. `tessera connect` (shell) and `tessera view` (screen) both
//! join through here.

use std::time::Duration;

use anyhow::anyhow;
use tessera_client::ApiClient;
use tessera_core::api::SecretString;
use tessera_core::kinds::SessionState;

use crate::output::note;

/// Waits while the person at the device decides.
pub(crate) async fn wait_until_active(client: &ApiClient, id: &str) -> anyhow::Result<()> {
    let mut told = false;
    loop {
        let s = client.session(id).await?;
        match s.state.parse() {
            Ok(SessionState::Active) => return Ok(()),
            Ok(SessionState::Ended) => {
                return Err(anyhow!(
                    "the session ended before it started ({}): {}",
                    s.end_code.unwrap_or_default(),
                    s.end_reason.unwrap_or_default()
                ))
            }
            _ => {
                if !told {
                    note!("Waiting for the person at {} to accept…", s.device_name);
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Waits until session `id` is live and mints this operator's viewer token
/// for it (minutes-long, for this session only).
pub(crate) async fn viewer_token(client: &ApiClient, id: &str) -> anyhow::Result<SecretString> {
    wait_until_active(client, id).await?;
    Ok(client.viewer_token(id).await?.token)
}
