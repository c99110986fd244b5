//! The picture a viewer keeps, and what it says about the stream: the
//! decoder for the stream's format, the frames applied to the picture, and
//! the frame rate and latency for the title. Pure: no socket, no window.

use std::collections::VecDeque;

use tessera_proto::v1::{Monitor, ScreenFormat};
use tessera_screen::{
    Codec, DecodeError, Decoder, Framebuffer, H264Decoder, RawZstdDecoder, ReceivedFrame,
};

/// The codecs this viewer decodes, in its order of preference (sent in
/// `ScreenDecoders`; the server's policy chooses).
pub(crate) const DECODERS: &[&str] = &["h264", "raw-zstd"];

/// Why a stream cannot be shown.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("the device sends {0}, which this viewer cannot decode")]
    CodecUnsupported(String),
    #[error("the device's screen size is not usable: {0}")]
    BadSize(String),
    #[error("a frame could not be decoded: {0}")]
    Decode(#[from] DecodeError),
}

impl StreamError {
    /// Stable snake_case code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            StreamError::CodecUnsupported(_) => "codec_unsupported",
            StreamError::BadSize(_) => "bad_screen_size",
            StreamError::Decode(e) => e.code(),
        }
    }
}

/// The picture and the decoder that keeps it.
#[derive(Default)]
pub(crate) struct Stream {
    codec: Option<Codec>,
    monitor: u32,
    decoder: Option<Box<dyn Decoder>>,
    picture: Option<Framebuffer>,
    /// The last frame applied to the picture.
    drawn: Option<u64>,
    pub(crate) stats: Stats,
}

impl Stream {
    /// A `ScreenFormat`: a new picture of its size and a fresh decoder; the
    /// next frame is a keyframe.
    pub(crate) fn format(&mut self, f: &ScreenFormat) -> Result<(), StreamError> {
        let codec = Codec::from_name(&f.codec)
            .filter(|c| DECODERS.contains(&c.name()))
            .ok_or_else(|| StreamError::CodecUnsupported(f.codec.clone()))?;
        let picture =
            Framebuffer::new(f.width, f.height).map_err(|e| StreamError::BadSize(e.to_string()))?;
        self.decoder = Some(decoder_for(codec)?);
        self.codec = Some(codec);
        self.monitor = f.monitor;
        self.picture = Some(picture);
        self.drawn = None;
        Ok(())
    }

    /// Applies a whole frame (at `now_us` on this machine's clock); on error
    /// the picture is unchanged and the caller asks for a keyframe.
    pub(crate) fn frame(&mut self, f: &ReceivedFrame, now_us: i64) -> Result<(), StreamError> {
        let (Some(decoder), Some(picture)) = (self.decoder.as_mut(), self.picture.as_mut()) else {
            return Err(DecodeError::NoPicture.into());
        };
        decoder.decode(&f.frame, picture)?;
        self.drawn = Some(f.number);
        self.stats.frame(now_us, f.captured_at_us);
        Ok(())
    }

    pub(crate) fn picture(&self) -> Option<&Framebuffer> {
        self.picture.as_ref().filter(|_| self.drawn.is_some())
    }

    /// The number of the frame the picture shows.
    pub(crate) fn drawn(&self) -> Option<u64> {
        self.drawn
    }

    pub(crate) fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// The index of the monitor the stream shows (from its format).
    pub(crate) fn monitor(&self) -> Option<u32> {
        self.codec.map(|_| self.monitor)
    }
}

/// The index of the monitor after `current` in the device's list (the
/// first after the last); `None` when there is no other to show.
pub(crate) fn next_monitor(monitors: &[Monitor], current: Option<u32>) -> Option<u32> {
    if monitors.len() < 2 {
        return None;
    }
    let at = current.and_then(|c| monitors.iter().position(|m| m.index == c));
    let next = at.map_or(0, |i| (i + 1) % monitors.len());
    monitors.get(next).map(|m| m.index)
}

/// The index of the `n`th monitor (from 1) in the device's list.
pub(crate) fn nth_monitor(monitors: &[Monitor], n: u32) -> Option<u32> {
    let i = usize::try_from(n).ok()?.checked_sub(1)?;
    monitors.get(i).map(|m| m.index)
}

/// Which monitor the title names: (its place from 1, how many, its name),
/// when the device has more than one.
pub(crate) fn monitor_shown(
    monitors: &[Monitor],
    current: Option<u32>,
) -> Option<(usize, usize, &str)> {
    if monitors.len() < 2 {
        return None;
    }
    let at = monitors.iter().position(|m| Some(m.index) == current)?;
    Some((at + 1, monitors.len(), monitors[at].name.as_str()))
}

fn decoder_for(codec: Codec) -> Result<Box<dyn Decoder>, StreamError> {
    match codec {
        Codec::RawZstd => Ok(Box::new(RawZstdDecoder::new())),
        Codec::H264 => Ok(Box::new(H264Decoder::new()?)),
    }
}

/// Frame rate over the last second and the latest capture-to-decode
/// latency (the device's clock against this one's: exact on one machine,
/// skewed by the clocks' difference across two).
#[derive(Default, Debug)]
pub(crate) struct Stats {
    recent: VecDeque<i64>,
    latency_us: Option<i64>,
}

impl Stats {
    fn frame(&mut self, now_us: i64, captured_at_us: i64) {
        self.recent.push_back(now_us);
        while self
            .recent
            .front()
            .is_some_and(|&t| now_us.saturating_sub(t) >= 1_000_000)
        {
            self.recent.pop_front();
        }
        self.latency_us =
            (captured_at_us > 0 && now_us >= captured_at_us).then(|| now_us - captured_at_us);
    }

    /// Frames in the second before `now_us`.
    pub(crate) fn fps(&self, now_us: i64) -> usize {
        self.recent
            .iter()
            .filter(|&&t| now_us.saturating_sub(t) < 1_000_000)
            .count()
    }

    pub(crate) fn latency_ms(&self) -> Option<f64> {
        self.latency_us.map(|us| us as f64 / 1000.0)
    }
}

/// What the window's title says.
pub(crate) struct TitleFacts<'a> {
    pub(crate) device: &'a str,
    pub(crate) codec: Option<Codec>,
    pub(crate) size: Option<(u32, u32)>,
    pub(crate) fps: usize,
    pub(crate) latency_ms: Option<f64>,
    /// The monitor shown, when the device has several: place, count, name.
    pub(crate) monitor: Option<(usize, usize, &'a str)>,
    pub(crate) control: bool,
    pub(crate) captured: bool,
    pub(crate) host_key: &'a str,
    pub(crate) ended: Option<&'a str>,
}

pub(crate) fn title(t: &TitleFacts<'_>) -> String {
    if let Some(why) = t.ended {
        return format!("{} — ended: {why}", t.device);
    }
    let mut s = format!("{} — ", t.device);
    match (t.codec, t.size) {
        (Some(c), Some((w, h))) => s.push_str(&format!("{c} {w}×{h} — {} fps", t.fps)),
        _ => s.push_str("waiting for the picture"),
    }
    if let Some(ms) = t.latency_ms {
        s.push_str(&format!(" — {ms:.0} ms"));
    }
    if let Some((n, of, name)) = t.monitor {
        s.push_str(&format!(" — monitor {n}/{of}"));
        if !name.is_empty() {
            s.push_str(&format!(" {name}"));
        }
        if t.control {
            s.push_str(&format!(" ({}+M: next)", t.host_key));
        }
    }
    if !t.control {
        s.push_str(" — view only");
    } else if t.captured {
        s.push_str(&format!(
            " — keyboard captured ({} gives it back)",
            t.host_key
        ));
    } else {
        s.push_str(&format!(" — {} captures the keyboard", t.host_key));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_screen::{Encoder, RawZstdEncoder};

    fn format(codec: &str, w: u32, h: u32) -> ScreenFormat {
        ScreenFormat {
            codec: codec.into(),
            monitor: 0,
            width: w,
            height: h,
            reason: String::new(),
        }
    }

    fn frames_of(pictures: &[Framebuffer]) -> Vec<ReceivedFrame> {
        let mut enc = RawZstdEncoder::new();
        let mut out = Vec::new();
        for (i, p) in pictures.iter().enumerate() {
            let Some(frame) = enc.encode(p, None, i == 0).unwrap() else {
                continue;
            };
            out.push(ReceivedFrame {
                number: i as u64 + 1,
                captured_at_us: 1_000,
                frame,
            });
        }
        out
    }

    fn pattern(w: u32, h: u32, seed: u32) -> Framebuffer {
        let px = (0..w * h)
            .map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(seed) & 0xFF_FFFF)
            .collect();
        Framebuffer::from_pixels(w, h, px).unwrap()
    }

    #[test]
    fn frames_rebuild_the_picture_exactly() {
        let a = pattern(130, 70, 1);
        let mut b = a.clone();
        b.fill(tessera_screen::Rect::new(10, 10, 20, 5), 0x123456)
            .unwrap();
        let mut s = Stream::default();
        s.format(&format("raw-zstd", 130, 70)).unwrap();
        assert!(s.picture().is_none(), "nothing to show before a frame");
        for f in frames_of(&[a, b.clone()]) {
            s.frame(&f, 2_000).unwrap();
        }
        assert_eq!(s.picture(), Some(&b));
        assert_eq!(s.drawn(), Some(2));
        assert_eq!(s.stats.latency_ms(), Some(1.0));
    }

    #[test]
    fn unknown_codecs_and_sizes_are_refused_with_a_code() {
        let mut s = Stream::default();
        let e = s.format(&format("vp9", 10, 10)).unwrap_err();
        assert_eq!(e.code(), "codec_unsupported");
        let e = s.format(&format("raw-zstd", 0, 10)).unwrap_err();
        assert_eq!(e.code(), "bad_screen_size");
    }

    #[test]
    fn h264_frames_rebuild_the_picture_closely() {
        let (w, h) = (128, 96);
        let a = pattern(w, h, 1);
        let mut b = Framebuffer::new(w, h).unwrap();
        b.fill(tessera_screen::Rect::new(0, 0, 64, 96), 0x2060A0)
            .unwrap();
        let mut enc = tessera_screen::H264Encoder::new().unwrap();
        let mut s = Stream::default();
        s.format(&format("h264", w, h)).unwrap();
        assert_eq!(s.codec(), Some(Codec::H264));
        for (i, p) in [&a, &b].into_iter().enumerate() {
            let frame = enc.encode(p, None, i == 0).unwrap().unwrap();
            let f = ReceivedFrame {
                number: i as u64 + 1,
                captured_at_us: 0,
                frame,
            };
            s.frame(&f, 0).unwrap();
        }
        let q = tessera_screen::psnr(&b, s.picture().unwrap());
        assert!(q >= 35.0, "PSNR {q:.1} dB");
    }

    #[test]
    fn a_frame_before_any_format_is_refused() {
        let f = frames_of(&[pattern(8, 8, 3)]).remove(0);
        let e = Stream::default().frame(&f, 0).unwrap_err();
        assert_eq!(e.code(), "no_keyframe_yet");
    }

    fn monitors(list: &[(u32, &str)]) -> Vec<Monitor> {
        list.iter()
            .map(|&(index, name)| Monitor {
                index,
                name: name.into(),
                ..Monitor::default()
            })
            .collect()
    }

    #[test]
    fn the_next_monitor_cycles_through_the_devices_list() {
        let ms = monitors(&[(0, "a"), (2, "b"), (5, "c")]);
        assert_eq!(next_monitor(&ms, Some(0)), Some(2));
        assert_eq!(next_monitor(&ms, Some(2)), Some(5));
        assert_eq!(
            next_monitor(&ms, Some(5)),
            Some(0),
            "after the last, the first"
        );
        assert_eq!(next_monitor(&ms, None), Some(0));
        assert_eq!(
            next_monitor(&ms, Some(9)),
            Some(0),
            "an unknown one: the first"
        );
        assert_eq!(
            next_monitor(&ms[..1], Some(0)),
            None,
            "one monitor: nothing to cycle"
        );
        assert_eq!(nth_monitor(&ms, 2), Some(2));
        assert_eq!(nth_monitor(&ms, 0), None);
        assert_eq!(nth_monitor(&ms, 4), None);
        assert_eq!(monitor_shown(&ms, Some(5)), Some((3, 3, "c")));
        assert_eq!(monitor_shown(&ms[..1], Some(0)), None, "one: not shown");
        assert_eq!(monitor_shown(&ms, None), None);
    }

    #[test]
    fn fps_counts_the_last_second() {
        let mut st = Stats::default();
        for t in [0, 100_000, 900_000, 1_500_000] {
            st.frame(t, 0);
        }
        assert_eq!(st.fps(1_500_000), 2);
        assert_eq!(st.latency_ms(), None, "no capture time, no latency");
    }

    #[test]
    fn the_title_says_codec_rate_latency_access_and_the_end() {
        let mut t = TitleFacts {
            device: "kiosk",
            codec: Some(Codec::RawZstd),
            size: Some((1280, 800)),
            fps: 30,
            latency_ms: Some(4.2),
            monitor: None,
            control: true,
            captured: true,
            host_key: "Right Ctrl",
            ended: None,
        };
        assert_eq!(
            title(&t),
            "kiosk — raw-zstd 1280×800 — 30 fps — 4 ms — keyboard captured (Right Ctrl gives it back)"
        );
        let ms = monitors(&[(0, "left"), (1, "right")]);
        t.monitor = monitor_shown(&ms, Some(1));
        assert_eq!(
            title(&t),
            "kiosk — raw-zstd 1280×800 — 30 fps — 4 ms — monitor 2/2 right (Right Ctrl+M: next) — keyboard captured (Right Ctrl gives it back)"
        );
        t.control = false;
        assert!(title(&t).ends_with("— monitor 2/2 right — view only"));
        t.ended = Some("ended by an operator");
        assert_eq!(title(&t), "kiosk — ended: ended by an operator");
    }
}
