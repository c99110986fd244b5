//! A viewer's connection to one session, once `/ws/viewer` admitted it
//! (see `http::ws_viewer`, which checks the token, its login and the
//! session before the upgrade). Input from a `view_only` viewer is dropped (and counted), input from
//! a `control` viewer is rate-limited to 200 events a second, and every
//! message is capped at 64 KiB before it is buffered.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::ws::{CloseFrame, Message, WebSocket};
use futures_util::Stream;
use futures_util::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use prost::Message as _;
use tessera_proto::v1::{
    ChannelClose, ChannelData, ChannelKind, ChannelResize, SessionEnded, ViewerReady,
};
use tessera_proto::{Body, Envelope};

use super::{Access, Joined, Kick, LiveSession, ToViewer, SHELL_CHANNEL};
use crate::auth::viewer::{parse_access, ViewerClaims};
use crate::control::connection::linger;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::AppState;
use tessera_core::kinds::SessionChannel;
use tokio_util::sync::CancellationToken;

/// Input events a control viewer may send per second.
pub const INPUT_PER_SECOND: u32 = 200;
/// How long input waits for room in the device's queue before it is dropped
/// (counted as `device_busy`).
const INPUT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Close codes on the viewer plane.
pub mod close {
    /// The session ended (the reason is in the preceding `SessionEnded`).
    pub const SESSION_ENDED: u16 = 4000;
    /// The viewer fell too far behind the output.
    pub const TOO_SLOW: u16 = 4010;
    /// The operator's login ended.
    pub const LOGGED_OUT: u16 = 4011;
    /// The operator's role changed and no longer allows this viewer's
    /// access (a `control` viewer of an operator made `viewer`): it may
    /// rejoin with a new, view-only, token.
    pub const ROLE_CHANGED: u16 = 4012;
    /// The operator's account was disabled.
    pub const USER_DISABLED: u16 = 4013;
    /// A screen viewer answered no ping for three heartbeat intervals
    /// (it vanished without closing): it is dropped and what it held is
    /// released.
    pub const UNRESPONSIVE: u16 = 4014;
    /// The viewer's node lost its way to the node relaying the session
    /// (NATS down, or that node stopped answering): the session may
    /// still be live; reconnecting may reach it again.
    pub const RELAY_UNAVAILABLE: u16 = 4015;
    /// This node is stopping (drained): reconnecting through the load
    /// balancer reaches the session from a live node. The code and text
    /// are the device plane's.
    pub use tessera_proto::close::{GOING_AWAY, SHUTTING_DOWN};
}

/// A send that does not complete in this long means the viewer stopped
/// reading its socket: it is dropped rather than waited for.
pub(crate) const SEND_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// What a viewer's connection reads and writes: its WebSocket on this
/// node, or the link to the node it is connected to (`cluster::link`).
pub trait Socket:
    Stream<Item = Result<Message, crate::ws::Error>>
    + futures_util::Sink<Message, Error = crate::ws::Error>
    + Send
    + 'static
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<Message, crate::ws::Error>>
        + futures_util::Sink<Message, Error = crate::ws::Error>
        + Send
        + 'static
{
}

/// A viewer's socket, whichever it is.
pub type ViewerSocket = std::pin::Pin<Box<dyn Socket>>;

/// A viewer's socket as this node's own WebSocket.
pub fn local(socket: WebSocket) -> ViewerSocket {
    Box::pin(socket)
}

pub(super) type Sink = futures_util::stream::SplitSink<ViewerSocket, Message>;
pub(super) type Source = futures_util::stream::SplitStream<ViewerSocket>;

pub(super) async fn send(sink: &mut Sink, body: Body) -> bool {
    send_encoded(sink, Envelope::of(body).encode_to_vec().into()).await
}

/// Sends an envelope encoded once for every viewer.
pub(super) async fn send_encoded(sink: &mut Sink, envelope: bytes::Bytes) -> bool {
    let frame = Message::Binary(envelope);
    matches!(
        tokio::time::timeout(SEND_STALL, sink.send(frame)).await,
        Ok(Ok(()))
    )
}

/// Output waiting in a viewer's queue goes out in one write, up to this
/// much (a burst of small shell writes costs one system call, not one
/// each).
const BATCH_BYTES: usize = 64 * 1024;

/// The message held back by the last batch, else the queue's next.
async fn next_for_viewer(
    held: &mut Option<ToViewer>,
    queue: &mut super::viewer_queue::Receiver<ToViewer>,
) -> Option<ToViewer> {
    match held.take() {
        Some(m) => Some(m),
        None => queue.recv().await,
    }
}

/// Writes `first` and the output already waiting behind it, then flushes
/// once, all within [`SEND_STALL`]. Returns whether the viewer took it,
/// and the first waiting message that is not output, which the caller
/// handles next.
async fn send_outputs(
    sink: &mut Sink,
    first: super::Output,
    queue: &mut super::viewer_queue::Receiver<ToViewer>,
    drained: &super::Drained,
) -> (bool, Option<ToViewer>) {
    let mut held = None;
    let batch = async {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(out) = next.take() {
            bytes += out.envelope.len();
            let fed = sink.feed(Message::Binary(out.envelope)).await;
            drained.wrote(out.data.len());
            fed?;
            if bytes < BATCH_BYTES {
                match queue.try_recv() {
                    Ok(ToViewer::Output(o)) => next = Some(o),
                    Ok(other) => held = Some(other),
                    Err(_) => {}
                }
            }
        }
        sink.flush().await
    };
    let ok = matches!(tokio::time::timeout(SEND_STALL, batch).await, Ok(Ok(())));
    (ok, held)
}

/// Sends a WebSocket ping (the viewer's library answers it on its own).
pub(super) async fn ping(sink: &mut Sink) -> bool {
    let frame = Message::Ping(bytes::Bytes::new());
    matches!(
        tokio::time::timeout(SEND_STALL, sink.send(frame)).await,
        Ok(Ok(()))
    )
}

pub(super) async fn close_with(sink: &mut Sink, code: u16, reason: &str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if !matches!(
        tokio::time::timeout(SEND_STALL, sink.send(frame)).await,
        Ok(Ok(()))
    ) {
        // After the peer's Close, sending another is refused; the reply
        // the library queued when it read that Close goes out on a flush.
        let _ = tokio::time::timeout(SEND_STALL, sink.flush()).await;
    }
}

/// Tells a viewer why the relay dropped it, then closes.
pub(super) async fn notify_kicked(
    sink: &mut Sink,
    session_id: &str,
    kicked_because: &std::sync::Mutex<Option<Kick>>,
) {
    let kicked = kicked_because.lock().ok().and_then(|w| *w);
    let why = kicked.map_or("disconnected", Kick::as_str);
    let (code, text) = match kicked {
        Some(Kick::TooSlow) => (
            close::TOO_SLOW,
            "you fell too far behind the session's output; reconnect to resume",
        ),
        Some(Kick::LoggedOut) => (close::LOGGED_OUT, "your login ended"),
        Some(Kick::RoleChanged) => (
            close::ROLE_CHANGED,
            "your role changed and no longer allows this access; mint a new viewer token",
        ),
        Some(Kick::UserDisabled) => (close::USER_DISABLED, "your account was disabled"),
        Some(Kick::Stalled | Kick::SessionEnded) | None => {
            (close::SESSION_ENDED, "disconnected by the server")
        }
    };
    let _ = send(
        sink,
        Body::SessionEnded(SessionEnded {
            session_id: session_id.to_owned(),
            code: why.to_owned(),
            reason: text.to_owned(),
        }),
    )
    .await;
    close_with(sink, code, why).await;
}

/// What a viewer did, for the aggregate audit row when it leaves.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) dropped_view_only: u64,
    pub(super) dropped_rate: u64,
    pub(super) oversized: bool,
}

async fn audit(
    state: &AppState,
    claims: &ViewerClaims,
    ip: IpAddr,
    action: Action,
    details: Vec<(&str, serde_json::Value)>,
) {
    let mut event = AuditEvent::new(&claims.tid, Actor::User(claims.sub.clone()), action)
        .ip(Some(ip))
        .target(format!("session:{}", claims.sid))
        .detail("access", claims.access.clone());
    for (k, v) in details {
        event = event.detail(k, v);
    }
    if let Err(e) = state.db().audit(event).await {
        tracing::warn!(error = %e, "cannot audit a viewer event");
    }
}

fn left_event(claims: &ViewerClaims, ip: IpAddr) -> AuditEvent {
    AuditEvent::new(
        &claims.tid,
        Actor::User(claims.sub.clone()),
        Action::SessionLeft,
    )
    .ip(Some(ip))
    .target(format!("session:{}", claims.sid))
    .detail("access", claims.access.clone())
}

/// Serves an admitted viewer until it leaves or is dropped. `stopping` is
/// cancelled when the node holding the viewer's own socket stops: the
/// viewer is then closed with 1001 `server_shutting_down` (for a viewer
/// linked from another node, that node says so itself).
///
/// The task's future is held for the viewer's whole life and has room for
/// the largest state it passes through, so what runs once or rarely (the
/// screen viewer's loop, audit rows, screen orders to the device) is
/// boxed: an idle shell viewer carries only its own loop.
pub async fn serve(
    socket: ViewerSocket,
    state: AppState,
    claims: ViewerClaims,
    live: Arc<LiveSession>,
    ip: IpAddr,
    keep: bool,
    stopping: CancellationToken,
) {
    // The token says what the operator may do; the session may allow less.
    let access =
        parse_access(&claims.access).map_or(Access::ViewOnly, |a| a.at_most(live.max_access));
    let Some(Joined {
        viewer_id,
        mut queue,
        scrollback,
        kick,
        kicked_because,
        drained,
        lane,
        screen,
    }) = live.join(&claims.sub, &claims.lid, access)
    else {
        // Admitted (and audited as joined) but the session ended, or
        // filled, in between: the departure is recorded with why.
        Box::pin(audit(
            &state,
            &claims,
            ip,
            Action::SessionLeft,
            vec![("reason", "session_ended_before_join".into())],
        ))
        .await;
        let (mut sink, mut stream) = socket.split();
        close_with(&mut sink, close::SESSION_ENDED, "session_ended").await;
        linger(&mut stream).await;
        return;
    };
    // However this task ends (an abort included), the departure is audited.
    let mut seat = live.seat(viewer_id);
    seat.audit_leaving(state.db().clone(), left_event(&claims, ip));
    if screen.is_some() {
        // However this task ends, what the viewer held is released.
        let (state, live) = (state.clone(), Arc::clone(&live));
        seat.leave_screen_on_drop(
            access,
            Box::new(move |out| {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        super::screen_device::deliver(&state, &live, out).await;
                    });
                }
            }),
        );
    }
    if keep {
        // `connect --keep`: leaving does not end the shell.
        live.keep();
    }
    let name = super::presence::name_of(&state, &claims.tid, &claims.sub).await;
    super::presence::joined(&state, &live, &name, access);
    let (mut sink, mut stream) = socket.split();
    let (channel_id, kind) = match live.channel {
        SessionChannel::Shell => (SHELL_CHANNEL, ChannelKind::Shell),
        SessionChannel::Screen => (super::SCREEN_CHANNEL, ChannelKind::Screen),
    };
    let mut ok = send(
        &mut sink,
        Body::ViewerReady(ViewerReady {
            session_id: live.id.clone(),
            access: access.as_str().to_owned(),
            channel_id,
            device_name: live.device_name.clone(),
            kind: kind as i32,
        }),
    )
    .await;
    if let (Some(lane), Some(joined)) = (lane, screen) {
        let mut tally = Tally::default();
        if ok {
            Box::pin(super::screen_device::deliver(&state, &live, joined)).await;
            let viewer = super::screen_viewer::ScreenViewer {
                state: &state,
                live: &live,
                viewer_id,
                lane,
                kick,
                kicked_because: &kicked_because,
                stopping,
            };
            Box::pin(viewer.run(&mut sink, &mut stream, &mut queue, &mut tally)).await;
        }
        seat.leave_unaudited();
        seat.screen_left_by_task();
        drop(seat);
        // What it held is released, and the codec may change for those who
        // remain.
        let left = live.screen_left(viewer_id, access);
        Box::pin(super::screen_device::deliver(&state, &live, left)).await;
        Box::pin(finish(
            &state,
            &claims,
            ip,
            &live,
            &name,
            access,
            &kicked_because,
            tally,
        ))
        .await;
        linger(&mut stream).await;
        return;
    }
    if ok && !scrollback.is_empty() {
        ok = send(
            &mut sink,
            Body::ChannelData(ChannelData {
                session_id: live.id.clone(),
                channel_id: SHELL_CHANNEL,
                data: scrollback.into(),
            }),
        )
        .await;
    }
    let limiter = RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(state.config().viewer_input_per_second).unwrap_or(NonZeroU32::MIN),
    ));
    let mut tally = Tally::default();
    let device_input = state.registry().input(&live.device_id);
    // A message taken from the queue behind a batch of output (see
    // `send_outputs`), handled before the queue is read again.
    let mut held = None;
    while ok {
        tokio::select! {
            out = next_for_viewer(&mut held, &mut queue) => match out {
                Some(ToViewer::Output(out)) => {
                    (ok, held) = send_outputs(&mut sink, out, &mut queue, &drained).await;
                }
                Some(ToViewer::ChannelClosed { exit_status, reason }) => {
                    ok = send(&mut sink, Body::ChannelClose(ChannelClose { session_id: live.id.clone(), channel_id: SHELL_CHANNEL, exit_status, reason })).await;
                }
                Some(ToViewer::Ended { code, reason }) => {
                    let _ = send(&mut sink, Body::SessionEnded(SessionEnded { session_id: live.id.clone(), code: code.as_str().to_owned(), reason })).await;
                    close_with(&mut sink, close::SESSION_ENDED, "session_ended").await;
                    break;
                }
                // Dropped from the session: by a kick, whose reason follows.
                None if kick.is_cancelled() => {
                    notify_kicked(&mut sink, &live.id, &kicked_because).await;
                    break;
                }
                None => break,
            },
            () = kick.cancelled() => {
                notify_kicked(&mut sink, &live.id, &kicked_because).await;
                break;
            }
            () = stopping.cancelled() => {
                close_with(&mut sink, close::GOING_AWAY, close::SHUTTING_DOWN).await;
                break;
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Binary(b))) => {
                    let Ok(env) = Envelope::decode(b) else {
                        close_with(&mut sink, 1007, "undecodable_message").await;
                        break;
                    };
                    let forward = match env.body {
                        Some(Body::ChannelData(d)) => Some(Body::ChannelData(ChannelData { session_id: live.id.clone(), channel_id: SHELL_CHANNEL, data: d.data })),
                        Some(Body::ChannelResize(r)) => Some(Body::ChannelResize(ChannelResize {
                            session_id: live.id.clone(),
                            channel_id: SHELL_CHANNEL,
                            cols: r.cols.clamp(1, 1000),
                            rows: r.rows.clamp(1, 1000),
                        })),
                        _ => {
                            close_with(&mut sink, 1008, "unexpected_message").await;
                            break;
                        }
                    };
                    if access == Access::ViewOnly {
                        tally.dropped_view_only += 1;
                        state.metrics().input_dropped("view_only");
                        continue;
                    }
                    if limiter.check().is_err() {
                        tally.dropped_rate += 1;
                        state.metrics().input_dropped("rate_limited");
                        continue;
                    }
                    if let (Some(relay), Some(body)) = (&device_input, forward) {
                        // Waits for room (holding back only this viewer), but
                        // not for long: meanwhile this viewer's own output
                        // queue is not being drained.
                        match relay.send_timeout(crate::control::queued(body), INPUT_WAIT).await {
                            Ok(()) => {}
                            Err(crate::control::QueueError::Full) => {
                                state.metrics().input_dropped("device_busy");
                            }
                            Err(crate::control::QueueError::Closed) => break,
                        }
                    }
                }
                // RFC 6455 §5.5.1: a Close is answered with a Close (the
                // same code), so the viewer sees a clean close, not 1006.
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.as_ref().map_or(1000, |f| f.code);
                    close_with(&mut sink, code, "").await;
                    break;
                }
                None => break,
                Some(Ok(Message::Text(_))) => {
                    close_with(&mut sink, 1003, "binary_frames_only").await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if e.is_too_big() {
                        tally.oversized = true;
                        state.metrics().oversized_frame("viewer");
                        close_with(&mut sink, 1009, "message_too_big").await;
                    }
                    break;
                }
            },
        }
    }
    seat.leave_unaudited();
    drop(seat);
    Box::pin(finish(
        &state,
        &claims,
        ip,
        &live,
        &name,
        access,
        &kicked_because,
        tally,
    ))
    .await;
    // Whoever closed, TCP ends after both Close frames (or the linger).
    linger(&mut stream).await;
}

/// After a viewer left: the device is told, and the departure audited
/// (with what was dropped, if anything).
#[allow(clippy::too_many_arguments)]
async fn finish(
    state: &AppState,
    claims: &ViewerClaims,
    ip: IpAddr,
    live: &LiveSession,
    name: &str,
    access: Access,
    kicked_because: &std::sync::Mutex<Option<Kick>>,
    tally: Tally,
) {
    let why = kicked_because.lock().ok().and_then(|w| *w);
    super::presence::left(state, live, name, access, why.map_or("left", Kick::as_str));
    if tally.dropped_view_only > 0 || tally.dropped_rate > 0 || tally.oversized {
        audit(
            state,
            claims,
            ip,
            Action::ViewerThrottled,
            vec![
                ("dropped_view_only", tally.dropped_view_only.into()),
                ("dropped_rate_limited", tally.dropped_rate.into()),
                ("oversized_frame", tally.oversized.into()),
            ],
        )
        .await;
    }
    audit(state, claims, ip, Action::SessionLeft, vec![]).await;
}
