//! Screen channels: the relay's rules, decided without I/O.
//!
//! The device's agent captures its display and sends `Screen` messages on
//! its control connection; viewers send theirs on `/ws/viewer`. This module
//! decides, for each message, what the relay does with it; the tasks in
//! `relay::mod`, `relay::screen_viewer` and `control::connection::dispatch`
//! only carry the bytes. The threats and the rules:
//!
//! - **Who may act.** Input (pointer, keys, special keys, clipboard) and
//!   monitor changes come from `control` viewers only; a `view_only`
//!   viewer's input is dropped and counted, never forwarded. The server
//!   stamps the sender's `viewer` number on what it forwards, so a viewer
//!   cannot release (or impersonate) another's held keys.
//! - **How fast.** A control viewer's input is throttled by a token bucket
//!   ([`InputBucket`], 200 events a second by default); the excess is
//!   dropped and counted. Keyframe requests from a viewer reach the device
//!   at most once per [`VIEWER_KEYFRAME_INTERVAL`].
//! - **What is well-formed.** Out-of-range input, a frame out of order, a
//!   frame before its format, an ack of a frame never sent, a second
//!   `ScreenDecoders`: each is a [`Refusal`] with a close code, and changes
//!   nothing.
//! - **Slow viewers.** Frames fan out per viewer with latest-wins
//!   ([`ViewerFlow`]): a viewer whose backlog is full has whole frames
//!   skipped, then receives nothing until the next keyframe (the server asks
//!   the device for one), so it never draws a partial or an intermediate
//!   picture, and never holds back the device or another viewer. A frame
//!   whose first part was delivered is always delivered whole.
//! - **Credits.** Viewers ack the frames they drew; the device is credited
//!   with the fastest viewer's ack ([`Credits`]), so it never encodes faster
//!   than the fastest viewer consumes.
//! - **Codec.** The server chooses from the agent's codecs, every viewer's
//!   decoders and its policy ([`choose_codec`]).

use std::collections::HashMap;
use std::time::Duration;

use tessera_core::kinds::SessionChannel;
use tessera_proto::v1::screen::Body as ScreenBody;
use tessera_proto::v1::{Monitor, ScreenFrame};
use tessera_proto::SCREEN_VERSION;
use tokio::time::Instant;

use super::Access;

/// The screen channel's id within a session (a shell's is 1).
pub const SCREEN_CHANNEL: u32 = 2;
/// The lossless codec every agent and viewer has.
pub const RAW_ZSTD: &str = "raw-zstd";
/// H.264 (Annex B), when the agent's encoder initialised.
pub const H264: &str = "h264";

/// Whole frames a viewer may have waiting before it skips to a keyframe.
pub const MAX_FRAMES_BEHIND: usize = 3;
/// Bytes a viewer may have waiting before it skips to a keyframe.
pub const MAX_BYTES_BEHIND: usize = 24 << 20;
/// The most one frame may carry across its parts (a 4K frame, raw, is
/// 33 MiB before compression).
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// Text clipboard, each way (the protocol's one cap).
pub const MAX_CLIPBOARD: usize = tessera_proto::MAX_CLIPBOARD_TEXT;
/// Largest coordinate or dimension accepted (X11's own limit is 32767).
pub const MAX_COORD: u32 = 32767;
/// Largest cursor image (RGBA).
pub const MAX_CURSOR: u32 = 256;
/// Codecs in one list, and the length of one name.
const MAX_CODECS: usize = 8;
const MAX_CODEC_NAME: usize = 32;
/// Monitors an agent may report.
const MAX_MONITORS: usize = 16;
/// Wheel notches in one pointer event.
const MAX_WHEEL: i32 = 64;
/// Pointer buttons: left, middle, right, back, forward.
const BUTTONS: u32 = (1 << 5) - 1;
/// Modifier bits: shift, ctrl, alt, super, altgr, caps lock, num lock.
const MODIFIERS: u32 = (1 << 7) - 1;
/// How often one viewer's own keyframe requests reach the device.
pub const VIEWER_KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// The special-key combinations a viewer may ask for.
pub const COMBOS: &[&str] = &[
    "ctrl_alt_del",
    "ctrl_alt_f1",
    "ctrl_alt_f2",
    "ctrl_alt_f3",
    "ctrl_alt_f4",
    "ctrl_alt_f5",
    "ctrl_alt_f6",
    "ctrl_alt_f7",
    "ctrl_alt_f8",
    "ctrl_alt_f9",
    "ctrl_alt_f10",
    "ctrl_alt_f11",
    "ctrl_alt_f12",
    "super",
    "alt_tab",
];

/// Whether a device whose agent speaks `protocol` (`None`: not connected)
/// can serve a session of `channel`.
pub fn device_serves(channel: SessionChannel, protocol: Option<u32>) -> bool {
    match channel {
        SessionChannel::Shell => true,
        SessionChannel::Screen => protocol.is_some_and(|v| v >= SCREEN_VERSION),
    }
}

/// The server's codec policy (`--screen-codec`).
///
/// The default is `raw`: raw-zstd over dirty tiles is lossless (text stays
/// exact, which is most of remote support), needs no codec library on
/// either end, and sends nothing for an idle screen; H.264 saves bandwidth
/// only for full-screen motion, at the price of blur on text and a heavier
/// encoder on the device. `prefer-h264` picks it whenever every side can.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CodecPolicy {
    #[default]
    Raw,
    PreferH264,
}

impl std::str::FromStr for CodecPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(CodecPolicy::Raw),
            "prefer-h264" => Ok(CodecPolicy::PreferH264),
            other => Err(format!(
                "unknown codec policy {other:?}: raw or prefer-h264"
            )),
        }
    }
}

impl CodecPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CodecPolicy::Raw => "raw",
            CodecPolicy::PreferH264 => "prefer-h264",
        }
    }
}

/// The session's codec: H.264 only if the policy prefers it, the agent
/// offers it and every viewer decodes it; otherwise raw-zstd, which all
/// have.
pub fn choose_codec<'a>(
    policy: CodecPolicy,
    agent: &[String],
    viewers: impl IntoIterator<Item = &'a [String]>,
) -> &'static str {
    let has = |list: &[String], c: &str| list.iter().any(|x| x == c);
    if policy == CodecPolicy::PreferH264
        && has(agent, H264)
        && viewers.into_iter().all(|v| has(v, H264))
    {
        H264
    } else {
        RAW_ZSTD
    }
}

/// The monitor to capture: the one a control viewer asked for if the agent
/// has it, else the primary, else the first reported, else 0.
pub fn choose_monitor(monitors: &[Monitor], requested: Option<u32>) -> u32 {
    if let Some(r) = requested.filter(|r| monitors.iter().any(|m| m.index == *r)) {
        return r;
    }
    monitors
        .iter()
        .find(|m| m.primary)
        .or_else(|| monitors.first())
        .map_or(0, |m| m.index)
}

/// A message refused: the connection that sent it closes with this code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
}

const fn refuse(code: u16, reason: &'static str) -> Refusal {
    Refusal { code, reason }
}

/// Unexpected or out of order for this peer (RFC 6455 policy violation).
const fn policy(reason: &'static str) -> Refusal {
    refuse(1008, reason)
}

/// Why a viewer's message was dropped (the metric's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    ViewOnly,
    RateLimited,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::ViewOnly => "view_only",
            Dropped::RateLimited => "rate_limited",
        }
    }
}

/// What the relay does with one message from a viewer of a screen session.
#[derive(Clone, Debug, PartialEq)]
pub enum FromViewer {
    /// Its decoders (names it does not know are kept; only `h264` matters).
    Decoders(Vec<String>),
    /// It drew frame `n`.
    Ack(u64),
    /// It wants a keyframe (it lost its picture).
    Keyframe,
    /// A control viewer asks for another monitor.
    Monitor(u32),
    /// Input for the device, stamped with the viewer's number.
    Input(ScreenBody),
    /// Release what this viewer holds (its window lost focus).
    Release,
    /// Nothing reaches the device.
    Drop(Dropped),
}

/// Checks that an input or clipboard body is well-formed.
fn check_input(body: &ScreenBody) -> Result<(), Refusal> {
    let bad = policy("invalid_input");
    match body {
        ScreenBody::Pointer(p) => {
            if p.x > MAX_COORD
                || p.y > MAX_COORD
                || p.buttons & !BUTTONS != 0
                || p.wheel_x.abs() > MAX_WHEEL
                || p.wheel_y.abs() > MAX_WHEEL
            {
                return Err(bad);
            }
        }
        ScreenBody::Key(k) => {
            if k.usage > 0xffff || k.modifiers & !MODIFIERS != 0 || (k.usage == 0 && k.keysym == 0)
            {
                return Err(bad);
            }
        }
        ScreenBody::SpecialKeys(s) => {
            if !COMBOS.contains(&s.combo.as_str()) {
                return Err(bad);
            }
        }
        ScreenBody::Clipboard(c) => {
            if c.text.len() > MAX_CLIPBOARD {
                return Err(refuse(1009, "clipboard_too_large"));
            }
        }
        _ => return Err(policy("unexpected_message")),
    }
    Ok(())
}

/// Stamps `viewer` on an input body (whatever the viewer put there).
fn stamp(mut body: ScreenBody, viewer: u32) -> ScreenBody {
    match &mut body {
        ScreenBody::Pointer(p) => p.viewer = viewer,
        ScreenBody::Key(k) => k.viewer = viewer,
        ScreenBody::SpecialKeys(s) => s.viewer = viewer,
        ScreenBody::Clipboard(c) => c.viewer = viewer,
        ScreenBody::ReleaseInput(r) => r.viewer = viewer,
        _ => {}
    }
    body
}

/// A viewer's own state on a screen session, beside its [`ViewerFlow`]:
/// what it said so far and its input budget.
#[derive(Debug)]
pub struct ViewerRules {
    pub access: Access,
    /// The number stamped on its input (unique within the session).
    pub number: u32,
    /// Whether it has sent anything yet (`ScreenDecoders` must be first).
    spoke: bool,
    bucket: InputBucket,
    last_keyframe_request: Option<Instant>,
}

impl ViewerRules {
    pub fn new(access: Access, number: u32, input_per_second: u32, now: Instant) -> ViewerRules {
        ViewerRules {
            access,
            number,
            spoke: false,
            bucket: InputBucket::new(input_per_second, now),
            last_keyframe_request: None,
        }
    }

    /// Decides what one message from this viewer does. `delivered` is the
    /// newest frame it was sent (for acks).
    pub fn judge(
        &mut self,
        body: Option<ScreenBody>,
        delivered: Option<u64>,
        now: Instant,
    ) -> Result<FromViewer, Refusal> {
        let first = !self.spoke;
        self.spoke = true;
        let Some(body) = body else {
            return Err(policy("empty_screen_message"));
        };
        match body {
            ScreenBody::Decoders(d) => {
                if !first {
                    return Err(policy("decoders_not_first"));
                }
                if d.codecs.len() > MAX_CODECS || d.codecs.iter().any(|c| c.len() > MAX_CODEC_NAME)
                {
                    return Err(policy("invalid_decoders"));
                }
                Ok(FromViewer::Decoders(d.codecs))
            }
            ScreenBody::Ack(a) => match delivered {
                Some(newest) if a.number <= newest => Ok(FromViewer::Ack(a.number)),
                _ => Err(policy("ack_of_unsent_frame")),
            },
            ScreenBody::KeyframeRequest(_) => {
                let due = self
                    .last_keyframe_request
                    .is_none_or(|t| now.saturating_duration_since(t) >= VIEWER_KEYFRAME_INTERVAL);
                if due {
                    self.last_keyframe_request = Some(now);
                    Ok(FromViewer::Keyframe)
                } else {
                    Ok(FromViewer::Drop(Dropped::RateLimited))
                }
            }
            ScreenBody::Configure(c) => {
                if c.monitor > MAX_COORD {
                    return Err(policy("invalid_input"));
                }
                if self.access != Access::Control {
                    return Ok(FromViewer::Drop(Dropped::ViewOnly));
                }
                Ok(FromViewer::Monitor(c.monitor))
            }
            ScreenBody::ReleaseInput(_) => Ok(FromViewer::Release),
            body @ (ScreenBody::Pointer(_)
            | ScreenBody::Key(_)
            | ScreenBody::SpecialKeys(_)
            | ScreenBody::Clipboard(_)) => {
                check_input(&body)?;
                if self.access != Access::Control {
                    return Ok(FromViewer::Drop(Dropped::ViewOnly));
                }
                if !self.bucket.admit(now) {
                    return Ok(FromViewer::Drop(Dropped::RateLimited));
                }
                Ok(FromViewer::Input(stamp(body, self.number)))
            }
            // What only the device or the server sends.
            ScreenBody::Capabilities(_)
            | ScreenBody::Format(_)
            | ScreenBody::Frame(_)
            | ScreenBody::Credit(_)
            | ScreenBody::Cursor(_)
            | ScreenBody::Notice(_) => Err(policy("unexpected_message")),
        }
    }
}

/// The release the device gets for a viewer that left or was demoted.
pub fn release_for(viewer: u32) -> ScreenBody {
    stamp(
        ScreenBody::ReleaseInput(tessera_proto::v1::ReleaseInput::default()),
        viewer,
    )
}

/// A token bucket: `rate` events a second, bursts of up to `rate`.
#[derive(Debug)]
pub struct InputBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl InputBucket {
    pub fn new(rate: u32, now: Instant) -> InputBucket {
        let rate = f64::from(rate.max(1));
        InputBucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the relay does with one message from the device.
#[derive(Clone, Debug, PartialEq)]
pub enum FromDevice {
    /// Its codecs and monitors (answering the channel's open).
    Capabilities,
    /// A new stream format: every viewer gets it; the next frame is a key.
    Format,
    /// A part of a frame: fan out with latest-wins.
    Frame(FramePart),
    /// Cursor shape or a notice: every viewer.
    ToAll,
    /// Clipboard text: control viewers only.
    ToControllers,
}

/// Where one part sits in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramePart {
    pub number: u64,
    pub keyframe: bool,
    /// The frame's first part.
    pub first: bool,
    pub last: bool,
}

/// The device's stream as seen so far, to refuse what is out of order.
#[derive(Debug, Default)]
pub struct DeviceStream {
    format_seen: bool,
    /// The next frame must be a keyframe (none yet, or a new format).
    need_keyframe: bool,
    /// The frame in progress: number, keyframe flag, last part, bytes.
    open: Option<(u64, bool, u32, usize)>,
    last_number: Option<u64>,
    capabilities_seen: bool,
}

impl DeviceStream {
    /// Decides what one message from the device is, or refuses it.
    pub fn judge(&mut self, body: Option<&ScreenBody>) -> Result<FromDevice, Refusal> {
        let Some(body) = body else {
            return Err(policy("empty_screen_message"));
        };
        match body {
            ScreenBody::Capabilities(c) => {
                if c.codecs.len() > MAX_CODECS
                    || c.codecs.iter().any(|x| x.len() > MAX_CODEC_NAME)
                    || c.monitors.len() > MAX_MONITORS
                    || !c.codecs.iter().any(|x| x == RAW_ZSTD)
                {
                    return Err(policy("invalid_capabilities"));
                }
                self.capabilities_seen = true;
                Ok(FromDevice::Capabilities)
            }
            ScreenBody::Format(f) => {
                if !self.capabilities_seen {
                    return Err(policy("format_before_capabilities"));
                }
                if self.open.is_some() {
                    return Err(policy("format_inside_frame"));
                }
                if f.width == 0 || f.height == 0 || f.width > MAX_COORD || f.height > MAX_COORD {
                    return Err(policy("invalid_format"));
                }
                self.format_seen = true;
                self.need_keyframe = true;
                Ok(FromDevice::Format)
            }
            ScreenBody::Frame(f) => self.frame(f).map(FromDevice::Frame),
            ScreenBody::Cursor(c) => {
                let fits = c.width <= MAX_CURSOR
                    && c.height <= MAX_CURSOR
                    && c.rgba.len() as u64 == u64::from(c.width) * u64::from(c.height) * 4
                    && c.hot_x <= c.width
                    && c.hot_y <= c.height;
                if fits {
                    Ok(FromDevice::ToAll)
                } else {
                    Err(policy("invalid_cursor"))
                }
            }
            ScreenBody::Notice(_) => Ok(FromDevice::ToAll),
            ScreenBody::Clipboard(c) => {
                if c.text.len() > MAX_CLIPBOARD {
                    Err(policy("clipboard_too_large"))
                } else {
                    Ok(FromDevice::ToControllers)
                }
            }
            // What only viewers or the server send.
            _ => Err(policy("unexpected_message")),
        }
    }

    fn frame(&mut self, f: &ScreenFrame) -> Result<FramePart, Refusal> {
        if !self.format_seen {
            return Err(policy("frame_before_format"));
        }
        let (number, keyframe, bytes) = match self.open {
            // The next part of the frame in progress.
            Some((number, keyframe, part, bytes)) => {
                if f.number != number || f.part != part + 1 || f.keyframe != keyframe {
                    return Err(policy("frame_out_of_order"));
                }
                (number, keyframe, bytes)
            }
            // A new frame: part 0, numbered after the last, a keyframe if
            // one is due.
            None => {
                if f.part != 0 || self.last_number.is_some_and(|n| f.number <= n) {
                    return Err(policy("frame_out_of_order"));
                }
                if self.need_keyframe && !f.keyframe {
                    return Err(policy("keyframe_expected"));
                }
                (f.number, f.keyframe, 0)
            }
        };
        let bytes = bytes + f.data.len();
        if bytes > MAX_FRAME_BYTES {
            return Err(refuse(1009, "frame_too_large"));
        }
        let first = f.part == 0;
        if first {
            self.last_number = Some(number);
            self.need_keyframe = false;
        }
        self.open = (!f.last_part).then_some((number, keyframe, f.part, bytes));
        Ok(FramePart {
            number,
            keyframe,
            first,
            last: f.last_part,
        })
    }
}

/// How far behind a viewer's queue is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Frames waiting whose first part the viewer's task has not written.
    pub frames: usize,
    pub bytes: usize,
}

impl Backlog {
    fn is_full(self) -> bool {
        self.frames >= MAX_FRAMES_BEHIND || self.bytes >= MAX_BYTES_BEHIND
    }
}

/// What to do with one frame part for one viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartFate {
    Deliver,
    /// Not for this viewer (it skips this frame).
    Skip,
    /// Skip, and the device should send a keyframe so the viewer can
    /// resynchronise.
    SkipAndAskKeyframe,
}

/// One viewer's place in the frame stream: latest-wins.
#[derive(Debug)]
pub struct ViewerFlow {
    /// Frames are skipped until a keyframe starts (a new or lagging viewer).
    awaiting_keyframe: bool,
    /// The frame whose parts are being delivered to it.
    current: Option<u64>,
    /// The newest frame it was sent the first part of.
    delivered: Option<u64>,
    /// Frames it was spared.
    pub skipped: u64,
}

impl Default for ViewerFlow {
    fn default() -> Self {
        ViewerFlow::new()
    }
}

impl ViewerFlow {
    /// A viewer that joined: it waits for a keyframe.
    pub fn new() -> ViewerFlow {
        ViewerFlow {
            awaiting_keyframe: true,
            current: None,
            delivered: None,
            skipped: 0,
        }
    }

    pub fn delivered(&self) -> Option<u64> {
        self.delivered
    }

    /// It was not sent the stream (a codec it cannot decode): when it is,
    /// it starts at a keyframe.
    pub fn await_keyframe(&mut self) {
        self.awaiting_keyframe = true;
        self.current = None;
    }

    /// Decides one part's fate for this viewer, given its backlog.
    pub fn part(&mut self, p: FramePart, backlog: Backlog) -> PartFate {
        if !p.first {
            // A frame begun is finished; one skipped stays skipped.
            if self.current == Some(p.number) {
                if p.last {
                    self.current = None;
                }
                return PartFate::Deliver;
            }
            return PartFate::Skip;
        }
        // A new frame.
        self.current = None;
        if backlog.is_full() {
            self.skipped += 1;
            let ask = !self.awaiting_keyframe || p.keyframe;
            self.awaiting_keyframe = true;
            return if ask {
                PartFate::SkipAndAskKeyframe
            } else {
                PartFate::Skip
            };
        }
        if self.awaiting_keyframe && !p.keyframe {
            self.skipped += 1;
            return PartFate::Skip;
        }
        self.awaiting_keyframe = false;
        self.delivered = Some(p.number);
        if !p.last {
            self.current = Some(p.number);
        }
        PartFate::Deliver
    }
}

/// How long a keyframe request stays outstanding before another may be
/// sent (a paused agent, or one that lost the request, is asked again).
pub const KEYFRAME_RETRY: Duration = Duration::from_secs(2);

/// Keyframe requests to the device: one outstanding at a time.
#[derive(Debug, Default)]
pub struct KeyframeAsk {
    outstanding: Option<Instant>,
}

impl KeyframeAsk {
    /// Whether to send a request now: none is outstanding, or the last
    /// went unanswered for [`KEYFRAME_RETRY`].
    pub fn ask(&mut self, now: Instant) -> bool {
        let due = self
            .outstanding
            .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY);
        if due {
            self.outstanding = Some(now);
        }
        due
    }

    /// A keyframe began: the request is answered.
    pub fn answered(&mut self) {
        self.outstanding = None;
    }
}

/// Acks from viewers, turned into credits for the device.
#[derive(Debug, Default)]
pub struct Credits {
    acked: HashMap<u64, u64>,
    granted: Option<u64>,
}

impl Credits {
    /// Viewer `viewer` drew frame `n`; the credit to send if the fastest
    /// viewer moved on.
    pub fn ack(&mut self, viewer: u64, n: u64) -> Option<u64> {
        let mine = self.acked.entry(viewer).or_insert(n);
        *mine = (*mine).max(n);
        let fastest = self.acked.values().copied().max()?;
        if self.granted.is_none_or(|g| fastest > g) {
            self.granted = Some(fastest);
            Some(fastest)
        } else {
            None
        }
    }

    pub fn forget(&mut self, viewer: u64) {
        self.acked.remove(&viewer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::v1::{
        ClipboardText, CursorShape, KeyInput, KeyframeRequest, PointerInput, ReleaseInput,
        ScreenAck, ScreenCapabilities, ScreenConfigure, ScreenDecoders, ScreenFormat, SpecialKeys,
    };

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn only_protocol_4_agents_serve_screens() {
        assert!(device_serves(SessionChannel::Shell, Some(1)));
        assert!(!device_serves(SessionChannel::Screen, Some(3)));
        assert!(!device_serves(SessionChannel::Screen, None));
        assert!(device_serves(SessionChannel::Screen, Some(4)));
    }

    #[test]
    fn h264_only_when_policy_agent_and_every_viewer_agree() {
        let agent = s(&[H264, RAW_ZSTD]);
        let both = s(&[RAW_ZSTD, H264]);
        let raw = s(&[RAW_ZSTD]);
        assert_eq!(
            choose_codec(CodecPolicy::Raw, &agent, [&both[..]]),
            RAW_ZSTD
        );
        assert_eq!(
            choose_codec(CodecPolicy::PreferH264, &agent, [&both[..]]),
            H264
        );
        assert_eq!(
            choose_codec(CodecPolicy::PreferH264, &agent, [&both[..], &raw[..]]),
            RAW_ZSTD
        );
        assert_eq!(
            choose_codec(CodecPolicy::PreferH264, &raw, [&both[..]]),
            RAW_ZSTD
        );
        assert_eq!("prefer-h264".parse(), Ok(CodecPolicy::PreferH264));
        assert!("h265".parse::<CodecPolicy>().is_err());
    }

    #[test]
    fn the_monitor_is_the_requested_one_else_the_primary() {
        let m = |index, primary| Monitor {
            index,
            primary,
            ..Monitor::default()
        };
        let ms = [m(0, false), m(1, true)];
        assert_eq!(choose_monitor(&ms, None), 1);
        assert_eq!(choose_monitor(&ms, Some(0)), 0);
        assert_eq!(choose_monitor(&ms, Some(9)), 1);
        assert_eq!(choose_monitor(&[], Some(3)), 0);
    }

    fn key(viewer: u32) -> ScreenBody {
        ScreenBody::Key(KeyInput {
            usage: 4,
            keysym: 0x61,
            down: true,
            modifiers: 1,
            viewer,
        })
    }

    #[test]
    fn input_from_a_view_only_viewer_is_dropped() {
        let now = Instant::now();
        let mut v = ViewerRules::new(Access::ViewOnly, 7, 200, now);
        for body in [
            key(0),
            ScreenBody::Pointer(PointerInput::default()),
            ScreenBody::Clipboard(ClipboardText::default()),
            ScreenBody::Configure(ScreenConfigure::default()),
        ] {
            assert_eq!(
                v.judge(Some(body), None, now),
                Ok(FromViewer::Drop(Dropped::ViewOnly))
            );
        }
    }

    #[test]
    fn input_is_stamped_with_the_sender_whatever_it_claims() {
        let now = Instant::now();
        let mut v = ViewerRules::new(Access::Control, 7, 200, now);
        let Ok(FromViewer::Input(ScreenBody::Key(k))) = v.judge(Some(key(99)), None, now) else {
            panic!("forwarded")
        };
        assert_eq!(k.viewer, 7);
        assert_eq!(
            release_for(3),
            ScreenBody::ReleaseInput(ReleaseInput { viewer: 3 })
        );
    }

    #[test]
    fn input_beyond_the_rate_is_dropped_and_the_bucket_refills() {
        let now = Instant::now();
        let mut v = ViewerRules::new(Access::Control, 1, 10, now);
        let mut passed = 0;
        for _ in 0..25 {
            if let Ok(FromViewer::Input(_)) = v.judge(Some(key(0)), None, now) {
                passed += 1;
            }
        }
        assert_eq!(passed, 10, "a burst of one second's worth");
        assert_eq!(
            v.judge(Some(key(0)), None, now),
            Ok(FromViewer::Drop(Dropped::RateLimited))
        );
        let later = now + Duration::from_millis(500);
        let mut again = 0;
        for _ in 0..25 {
            if let Ok(FromViewer::Input(_)) = v.judge(Some(key(0)), None, later) {
                again += 1;
            }
        }
        assert_eq!(again, 5);
    }

    #[test]
    fn malformed_viewer_messages_are_refused() {
        let now = Instant::now();
        let bad = [
            ScreenBody::Pointer(PointerInput {
                x: MAX_COORD + 1,
                ..PointerInput::default()
            }),
            ScreenBody::Pointer(PointerInput {
                buttons: 1 << 9,
                ..PointerInput::default()
            }),
            ScreenBody::Key(KeyInput::default()),
            ScreenBody::Key(KeyInput {
                usage: 0x1_0000,
                ..KeyInput::default()
            }),
            ScreenBody::SpecialKeys(SpecialKeys {
                combo: "rm -rf".into(),
                viewer: 0,
            }),
            ScreenBody::Frame(ScreenFrame::default()),
            ScreenBody::Format(ScreenFormat::default()),
        ];
        for body in bad {
            let mut v = ViewerRules::new(Access::Control, 1, 200, now);
            assert!(v.judge(Some(body.clone()), None, now).is_err(), "{body:?}");
        }
        let mut v = ViewerRules::new(Access::Control, 1, 200, now);
        let big = ScreenBody::Clipboard(ClipboardText {
            text: "x".repeat(MAX_CLIPBOARD + 1),
            viewer: 0,
        });
        assert_eq!(v.judge(Some(big), None, now).unwrap_err().code, 1009);
        assert!(v.judge(None, None, now).is_err());
    }

    #[test]
    fn decoders_come_first_and_once_and_acks_only_for_frames_sent() {
        let now = Instant::now();
        let mut v = ViewerRules::new(Access::Control, 1, 200, now);
        let d = ScreenBody::Decoders(ScreenDecoders {
            codecs: s(&[RAW_ZSTD]),
        });
        assert!(matches!(
            v.judge(Some(d.clone()), None, now),
            Ok(FromViewer::Decoders(_))
        ));
        assert_eq!(
            v.judge(Some(d), None, now).unwrap_err().reason,
            "decoders_not_first"
        );
        let ack = |n| Some(ScreenBody::Ack(ScreenAck { number: n }));
        assert!(v.judge(ack(1), None, now).is_err());
        assert!(v.judge(ack(5), Some(4), now).is_err());
        assert_eq!(v.judge(ack(4), Some(4), now), Ok(FromViewer::Ack(4)));
    }

    #[test]
    fn a_viewers_keyframe_requests_are_spaced() {
        let now = Instant::now();
        let mut v = ViewerRules::new(Access::ViewOnly, 1, 200, now);
        let kf = || Some(ScreenBody::KeyframeRequest(KeyframeRequest {}));
        assert_eq!(v.judge(kf(), None, now), Ok(FromViewer::Keyframe));
        assert_eq!(
            v.judge(kf(), None, now),
            Ok(FromViewer::Drop(Dropped::RateLimited))
        );
        assert_eq!(
            v.judge(kf(), None, now + VIEWER_KEYFRAME_INTERVAL),
            Ok(FromViewer::Keyframe)
        );
    }

    fn caps() -> ScreenBody {
        ScreenBody::Capabilities(ScreenCapabilities {
            codecs: s(&[RAW_ZSTD]),
            monitors: vec![],
        })
    }

    fn format() -> ScreenBody {
        ScreenBody::Format(ScreenFormat {
            codec: RAW_ZSTD.into(),
            width: 64,
            height: 64,
            ..ScreenFormat::default()
        })
    }

    fn frame(number: u64, keyframe: bool, part: u32, last_part: bool) -> ScreenBody {
        ScreenBody::Frame(ScreenFrame {
            number,
            keyframe,
            part,
            last_part,
            data: vec![0; 10].into(),
            ..ScreenFrame::default()
        })
    }

    #[test]
    fn the_device_stream_must_come_in_order() {
        let mut d = DeviceStream::default();
        assert!(d.judge(Some(&format())).is_err(), "format before caps");
        assert_eq!(d.judge(Some(&caps())), Ok(FromDevice::Capabilities));
        assert!(
            d.judge(Some(&frame(1, true, 0, true))).is_err(),
            "frame before format"
        );
        d.judge(Some(&format())).unwrap();
        assert_eq!(
            d.judge(Some(&frame(1, false, 0, true))).unwrap_err().reason,
            "keyframe_expected"
        );
        assert!(d.judge(Some(&frame(1, true, 0, false))).is_ok());
        assert!(d.judge(Some(&frame(1, true, 2, false))).is_err(), "gap");
        let mut d2 = DeviceStream::default();
        d2.judge(Some(&caps())).unwrap();
        d2.judge(Some(&format())).unwrap();
        d2.judge(Some(&frame(1, true, 0, false))).unwrap();
        assert!(d2.judge(Some(&frame(1, true, 1, true))).is_ok());
        assert!(d2.judge(Some(&frame(1, false, 0, true))).is_err(), "replay");
        assert!(d2.judge(Some(&frame(2, false, 0, true))).is_ok());
        assert!(
            d2.judge(Some(&ScreenBody::Ack(ScreenAck { number: 1 })))
                .is_err(),
            "a viewer's message"
        );
        let cursor = ScreenBody::Cursor(CursorShape {
            width: 2,
            height: 2,
            rgba: vec![0; 15].into(),
            ..CursorShape::default()
        });
        assert!(d2.judge(Some(&cursor)).is_err());
    }

    #[test]
    fn a_frame_larger_than_the_cap_is_refused() {
        let mut d = DeviceStream::default();
        d.judge(Some(&caps())).unwrap();
        d.judge(Some(&format())).unwrap();
        let part = |p, last| {
            ScreenBody::Frame(ScreenFrame {
                number: 1,
                keyframe: true,
                part: p,
                last_part: last,
                data: vec![0; 4 << 20].into(),
                ..ScreenFrame::default()
            })
        };
        let mut refused = None;
        for p in 0..20 {
            if let Err(e) = d.judge(Some(&part(p, false))) {
                refused = Some((p, e));
                break;
            }
        }
        assert_eq!(refused.map(|(p, e)| (p, e.code)), Some((16, 1009)));
    }

    fn fp(number: u64, keyframe: bool, first: bool, last: bool) -> FramePart {
        FramePart {
            number,
            keyframe,
            first,
            last,
        }
    }

    #[test]
    fn a_new_viewer_starts_at_a_keyframe() {
        let mut f = ViewerFlow::new();
        let idle = Backlog::default();
        assert_eq!(f.part(fp(5, false, true, true), idle), PartFate::Skip);
        assert_eq!(f.part(fp(6, true, true, true), idle), PartFate::Deliver);
        assert_eq!(f.part(fp(7, false, true, true), idle), PartFate::Deliver);
        assert_eq!(f.delivered(), Some(7));
    }

    #[test]
    fn a_lagging_viewer_skips_whole_frames_until_a_keyframe() {
        let mut f = ViewerFlow::new();
        let idle = Backlog::default();
        let full = Backlog {
            frames: MAX_FRAMES_BEHIND,
            bytes: 0,
        };
        assert_eq!(f.part(fp(1, true, true, true), idle), PartFate::Deliver);
        // Frame 2 begins while there is room: it is delivered whole even
        // if the backlog fills meanwhile.
        assert_eq!(f.part(fp(2, false, true, false), idle), PartFate::Deliver);
        assert_eq!(f.part(fp(2, false, false, true), full), PartFate::Deliver);
        // Frame 3 starts with the backlog full: skipped, keyframe asked.
        assert_eq!(
            f.part(fp(3, false, true, false), full),
            PartFate::SkipAndAskKeyframe
        );
        assert_eq!(f.part(fp(3, false, false, true), idle), PartFate::Skip);
        // Room again, but frame 4 is a delta on a picture it never had.
        assert_eq!(f.part(fp(4, false, true, true), idle), PartFate::Skip);
        assert_eq!(f.part(fp(5, true, true, false), idle), PartFate::Deliver);
        assert_eq!(f.part(fp(5, true, false, true), idle), PartFate::Deliver);
        assert_eq!(f.delivered(), Some(5));
        assert_eq!(f.skipped, 2);
    }

    #[test]
    fn a_keyframe_skipped_for_lag_asks_for_another() {
        let mut f = ViewerFlow::new();
        let full = Backlog {
            frames: 0,
            bytes: MAX_BYTES_BEHIND,
        };
        assert_eq!(
            f.part(fp(1, true, true, true), full),
            PartFate::SkipAndAskKeyframe
        );
        assert_eq!(f.part(fp(2, false, true, true), full), PartFate::Skip);
    }

    #[test]
    fn one_keyframe_request_is_outstanding_at_a_time() {
        let now = Instant::now();
        let mut k = KeyframeAsk::default();
        assert!(k.ask(now));
        assert!(!k.ask(now));
        k.answered();
        assert!(k.ask(now));
        assert!(!k.ask(now + Duration::from_millis(100)));
        assert!(k.ask(now + KEYFRAME_RETRY), "unanswered, asked again");
    }

    #[test]
    fn credits_follow_the_fastest_viewer() {
        let mut c = Credits::default();
        assert_eq!(c.ack(1, 3), Some(3));
        assert_eq!(c.ack(2, 2), None, "a slower viewer does not hold back");
        assert_eq!(c.ack(2, 5), Some(5));
        assert_eq!(c.ack(1, 4), None);
        c.forget(2);
        assert_eq!(c.ack(1, 5), None, "never granted twice");
        assert_eq!(c.ack(1, 6), Some(6));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use prost::Message as _;

        /// A device stream of frames of 1–3 parts, some keyframes.
        fn stream() -> impl Strategy<Value = Vec<(bool, u32, usize)>> {
            prop::collection::vec((any::<bool>(), 1u32..4, 0usize..5), 1..60)
        }

        proptest! {
            #[test]
            fn a_viewer_gets_whole_frames_and_resumes_only_at_keyframes(frames in stream()) {
                let mut flow = ViewerFlow::new();
                let mut given: Vec<(u64, bool, bool)> = Vec::new();
                for (i, (key, parts, behind)) in frames.into_iter().enumerate() {
                    let number = i as u64 + 1;
                    for part in 0..parts {
                        let p = FramePart { number, keyframe: key, first: part == 0, last: part + 1 == parts };
                        let backlog = Backlog { frames: behind, bytes: 0 };
                        if flow.part(p, backlog) == PartFate::Deliver {
                            given.push((number, key, p.last));
                        }
                    }
                }
                // Whole frames: every frame given ends with its last part.
                let mut numbers: Vec<u64> = given.iter().map(|g| g.0).collect();
                numbers.dedup();
                for n in &numbers {
                    prop_assert!(given.iter().any(|g| g.0 == *n && g.2), "frame {n} given whole");
                }
                // The first frame, and the first after any gap, is a keyframe.
                let mut prev: Option<u64> = None;
                for n in numbers {
                    let key = given.iter().find(|g| g.0 == n).map(|g| g.1).unwrap_or(false);
                    if prev.is_none_or(|p| n != p + 1) {
                        prop_assert!(key, "frame {n} after a gap is a keyframe");
                    }
                    prev = Some(n);
                }
            }

            #[test]
            fn any_viewer_bytes_are_judged_without_a_panic_and_input_is_stamped(
                msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..20),
                control in any::<bool>(),
            ) {
                let now = Instant::now();
                let access = if control { Access::Control } else { Access::ViewOnly };
                let mut v = ViewerRules::new(access, 9, 200, now);
                let mut d = DeviceStream::default();
                for m in msgs {
                    let Ok(screen) = tessera_proto::v1::Screen::decode(m.as_slice()) else { continue };
                    let _ = d.judge(screen.body.as_ref());
                    if let Ok(FromViewer::Input(body)) = v.judge(screen.body, Some(3), now) {
                        prop_assert!(control);
                        let stamped = match body {
                            ScreenBody::Pointer(p) => p.viewer,
                            ScreenBody::Key(k) => k.viewer,
                            ScreenBody::SpecialKeys(s) => s.viewer,
                            ScreenBody::Clipboard(c) => c.viewer,
                            _ => 0,
                        };
                        prop_assert_eq!(stamped, 9);
                    }
                }
            }
        }
    }
}
