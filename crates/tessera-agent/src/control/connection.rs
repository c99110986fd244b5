//! One authenticated control connection: the WebSocket to
//! `/ws/device`, the identity handshake (challenge, signed hello, welcome),
//! sending and receiving envelopes, key rotation, and serving sessions with
//! heartbeats until the connection drops.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_client::control::{self, DeviceHello, HandshakeError};
use tessera_client::ApiClient;
use tessera_core::api::SecretString;
use tessera_core::ErrorCode;
use tessera_proto::v1::{Heartbeat, RotateKeyConfirm, RotateKeyRequest};
use tessera_proto::{close, Body, Envelope, MAX_DEVICE_FRAME, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::failover;
use super::sessions::{Serving, Sessions};
use super::Exit;
use crate::credentials::Credentials;
use crate::error::AgentError;
use crate::state::AgentState;
use crate::{sysinfo, AGENT_VERSION};

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Messages from channel and consent tasks to the connection.
const OUTBOUND_QUEUE: usize = 256;

/// An authenticated control connection.
pub struct Connection {
    pub(super) ws: Ws,
    /// The server URL it was opened to, and the address it reached.
    pub server: String,
    pub addr: SocketAddr,
    pub heartbeat: Duration,
    pub connection_id: String,
}

/// What connecting led to: a connection, or the server's word that this
/// device (or its key) is revoked.
pub(super) enum Connected {
    Ok(Box<Connection>),
    Revoked(Exit),
}

/// Whether the server's error code says this device or its key was revoked.
fn revoked_code(code: &str) -> bool {
    code.parse::<ErrorCode>()
        .is_ok_and(ErrorCode::is_revocation)
}

/// Longest wait for a TCP connection to one address: a host that is gone
/// without a word (no refusal) must not hold the agent back from the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait, once connected, for the TLS, WebSocket and identity
/// handshakes: a node that accepts and then says nothing is given up on.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the WebSocket to `creds.server` with the device key and proves
/// the identity key (`role` is `tessera_proto::role::AGENT` or `CLIENT`).
/// A name that resolves to several addresses has each tried in turn.
pub(super) async fn connect(creds: &Credentials, role: u32) -> Result<Connected, AgentError> {
    connect_after(creds, role, None).await
}

/// [`connect`], trying the addresses the server's name resolves to from
/// the one after `last` (the address of the connection that just ended;
/// see [`failover::address_order`]).
pub(super) async fn connect_after(
    creds: &Credentials,
    role: u32,
    last: Option<SocketAddr>,
) -> Result<Connected, AgentError> {
    let client = ApiClient::new(&creds.server, &creds.trust)?;
    let url = client.ws_url("/ws/device")?;
    let resolved = resolve(&url).await?;
    let mut failure = AgentError::Connection(format!("{} resolves to no address", creds.server));
    for addr in failover::address_order(resolved, last) {
        let attempt = async {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    AgentError::Connection(format!(
                        "{addr}: no answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| AgentError::Connection(format!("{addr}: {e}")))?;
            tokio::time::timeout(HANDSHAKE_TIMEOUT, open(creds, role, &url, tcp, addr))
                .await
                .map_err(|_| {
                    AgentError::Connection(format!(
                        "{addr}: no handshake within {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ))
                })?
        };
        match attempt.await {
            Ok(connected) => return Ok(connected),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                tracing::debug!(server = %creds.server, address = %addr, error = %e, "address failed");
                failure = e;
            }
        }
    }
    Err(failure)
}

/// The addresses a `ws(s)://` URL's host stands for (an address literal is
/// itself; a name is asked of the resolver).
async fn resolve(url: &url::Url) -> Result<Vec<SocketAddr>, AgentError> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| AgentError::Connection(format!("{url} has no port")))?;
    match url.host() {
        Some(url::Host::Ipv4(ip)) => Ok(vec![SocketAddr::from((ip, port))]),
        Some(url::Host::Ipv6(ip)) => Ok(vec![SocketAddr::from((ip, port))]),
        Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map(Iterator::collect)
            .map_err(|e| AgentError::Connection(format!("cannot resolve {name}: {e}"))),
        None => Err(AgentError::Connection(format!("{url} has no host"))),
    }
}

/// The WebSocket upgrade over `tcp` (TLS for `wss`, with the URL's host
/// as the name checked and sent), then the identity handshake.
async fn open(
    creds: &Credentials,
    role: u32,
    url: &url::Url,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Result<Connected, AgentError> {
    // The Nagle delay would hold back each keystroke of a relayed shell.
    let _ = tcp.set_nodelay(true);
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
    let connected = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        Some(config),
        Some(Connector::Rustls(Arc::new(tls))),
    )
    .await;
    let ws = match connected {
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

    handshake(ws, creds, role, addr)
        .await
        .map(|c| Connected::Ok(Box::new(c)))
}

/// The device side of the control handshake (answer the server's challenge
/// with a hello signed by the identity key, read the welcome), through the
/// one implementation in `tessera_client::control`.
async fn handshake(
    mut ws: Ws,
    creds: &Credentials,
    role: u32,
    addr: SocketAddr,
) -> Result<Connection, AgentError> {
    let hello = DeviceHello {
        keys: &creds.keys,
        device_id: &creds.device_id,
        protocol_version: PROTOCOL_VERSION,
        role,
        agent_version: AGENT_VERSION.to_owned(),
        os: sysinfo::os(),
        hostname: sysinfo::hostname(),
    };
    match control::handshake(&mut ws, &hello).await {
        Ok(w) => Ok(Connection {
            ws,
            server: creds.server.clone(),
            addr,
            heartbeat: Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(100))),
            connection_id: w.connection_id,
        }),
        Err(HandshakeError::Refused { code, message }) => {
            Err(AgentError::Refused { code, message })
        }
        Err(HandshakeError::Transport(e)) => Err(AgentError::Connection(e.to_string())),
        Err(HandshakeError::Unexpected { wanted, got }) => Err(AgentError::Protocol(format!(
            "expected {wanted}, got {got}"
        ))),
        Err(HandshakeError::Decode(e)) => Err(AgentError::Protocol(e.to_string())),
        Err(HandshakeError::Closed { code, reason }) => Err(AgentError::Protocol(format!(
            "the server closed the connection during the handshake ({}{reason})",
            code.map(|c| format!("{c} ")).unwrap_or_default()
        ))),
    }
}

pub(super) async fn send(ws: &mut Ws, body: Body) -> Result<(), AgentError> {
    ws.send(Message::Binary(Envelope::of(body).encode_to_vec().into()))
        .await
        .map_err(|e| AgentError::Connection(e.to_string()))
}

/// The next envelope; `None` when the server closed (its close code, if
/// it revoked us, is turned into a `Revoked` body).
pub(super) async fn recv(ws: &mut Ws) -> Result<Option<Body>, AgentError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                let env = Envelope::decode(b).map_err(|e| AgentError::Protocol(e.to_string()))?;
                // A message of a newer protocol than this agent knows is
                // skipped, not taken for the end of the connection.
                if env.body.is_none() {
                    continue;
                }
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
    /// Heartbeats and serves sessions until the server closes, revokes,
    /// or `shutdown` fires.
    pub(super) async fn serve(
        &mut self,
        serving: Serving<'_>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Option<Exit>, AgentError> {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        let mut last_ack = tokio::time::Instant::now();
        let (outbound, mut outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let mut sessions = Sessions::new(serving, outbound);
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
                    for body in sessions.farewell() {
                        let _ = send(&mut self.ws, body).await;
                    }
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
                other => return Err(AgentError::unexpected("RotateKeyOffer", other)),
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
                other => return Err(AgentError::unexpected("RotateKeyDone", other)),
            }
        }
        state.promote_next_key()?;
        Ok(offer.key_id)
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
