//! The control channel: connect, prove the identity key, heartbeat, carry
//! session channels, and reconnect with jittered exponential backoff until
//! shut down or revoked.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use rand::Rng;
use tessera_client::{ApiClient, ClientError, TlsTrust};
use tessera_core::api::SecretString;
use tessera_core::identity::{challenge_body, DeviceId, DeviceKeys, Label};
use tessera_proto::v1::{
    ChannelClose, ConsentResponse, Heartbeat, Hello, RotateKeyConfirm, RotateKeyRequest,
};
use tessera_proto::{close, Body, Envelope, MAX_DEVICE_FRAME, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::channels::{default_shell, Shell};
use crate::consent::{self, ConsentMode};
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
    /// One-session mode: the session is over (or never started).
    SessionEnded { code: String, reason: String },
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
    /// The shell sessions run (default: `$SHELL`, else `/bin/sh`).
    pub shell: Option<String>,
    /// How consent is asked for when a session needs it.
    pub consent: ConsentMode,
    /// Where files sent in automatic sessions land (default:
    /// `<state dir>/inbox`).
    pub inbox: Option<std::path::PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_backoff: Duration::from_secs(60),
            shell: None,
            consent: ConsentMode::Deny,
            inbox: None,
        }
    }
}

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

async fn connect(creds: &Credentials, role: u32) -> Result<Connected, AgentError> {
    let client = ApiClient::new(&creds.server, &creds.trust)?;
    let url = client.ws_url("/ws/device")?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| AgentError::Connection(e.to_string()))?;
    let auth = format!("Bearer {}", creds.key.expose())
        .parse()
        .map_err(|_| AgentError::Protocol("device key is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", auth);
    let tls = tessera_client::tls::client_config(&creds.trust)?;
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
    let keys = &creds.keys;
    let device_id = &creds.device_id;
    let signature = keys.sign(
        Label::Challenge,
        &challenge_body(&challenge.nonce, device_id, version),
    );
    send(
        &mut ws,
        Body::Hello(Hello {
            protocol_version: version,
            agent_version: AGENT_VERSION.to_owned(),
            device_id: device_id.to_string(),
            signature: signature.to_vec().into(),
            os: sysinfo::os(),
            hostname: sysinfo::hostname(),
            role,
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
        Body::AutoSessionCreate(_) => "AutoSessionCreate",
        Body::AutoSessionCreated(_) => "AutoSessionCreated",
        Body::AutoJoinInvite(_) => "AutoJoinInvite",
        Body::AutoJoinAnswer(_) => "AutoJoinAnswer",
        Body::E2eHandshake(_) => "E2eHandshake",
        Body::E2eData(_) => "E2eData",
        Body::MemberLeft(_) => "MemberLeft",
    }
}

async fn send(ws: &mut Ws, body: Body) -> Result<(), AgentError> {
    ws.send(Message::Binary(Envelope::of(body).encode_to_vec().into()))
        .await
        .map_err(|e| AgentError::Connection(e.to_string()))
}

/// The next envelope; `None` when the server closed (its close code, if
/// it revoked us, is turned into a `Revoked` body).
async fn recv(ws: &mut Ws) -> Result<Option<Body>, AgentError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                let env = Envelope::decode(b).map_err(|e| AgentError::Protocol(e.to_string()))?;
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

/// Messages from channel and consent tasks to the connection.
const OUTBOUND_QUEUE: usize = 256;

/// What one connection serves: its shells and pending consent questions.
struct Sessions<'a> {
    opts: &'a RunOptions,
    /// One-session mode: the session this agent exists for.
    only: Option<&'a str>,
    shells: HashMap<(String, u32), Shell>,
    outbound: mpsc::Sender<Body>,
    /// The person's answers, by session: a shell opens for a session that
    /// asked only once it was granted, never for one that was refused.
    answers: Arc<std::sync::Mutex<HashMap<String, bool>>>,
    /// The agent's state (trust store, inbox); none for the one-time agent,
    /// which takes part in no automatic session.
    state: Option<&'a AgentState>,
    /// This device's id and identity keys.
    identity: Option<(DeviceId, &'a DeviceKeys)>,
    /// Automatic sessions this device is a member of.
    members: HashMap<String, crate::auto::Member>,
}

impl Sessions<'_> {
    /// Whether a shell may open for `session`: the one-time agent opens one
    /// only for its own session and only after a yes; a managed agent never
    /// for a session the person refused.
    fn may_open(&self, session: &str) -> bool {
        let answer = self
            .answers
            .lock()
            .ok()
            .and_then(|a| a.get(session).copied());
        match self.only {
            Some(only) => only == session && answer == Some(true),
            None => answer != Some(false),
        }
    }

    /// An invitation to an automatic session: this device's own checks.
    fn join(&mut self, inv: &tessera_proto::v1::AutoJoinInvite) -> Result<(), &'static str> {
        let (Some(state), Some((me, keys))) = (self.state, self.identity.as_ref()) else {
            return Err("not_mutually_trusted");
        };
        let store = crate::trust::TrustStore::load(state).map_err(|_| "not_mutually_trusted")?;
        let inbox = self
            .opts
            .inbox
            .clone()
            .unwrap_or_else(|| crate::auto::inbox_of(state));
        let me = me.to_string();
        let now = tessera_core::Clock::now(&tessera_core::SystemClock);
        let secret = zeroize::Zeroizing::new(keys.x25519_secret().to_bytes());
        let member = crate::auto::Member::accept(
            &store,
            &me,
            &secret,
            inv,
            inbox,
            now,
        )
        .inspect_err(|reason| tracing::warn!(session = %inv.session_id, %reason, "refused an automatic session"))?;
        tracing::info!(session = %inv.session_id, creator = %inv.creator_name, "joined an automatic session");
        self.members.insert(inv.session_id.clone(), member);
        Ok(())
    }

    /// Sends what a member produced, or leaves the session if it aborted.
    fn member_result(
        &mut self,
        session: &str,
        result: Option<Result<Vec<Body>, crate::auto::Abort>>,
    ) {
        match result {
            Some(Ok(out)) => {
                for b in out {
                    let _ = self.outbound.try_send(b);
                }
            }
            Some(Err(crate::auto::Abort(reason))) => {
                tracing::warn!(session, %reason, "left an automatic session");
                if let Some(mut m) = self.members.remove(session) {
                    m.close();
                }
                if let Some((me, _)) = &self.identity {
                    let _ = self.outbound.try_send(crate::auto::leave(
                        session,
                        &me.to_string(),
                        &reason,
                    ));
                }
            }
            None => {}
        }
    }

    /// Handles one relay message from the server; `Some(exit)` ends the run.
    fn handle(&mut self, body: Body) -> Option<Exit> {
        match body {
            Body::ConsentRequest(req) => {
                // The one-time agent answers only for its own session.
                if self.only.is_some_and(|only| only != req.session_id) {
                    let _ = self
                        .outbound
                        .try_send(Body::ConsentResponse(ConsentResponse {
                            session_id: req.session_id,
                            granted: false,
                        }));
                    return None;
                }
                let mode = self.opts.consent.clone();
                let outbound = self.outbound.clone();
                let answers = self.answers.clone();
                tokio::spawn(async move {
                    let timeout = Duration::from_millis(u64::from(req.timeout_ms));
                    let granted = consent::ask(
                        &mode,
                        &req.technician,
                        &req.access,
                        &req.session_id,
                        timeout,
                    )
                    .await;
                    if let Ok(mut a) = answers.lock() {
                        a.insert(req.session_id.clone(), granted);
                    }
                    let _ = outbound
                        .send(Body::ConsentResponse(ConsentResponse {
                            session_id: req.session_id,
                            granted,
                        }))
                        .await;
                });
            }
            Body::ChannelOpen(open) if !self.may_open(&open.session_id) => {
                tracing::warn!(session = %open.session_id, "refused to open a channel without consent");
                let _ = self.outbound.try_send(Body::ChannelClose(ChannelClose {
                    session_id: open.session_id,
                    channel_id: open.channel_id,
                    exit_status: None,
                    reason: "the person at this device did not consent to this session".into(),
                }));
            }
            Body::ChannelOpen(open) => {
                let shell = self.opts.shell.clone().unwrap_or_else(default_shell);
                match Shell::spawn(
                    &shell,
                    &open.session_id,
                    open.channel_id,
                    open.cols,
                    open.rows,
                    self.outbound.clone(),
                ) {
                    Ok(s) => {
                        tracing::info!(session = %open.session_id, "shell started");
                        self.shells.insert((open.session_id, open.channel_id), s);
                    }
                    Err(e) => {
                        let _ = self.outbound.try_send(Body::ChannelClose(ChannelClose {
                            session_id: open.session_id,
                            channel_id: open.channel_id,
                            exit_status: None,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Body::ChannelData(d) => {
                if let Some(shell) = self.shells.get(&(d.session_id, d.channel_id)) {
                    shell.write(&d.data);
                }
            }
            Body::ChannelResize(r) => {
                if let Some(shell) = self.shells.get(&(r.session_id, r.channel_id)) {
                    shell.resize(r.cols, r.rows);
                }
            }
            Body::ChannelClose(c) => {
                self.shells.remove(&(c.session_id, c.channel_id));
            }
            Body::AutoJoinInvite(inv) => {
                let verdict = self.join(&inv);
                let _ = self
                    .outbound
                    .try_send(crate::auto::answer(&inv.session_id, verdict));
            }
            Body::E2eHandshake(h) => {
                let result = self
                    .members
                    .get_mut(&h.session_id)
                    .map(|m| m.on_handshake(&h));
                self.member_result(&h.session_id, result);
            }
            Body::E2eData(d) => {
                let result = self.members.get_mut(&d.session_id).map(|m| m.on_data(&d));
                self.member_result(&d.session_id, result);
            }
            Body::MemberLeft(m)
                if self
                    .identity
                    .as_ref()
                    .is_some_and(|(me, _)| me.to_string() == m.device_id) =>
            {
                if let Some(mut member) = self.members.remove(&m.session_id) {
                    member.close();
                }
            }
            Body::SessionEnded(e) => {
                if let Some(mut member) = self.members.remove(&e.session_id) {
                    member.close();
                }
                self.shells.retain(|(sid, _), _| *sid != e.session_id);
                if self.only == Some(e.session_id.as_str()) {
                    return Some(Exit::SessionEnded {
                        code: e.code,
                        reason: e.reason,
                    });
                }
            }
            _ => {}
        }
        None
    }
}

impl Connection {
    /// Heartbeats and serves sessions until the server closes, revokes,
    /// or `shutdown` fires.
    async fn serve(
        &mut self,
        opts: &RunOptions,
        only: Option<&str>,
        state: Option<&AgentState>,
        identity: Option<(DeviceId, &DeviceKeys)>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Option<Exit>, AgentError> {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        let mut last_ack = tokio::time::Instant::now();
        let (outbound, mut outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let mut sessions = Sessions {
            opts,
            only,
            shells: HashMap::new(),
            outbound,
            answers: Arc::default(),
            state,
            identity,
            members: HashMap::new(),
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if last_ack.elapsed() > self.heartbeat * 3 {
                        return Err(AgentError::Connection("no heartbeat answer from the server".into()));
                    }
                    seq += 1;
                    send(&mut self.ws, Body::Heartbeat(Heartbeat { seq })).await?;
                }
                Some(body) = outbound_rx.recv() => send(&mut self.ws, body).await?,
                msg = recv(&mut self.ws) => match msg? {
                    Some(Body::HeartbeatAck(_)) => last_ack = tokio::time::Instant::now(),
                    Some(Body::Revoked(r)) => {
                        return Ok(Some(Exit::Revoked { code: r.code, reason: r.reason }));
                    }
                    Some(Body::Error(e)) => tracing::warn!(code = %e.code, message = %e.message, "server reported an error"),
                    Some(body) => {
                        if let Some(exit) = sessions.handle(body) {
                            let _ = self.ws.close(None).await;
                            return Ok(Some(exit));
                        }
                    }
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
        let new_key = SecretString::new(offer.device_key.clone());
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
    let mut creds = Credentials::load(state)?;
    let first = connect(&creds, tessera_proto::role::AGENT).await;
    // An identity rotation the server took but this side did not finish:
    // the next identity key answers the challenge.
    if let (Err(AgentError::Refused { .. }), Some(next)) = (&first, state.next_identity()?) {
        creds.keys = Arc::new(next);
        if let Ok(Connected::Ok(c)) = connect(&creds, tessera_proto::role::AGENT).await {
            state.promote_next_identity()?;
            return Ok(Ok(c));
        }
    }
    match first? {
        Connected::Ok(c) => Ok(Ok(c)),
        Connected::Revoked(exit) => {
            if let Some(next) = state.next_key()? {
                creds.key = next;
                if let Connected::Ok(c) = connect(&creds, tessera_proto::role::AGENT).await? {
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
                let keys = state.identity()?;
                let me = Credentials::load(state)?.device_id;
                match conn
                    .serve(&opts, None, Some(state), Some((me, &keys)), &mut shutdown)
                    .await
                {
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

/// One-session mode (the support agent): connect once with in-memory
/// credentials and serve `session_id` until it ends. A lost connection ends
/// the session too (the server ends it when the device goes).
pub async fn run_one_session(
    creds: &Credentials,
    session_id: &str,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conn = match connect(creds, tessera_proto::role::AGENT).await? {
        Connected::Ok(c) => c,
        Connected::Revoked(exit) => return Ok(exit),
    };
    match conn
        .serve(&opts, Some(session_id), None, None, &mut shutdown)
        .await
    {
        Ok(Some(exit)) => Ok(exit),
        Ok(None) | Err(_) => Ok(Exit::SessionEnded {
            code: "disconnected".into(),
            reason: "the connection to the server was lost".into(),
        }),
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
        Err(Exit::Revoked { code, reason }) | Err(Exit::SessionEnded { code, reason }) => {
            Err(AgentError::Refused {
                code,
                message: reason,
            })
        }
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

#[cfg(test)]
mod consent_gate {
    use super::*;

    fn sessions<'a>(opts: &'a RunOptions, only: Option<&'a str>) -> Sessions<'a> {
        let (outbound, _rx) = mpsc::channel(8);
        Sessions {
            opts,
            only,
            shells: HashMap::new(),
            outbound,
            answers: Arc::default(),
            state: None,
            identity: None,
            members: HashMap::new(),
        }
    }

    #[test]
    fn the_one_time_agent_opens_only_its_own_consented_session() {
        let opts = RunOptions::default();
        let s = sessions(&opts, Some("mine"));
        assert!(!s.may_open("mine"), "not before a yes");
        s.answers.lock().unwrap().insert("mine".into(), true);
        assert!(s.may_open("mine"));
        s.answers.lock().unwrap().insert("other".into(), true);
        assert!(!s.may_open("other"), "never another session");
    }

    #[test]
    fn a_managed_agent_never_opens_a_refused_session() {
        let opts = RunOptions::default();
        let s = sessions(&opts, None);
        assert!(s.may_open("not-asked"), "no consent needed by policy");
        s.answers.lock().unwrap().insert("refused".into(), false);
        assert!(!s.may_open("refused"));
    }
}

/// A client connection of this device (`Hello.role = CLIENT`), alongside its
/// agent: for sessions a command such as `tessera send` creates. A task
/// keeps it alive with heartbeats and passes messages through queues.
pub struct ClientConnection {
    tx: mpsc::Sender<Body>,
    rx: mpsc::Receiver<Body>,
    task: tokio::task::JoinHandle<()>,
}

impl ClientConnection {
    pub async fn open(creds: &Credentials) -> Result<ClientConnection, AgentError> {
        let conn = match connect(creds, tessera_proto::role::CLIENT).await? {
            Connected::Ok(c) => c,
            Connected::Revoked(Exit::Revoked { code, reason })
            | Connected::Revoked(Exit::SessionEnded { code, reason }) => {
                return Err(AgentError::Refused {
                    code,
                    message: reason,
                })
            }
            Connected::Revoked(Exit::Shutdown) => {
                return Err(AgentError::Connection("stopped".into()))
            }
        };
        let (tx, mut out_rx) = mpsc::channel::<Body>(64);
        let (in_tx, rx) = mpsc::channel::<Body>(1024);
        let task = tokio::spawn(async move {
            let mut c = conn;
            let mut tick = tokio::time::interval(c.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        seq += 1;
                        if send(&mut c.ws, Body::Heartbeat(Heartbeat { seq })).await.is_err() {
                            break;
                        }
                    }
                    out = out_rx.recv() => match out {
                        Some(b) => {
                            if send(&mut c.ws, b).await.is_err() {
                                break;
                            }
                        }
                        None => {
                            let _ = c.ws.close(None).await;
                            break;
                        }
                    },
                    msg = recv(&mut c.ws) => match msg {
                        Ok(Some(Body::HeartbeatAck(_))) => {}
                        Ok(Some(b)) => {
                            if in_tx.send(b).await.is_err() {
                                break;
                            }
                        }
                        _ => break,
                    },
                }
            }
        });
        Ok(ClientConnection { tx, rx, task })
    }

    pub async fn send(&self, body: Body) -> Result<(), AgentError> {
        self.tx
            .send(body)
            .await
            .map_err(|_| AgentError::Connection("the connection to the server closed".into()))
    }

    pub async fn recv(&mut self) -> Option<Body> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<Body> {
        self.rx.try_recv().ok()
    }

    /// Flushes what was sent and closes.
    pub async fn close(self) {
        let ClientConnection { tx, rx, task } = self;
        drop(tx);
        drop(rx);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}
