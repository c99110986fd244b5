//! The WebSocket both planes speak once upgraded: its messages and the
//! socket, served by `tokio-websockets` over the upgraded connection.
//!
//! Why not axum's own `WebSocket` (tungstenite): on the relay's hot path
//! tungstenite reads at most its read-buffer size per call, zero-filling
//! that buffer first, and copies every outgoing frame into a write buffer.
//! `tokio-websockets` reads the rest of a pending frame in one call into
//! the spare capacity of a `BytesMut` (no zero fill), hands the payload out
//! as a slice of that buffer, and writes header and payload with one
//! vectored write. Measured side by side in `docs/BENCHMARKS.md`
//! ("Relay performance (issue 16)").
//!
//! The handshake (RFC 6455 §4.2) is `http::ws_upgrade`; this module only
//! holds what the relay, the control connection and the cluster link read
//! and write, so none of them depends on the HTTP layer.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_websockets::{CloseCode, Limits, Payload};

/// One WebSocket message, as the server's code reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Binary(Bytes),
    Text(String),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseFrame>),
}

/// A Close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

/// Why a socket failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message over the socket's size cap (the peer is sent 1009).
    #[error("message larger than the socket accepts")]
    TooBig,
    /// The socket or the peer's framing failed.
    #[error("websocket: {0}")]
    Socket(#[source] tokio_websockets::Error),
    /// Anything else carrying the messages (the cluster link).
    #[error("{0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Other(Box::new(e))
    }

    /// The peer sent a message over the cap (found from the frame header,
    /// before its payload is buffered).
    pub fn is_too_big(&self) -> bool {
        matches!(self, Self::TooBig)
    }
}

impl From<tokio_websockets::Error> for Error {
    fn from(e: tokio_websockets::Error) -> Self {
        match e {
            tokio_websockets::Error::PayloadTooLong { .. } => Self::TooBig,
            e => Self::Socket(e),
        }
    }
}

type Inner = tokio_websockets::WebSocketStream<TokioIo<Upgraded>>;

/// A WebSocket the server accepted: a stream of [`Message`]s and a sink
/// for them (`futures_util::StreamExt::split` gives the two halves).
pub struct WebSocket {
    inner: Inner,
}

impl WebSocket {
    /// Serves an upgraded connection, refusing messages (and frames) over
    /// `max_message` bytes with 1009.
    pub(crate) fn serve(upgraded: Upgraded, max_message: usize) -> Self {
        let inner = tokio_websockets::ServerBuilder::new()
            .limits(Limits::default().max_payload_len(Some(max_message)))
            .serve(TokioIo::new(upgraded));
        Self { inner }
    }
}

impl Stream for WebSocket {
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = ready!(Pin::new(&mut self.inner).poll_next(cx));
        Poll::Ready(next.map(|m| m.map(from_wire).map_err(Error::from)))
    }
}

impl Sink<Message> for WebSocket {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.inner)
            .poll_ready(cx)
            .map_err(Error::from)
    }

    fn start_send(mut self: Pin<&mut Self>, m: Message) -> Result<(), Error> {
        Pin::new(&mut self.inner)
            .start_send(to_wire(m))
            .map_err(Error::from)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(Error::from)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(Error::from)
    }
}

/// A received message. The library has checked a text message's UTF-8
/// and a Close frame's code, and answered a Ping or a Close already.
fn from_wire(m: tokio_websockets::Message) -> Message {
    if let Some((code, reason)) = m.as_close() {
        // A Close without a body reads as 1005 (no status received).
        let frame = (u16::from(code) != 1005).then(|| CloseFrame {
            code: code.into(),
            reason: reason.to_owned(),
        });
        return Message::Close(frame);
    }
    if let Some(text) = m.as_text() {
        return Message::Text(text.to_owned());
    }
    let (ping, pong) = (m.is_ping(), m.is_pong());
    let payload = Bytes::from(m.into_payload());
    if ping {
        Message::Ping(payload)
    } else if pong {
        Message::Pong(payload)
    } else {
        Message::Binary(payload)
    }
}

fn to_wire(m: Message) -> tokio_websockets::Message {
    match m {
        Message::Binary(b) => tokio_websockets::Message::binary(Payload::from(b)),
        Message::Text(t) => tokio_websockets::Message::text(t),
        // RFC 6455 §5.5: a control frame carries at most 125 bytes (the
        // library panics past that, so a longer one is cut, never sent).
        Message::Ping(b) => tokio_websockets::Message::ping(Payload::from(cut(b, 125))),
        Message::Pong(b) => tokio_websockets::Message::pong(Payload::from(cut(b, 125))),
        Message::Close(None) => tokio_websockets::Message::close(None, ""),
        Message::Close(Some(f)) => {
            // A code a peer may not send (1005, 1006, 1015, out of range)
            // goes out as 1011: the library would refuse to send it.
            let code = CloseCode::try_from(f.code)
                .ok()
                .filter(|c| !c.is_reserved())
                .unwrap_or(CloseCode::INTERNAL_SERVER_ERROR);
            tokio_websockets::Message::close(Some(code), reason_within(&f.reason, 123))
        }
    }
}

fn cut(mut b: Bytes, max: usize) -> Bytes {
    b.truncate(max);
    b
}

/// The longest prefix of `reason` within `max` bytes that ends on a
/// character boundary.
fn reason_within(reason: &str, max: usize) -> &str {
    let mut end = reason.len().min(max);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_kind_and_bytes_across_the_library() {
        let cases = [
            Message::Binary(Bytes::from_static(b"\x00\x01frame")),
            Message::Text("hi".into()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::new()),
            Message::Close(Some(CloseFrame {
                code: 4403,
                reason: "session_revoked".into(),
            })),
            Message::Close(None),
        ];
        for m in cases {
            assert_eq!(from_wire(to_wire(m.clone())), m);
        }
    }

    #[test]
    fn an_over_long_close_reason_or_ping_is_cut_not_a_panic() {
        let reason = "é".repeat(100);
        let m = to_wire(Message::Close(Some(CloseFrame { code: 1008, reason })));
        let (_, sent) = m.as_close().expect("a close");
        assert_eq!(sent.len(), 122);
        let m = to_wire(Message::Ping(Bytes::from(vec![7u8; 300])));
        assert_eq!(m.as_payload().len(), 125);
    }

    #[test]
    fn a_close_code_no_peer_may_send_goes_out_as_1011() {
        for code in [0, 999, 1005, 1006, 1015, 5000] {
            let m = to_wire(Message::Close(Some(CloseFrame {
                code,
                reason: String::new(),
            })));
            let (sent, _) = m.as_close().expect("a close");
            assert_eq!(u16::from(sent), 1011, "code {code}");
        }
    }
}
