//! One device's control connection, from upgrade to close.
//!
//! `/ws/device` (see `http::ws_device`) already checked the `cak_` key. The
//! connection then proves the device holds its identity key ([`handshake`]),
//! is served until it ends (this module: heartbeats, orders and queued
//! traffic), dispatches what the device sends ([`dispatch`]), and rotates
//! its key on request ([`rotation`]).

mod dispatch;
mod handshake;
mod presence;
mod rotation;
mod writer;

use std::net::IpAddr;
use std::time::Duration;

use crate::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_core::ErrorCode;
use tessera_proto::v1::{Error as ErrorMsg, Revoked, Welcome};
use tessera_proto::{close, Body, Envelope};
use tokio::sync::oneshot;

use self::writer::{Farewell, Outgoing, WriterEnd};
use super::{queue, ControlCommand, Orders, Outbox, Registration, Revocation, Slot};
use crate::auth::device::DevicePrincipal;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::AppState;

pub use self::presence::Presence;
pub use self::rotation::RotationError;

/// How long a device has to answer the challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Missing this many heartbeats in a row ends the connection.
const MISSED_HEARTBEATS: u32 = 3;
/// How long one write to a device may take, unless configured: a device
/// that takes no message in this long has stopped reading. Generous next
/// to a full device frame (4 MiB) over a slow link, short next to the
/// heartbeat allowance it must not outlive by much.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the connection's last words (a revocation, a refusal) may take
/// before the socket is dropped unsaid: a device that stopped reading is
/// cut off this soon after the order, not a write timeout later.
const FAREWELL_WAIT: Duration = Duration::from_secs(1);
/// The connection's own replies (heartbeat acks, rotation steps, errors)
/// waiting for the socket. A device that asks this many things without
/// reading an answer is not reading: the connection ends.
const REPLY_QUEUE: usize = 32;
const REPLY_QUEUE_BYTES: usize = 256 << 10;

/// Serves an upgraded device socket whose `cak_` key was checked and which
/// holds one of the device's connection slots: the handshake, then the
/// connection until it ends.
pub async fn serve(
    socket: WebSocket,
    state: AppState,
    device: DevicePrincipal,
    ip: IpAddr,
    slot: Slot,
) {
    connection(Box::new(Accepted {
        socket,
        state,
        device,
        ip,
        slot,
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
    slot: Slot,
}

/// A device that proved its identity and is registered on this node.
struct Connected {
    sink: Sink,
    stream: Stream,
    registration: Registration,
    /// Released when the connection ends, or by its drop if it never does.
    presence: Presence,
    session: Session,
    /// An agent (not a `tessera send` client): it makes the device online.
    agent: bool,
    /// The protocol version both sides speak.
    version: u32,
}

async fn connection(accepted: Box<Accepted>) {
    use tracing::Instrument as _;
    let span = tracing::info_span!("device_connection", device = %accepted.device.device_id);
    let connected = Box::pin(handshake::handshake(accepted))
        .instrument(span.clone())
        .await;
    if let Some(connected) = connected {
        connected.serve().instrument(span).await;
    }
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Writes one message, giving up after [`WRITE_TIMEOUT`] (used where the
/// writer is not running yet or any more: the handshake and the farewell).
async fn write(sink: &mut Sink, m: Message, within: Duration) -> Result<(), ()> {
    match tokio::time::timeout(within, sink.send(m)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send(sink: &mut Sink, body: Body) -> Result<(), ()> {
    let frame = Message::Binary(Envelope::of(body).encode_to_vec().into());
    write(sink, frame, WRITE_TIMEOUT).await
}

async fn close_with(sink: &mut Sink, code: u16, reason: &str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if write(sink, frame, FAREWELL_WAIT).await.is_err() {
        // After the peer's Close, sending another is refused; the reply
        // the library queued when it read that Close goes out on a flush.
        let _ = tokio::time::timeout(FAREWELL_WAIT, sink.flush()).await;
    }
}

/// Sends a refusal, closes, and waits for the device's own Close.
async fn refuse(sink: &mut Sink, stream: &mut Stream, close_code: u16, code: &str, message: &str) {
    let _ = send(sink, error_body(code, message)).await;
    close_with(sink, close_code, code).await;
    linger(stream).await;
}

/// How long a connection that sent its Close waits for the peer's.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// The closing handshake's second half (RFC 6455 §7.1.1), after this side
/// sent its Close: reads and drops what the peer still sends until its
/// Close, the end of the stream, or [`CLOSE_LINGER`], so that the server
/// closes TCP only after both Close frames. Closing at once instead leaves
/// a peer that is still writing (a pong, input) to hit a closed socket:
/// the reset that draws can discard the Close it has not read yet, and it
/// sees 1006 instead of the code. Returns at once when the peer's Close
/// was already read (its stream has ended).
pub async fn linger<S>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, crate::ws::Error>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// What reading one message produced.
enum Incoming {
    /// A message, and the frame it came in (relayed output may go on to
    /// viewers as it came; see `dispatch`).
    Envelope(Envelope, bytes::Bytes),
    Closed,
    /// Oversized, undecodable, or a text frame: the connection is closed
    /// (the device's own Close is answered this way too, with its code).
    Bad(u16, &'static str),
}

async fn next_envelope(state: &AppState, stream: &mut Stream) -> Incoming {
    loop {
        match stream.next().await {
            None => return Incoming::Closed,
            // RFC 6455 §5.5.1: answered with a Close of the same code.
            Some(Ok(Message::Close(frame))) => {
                return Incoming::Bad(frame.as_ref().map_or(1000, |f| f.code), "")
            }
            Some(Ok(Message::Binary(b))) => {
                // Decoding slices `b` (no copy of the payload).
                return match Envelope::decode(b.clone()) {
                    Ok(env) => Incoming::Envelope(env, b),
                    Err(_) => Incoming::Bad(1007, "undecodable_message"),
                };
            }
            Some(Ok(Message::Text(_))) => return Incoming::Bad(1003, "binary_frames_only"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(e)) => {
                if e.is_too_big() {
                    state.metrics().oversized_frame("device");
                    return Incoming::Bad(1009, "message_too_big");
                }
                return Incoming::Closed;
            }
        }
    }
}

impl Connected {
    /// Welcomes the device, serves it until the connection ends, and
    /// records that it is gone.
    ///
    /// Two halves run side by side in this task: the reader (what the
    /// device sends, its heartbeat deadline, the node's orders) and the
    /// [`writer`]. Either may end the connection: the reader with a
    /// farewell the writer gets [`FAREWELL_WAIT`] to say, the writer when
    /// the socket fails or a write stalls. So a device that stops reading
    /// is still cut off by its heartbeat deadline or a revocation, at once.
    async fn serve(self: Box<Self>) {
        let Connected {
            mut sink,
            mut stream,
            registration,
            presence,
            mut session,
            agent,
            version,
        } = *self;
        let state = session.state.clone();
        let conn_id = session.conn_id;
        let interval = state.config().heartbeat_interval;
        let Registration {
            orders,
            notices,
            input,
            e2e,
            ..
        } = registration;
        let (replies, replies_rx) = queue::bounded(REPLY_QUEUE, REPLY_QUEUE_BYTES);
        let (say_farewell, farewell) = oneshot::channel();
        // First in the first queue the writer reads: the device hears it
        // before any notice queued since it registered.
        let _ = replies.try_send(super::queued(Body::Welcome(Welcome {
            protocol_version: version,
            heartbeat_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            connection_id: conn_id.to_string(),
        })));
        let outgoing = Outgoing {
            replies: replies_rx,
            notices,
            input,
            e2e,
            farewell,
        };
        let writer = writer::write(&mut sink, outgoing, state.config().device_write_timeout);
        tokio::pin!(writer);
        let reader = async {
            if agent {
                Box::pin(crate::session::device_arrived(
                    &state,
                    &session.device.device_id,
                ))
                .await;
            }
            session.run(&mut stream, &orders, &replies, interval).await
        };
        let stalled = tokio::select! {
            farewell = reader => {
                let _ = say_farewell.send(farewell);
                let _ = tokio::time::timeout(FAREWELL_WAIT, &mut writer).await;
                false
            }
            end = &mut writer => end == WriterEnd::Stalled,
        };
        if stalled {
            Box::pin(audit_stall(&state, &session.device, conn_id)).await;
        }
        presence.release().await;
        linger(&mut stream).await;
    }
}

/// A device that stopped reading is cut off; the audit row says so (the
/// device and connection, never its key).
async fn audit_stall(state: &AppState, device: &DevicePrincipal, conn_id: u64) {
    let timeout = state.config().device_write_timeout;
    tracing::warn!(
        conn_id,
        timeout_ms = timeout.as_millis() as u64,
        "device stopped reading: a write timed out, disconnecting"
    );
    let event = AuditEvent::new(
        &device.tenant_id,
        Actor::Device(device.device_id.clone()),
        Action::DeviceStalled,
    )
    .target(format!("device:{}", device.device_id))
    .detail("reason", "write_timeout")
    .detail("timeout_ms", timeout.as_millis() as u64)
    .detail("connection_id", conn_id.to_string());
    if let Err(e) = state.db().audit(event).await {
        tracing::warn!(error = %e, "cannot audit a stalled device connection");
    }
}

/// What a device reports about itself is shown to operators: keep it to
/// printable characters (no terminal escapes) and a sane length.
fn clip(s: &str, max: usize) -> String {
    tessera_core::text::printable(s, max)
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
    /// Reads the device and watches its heartbeat deadline and the node's
    /// orders until one of them ends the connection; what to say last.
    async fn run(
        &mut self,
        stream: &mut Stream,
        orders: &Orders,
        replies: &Outbox,
        interval: Duration,
    ) -> Farewell {
        let allowance = interval * MISSED_HEARTBEATS;
        let mut deadline = tokio::time::Instant::now() + allowance;
        let shutdown = self.state.shutdown_token().clone();
        loop {
            tokio::select! {
                // Revocations first; then what the device sends, which also
                // re-arms the heartbeat deadline, so time spent pushing back
                // on a device's output never counts as a missed heartbeat.
                biased;
                order = orders.next() => match self.obey(order) {
                    Some(farewell) => return farewell,
                    None => continue,
                },
                incoming = next_envelope(&self.state, stream) => match incoming {
                    Incoming::Envelope(env, frame) => {
                        deadline = tokio::time::Instant::now() + allowance;
                        if let Err(farewell) = self.handle_or_obey(replies, orders, env, frame).await {
                            return farewell;
                        }
                    }
                    Incoming::Closed => return Farewell::silent(),
                    Incoming::Bad(code, why) => return Farewell::close(code, why),
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Farewell::after(
                        error_body("heartbeat_timeout", "no heartbeat in time"),
                        close::HEARTBEAT_TIMEOUT,
                        "heartbeat_timeout",
                    );
                }
                () = shutdown.cancelled() => {
                    return Farewell::close(close::GOING_AWAY, close::SHUTTING_DOWN);
                }
            }
        }
    }

    /// What an order means for this connection: a farewell, or `None` for
    /// a stale revocation of a key it rotated away from.
    fn obey(&self, order: ControlCommand) -> Option<Farewell> {
        obey(&self.device.key_id, order)
    }

    /// Handles one message. Relaying it may wait (for room in another
    /// device's queue, for viewers to catch up); meanwhile the node's
    /// orders still cut this connection off. Other messages (heartbeats,
    /// rotation steps, answers) are handled whole, so an order never lands
    /// in the middle of a key rotation.
    async fn handle_or_obey(
        &mut self,
        replies: &Outbox,
        orders: &Orders,
        env: Envelope,
        frame: bytes::Bytes,
    ) -> Result<(), Farewell> {
        let relayed = matches!(
            env.body,
            Some(Body::ChannelData(_) | Body::E2eHandshake(_) | Body::E2eData(_))
        );
        if !relayed {
            // Boxed: the rarely used handlers are large, and an idle
            // connection should not carry their state.
            return Box::pin(self.handle(replies, env, frame)).await;
        }
        // Relaying does not change the key, so the one it started with
        // judges any order that arrives meanwhile.
        let key_id = self.device.key_id.clone();
        let mut handling = Box::pin(self.handle(replies, env, frame));
        loop {
            tokio::select! {
                biased;
                order = orders.next() => {
                    if let Some(farewell) = obey(&key_id, order) {
                        return Err(farewell);
                    }
                }
                handled = &mut handling => return handled,
            }
        }
    }
}

/// See [`Session::obey`].
fn obey(key_id: &str, order: ControlCommand) -> Option<Farewell> {
    match order {
        ControlCommand::Revoke(revocation) => {
            let Revocation {
                key_id: revoked,
                code,
                reason,
            } = *revocation;
            // A stale order for a key this connection rotated away from.
            if revoked != key_id && code == ErrorCode::KeyRevoked {
                return None;
            }
            Some(Farewell::after(
                Body::Revoked(Revoked {
                    code: code.as_str().to_owned(),
                    reason,
                }),
                close::REVOKED,
                code.as_str(),
            ))
        }
        ControlCommand::Replaced => Some(Farewell::close(
            close::REPLACED,
            "replaced_by_newer_connection",
        )),
        ControlCommand::IdentityRotated => {
            Some(Farewell::close(close::REPLACED, "identity_rotated"))
        }
    }
}

fn error_body(code: &str, message: &str) -> Body {
    Body::Error(ErrorMsg {
        code: code.to_owned(),
        message: message.to_owned(),
    })
}
