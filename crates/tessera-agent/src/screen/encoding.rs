//! Which encoder a screen stream uses, and the fall back from H.264 to
//! raw-zstd.
//!
//! raw-zstd always works; H.264 is offered only when an OpenH264 encoder
//! starts and encodes a probe picture here, and is used only when the
//! server configures it. If it fails mid-session the stream goes on in
//! raw-zstd from a keyframe, and H.264 stays off for the rest of the
//! channel: the agent tells the viewers (`ScreenNotice encoder_failed`, a
//! `ScreenFormat` with reason `encoder_failed`) and the server (its
//! capabilities again, without `h264`), so no one asks for it again.
//!
//! Pure apart from the encoders themselves: the channel thread does the
//! sending.

use tessera_screen::{
    Codec, EncodeError, EncodedFrame, Encoder, Framebuffer, H264Encoder, RawZstdEncoder, Rect,
};

/// A debug-build hook for the tests: with `TESSERA_TEST_H264_FAIL_AFTER=N`
/// the H.264 encoder fails on its (N+1)-th frame. Release builds ignore it.
const FAIL_AFTER_ENV: &str = "TESSERA_TEST_H264_FAIL_AFTER";

#[cfg(debug_assertions)]
fn injected_failure_after() -> Option<u64> {
    std::env::var(FAIL_AFTER_ENV).ok()?.parse().ok()
}

#[cfg(not(debug_assertions))]
fn injected_failure_after() -> Option<u64> {
    None
}

/// What this agent can encode, for the channel's whole life.
#[derive(Debug)]
pub(crate) struct CodecSupport {
    h264: bool,
    fail_after: Option<u64>,
}

impl CodecSupport {
    /// Probes H.264 (an encoder starts and encodes a small picture).
    pub(crate) fn probe() -> CodecSupport {
        let h264 = match H264Encoder::probe() {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(error = %e, "H.264 is not available; offering raw-zstd only");
                false
            }
        };
        CodecSupport {
            h264,
            fail_after: injected_failure_after(),
        }
    }

    #[cfg(test)]
    fn with(h264: bool, fail_after: Option<u64>) -> CodecSupport {
        CodecSupport { h264, fail_after }
    }

    /// The codec names for `ScreenCapabilities`, preferred first.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.h264 {
            out.push(Codec::H264.name().to_owned());
        }
        out.push(Codec::RawZstd.name().to_owned());
        out
    }

    /// The codec to use when the server asks for `wanted` (a wire name):
    /// what it asks if this agent can, else raw-zstd.
    pub(crate) fn choose(&self, wanted: &str) -> Codec {
        match Codec::from_name(wanted) {
            Some(Codec::H264) if self.h264 => Codec::H264,
            _ => Codec::RawZstd,
        }
    }

    /// An encoder for `codec`; H.264 that will not start turns into a
    /// fall back (`Err`, with raw-zstd in its place).
    pub(crate) fn start(&mut self, codec: Codec) -> (Encoding, Option<FellBack>) {
        match codec {
            Codec::RawZstd => (Encoding::raw(), None),
            Codec::H264 => match H264Encoder::new() {
                Ok(e) => (
                    Encoding {
                        encoder: Box::new(e),
                        frames: 0,
                        fail_after: self.fail_after,
                    },
                    None,
                ),
                Err(e) => {
                    self.h264 = false;
                    (Encoding::raw(), Some(FellBack(e.to_string())))
                }
            },
        }
    }

    /// H.264 failed: it is not offered again on this channel.
    pub(crate) fn h264_failed(&mut self) {
        self.h264 = false;
    }
}

/// The stream's encoder.
pub(crate) struct Encoding {
    encoder: Box<dyn Encoder>,
    /// Frames it made (for the test hook).
    frames: u64,
    fail_after: Option<u64>,
}

/// H.264 failed; the stream is raw-zstd from now on. The reason, in words.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FellBack(pub(crate) String);

/// Why a frame could not be made.
#[derive(Debug)]
pub(crate) enum EncodeFailure {
    /// H.264 failed and the encoder is raw-zstd now: send a new format and
    /// a keyframe.
    FellBack(FellBack),
    /// raw-zstd failed (it does not fall back further).
    Raw(EncodeError),
}

impl Encoding {
    pub(crate) fn raw() -> Encoding {
        Encoding {
            encoder: Box::new(RawZstdEncoder::new()),
            frames: 0,
            fail_after: None,
        }
    }

    pub(crate) fn codec(&self) -> Codec {
        self.encoder.codec()
    }

    pub(crate) fn encode(
        &mut self,
        picture: &Framebuffer,
        damage: Option<&[Rect]>,
        keyframe: bool,
    ) -> Result<Option<EncodedFrame>, EncodeFailure> {
        let result = if self.fail_after.is_some_and(|n| self.frames >= n) {
            Err(EncodeError::Encoder(format!(
                "failure injected by {FAIL_AFTER_ENV}"
            )))
        } else {
            self.encoder.encode(picture, damage, keyframe)
        };
        match result {
            Ok(frame) => {
                self.frames += u64::from(frame.is_some());
                Ok(frame)
            }
            Err(e) if self.codec() == Codec::H264 => {
                *self = Encoding::raw();
                Err(EncodeFailure::FellBack(FellBack(e.to_string())))
            }
            Err(e) => Err(EncodeFailure::Raw(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(seed: u32) -> Framebuffer {
        let px = (0..64 * 48)
            .map(|i: u32| (i * 7 + seed) & 0xFF_FFFF)
            .collect();
        Framebuffer::from_pixels(64, 48, px).unwrap()
    }

    #[test]
    fn h264_is_chosen_only_when_asked_for_and_available() {
        let s = CodecSupport::with(true, None);
        assert_eq!(s.names(), vec!["h264", "raw-zstd"]);
        assert_eq!(s.choose("h264"), Codec::H264);
        assert_eq!(s.choose("raw-zstd"), Codec::RawZstd);
        assert_eq!(s.choose("vp9"), Codec::RawZstd);
        let s = CodecSupport::with(false, None);
        assert_eq!(s.names(), vec!["raw-zstd"]);
        assert_eq!(s.choose("h264"), Codec::RawZstd);
    }

    #[test]
    fn an_h264_failure_falls_back_to_raw_which_starts_with_a_keyframe() {
        let mut s = CodecSupport::with(true, Some(2));
        let (mut e, failed) = s.start(Codec::H264);
        assert!(failed.is_none());
        assert_eq!(e.codec(), Codec::H264);
        assert!(e.encode(&picture(0), None, true).unwrap().unwrap().keyframe);
        assert!(e.encode(&picture(1), None, false).unwrap().is_some());
        let Err(EncodeFailure::FellBack(FellBack(why))) = e.encode(&picture(2), None, false) else {
            panic!("the third frame fails over")
        };
        assert!(why.contains(FAIL_AFTER_ENV), "{why}");
        s.h264_failed();
        assert_eq!(e.codec(), Codec::RawZstd);
        assert_eq!(s.names(), vec!["raw-zstd"], "h264 is no longer offered");
        assert_eq!(s.choose("h264"), Codec::RawZstd);
        // raw-zstd goes on, lossless, from a keyframe (the hook is H.264's).
        let p = picture(3);
        let f = e.encode(&p, None, false).unwrap().unwrap();
        assert!(f.keyframe, "a fresh raw encoder starts with a keyframe");
        let mut view = Framebuffer::new(64, 48).unwrap();
        use tessera_screen::Decoder as _;
        tessera_screen::RawZstdDecoder::new()
            .decode(&f, &mut view)
            .unwrap();
        assert_eq!(view, p);
    }
}
