//! The viewer side of a screen channel over `/ws/viewer`: join, say which
//! codecs this viewer decodes, put frames back together from their parts,
//! acknowledge the frames drawn, ask for a keyframe when the picture cannot
//! be trusted, and send input — only when the session was joined with
//! `control` access. Decoding pixels is the caller's business (the
//! `tessera-screen` decoders); this module hands over whole frames only.

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_core::api::SecretString;
use tessera_proto::v1::{
    screen, ChannelKind, ClipboardText, CopyRect, CursorShape, KeyInput, KeyframeRequest,
    PointerInput, Rect, ReleaseInput, Screen, ScreenAck, ScreenConfigure, ScreenDecoders,
    ScreenFormat, ScreenFrame, SpecialKeys,
};
use tessera_proto::{Body, Envelope, MAX_VIEWER_FRAME};
use tokio_tungstenite::tungstenite::Message;

use crate::viewer::{open_socket, Ws};
use crate::{ApiClient, ClientError};

/// The largest frame this viewer puts together from parts (a 7680×4320
/// picture uncompressed, with room for the parts' framing): a device that
/// sends more is broken, and the frame is dropped rather than buffered.
pub const MAX_FRAME_BYTES: usize = 7680 * 4320 * 4 + (1 << 20);

/// Clipboard text a viewer sends at most: what fits one viewer message
/// with room for the envelope.
pub const MAX_CLIPBOARD_BYTES: usize = MAX_VIEWER_FRAME - 1024;

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

/// One whole frame, its parts joined in order.
#[derive(Debug, Clone, PartialEq)]
pub struct WholeFrame {
    pub number: u64,
    pub keyframe: bool,
    pub copies: Vec<CopyRect>,
    pub rects: Vec<Rect>,
    pub data: Bytes,
    pub captured_at_us: i64,
    /// How many parts it came in.
    pub parts: u32,
}

/// What the relay sends a screen viewer.
#[derive(Debug, Clone, PartialEq)]
pub enum ScreenEvent {
    /// The stream's codec, monitor and size from the next keyframe on.
    Format(ScreenFormat),
    /// A whole frame, ready to decode; acknowledge it once drawn.
    Frame(WholeFrame),
    /// A frame could not be put together (parts missing or out of order,
    /// or too large): it is dropped, nothing is drawn until a keyframe,
    /// and the caller should send [`ScreenSender::request_keyframe`].
    Resync {
        reason: &'static str,
    },
    Cursor(CursorShape),
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
        assembler: FrameAssembler::default(),
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

    /// Asks for another monitor (control viewers only).
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
    assembler: FrameAssembler,
}

impl ScreenReceiver {
    /// The next event; after `Ended` or `Closed` the stream is done.
    pub async fn next(&mut self) -> ScreenEvent {
        loop {
            let b = match self.stream.next().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(frame))) => {
                    return ScreenEvent::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return ScreenEvent::Closed {
                        code: None,
                        reason: e.to_string(),
                    }
                }
                None => {
                    return ScreenEvent::Closed {
                        code: None,
                        reason: String::new(),
                    }
                }
            };
            let Some(body) = Envelope::decode(b).ok().and_then(|e| e.body) else {
                continue;
            };
            let event = match body {
                Body::Screen(s) => match s.body {
                    Some(screen::Body::Format(f)) => {
                        self.assembler.new_format();
                        ScreenEvent::Format(f)
                    }
                    Some(screen::Body::Frame(f)) => match self.assembler.push(f) {
                        Assembled::Whole(w) => ScreenEvent::Frame(w),
                        Assembled::Incomplete | Assembled::Skipped => continue,
                        Assembled::Broken(reason) => ScreenEvent::Resync { reason },
                    },
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

/// What one part did to the frame being put together.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled {
    /// The frame is whole.
    Whole(WholeFrame),
    /// More parts to come.
    Incomplete,
    /// Dropped quietly: nothing can be drawn until a keyframe, which has
    /// already been asked for (or is on its way after a format change).
    Skipped,
    /// The stream broke here: ask for a keyframe (the reason says why).
    Broken(&'static str),
}

/// Puts frames together from their parts and decides which may be drawn:
/// parts come in order, numbered from 0, one frame at a time, and frames
/// follow one another by number; anything else drops what was gathered and
/// waits for a keyframe, so a picture is never drawn over a missing frame.
#[derive(Debug, Default)]
pub struct FrameAssembler {
    pending: Option<Pending>,
    /// The number of the last whole frame handed out.
    last: Option<u64>,
    /// Waiting for a keyframe (at the start, after a format change, or
    /// after a break); `asked` says a keyframe was already requested.
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

#[derive(Debug)]
struct Pending {
    number: u64,
    keyframe: bool,
    next_part: u32,
    copies: Vec<CopyRect>,
    rects: Vec<Rect>,
    data: BytesMut,
    captured_at_us: i64,
}

impl FrameAssembler {
    /// A `ScreenFormat` arrived: the next frame is a keyframe.
    pub fn new_format(&mut self) {
        self.pending = None;
        self.resync = Resync::Expected;
    }

    pub fn push(&mut self, part: ScreenFrame) -> Assembled {
        if let Some(p) = &self.pending {
            if part.number != p.number || part.part != p.next_part {
                self.pending = None;
                return self.broken("a frame's parts came out of order");
            }
        } else {
            if part.part != 0 {
                // The tail of a frame whose start was dropped.
                return self.skip_or_break("a frame's first part is missing");
            }
            let in_sequence = self.last.is_none_or(|l| part.number == l.wrapping_add(1));
            if !part.keyframe && (self.resync != Resync::No || !in_sequence) {
                return match self.resync {
                    Resync::No => self.broken("frames are missing"),
                    _ => Assembled::Skipped,
                };
            }
            self.pending = Some(Pending {
                number: part.number,
                keyframe: part.keyframe,
                next_part: 0,
                copies: Vec::new(),
                rects: Vec::new(),
                data: BytesMut::new(),
                captured_at_us: part.captured_at_us,
            });
        }
        let Some(p) = self.pending.as_mut() else {
            return Assembled::Skipped;
        };
        if p.data.len() + part.data.len() > MAX_FRAME_BYTES {
            self.pending = None;
            return self.broken("a frame is larger than a viewer accepts");
        }
        p.next_part = p.next_part.saturating_add(1);
        p.copies.extend(part.copies);
        p.rects.extend(part.rects);
        p.data.extend_from_slice(&part.data);
        if !part.last_part {
            return Assembled::Incomplete;
        }
        let Some(p) = self.pending.take() else {
            return Assembled::Skipped;
        };
        self.last = Some(p.number);
        self.resync = Resync::No;
        Assembled::Whole(WholeFrame {
            number: p.number,
            keyframe: p.keyframe,
            copies: p.copies,
            rects: p.rects,
            data: p.data.freeze(),
            captured_at_us: p.captured_at_us,
            parts: p.next_part,
        })
    }

    fn skip_or_break(&mut self, reason: &'static str) -> Assembled {
        match self.resync {
            Resync::No => self.broken(reason),
            _ => Assembled::Skipped,
        }
    }

    fn broken(&mut self, reason: &'static str) -> Assembled {
        if self.resync == Resync::Asked {
            return Assembled::Skipped;
        }
        self.resync = Resync::Asked;
        Assembled::Broken(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u64, keyframe: bool, part: u32, last: bool, data: &[u8]) -> ScreenFrame {
        ScreenFrame {
            number,
            keyframe,
            part,
            last_part: last,
            copies: Vec::new(),
            rects: vec![Rect {
                x: part,
                y: 0,
                width: 1,
                height: 1,
            }],
            data: Bytes::copy_from_slice(data),
            captured_at_us: 7,
        }
    }

    fn whole(a: Assembled) -> WholeFrame {
        match a {
            Assembled::Whole(w) => w,
            other => panic!("expected a whole frame, got {other:?}"),
        }
    }

    #[test]
    fn a_frame_in_one_part_is_whole_at_once() {
        let mut a = FrameAssembler::default();
        let w = whole(a.push(part(1, true, 0, true, b"abc")));
        assert_eq!((w.number, w.keyframe, w.parts), (1, true, 1));
        assert_eq!(&w.data[..], b"abc");
    }

    #[test]
    fn parts_are_joined_in_order_with_their_rects() {
        let mut a = FrameAssembler::default();
        assert_eq!(
            a.push(part(5, true, 0, false, b"ab")),
            Assembled::Incomplete
        );
        assert_eq!(
            a.push(part(5, false, 1, false, b"cd")),
            Assembled::Incomplete
        );
        let w = whole(a.push(part(5, false, 2, true, b"e")));
        assert_eq!(&w.data[..], b"abcde");
        assert_eq!(w.parts, 3);
        assert!(
            w.keyframe,
            "the first part's keyframe flag holds for the frame"
        );
        let xs: Vec<u32> = w.rects.iter().map(|r| r.x).collect();
        assert_eq!(xs, [0, 1, 2]);
        let next = whole(a.push(part(6, false, 0, true, b"f")));
        assert_eq!(next.number, 6);
    }

    #[test]
    fn nothing_is_drawn_before_the_first_keyframe_and_nothing_is_asked() {
        let mut a = FrameAssembler::default();
        assert_eq!(a.push(part(3, false, 0, true, b"x")), Assembled::Skipped);
        assert_eq!(a.push(part(4, false, 1, true, b"x")), Assembled::Skipped);
        assert!(whole(a.push(part(9, true, 0, true, b"k"))).keyframe);
    }

    #[test]
    fn a_missing_frame_asks_for_one_keyframe_and_skips_until_it_comes() {
        let mut a = FrameAssembler::default();
        whole(a.push(part(1, true, 0, true, b"k")));
        assert_eq!(
            a.push(part(3, false, 0, true, b"x")),
            Assembled::Broken("frames are missing")
        );
        assert_eq!(a.push(part(4, false, 0, true, b"x")), Assembled::Skipped);
        assert_eq!(whole(a.push(part(7, true, 0, true, b"k"))).number, 7);
        assert_eq!(whole(a.push(part(8, false, 0, true, b"d"))).number, 8);
    }

    #[test]
    fn parts_out_of_order_drop_the_frame() {
        let mut a = FrameAssembler::default();
        whole(a.push(part(1, true, 0, true, b"k")));
        assert_eq!(
            a.push(part(2, false, 0, false, b"a")),
            Assembled::Incomplete
        );
        assert_eq!(
            a.push(part(2, false, 2, true, b"c")),
            Assembled::Broken("a frame's parts came out of order")
        );
        // The rest of that frame, and the frames after it, wait for a keyframe.
        assert_eq!(a.push(part(3, false, 0, true, b"d")), Assembled::Skipped);
        assert_eq!(whole(a.push(part(4, true, 0, true, b"k"))).number, 4);
    }

    #[test]
    fn a_new_frame_before_the_last_part_drops_the_unfinished_one() {
        let mut a = FrameAssembler::default();
        assert_eq!(a.push(part(1, true, 0, false, b"a")), Assembled::Incomplete);
        assert!(matches!(
            a.push(part(2, true, 0, true, b"b")),
            Assembled::Broken(_)
        ));
    }

    #[test]
    fn a_stray_tail_part_is_a_break() {
        let mut a = FrameAssembler::default();
        whole(a.push(part(1, true, 0, true, b"k")));
        assert!(matches!(
            a.push(part(2, false, 1, true, b"b")),
            Assembled::Broken(_)
        ));
    }

    #[test]
    fn a_format_change_waits_for_its_keyframe_without_asking() {
        let mut a = FrameAssembler::default();
        whole(a.push(part(1, true, 0, true, b"k")));
        a.new_format();
        assert_eq!(a.push(part(2, false, 0, true, b"x")), Assembled::Skipped);
        assert!(whole(a.push(part(3, true, 0, true, b"k"))).keyframe);
    }

    #[test]
    fn a_frame_over_the_cap_is_dropped_not_buffered() {
        let mut a = FrameAssembler::default();
        let big = vec![0u8; MAX_FRAME_BYTES / 2 + 1];
        assert_eq!(a.push(part(1, true, 0, false, &big)), Assembled::Incomplete);
        assert_eq!(
            a.push(part(1, true, 1, false, &big)),
            Assembled::Broken("a frame is larger than a viewer accepts")
        );
        assert!(a.pending.is_none());
    }

    #[test]
    fn only_control_access_sends_input() {
        assert!(input_allowed("control"));
        assert!(!input_allowed("view_only"));
        assert!(!input_allowed(""));
    }
}
