//! A viewer fed what a hostile device (or a broken relay) can send on a
//! screen channel: any sequence of `ScreenFrame` messages, reassembled and
//! decoded with raw-zstd into a small picture. Nothing panics, and a frame
//! refused by the assembler or the decoder leaves the picture unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tessera_proto::v1::ScreenFrame;
use tessera_screen::{Decoder, FrameAssembler, Framebuffer, RawZstdDecoder};

fuzz_target!(|data: &[u8]| {
    let Ok(mut picture) = Framebuffer::new(97, 61) else {
        return;
    };
    let mut assembler = FrameAssembler::new();
    let mut decoder = RawZstdDecoder::new();
    // Length-prefixed messages: one byte of length, then the message.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let Ok(frame) = ScreenFrame::decode(msg) else {
            continue;
        };
        let Ok(Some(whole)) = assembler.push(frame) else {
            continue;
        };
        let before = picture.clone();
        if decoder.decode(&whole.frame, &mut picture).is_err() {
            assert!(picture == before, "a refused frame changed the picture");
        }
    }
});
