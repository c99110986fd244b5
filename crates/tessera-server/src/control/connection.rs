//! One device's control connection, from upgrade to close.
//!
//! `/ws/device` (see `http::ws_device`) already checked the `cak_` key. The
//! connection then proves the device holds its identity key ([`handshake`]),
//! is served until it ends (this module: heartbeats, orders and queued
//! traffic), dispatches what the device sends ([`dispatch`]), and rotates
//! its key on request ([`rotation`]).

mod dispatch;
mod handshake;
mod rotation;

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_core::ErrorCode;
use tessera_proto::v1::{Error as ErrorMsg, Revoked, Welcome};
use tessera_proto::{close, Body, Envelope};

use super::{ControlCommand, Registration, Revocation};
use crate::auth::device::DevicePrincipal;
use crate::store;
use crate::AppState;

pub use self::rotation::RotationError;

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

/// Serves an upgraded device socket whose `cak_` key was checked: the
/// handshake, then the connection until it ends.
pub async fn serve(socket: WebSocket, state: AppState, device: DevicePrincipal, ip: IpAddr) {
    connection(Box::new(Accepted {
        socket,
        state,
        device,
        ip,
    }))
    .await
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
    ip: IpAddr,
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
    let connected = Box::pin(handshake::handshake(accepted))
        .instrument(span.clone())
        .await;
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
            &crate::automatic::Routing::of(&state),
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
                        if key_id != self.device.key_id && code == ErrorCode::KeyRevoked {
                            continue;
                        }
                        let _ = send(sink, Body::Revoked(Revoked { code: code.as_str().to_owned(), reason })).await;
                        return close_with(sink, close::REVOKED, code.as_str()).await;
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
}

fn error_body(code: &str, message: &str) -> Body {
    Body::Error(ErrorMsg {
        code: code.to_owned(),
        message: message.to_owned(),
    })
}
