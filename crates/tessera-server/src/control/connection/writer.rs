//! The connection's writer: the one place that writes to a device's
//! socket once the handshake is done.
//!
//! It runs beside the loop that reads the device and watches its heartbeat
//! deadline and the node's orders, so a write that blocks (the device
//! stopped reading and its TCP window is shut) never keeps that loop from
//! cutting the device off. Each write has a time limit; a device that does
//! not take one message within it has stopped reading, and the writer ends
//! with [`WriterEnd::Stalled`], which ends the connection.
//!
//! It takes messages in a fixed order: the loop's own replies, then server
//! notices, then viewer input, then end-to-end traffic, each from its own
//! queue bounded in messages and bytes (see `control::queue`).

use std::time::Duration;

use crate::ws::Message;
use futures_util::SinkExt;
use tessera_proto::Body;
use tokio::sync::oneshot;

use super::{close_with, send, Sink};
use crate::control::Inbox;

/// What the connection says last before it closes: a message (the
/// revocation, the refusal) and a close frame.
#[derive(Debug, Default)]
pub(super) struct Farewell {
    /// Boxed: a farewell is rare, and every idle connection's loop has
    /// room for one.
    pub last: Option<Box<Body>>,
    pub close: Option<(u16, &'static str)>,
}

impl Farewell {
    /// Closes with `code` and `reason`, saying nothing before.
    pub(super) fn close(code: u16, reason: &'static str) -> Farewell {
        Farewell {
            last: None,
            close: Some((code, reason)),
        }
    }

    /// Says `last`, then closes.
    pub(super) fn after(last: Body, code: u16, reason: &'static str) -> Farewell {
        Farewell {
            last: Some(Box::new(last)),
            close: Some((code, reason)),
        }
    }

    /// The socket is gone: nothing to say.
    pub(super) fn silent() -> Farewell {
        Farewell::default()
    }
}

/// How the writer ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WriterEnd {
    /// It said the connection's farewell (or tried to).
    Finished,
    /// The socket failed, or every queue closed.
    Gone,
    /// One write took longer than the write timeout.
    Stalled,
}

/// The queues the writer empties into the socket.
pub(super) struct Outgoing {
    pub replies: Inbox,
    pub notices: Inbox,
    pub input: Inbox,
    pub e2e: Inbox,
    /// The connection's last words, when the reading side ends it.
    pub farewell: oneshot::Receiver<Farewell>,
}

/// At most this much is written between two flushes: what is waiting in
/// the queues when the writer wakes goes out in one write (many small
/// messages, a viewer's keystrokes, cost one system call, not one each).
const BATCH_BYTES: usize = 64 * 1024;
const BATCH_MESSAGES: usize = 64;

/// Writes queued messages to `sink` until told to say farewell, the
/// socket fails, or a write takes longer than `timeout`.
pub(super) async fn write(sink: &mut Sink, mut out: Outgoing, timeout: Duration) -> WriterEnd {
    loop {
        let first = tokio::select! {
            biased;
            farewell = &mut out.farewell => {
                if let Ok(f) = farewell {
                    // Boxed: the idle writer should not carry its state.
                    Box::pin(say(sink, f)).await;
                }
                return WriterEnd::Finished;
            }
            Some((_, m)) = out.replies.recv() => (Queue::Replies, m),
            Some((_, m)) = out.notices.recv() => (Queue::Notices, m),
            Some((_, m)) = out.input.recv() => (Queue::Input, m),
            Some((_, m)) = out.e2e.recv() => (Queue::E2e, m),
            else => return WriterEnd::Gone,
        };
        let written = tokio::time::timeout(timeout, write_batch(sink, &mut out, first)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return WriterEnd::Gone,
            Err(_) => return WriterEnd::Stalled,
        }
    }
}

/// Writes `first` and whatever else is waiting, in the queues' order, up
/// to the batch bounds, then flushes once. Each message's bytes go back to
/// its queue once handed to the socket (or once they never will be).
async fn write_batch(
    sink: &mut Sink,
    out: &mut Outgoing,
    first: (Queue, Vec<u8>),
) -> Result<(), crate::ws::Error> {
    let (mut bytes, mut messages) = (0, 0);
    let mut next = Some(first);
    while let Some((from, m)) = next.take() {
        let len = m.len();
        let fed = sink.feed(Message::Binary(m.into())).await;
        out.inbox(&from).written(len);
        fed?;
        bytes += len;
        messages += 1;
        if bytes < BATCH_BYTES && messages < BATCH_MESSAGES {
            next = out.waiting();
        }
    }
    sink.flush().await
}

impl Outgoing {
    fn inbox(&self, from: &Queue) -> &Inbox {
        match from {
            Queue::Replies => &self.replies,
            Queue::Notices => &self.notices,
            Queue::Input => &self.input,
            Queue::E2e => &self.e2e,
        }
    }

    /// The next message already waiting, in the writer's order.
    fn waiting(&mut self) -> Option<(Queue, Vec<u8>)> {
        let take = |q: Queue, m: Option<(crate::control::Queued, Vec<u8>)>| m.map(|(_, b)| (q, b));
        take(Queue::Replies, self.replies.try_recv())
            .or_else(|| take(Queue::Notices, self.notices.try_recv()))
            .or_else(|| take(Queue::Input, self.input.try_recv()))
            .or_else(|| take(Queue::E2e, self.e2e.try_recv()))
    }
}

enum Queue {
    Replies,
    Notices,
    Input,
    E2e,
}

/// Says the farewell; each write is time-limited by the helpers.
async fn say(sink: &mut Sink, f: Farewell) {
    if let Some(last) = f.last {
        if send(sink, *last).await.is_err() {
            return;
        }
    }
    if let Some((code, reason)) = f.close {
        close_with(sink, code, reason).await;
    }
}
