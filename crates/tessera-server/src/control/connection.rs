//! One device's control connection, from upgrade to close.
//!
//! The HTTP upgrade already checked the `cak_` key. The connection then
//! proves the device holds its identity key: the server sends a fresh nonce,
//! the device signs it (bound to its id and protocol version) with its
//! Ed25519 key, and the server verifies against the key it stored at
//! enrollment. A stolen `cak_` alone therefore gets no further than the
//! challenge.

use std::time::Duration;
use tessera_core::ErrorCode;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_core::identity::{self, challenge_body, DeviceId, Label};
use tessera_core::secret::{random_bytes, Secret, SecretKind};
use tessera_proto::v1::{
    Challenge, Error as ErrorMsg, HeartbeatAck, Revoked, RotateKeyDone, RotateKeyOffer, Welcome,
};
use tessera_proto::{
    close, Body, Envelope, MAX_DEVICE_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use super::{ControlCommand, Registration, Revocation};
use crate::auth::device::DevicePrincipal;
use crate::http::error::ApiError;
use crate::http::extract::ClientIp;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, StoreResult};
use crate::AppState;

/// How long a device has to answer the challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Missing this many heartbeats in a row ends the connection.
const MISSED_HEARTBEATS: u32 = 3;

/// The WebSocket's read buffer: grows for a large frame, starts (and, for
/// an idle device, stays) small. The library's default, 128 KiB per
/// connection, would be most of an idle device's memory.
pub const READ_BUFFER: usize = 4 * 1024;
/// Frames are written out once this much is buffered (or on flush).
pub const WRITE_BUFFER: usize = 64 * 1024;

/// `GET /ws/device`: authenticate the key, then upgrade.
pub async fn upgrade(
    State(state): State<AppState>,
    ip: ClientIp,
    device: DevicePrincipal,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                ErrorCode::WebsocketRequired,
                "this endpoint speaks WebSocket",
            )
            .into_response()
        }
    };
    ws.max_message_size(MAX_DEVICE_FRAME)
        .max_frame_size(MAX_DEVICE_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
            connection(Box::new(Accepted {
                socket,
                state,
                device,
                ip,
            }))
        })
}

/// An upgraded socket and who it claims to be, before the handshake.
///
/// The connection's future is held for the connection's whole life, and a
/// future keeps room for its arguments and for the largest state it ever
/// passes through. So the arguments travel boxed, the handshake runs in its
/// own boxed future that is freed once it is done, and an idle device holds
/// only the loop of [`Connected::serve`].
struct Accepted {
    socket: WebSocket,
    state: AppState,
    device: DevicePrincipal,
    ip: ClientIp,
}

/// A device that proved its identity and is registered on this node.
struct Connected {
    sink: Sink,
    stream: Stream,
    registration: Registration,
    session: Session,
    /// An agent (not a `tessera send` client): it makes the device online.
    agent: bool,
    /// The protocol version both sides speak.
    version: u32,
    /// When this connection was recorded in the device's row.
    connected_at: tessera_core::Timestamp,
}

async fn connection(accepted: Box<Accepted>) {
    use tracing::Instrument as _;
    let span = tracing::info_span!("device_connection", device = %accepted.device.device_id);
    let connected = Box::pin(handshake(accepted)).instrument(span.clone()).await;
    if let Some(mut connected) = connected {
        connected.serve().instrument(span).await;
    }
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

async fn send(sink: &mut Sink, body: Body) -> Result<(), axum::Error> {
    sink.send(Message::Binary(Envelope::of(body).encode_to_vec().into()))
        .await
}

async fn close_with(sink: &mut Sink, code: u16, reason: &str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Sends a refusal and closes.
async fn refuse(sink: &mut Sink, close_code: u16, code: &str, message: &str) {
    let _ = send(
        sink,
        Body::Error(ErrorMsg {
            code: code.to_owned(),
            message: message.to_owned(),
        }),
    )
    .await;
    close_with(sink, close_code, code).await;
}

/// What reading one message produced.
enum Incoming {
    Envelope(Envelope),
    Closed,
    /// Oversized, undecodable, or a text frame: the connection is closed.
    Bad(u16, &'static str),
}

async fn next_envelope(state: &AppState, stream: &mut Stream) -> Incoming {
    loop {
        match stream.next().await {
            None | Some(Ok(Message::Close(_))) => return Incoming::Closed,
            Some(Ok(Message::Binary(b))) => {
                return match Envelope::decode(b) {
                    Ok(env) => Incoming::Envelope(env),
                    Err(_) => Incoming::Bad(1007, "undecodable_message"),
                }
            }
            Some(Ok(Message::Text(_))) => return Incoming::Bad(1003, "binary_frames_only"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(e)) => {
                if is_too_big(&e) {
                    state.metrics().oversized_frame("device");
                    return Incoming::Bad(1009, "message_too_big");
                }
                return Incoming::Closed;
            }
        }
    }
}

/// Whether a WebSocket read failed because a message exceeded the limit
/// (detected from the frame header, before the payload is buffered).
pub fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            return matches!(t, tokio_tungstenite::tungstenite::Error::Capacity(_));
        }
        source = s.source();
    }
    false
}

async fn audit_auth_failure(
    state: &AppState,
    device: &DevicePrincipal,
    ip: ClientIp,
    reason: &str,
) {
    let result: StoreResult<()> = async {
        let mut tx = state.db().begin_write().await?;
        state
            .audit(
                &mut tx,
                AuditEvent::new(
                    &device.tenant_id,
                    Actor::Device(device.device_id.clone()),
                    Action::DeviceAuthFailed,
                )
                .ip(Some(ip.0))
                .target(format!("device:{}", device.device_id))
                .detail("reason", reason)
                .detail("key", device.key_prefix.clone()),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot audit a failed device authentication");
    }
}

/// Challenges the device to prove its identity key, then records and
/// registers the connection. `None`: refused (and told why) or gone.
async fn handshake(accepted: Box<Accepted>) -> Option<Box<Connected>> {
    let Accepted {
        socket,
        state,
        device,
        ip,
    } = *accepted;
    let (mut sink, mut stream) = socket.split();
    let nonce: [u8; 32] = random_bytes();
    let challenge = Body::Challenge(Challenge {
        nonce: nonce.to_vec().into(),
        protocol_version: PROTOCOL_VERSION,
        min_protocol_version: MIN_PROTOCOL_VERSION,
        server_time_ms: state.now().as_millis(),
    });
    send(&mut sink, challenge).await.ok()?;

    let hello = match tokio::time::timeout(HELLO_TIMEOUT, next_envelope(&state, &mut stream)).await
    {
        Ok(Incoming::Envelope(Envelope {
            body: Some(Body::Hello(h)),
        })) => h,
        Ok(Incoming::Bad(code, why)) => {
            close_with(&mut sink, code, why).await;
            return None;
        }
        Ok(Incoming::Closed) => return None,
        Ok(Incoming::Envelope(_)) => {
            refuse(
                &mut sink,
                close::AUTH_FAILED,
                "hello_expected",
                "expected Hello",
            )
            .await;
            return None;
        }
        Err(_) => {
            refuse(
                &mut sink,
                close::AUTH_FAILED,
                "hello_timeout",
                "no Hello within 10 s",
            )
            .await;
            return None;
        }
    };

    let claimed = DeviceId::parse(&hello.device_id)
        .ok()
        .filter(|c| c.as_str() == device.device_id);
    let Some(claimed) = claimed else {
        Box::pin(audit_auth_failure(
            &state,
            &device,
            ip,
            "device_id_mismatch",
        ))
        .await;
        refuse(
            &mut sink,
            close::AUTH_FAILED,
            "identity_proof_failed",
            "the device id does not match the key's device",
        )
        .await;
        return None;
    };
    if hello.protocol_version < MIN_PROTOCOL_VERSION {
        refuse(
            &mut sink,
            close::INCOMPATIBLE,
            "incompatible_version",
            &format!(
                "protocol {} is too old; this server needs {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        )
        .await;
        return None;
    }
    let body = challenge_body(&nonce, &claimed, hello.protocol_version);
    if identity::verify(
        &device.ed25519_public,
        Label::Challenge,
        &body,
        &hello.signature,
    )
    .is_err()
    {
        Box::pin(audit_auth_failure(
            &state,
            &device,
            ip,
            "bad_challenge_signature",
        ))
        .await;
        refuse(
            &mut sink,
            close::AUTH_FAILED,
            "identity_proof_failed",
            "the challenge signature does not verify with this device's identity key",
        )
        .await;
        return None;
    }
    let version = hello.protocol_version.min(PROTOCOL_VERSION);
    let agent = hello.role != tessera_proto::role::CLIENT;
    let connected_at = state.now();

    // A client connection (a `tessera send`) does not make the device
    // online or offline: its agent does.
    if agent {
        let ip_text = ip.0.to_string();
        let connected = store::devices::Connected {
            id: &device.device_id,
            key_id: &device.key_id,
            ip: &ip_text,
            agent_version: &clip(&hello.agent_version, 64),
            os: &clip(&hello.os, 128),
            hostname: &clip(&hello.hostname, 255),
            now: connected_at,
        };
        if let Err(e) = Box::pin(store::devices::mark_connected(state.db(), connected)).await {
            tracing::warn!(error = %e, "cannot record the connection");
        }
    }
    // Registered only once the row says what connected, so a device that
    // shows online also shows its agent version and OS.
    let role = if agent {
        tessera_proto::role::AGENT
    } else {
        tessera_proto::role::CLIENT
    };
    let registration = state
        .registry()
        .register(&device.device_id, &device.key_id, role, version);
    let conn_id = registration.conn_id;
    tracing::info!(conn_id, "device connected");
    Some(Box::new(Connected {
        sink,
        stream,
        registration,
        session: Session {
            state,
            device,
            conn_id,
            pending_rotation: None,
        },
        agent,
        version,
        connected_at,
    }))
}

impl Connected {
    /// Welcomes the device, serves it until the connection ends, and
    /// records that it is gone.
    async fn serve(&mut self) {
        let Connected {
            sink,
            stream,
            registration,
            session,
            agent,
            version,
            connected_at,
        } = self;
        let state = session.state.clone();
        let conn_id = session.conn_id;
        let interval = state.config().heartbeat_interval;
        let welcome = Body::Welcome(Welcome {
            protocol_version: *version,
            heartbeat_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            connection_id: conn_id.to_string(),
        });
        if send(sink, welcome).await.is_ok() {
            if *agent {
                Box::pin(crate::session::device_arrived(
                    &state,
                    &session.device.device_id,
                ))
                .await;
            }
            session.run(sink, stream, registration, interval).await;
        }
        let registry = state.registry();
        registry.unregister(&session.device.device_id, conn_id);
        Box::pin(crate::automatic::connection_closed(
            &state,
            &session.device.device_id,
            conn_id,
        ))
        .await;
        if *agent {
            // The shells of this connection died with it; sessions waiting for
            // consent end too unless a newer connection took over (it asks again).
            let reconnected = registry.is_connected(&session.device.device_id);
            Box::pin(crate::session::connection_closed(
                &state,
                &session.device.device_id,
                conn_id,
                reconnected,
            ))
            .await;
            if let Err(e) = Box::pin(store::devices::mark_disconnected(
                state.db(),
                &session.device.device_id,
                *connected_at,
                state.now(),
            ))
            .await
            {
                tracing::warn!(error = %e, "cannot record the disconnection");
            }
        }
        tracing::info!(conn_id, "device disconnected");
    }
}

/// What a device reports about itself is shown to operators: keep it to
/// printable characters (no terminal escapes) and a sane length.
fn clip(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// An authenticated connection's state.
struct Session {
    state: AppState,
    device: DevicePrincipal,
    conn_id: u64,
    /// The key offered by a rotation, until the device confirms it.
    pending_rotation: Option<String>,
}

impl Session {
    async fn run(
        &mut self,
        sink: &mut Sink,
        stream: &mut Stream,
        registration: &mut Registration,
        interval: Duration,
    ) {
        let Registration {
            orders,
            notices,
            input,
            e2e,
            ..
        } = registration;
        let allowance = interval * MISSED_HEARTBEATS;
        let mut deadline = tokio::time::Instant::now() + allowance;
        let shutdown = self.state.shutdown_token().clone();
        loop {
            tokio::select! {
                // Revocations first; then what the device sends, which also
                // re-arms the heartbeat deadline, so time spent pushing back
                // on a device's output never counts as a missed heartbeat.
                biased;
                order = orders.next() => match order {
                    ControlCommand::Revoke(revocation) => {
                        let Revocation { key_id, code, reason } = *revocation;
                        // A stale order for a key this connection rotated away from.
                        if key_id != self.device.key_id && code == "key_revoked" {
                            continue;
                        }
                        let _ = send(sink, Body::Revoked(Revoked { code: code.to_owned(), reason })).await;
                        return close_with(sink, close::REVOKED, code).await;
                    }
                    ControlCommand::Replaced => {
                        return close_with(sink, close::REPLACED, "replaced_by_newer_connection").await;
                    }
                    ControlCommand::IdentityRotated => {
                        return close_with(sink, close::REPLACED, "identity_rotated").await;
                    }
                },
                incoming = next_envelope(&self.state, stream) => match incoming {
                    Incoming::Envelope(env) => {
                        deadline = tokio::time::Instant::now() + allowance;
                        // Boxed: the rarely used handlers are large, and an idle
                        // connection should not carry their state.
                        if let Err(stop) = Box::pin(self.handle(sink, env)).await {
                            if let Some((code, why)) = stop {
                                close_with(sink, code, why).await;
                            }
                            return;
                        }
                    }
                    Incoming::Closed => return,
                    Incoming::Bad(code, why) => return close_with(sink, code, why).await,
                },
                Some(notice) = notices.recv() => {
                    if sink.send(Message::Binary(notice.encode_to_vec().into())).await.is_err() {
                        return;
                    }
                }
                Some(typed) = input.recv() => {
                    if sink.send(Message::Binary(typed.encode_to_vec().into())).await.is_err() {
                        return;
                    }
                }
                Some(sealed) = e2e.recv() => {
                    if sink.send(Message::Binary(sealed.encode_to_vec().into())).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return refuse(sink, close::HEARTBEAT_TIMEOUT, "heartbeat_timeout", "no heartbeat in time").await;
                }
                () = shutdown.cancelled() => {
                    return close_with(sink, 1001, "server_shutting_down").await;
                }
            }
        }
    }

    /// Handles one message. `Err(Some(close))` ends the connection with that
    /// close code; `Err(None)` ends it without one (the socket is gone).
    async fn handle(
        &mut self,
        sink: &mut Sink,
        env: Envelope,
    ) -> Result<(), Option<(u16, &'static str)>> {
        let reply = match env.body {
            Some(Body::Heartbeat(h)) => Body::HeartbeatAck(HeartbeatAck { seq: h.seq }),
            Some(Body::RotateKeyRequest(_)) => match self.offer_rotation().await {
                Ok(body) => body,
                Err(e) if e.code == REVOKED_CODE => return self.cut_off(sink).await,
                Err(e) => error_body(e.code.as_str(), &e.message),
            },
            Some(Body::RotateKeyConfirm(c)) => match self.confirm_rotation(&c.key_id).await {
                Ok(body) => body,
                Err(e) if e.code == REVOKED_CODE => return self.cut_off(sink).await,
                Err(e) => error_body(e.code.as_str(), &e.message),
            },
            // Relay traffic from the device: nothing to answer.
            Some(Body::ChannelData(d)) => {
                // Output goes only into this device's own sessions.
                if let Some(live) = self.state.hub().get(&d.session_id) {
                    if live.device_id == self.device.device_id {
                        // Bounded pieces, so a viewer queue's worst case is
                        // its length times this, whatever the device sends.
                        let mut data = d.data;
                        while !data.is_empty() {
                            let piece = data.split_to(data.len().min(crate::relay::MAX_PIECE));
                            live.output(piece).await;
                        }
                    }
                }
                return Ok(());
            }
            Some(Body::ChannelClose(c)) => {
                crate::session::channel_closed(
                    &self.state,
                    &self.device.device_id,
                    &c.session_id,
                    c.exit_status,
                    &clip(&c.reason, 256),
                )
                .await;
                return Ok(());
            }
            Some(Body::ConsentResponse(r)) => {
                if let Err(e) = crate::session::consent_answer(
                    &self.state,
                    &self.device.device_id,
                    &r.session_id,
                    r.granted,
                )
                .await
                {
                    tracing::warn!(error = %e, "cannot record a consent answer");
                }
                return Ok(());
            }
            // Automatic sessions: the creator asks, members answer, and the
            // server routes what they seal for each other.
            Some(Body::AutoSessionCreate(req)) => {
                match crate::automatic::create(&self.state, &self.device, self.conn_id, req).await {
                    Ok(created) => Body::AutoSessionCreated(created),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create an automatic session");
                        error_body("internal", "the session could not be created")
                    }
                }
            }
            Some(Body::AutoJoinAnswer(a)) => {
                if let Err(e) =
                    crate::automatic::answer(&self.state, &self.device.device_id, self.conn_id, a)
                        .await
                {
                    tracing::warn!(error = %e, "cannot record an automatic join answer");
                }
                return Ok(());
            }
            Some(Body::E2eHandshake(h)) => {
                crate::automatic::handshake(&self.state, &self.device.device_id, self.conn_id, h)
                    .await;
                return Ok(());
            }
            Some(Body::E2eData(d)) => {
                crate::automatic::data(&self.state, &self.device.device_id, self.conn_id, d).await;
                return Ok(());
            }
            Some(Body::MemberLeft(m)) => {
                crate::automatic::remove_member(
                    &self.state,
                    &self.device.device_id,
                    self.conn_id,
                    &m.session_id,
                    &m.device_id,
                    &m.reason,
                )
                .await;
                return Ok(());
            }
            Some(Body::SessionEnded(e)) => {
                crate::automatic::end_by_creator(
                    &self.state,
                    &self.device.device_id,
                    self.conn_id,
                    &e.session_id,
                )
                .await;
                return Ok(());
            }
            _ => return Err(Some((1008, "unexpected_message"))),
        };
        send(sink, reply).await.map_err(|_| None)
    }

    /// Tells the device its key or itself is revoked, and ends the
    /// connection.
    async fn cut_off(&self, sink: &mut Sink) -> Result<(), Option<(u16, &'static str)>> {
        let _ = send(
            sink,
            Body::Revoked(Revoked {
                code: REVOKED_CODE.as_str().to_owned(),
                reason: "the key this connection authenticated with is no longer valid".to_owned(),
            }),
        )
        .await;
        Err(Some((close::REVOKED, REVOKED_CODE.as_str())))
    }

    async fn offer_rotation(&mut self) -> Result<Body, ApiError> {
        if self.pending_rotation.is_some() {
            return Err(ApiError::conflict(
                ErrorCode::RotationPending,
                "a rotation is already waiting for confirmation",
            ));
        }
        let secret = Secret::generate(SecretKind::DeviceKey);
        let key_id = uuid::Uuid::now_v7().to_string();
        let now = self.state.now();
        let d = &self.device;
        let mut tx = self.state.db().begin_write().await?;
        // A key revoked since this connection opened must not mint its
        // successor (the presence sweep may not have cut us off yet).
        if !store::devices::hold_live_key(&mut tx, &d.device_id, &d.key_id, now).await? {
            return Err(revoked());
        }
        store::devices::insert_key(
            &mut tx,
            store::devices::NewKey {
                id: &key_id,
                tenant_id: &d.tenant_id,
                device_id: &d.device_id,
                key_hash: &secret.hash(),
                key_prefix: &secret.prefix(),
                created_by: &format!("device:{}", d.device_id),
                active: false,
                now,
            },
        )
        .await?;
        self.state
            .audit(
                &mut tx,
                AuditEvent::new(
                    &d.tenant_id,
                    Actor::Device(d.device_id.clone()),
                    Action::KeyIssued,
                )
                .target(format!("device:{}", d.device_id))
                .detail("key_id", key_id.clone())
                .detail("key", secret.prefix())
                .detail("reason", "rotation_requested"),
            )
            .await?;
        tx.commit().await?;
        self.pending_rotation = Some(key_id.clone());
        Ok(Body::RotateKeyOffer(RotateKeyOffer {
            key_id,
            device_key: secret.expose().to_owned(),
        }))
    }

    async fn confirm_rotation(&mut self, key_id: &str) -> Result<Body, ApiError> {
        if self.pending_rotation.as_deref() != Some(key_id) {
            return Err(ApiError::conflict(
                ErrorCode::UnknownRotation,
                "no rotation with that key id is pending on this connection",
            ));
        }
        let now = self.state.now();
        let d = &self.device;
        let mut tx = self.state.db().begin_write().await?;
        if !store::devices::hold_live_key(&mut tx, &d.device_id, &d.key_id, now).await? {
            return Err(revoked());
        }
        if !store::devices::activate_key(&mut tx, &d.device_id, key_id, now).await? {
            return Err(ApiError::conflict(
                ErrorCode::UnknownRotation,
                "the offered key is no longer pending",
            ));
        }
        if !store::devices::revoke_key(
            &mut tx,
            &d.tenant_id,
            &d.device_id,
            &d.key_id,
            "rotated",
            now,
        )
        .await?
        {
            return Err(revoked());
        }
        self.state
            .audit(
                &mut tx,
                AuditEvent::new(
                    &d.tenant_id,
                    Actor::Device(d.device_id.clone()),
                    Action::KeyRotated,
                )
                .target(format!("device:{}", d.device_id))
                .detail("old_key_id", d.key_id.clone())
                .detail("new_key_id", key_id),
            )
            .await?;
        tx.commit().await?;
        self.state
            .registry()
            .set_key(&d.device_id, self.conn_id, key_id);
        self.device.key_id = key_id.to_owned();
        self.pending_rotation = None;
        Ok(Body::RotateKeyDone(RotateKeyDone {
            key_id: key_id.to_owned(),
        }))
    }
}

const REVOKED_CODE: ErrorCode = ErrorCode::KeyRevoked;

fn revoked() -> ApiError {
    ApiError::unauthorized(REVOKED_CODE, "this device or key has been revoked")
}

fn error_body(code: &str, message: &str) -> Body {
    Body::Error(ErrorMsg {
        code: code.to_owned(),
        message: message.to_owned(),
    })
}
