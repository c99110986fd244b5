//! The control channel: connect, prove the identity key, heartbeat, and
//! reconnect with jittered exponential backoff until shut down or revoked.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use rand::Rng;
use tessera_client::{ApiClient, ClientError};
use tessera_core::api::SecretString;
use tessera_core::identity::{challenge_body, DeviceKeys, Label};
use tessera_proto::v1::{Heartbeat, Hello, RotateKeyConfirm, RotateKeyRequest};
use tessera_proto::{close, Body, Envelope, MAX_DEVICE_FRAME, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::state::{AgentState, StateError};
use crate::{sysinfo, AGENT_VERSION};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why `run` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (SIGTERM, Ctrl-C).
    Shutdown,
    /// The server revoked this device or its key; retrying is pointless.
    Revoked { code: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the server refused this device: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl AgentError {
    /// Errors that another attempt cannot fix.
    fn is_fatal(&self) -> bool {
        matches!(self, AgentError::State(_) | AgentError::Refused { .. })
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Exponential backoff with jitter: attempt `n` waits a random time in
/// `[d/2, d]` where `d = min(1 s · 2^n, max)`, so a fleet that lost its
/// server does not come back in lockstep.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let d = Duration::from_secs(1)
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(max);
    let half = d / 2;
    half + d
        .saturating_sub(half)
        .mul_f64(rand::thread_rng().gen::<f64>())
}

/// An authenticated control connection.
pub struct Connection {
    ws: Ws,
    pub heartbeat: Duration,
    pub connection_id: String,
}

enum Connected {
    Ok(Box<Connection>),
    Revoked(Exit),
}

fn revoked_code(code: &str) -> bool {
    matches!(code, "device_revoked" | "key_revoked")
}

async fn connect(
    state: &AgentState,
    keys: &DeviceKeys,
    key: &SecretString,
) -> Result<Connected, AgentError> {
    let enrollment = state.enrollment()?;
    let client = ApiClient::new(&enrollment.server, &enrollment.trust())?;
    let url = client.ws_url("/ws/device")?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| AgentError::Connection(e.to_string()))?;
    let auth = format!("Bearer {}", key.expose())
        .parse()
        .map_err(|_| AgentError::Protocol("device key is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", auth);
    let tls = tessera_client::tls::client_config(&enrollment.trust())?;
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_DEVICE_FRAME);
    config.max_frame_size = Some(MAX_DEVICE_FRAME);
    let connected = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(Connector::Rustls(Arc::new(tls))),
    )
    .await;
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(resp)) => {
            let (code, message) = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .map(|v| {
                    (
                        v["error"]["code"].as_str().unwrap_or("").to_owned(),
                        v["error"]["message"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .unwrap_or_default();
            if revoked_code(&code) {
                return Ok(Connected::Revoked(Exit::Revoked {
                    code,
                    reason: message,
                }));
            }
            if resp.status() == 401 {
                return Err(AgentError::Refused { code, message });
            }
            return Err(AgentError::Connection(format!("HTTP {}", resp.status())));
        }
        Err(e) => return Err(AgentError::Connection(e.to_string())),
    };

    let challenge = match recv(&mut ws).await? {
        Some(Body::Challenge(c)) => c,
        other => return Err(unexpected("Challenge", other)),
    };
    let version = PROTOCOL_VERSION.min(challenge.protocol_version);
    let device_id = keys.device_id();
    let signature = keys.sign(
        Label::Challenge,
        &challenge_body(&challenge.nonce, &device_id, version),
    );
    send(
        &mut ws,
        Body::Hello(Hello {
            protocol_version: version,
            agent_version: AGENT_VERSION.to_owned(),
            device_id: device_id.to_string(),
            signature: signature.to_vec(),
            os: sysinfo::os(),
            hostname: sysinfo::hostname(),
        }),
    )
    .await?;
    match recv(&mut ws).await? {
        Some(Body::Welcome(w)) => Ok(Connected::Ok(Box::new(Connection {
            ws,
            heartbeat: Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(100))),
            connection_id: w.connection_id,
        }))),
        Some(Body::Error(e)) => Err(AgentError::Refused {
            code: e.code,
            message: e.message,
        }),
        other => Err(unexpected("Welcome", other)),
    }
}

/// Names what arrived instead, never its contents (an offer carries a key).
fn unexpected(wanted: &str, got: Option<Body>) -> AgentError {
    let got = match got {
        None => "the end of the connection",
        Some(body) => body_name(&body),
    };
    AgentError::Protocol(format!("expected {wanted}, got {got}"))
}

fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Challenge(_) => "Challenge",
        Body::Hello(_) => "Hello",
        Body::Welcome(_) => "Welcome",
        Body::Heartbeat(_) => "Heartbeat",
        Body::HeartbeatAck(_) => "HeartbeatAck",
        Body::Error(_) => "Error",
        Body::Revoked(_) => "Revoked",
        Body::RotateKeyRequest(_) => "RotateKeyRequest",
        Body::RotateKeyOffer(_) => "RotateKeyOffer",
        Body::RotateKeyConfirm(_) => "RotateKeyConfirm",
        Body::RotateKeyDone(_) => "RotateKeyDone",
        Body::ChannelOpen(_) => "ChannelOpen",
        Body::ChannelData(_) => "ChannelData",
        Body::ChannelResize(_) => "ChannelResize",
        Body::ChannelClose(_) => "ChannelClose",
        Body::SessionEnded(_) => "SessionEnded",
        Body::ConsentRequest(_) => "ConsentRequest",
        Body::ConsentResponse(_) => "ConsentResponse",
        Body::ViewerReady(_) => "ViewerReady",
    }
}

async fn send(ws: &mut Ws, body: Body) -> Result<(), AgentError> {
    ws.send(Message::Binary(Envelope::of(body).encode_to_vec().into()))
        .await
        .map_err(|e| AgentError::Connection(e.to_string()))
}

/// The next envelope; `None` when the server closed (its close code, if
/// it revoked us, is turned into a `Revoked` body by the caller).
async fn recv(ws: &mut Ws) -> Result<Option<Body>, AgentError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                let env = Envelope::decode(b.as_ref())
                    .map_err(|e| AgentError::Protocol(e.to_string()))?;
                return Ok(env.body);
            }
            Some(Ok(Message::Close(frame))) => {
                if let Some(f) = frame.filter(|f| u16::from(f.code) == close::REVOKED) {
                    return Ok(Some(Body::Revoked(tessera_proto::v1::Revoked {
                        code: f.reason.to_string(),
                        reason: String::new(),
                    })));
                }
                return Ok(None);
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(AgentError::Connection(e.to_string())),
            None => return Ok(None),
        }
    }
}

impl Connection {
    /// Heartbeats until the server closes, revokes, or `shutdown` fires.
    async fn serve(
        &mut self,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Option<Exit>, AgentError> {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        let mut last_ack = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if last_ack.elapsed() > self.heartbeat * 3 {
                        return Err(AgentError::Connection("no heartbeat answer from the server".into()));
                    }
                    seq += 1;
                    send(&mut self.ws, Body::Heartbeat(Heartbeat { seq })).await?;
                }
                msg = recv(&mut self.ws) => match msg? {
                    Some(Body::HeartbeatAck(_)) => last_ack = tokio::time::Instant::now(),
                    Some(Body::Revoked(r)) => {
                        return Ok(Some(Exit::Revoked { code: r.code, reason: r.reason }));
                    }
                    Some(Body::Error(e)) => tracing::warn!(code = %e.code, message = %e.message, "server reported an error"),
                    Some(_) => {}
                    None => return Err(AgentError::Connection("the server closed the connection".into())),
                },
                () = &mut *shutdown => {
                    let _ = self.ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "agent stopping".into() })).await;
                    return Ok(Some(Exit::Shutdown));
                }
            }
        }
    }

    /// Rotates the device key over this connection: the new key is stored
    /// (as `device.key.next`, then moved into place) before the server is
    /// told to retire the old one.
    pub async fn rotate_key(&mut self, state: &AgentState) -> Result<String, AgentError> {
        send(&mut self.ws, Body::RotateKeyRequest(RotateKeyRequest {})).await?;
        let offer = loop {
            match recv(&mut self.ws).await? {
                Some(Body::RotateKeyOffer(o)) => break o,
                Some(Body::HeartbeatAck(_)) => continue,
                Some(Body::Error(e)) => {
                    return Err(AgentError::Refused {
                        code: e.code,
                        message: e.message,
                    })
                }
                other => return Err(unexpected("RotateKeyOffer", other)),
            }
        };
        let new_key = SecretString::new(offer.device_key);
        state.save_next_key(&new_key)?;
        send(
            &mut self.ws,
            Body::RotateKeyConfirm(RotateKeyConfirm {
                key_id: offer.key_id.clone(),
            }),
        )
        .await?;
        loop {
            match recv(&mut self.ws).await? {
                Some(Body::RotateKeyDone(d)) if d.key_id == offer.key_id => break,
                Some(Body::HeartbeatAck(_)) => continue,
                Some(Body::Error(e)) => {
                    return Err(AgentError::Refused {
                        code: e.code,
                        message: e.message,
                    })
                }
                other => return Err(unexpected("RotateKeyDone", other)),
            }
        }
        state.promote_next_key()?;
        Ok(offer.key_id)
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Connects once with the stored key, recovering from an interrupted
/// rotation (whose new key waits in `device.key.next`).
pub async fn connect_once(state: &AgentState) -> Result<Result<Box<Connection>, Exit>, AgentError> {
    let keys = state.identity()?;
    let key = state.key()?;
    match connect(state, &keys, &key).await? {
        Connected::Ok(c) => Ok(Ok(c)),
        Connected::Revoked(exit) => {
            if let Some(next) = state.next_key()? {
                if let Connected::Ok(c) = connect(state, &keys, &next).await? {
                    state.promote_next_key()?;
                    return Ok(Ok(c));
                }
            }
            Ok(Err(exit))
        }
    }
}

/// Runs the control loop until `shutdown` completes or the device is
/// revoked. Transient failures reconnect with backoff.
pub async fn run(
    state: &AgentState,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut attempt = 0u32;
    loop {
        let result = tokio::select! {
            r = connect_once(state) => r,
            () = &mut shutdown => return Ok(Exit::Shutdown),
        };
        let failure = match result {
            Ok(Ok(mut conn)) => {
                attempt = 0;
                tracing::info!(connection = %conn.connection_id, heartbeat_ms = conn.heartbeat.as_millis() as u64, "connected");
                match conn.serve(&mut shutdown).await {
                    Ok(Some(exit)) => return Ok(exit),
                    Ok(None) => continue,
                    Err(e) => e,
                }
            }
            Ok(Err(exit)) => return Ok(exit),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => e,
        };
        let wait = backoff(attempt, opts.max_backoff);
        attempt = attempt.saturating_add(1);
        tracing::warn!(error = %failure, retry_in_ms = wait.as_millis() as u64, "control connection lost");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => return Ok(Exit::Shutdown),
        }
    }
}

/// Connects, rotates the device key, and disconnects.
pub async fn rotate_device_key(state: &AgentState) -> Result<String, AgentError> {
    match connect_once(state).await? {
        Ok(mut conn) => {
            let id = conn.rotate_key(state).await?;
            conn.close().await;
            Ok(id)
        }
        Err(Exit::Revoked { code, reason }) => Err(AgentError::Refused {
            code,
            message: reason,
        }),
        Err(Exit::Shutdown) => Err(AgentError::Connection("stopped".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let max = Duration::from_secs(60);
        for attempt in 0..20 {
            let d = backoff(attempt, max);
            let full = Duration::from_secs(1u64 << attempt.min(16)).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(30, max) <= max);
    }
}
