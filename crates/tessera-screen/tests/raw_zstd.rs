//! Property tests: whatever happens on the screen, the viewer's picture
//! equals the captured one after every frame; whatever arrives from the
//! wire, the decoder neither panics nor changes the picture on refusal.

use proptest::prelude::*;
use tessera_screen::{
    CopyRect, Decoder, EncodedFrame, Encoder, FrameAssembler, FramePart, Framebuffer,
    RawZstdDecoder, RawZstdEncoder, Rect,
};

const W: u32 = 200;
const H: u32 = 150;

#[derive(Debug, Clone)]
enum Edit {
    Fill(Rect, u32),
    Scroll { top: u32, rows: u32, by: u32 },
    Move(CopyRect),
    Noise(Rect, u32),
}

fn rect() -> impl Strategy<Value = Rect> {
    (0..W, 0..H)
        .prop_flat_map(|(x, y)| (Just(x), Just(y), 1..=W - x, 1..=H - y))
        .prop_map(|(x, y, w, h)| Rect::new(x, y, w.min(90), h.min(90)))
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (rect(), any::<u32>()).prop_map(|(r, c)| Edit::Fill(r, c)),
        (0..H / 2, 10..H / 2, 1..20u32).prop_map(|(top, rows, by)| Edit::Scroll { top, rows, by }),
        (rect(), 0..W, 0..H).prop_map(|(dst, sx, sy)| Edit::Move(CopyRect {
            src_x: sx,
            src_y: sy,
            dst
        })),
        (rect(), any::<u32>()).prop_map(|(r, s)| Edit::Noise(r, s)),
    ]
}

fn apply(fb: &mut Framebuffer, e: &Edit) -> Option<Rect> {
    match *e {
        Edit::Fill(r, c) => fb.fill(r, c).ok().map(|_| r),
        Edit::Scroll { top, rows, by } => {
            let c = CopyRect {
                src_x: 0,
                src_y: top + by,
                dst: Rect::new(0, top, W, rows),
            };
            fb.copy_within(&c).ok().map(|_| c.dst)
        }
        Edit::Move(c) => fb.copy_within(&c).ok().map(|_| c.dst),
        Edit::Noise(r, seed) => {
            let mut s = seed | 1;
            for y in r.y..r.y + r.height {
                for x in r.x..r.x + r.width {
                    s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    fb.fill(Rect::new(x, y, 1, 1), s >> 8).ok()?;
                }
            }
            Some(r)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn viewer_picture_equals_captured_after_every_frame(
        edits in prop::collection::vec(edit(), 1..12),
        use_damage in any::<bool>(),
        copies in any::<bool>(),
    ) {
        let mut pic = Framebuffer::new(W, H).unwrap();
        pic.fill(Rect::new(10, 10, 50, 40), 0x808080).unwrap();
        let mut enc = RawZstdEncoder::new().with_copy_detection(copies);
        let mut dec = RawZstdDecoder::new();
        let mut view = Framebuffer::new(W, H).unwrap();
        let mut assembler = FrameAssembler::new();
        let mut number = 0;
        let mut damage: Vec<Rect> = Vec::new();
        let mut first = true;
        for e in edits.iter().map(Some).chain([None]) {
            let frame = enc
                .encode(&pic, if use_damage && !first { Some(&damage) } else { None }, false)
                .unwrap();
            first = false;
            damage.clear();
            if let Some(frame) = frame {
                number += 1;
                let mut whole = None;
                for m in frame.into_messages(number, 0) {
                    whole = assembler.push(m).unwrap();
                }
                let whole = whole.unwrap();
                dec.decode(&whole.frame, &mut view).unwrap();
            }
            prop_assert!(view == pic);
            if let Some(e) = e {
                if let Some(r) = apply(&mut pic, e) {
                    damage.push(r);
                }
            }
        }
    }

    #[test]
    fn decoder_refuses_garbage_without_change(
        keyframe in any::<bool>(),
        rects in prop::collection::vec((0..300u32, 0..300u32, 0..300u32, 0..300u32), 0..6),
        copies in prop::collection::vec((0..300u32, 0..300u32, 0..300u32, 0..300u32, 0..300u32, 0..300u32), 0..3),
        data in prop::collection::vec(any::<u8>(), 0..64),
        compress in any::<bool>(),
    ) {
        let mut view = Framebuffer::new(W, H).unwrap();
        view.fill(Rect::new(5, 5, 20, 20), 0xABCDEF).unwrap();
        let before = view.clone();
        let data = if compress { zstd::bulk::compress(&data, 1).unwrap() } else { data };
        let frame = EncodedFrame {
            keyframe,
            copies: copies.into_iter().map(|(sx, sy, x, y, w, h)| CopyRect { src_x: sx, src_y: sy, dst: Rect::new(x, y, w, h) }).collect(),
            parts: vec![FramePart { rects: rects.into_iter().map(|(x, y, w, h)| Rect::new(x, y, w, h)).collect(), data }],
        };
        let mut dec = RawZstdDecoder::new();
        if dec.decode(&frame, &mut view).is_err() {
            prop_assert!(view == before);
        }
    }
}
