//! A live screen session's state on this node: what the device reported,
//! the codec and monitor chosen, credits, keyframe requests, and the
//! fan-out of its messages into the viewers' lanes.
//!
//! Each method takes the session's lock once, applies the decisions of
//! [`super::screen`], and returns what the caller must send to the device
//! ([`ScreenOutcome`]); nothing here awaits or touches a socket.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use tessera_proto::v1::screen::Body as ScreenBody;
use tessera_proto::v1::{
    KeyframeRequest, Screen, ScreenCapabilities, ScreenConfigure, ScreenCredit,
};
use tessera_proto::{Body, Envelope};
use tokio::time::Instant;

use super::lane::{Lane, LANE_HARD_LIMIT};
use super::screen::{
    choose_codec, choose_monitor, release_for, Credits, DeviceStream, Dropped, FromDevice,
    FromViewer, KeyframeAsk, PartFate, Refusal, ViewerFlow, ViewerRules, RAW_ZSTD, SCREEN_CHANNEL,
};
use super::{kick, Access, Inner, Kick, LiveSession};

/// The session-wide screen state.
#[derive(Default)]
pub(super) struct ScreenState {
    caps: Option<ScreenCapabilities>,
    stream: DeviceStream,
    /// The codec and monitor the device was last told.
    configured: Option<(&'static str, u32)>,
    requested_monitor: Option<u32>,
    /// The newest capabilities (the monitors a control viewer may choose
    /// from), format and cursor, for viewers who join later.
    caps_msg: Option<Bytes>,
    format: Option<Bytes>,
    cursor: Option<Bytes>,
    /// The codec of the stream now (from the device's format), for metrics.
    codec: Option<&'static str>,
    /// The same, as the device named it: who may be sent the stream.
    format_codec: Option<String>,
    keyframe: KeyframeAsk,
    credits: Credits,
    pub(super) frames: u64,
    pub(super) bytes: u64,
}

/// A viewer's part in a screen session.
pub(super) struct ViewerScreen {
    rules: ViewerRules,
    flow: ViewerFlow,
    /// Unknown until it speaks; then what it said, or raw-zstd only.
    decoders: Option<Vec<String>>,
    /// Whether its lane has the current stream's format (a viewer is sent
    /// a stream only in a codec it decodes).
    has_format: bool,
    lane: Arc<Lane>,
}

impl ViewerScreen {
    pub(super) fn new(access: Access, number: u32, input_per_second: u32) -> ViewerScreen {
        ViewerScreen {
            rules: ViewerRules::new(access, number, input_per_second, Instant::now()),
            flow: ViewerFlow::new(),
            decoders: None,
            has_format: false,
            lane: Arc::new(Lane::default()),
        }
    }

    /// The codecs it declared; none until it speaks. raw-zstd, which
    /// every viewer has, is implied: an undeclared viewer is never sent,
    /// nor makes the device choose, a codec it may not decode.
    fn decoders(&self) -> &[String] {
        self.decoders.as_deref().unwrap_or_default()
    }

    fn decodes(&self, codec: Option<&str>) -> bool {
        codec.is_some_and(|c| c == RAW_ZSTD || self.decoders().iter().any(|d| d == c))
    }

    pub(super) fn lane(&self) -> Arc<Lane> {
        Arc::clone(&self.lane)
    }
}

/// The codec and monitor the server chose, when they changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configured {
    pub codec: &'static str,
    pub monitor: u32,
    /// The channel's first configuration (it opened).
    pub first: bool,
}

/// What one screen message made the relay decide.
#[derive(Debug, Default)]
pub struct ScreenOutcome {
    /// Server → device messages (configure, credit, keyframe request).
    pub notices: Vec<Body>,
    /// Viewer input to forward, in order behind the viewer's earlier input.
    pub input: Option<Body>,
    pub dropped: Option<Dropped>,
    pub configured: Option<Configured>,
    pub keyframes_asked: u64,
    /// Frames skipped for lagging viewers by this message.
    pub skipped: u64,
    /// For a frame part: its codec and size, for the metrics.
    pub frame: Option<(&'static str, usize, bool)>,
}

/// The device's and viewers' codec names, as the metrics' label.
fn codec_label(name: &str) -> &'static str {
    match name {
        RAW_ZSTD => RAW_ZSTD,
        super::screen::H264 => super::screen::H264,
        _ => "other",
    }
}

impl LiveSession {
    pub(super) fn envelope(&self, body: ScreenBody) -> Body {
        Body::Screen(Screen {
            session_id: self.id.clone(),
            channel_id: SCREEN_CHANNEL,
            body: Some(body),
        })
    }

    fn encoded(&self, body: ScreenBody) -> Bytes {
        Envelope::of(self.envelope(body)).encode_to_vec().into()
    }

    /// Asks the device for a keyframe unless a request is outstanding.
    fn ask_keyframe(&self, inner: &mut Inner, out: &mut ScreenOutcome) {
        if inner.screen.keyframe.ask(Instant::now()) {
            out.keyframes_asked += 1;
            out.notices
                .push(self.envelope(ScreenBody::KeyframeRequest(KeyframeRequest {})));
        }
    }

    /// Chooses codec and monitor again; tells the device if they changed.
    fn reconfigure(&self, inner: &mut Inner, out: &mut ScreenOutcome) {
        let Some(caps) = inner.screen.caps.as_ref() else {
            return;
        };
        if inner.viewers.is_empty() {
            return;
        }
        // Those yet to declare do not count here (a viewer declares first
        // thing, so the stream starts in the right codec), but they are
        // sent no stream they may not decode (`has_format`).
        let viewers: Vec<&[String]> = inner
            .viewers
            .values()
            .filter_map(|v| v.screen.as_ref()?.decoders.as_deref())
            .collect();
        let codec = choose_codec(self.screen.policy, &caps.codecs, viewers);
        let monitor = choose_monitor(&caps.monitors, inner.screen.requested_monitor);
        if inner.screen.configured == Some((codec, monitor)) {
            return;
        }
        let first = inner.screen.configured.is_none();
        inner.screen.configured = Some((codec, monitor));
        out.notices
            .push(self.envelope(ScreenBody::Configure(ScreenConfigure {
                codec: codec.to_owned(),
                monitor,
            })));
        out.configured = Some(Configured {
            codec,
            monitor,
            first,
        });
    }

    /// A viewer joined a screen session: it gets the current format and
    /// cursor, and the device a keyframe request (and its configuration,
    /// if this is the first viewer).
    pub(super) fn screen_joined(&self, inner: &mut Inner, viewer_id: u64) -> ScreenOutcome {
        let mut out = ScreenOutcome::default();
        let codec = inner.screen.format_codec.clone();
        if let Some(vs) = inner
            .viewers
            .get_mut(&viewer_id)
            .and_then(|v| v.screen.as_mut())
        {
            if let Some(c) = &inner.screen.caps_msg {
                vs.lane.push(c.clone(), false);
            }
            if let Some(f) = inner
                .screen
                .format
                .as_ref()
                .filter(|_| vs.decodes(codec.as_deref()))
            {
                vs.lane.push(f.clone(), false);
                vs.has_format = true;
            }
            if let Some(c) = &inner.screen.cursor {
                vs.lane.push(c.clone(), false);
            }
        }
        self.reconfigure(inner, &mut out);
        if inner.screen.format.is_some() {
            self.ask_keyframe(inner, &mut out);
        }
        out
    }

    /// One screen message from the device (already checked to be this
    /// session's device).
    pub fn screen_from_device(&self, body: Option<ScreenBody>) -> Result<ScreenOutcome, Refusal> {
        let mut out = ScreenOutcome::default();
        // Encoded once, outside the lock, shared by every viewer's lane.
        let verdict = self.lock().screen.stream.judge(body.as_ref())?;
        let Some(body) = body else {
            return Ok(out);
        };
        let mut inner = self.lock();
        match verdict {
            FromDevice::Capabilities => {
                // Every viewer is told the monitors (a control viewer may
                // ask for another; the window shows which of how many).
                let bytes = self.encoded(body.clone());
                for v in inner.viewers.values() {
                    if let Some(vs) = &v.screen {
                        vs.lane.push(bytes.clone(), false);
                    }
                }
                inner.screen.caps_msg = Some(bytes);
                if let ScreenBody::Capabilities(c) = body {
                    inner.screen.caps = Some(c);
                }
                self.reconfigure(&mut inner, &mut out);
            }
            FromDevice::Format => {
                if let ScreenBody::Format(f) = &body {
                    inner.screen.codec = Some(codec_label(&f.codec));
                    inner.screen.format_codec = Some(f.codec.clone());
                }
                let codec = inner.screen.format_codec.clone();
                let bytes = self.encoded(body);
                inner.screen.format = Some(bytes.clone());
                for v in inner.viewers.values_mut() {
                    if let Some(vs) = &mut v.screen {
                        // One that cannot decode it waits for a stream it
                        // can (the server reconfigures for it).
                        vs.has_format = vs.decodes(codec.as_deref());
                        if vs.has_format {
                            vs.lane.push(bytes.clone(), false);
                        } else {
                            vs.flow.await_keyframe();
                        }
                    }
                }
            }
            FromDevice::Frame(part) => {
                let codec = inner.screen.codec.unwrap_or(RAW_ZSTD);
                let len = match &body {
                    ScreenBody::Frame(f) => f.data.len(),
                    _ => 0,
                };
                if part.first {
                    inner.screen.frames += 1;
                    if part.keyframe {
                        inner.screen.keyframe.answered();
                    }
                }
                inner.screen.bytes += len as u64;
                out.frame = Some((codec, len, part.first));
                let bytes = self.encoded(body);
                let mut ask = false;
                let mut lagging = Vec::new();
                for (id, v) in inner.viewers.iter_mut() {
                    let Some(vs) = v.screen.as_mut().filter(|vs| vs.has_format) else {
                        continue;
                    };
                    match vs.flow.part(part, vs.lane.backlog()) {
                        PartFate::Deliver => {
                            if vs.lane.push(bytes.clone(), part.first) > LANE_HARD_LIMIT {
                                lagging.push(*id);
                            }
                        }
                        PartFate::Skip => out.skipped += u64::from(part.first),
                        PartFate::SkipAndAskKeyframe => {
                            out.skipped += 1;
                            ask = true;
                        }
                    }
                }
                for id in lagging {
                    if let Some(v) = inner.viewers.remove(&id) {
                        kick(&v, Kick::TooSlow);
                    }
                }
                inner.settle();
                if ask {
                    self.ask_keyframe(&mut inner, &mut out);
                }
            }
            FromDevice::ToAll => {
                let is_cursor = matches!(body, ScreenBody::Cursor(_));
                let bytes = self.encoded(body);
                if is_cursor {
                    inner.screen.cursor = Some(bytes.clone());
                }
                for v in inner.viewers.values() {
                    if let Some(vs) = &v.screen {
                        vs.lane.push(bytes.clone(), false);
                    }
                }
            }
            FromDevice::ToControllers => {
                let bytes = self.encoded(body);
                for v in inner.viewers.values() {
                    if let Some(vs) = v.screen.as_ref().filter(|_| v.access == Access::Control) {
                        vs.lane.push(bytes.clone(), false);
                    }
                }
            }
        }
        Ok(out)
    }

    /// One screen message from viewer `viewer_id`.
    pub fn screen_from_viewer(
        &self,
        viewer_id: u64,
        body: Option<ScreenBody>,
        now: Instant,
    ) -> Result<ScreenOutcome, Refusal> {
        let mut out = ScreenOutcome::default();
        let mut inner = self.lock();
        let Some(vs) = inner
            .viewers
            .get_mut(&viewer_id)
            .and_then(|v| v.screen.as_mut())
        else {
            // Dropped from the session meanwhile: its task is ending.
            return Ok(out);
        };
        let delivered = vs.flow.delivered();
        let verdict = vs.rules.judge(body, delivered, now)?;
        if vs.decoders.is_none() && !matches!(verdict, FromViewer::Decoders(_)) {
            vs.decoders = Some(vec![RAW_ZSTD.to_owned()]);
        }
        let number = vs.rules.number;
        match verdict {
            FromViewer::Decoders(d) => {
                vs.decoders = Some(d);
                // It may decode the stream now: it starts at a keyframe.
                let codec = inner.screen.format_codec.clone();
                let format = inner.screen.format.clone();
                let late = match (
                    inner
                        .viewers
                        .get_mut(&viewer_id)
                        .and_then(|v| v.screen.as_mut()),
                    format,
                ) {
                    (Some(vs), Some(f)) if !vs.has_format && vs.decodes(codec.as_deref()) => {
                        vs.lane.push(f, false);
                        vs.has_format = true;
                        vs.flow.await_keyframe();
                        true
                    }
                    _ => false,
                };
                self.reconfigure(&mut inner, &mut out);
                if late && out.configured.is_none() {
                    self.ask_keyframe(&mut inner, &mut out);
                }
            }
            FromViewer::Ack(n) => {
                if let Some(credit) = inner.screen.credits.ack(viewer_id, n) {
                    out.notices
                        .push(self.envelope(ScreenBody::Credit(ScreenCredit { number: credit })));
                }
            }
            FromViewer::Keyframe => self.ask_keyframe(&mut inner, &mut out),
            FromViewer::Monitor(m) => {
                inner.screen.requested_monitor = Some(m);
                self.reconfigure(&mut inner, &mut out);
            }
            FromViewer::Input(body) => out.input = Some(self.envelope(body)),
            FromViewer::Release => out.input = Some(self.envelope(release_for(number))),
            FromViewer::Drop(why) => out.dropped = Some(why),
        }
        Ok(out)
    }

    /// A viewer left a screen session: the device releases what it held
    /// (a control viewer's), the codec may change for those who remain.
    pub fn screen_left(&self, viewer_id: u64, access: Access) -> ScreenOutcome {
        let mut out = ScreenOutcome::default();
        let mut inner = self.lock();
        inner.screen.credits.forget(viewer_id);
        if access == Access::Control {
            out.input = Some(self.envelope(release_for(viewer_number(viewer_id))));
        }
        if inner.ended.is_none() {
            self.reconfigure(&mut inner, &mut out);
        }
        out
    }

    /// The codec and monitor of the screen channel, if it was configured,
    /// and the frames and bytes it carried.
    pub fn screen_summary(&self) -> Option<(&'static str, u32, u64, u64)> {
        let inner = self.lock();
        let (codec, monitor) = inner.screen.configured?;
        Some((codec, monitor, inner.screen.frames, inner.screen.bytes))
    }
}

/// The number a viewer's input is stamped with.
pub fn viewer_number(viewer_id: u64) -> u32 {
    u32::try_from(viewer_id).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::{CodecPolicy, Hub, ToViewer};
    use super::*;
    use tessera_core::kinds::SessionChannel;
    use tessera_proto::v1::{KeyInput, ScreenDecoders, ScreenFormat, ScreenFrame};

    fn session(policy: CodecPolicy) -> Arc<LiveSession> {
        Hub::default()
            .with_screen(super::super::ScreenSettings {
                policy,
                input_per_second: 200,
            })
            .open_channel(
                "s",
                "t",
                "d",
                "desk",
                1,
                Access::Control,
                SessionChannel::Screen,
            )
    }

    fn caps() -> ScreenBody {
        ScreenBody::Capabilities(ScreenCapabilities {
            codecs: vec![RAW_ZSTD.into(), "h264".into()],
            monitors: vec![],
        })
    }

    fn frame(n: u64, key: bool) -> ScreenBody {
        ScreenBody::Frame(ScreenFrame {
            number: n,
            keyframe: key,
            last_part: true,
            data: vec![1; 100].into(),
            ..ScreenFrame::default()
        })
    }

    fn declare(s: &LiveSession, viewer: u64, codecs: &[&str]) -> ScreenOutcome {
        let body = ScreenBody::Decoders(ScreenDecoders {
            codecs: codecs.iter().map(|c| (*c).to_owned()).collect(),
        });
        s.screen_from_viewer(viewer, Some(body), Instant::now())
            .unwrap()
    }

    fn format_of(codec: &str) -> ScreenBody {
        ScreenBody::Format(ScreenFormat {
            codec: codec.into(),
            width: 8,
            height: 8,
            ..ScreenFormat::default()
        })
    }

    /// What a lane holds, decoded, without waiting.
    async fn drain(lane: &Lane) -> Vec<ScreenBody> {
        let mut out = Vec::new();
        while lane.backlog().bytes > 0 {
            out.push(decode(&lane.next().await));
        }
        out
    }

    #[tokio::test]
    async fn h264_is_sent_only_to_viewers_that_declared_it_and_a_raw_viewer_turns_the_session_to_raw(
    ) {
        let s = session(CodecPolicy::PreferH264);
        s.screen_from_device(Some(caps())).unwrap();
        let a = s.join("u1", "l1", Access::Control).unwrap();
        let lane_a = a.lane.clone().unwrap();
        assert_eq!(a.screen.unwrap().configured.unwrap().codec, "h264");
        let out = declare(&s, a.viewer_id, &["h264", RAW_ZSTD]);
        assert!(out.configured.is_none());
        s.screen_from_device(Some(format_of("h264"))).unwrap();
        s.screen_from_device(Some(frame(1, true))).unwrap();
        let got = drain(&lane_a).await;
        assert!(
            matches!(
                &got[..],
                [
                    ScreenBody::Capabilities(_),
                    ScreenBody::Format(_),
                    ScreenBody::Frame(_)
                ]
            ),
            "capabilities, format and keyframe: {got:?}"
        );

        // b joins and has not said what it decodes: nothing of the h264
        // stream reaches it.
        let b = s.join("u2", "l2", Access::ViewOnly).unwrap();
        let lane_b = b.lane.clone().unwrap();
        s.screen_from_device(Some(frame(2, false))).unwrap();
        let got = drain(&lane_b).await;
        assert!(
            matches!(&got[..], [ScreenBody::Capabilities(_)]),
            "the monitors, and nothing of the h264 stream: {got:?}"
        );
        // b declares raw only: the device is told raw-zstd, and the raw
        // stream reaches both.
        let out = declare(&s, b.viewer_id, &[RAW_ZSTD]);
        assert_eq!(out.configured.unwrap().codec, RAW_ZSTD);
        s.screen_from_device(Some(format_of(RAW_ZSTD))).unwrap();
        s.screen_from_device(Some(frame(3, true))).unwrap();
        for lane in [&lane_a, &lane_b] {
            let got = drain(lane).await;
            assert!(
                matches!(&got[..], [.., ScreenBody::Format(f), ScreenBody::Frame(k)] if f.codec == RAW_ZSTD && k.number == 3),
                "{got:?}"
            );
        }
        // b leaves: back to h264 for a.
        s.leave(b.viewer_id);
        let out = s.screen_left(b.viewer_id, Access::ViewOnly);
        assert_eq!(out.configured.unwrap().codec, "h264");
        drop((a.queue, b.queue));
    }

    #[tokio::test]
    async fn a_viewer_declaring_h264_late_gets_the_stream_from_a_keyframe() {
        let s = session(CodecPolicy::PreferH264);
        s.screen_from_device(Some(caps())).unwrap();
        let a = s.join("u1", "l1", Access::Control).unwrap();
        declare(&s, a.viewer_id, &["h264", RAW_ZSTD]);
        s.screen_from_device(Some(format_of("h264"))).unwrap();
        s.screen_from_device(Some(frame(1, true))).unwrap();
        let b = s.join("u2", "l2", Access::ViewOnly).unwrap();
        let lane_b = b.lane.clone().unwrap();
        s.screen_from_device(Some(frame(2, false))).unwrap();
        // b says it decodes h264: it gets the format, and deltas wait for
        // a keyframe (its joining asked for one; one request is
        // outstanding at a time).
        let asked = b.screen.as_ref().unwrap().keyframes_asked;
        let out = declare(&s, b.viewer_id, &["h264"]);
        assert!(out.configured.is_none());
        assert_eq!(asked + out.keyframes_asked, 1);
        s.screen_from_device(Some(frame(3, false))).unwrap();
        s.screen_from_device(Some(frame(4, true))).unwrap();
        let got = drain(&lane_b).await;
        assert!(
            matches!(&got[..], [ScreenBody::Capabilities(_), ScreenBody::Format(f), ScreenBody::Frame(k)] if f.codec == "h264" && k.number == 4),
            "{got:?}"
        );
        drop((a.queue, b.queue));
    }

    fn decode(b: &Bytes) -> ScreenBody {
        match Envelope::decode(b.as_ref()).unwrap().body.unwrap() {
            Body::Screen(s) => s.body.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_viewer_configures_the_device_and_a_late_one_gets_format_and_keyframe() {
        let s = session(CodecPolicy::PreferH264);
        s.screen_from_device(Some(caps())).unwrap();
        let a = s.join("u1", "l1", Access::Control).unwrap();
        let first = a.screen.as_ref().unwrap().configured.clone().unwrap();
        assert!(first.first);
        // a declares raw only: back to raw.
        let out = declare(&s, a.viewer_id, &[RAW_ZSTD]);
        assert_eq!(out.configured.unwrap().codec, RAW_ZSTD);
        let format = ScreenBody::Format(ScreenFormat {
            codec: RAW_ZSTD.into(),
            width: 8,
            height: 8,
            ..ScreenFormat::default()
        });
        s.screen_from_device(Some(format.clone())).unwrap();
        s.screen_from_device(Some(frame(1, true))).unwrap();
        let lane_a = a.lane.clone().unwrap();
        assert_eq!(lane_a.backlog().frames, 1);
        let b = s.join("u2", "l2", Access::ViewOnly).unwrap();
        let joined = b.screen.unwrap();
        assert_eq!(joined.keyframes_asked, 1);
        let lane_b = b.lane.unwrap();
        assert!(lane_b.backlog().bytes > 0, "the format is waiting");
        // Frame 2 is a delta: b skips it, a gets it.
        let out = s.screen_from_device(Some(frame(2, false))).unwrap();
        assert_eq!(out.skipped, 1);
        assert_eq!(lane_a.backlog().frames, 2);
        assert_eq!(lane_b.backlog().frames, 0);
        s.screen_from_device(Some(frame(3, true))).unwrap();
        assert_eq!(lane_b.backlog().frames, 1);
        drop(a.queue);
    }

    #[tokio::test]
    async fn a_stalled_viewer_skips_to_a_keyframe_while_a_fast_one_gets_every_frame() {
        let s = session(CodecPolicy::Raw);
        s.screen_from_device(Some(caps())).unwrap();
        let fast = s.join("u1", "l1", Access::Control).unwrap();
        let slow = s.join("u2", "l2", Access::Control).unwrap();
        let format = ScreenBody::Format(ScreenFormat {
            codec: RAW_ZSTD.into(),
            width: 8,
            height: 8,
            ..ScreenFormat::default()
        });
        s.screen_from_device(Some(format)).unwrap();
        let fast_lane = fast.lane.clone().unwrap();
        let slow_lane = slow.lane.clone().unwrap();
        // Each lane holds the capabilities and the format.
        for lane in [&fast_lane, &slow_lane] {
            let _ = lane.next().await;
            let _ = lane.next().await;
        }
        let mut asked = 0;
        for n in 1..=10 {
            let out = s.screen_from_device(Some(frame(n, n == 1))).unwrap();
            asked += out.keyframes_asked;
            // The fast viewer writes as it goes.
            let ScreenBody::Frame(f) = decode(&fast_lane.next().await) else {
                panic!("a frame")
            };
            assert_eq!(f.number, n);
        }
        assert_eq!(asked, 1, "one request while it lags");
        assert_eq!(
            slow_lane.backlog().frames,
            super::super::screen::MAX_FRAMES_BEHIND
        );
        // The slow viewer catches up: it gets frames 1..3, then nothing
        // until the keyframe.
        let mut got = vec![];
        while slow_lane.backlog().bytes > 0 {
            let ScreenBody::Frame(f) = decode(&slow_lane.next().await) else {
                panic!()
            };
            got.push(f.number);
        }
        assert_eq!(got, vec![1, 2, 3]);
        s.screen_from_device(Some(frame(11, false))).unwrap();
        assert_eq!(slow_lane.backlog().frames, 0, "a delta after a skip");
        s.screen_from_device(Some(frame(12, true))).unwrap();
        let ScreenBody::Frame(f) = decode(&slow_lane.next().await) else {
            panic!()
        };
        assert_eq!((f.number, f.keyframe), (12, true));
        assert!(!slow.kick.is_cancelled());
        drop((fast.queue, slow.queue));
    }

    #[test]
    fn acks_become_credits_and_a_control_viewer_leaving_releases_its_input() {
        let s = session(CodecPolicy::Raw);
        s.screen_from_device(Some(caps())).unwrap();
        let a = s.join("u1", "l1", Access::Control).unwrap();
        let format = ScreenBody::Format(ScreenFormat {
            codec: RAW_ZSTD.into(),
            width: 8,
            height: 8,
            ..ScreenFormat::default()
        });
        s.screen_from_device(Some(format)).unwrap();
        s.screen_from_device(Some(frame(1, true))).unwrap();
        let ack = ScreenBody::Ack(tessera_proto::v1::ScreenAck { number: 1 });
        let out = s
            .screen_from_viewer(a.viewer_id, Some(ack), Instant::now())
            .unwrap();
        assert!(matches!(
            &out.notices[..],
            [Body::Screen(Screen {
                body: Some(ScreenBody::Credit(ScreenCredit { number: 1 })),
                ..
            })]
        ));
        let key = ScreenBody::Key(KeyInput {
            usage: 4,
            keysym: 0x61,
            down: true,
            modifiers: 0,
            viewer: 0,
        });
        let out = s
            .screen_from_viewer(a.viewer_id, Some(key), Instant::now())
            .unwrap();
        assert!(out.input.is_some());
        let out = s.screen_left(a.viewer_id, Access::Control);
        assert!(matches!(
            out.input,
            Some(Body::Screen(Screen { body: Some(ScreenBody::ReleaseInput(r)), .. })) if r.viewer == viewer_number(a.viewer_id)
        ));
        let _: Option<ToViewer> = None;
    }

    #[tokio::test]
    async fn every_viewer_is_told_the_monitors_on_joining_and_when_they_change() {
        let s = session(CodecPolicy::Raw);
        let monitors = |n: u32| {
            ScreenBody::Capabilities(ScreenCapabilities {
                codecs: vec![RAW_ZSTD.into()],
                monitors: (0..n)
                    .map(|index| tessera_proto::v1::Monitor {
                        index,
                        width: 8,
                        height: 8,
                        ..Default::default()
                    })
                    .collect(),
            })
        };
        let a = s.join("u1", "l1", Access::Control).unwrap();
        let lane_a = a.lane.clone().unwrap();
        s.screen_from_device(Some(monitors(2))).unwrap();
        let got = drain(&lane_a).await;
        assert!(
            matches!(&got[..], [ScreenBody::Capabilities(c)] if c.monitors.len() == 2),
            "{got:?}"
        );
        s.screen_from_device(Some(format_of(RAW_ZSTD))).unwrap();
        // A later viewer gets them before the format, and a change reaches both.
        let b = s.join("u2", "l2", Access::ViewOnly).unwrap();
        let lane_b = b.lane.clone().unwrap();
        let got = drain(&lane_b).await;
        assert!(
            matches!(&got[..], [ScreenBody::Capabilities(c), ScreenBody::Format(_)] if c.monitors.len() == 2),
            "{got:?}"
        );
        drain(&lane_a).await;
        s.screen_from_device(Some(monitors(3))).unwrap();
        for lane in [&lane_a, &lane_b] {
            let got = drain(lane).await;
            assert!(
                matches!(&got[..], [ScreenBody::Capabilities(c)] if c.monitors.len() == 3),
                "{got:?}"
            );
        }
        drop((a.queue, b.queue));
    }
}
