//! Tessera's screen channel, the parts that need no display: the
//! framebuffer, the `Encoder`/`Decoder` traits, the raw-zstd codec over
//! dirty 64×64 tiles (with copy detection for scrolls and moves), H.264
//! through OpenH264 (`h264`: lossy, for motion), the
//! splitting of frames into parts under the device plane's message cap, and
//! the key table (USB HID usage ↔ evdev code ↔ X keycode) with the modifier
//! bits of `KeyInput`.
//!
//! Nothing here touches X, a socket or a file: the agent captures pixels
//! and injects input, the viewers draw; both call into this crate, and every
//! decision it makes is a plain function tested on its own.
//!
//! Invariants:
//! - a decoder never panics and never writes outside its framebuffer on
//!   any input: untrusted frames get a [`DecodeError`] and leave the picture
//!   as it was;
//! - an encoder's output, applied in order to the viewer's copy of the
//!   previous picture, reproduces the captured picture exactly (raw-zstd is
//!   lossless).

mod codec;
mod framebuffer;
mod geom;
mod h264;
mod i420;
mod motion;
mod parts;
mod raw;

pub use codec::{Codec, DecodeError, Decoder, EncodeError, EncodedFrame, Encoder, FramePart};
pub use framebuffer::{FormatError, Framebuffer, MAX_DIMENSION};
pub use geom::{CopyRect, Rect, TILE};
pub use h264::{psnr, H264Decoder, H264Encoder, H264_MAX_LONG_SIDE, H264_MAX_SHORT_SIDE};
pub use parts::{FrameAssembler, PartError, ReceivedFrame, PART_DATA_BUDGET};
pub use raw::{RawZstdDecoder, RawZstdEncoder, BYTES_PER_PIXEL};
/// The key table is the wire's: it lives in `tessera-proto`, beside the
/// messages that carry its codes.
pub use tessera_proto::keys;
