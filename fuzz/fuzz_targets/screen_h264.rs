//! A viewer fed what a hostile device (or a broken relay) can send on an
//! H.264 screen stream: a valid keyframe with input bytes mixed into it,
//! then any sequence of `ScreenFrame` messages, reassembled and decoded
//! with the H.264 decoder into a small picture. Nothing panics, and a frame
//! refused by the assembler or the decoder leaves the picture unchanged.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tessera_proto::v1::ScreenFrame;
use tessera_screen::{
    Decoder, EncodedFrame, Encoder, FrameAssembler, Framebuffer, H264Decoder, H264Encoder,
};

const W: u32 = 66;
const H: u32 = 46;

/// A well-formed keyframe of the picture's size, made once.
fn keyframe() -> Option<&'static EncodedFrame> {
    static KEY: OnceLock<Option<EncodedFrame>> = OnceLock::new();
    KEY.get_or_init(|| {
        let px = (0..W * H)
            .map(|i: u32| i.wrapping_mul(2_654_435_761) & 0xFF_FFFF)
            .collect();
        let picture = Framebuffer::from_pixels(W, H, px).ok()?;
        H264Encoder::new().ok()?.encode(&picture, None, true).ok()?
    })
    .as_ref()
}

fn apply(decoder: &mut H264Decoder, frame: &EncodedFrame, picture: &mut Framebuffer) {
    let before = picture.clone();
    if decoder.decode(frame, picture).is_err() {
        assert!(*picture == before, "a refused frame changed the picture");
    }
}

fuzz_target!(|data: &[u8]| {
    let (Ok(mut picture), Ok(mut decoder), Some(key)) =
        (Framebuffer::new(W, H), H264Decoder::new(), keyframe())
    else {
        return;
    };
    // The keyframe with the first input bytes xored in at the position the
    // first two bytes name.
    let (head, mut rest) = data.split_at(data.len().min(34));
    let mut mixed = key.clone();
    if let (Some(part), [a, b, mask @ ..]) = (mixed.parts.first_mut(), head) {
        let at = usize::from(u16::from_le_bytes([*a, *b])) % part.data.len().max(1);
        for (d, m) in part.data.iter_mut().skip(at).zip(mask) {
            *d ^= m;
        }
    }
    apply(&mut decoder, &mixed, &mut picture);
    // Then length-prefixed messages: one byte of length, then the message.
    let mut assembler = FrameAssembler::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let Ok(frame) = ScreenFrame::decode(msg) else {
            continue;
        };
        if let Ok(Some(whole)) = assembler.push(frame) {
            apply(&mut decoder, &whole.frame, &mut picture);
        }
    }
});
