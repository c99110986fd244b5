//! A viewer's connection to a screen session, once admitted and told
//! `ViewerReady` (see `relay::viewer`): its lane goes out to its socket,
//! and what it sends is judged by `relay::screen` (through the session's
//! state) before anything reaches the device. Messages are capped at
//! 64 KiB before they are buffered, as on every viewer connection.
//!
//! A control viewer may hold keys down on someone's desktop, so a viewer
//! that vanishes without closing (a laptop lid shut, a network gone) must
//! not stay joined until TCP gives up, hours later: the relay pings every
//! heartbeat interval and drops a viewer it has heard nothing from (not
//! even a pong) for three intervals (`viewer_unresponsive`, 4014); its
//! leaving releases what it held.

use std::sync::Arc;

use crate::ws::Message;
use futures_util::StreamExt;
use prost::Message as _;
use tessera_proto::v1::SessionEnded;
use tessera_proto::{Body, Envelope};
use tokio_util::sync::CancellationToken;

use super::viewer::{
    close, close_with, notify_kicked, ping, send, send_encoded, Sink, Source, Tally,
};
use super::{Kick, Lane, LiveSession, ToViewer};
use crate::AppState;

/// Heartbeat intervals without a word from the viewer before it is dropped.
const MISSED_PINGS: u32 = 3;

pub(super) struct ScreenViewer<'a> {
    pub(super) state: &'a AppState,
    pub(super) live: &'a Arc<LiveSession>,
    pub(super) viewer_id: u64,
    pub(super) lane: Arc<Lane>,
    pub(super) kick: CancellationToken,
    pub(super) kicked_because: &'a std::sync::Mutex<Option<Kick>>,
    /// Cancelled when the node holding the viewer's socket stops.
    pub(super) stopping: CancellationToken,
}

impl ScreenViewer<'_> {
    /// Serves the viewer until it leaves, is dropped, or the session ends.
    pub(super) async fn run(
        self,
        sink: &mut Sink,
        stream: &mut Source,
        queue: &mut super::viewer_queue::Receiver<ToViewer>,
        tally: &mut Tally,
    ) {
        let live = self.live;
        let interval = self.state.config().heartbeat_interval;
        let allowance = interval * MISSED_PINGS;
        let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                // Session events first (an end is said before more frames), then
                // the viewer's own messages, then its lane.
                biased;
                out = queue.recv() => match out {
                    Some(ToViewer::Ended { code, reason }) => {
                        let _ = send(sink, Body::SessionEnded(SessionEnded { session_id: live.id.clone(), code: code.as_str().to_owned(), reason })).await;
                        close_with(sink, close::SESSION_ENDED, "session_ended").await;
                        return;
                    }
                    // The screen channel closed; the session's end follows.
                    Some(ToViewer::ChannelClosed { .. } | ToViewer::Output(_)) => {}
                    None if self.kick.is_cancelled() => {
                        notify_kicked(sink, &live.id, self.kicked_because).await;
                        return;
                    }
                    None => return,
                },
                () = self.kick.cancelled() => {
                    notify_kicked(sink, &live.id, self.kicked_because).await;
                    return;
                }
                () = self.stopping.cancelled() => {
                    close_with(sink, close::GOING_AWAY, close::SHUTTING_DOWN).await;
                    return;
                }
                incoming = stream.next() => {
                    heard = tokio::time::Instant::now();
                    if !self.incoming(sink, incoming, tally).await {
                        return;
                    }
                }
                _ = pings.tick() => {
                    if heard.elapsed() >= allowance {
                        tracing::info!("screen viewer unresponsive: dropped");
                        close_with(sink, close::UNRESPONSIVE, "viewer_unresponsive").await;
                        return;
                    }
                    if !ping(sink).await {
                        return;
                    }
                }
                envelope = self.lane.next() => {
                    if !send_encoded(sink, envelope).await {
                        return;
                    }
                }
            }
        }
    }

    /// Handles one message from the viewer; false ends the connection.
    async fn incoming(
        &self,
        sink: &mut Sink,
        incoming: Option<Result<Message, crate::ws::Error>>,
        tally: &mut Tally,
    ) -> bool {
        let state = self.state;
        match incoming {
            Some(Ok(Message::Binary(b))) => {
                let Ok(env) = Envelope::decode(b) else {
                    close_with(sink, 1007, "undecodable_message").await;
                    return false;
                };
                let Some(Body::Screen(screen)) = env.body else {
                    close_with(sink, 1008, "unexpected_message").await;
                    return false;
                };
                let judged = self.live.screen_from_viewer(
                    self.viewer_id,
                    screen.body,
                    tokio::time::Instant::now(),
                );
                let out = match judged {
                    Ok(out) => out,
                    Err(refusal) => {
                        close_with(sink, refusal.code, refusal.reason).await;
                        return false;
                    }
                };
                match out.dropped {
                    Some(super::screen::Dropped::ViewOnly) => tally.dropped_view_only += 1,
                    Some(super::screen::Dropped::RateLimited) => tally.dropped_rate += 1,
                    None => {}
                }
                // A device gone meanwhile ends the session, which the
                // viewer is told about through its queue.
                super::screen_device::deliver(state, self.live, out).await;
                true
            }
            // RFC 6455 §5.5.1: a Close is answered with a Close.
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map_or(1000, |f| f.code);
                close_with(sink, code, "").await;
                false
            }
            None => false,
            Some(Ok(Message::Text(_))) => {
                close_with(sink, 1003, "binary_frames_only").await;
                false
            }
            Some(Ok(_)) => true,
            Some(Err(e)) => {
                if e.is_too_big() {
                    tally.oversized = true;
                    state.metrics().oversized_frame("viewer");
                    close_with(sink, 1009, "message_too_big").await;
                }
                false
            }
        }
    }
}
