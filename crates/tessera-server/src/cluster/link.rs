//! A viewer on one node, its session on another.
//!
//! The viewer's node ("the viewer node") admits it as it would a local
//! viewer (token, login, role, the token's jti spent and the join
//! audited), then asks the node relaying the session ("the session node")
//! to open a *link*: a pair of NATS subjects, `link.<id>.up` (viewer node →
//! session node) and `link.<id>.down` (back). On the session node the link
//! is the viewer's socket ([`LinkSocket`]): `relay::viewer::serve` runs on
//! it unchanged, so every cap, per-viewer queue, slow-viewer rule,
//! view-only rule and audit row of a local viewer holds. The viewer node
//! only carries WebSocket messages both ways ([`pump`]).
//!
//! - **Frames.** One NATS message per WebSocket message: a kind byte, a
//!   sequence number (data kinds only) and the body; a message over
//!   [`PART`] bytes goes as several parts (NATS caps a message at 1 MB by
//!   default). A gap in the sequence (NATS core drops messages for a
//!   subscriber that falls far behind) ends the link: a viewer must never
//!   see a shell stream with a hole in it.
//! - **Flow.** The session node has at most [`WINDOW`] bytes in flight;
//!   the viewer node acknowledges what it wrote to the viewer's socket.
//!   A viewer that stops reading therefore stops the session node's
//!   writes to it, exactly as a full TCP socket does, and the relay's
//!   slow-viewer rules apply.
//! - **Liveness.** Each side sends a keepalive every [`KEEPALIVE`]; a
//!   side that hears nothing for [`SILENCE`] ends the link. The viewer
//!   node also asks the session node's `ping` subject every
//!   [`KEEPALIVE`]: NATS answers "no responders" at once for a node that
//!   died, so its viewers learn `node_lost` within about a second.
//!
//! Trust: nodes believe each other's requests. Anyone who may publish on
//! the cluster's subjects could open links, so NATS must be access
//! controlled (credentials, TLS); the session node still checks the
//! viewer token's signature, expiry and session before it opens one.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::ws::{CloseFrame, Message, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tessera_core::ErrorCode;
use tokio::sync::{mpsc, Notify};

use crate::relay::viewer::{self, close};
use crate::AppState;

/// Largest NATS message the link sends; longer WebSocket messages go in parts.
pub const PART: usize = 512 * 1024;
/// Bytes the session node may have sent and not had acknowledged.
pub const WINDOW: u64 = 4 << 20;
/// The viewer node acknowledges once this much is written, or on its tick.
const ACK_EVERY: u64 = 256 * 1024;
/// The viewer node flushes the viewer's socket when NATS holds nothing more
/// for the link, or after this much.
const FLUSH_EVERY: u64 = 1 << 20;
/// How often each side says it is still there.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// Quiet this long, a link is gone.
pub const SILENCE: Duration = Duration::from_secs(4);
/// The most a message in parts may grow to.
const MAX_MESSAGE: usize = 8 << 20;

const BINARY: u8 = b'B';
const PART_OF: u8 = b'P';
const TEXT: u8 = b'T';
const CLOSE: u8 = b'C';
const PING: u8 = b'I';
const PONG: u8 = b'O';
const ACK: u8 = b'A';
const ALIVE: u8 = b'K';

/// One frame on a link subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Part of a WebSocket message, in order: `seq` counts data frames.
    Data { seq: u32, kind: u8, body: Bytes },
    /// Bytes written to the viewer so far (viewer node → session node).
    Ack(u64),
    /// Still here.
    Alive,
}

/// Why a frame could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty link frame")]
    Empty,
    #[error("truncated link frame")]
    Truncated,
    #[error("unknown link frame kind {0}")]
    Kind(u8),
}

impl Frame {
    pub fn encode(&self) -> Bytes {
        match self {
            Frame::Data { seq, kind, body } => {
                let mut b = BytesMut::with_capacity(5 + body.len());
                b.put_u8(*kind);
                b.put_u32(*seq);
                b.put_slice(body);
                b.freeze()
            }
            Frame::Ack(n) => {
                let mut b = BytesMut::with_capacity(9);
                b.put_u8(ACK);
                b.put_u64(*n);
                b.freeze()
            }
            Frame::Alive => Bytes::from_static(&[ALIVE]),
        }
    }

    pub fn decode(mut payload: Bytes) -> Result<Frame, FrameError> {
        let kind = *payload.first().ok_or(FrameError::Empty)?;
        match kind {
            ALIVE => Ok(Frame::Alive),
            ACK => {
                let n = payload.get(1..9).ok_or(FrameError::Truncated)?;
                let mut be = [0u8; 8];
                be.copy_from_slice(n);
                Ok(Frame::Ack(u64::from_be_bytes(be)))
            }
            BINARY | PART_OF | TEXT | CLOSE | PING | PONG => {
                let s = payload.get(1..5).ok_or(FrameError::Truncated)?;
                let seq = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
                let body = payload.split_off(5);
                Ok(Frame::Data { seq, kind, body })
            }
            other => Err(FrameError::Kind(other)),
        }
    }
}

/// A WebSocket message as data frames (several parts if long); `seq` is
/// advanced past the frames made.
pub fn frames_of(msg: Message, seq: &mut u32) -> Vec<Frame> {
    let mut next = |kind, body| {
        let f = Frame::Data {
            seq: *seq,
            kind,
            body,
        };
        *seq = seq.wrapping_add(1);
        f
    };
    let (kind, body): (u8, Bytes) = match msg {
        Message::Binary(b) => (BINARY, b),
        Message::Text(t) => (TEXT, Bytes::copy_from_slice(t.as_bytes())),
        Message::Ping(b) => (PING, b),
        Message::Pong(b) => (PONG, b),
        Message::Close(frame) => {
            let mut b = BytesMut::new();
            if let Some(f) = frame {
                b.put_u16(f.code);
                b.put_slice(f.reason.as_bytes());
            }
            (CLOSE, b.freeze())
        }
    };
    if kind != BINARY || body.len() <= PART {
        return vec![next(kind, body)];
    }
    let mut out = Vec::with_capacity(body.len() / PART + 1);
    let mut rest = body;
    while rest.len() > PART {
        let head = rest.split_to(PART);
        out.push(next(PART_OF, head));
    }
    out.push(next(BINARY, rest));
    out
}

/// Puts data frames back together into WebSocket messages, checking
/// that none is missing.
#[derive(Debug, Default)]
pub struct Assembler {
    expect: u32,
    parts: BytesMut,
}

/// Why a link's data could not be put back together.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("a link frame went missing (expected {expected}, got {got})")]
    Gap { expected: u32, got: u32 },
    #[error("a message on the link grew past {MAX_MESSAGE} bytes")]
    TooBig,
    #[error("a text message on the link is not UTF-8")]
    NotUtf8,
}

impl Assembler {
    /// The message `frame` completes, if it completes one.
    pub fn push(
        &mut self,
        seq: u32,
        kind: u8,
        body: Bytes,
    ) -> Result<Option<Message>, AssembleError> {
        if seq != self.expect {
            return Err(AssembleError::Gap {
                expected: self.expect,
                got: seq,
            });
        }
        self.expect = self.expect.wrapping_add(1);
        if kind == PART_OF || (kind == BINARY && !self.parts.is_empty()) {
            if self.parts.len() + body.len() > MAX_MESSAGE {
                return Err(AssembleError::TooBig);
            }
            self.parts.extend_from_slice(&body);
            if kind == PART_OF {
                return Ok(None);
            }
            return Ok(Some(Message::Binary(self.parts.split().freeze())));
        }
        Ok(Some(match kind {
            BINARY => Message::Binary(body),
            TEXT => {
                Message::Text(String::from_utf8(body.to_vec()).map_err(|_| AssembleError::NotUtf8)?)
            }
            PING => Message::Ping(body),
            PONG => Message::Pong(body),
            _ => Message::Close(close_frame(&body)),
        }))
    }
}

fn close_frame(body: &[u8]) -> Option<CloseFrame> {
    let code = body.get(..2)?;
    Some(CloseFrame {
        code: u16::from_be_bytes([code[0], code[1]]),
        reason: String::from_utf8_lossy(body.get(2..).unwrap_or_default()).into_owned(),
    })
}

/// What the viewer node asks the session node.
#[derive(Debug, Serialize, Deserialize)]
pub struct Opening {
    pub link: String,
    /// The viewer token, spent on the viewer node; the session node checks
    /// its signature, expiry and session again.
    pub token: String,
    pub session_id: String,
    pub ip: IpAddr,
    pub keep: bool,
}

/// The session node's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Answer {
    Opened,
    Refused { code: ErrorCode, message: String },
}

fn up(state: &AppState, link: &str) -> String {
    state.cluster().subject(&format!("link.{link}.up"))
}

fn down(state: &AppState, link: &str) -> String {
    state.cluster().subject(&format!("link.{link}.down"))
}

// ---------------------------------------------------------------------
// The session node's side.

/// Serves this node's `link.open` and `ping` subjects until shutdown.
pub async fn serve(state: AppState) {
    let Some(nats) = state.cluster().nats().cloned() else {
        return;
    };
    let me = state.cluster().node_id().to_owned();
    let (opens, pings) = match (
        nats.subscribe(state.cluster().node_subject(&me, "link.open"))
            .await,
        nats.subscribe(state.cluster().node_subject(&me, "ping"))
            .await,
    ) {
        (Ok(o), Ok(p)) => (o, p),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot subscribe to this node's link subjects");
            return;
        }
    };
    let mut opens = opens;
    let mut pings = pings;
    loop {
        tokio::select! {
            () = state.shutdown_token().cancelled() => return,
            Some(ping) = pings.next() => {
                if let Some(reply) = ping.reply {
                    let _ = nats.publish(reply, Bytes::new()).await;
                }
            }
            Some(open) = opens.next() => {
                tokio::spawn(open_one(state.clone(), nats.clone(), open));
            }
            else => return,
        }
    }
}

async fn open_one(state: AppState, nats: async_nats::Client, msg: async_nats::Message) {
    let Some(reply) = msg.reply else { return };
    let answer = match accept(&state, &nats, &msg.payload).await {
        Ok(()) => Answer::Opened,
        Err((code, message)) => Answer::Refused { code, message },
    };
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    if let Err(e) = nats.publish(reply, body.into()).await {
        tracing::warn!(error = %e, "cannot answer a link opening");
    }
}

async fn accept(
    state: &AppState,
    nats: &async_nats::Client,
    payload: &[u8],
) -> Result<(), (ErrorCode, String)> {
    let opening: Opening = serde_json::from_slice(payload).map_err(|_| {
        (
            ErrorCode::InvalidField,
            "unreadable link opening".to_owned(),
        )
    })?;
    if !valid_link_id(&opening.link) {
        return Err((ErrorCode::InvalidField, "bad link id".to_owned()));
    }
    let claims = state
        .viewer_keys()
        .check(state.db(), &opening.token, &opening.session_id, state.now())
        .await
        .map_err(|e| {
            // The driver's words stay in this node's log.
            tracing::warn!(error = %e, "cannot check a linked viewer's token");
            (
                ErrorCode::RelayUnavailable,
                "the node relaying this session cannot check the token now".to_owned(),
            )
        })?
        .map_err(|e| (e.code(), e.to_string()))?;
    let live = state
        .hub()
        .get(&opening.session_id)
        .filter(|l| l.tenant_id == claims.tid)
        .ok_or((
            ErrorCode::SessionNotActive,
            "the session is not active on its node".to_owned(),
        ))?;
    if live.viewer_count() >= live.max_viewers {
        return Err((
            ErrorCode::TooManyViewers,
            "this session has as many viewers as it admits".to_owned(),
        ));
    }
    let socket = LinkSocket::open(state, nats, &opening.link)
        .await
        .map_err(|e| (ErrorCode::RelayUnavailable, e.to_string()))?;
    let span = tracing::info_span!("viewer", session = %claims.sid, user = %claims.sub, link = %opening.link);
    let state = state.clone();
    let gauge = state.metrics().link_open("session");
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            viewer::serve(
                Box::pin(socket),
                state,
                claims,
                live,
                opening.ip,
                opening.keep,
                // The viewer's node closes it when that node stops.
                tokio_util::sync::CancellationToken::new(),
            )
            .await;
            drop(gauge);
        },
        span,
    ));
    Ok(())
}

fn valid_link_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The bytes in flight from the session node, and who waits for room.
#[derive(Default)]
struct Window {
    sent: AtomicU64,
    acked: AtomicU64,
    closed: AtomicBool,
    room: Notify,
}

impl Window {
    fn in_flight(&self) -> u64 {
        self.sent
            .load(Ordering::Acquire)
            .saturating_sub(self.acked.load(Ordering::Acquire))
    }

    /// Waits until `n` more bytes may go (always, with nothing in flight).
    async fn reserve(&self, n: u64) -> bool {
        loop {
            let room = self.room.notified();
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            let flying = self.in_flight();
            if flying == 0 || flying + n <= WINDOW {
                self.sent.fetch_add(n, Ordering::AcqRel);
                return true;
            }
            room.await;
        }
    }

    fn ack(&self, total: u64) {
        self.acked.fetch_max(total, Ordering::AcqRel);
        self.room.notify_waiters();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }
}

type Outbound = Pin<Box<dyn Sink<Message, Error = crate::ws::Error> + Send>>;

/// A remote viewer's socket on the session node.
pub struct LinkSocket {
    inbound: mpsc::Receiver<Result<Message, crate::ws::Error>>,
    outbound: Outbound,
    window: Arc<Window>,
    reader: tokio::task::JoinHandle<()>,
}

impl LinkSocket {
    /// Subscribes to the link's `up` subject (before the opening is
    /// answered, so nothing the viewer node sends is missed) and starts
    /// reading it.
    async fn open(
        state: &AppState,
        nats: &async_nats::Client,
        link: &str,
    ) -> Result<LinkSocket, async_nats::SubscribeError> {
        let sub = nats.subscribe(up(state, link)).await?;
        let down = down(state, link);
        let window = Arc::new(Window::default());
        let (tx, inbound) = mpsc::channel(64);
        let reader = tokio::spawn(read_up(
            sub,
            nats.clone(),
            down.clone(),
            Arc::clone(&window),
            tx,
        ));
        let outbound = futures_util::sink::unfold(
            (nats.clone(), down, Arc::clone(&window), 0u32),
            |(nats, down, window, mut seq), msg: Message| async move {
                for frame in frames_of(msg, &mut seq) {
                    let n = match &frame {
                        Frame::Data { body, .. } => body.len() as u64,
                        _ => 0,
                    };
                    if !window.reserve(n).await {
                        return Err(crate::ws::Error::other(LinkLost));
                    }
                    nats.publish(down.clone(), frame.encode())
                        .await
                        .map_err(crate::ws::Error::other)?;
                }
                Ok((nats, down, window, seq))
            },
        );
        Ok(LinkSocket {
            inbound,
            outbound: Box::pin(outbound),
            window,
            reader,
        })
    }
}

impl Drop for LinkSocket {
    fn drop(&mut self) {
        self.window.close();
        self.reader.abort();
    }
}

/// The link is gone (quiet for too long, or a frame went missing).
#[derive(Debug, thiserror::Error)]
#[error("the link to the viewer's node is gone")]
pub struct LinkLost;

/// Reads the `up` subject into the socket's inbound queue: acks widen the
/// window, keepalives keep it open, and the session node says it is alive.
async fn read_up(
    mut sub: async_nats::Subscriber,
    nats: async_nats::Client,
    down: String,
    window: Arc<Window>,
    tx: mpsc::Sender<Result<Message, crate::ws::Error>>,
) {
    let mut assembler = Assembler::default();
    let mut alive = tokio::time::interval(KEEPALIVE);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                heard = tokio::time::Instant::now();
                match Frame::decode(msg.payload) {
                    Ok(Frame::Alive) => {}
                    Ok(Frame::Ack(total)) => window.ack(total),
                    Ok(Frame::Data { seq, kind, body }) => match assembler.push(seq, kind, body) {
                        Ok(Some(m)) => {
                            if tx.send(Ok(m)).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "a viewer link lost data; closing it");
                            break;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "a viewer link sent garbage; closing it");
                        break;
                    }
                }
            }
            _ = alive.tick() => {
                if heard.elapsed() > SILENCE {
                    tracing::info!("a viewer link went quiet; its viewer is gone");
                    break;
                }
                let _ = nats.publish(down.clone(), Frame::Alive.encode()).await;
            }
        }
    }
    window.close();
    let _ = tx.send(Err(crate::ws::Error::other(LinkLost))).await;
}

impl Stream for LinkSocket {
    type Item = Result<Message, crate::ws::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbound.poll_recv(cx)
    }
}

impl Sink<Message> for LinkSocket {
    type Error = crate::ws::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outbound.as_mut().poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.outbound.as_mut().start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outbound.as_mut().poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outbound.as_mut().poll_close(cx)
    }
}

// ---------------------------------------------------------------------
// The viewer node's side.

/// Why a viewer could not be linked to its session's node.
#[derive(Debug)]
pub enum OpenError {
    /// NATS is down or the node did not answer in time.
    Unavailable(String),
    /// The node is gone (nobody answers its subjects).
    NodeGone,
    /// The session node refused, with its reason.
    Refused(ErrorCode, String),
}

/// A link opened for a viewer about to be upgraded.
pub struct Remote {
    node: String,
    link: String,
    down: async_nats::Subscriber,
    nats: async_nats::Client,
}

/// Asks `node` to open a link for a viewer of `session_id` holding `token`.
pub async fn open(
    state: &AppState,
    node: &str,
    token: &str,
    session_id: &str,
    ip: IpAddr,
    keep: bool,
) -> Result<Remote, OpenError> {
    let cluster = state.cluster();
    let Some(nats) = cluster.nats().cloned() else {
        return Err(OpenError::Unavailable(
            "this node runs without NATS".to_owned(),
        ));
    };
    if !cluster.nats_connected() {
        return Err(OpenError::Unavailable("NATS is unreachable".to_owned()));
    }
    let link = uuid::Uuid::new_v4().simple().to_string();
    let down = nats
        .subscribe(down(state, &link))
        .await
        .map_err(|e| OpenError::Unavailable(e.to_string()))?;
    let opening = Opening {
        link: link.clone(),
        token: token.to_owned(),
        session_id: session_id.to_owned(),
        ip,
        keep,
    };
    let body = serde_json::to_vec(&opening).map_err(|e| OpenError::Unavailable(e.to_string()))?;
    let answer = match nats
        .request(cluster.node_subject(node, "link.open"), body.into())
        .await
    {
        Ok(answer) => answer,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(OpenError::NodeGone)
        }
        Err(e) => return Err(OpenError::Unavailable(e.to_string())),
    };
    match serde_json::from_slice::<Answer>(&answer.payload) {
        Ok(Answer::Opened) => Ok(Remote {
            node: node.to_owned(),
            link,
            down,
            nats,
        }),
        Ok(Answer::Refused { code, message }) => Err(OpenError::Refused(code, message)),
        Err(e) => Err(OpenError::Unavailable(format!(
            "unreadable answer from node {node}: {e}"
        ))),
    }
}

/// What a frame from the session node means for the viewer's socket.
#[derive(Debug, PartialEq)]
enum Down {
    /// Nothing to write yet (a part, a keepalive, an ack); `n` body bytes taken.
    Nothing(u64),
    /// A whole message to write, completed by `n` body bytes.
    Deliver(Message, u64),
    /// A gap or garbage: the link cannot go on.
    Broken,
}

fn take_down(payload: Bytes, assembler: &mut Assembler) -> Down {
    let (seq, kind, body) = match Frame::decode(payload) {
        Ok(Frame::Data { seq, kind, body }) => (seq, kind, body),
        Ok(_) => return Down::Nothing(0),
        Err(_) => return Down::Broken,
    };
    let n = body.len() as u64;
    match assembler.push(seq, kind, body) {
        Ok(Some(m)) => Down::Deliver(m, n),
        Ok(None) => Down::Nothing(n),
        Err(e) => {
            tracing::warn!(error = %e, "a viewer link lost data");
            Down::Broken
        }
    }
}

/// How a pumped link ended, when the viewer must be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    /// The session node is gone.
    Node,
    /// NATS (or the session node) stopped answering.
    Relay,
    /// This (the viewer's) node is stopping.
    Stopping,
}

/// Carries a linked viewer's WebSocket to and from the session node until
/// either side ends.
pub async fn pump(ws: WebSocket, state: AppState, remote: Remote, session_id: String) {
    let Remote {
        node,
        link,
        mut down,
        nats,
    } = remote;
    let up = up(&state, &link);
    let _gauge = state.metrics().link_open("viewer");
    let (mut sink, mut stream) = ws.split();
    let (lost_tx, mut lost_rx) = mpsc::channel::<Lost>(1);
    let watcher = tokio::spawn(watch_node(
        nats.clone(),
        state.cluster().node_subject(&node, "ping"),
        lost_tx,
    ));
    let mut assembler = Assembler::default();
    let mut seq_up = 0u32;
    let (mut written, mut acked) = (0u64, 0u64);
    let mut tick = tokio::time::interval(KEEPALIVE);
    let mut heard = tokio::time::Instant::now();
    let lost = loop {
        tokio::select! {
            msg = down.next() => {
                // Everything NATS already holds for this link is written
                // to the viewer's socket, then flushed once: one flush per
                // burst rather than per message.
                let mut msg = msg;
                let mut batch = 0u64;
                let end = loop {
                    let Some(m) = msg else { break Some(Some(Lost::Relay)) };
                    heard = tokio::time::Instant::now();
                    match take_down(m.payload, &mut assembler) {
                        Down::Nothing(n) => written += n,
                        Down::Broken => break Some(Some(Lost::Relay)),
                        Down::Deliver(m, n) => {
                            let closing = matches!(m, Message::Close(_));
                            let fed = tokio::time::timeout(viewer::SEND_STALL, sink.feed(m)).await;
                            written += n;
                            batch += n;
                            if closing || !matches!(fed, Ok(Ok(()))) {
                                break Some(None);
                            }
                        }
                    }
                    if batch >= FLUSH_EVERY {
                        break None;
                    }
                    match down.next().now_or_never() {
                        Some(next) => msg = next,
                        None => break None,
                    }
                };
                let flushed = tokio::time::timeout(viewer::SEND_STALL, sink.flush()).await;
                if let Some(end) = end {
                    break end;
                }
                if !matches!(flushed, Ok(Ok(()))) {
                    break None;
                }
                if written - acked >= ACK_EVERY {
                    acked = written;
                    let _ = nats.publish(up.clone(), Frame::Ack(acked).encode()).await;
                }
            }
            incoming = stream.next() => {
                let Some(Ok(m)) = incoming else {
                    // The viewer went without a Close: say so upstream.
                    let mut frames = frames_of(Message::Close(None), &mut seq_up);
                    if let Some(f) = frames.pop() {
                        let _ = nats.publish(up.clone(), f.encode()).await;
                    }
                    break None;
                };
                for f in frames_of(m, &mut seq_up) {
                    if nats.publish(up.clone(), f.encode()).await.is_err() {
                        break;
                    }
                }
            }
            Some(why) = lost_rx.recv() => break Some(why),
            () = state.shutdown_token().cancelled() => break Some(Lost::Stopping),
            _ = tick.tick() => {
                if heard.elapsed() > SILENCE {
                    break Some(if state.cluster().nats_connected() { Lost::Node } else { Lost::Relay });
                }
                if written > acked {
                    acked = written;
                    let _ = nats.publish(up.clone(), Frame::Ack(acked).encode()).await;
                }
                let _ = nats.publish(up.clone(), Frame::Alive.encode()).await;
            }
        }
    };
    watcher.abort();
    match lost {
        Some(Lost::Node) => state.metrics().link_lost("node_lost"),
        Some(Lost::Relay) => state.metrics().link_lost("relay_unavailable"),
        Some(Lost::Stopping) | None => {}
    }
    match lost {
        Some(Lost::Node) => {
            let _ = sink
                .send(Message::Binary(ended_envelope(
                    &session_id,
                    "node_lost",
                    "the server node relaying this session is gone",
                )))
                .await;
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: close::SESSION_ENDED,
                    reason: "node_lost".into(),
                })))
                .await;
        }
        Some(Lost::Relay) => {
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: close::RELAY_UNAVAILABLE,
                    reason: "relay_unavailable".into(),
                })))
                .await;
        }
        Some(Lost::Stopping) => {
            // The viewer's answering Close goes on to the session's node
            // (below), which lets its side of the viewer go at once.
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: close::GOING_AWAY,
                    reason: close::SHUTTING_DOWN.into(),
                })))
                .await;
        }
        None => {}
    }
    // The viewer's answer to a Close (and anything it still sent) goes to
    // the session's node, so its viewer task ends at once; TCP closes after
    // that answer, as on a local viewer (RFC 6455 §7.1.1).
    let _ = tokio::time::timeout(crate::control::connection::CLOSE_LINGER, async {
        while let Some(Ok(m)) = stream.next().await {
            let last = matches!(m, Message::Close(_));
            for f in frames_of(m, &mut seq_up) {
                let _ = nats.publish(up.clone(), f.encode()).await;
            }
            if last {
                break;
            }
        }
    })
    .await;
}

fn ended_envelope(session_id: &str, code: &str, reason: &str) -> Bytes {
    use prost::Message as _;
    tessera_proto::Envelope::of(tessera_proto::Body::SessionEnded(
        tessera_proto::v1::SessionEnded {
            session_id: session_id.to_owned(),
            code: code.to_owned(),
            reason: reason.to_owned(),
        },
    ))
    .encode_to_vec()
    .into()
}

/// Asks the session node's `ping` every [`KEEPALIVE`]: "no responders"
/// means it is gone; NATS down or three unanswered asks, unavailable.
async fn watch_node(nats: async_nats::Client, ping: String, lost: mpsc::Sender<Lost>) {
    let mut misses = 0;
    loop {
        tokio::time::sleep(KEEPALIVE).await;
        let asked = tokio::time::timeout(KEEPALIVE, nats.request(ping.clone(), Bytes::new())).await;
        match asked {
            Ok(Ok(_)) => misses = 0,
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                let _ = lost.send(Lost::Node).await;
                return;
            }
            _ => {
                misses += 1;
                if misses >= 3 {
                    let _ = lost.send(Lost::Relay).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(msgs: Vec<Message>) -> Vec<Message> {
        let mut seq = 0;
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for m in msgs {
            for f in frames_of(m, &mut seq) {
                let Frame::Data { seq, kind, body } = Frame::decode(f.encode()).unwrap() else {
                    panic!("a data frame")
                };
                if let Some(m) = a.push(seq, kind, body).unwrap() {
                    out.push(m);
                }
            }
        }
        out
    }

    #[test]
    fn every_kind_of_message_crosses_a_link_unchanged() {
        let big = Bytes::from(vec![7u8; 3 * PART + 11]);
        let msgs = vec![
            Message::Binary(Bytes::from_static(b"shell")),
            Message::Binary(big.clone()),
            Message::Text("hi".into()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::new()),
            Message::Binary(Bytes::new()),
            Message::Close(Some(CloseFrame {
                code: 4010,
                reason: "viewer_too_slow".into(),
            })),
            Message::Close(None),
        ];
        assert_eq!(roundtrip(msgs.clone()), msgs);
    }

    #[test]
    fn a_long_message_goes_in_parts_under_the_nats_limit() {
        let mut seq = 0;
        let frames = frames_of(
            Message::Binary(Bytes::from(vec![0u8; 2 * PART + 1])),
            &mut seq,
        );
        assert_eq!(frames.len(), 3);
        assert_eq!(seq, 3);
        assert!(frames.iter().all(|f| f.encode().len() <= PART + 5));
    }

    #[test]
    fn a_missing_frame_ends_the_link() {
        let mut a = Assembler::default();
        assert!(a.push(0, BINARY, Bytes::new()).unwrap().is_some());
        assert_eq!(
            a.push(2, BINARY, Bytes::new()),
            Err(AssembleError::Gap {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn garbage_frames_are_refused() {
        assert_eq!(Frame::decode(Bytes::new()), Err(FrameError::Empty));
        assert_eq!(
            Frame::decode(Bytes::from_static(b"A12")),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(b"B1")),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            Frame::decode(Bytes::from_static(b"Z")),
            Err(FrameError::Kind(b'Z'))
        );
        assert_eq!(Frame::decode(Frame::Ack(9).encode()), Ok(Frame::Ack(9)));
        assert_eq!(Frame::decode(Frame::Alive.encode()), Ok(Frame::Alive));
    }

    #[test]
    fn the_viewer_node_writes_whole_messages_and_counts_every_byte() {
        let mut seq = 0;
        let mut frames = frames_of(Message::Binary(Bytes::from(vec![1u8; PART + 3])), &mut seq)
            .into_iter()
            .map(|f| f.encode());
        let mut a = Assembler::default();
        let first = take_down(frames.next().unwrap(), &mut a);
        assert_eq!(first, Down::Nothing(PART as u64));
        assert_eq!(take_down(Frame::Alive.encode(), &mut a), Down::Nothing(0));
        match take_down(frames.next().unwrap(), &mut a) {
            Down::Deliver(Message::Binary(b), 3) => assert_eq!(b.len(), PART + 3),
            other => panic!("{other:?}"),
        }
        // A frame skipped (seq 2 never came): the link is broken.
        let late = Frame::Data {
            seq: 3,
            kind: BINARY,
            body: Bytes::new(),
        };
        assert_eq!(take_down(late.encode(), &mut a), Down::Broken);
        assert_eq!(
            take_down(Bytes::from_static(b"Z"), &mut Assembler::default()),
            Down::Broken
        );
    }

    #[test]
    fn link_ids_are_subject_tokens() {
        assert!(valid_link_id("0f3a"));
        for bad in ["", "a.b", "a*", "a>", "a b", &"x".repeat(65)] {
            assert!(!valid_link_id(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_window_holds_back_the_sender_until_acknowledged() {
        let w = Arc::new(Window::default());
        assert!(w.reserve(WINDOW).await);
        let waiting = tokio::spawn({
            let w = Arc::clone(&w);
            async move { w.reserve(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        w.ack(WINDOW);
        assert!(waiting.await.unwrap());
        // A closed window lets nothing more go.
        w.close();
        assert!(!w.reserve(1).await);
    }
}
