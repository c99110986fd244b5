//! The viewer side of a screen channel over `/ws/viewer`: join, say which
//! codecs this viewer decodes, put frames back together from their parts,
//! acknowledge the frames drawn, ask for a keyframe when the picture cannot
//! be trusted, and send input — only when the session was joined with
//! `control` access. Decoding pixels is the caller's business (the
//! `tessera-screen` decoders); this module hands over whole frames only,
//! and only those that may be drawn.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_core::api::SecretString;
use tessera_proto::v1::{
    screen, ChannelKind, ClipboardText, CursorShape, KeyInput, KeyframeRequest, Monitor,
    PointerInput, ReleaseInput, Screen, ScreenAck, ScreenConfigure, ScreenDecoders, ScreenFormat,
    ScreenFrame, SpecialKeys,
};
use tessera_proto::{Body, Envelope};
use tessera_screen::{FrameAssembler, ReceivedFrame};
use tokio_tungstenite::tungstenite::Message;

use crate::viewer::{open_socket, read_body, Read, Ws};
use crate::{ApiClient, ClientError};

/// Clipboard text a viewer sends at most: the protocol's cap (the relay
/// closes the socket of a viewer that sends more).
pub const MAX_CLIPBOARD_BYTES: usize = tessera_proto::MAX_CLIPBOARD_TEXT;

/// What joining told the viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenJoined {
    pub access: String,
    pub device_name: String,
    pub channel_id: u32,
}

impl ScreenJoined {
    /// Whether this viewer may send input at all (the relay drops input
    /// from view-only viewers; this viewer does not send it in the first place).
    pub fn may_control(&self) -> bool {
        input_allowed(&self.access)
    }
}

/// The one rule for sending input: only with `control` access.
pub fn input_allowed(access: &str) -> bool {
    access == "control"
}

/// What the relay sends a screen viewer.
#[derive(Debug, Clone, PartialEq)]
pub enum ScreenEvent {
    /// The stream's codec, monitor and size from the next keyframe on.
    Format(ScreenFormat),
    /// A whole frame, ready to decode; acknowledge it once drawn.
    Frame(ReceivedFrame),
    /// A frame could not be put together or does not follow the last one
    /// (the code says why): nothing is drawn until a keyframe, and the
    /// caller should send [`ScreenSender::request_keyframe`].
    Resync {
        code: &'static str,
    },
    /// The device's monitors (on joining, and whenever they change); a
    /// control viewer may ask for another with
    /// [`ScreenSender::choose_monitor`] by its `index`.
    Monitors(Vec<Monitor>),
    Cursor(CursorShape),
    /// Text the remote display's clipboard now holds (control viewers only).
    Clipboard(String),
    /// Something to show in words (capture paused, encoder fell back).
    Notice {
        code: String,
        message: String,
    },
    /// The screen channel ended.
    ChannelClosed {
        reason: String,
    },
    /// The session is over, and why.
    Ended {
        code: String,
        reason: String,
    },
    /// The socket closed (with its close code and reason, if any).
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

/// Joins `session_id` as a screen viewer with `token`, and tells the relay
/// the codecs this viewer decodes (`decoders`, in order of preference).
/// Fails with `not_a_screen_session` when the session carries a shell.
pub async fn connect(
    client: &ApiClient,
    session_id: &str,
    token: &SecretString,
    decoders: &[&str],
) -> Result<(ScreenSender, ScreenReceiver, ScreenJoined), ClientError> {
    let ws = open_socket(client, session_id, token, false).await?;
    let (sink, stream) = ws.split();
    let mut rx = ScreenReceiver {
        stream,
        gate: KeyframeGate::default(),
    };
    let joined = loop {
        match rx.stream.next().await {
            Some(Ok(Message::Binary(b))) => match Envelope::decode(b).ok().and_then(|e| e.body) {
                Some(Body::ViewerReady(r)) => {
                    if r.kind != ChannelKind::Screen as i32 {
                        return Err(refused(
                            "not_a_screen_session",
                            "this session carries a shell, not a screen: `tessera connect` joins it",
                        ));
                    }
                    break ScreenJoined {
                        access: r.access,
                        device_name: r.device_name,
                        channel_id: r.channel_id,
                    };
                }
                Some(Body::SessionEnded(e)) => {
                    return Err(refused(
                        &e.code,
                        &format!("the session ended: {}", e.reason),
                    ))
                }
                _ => continue,
            },
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(refused("closed", &format!("the relay closed: {reason}")));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(refused("closed", &e.to_string())),
            None => return Err(refused("closed", "the relay closed")),
        }
    };
    let mut tx = ScreenSender {
        sink,
        session_id: session_id.to_owned(),
        channel_id: joined.channel_id,
        control: joined.may_control(),
    };
    tx.send(screen::Body::Decoders(ScreenDecoders {
        codecs: decoders.iter().map(|c| (*c).to_owned()).collect(),
    }))
    .await?;
    Ok((tx, rx, joined))
}

fn refused(code: &str, message: &str) -> ClientError {
    ClientError::Api {
        status: 0,
        code: code.to_owned(),
        message: message.to_owned(),
        retry_after: None,
    }
}

/// Sends acknowledgements, keyframe requests and (with control access) input.
pub struct ScreenSender {
    sink: SplitSink<Ws, Message>,
    session_id: String,
    channel_id: u32,
    control: bool,
}

impl ScreenSender {
    async fn send(&mut self, body: screen::Body) -> Result<(), ClientError> {
        let env = Envelope::of(Body::Screen(Screen {
            session_id: self.session_id.clone(),
            channel_id: self.channel_id,
            body: Some(body),
        }));
        self.sink
            .send(Message::Binary(env.encode_to_vec().into()))
            .await
            .map_err(|e| ClientError::Unexpected {
                status: 0,
                detail: e.to_string(),
            })
    }

    /// Input is sent only with control access; otherwise it is dropped
    /// here, and the call says so with `false`.
    async fn send_input(&mut self, body: screen::Body) -> Result<bool, ClientError> {
        if !self.control {
            return Ok(false);
        }
        self.send(body).await.map(|()| true)
    }

    /// Frame `number` is drawn.
    pub async fn ack(&mut self, number: u64) -> Result<(), ClientError> {
        self.send(screen::Body::Ack(ScreenAck { number })).await
    }

    pub async fn request_keyframe(&mut self) -> Result<(), ClientError> {
        self.send(screen::Body::KeyframeRequest(KeyframeRequest {}))
            .await
    }

    /// Asks for another monitor, by its `index` in [`ScreenEvent::Monitors`]
    /// (control viewers only: a view-only viewer's request is not sent).
    pub async fn choose_monitor(&mut self, monitor: u32) -> Result<bool, ClientError> {
        self.send_input(screen::Body::Configure(ScreenConfigure {
            codec: String::new(),
            monitor,
        }))
        .await
    }

    pub async fn pointer(&mut self, p: PointerInput) -> Result<bool, ClientError> {
        self.send_input(screen::Body::Pointer(p)).await
    }

    pub async fn key(&mut self, k: KeyInput) -> Result<bool, ClientError> {
        self.send_input(screen::Body::Key(k)).await
    }

    /// `combo`: ctrl_alt_del, ctrl_alt_f1 … ctrl_alt_f12, super, alt_tab.
    pub async fn special_keys(&mut self, combo: &str) -> Result<bool, ClientError> {
        self.send_input(screen::Body::SpecialKeys(SpecialKeys {
            combo: combo.to_owned(),
            viewer: 0,
        }))
        .await
    }

    /// Text for the remote clipboard; refused (`clipboard_too_large`) past
    /// [`MAX_CLIPBOARD_BYTES`].
    pub async fn clipboard(&mut self, text: &str) -> Result<bool, ClientError> {
        if text.len() > MAX_CLIPBOARD_BYTES {
            return Err(refused(
                "clipboard_too_large",
                &format!("clipboard text over {MAX_CLIPBOARD_BYTES} bytes is not sent"),
            ));
        }
        self.send_input(screen::Body::Clipboard(ClipboardText {
            text: text.to_owned(),
            viewer: 0,
        }))
        .await
    }

    /// Releases every key and button this viewer holds (focus lost).
    pub async fn release_input(&mut self) -> Result<bool, ClientError> {
        self.send_input(screen::Body::ReleaseInput(ReleaseInput { viewer: 0 }))
            .await
    }

    /// Sends raw bytes as one WebSocket message (for tests of the limits).
    pub async fn raw(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.sink
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| ClientError::Unexpected {
                status: 0,
                detail: e.to_string(),
            })
    }

    pub async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}

/// Receives frames and notices.
pub struct ScreenReceiver {
    stream: SplitStream<Ws>,
    gate: KeyframeGate,
}

impl ScreenReceiver {
    /// The next event; after `Ended` or `Closed` the stream is done.
    pub async fn next(&mut self) -> ScreenEvent {
        loop {
            let body = match read_body(&mut self.stream).await {
                Read::Body(body) => body,
                Read::Closed { code, reason } => return ScreenEvent::Closed { code, reason },
            };
            let event = match body {
                Body::Screen(s) => match s.body {
                    Some(screen::Body::Format(f)) => {
                        self.gate.new_format();
                        ScreenEvent::Format(f)
                    }
                    Some(screen::Body::Frame(f)) => match self.gate.push(f) {
                        Assembled::Whole(w) => ScreenEvent::Frame(w),
                        Assembled::Incomplete | Assembled::Skipped => continue,
                        Assembled::Broken(code) => ScreenEvent::Resync { code },
                    },
                    Some(screen::Body::Capabilities(c)) => ScreenEvent::Monitors(c.monitors),
                    Some(screen::Body::Cursor(c)) => ScreenEvent::Cursor(c),
                    Some(screen::Body::Clipboard(c)) => ScreenEvent::Clipboard(c.text),
                    Some(screen::Body::Notice(n)) => ScreenEvent::Notice {
                        code: n.code,
                        message: n.message,
                    },
                    _ => continue,
                },
                Body::ChannelClose(c) => ScreenEvent::ChannelClosed { reason: c.reason },
                Body::SessionEnded(e) => ScreenEvent::Ended {
                    code: e.code,
                    reason: e.reason,
                },
                _ => continue,
            };
            return event;
        }
    }
}

/// What one part did.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled {
    /// A whole frame that may be drawn.
    Whole(ReceivedFrame),
    /// More parts to come.
    Incomplete,
    /// Dropped quietly: nothing can be drawn until a keyframe, which has
    /// already been asked for (or is due after a format change).
    Skipped,
    /// The stream broke here: ask for a keyframe (the code says why).
    Broken(&'static str),
}

/// Decides which whole frames may be drawn. Parts are put together by the
/// codec crate's assembler (in order, one frame at a time); on top of it a
/// frame is drawn only if it is a keyframe or follows the last one drawn
/// by number. Anything else waits for a keyframe, asked for once, so a
/// picture is never drawn over a missing frame.
#[derive(Debug, Default)]
pub struct KeyframeGate {
    parts: FrameAssembler,
    /// The number of the last frame handed out.
    last: Option<u64>,
    resync: Resync,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// The first frame, and the first after a format change, is a keyframe
    /// by the protocol: wait without asking.
    #[default]
    Expected,
    Asked,
    No,
}

impl KeyframeGate {
    /// A `ScreenFormat` arrived: the next frame is a keyframe.
    pub fn new_format(&mut self) {
        self.parts = FrameAssembler::new();
        self.last = None;
        self.resync = Resync::Expected;
    }

    pub fn push(&mut self, part: ScreenFrame) -> Assembled {
        let frame = match self.parts.push(part) {
            Ok(Some(f)) => f,
            Ok(None) => return Assembled::Incomplete,
            Err(e) => return self.broken(e.code()),
        };
        let follows = self.last.is_some_and(|l| frame.number == l.wrapping_add(1));
        if !frame.frame.keyframe {
            match self.resync {
                Resync::No if !follows => return self.broken("frames_missing"),
                Resync::No => {}
                Resync::Expected | Resync::Asked => return Assembled::Skipped,
            }
        }
        self.last = Some(frame.number);
        self.resync = Resync::No;
        Assembled::Whole(frame)
    }

    fn broken(&mut self, code: &'static str) -> Assembled {
        match self.resync {
            Resync::Asked => Assembled::Skipped,
            _ => {
                self.resync = Resync::Asked;
                Assembled::Broken(code)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_screen::{EncodedFrame, FramePart, Rect};

    fn parts(number: u64, keyframe: bool, n: usize) -> Vec<ScreenFrame> {
        EncodedFrame {
            keyframe,
            copies: Vec::new(),
            parts: (0..n)
                .map(|i| FramePart {
                    rects: vec![Rect::new(i as u32, 0, 1, 1)],
                    data: vec![i as u8],
                })
                .collect(),
        }
        .into_messages(number, 7)
    }

    fn one(number: u64, keyframe: bool) -> ScreenFrame {
        parts(number, keyframe, 1).remove(0)
    }

    fn whole(a: Assembled) -> ReceivedFrame {
        match a {
            Assembled::Whole(w) => w,
            other => panic!("expected a whole frame, got {other:?}"),
        }
    }

    #[test]
    fn a_frame_in_parts_is_handed_out_whole() {
        let mut g = KeyframeGate::default();
        let mut ps = parts(5, true, 3).into_iter();
        assert_eq!(g.push(ps.next().unwrap()), Assembled::Incomplete);
        assert_eq!(g.push(ps.next().unwrap()), Assembled::Incomplete);
        let w = whole(g.push(ps.next().unwrap()));
        assert_eq!((w.number, w.frame.parts.len()), (5, 3));
        assert_eq!(whole(g.push(one(6, false))).number, 6);
    }

    #[test]
    fn nothing_is_drawn_before_the_first_keyframe_and_nothing_is_asked() {
        let mut g = KeyframeGate::default();
        assert_eq!(g.push(one(3, false)), Assembled::Skipped);
        assert_eq!(g.push(one(4, false)), Assembled::Skipped);
        assert!(whole(g.push(one(9, true))).frame.keyframe);
    }

    #[test]
    fn a_missing_frame_asks_for_one_keyframe_and_skips_until_it_comes() {
        let mut g = KeyframeGate::default();
        whole(g.push(one(1, true)));
        assert_eq!(g.push(one(3, false)), Assembled::Broken("frames_missing"));
        assert_eq!(g.push(one(4, false)), Assembled::Skipped);
        assert_eq!(whole(g.push(one(7, true))).number, 7);
        assert_eq!(whole(g.push(one(8, false))).number, 8);
    }

    #[test]
    fn parts_out_of_order_break_the_stream_until_a_keyframe() {
        let mut g = KeyframeGate::default();
        whole(g.push(one(1, true)));
        let ps = parts(2, false, 3);
        assert_eq!(g.push(ps[0].clone()), Assembled::Incomplete);
        assert_eq!(
            g.push(ps[2].clone()),
            Assembled::Broken("frame_part_out_of_order")
        );
        assert_eq!(g.push(one(3, false)), Assembled::Skipped);
        assert_eq!(whole(g.push(one(4, true))).number, 4);
    }

    #[test]
    fn a_format_change_waits_for_its_keyframe_without_asking() {
        let mut g = KeyframeGate::default();
        whole(g.push(one(1, true)));
        g.new_format();
        assert_eq!(g.push(one(2, false)), Assembled::Skipped);
        assert!(whole(g.push(one(3, true))).frame.keyframe);
    }

    #[test]
    fn only_control_access_sends_input() {
        assert!(input_allowed("control"));
        assert!(!input_allowed("view_only"));
        assert!(!input_allowed(""));
    }
}
