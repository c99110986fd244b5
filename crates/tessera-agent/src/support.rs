//! The one-time support agent: no enrollment, an identity that lives in
//! memory only, one attended session, then exit.

use std::future::Future;
use std::sync::Arc;

use tessera_client::{ApiClient, ClientError, TlsTrust};
use tessera_core::api::{BindSupportCodeRequest, BoundSupportCode, SupportCodePreview};
use tessera_core::identity::DeviceKeys;
use tessera_core::Clock;

use crate::control::{run_one_session, Exit, RunOptions};
use crate::credentials::Credentials;
use crate::error::AgentError;
use crate::sysinfo;

/// Who asked for this code, without using it.
pub async fn preview(
    server: &str,
    trust: &TlsTrust,
    code: &str,
) -> Result<SupportCodePreview, ClientError> {
    ApiClient::new(server, trust)?
        .preview_support_code(code)
        .await
}

/// Binds `code` with a fresh in-memory identity.
pub async fn bind(
    server: &str,
    trust: &TlsTrust,
    code: &str,
    name: Option<String>,
) -> Result<(Credentials, BoundSupportCode), ClientError> {
    let keys = DeviceKeys::generate();
    let client = ApiClient::new(server, trust)?;
    let (name, hostname, os) = (
        name.unwrap_or_else(sysinfo::hostname),
        sysinfo::hostname(),
        sysinfo::os(),
    );
    // The same proof of key possession a pairing request carries.
    let issued_at = tessera_core::SystemClock.now().as_millis();
    let (_, proof) = crate::enroll::pairing_proof_at(&keys, &name, &hostname, &os, issued_at);
    let bound = client
        .bind_support_code(&BindSupportCodeRequest {
            code: tessera_core::api::SecretString::new(code),
            identity: keys.document().encode(),
            name,
            hostname,
            os,
            issued_at: Some(issued_at),
            proof: Some(proof),
        })
        .await?;
    let creds = Credentials {
        server: server.to_owned(),
        trust: trust.clone(),
        device_id: keys.device_id(),
        keys: Arc::new(keys),
        key: bound.device_key.clone(),
    };
    Ok((creds, bound))
}

/// Serves the bound session until it ends.
pub async fn serve(
    creds: &Credentials,
    bound: &BoundSupportCode,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    run_one_session(creds, &bound.session_id, opts, shutdown).await
}
