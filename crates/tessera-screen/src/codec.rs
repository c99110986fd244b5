//! What every screen codec shares: its name on the wire, the frame it
//! produces, and the two traits the agent and the viewers program against.

use crate::framebuffer::{FormatError, Framebuffer};
use crate::geom::{CopyRect, Rect};

/// A codec named in `ScreenCapabilities`, `ScreenDecoders`, `ScreenConfigure`
/// and `ScreenFormat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Lossless dirty tiles, zstd-compressed: always available.
    RawZstd,
    /// H.264 Annex B: only when an encoder initialised (not in this crate).
    H264,
}

impl Codec {
    pub const fn name(self) -> &'static str {
        match self {
            Codec::RawZstd => "raw-zstd",
            Codec::H264 => "h264",
        }
    }

    /// The codec a wire name stands for; `None` for names this build does
    /// not know (they are skipped, never an error: a newer peer may offer more).
    pub fn from_name(name: &str) -> Option<Codec> {
        match name {
            "raw-zstd" => Some(Codec::RawZstd),
            "h264" => Some(Codec::H264),
            _ => None,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One part of an encoded frame: the pixels of `rects`, in the codec's
/// payload format (for raw-zstd, one zstd frame; see docs/PROTOCOL.md).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FramePart {
    pub rects: Vec<Rect>,
    pub data: Vec<u8>,
}

/// A whole frame: the copies to apply first, then the parts in order.
/// Every part fits one device-plane message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EncodedFrame {
    pub keyframe: bool,
    pub copies: Vec<CopyRect>,
    pub parts: Vec<FramePart>,
}

impl EncodedFrame {
    /// Bytes of payload (for counters and benchmarks).
    pub fn data_len(&self) -> usize {
        self.parts.iter().map(|p| p.data.len()).sum()
    }

    /// The rectangles whose pixels the frame carries.
    pub fn rects(&self) -> impl Iterator<Item = &Rect> {
        self.parts.iter().flat_map(|p| p.rects.iter())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("compressing the frame failed: {0}")]
    Compress(#[source] std::io::Error),
    #[error("the encoder failed: {0}")]
    Encoder(String),
}

/// Why a frame from the wire was refused. The picture is left as it was.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame for another codec")]
    WrongCodec,
    #[error("frame does not fit the picture: {0}")]
    OutOfBounds(#[from] FormatError),
    #[error("frame is not a keyframe and no picture came before it")]
    NoPicture,
    #[error("frame names more pixels than the picture has room for")]
    TooManyPixels,
    #[error("too many copies or rectangles in one frame")]
    TooManyParts,
    #[error("part {part} does not decompress to its rectangles ({detail})")]
    BadPayload { part: usize, detail: String },
}

impl DecodeError {
    /// Stable snake_case code (for close reasons and logs).
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::WrongCodec => "wrong_codec",
            DecodeError::OutOfBounds(_) => "frame_out_of_bounds",
            DecodeError::NoPicture => "no_keyframe_yet",
            DecodeError::TooManyPixels => "frame_too_large",
            DecodeError::TooManyParts => "frame_too_many_rects",
            DecodeError::BadPayload { .. } => "bad_frame_payload",
        }
    }
}

/// The agent's side of a codec: turns captured pictures into frames.
///
/// An encoder keeps its own model of the picture the viewers hold, so it
/// can send only what changed; `keyframe` (or a new picture size) makes it
/// send the whole picture and start over.
pub trait Encoder: Send {
    fn codec(&self) -> Codec;

    /// Encodes `picture`. `damage` says where it may have changed since the
    /// last call (`None`: anywhere). `Ok(None)` when nothing changed and no
    /// keyframe was asked for: an idle screen sends nothing.
    fn encode(
        &mut self,
        picture: &Framebuffer,
        damage: Option<&[Rect]>,
        keyframe: bool,
    ) -> Result<Option<EncodedFrame>, EncodeError>;
}

/// A viewer's side of a codec: applies whole frames to its picture.
pub trait Decoder: Send {
    fn codec(&self) -> Codec;

    /// Applies `frame` to `picture` and returns the area it changed. On
    /// error `picture` is unchanged.
    fn decode(
        &mut self,
        frame: &EncodedFrame,
        picture: &mut Framebuffer,
    ) -> Result<Rect, DecodeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_round_trip() {
        for c in [Codec::RawZstd, Codec::H264] {
            assert_eq!(Codec::from_name(c.name()), Some(c));
        }
        assert_eq!(Codec::from_name("vp9"), None);
    }
}
