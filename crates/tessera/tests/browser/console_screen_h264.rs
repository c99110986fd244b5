//! H.264 in the web screen viewer (WebCodecs), in Debian's Chromium,
//! against a server on `--screen-codec prefer-h264`:
//!
//! - with a real agent capturing an Xvfb display, the page declares
//!   `h264` beside `raw-zstd`, the server streams H.264 (its metrics count
//!   h264 frames), and the canvas shows the display within H.264's loss —
//!   a known colour block within a few levels, the whole picture above a
//!   PSNR floor — and follows a change;
//! - a browser without `VideoDecoder` (deleted before the page's scripts
//!   run) declares `raw-zstd` only, and the canvas is the display exactly;
//! - with a device spoken by hand, an H.264 stream the browser cannot show
//!   makes the page ask for a keyframe (a "keyframe" with no IDR picture,
//!   which Chromium's decoder refuses), and when the answer fails too (a
//!   keyframe that decodes to another size than the format's) reconnect
//!   declaring `raw-zstd` only, say so, and show the raw picture that
//!   follows exactly.

use tessera_proto::v1::screen::Body as SB;
use tessera_proto::v1::{ChannelKind, Monitor, ScreenCapabilities, ScreenFormat};
use tessera_proto::Body;
use tessera_screen::{
    psnr, EncodedFrame, Encoder, FramePart, Framebuffer, H264Encoder, RawZstdEncoder, Rect,
};
use tessera_server::relay::CodecPolicy;
use tessera_testkit::{
    screen, screen_body, AgentProcess, HandDevice, Options, TestDevice, TestServer, XTestClient,
    Xvfb,
};

use crate::console_screen::{
    canvas_pixels, noise, screen_session, send_frame, wait_canvas, wait_picture, H, W,
};
use crate::driver::Browser;

/// The display of the H.264 test: odd, so the agent pads to even and the
/// page crops, and not a whole number of macroblocks, so the stream's SPS
/// crops too.
const OW: u32 = 491;
const OH: u32 = 331;

/// The floor for an H.264 picture in the browser against the display: the
/// one `tessera view` meets (tests/it/screen_h264.rs). Chromium 156 shows
/// this display at about 39.6 dB; decoded as BT.709 (a page that does not
/// tell the decoder the stream is BT.601) it falls to about 28 dB.
const MIN_PSNR_DB: f64 = 35.0;
/// How far, per colour channel, a flat block's middle may be from its
/// colour: 2 levels off in Chromium 156, 13 when decoded as BT.709.
const FLAT_TOLERANCE: i32 = 6;

async fn prefer_h264_server() -> TestServer {
    TestServer::start_with(Options {
        configure: Some(Box::new(|c| c.screen_codec = CodecPolicy::PreferH264)),
        ..Options::default()
    })
    .await
}

fn channels(p: u32) -> [i32; 3] {
    [
        (p >> 16) as i32 & 0xFF,
        (p >> 8) as i32 & 0xFF,
        p as i32 & 0xFF,
    ]
}

fn near(a: u32, b: u32) -> bool {
    channels(a)
        .iter()
        .zip(channels(b))
        .all(|(x, y)| (x - y).abs() <= FLAT_TOLERANCE)
}

/// Waits until the canvas is within H.264's loss of `display` and the
/// middle of the flat block at (`x`, `y`) is near `colour`.
async fn wait_close(b: &Browser, display: &[u32], (x, y, colour): (u32, u32, u32), what: &str) {
    let want = Framebuffer::from_pixels(OW, OH, display.to_vec()).expect("picture");
    let mut seen = String::from("no picture");
    for _ in 0..150 {
        if let Some((w, h, px)) = canvas_pixels(b).await {
            if (w, h) == (OW, OH) {
                let middle = px[(y * OW + x) as usize];
                let got = Framebuffer::from_pixels(w, h, px).expect("picture");
                let q = psnr(&want, &got);
                if q >= MIN_PSNR_DB && near(middle, colour) {
                    assert!(
                        q.is_finite(),
                        "an H.264 picture is never exact: was it raw?"
                    );
                    return;
                }
                seen = format!("PSNR {q:.1} dB, block middle {middle:06x} for {colour:06x}");
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "the canvas never showed {what} ({seen}); the page says:\n{}",
        b.text().await
    );
}

async fn screen_state(b: &Browser, field: &str) -> serde_json::Value {
    b.exec(&format!("return window.tesseraScreen.{field};"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prefer_h264_the_page_decodes_h264_through_webcodecs() {
    let x = Xvfb::start_with(OW, OH).expect("Xvfb starts (the xvfb package)");
    let client = XTestClient::open(x.display()).expect("X client");
    client.draw_pattern(11).expect("pattern");
    // A flat block, large enough that 4:2:0 colour and the encoder's
    // blocks leave its middle its own colour.
    let block = (160 + 48, 96 + 32, 0x00C0_3020);
    client.fill(160, 96, 96, 64, block.2).expect("fill");
    let server = prefer_h264_server().await;
    let admin = server.admin().await;
    let dev = TestDevice::enroll(&server, &admin, "kiosk").await;
    let agent = AgentProcess::start_on_display(&server, &dev, x.display()).await;
    let session = screen_session(&admin, "kiosk").await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/sessions/{session}/screen", server.url))
        .await;

    b.wait_until(
        "an H.264 picture on the canvas",
        "return !!window.tesseraScreen && window.tesseraScreen.codec === 'h264' && window.tesseraScreen.frames > 0;",
    )
    .await;
    assert_eq!(
        screen_state(&b, "decoders").await,
        serde_json::json!(["h264", "raw-zstd"]),
        "the page declares h264 beside raw-zstd, as tessera view does"
    );
    let text = b
        .wait_for_text(&format!("Connected to kiosk: {OW}×{OH} in H.264"))
        .await;
    let avc = screen_state(&b, "avc").await;
    assert!(
        avc.as_str().is_some_and(|c| c.starts_with("avc1.42")),
        "the agent's stream is (Constrained) Baseline: {avc}"
    );
    assert!(!text.contains("could not decode"), "{text}");
    let display = client.screenshot().expect("screenshot");
    wait_close(&b, &display, block, "the display").await;

    // A change on the display reaches the canvas (delta frames).
    let moved = (300 + 32, 200 + 32, 0x0020_A0E0);
    client.fill(300, 200, 64, 64, moved.2).expect("fill");
    let display = client.screenshot().expect("screenshot");
    wait_close(&b, &display, moved, "the display after a change").await;
    assert_eq!(
        screen_state(&b, "codec").await,
        serde_json::json!("h264"),
        "no fall back: {}\nagent log:\n{}",
        b.text().await,
        agent.log()
    );

    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tessera_screen_frames_total{codec=\"h264\"}")),
        "the relay carried h264 frames:\n{metrics}"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_webcodecs_declares_raw_only_and_shows_the_display_exactly() {
    let x = Xvfb::start_with(W, H).expect("Xvfb starts (the xvfb package)");
    let client = XTestClient::open(x.display()).expect("X client");
    client.draw_pattern(7).expect("pattern");
    let server = prefer_h264_server().await;
    let admin = server.admin().await;
    let dev = TestDevice::enroll(&server, &admin, "kiosk").await;
    let _agent = AgentProcess::start_on_display(&server, &dev, x.display()).await;
    let session = screen_session(&admin, "kiosk").await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.before_every_page("delete window.VideoDecoder;").await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/sessions/{session}/screen", server.url))
        .await;
    b.wait_for_text(&format!("Connected to kiosk: {W}×{H} in lossless raw-zstd"))
        .await;
    assert_eq!(
        b.exec("return typeof window.VideoDecoder;").await,
        serde_json::json!("undefined")
    );
    assert_eq!(
        screen_state(&b, "decoders").await,
        serde_json::json!(["raw-zstd"])
    );
    assert_eq!(
        screen_state(&b, "h264").await,
        serde_json::json!("no WebCodecs VideoDecoder")
    );
    // Exact: the server kept the stream in raw-zstd for this page.
    let shown = client.screenshot().expect("screenshot");
    wait_canvas(&b, &shown, "the display").await;
    assert_eq!(
        screen_state(&b, "codec").await,
        serde_json::json!("raw-zstd")
    );
    b.close().await;
}

/// What the page says of a decoded picture of another size than the stream's.
const WRONG_SIZE: &str = "a picture of the wrong size";

/// The next `ScreenConfigure` the device is sent, its codec.
async fn configured(dev: &mut HandDevice) -> String {
    dev.next_where(|b| match screen_body(b) {
        Some(SB::Configure(c)) => Some(c.codec.clone()),
        _ => None,
    })
    .await
}

fn format_body(codec: &str, w: u32, h: u32) -> SB {
    SB::Format(ScreenFormat {
        codec: codec.into(),
        monitor: 0,
        width: w,
        height: h,
        reason: String::new(),
    })
}

/// An H.264 keyframe of a `w`×`h` picture, claiming to cover `claimed`.
fn h264_keyframe(w: u32, h: u32, claimed: Rect) -> EncodedFrame {
    let mut frame = H264Encoder::new()
        .expect("OpenH264 starts")
        .encode(&noise(w, h, 9), None, true)
        .expect("encode")
        .expect("a keyframe");
    frame.parts[0].rects = vec![claimed];
    frame
}

/// The NAL units of an Annex B access unit, each with its start code.
fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let starts: Vec<usize> = (0..data.len().saturating_sub(3))
        .filter(|&i| data[i..i + 3] == [0, 0, 1])
        .map(|i| if i > 0 && data[i - 1] == 0 { i - 1 } else { i })
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &a)| &data[a..starts.get(k + 1).copied().unwrap_or(data.len())])
        .collect()
}

fn nal_type(unit: &[u8]) -> u8 {
    let header = unit.iter().position(|&b| b == 1).expect("a start code") + 1;
    unit[header] & 0x1F
}

/// A "keyframe" the decoder itself refuses: a real stream's SPS and PPS
/// followed by a P slice (no IDR picture), flagged as a keyframe.
fn keyframe_without_idr(w: u32, h: u32) -> EncodedFrame {
    let mut enc = H264Encoder::new().expect("OpenH264 starts");
    let first = noise(w, h, 9);
    // A small change, so the encoder makes a P picture (noise all over
    // would be a new IDR).
    let mut px = first.pixels().to_vec();
    px[..8].fill(0x00FF_FFFF);
    let second = Framebuffer::from_pixels(w, h, px).expect("picture");
    let data = |f: EncodedFrame| {
        f.parts
            .into_iter()
            .flat_map(|p| p.data)
            .collect::<Vec<u8>>()
    };
    let key = data(
        enc.encode(&first, None, true)
            .expect("encode")
            .expect("a keyframe"),
    );
    let delta = data(
        enc.encode(&second, None, false)
            .expect("encode")
            .expect("a delta"),
    );
    let mut bytes: Vec<u8> = nal_units(&key)
        .into_iter()
        .filter(|u| matches!(nal_type(u), 7 | 8))
        .flatten()
        .copied()
        .collect();
    let slices: Vec<&[u8]> = nal_units(&delta)
        .into_iter()
        .filter(|u| nal_type(u) == 1)
        .collect();
    assert!(!slices.is_empty(), "the delta has a P slice");
    bytes.extend(slices.into_iter().flatten());
    EncodedFrame {
        keyframe: true,
        copies: Vec::new(),
        parts: vec![FramePart {
            rects: vec![Rect::new(0, 0, w, h)],
            data: bytes,
        }],
    }
}

async fn h264_error(b: &Browser) -> serde_json::Value {
    b.exec("return document.getElementById('screen').getAttribute('data-h264-error');")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_stream_the_browser_cannot_show_makes_the_page_fall_back_to_raw() {
    let (w, h) = (64, 32);
    let server = prefer_h264_server().await;
    let admin = server.admin().await;
    let d = TestDevice::enroll(&server, &admin, "desk").await;
    let mut dev = HandDevice::connect(&server, &d, 4).await;
    let session = screen_session(&admin, "desk").await;
    dev.next_where(|b| match b {
        Body::ChannelOpen(o) if o.kind == ChannelKind::Screen as i32 => Some(()),
        _ => None,
    })
    .await;
    dev.send(screen(
        &session,
        SB::Capabilities(ScreenCapabilities {
            codecs: vec!["h264".into(), "raw-zstd".into()],
            monitors: vec![Monitor {
                index: 0,
                name: "screen".into(),
                width: w,
                height: h,
                primary: true,
                ..Monitor::default()
            }],
        }),
    ))
    .await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/sessions/{session}/screen", server.url))
        .await;
    b.wait_until(
        "the page declared h264",
        "return !!window.tesseraScreen && window.tesseraScreen.access === 'control';",
    )
    .await;
    assert_eq!(
        screen_state(&b, "decoders").await,
        serde_json::json!(["h264", "raw-zstd"])
    );
    while configured(&mut dev).await != "h264" {}

    // A keyframe the browser's decoder refuses (no IDR picture): a
    // keyframe asked for, h264 still offered.
    dev.send(screen(&session, format_body("h264", w, h))).await;
    // The server may configure h264 before the page's decoders reach it
    // (none declared yet); then the page gets the format once they do, and
    // frames from the next keyframe on.
    b.wait_until(
        "the page has the h264 format",
        "return window.tesseraScreen.codec === 'h264';",
    )
    .await;
    send_frame(&mut dev, &session, keyframe_without_idr(w, h), 1).await;
    b.wait_until(
        "the page refused the first H.264 keyframe",
        "return document.getElementById('screen').getAttribute('data-resync') === 'bad_frame_payload';",
    )
    .await;
    let why = h264_error(&b).await;
    assert!(
        why.as_str()
            .is_some_and(|w| !w.is_empty() && w != WRONG_SIZE),
        "the decoder's own error: {why}"
    );
    assert_eq!(
        screen_state(&b, "decoders").await,
        serde_json::json!(["h264", "raw-zstd"]),
        "one failure is not enough to give up"
    );
    // The keyframe that answers decodes to 32×32 in a 64×32 stream: the
    // second failure in a row, and the page gives up on H.264.
    send_frame(
        &mut dev,
        &session,
        h264_keyframe(32, 32, Rect::new(0, 0, w, h)),
        2,
    )
    .await;

    // The page reconnects declaring raw-zstd alone; the server moves the
    // device to raw-zstd for it.
    while configured(&mut dev).await != "raw-zstd" {}
    assert_eq!(h264_error(&b).await, serde_json::json!(WRONG_SIZE));
    assert_eq!(
        screen_state(&b, "decoders").await,
        serde_json::json!(["raw-zstd"])
    );
    dev.send(screen(&session, format_body("raw-zstd", w, h)))
        .await;
    let picture = noise(w, h, 4);
    let key = RawZstdEncoder::new()
        .encode(&picture, None, true)
        .expect("encode")
        .expect("a frame");
    send_frame(&mut dev, &session, key, 3).await;
    wait_picture(&b, &picture, "the raw keyframe after the fall back").await;
    let text = b.text().await;
    assert!(
        text.contains("could not decode the H.264 stream") && text.contains("lossless raw-zstd"),
        "the page says so: {text}"
    );
    b.close().await;
}
