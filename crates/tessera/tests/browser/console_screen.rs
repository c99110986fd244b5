//! The web screen viewer in Chromium against a real agent capturing an
//! Xvfb display on which the test kit's X client drew a known pattern: the
//! canvas shows the display pixel for pixel (read back with getImageData),
//! a change on the display reaches it, keys typed on the page and the
//! "Send keys" menu reach the X client as the key table's keycodes, a click
//! lands where it was made, and the session's end shows in words. A
//! view-only operator's page sends nothing: a control viewer's key is the
//! first the X client sees.

use std::time::Duration;

use fantoccini::Locator;
use tessera_client::screen as client_screen;
use tessera_core::api::CreateSessionRequest;
use tessera_core::roles::Role;
use tessera_proto::v1::screen::Body as SB;
use tessera_proto::v1::{ChannelKind, KeyInput, Monitor, ScreenCapabilities, ScreenFormat};
use tessera_proto::Body;
use tessera_screen::{
    keys, CopyRect, Decoder, EncodedFrame, Encoder, FramePart, Framebuffer, RawZstdDecoder,
    RawZstdEncoder, Rect,
};
use tessera_testkit::{
    screen, screen_body, AgentProcess, HandDevice, TestDevice, TestServer, XInput, XTestClient,
    Xvfb,
};

use crate::driver::Browser;

pub(crate) const W: u32 = 480;
pub(crate) const H: u32 = 320;

/// The canvas's pixels as `0x00RRGGBB`, with its size.
const CANVAS_PIXELS: &str = "var c = document.getElementById('screen');\
    if (!c || c.width < 2) { return null; }\
    var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, out = new Array(c.width * c.height);\
    for (var i = 0; i < out.length; i++) { out[i] = d[4 * i] * 65536 + d[4 * i + 1] * 256 + d[4 * i + 2]; }\
    return [c.width, c.height, out];";

pub(crate) async fn canvas_pixels(b: &Browser) -> Option<(u32, u32, Vec<u32>)> {
    let v = b.exec(CANVAS_PIXELS).await;
    let (w, h, px): (u32, u32, Vec<u32>) = serde_json::from_value(v).ok()?;
    Some((w, h, px))
}

/// Waits until the canvas shows exactly `want` (`W`×`H`).
pub(crate) async fn wait_canvas(b: &Browser, want: &[u32], what: &str) {
    let mut differ = usize::MAX;
    for _ in 0..150 {
        if let Some((w, h, px)) = canvas_pixels(b).await {
            if (w, h) == (W, H) {
                differ = px.iter().zip(want).filter(|(a, b)| a != b).count();
                if differ == 0 {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the canvas never showed {what}: {differ} pixels differ; the page says:\n{}",
        b.text().await
    );
}

fn keys_down(events: &[XInput]) -> Vec<(u8, u32)> {
    events
        .iter()
        .filter_map(|e| match *e {
            XInput::Key {
                keycode,
                keysym,
                down: true,
                ..
            } => Some((keycode, keysym)),
            _ => None,
        })
        .collect()
}

fn keycode(name: &str) -> u8 {
    keys::by_name(name)
        .and_then(|k| k.x_keycode())
        .expect("an X keycode")
}

pub(crate) async fn screen_session(admin: &tessera_client::ApiClient, device: &str) -> String {
    admin
        .create_session(&CreateSessionRequest {
            device: device.to_owned(),
            access: None,
            channel: Some("screen".to_owned()),
        })
        .await
        .expect("a screen session")
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canvas_shows_the_display_exactly_and_control_input_reaches_it() {
    let x = Xvfb::start_with(W, H).expect("Xvfb starts (the xvfb package)");
    let client = XTestClient::open(x.display()).expect("X client");
    client.draw_pattern(11).expect("pattern");
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dev = TestDevice::enroll(&server, &admin, "kiosk").await;
    let agent = AgentProcess::start_on_display(&server, &dev, x.display()).await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/devices/{}", server.url, dev.device_id))
        .await;
    b.click_button("Open the screen").await;
    b.wait_for_text(&format!("Connected to kiosk: {W}×{H}"))
        .await;
    let url = b.client.current_url().await.expect("url");
    assert!(url.path().ends_with("/screen"), "{url}");
    assert!(!url.as_str().contains("token"), "no token in the address");

    // Everything the page loaded came from this server.
    for u in b.loaded_urls().await {
        assert!(u.starts_with(&server.url), "loaded from elsewhere: {u}");
    }

    // Pixel for pixel, the display.
    let shown = client.screenshot().expect("screenshot");
    wait_canvas(&b, &shown, "the display").await;
    // A change on the display reaches the canvas (a delta frame).
    client.fill(40, 30, 50, 20, 0x00C0FFEE).expect("fill");
    let shown = client.screenshot().expect("screenshot");
    wait_canvas(&b, &shown, "the display after a change").await;

    // Keys typed on the picture arrive by physical key, with the keysym.
    let canvas = b
        .client
        .find(Locator::Css("#screen"))
        .await
        .expect("the canvas");
    client.clear_events();
    canvas.send_keys("a").await.expect("type");
    let a = keycode("a");
    let arrived = client.wait_for(Duration::from_secs(10), |e| {
        keys_down(e).contains(&(a, 0x61))
    });
    assert!(
        arrived,
        "the X client got {:?}\nagent log:\n{}",
        client.events(),
        agent.log()
    );

    // A click lands where it was made (the canvas is at the display's own
    // size here, so its middle is the display's middle).
    client.clear_events();
    canvas.click().await.expect("click");
    let clicked = client.wait_for(Duration::from_secs(10), |e| {
        e.iter().any(|e| {
            matches!(*e, XInput::Button { button: 1, down: true, x: px, y: py }
                if (i32::from(px) - (W / 2) as i32).abs() <= 2 && (i32::from(py) - (H / 2) as i32).abs() <= 2)
        })
    });
    assert!(clicked, "the X client got {:?}", client.events());

    // The wheel scrolls: up is X button 4 (a negative notch on the wire,
    // ten bytes of varint the relay must accept), down is 5.
    client.clear_events();
    b.exec(
        "var c = document.getElementById('screen'), r = c.getBoundingClientRect();\
         [-120, 120].forEach(function (d) { c.dispatchEvent(new WheelEvent('wheel', {deltaY: d,\
           clientX: r.left + 10, clientY: r.top + 10, bubbles: true, cancelable: true})); });\
         return true;",
    )
    .await;
    let scrolled = client.wait_for(Duration::from_secs(10), |e| {
        let presses: Vec<u8> = e
            .iter()
            .filter_map(|e| match *e {
                XInput::Button {
                    button, down: true, ..
                } => Some(button),
                _ => None,
            })
            .collect();
        presses == [4, 5]
    });
    assert!(scrolled, "the X client got {:?}", client.events());

    // Shift+b typed on the page: Shift, then b with its keysym B.
    client.clear_events();
    canvas.send_keys("B").await.expect("type");
    let (shift, bk) = (keycode("shift_left"), keycode("b"));
    let typed = client.wait_for(Duration::from_secs(10), |e| {
        keys_down(e) == [(shift, 0xFFE1), (bk, 0x42)]
    });
    assert!(typed, "the X client got {:?}", client.events());

    // The "Send keys" menu sends Ctrl+Alt+Delete.
    client.clear_events();
    b.client
        .find(Locator::Css("#send-keys summary"))
        .await
        .expect("the menu")
        .click()
        .await
        .expect("open the menu");
    b.click_button("Send Ctrl+Alt+Delete").await;
    let (ctrl, alt, del) = (
        keycode("control_left"),
        keycode("alt_left"),
        keycode("delete"),
    );
    let combo = client.wait_for(Duration::from_secs(10), |e| {
        let d: Vec<u8> = keys_down(e).into_iter().map(|(k, _)| k).collect();
        d.starts_with(&[ctrl, alt, del])
    });
    assert!(combo, "the X client got {:?}", client.events());

    // Scale to fit: at 390 px the picture shrinks to the page, and the page
    // never scrolls sideways; unticked, the picture is at its own size
    // (inside its own scrolling frame). Screenshots for the README when
    // asked (scripts/screenshots.sh).
    let shots = std::env::var_os("TESSERA_SCREENSHOTS").map(std::path::PathBuf::from);
    for (width, height) in [(1280u32, 900u32), (390, 844)] {
        b.client
            .set_window_size(width, height)
            .await
            .expect("window size");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fits = b
            .exec("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
            .await;
        assert_eq!(
            fits,
            serde_json::json!(true),
            "sideways scroll at {width} px"
        );
        let shown = b
            .exec("return document.getElementById('screen').getBoundingClientRect().width;")
            .await
            .as_f64()
            .expect("a width");
        if width == 390 {
            assert!(shown < f64::from(W), "scaled to fit: {shown}");
        }
        if let Some(dir) = &shots {
            std::fs::create_dir_all(dir).expect("screenshot dir");
            let png = b.client.screenshot().await.expect("screenshot");
            std::fs::write(dir.join(format!("screen-{width}.png")), png).expect("write png");
        }
    }
    b.client
        .find(Locator::Css("#screen-fit"))
        .await
        .expect("the scale checkbox")
        .click()
        .await
        .expect("untick");
    let shown = b
        .exec("return document.getElementById('screen').getBoundingClientRect().width;")
        .await
        .as_f64()
        .expect("a width");
    assert_eq!(shown, f64::from(W), "its own size");

    // The session ends: the page says why, in words.
    admin
        .end_session(url.path().split('/').nth(2).expect("the id"))
        .await
        .expect("end");
    let text = b.wait_for_text("The session ended").await;
    assert!(text.contains("ended by admin"), "{text}");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_only_operators_screen_page_sends_nothing() {
    let x = Xvfb::start_with(W, H).expect("Xvfb starts (the xvfb package)");
    let client = XTestClient::open(x.display()).expect("X client");
    client.draw_pattern(5).expect("pattern");
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dev = TestDevice::enroll(&server, &admin, "watched").await;
    let _agent = AgentProcess::start_on_display(&server, &dev, x.display()).await;
    server.user(&admin, "vera", Role::Viewer).await;
    let session = screen_session(&admin, "watched").await;

    let b = Browser::start().await;
    b.sign_in(&server.url, "vera", "vera-password-123").await;
    b.goto(&format!("{}/sessions", server.url)).await;
    let list = b.wait_for_text("watched").await;
    assert!(list.contains("Watch screen (view only)"), "{list}");
    b.click_link("Watch screen (view only)").await;
    b.wait_for_text("(view only).").await;
    let page = b.text().await;
    assert!(page.contains("View only: you can watch"), "{page}");
    assert!(!page.contains("Send keys"), "no key menu: {page}");
    assert!(!page.contains("End session"), "{page}");
    let shown = client.screenshot().expect("screenshot");
    wait_canvas(&b, &shown, "the display").await;

    // The viewer types and clicks: nothing is sent, nothing arrives.
    client.clear_events();
    let canvas = b
        .client
        .find(Locator::Css("#screen"))
        .await
        .expect("the canvas");
    let _ = canvas.send_keys("q").await;
    let _ = canvas.click().await;
    assert_eq!(
        b.exec("return window.tesseraScreen.sent;").await,
        serde_json::json!(0),
        "the page sent input"
    );
    // A control viewer's key is the first input the X client gets.
    let token = admin.viewer_token(&session).await.expect("token").token;
    let (mut tx, _rx, joined) = client_screen::connect(&admin, &session, &token, &["raw-zstd"])
        .await
        .expect("joined");
    assert!(joined.may_control());
    let b_key = keys::by_name("b").expect("b");
    assert!(tx
        .key(KeyInput {
            usage: b_key.usage,
            keysym: 0x62,
            down: true,
            ..KeyInput::default()
        })
        .await
        .expect("sent"));
    let bc = keycode("b");
    assert!(client.wait_for(Duration::from_secs(10), |e| {
        keys_down(e).iter().any(|(k, _)| *k == bc)
    }));
    let events = client.events();
    assert!(
        !events.iter().any(|e| matches!(e, XInput::Button { .. })),
        "the viewer's click arrived: {events:?}"
    );
    assert_eq!(
        keys_down(&events).first().map(|(k, _)| *k),
        Some(bc),
        "the viewer's key arrived first: {events:?}"
    );
    b.close().await;
}

/// A picture of noise (it does not compress).
pub(crate) fn noise(w: u32, h: u32, seed: u32) -> Framebuffer {
    let mut x: u32 = 0x1234_5678 ^ seed;
    let px = (0..w * h)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x & 0xFF_FFFF
        })
        .collect();
    Framebuffer::from_pixels(w, h, px).expect("picture")
}

/// Waits until the canvas shows exactly `want`.
pub(crate) async fn wait_picture(b: &Browser, want: &Framebuffer, what: &str) {
    let mut last = None;
    for _ in 0..150 {
        if let Some((w, h, px)) = canvas_pixels(b).await {
            if (w, h) == (want.width(), want.height()) && px == want.pixels() {
                return;
            }
            last = Some((w, h));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the canvas never showed {what} (it is {last:?}); the page says:\n{}",
        b.text().await
    );
}

pub(crate) async fn send_frame(
    dev: &mut HandDevice,
    session: &str,
    frame: EncodedFrame,
    number: u64,
) {
    for part in frame.into_messages(number, 1) {
        dev.send(screen(session, SB::Frame(part))).await;
    }
}

/// The device's next keyframe request, skipping acks' credits.
async fn keyframe_requested(dev: &mut HandDevice) {
    dev.next_where(|b| match screen_body(b) {
        Some(SB::KeyframeRequest(_)) => Some(()),
        _ => None,
    })
    .await;
}

/// With a device spoken by hand: an overlapping copy is applied as the
/// codec crate's own decoder applies it; a frame whose payload is not zstd,
/// or whose rectangle lies outside the picture, leaves the picture as it
/// was and makes the page ask for a keyframe, which then draws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_applies_copies_and_refuses_bad_frames_keeping_its_picture() {
    let (w, h) = (64, 32);
    let server = TestServer::start().await;
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
            codecs: vec!["raw-zstd".into()],
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
    let configure = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::Configure(c)) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        configure.codec, "raw-zstd",
        "the server's default policy is raw"
    );
    dev.send(screen(
        &session,
        SB::Format(ScreenFormat {
            codec: "raw-zstd".into(),
            monitor: 0,
            width: w,
            height: h,
            reason: String::new(),
        }),
    ))
    .await;
    let mut enc = RawZstdEncoder::new();
    let mut picture = noise(w, h, 1);
    let key = enc
        .encode(&picture, None, true)
        .expect("encode")
        .expect("a frame");
    // The codec crate's own decoder is the reference for what follows.
    let mut reference = RawZstdDecoder::new();
    reference
        .decode(&key, &mut picture)
        .expect("the keyframe decodes");
    send_frame(&mut dev, &session, key, 1).await;
    wait_picture(&b, &picture, "the keyframe").await;

    // An overlapping copy (a scroll right by 8), no new pixels.
    let copy = EncodedFrame {
        keyframe: false,
        copies: vec![CopyRect {
            src_x: 0,
            src_y: 4,
            dst: Rect::new(8, 4, 40, 20),
        }],
        parts: Vec::new(),
    };
    reference
        .decode(&copy, &mut picture)
        .expect("the codec's decoder applies it");
    send_frame(&mut dev, &session, copy, 2).await;
    wait_picture(&b, &picture, "the copied region").await;

    // A payload that is not zstd: refused whole, a keyframe asked for.
    let garbage = EncodedFrame {
        keyframe: false,
        copies: Vec::new(),
        parts: vec![FramePart {
            rects: vec![Rect::new(0, 0, 8, 8)],
            data: b"not a zstd frame".to_vec(),
        }],
    };
    send_frame(&mut dev, &session, garbage, 3).await;
    keyframe_requested(&mut dev).await;
    assert_eq!(
        b.exec("return document.getElementById('screen').getAttribute('data-resync');")
            .await,
        serde_json::json!("bad_frame_payload")
    );
    wait_picture(&b, &picture, "the picture unchanged").await;

    // The keyframe that answers draws.
    let picture = noise(w, h, 2);
    let key = enc
        .encode(&picture, None, true)
        .expect("encode")
        .expect("a frame");
    send_frame(&mut dev, &session, key, 4).await;
    wait_picture(&b, &picture, "the new keyframe").await;

    // A rectangle past the picture's edge (with a payload of the right size).
    let mut small = RawZstdEncoder::new()
        .encode(&noise(8, 8, 3), None, true)
        .expect("encode")
        .expect("an 8×8 keyframe");
    let mut part = small.parts.remove(0);
    part.rects = vec![Rect::new(60, 28, 8, 8)];
    let outside = EncodedFrame {
        keyframe: false,
        copies: Vec::new(),
        parts: vec![part],
    };
    send_frame(&mut dev, &session, outside, 5).await;
    keyframe_requested(&mut dev).await;
    assert_eq!(
        b.exec("return document.getElementById('screen').getAttribute('data-resync');")
            .await,
        serde_json::json!("frame_out_of_bounds")
    );
    wait_picture(&b, &picture, "the picture unchanged").await;
    b.close().await;
}
