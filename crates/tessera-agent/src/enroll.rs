//! Enrolling this device: with an enrollment token (unattended), or by
//! RFC 8628 pairing, which an operator approves on `/device`.

use std::time::Duration;

use tessera_client::{ApiClient, ClientError, TlsTrust};
use tessera_core::api::{DeviceAuthorizationResponse, EnrollRequest, SecretString};
use tessera_core::identity::{
    audience_of, DeviceId, DeviceKeys, Label, PossessionClaim, ProofPurpose,
};
use tessera_core::Clock;

use crate::state::{AgentState, Enrollment, StateError};
use crate::sysinfo;

/// The RFC 8628 client id this agent uses.
pub const CLIENT_ID: &str = "tessera-agent";

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Server(#[from] ClientError),
    #[error(
        "this device is already enrolled (state in {0}); use another --state-dir to enroll again"
    )]
    AlreadyEnrolled(String),
    #[error("the operator denied this device")]
    Denied,
    #[error("the code expired before an operator approved it; run enroll again")]
    Expired,
    #[error(
        "{why}: this identity cannot enroll again; move {dir} away (or pass another --state-dir) to enroll as a new device"
    )]
    Revoked { why: String, dir: String },
}

/// Where to enroll and what to call this device.
#[derive(Clone, Debug)]
pub struct EnrollOptions {
    pub server: String,
    pub tls_fingerprint: Option<String>,
    pub ca_cert: Option<std::path::PathBuf>,
    /// Defaults to the hostname.
    pub name: Option<String>,
}

impl EnrollOptions {
    fn trust(&self) -> TlsTrust {
        Enrollment {
            server: self.server.clone(),
            alternates: Vec::new(),
            device_id: String::new(),
            tls_fingerprint: self.tls_fingerprint.clone(),
            ca_cert: self.ca_cert.clone(),
        }
        .trust()
    }

    fn enrollment(&self, device_id: String) -> Enrollment {
        Enrollment {
            server: self.server.clone(),
            alternates: Vec::new(),
            device_id,
            tls_fingerprint: self.tls_fingerprint.clone(),
            ca_cert: self.ca_cert.clone(),
        }
    }

    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(sysinfo::hostname)
    }
}

/// A proof of key possession for one request ([`PossessionClaim`]): when
/// it was made, the identity key's signature (base64url) and the origin of
/// the server it is meant for. The server takes each proof once, only on
/// the route its purpose names, and only when the audience is its own.
#[derive(Clone, Debug)]
pub struct PossessionProof {
    pub issued_at: i64,
    pub proof: String,
    pub audience: String,
}

/// A [`PossessionProof`] for `purpose` at `server`, made now.
pub fn possession_proof(
    keys: &DeviceKeys,
    (name, hostname, os): (&str, &str, &str),
    purpose: ProofPurpose,
    server: &str,
) -> PossessionProof {
    let now = tessera_core::SystemClock.now().as_millis();
    possession_proof_at(keys, (name, hostname, os), purpose, server, now)
}

/// [`possession_proof`] made at `issued_at` (Unix ms).
pub fn possession_proof_at(
    keys: &DeviceKeys,
    (name, hostname, os): (&str, &str, &str),
    purpose: ProofPurpose,
    server: &str,
    issued_at: i64,
) -> PossessionProof {
    let audience = audience_of(server).unwrap_or_else(|| server.to_owned());
    let claim = PossessionClaim {
        client_id: CLIENT_ID,
        name,
        hostname,
        os,
        issued_at_ms: issued_at,
        purpose,
        audience: &audience,
    };
    let sig = keys.sign(Label::PairingRequest, &claim.body());
    PossessionProof {
        issued_at,
        proof: data_encoding::BASE64URL_NOPAD.encode(&sig),
        audience,
    }
}

/// Refuses to enroll over an existing enrollment. When the server says
/// that enrollment's device was revoked, the refusal says so, with the
/// operator's reason, instead of "already enrolled".
async fn refuse_if_enrolled(state: &AgentState) -> Result<(), EnrollError> {
    if !state.is_enrolled() {
        return Ok(());
    }
    let dir = state.dir().display().to_string();
    if let Some(why) = revoked_reason(state).await {
        return Err(EnrollError::Revoked { why, dir });
    }
    Err(EnrollError::AlreadyEnrolled(dir))
}

/// The server's word that this state's device is revoked, if it says so;
/// `None` when it is not, or the server cannot be asked.
async fn revoked_reason(state: &AgentState) -> Option<String> {
    let enrollment = state.enrollment().ok()?;
    let key = state.key().ok()?;
    let client = ApiClient::new(&enrollment.server, &enrollment.trust())
        .ok()?
        .with_token(key);
    // Any device route answers a revoked device's key with `device_revoked`.
    match client.peer(&enrollment.device_id).await {
        Err(ClientError::Api { code, message, .. }) if code == "device_revoked" => Some(message),
        _ => None,
    }
}

/// Enrolls with an `etk_` token. Returns the DeviceId.
pub async fn with_token(
    state: &AgentState,
    opts: &EnrollOptions,
    token: SecretString,
) -> Result<DeviceId, EnrollError> {
    let now = tessera_core::SystemClock.now().as_millis();
    with_token_at(state, opts, token, now).await
}

/// [`with_token`], its proof of key possession made at `issued_at` (Unix
/// ms; the server takes it within five minutes of its clock).
pub async fn with_token_at(
    state: &AgentState,
    opts: &EnrollOptions,
    token: SecretString,
    issued_at: i64,
) -> Result<DeviceId, EnrollError> {
    refuse_if_enrolled(state).await?;
    let keys = state.identity_or_create()?;
    let client = ApiClient::new(&opts.server, &opts.trust())?;
    let (name, hostname, os) = (opts.name(), sysinfo::hostname(), sysinfo::os());
    let p = possession_proof_at(
        &keys,
        (&name, &hostname, &os),
        ProofPurpose::Enroll,
        &opts.server,
        issued_at,
    );
    let resp = client
        .enroll(&EnrollRequest {
            token,
            identity: keys.document().encode(),
            name,
            hostname,
            os,
            issued_at: Some(p.issued_at),
            proof: Some(p.proof),
            audience: Some(p.audience),
        })
        .await?;
    let id = keys.device_id();
    state.save_enrollment(&opts.enrollment(id.to_string()), &resp.device_key)?;
    Ok(id)
}

/// Pairs by RFC 8628: asks for a code, hands it to `show` for the person at
/// the device, and polls until an operator decides. Returns the DeviceId.
pub async fn with_pairing(
    state: &AgentState,
    opts: &EnrollOptions,
    show: impl FnOnce(&DeviceAuthorizationResponse, &DeviceId),
) -> Result<DeviceId, EnrollError> {
    refuse_if_enrolled(state).await?;
    let keys = state.identity_or_create()?;
    let id = keys.device_id();
    let client = ApiClient::new(&opts.server, &opts.trust())?;
    let identity = keys.document().encode();
    let (name, hostname, os) = (opts.name(), sysinfo::hostname(), sysinfo::os());
    let p = possession_proof(
        &keys,
        (&name, &hostname, &os),
        ProofPurpose::Pairing,
        &opts.server,
    );
    let issued_at = p.issued_at.to_string();
    let auth = client
        .device_authorization(&[
            ("client_id", CLIENT_ID),
            ("identity", &identity),
            ("name", &name),
            ("hostname", &hostname),
            ("os", &os),
            ("issued_at", &issued_at),
            ("proof", &p.proof),
            ("audience", &p.audience),
        ])
        .await?;
    show(&auth, &id);
    let expires = tokio::time::Instant::now() + Duration::from_secs(auth.expires_in);
    let mut interval = Duration::from_secs(auth.interval.max(1));
    // While the server cannot be reached (restarting, a 5xx), polls back
    // off from the interval up to a minute, until the code expires.
    let mut backoff = interval;
    loop {
        let wait = backoff.max(interval);
        if tokio::time::Instant::now() + wait >= expires {
            return Err(EnrollError::Expired);
        }
        tokio::time::sleep(wait).await;
        match client
            .device_token(auth.device_code.expose(), CLIENT_ID)
            .await
        {
            Ok(token) => {
                state.save_enrollment(&opts.enrollment(id.to_string()), &token.access_token)?;
                return Ok(id);
            }
            Err(ClientError::OAuth(e)) if PollError::parse(&e.error).is_some() => {
                backoff = interval;
                match PollError::parse(&e.error) {
                    // RFC 8628 §3.5: add five seconds for this and every later poll.
                    Some(PollError::SlowDown) => interval += Duration::from_secs(5),
                    Some(PollError::AccessDenied) => return Err(EnrollError::Denied),
                    Some(PollError::ExpiredToken) => return Err(EnrollError::Expired),
                    Some(PollError::AuthorizationPending) | None => {}
                }
            }
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "the server is not answering; polling again");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The longest wait between polls while the server is away.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Whether a poll failed because the server is away or failing for now
/// (not reachable, a 5xx, RFC 6749 `server_error`/`temporarily_unavailable`)
/// rather than because of what it decided.
fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) => true,
        ClientError::OAuth(o) => {
            matches!(o.error.as_str(), "server_error" | "temporarily_unavailable")
        }
        other => other.status().is_some_and(|s| s >= 500),
    }
}

/// The RFC 8628 §3.5 errors a token poll answers with while the pairing is
/// undecided or after it ended; any other error ends enrollment as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PollError {
    AuthorizationPending,
    SlowDown,
    AccessDenied,
    ExpiredToken,
}

impl PollError {
    fn parse(word: &str) -> Option<PollError> {
        Some(match word {
            "authorization_pending" => PollError::AuthorizationPending,
            "slow_down" => PollError::SlowDown,
            "access_denied" => PollError::AccessDenied,
            "expired_token" => PollError::ExpiredToken,
            _ => return None,
        })
    }
}
