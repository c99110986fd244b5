//! H.264 through OpenH264 (the `openh264` crate, built from its bundled C
//! source): the negotiated upgrade for full-screen motion (docs/PROTOCOL.md,
//! "Screen: h264 payload").
//!
//! A frame is one H.264 access unit in Annex B form (start codes), cut into
//! parts of at most [`PART_DATA_BUDGET`] bytes so every `ScreenFrame` stays
//! under the device plane's 4 MiB cap; the first part names the whole
//! picture as its one rectangle. A keyframe is an IDR picture preceded by its
//! SPS and PPS, so a viewer that starts there needs nothing earlier.
//!
//! H.264 codes 4:2:0 pictures of even size: an odd width or height is padded
//! by repeating the last column or row, and the viewer crops it away.
//! Colours are BT.601: the agent converts with [`crate::i420`] (OpenH264's
//! arithmetic, vectorised, and only where the damage says the picture
//! changed), the viewer with OpenH264's own converter.
//!
//! The decoder is fed bytes from the network: the wrapper checks what it
//! can before OpenH264 sees them (frame shape, no copies, a keyframe first)
//! and checks the decoded size against the stream's format, so a hostile
//! stream gets a [`DecodeError`] and leaves the picture as it was.

use openh264::decoder::{Decoder as OhDecoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder as OhEncoder, EncoderConfig, FrameRate, FrameType,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

use crate::codec::{Codec, DecodeError, Decoder, EncodeError, EncodedFrame, Encoder, FramePart};
use crate::framebuffer::Framebuffer;
use crate::geom::Rect;
use crate::i420::{even, I420};
use crate::parts::PART_DATA_BUDGET;

/// OpenH264 encodes at most 3840×2160 (either way round); larger screens
/// stay on raw-zstd (the encoder refuses them and the agent falls back).
pub const H264_MAX_LONG_SIDE: u32 = 3840;
pub const H264_MAX_SHORT_SIDE: u32 = 2160;

/// The bit rate the encoder aims at: the budget for full-screen
/// motion (under 4 Mbit/s). Screen content at rest costs far less.
const TARGET_BITRATE: u32 = 3_500_000;
/// The frame rate the rate control plans for.
const TARGET_FPS: f32 = 30.0;

/// The H.264 encoder of the agent.
pub struct H264Encoder {
    inner: OhEncoder,
    /// The last picture in I420, of the coded (even) size.
    planes: Option<I420>,
    /// The coded size of the last frame (`None`: nothing encoded yet).
    size: Option<(u32, u32)>,
    started: std::time::Instant,
}

impl H264Encoder {
    /// An encoder for screen content in real time. Fails when OpenH264
    /// cannot be set up.
    pub fn new() -> Result<H264Encoder, EncodeError> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::ScreenContentRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(TARGET_BITRATE))
            .max_frame_rate(FrameRate::from_hz(TARGET_FPS))
            // Every captured change must reach the viewers: no frame is
            // dropped to meet the rate (the credits pace the agent).
            .skip_frames(false)
            .complexity(Complexity::Low)
            // OpenH264 turns these off for screen content anyway, with a warning.
            .adaptive_quantization(false)
            .background_detection(false)
            // One thread: the agent's cost is measured as a share of one core.
            .num_threads(1);
        let inner = OhEncoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| EncodeError::Encoder(e.to_string()))?;
        Ok(H264Encoder {
            inner,
            planes: None,
            size: None,
            started: std::time::Instant::now(),
        })
    }

    /// Whether H.264 works here: an encoder is made and encodes a small
    /// picture. The agent offers `h264` only when this holds.
    pub fn probe() -> Result<(), EncodeError> {
        let mut enc = H264Encoder::new()?;
        let picture = Framebuffer::new(16, 16).map_err(|e| EncodeError::Encoder(e.to_string()))?;
        match enc.encode(&picture, None, true)? {
            Some(f) if f.keyframe && f.data_len() > 0 => Ok(()),
            _ => Err(EncodeError::Encoder(
                "the probe picture produced no keyframe".into(),
            )),
        }
    }

    /// Brings the encoder's planes up to date with `picture`: everything
    /// when `damage` is `None` (or the planes are new), else only the
    /// damaged rectangles, the rest being the previous picture's.
    fn convert(&mut self, picture: &Framebuffer, damage: Option<&[Rect]>) {
        let planes = match self.planes.take() {
            Some(p) if p.fits(picture) => Some(p),
            _ => None,
        };
        let planes = match (planes, damage) {
            (Some(mut p), Some(rects)) => {
                for r in rects {
                    p.convert_rect(picture, *r);
                }
                p
            }
            (planes, _) => {
                let mut p = planes.unwrap_or_else(|| I420::new(picture.width(), picture.height()));
                p.convert_all(picture);
                p
            }
        };
        self.planes = Some(planes);
    }
}

impl Encoder for H264Encoder {
    fn codec(&self) -> Codec {
        Codec::H264
    }

    fn encode(
        &mut self,
        picture: &Framebuffer,
        damage: Option<&[Rect]>,
        keyframe: bool,
    ) -> Result<Option<EncodedFrame>, EncodeError> {
        let (w, h) = (picture.width(), picture.height());
        if w.max(h) > H264_MAX_LONG_SIDE || w.min(h) > H264_MAX_SHORT_SIDE {
            return Err(EncodeError::Encoder(format!(
                "{w}x{h} is larger than H.264 here allows ({H264_MAX_LONG_SIDE}x{H264_MAX_SHORT_SIDE})"
            )));
        }
        let new_size = self.size != Some((even(w), even(h)));
        if !keyframe && !new_size && damage.is_some_and(<[Rect]>::is_empty) {
            return Ok(None);
        }
        if keyframe && !new_size {
            // (A new size re-initialises the encoder, which starts with an IDR.)
            self.inner.force_intra_frame();
        }
        let at = openh264::Timestamp::from_millis(self.started.elapsed().as_millis() as u64);
        // A keyframe or a new size converts the whole picture.
        self.convert(picture, damage.filter(|_| !keyframe && !new_size));
        let Some(planes) = self.planes.as_ref() else {
            return Err(EncodeError::Encoder("no picture converted".into()));
        };
        let (kind, data) = self
            .inner
            .encode_at(planes, at)
            .map(|bits| (bits.frame_type(), bits.to_vec()))
            .map_err(|e| EncodeError::Encoder(e.to_string()))?;
        self.size = Some((even(w), even(h)));
        let is_idr = kind == FrameType::IDR;
        if (keyframe || new_size) && !is_idr {
            return Err(EncodeError::Encoder(format!(
                "a keyframe was asked for and the encoder made {kind:?}"
            )));
        }
        if data.is_empty() || kind == FrameType::Skip {
            return Ok(None);
        }
        Ok(Some(EncodedFrame {
            keyframe: is_idr,
            copies: Vec::new(),
            parts: split(data, picture.bounds()),
        }))
    }
}

/// Cuts an access unit into parts under the message cap; the first names
/// the picture.
fn split(data: Vec<u8>, bounds: Rect) -> Vec<FramePart> {
    let mut parts: Vec<FramePart> = data
        .chunks(PART_DATA_BUDGET)
        .map(|c| FramePart {
            rects: Vec::new(),
            data: c.to_vec(),
        })
        .collect();
    if let Some(first) = parts.first_mut() {
        first.rects.push(bounds);
    }
    parts
}

/// The H.264 decoder of a viewer.
pub struct H264Decoder {
    inner: Option<OhDecoder>,
    has_picture: bool,
    /// RGBA bytes of the last decoded picture (reused).
    rgba: Vec<u8>,
}

impl H264Decoder {
    pub fn new() -> Result<H264Decoder, DecodeError> {
        Ok(H264Decoder {
            inner: Some(fresh_decoder()?),
            has_picture: false,
            rgba: Vec::new(),
        })
    }
}

fn fresh_decoder() -> Result<OhDecoder, DecodeError> {
    OhDecoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new()).map_err(|e| {
        DecodeError::BadPayload {
            part: 0,
            detail: format!("the H.264 decoder did not start: {e}"),
        }
    })
}

fn bad(detail: impl Into<String>) -> DecodeError {
    DecodeError::BadPayload {
        part: 0,
        detail: detail.into(),
    }
}

impl Decoder for H264Decoder {
    fn codec(&self) -> Codec {
        Codec::H264
    }

    fn decode(
        &mut self,
        frame: &EncodedFrame,
        picture: &mut Framebuffer,
    ) -> Result<Rect, DecodeError> {
        if !frame.keyframe && !self.has_picture {
            return Err(DecodeError::NoPicture);
        }
        if !frame.copies.is_empty() {
            return Err(bad("an h264 frame carries no copies"));
        }
        let bounds = picture.bounds();
        let rects: Vec<&Rect> = frame.rects().collect();
        if rects.as_slice() != [&bounds] || frame.parts[0].rects.is_empty() {
            return Err(DecodeError::OutOfBounds(crate::FormatError::OutOfBounds(
                rects.first().copied().copied().unwrap_or_default(),
            )));
        }
        let data: Vec<u8> = frame
            .parts
            .iter()
            .flat_map(|p| p.data.iter().copied())
            .collect();
        if data.is_empty() {
            return Err(bad("empty access unit"));
        }
        let (cw, ch) = (
            even(picture.width()) as usize,
            even(picture.height()) as usize,
        );
        let decoder = match self.inner.as_mut() {
            Some(d) => d,
            None => self.inner.insert(fresh_decoder()?),
        };
        let decoded = match decoder.decode(&data) {
            Ok(Some(yuv)) => {
                if yuv.dimensions() != (cw, ch) {
                    Err(bad(format!(
                        "decoded {:?}, the stream's format is {cw}x{ch}",
                        yuv.dimensions()
                    )))
                } else {
                    self.rgba.resize(cw * ch * 4, 0);
                    yuv.write_rgba8(&mut self.rgba);
                    Ok(())
                }
            }
            Ok(None) => Err(bad("the access unit held no picture")),
            Err(e) => Err(bad(e.to_string())),
        };
        if let Err(e) = decoded {
            // The decoder's references may be broken: start afresh at the
            // next keyframe (the caller asks for one).
            self.inner = None;
            self.has_picture = false;
            return Err(e);
        }
        let (w, h) = (picture.width() as usize, picture.height() as usize);
        let mut pixels = Vec::with_capacity(w * h);
        for row in self.rgba.chunks_exact(cw * 4).take(h) {
            pixels.extend(
                row.chunks_exact(4)
                    .take(w)
                    .map(|p| u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2])),
            );
        }
        *picture = Framebuffer::from_pixels(picture.width(), picture.height(), pixels)?;
        self.has_picture = true;
        Ok(bounds)
    }
}

/// Peak signal-to-noise ratio of `b` against `a` over R, G and B, in dB
/// (infinite when equal): how the tests and the benchmark judge a lossy
/// codec.
pub fn psnr(a: &Framebuffer, b: &Framebuffer) -> f64 {
    let mut sum = 0f64;
    for (p, q) in a.pixels().iter().zip(b.pixels()) {
        for shift in [16, 8, 0] {
            let d = f64::from((p >> shift) as u8) - f64::from((q >> shift) as u8);
            sum += d * d;
        }
    }
    let n = (a.pixels().len().min(b.pixels().len()) * 3).max(1) as f64;
    let mse = sum / n;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parts::FrameAssembler;

    /// Blocks of colour with fine texture and a moving bar: screen-like.
    /// Edges fall on even pixels: 4:2:0 halves the colour resolution, and
    /// a sharp colour edge at an odd position alone costs some 9 dB.
    fn screen(w: u32, h: u32, t: u32) -> Framebuffer {
        let px = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                let block = (x / 40).wrapping_mul(0x9E37_79B9) ^ (y / 30).wrapping_mul(0x85EB_CA6B);
                let bar = x >= 8 * t && x < 8 * t + 60;
                if bar {
                    0x00FF_8800
                } else {
                    (block.wrapping_mul(0x0101_0101) ^ ((x ^ y) & 7)) & 0x00FF_FFFF
                }
            })
            .collect();
        Framebuffer::from_pixels(w, h, px).unwrap()
    }

    fn round_trip(w: u32, h: u32, frames: u32) -> Vec<f64> {
        let mut enc = H264Encoder::new().unwrap();
        let mut dec = H264Decoder::new().unwrap();
        let mut view = Framebuffer::new(w, h).unwrap();
        let mut asm = FrameAssembler::new();
        let mut out = Vec::new();
        for t in 0..frames {
            let p = screen(w, h, t);
            let f = enc.encode(&p, None, t == 0).unwrap().expect("a frame");
            assert_eq!(f.keyframe, t == 0);
            let mut whole = None;
            for m in f.into_messages(u64::from(t) + 1, 0) {
                whole = asm.push(m).unwrap();
            }
            let whole = whole.expect("whole");
            assert_eq!(dec.decode(&whole.frame, &mut view).unwrap(), view.bounds());
            out.push(psnr(&p, &view));
        }
        out
    }

    #[test]
    fn a_round_trip_keeps_the_picture_above_35_db() {
        for q in round_trip(320, 240, 6) {
            assert!(q >= 35.0, "PSNR {q:.1} dB");
        }
    }

    #[test]
    fn odd_sizes_are_padded_and_cropped() {
        for q in round_trip(161, 99, 3) {
            assert!(q >= 35.0, "PSNR {q:.1} dB");
        }
    }

    #[test]
    fn an_unchanged_screen_sends_nothing_and_a_keyframe_is_made_on_request() {
        let mut enc = H264Encoder::new().unwrap();
        let p = screen(64, 64, 0);
        assert!(enc.encode(&p, None, true).unwrap().unwrap().keyframe);
        assert!(enc.encode(&p, Some(&[]), false).unwrap().is_none());
        assert!(!enc.encode(&p, None, false).unwrap().unwrap().keyframe);
        assert!(enc.encode(&p, None, true).unwrap().unwrap().keyframe);
    }

    #[test]
    fn damage_converts_only_what_changed_and_keeps_the_planes_true() {
        let (w, h) = (161, 99);
        let mut enc = H264Encoder::new().unwrap();
        let mut p = screen(w, h, 0);
        assert!(enc.encode(&p, None, true).unwrap().unwrap().keyframe);
        for t in 1..4u32 {
            let changed = [
                Rect::new(8 * t, 3 * t, 21, 13),
                Rect::new(w - 3, h - 2, 3, 2),
            ];
            for r in &changed {
                p.fill(*r, 0x00_30_60_90 + t).unwrap();
            }
            let f = enc.encode(&p, Some(&changed), false).unwrap().unwrap();
            assert!(!f.keyframe);
            let mut whole = I420::new(w, h);
            whole.convert_all(&p);
            let planes = enc.planes.as_ref().unwrap();
            assert!(planes.y() == whole.y() && planes.u() == whole.u() && planes.v() == whole.v());
        }
        // A pixel changed outside the damage is not seen until a keyframe
        // or a frame without damage converts everything again.
        let before = enc.planes.as_ref().unwrap().y().to_vec();
        p.fill(Rect::new(100, 50, 2, 2), 0xFF_FFFF).unwrap();
        enc.encode(&p, Some(&[Rect::new(0, 0, 2, 2)]), false)
            .unwrap();
        assert_eq!(enc.planes.as_ref().unwrap().y(), &before[..]);
        enc.encode(&p, None, false).unwrap();
        assert_ne!(enc.planes.as_ref().unwrap().y(), &before[..]);
        // One more column and row: the same coded size, but the padding
        // is now real pixels, so the damage alone is not trusted.
        let bigger = screen(w + 1, h + 1, 5);
        enc.encode(&bigger, Some(&[Rect::new(0, 0, 2, 2)]), false)
            .unwrap();
        let mut whole = I420::new(w + 1, h + 1);
        whole.convert_all(&bigger);
        assert!(enc.planes.as_ref().unwrap().y() == whole.y());
    }

    #[test]
    fn probe_succeeds_and_oversized_screens_are_refused() {
        H264Encoder::probe().unwrap();
        let big = Framebuffer::new(4096, 64).unwrap();
        assert!(H264Encoder::new()
            .unwrap()
            .encode(&big, None, true)
            .is_err());
    }

    #[test]
    fn a_large_frame_is_split_under_the_part_budget() {
        let parts = split(vec![7; PART_DATA_BUDGET * 2 + 5], Rect::new(0, 0, 8, 8));
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].rects, vec![Rect::new(0, 0, 8, 8)]);
        assert!(parts[1].rects.is_empty() && parts[2].data.len() == 5);
    }

    #[test]
    fn bad_frames_are_refused_and_leave_the_picture() {
        let mut dec = H264Decoder::new().unwrap();
        let mut view = screen(32, 32, 1);
        let before = view.clone();
        let frame = |key: bool, rects: Vec<Rect>, data: Vec<u8>| EncodedFrame {
            keyframe: key,
            copies: Vec::new(),
            parts: vec![FramePart { rects, data }],
        };
        let all = vec![Rect::new(0, 0, 32, 32)];
        let e = dec
            .decode(&frame(false, all.clone(), vec![0, 0, 1]), &mut view)
            .unwrap_err();
        assert_eq!(e.code(), "no_keyframe_yet");
        let e = dec
            .decode(
                &frame(true, vec![Rect::new(0, 0, 8, 8)], vec![1]),
                &mut view,
            )
            .unwrap_err();
        assert_eq!(e.code(), "frame_out_of_bounds");
        let e = dec
            .decode(
                &frame(true, all.clone(), vec![0, 0, 0, 1, 0x67, 0xFF, 0xFF]),
                &mut view,
            )
            .unwrap_err();
        assert_eq!(e.code(), "bad_frame_payload");
        // A valid keyframe of another size is refused too.
        let mut enc = H264Encoder::new().unwrap();
        let other = enc.encode(&screen(64, 32, 0), None, true).unwrap().unwrap();
        let mut f = other.clone();
        f.parts[0].rects = all;
        let e = dec.decode(&f, &mut view).unwrap_err();
        assert_eq!(e.code(), "bad_frame_payload");
        assert_eq!(view, before);
    }
}
