//! The encoders alone, on one core. raw-zstd: a 1920×1080 full-frame
//! keyframe (the goal: under 20 ms), and the delta frames of typing
//! and of a scrolling terminal, on synthetic pictures: a desktop of flat
//! areas and text-like glyph rows, and noise (the worst case). H.264:
//! full-screen motion at 1920×1080 (the whole desktop panning and a video
//! area of moving gradients, every frame different everywhere), against the
//! issue's goal of ≥ 28 fps under 4 Mbit/s and under half a core.

use std::time::{Duration, Instant};

use tessera_screen::{
    psnr, CopyRect, Decoder, Encoder, Framebuffer, H264Decoder, H264Encoder, RawZstdDecoder,
    RawZstdEncoder, Rect,
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
        serde_json::json!({ "width": W, "height": H, "frames": frames, "codecs": ["raw-zstd (level 1)", "h264 (openh264, 3.5 Mbit/s target)"] }),
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
    h264_motion(&mut result, &desk, frames)?;
    Ok(result)
}

/// Frame `i` of full-screen motion: `base` panned 6 pixels a frame, with
/// an 800×600 area of gradients moving in three directions.
fn motion_frame(base: &Framebuffer, i: u32) -> anyhow::Result<Framebuffer> {
    let shift = (i * 6 % W) as usize;
    let mut px = Vec::with_capacity((W * H) as usize);
    for y in 0..H {
        let row = base.row(y);
        px.extend_from_slice(&row[shift..]);
        px.extend_from_slice(&row[..shift]);
    }
    for y in 100..700u32 {
        for x in 1000..1800u32 {
            let r = ((x + 3 * i) * 255 / 800) & 0xFF;
            let g = ((y + 2 * i) * 255 / 600) & 0xFF;
            let b = ((x + y + 5 * i) / 4) & 0xFF;
            px[(y * W + x) as usize] = r << 16 | g << 8 | b;
        }
    }
    Ok(Framebuffer::from_pixels(W, H, px)?)
}

/// H.264 on full-screen motion: encode time, CPU, bytes, and the picture
/// quality the viewer gets.
fn h264_motion(result: &mut BenchResult, desk: &Framebuffer, frames: usize) -> anyhow::Result<()> {
    let mut enc = H264Encoder::new().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut dec = H264Decoder::new()?;
    let mut view = Framebuffer::new(W, H)?;
    let (mut times, mut sizes, mut cpu_total, mut worst_psnr) =
        (Vec::new(), Vec::new(), Duration::ZERO, f64::INFINITY);
    let mut decoded = true;
    for i in 0..frames as u32 {
        let picture = motion_frame(desk, i)?;
        let cpu = thread_cpu();
        let start = Instant::now();
        let f = enc
            .encode(&picture, None, i == 0)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(start.elapsed());
        cpu_total += thread_cpu() - cpu;
        let Some(f) = f else {
            decoded = false;
            continue;
        };
        sizes.push(f.data_len());
        decoded &= dec.decode(&f, &mut view).is_ok();
        worst_psnr = worst_psnr.min(psnr(&picture, &view));
    }
    let n = frames.max(1) as f64;
    let cpu_ms = millis(cpu_total) / n;
    let bytes = sizes.iter().sum::<usize>() as f64 / n;
    result.figure(
        "h264 motion encode p50",
        millis(percentile(&mut times, 50.0)),
        "ms",
    );
    result.figure(
        "h264 motion encode p99",
        millis(percentile(&mut times, 99.0)),
        "ms",
    );
    result.figure("h264 motion encode CPU mean", cpu_ms, "ms");
    result.figure("h264 motion bytes per frame", bytes, "B");
    result.figure(
        "h264 motion Mbit/s at 30 fps",
        bytes * 8.0 * 30.0 / 1e6,
        "Mbit/s",
    );
    result.figure(
        "h264 motion core share at 30 fps",
        cpu_ms * 30.0 / 10.0,
        "%",
    );
    result.figure("h264 motion worst PSNR", worst_psnr, "dB");
    result.check("every h264 frame is made and decodes", decoded);
    Ok(())
}
