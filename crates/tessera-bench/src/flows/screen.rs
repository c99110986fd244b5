//! The raw-zstd encoder alone, on one core: a 1920×1080 full-frame
//! keyframe (the goal: under 20 ms), and the delta frames of typing
//! and of a scrolling terminal, on synthetic pictures: a desktop of flat
//! areas and text-like glyph rows, and noise (the worst case).

use std::time::{Duration, Instant};

use tessera_screen::{
    CopyRect, Decoder, Encoder, Framebuffer, RawZstdDecoder, RawZstdEncoder, Rect,
};

use crate::result::BenchResult;
use crate::stats::{millis, percentile};

const W: u32 = 1920;
const H: u32 = 1080;

/// A line of 8×16 "glyphs" (a few hundred distinct shapes), dark on light.
fn glyph_line(fb: &mut Framebuffer, x: u32, y: u32, len: u32, rnd: &mut impl FnMut() -> u32) {
    for col in 0..len {
        let glyph = rnd() % 300;
        for gy in 3..14u32 {
            for gx in 1..7u32 {
                let bit = (glyph.wrapping_mul(2_654_435_761) >> ((gy * 8 + gx) % 31)) & 1;
                if bit == 1 {
                    let _ = fb.fill(Rect::new(x + col * 8 + gx, y + gy, 1, 1), 0x2E3440);
                }
            }
        }
    }
}

fn xorshift(seed: u32) -> impl FnMut() -> u32 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    }
}

/// A desktop-like picture: a flat background, two windows with title bars,
/// and a terminal of glyph lines.
fn desktop(seed: u32) -> Framebuffer {
    let mut fb = Framebuffer::new(W, H).expect("1920x1080 is a valid size");
    let ok = |r: Result<(), tessera_screen::FormatError>| r.expect("inside the picture");
    ok(fb.fill(fb.bounds(), 0x2E3440));
    ok(fb.fill(Rect::new(100, 80, 1100, 900), 0xECEFF4));
    ok(fb.fill(Rect::new(100, 80, 1100, 28), 0x5E81AC));
    ok(fb.fill(Rect::new(1250, 200, 600, 700), 0x1D1F21));
    let mut rnd = xorshift(seed);
    for row in 0..50 {
        let len = rnd() % 130;
        glyph_line(&mut fb, 110, 120 + row * 17, len, &mut rnd);
    }
    fb
}

fn noise(seed: u32) -> Framebuffer {
    let mut s = seed | 1;
    let px = (0..W * H)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s & 0xFF_FFFF
        })
        .collect();
    Framebuffer::from_pixels(W, H, px).expect("1920x1080 is a valid size")
}

/// CPU time of this thread so far (from /proc, in clock ticks of 10 ms):
/// on a loaded machine wall time says more about the neighbours than about
/// the encoder, so the mean CPU time per frame is reported too.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis start at the 3rd
    // (state); utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = field(14) + field(15);
    Duration::from_millis(ticks * 10)
}

fn time_keyframes(picture: &Framebuffer, frames: usize) -> (Vec<Duration>, usize, Duration) {
    let mut enc = RawZstdEncoder::new();
    let mut samples = Vec::with_capacity(frames);
    let mut bytes = 0;
    let cpu = thread_cpu();
    for _ in 0..frames {
        let start = Instant::now();
        let f = enc.encode(picture, None, true).ok().flatten();
        samples.push(start.elapsed());
        bytes = f.map(|f| f.data_len()).unwrap_or(0);
    }
    let cpu_per_frame = (thread_cpu() - cpu) / frames.max(1) as u32;
    (samples, bytes, cpu_per_frame)
}

pub(crate) async fn screen_encode(frames: usize) -> anyhow::Result<BenchResult> {
    // Encoding is synchronous and single-threaded: it runs on this thread.
    let mut result = BenchResult::new(
        "screen-encode",
        serde_json::json!({ "width": W, "height": H, "frames": frames, "codec": "raw-zstd", "level": 1 }),
    );
    let desk = desktop(1);
    let (mut t, bytes, cpu) = time_keyframes(&desk, frames);
    result.figure("keyframe desktop encode CPU mean", millis(cpu), "ms");
    result.figure(
        "keyframe desktop encode p50",
        millis(percentile(&mut t, 50.0)),
        "ms",
    );
    result.figure(
        "keyframe desktop encode p99",
        millis(percentile(&mut t, 99.0)),
        "ms",
    );
    result.figure("keyframe desktop bytes", bytes as f64, "B");
    let rough = noise(2);
    let (mut t, bytes, _) = time_keyframes(&rough, frames.min(10));
    result.figure(
        "keyframe noise encode p50",
        millis(percentile(&mut t, 50.0)),
        "ms",
    );
    result.figure("keyframe noise bytes", bytes as f64, "B");

    // Decode of the desktop keyframe (what a viewer spends).
    let mut enc = RawZstdEncoder::new();
    let key = enc
        .encode(&desk, None, true)?
        .ok_or_else(|| anyhow::anyhow!("no keyframe"))?;
    let mut samples = Vec::new();
    let mut exact = true;
    for _ in 0..frames {
        let mut view = Framebuffer::new(W, H)?;
        let start = Instant::now();
        RawZstdDecoder::new().decode(&key, &mut view)?;
        samples.push(start.elapsed());
        exact &= view == desk;
    }
    result.figure(
        "keyframe desktop decode p50",
        millis(percentile(&mut samples, 50.0)),
        "ms",
    );
    result.check("decoded keyframe is pixel-exact", exact);

    // Typing: one glyph cell changes per frame.
    let mut picture = desk.clone();
    let (mut times, mut total) = (Vec::new(), 0usize);
    for i in 0..frames as u32 {
        picture.fill(Rect::new(110 + (i % 120) * 8, 980, 8, 16), 0x2E3440 + i)?;
        let start = Instant::now();
        let f = enc.encode(
            &picture,
            Some(&[Rect::new(110 + (i % 120) * 8, 980, 8, 16)]),
            false,
        )?;
        times.push(start.elapsed());
        total += f.map(|f| f.data_len()).unwrap_or(0);
    }
    result.figure(
        "typing frame encode p50",
        millis(percentile(&mut times, 50.0)),
        "ms",
    );
    result.figure("typing bytes per frame", total as f64 / frames as f64, "B");

    // A terminal scrolling one 17-pixel line per frame (with copy detection).
    let (mut times, mut total, mut copies) = (Vec::new(), 0usize, 0usize);
    let cpu = thread_cpu();
    let term = Rect::new(100, 108, 1100, 872);
    let mut rnd = xorshift(99);
    for i in 0..frames as u32 {
        picture.copy_within(&CopyRect {
            src_x: term.x,
            src_y: term.y + 17,
            dst: Rect::new(term.x, term.y, term.width, term.height - 17),
        })?;
        picture.fill(
            Rect::new(term.x, term.y + term.height - 17, term.width, 17),
            0xECEFF4,
        )?;
        glyph_line(
            &mut picture,
            term.x + 10,
            term.y + term.height - 17,
            20 + i % 100,
            &mut rnd,
        );
        let start = Instant::now();
        let f = enc.encode(&picture, Some(&[term]), false)?;
        times.push(start.elapsed());
        if let Some(f) = f {
            total += f.data_len() + f.copies.len() * 16;
            copies += f.copies.len();
        }
    }
    let cpu = (thread_cpu() - cpu) / frames.max(1) as u32;
    result.figure("scroll frame encode CPU mean", millis(cpu), "ms");
    result.figure(
        "scroll frame encode p50",
        millis(percentile(&mut times, 50.0)),
        "ms",
    );
    result.figure(
        "scroll frame encode p99",
        millis(percentile(&mut times, 99.0)),
        "ms",
    );
    result.figure("scroll bytes per frame", total as f64 / frames as f64, "B");
    result.check("scrolls are sent as copies", copies >= frames);
    Ok(result)
}
