//! `tessera view` (issue 13): the screen viewer against a real server.
//!
//! Without X: a device spoken by hand sends a picture split into parts,
//! and `tessera view --snapshot` writes it pixel-exact; a frame that does
//! not follow makes the client ask for a keyframe; a view-only viewer sends
//! no input.
//!
//! Under Xvfb, end to end: a real `tessera agent run` captures an Xvfb
//! display on which the test kit's X client drew a known pattern; a screen
//! session opened with `tessera ctl sessions create DEVICE --channel
//! screen`; `tessera view --snapshot` matches the display pixel for pixel;
//! keys sent by a control viewer reach the X client as the same keycodes
//! and keysyms; a view-only viewer's keys never arrive. These skip, saying
//! so, only when Xvfb is not installed (`.ci/run` installs it, and under
//! `CI` a missing Xvfb fails instead).

use std::path::Path;
use std::time::Duration;

use tessera_client::screen::{self as client_screen, ScreenEvent};
use tessera_client::ApiClient;
use tessera_core::roles::Role;
use tessera_proto::v1::screen::Body as SB;
use tessera_proto::v1::{
    ChannelKind, KeyInput, Monitor, ScreenCapabilities, ScreenFormat, ScreenFrame,
};
use tessera_proto::Body;
use tessera_screen::{keys, Encoder, Framebuffer, RawZstdEncoder};
use tessera_testkit::{
    ctl, ctl_admin, pattern, screen, screen_body, view, x_state, AgentProcess, HandDevice,
    TestDevice, TestServer, XInput, XTestClient, Xvfb,
};

const RAW: &str = "raw-zstd";

/// The pixels of a PNG file as `0x00RRGGBB`, with its size.
pub(crate) fn png_pixels(path: &Path) -> (u32, u32, Vec<u32>) {
    let file = std::fs::File::open(path).expect("the snapshot exists");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("one frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|c| u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]))
        .collect();
    (info.width, info.height, px)
}

/// `tessera ctl sessions create DEVICE --channel screen [--view-only]`: the id.
pub(crate) async fn create_screen_session(dir: &Path, device: &str, view_only: bool) -> String {
    let mut args = vec![
        "sessions",
        "create",
        device,
        "--channel",
        "screen",
        "--json",
    ];
    if view_only {
        args.push("--view-only");
    }
    let (code, out, err) = ctl(dir, &args, None).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["channel"], "screen", "{v}");
    v["id"].as_str().expect("an id").to_owned()
}

/// A picture of noise: it does not compress, so its keyframe needs parts.
fn noise(w: u32, h: u32) -> Framebuffer {
    let mut x: u32 = 0x1234_5678;
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

/// A protocol-4 device spoken by hand, with a screen session open on it
/// (created through `tessera ctl`).
async fn hand_screen(s: &TestServer, dir: &Path, w: u32, h: u32) -> (HandDevice, String) {
    let admin = s.admin().await;
    let d = TestDevice::enroll(s, &admin, "desk").await;
    let mut dev = HandDevice::connect(s, &d, 4).await;
    let session = create_screen_session(dir, "desk", false).await;
    dev.next_where(|b| match b {
        Body::ChannelOpen(o) if o.kind == ChannelKind::Screen as i32 => Some(()),
        _ => None,
    })
    .await;
    dev.send(screen(
        &session,
        SB::Capabilities(ScreenCapabilities {
            codecs: vec![RAW.into()],
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
    (dev, session)
}

fn format(w: u32, h: u32) -> SB {
    SB::Format(ScreenFormat {
        codec: RAW.into(),
        monitor: 0,
        width: w,
        height: h,
        reason: String::new(),
    })
}

/// Encodes `picture` as frame `number` and sends it in its parts; how many.
async fn send_frame(
    dev: &mut HandDevice,
    session: &str,
    enc: &mut RawZstdEncoder,
    picture: &Framebuffer,
    number: u64,
    keyframe: bool,
) -> usize {
    let frame = enc
        .encode(picture, None, keyframe)
        .expect("encode")
        .expect("a frame");
    let parts: Vec<ScreenFrame> = frame.into_messages(number, 1);
    let n = parts.len();
    for p in parts {
        dev.send(screen(session, SB::Frame(p))).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_the_picture_the_device_sent_exactly_even_in_parts() {
    let s = TestServer::start().await;
    let dir = ctl_admin(&s).await;
    let (w, h) = (1920, 1080);
    let (mut dev, session) = hand_screen(&s, dir.path(), w, h).await;
    let out = dir.path().join("shot.png");
    let viewer = {
        let (dir, session, out) = (dir.path().to_owned(), session.clone(), out.clone());
        tokio::spawn(async move {
            view(
                &dir,
                &[
                    &session,
                    "--snapshot",
                    out.to_str().expect("utf-8"),
                    "--wait",
                    "30s",
                ],
            )
            .await
        })
    };
    // The viewer joined: the server configures the device.
    let configure = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::Configure(c)) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(configure.codec, RAW);
    let picture = noise(w, h);
    dev.send(screen(&session, format(w, h))).await;
    let mut enc = RawZstdEncoder::new();
    let parts = send_frame(&mut dev, &session, &mut enc, &picture, 1, true).await;
    assert!(parts > 1, "the keyframe of noise travels in parts");
    // The viewer acknowledges the frame it drew: the device is credited.
    let credit = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::Credit(c)) => Some(c.number),
            _ => None,
        })
        .await;
    assert_eq!(credit, 1);
    let (code, stdout, stderr) = viewer.await.expect("viewer task");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (pw, ph, px) = png_pixels(&out);
    assert_eq!((pw, ph), (w, h));
    assert!(
        px == picture.pixels(),
        "the snapshot differs from the picture sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_shell_session_or_an_unknown_one_fails_with_a_reason() {
    let s = TestServer::start().await;
    let dir = ctl_admin(&s).await;
    let out = dir.path().join("never.png");
    let out = out.to_str().expect("utf-8");
    let (code, _, err) = view(
        dir.path(),
        &["0190d2b4-0000-7000-8000-000000000000", "--snapshot", out],
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("not_found") || err.contains("not found"),
        "{err}"
    );
    let (code, _, err) = view(dir.path(), &["x", "--snapshot", out, "--wait", "1h"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("between 1 second and 10 minutes"), "{err}");
    assert!(!Path::new(out).exists(), "nothing written on failure");
}

/// Joins `session` as a screen viewer through the client library.
pub(crate) async fn join(
    client: &ApiClient,
    session: &str,
) -> (
    client_screen::ScreenSender,
    client_screen::ScreenReceiver,
    client_screen::ScreenJoined,
) {
    let token = client.viewer_token(session).await.expect("token").token;
    client_screen::connect(client, session, &token, &[RAW])
        .await
        .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_asks_for_a_keyframe_when_a_frame_is_missing_and_view_only_sends_nothing() {
    let s = TestServer::start().await;
    let dir = ctl_admin(&s).await;
    let admin = s.admin().await;
    let (w, h) = (256, 128);
    let (mut dev, session) = hand_screen(&s, dir.path(), w, h).await;
    let (mut tx, mut rx, joined) = join(&admin, &session).await;
    assert!(joined.may_control());
    dev.next_where(|b| match screen_body(b) {
        Some(SB::Configure(_)) => Some(()),
        _ => None,
    })
    .await;
    dev.send(screen(&session, format(w, h))).await;
    let mut enc = RawZstdEncoder::new();
    let mut picture = noise(w, h);
    send_frame(&mut dev, &session, &mut enc, &picture, 1, true).await;
    // The device's monitors come first, then the format.
    let mut event = rx.next().await;
    if let ScreenEvent::Monitors(ms) = &event {
        assert_eq!(ms.len(), 1);
        event = rx.next().await;
    }
    let ScreenEvent::Format(f) = event else {
        panic!("the format first")
    };
    assert_eq!((f.width, f.height), (w, h));
    let ScreenEvent::Frame(first) = rx.next().await else {
        panic!("then the keyframe")
    };
    assert!(first.frame.keyframe);
    // Frame 2 never comes; frame 3 does not follow frame 1.
    picture
        .fill(tessera_screen::Rect::new(0, 0, 8, 8), 0x00FF00)
        .expect("fill");
    let _lost = enc.encode(&picture, None, false).expect("encode");
    picture
        .fill(tessera_screen::Rect::new(8, 8, 8, 8), 0x0000FF)
        .expect("fill");
    send_frame(&mut dev, &session, &mut enc, &picture, 3, false).await;
    let ScreenEvent::Resync { code } = rx.next().await else {
        panic!("a break in the frames")
    };
    assert_eq!(code, "frames_missing");
    tx.request_keyframe().await.expect("ask");
    dev.next_where(|b| match screen_body(b) {
        Some(SB::KeyframeRequest(_)) => Some(()),
        _ => None,
    })
    .await;

    // A view-only operator's viewer sends no input at all.
    let watcher = s.user(&admin, "watcher", Role::Viewer).await;
    let (mut wtx, _wrx, wjoined) = join(&watcher, &session).await;
    assert_eq!(wjoined.access, "view_only");
    assert!(!wjoined.may_control());
    let sent = wtx
        .key(KeyInput {
            usage: 4,
            keysym: 0x61,
            down: true,
            ..KeyInput::default()
        })
        .await
        .expect("no error");
    assert!(!sent, "a view-only viewer does not send keys");
    assert!(!wtx.release_input().await.expect("no error"));
    // The control viewer's key is the next input the device sees.
    assert!(tx
        .key(KeyInput {
            usage: 5,
            keysym: 0x62,
            down: true,
            ..KeyInput::default()
        })
        .await
        .expect("sent"));
    let k = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::Key(k)) => Some(*k),
            _ => None,
        })
        .await;
    assert_eq!(k.usage, 5);
}

/// An Xvfb display, or `None` (with a message) when Xvfb is not installed
/// and this is not CI.
pub(crate) fn xvfb_or_skip(test: &str) -> Option<Xvfb> {
    let installed = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("Xvfb").is_file()));
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: Xvfb is not installed, and CI must run this test (.ci/run installs xvfb)"
        );
        eprintln!("SKIPPED {test}: Xvfb is not installed (apt-get install xvfb)");
        return None;
    }
    Some(Xvfb::start().expect("Xvfb starts"))
}

/// The key events for `usage` (with `keysym`) the X client got, as
/// (keycode, keysym, down).
fn keys_of(events: &[XInput]) -> Vec<(u8, u32, bool, u16)> {
    events
        .iter()
        .filter_map(|e| match *e {
            XInput::Key {
                keycode,
                keysym,
                down,
                state,
            } => Some((keycode, keysym, down, state)),
            _ => None,
        })
        .collect()
}

fn key(name: &str, keysym: u32, down: bool, modifiers: u32) -> KeyInput {
    KeyInput {
        usage: keys::by_name(name).expect("in the table").usage,
        keysym,
        down,
        modifiers,
        viewer: 0,
    }
}

fn x_keycode(name: &str) -> u8 {
    keys::by_name(name)
        .and_then(|k| k.x_keycode())
        .expect("an X keycode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_xvfb_the_viewer_sees_the_display_exactly_and_control_keys_reach_it() {
    let Some(x) = xvfb_or_skip("under_xvfb_the_viewer_sees_the_display_exactly") else {
        return;
    };
    let client = XTestClient::open(x.display()).expect("X client");
    let drawn = client.draw_pattern(7).expect("pattern");
    assert_eq!(drawn, pattern(x.width, x.height, 7));

    let s = TestServer::start().await;
    let dir = ctl_admin(&s).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "kiosk").await;
    let agent = AgentProcess::start_on_display(&s, &device, x.display()).await;
    let session = create_screen_session(dir.path(), "kiosk", false).await;

    // The snapshot is the display, pixel for pixel.
    let out = dir.path().join("display.png");
    let (code, stdout, stderr) = view(
        dir.path(),
        &[&session, "--snapshot", out.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}\nagent log:\n{}", agent.log());
    let (w, h, px) = png_pixels(&out);
    assert_eq!((w, h), (x.width, x.height));
    assert!(
        px == client.screenshot().expect("screenshot"),
        "the snapshot differs from the display"
    );

    // A control viewer types: a, Shift+a, keypad 1 (Num Lock off: End),
    // Super; the X client gets the same keycodes with the keymap's keysyms.
    let (mut tx, _rx, joined) = join(&admin, &session).await;
    assert!(joined.may_control());
    client.clear_events();
    let shift = keys::Modifiers::SHIFT.bits();
    for k in [
        key("a", 0x61, true, 0),
        key("a", 0x61, false, 0),
        key("shift_left", 0xFFE1, true, shift),
        key("a", 0x41, true, shift),
        key("a", 0x41, false, shift),
        key("shift_left", 0xFFE1, false, 0),
        key("kp_1", 0xFF9C, true, 0),
        key("kp_1", 0xFF9C, false, 0),
        key("super_left", 0xFFEB, true, 0),
        key("super_left", 0xFFEB, false, 0),
    ] {
        assert!(tx.key(k).await.expect("sent"));
    }
    let arrived = client.wait_for(Duration::from_secs(10), |e| keys_of(e).len() >= 10);
    let got = keys_of(&client.events());
    assert!(
        arrived,
        "ten key events arrive; got {got:?}\nagent log:\n{}",
        agent.log()
    );
    let a = x_keycode("a");
    assert_eq!(got[0], (a, 0x61, true, 0));
    assert_eq!(got[1].0, a);
    assert!(!got[1].2);
    assert_eq!(got[2].0, x_keycode("shift_left"));
    assert_eq!(
        (got[3].0, got[3].1, got[3].2),
        (a, 0x41, true),
        "Shift+a is A"
    );
    assert_ne!(got[3].3 & x_state::SHIFT, 0, "with Shift held");
    assert_eq!(got[6].0, x_keycode("kp_1"));
    assert_eq!(got[8].0, x_keycode("super_left"));
    assert_eq!(got[8].1, 0xFFEB, "Super_L");

    // A view-only operator's keys never arrive, even sent by hand.
    let watcher = s.user(&admin, "watcher", Role::Viewer).await;
    let (mut wtx, _wrx, wjoined) = join(&watcher, &session).await;
    assert!(!wjoined.may_control());
    client.clear_events();
    assert!(!wtx.key(key("b", 0x62, true, 0)).await.expect("no error"));
    let forged = tessera_proto::Envelope::of(screen(&session, SB::Key(key("b", 0x62, true, 0))));
    wtx.raw(prost::Message::encode_to_vec(&forged))
        .await
        .expect("sent raw");
    assert!(
        !client.wait_for(Duration::from_secs(2), |e| !keys_of(e).is_empty()),
        "a view-only viewer's key reached the display: {:?}",
        client.events()
    );
    tx.close().await;
    drop(agent);
}

/// Presses and releases the key with X keycode `keycode` on `display`
/// through XTEST, with the pointer at (`x`, `y`), after giving the keyboard
/// focus to the display's one top-level window (what a window manager
/// would do; there is none here).
pub(crate) fn x_type(display: &str, keycode: u8, x: i16, y: i16) {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto;
    use x11rb::protocol::xproto::ConnectionExt as _;
    use x11rb::protocol::xtest::ConnectionExt as _;
    use x11rb::wrapper::ConnectionExt as _;
    let (conn, screen) = x11rb::connect(Some(display)).expect("X");
    let root = conn.setup().roots[screen].root;
    let tree = conn.query_tree(root).expect("tree").reply().expect("tree");
    for w in tree.children {
        let mapped = conn
            .get_window_attributes(w)
            .expect("attributes")
            .reply()
            .is_ok_and(|a| a.map_state == xproto::MapState::VIEWABLE);
        if mapped {
            conn.set_input_focus(xproto::InputFocus::PARENT, w, x11rb::CURRENT_TIME)
                .expect("focus");
        }
    }
    conn.xtest_fake_input(xproto::MOTION_NOTIFY_EVENT, 0, 0, root, x, y, 0)
        .expect("move");
    for kind in [xproto::KEY_PRESS_EVENT, xproto::KEY_RELEASE_EVENT] {
        conn.xtest_fake_input(kind, keycode, 0, root, 0, 0, 0)
            .expect("key");
    }
    conn.sync().expect("sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_xvfb_the_window_draws_acks_sends_keys_and_says_why_the_session_ended() {
    let Some(x) = xvfb_or_skip("under_xvfb_the_window_draws_acks_sends_keys") else {
        return;
    };
    let s = TestServer::start().await;
    let dir = ctl_admin(&s).await;
    let admin = s.admin().await;
    let (w, h) = (320, 200);
    let (mut dev, session) = hand_screen(&s, dir.path(), w, h).await;
    let window = tokio::process::Command::new(tessera_testkit::tessera_bin())
        .args(["view", &session, "--config-dir"])
        .arg(dir.path())
        .env("DISPLAY", x.display())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(
            std::fs::File::create(dir.path().join("view.log")).expect("log"),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("tessera view");
    let log = dir.path().join("view.log");
    let log = move || std::fs::read_to_string(&log).unwrap_or_default();
    dev.next_where(|b| match screen_body(b) {
        Some(SB::Configure(_)) => Some(()),
        _ => None,
    })
    .await;
    dev.send(screen(&session, format(w, h))).await;
    let mut enc = RawZstdEncoder::new();
    send_frame(&mut dev, &session, &mut enc, &noise(w, h), 1, true).await;
    // The window drew the frame: its ack credits the device.
    let credit = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::Credit(c)) => Some(c.number),
            _ => None,
        })
        .await;
    assert_eq!(credit, 1);
    // A key typed into the window reaches the device by usage and keysym.
    let display = x.display().to_owned();
    tokio::task::spawn_blocking(move || x_type(&display, x_keycode("a"), 50, 50))
        .await
        .expect("typed");
    let k = dev
        .next_where(|b| match screen_body(b) {
            Some(SB::Key(k)) if k.down => Some(*k),
            _ => None,
        })
        .await;
    assert_eq!((k.usage, k.keysym), (0x04, 0x61), "viewer: {}", log());
    // The session ends: the viewer says why and exits.
    admin.end_session(&session).await.expect("ended");
    let out = tokio::time::timeout(Duration::from_secs(30), window.wait_with_output())
        .await
        .expect("the viewer exits once the session is over")
        .expect("output");
    let err = log();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("the session ended"), "{err}");
}

/// What a test viewer has seen of a screen: the formats, and the picture
/// the frames drew.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) formats: Vec<ScreenFormat>,
    picture: Option<Framebuffer>,
    decoder: tessera_screen::RawZstdDecoder,
}

impl Seen {
    /// Reads `rx` until a frame is drawn (and acknowledged); whether it was
    /// a keyframe. A new format first makes the picture a blank one of its
    /// size. Fails after 20 s.
    pub(crate) async fn next_drawn(
        &mut self,
        tx: &mut client_screen::ScreenSender,
        rx: &mut client_screen::ScreenReceiver,
    ) -> bool {
        use tessera_screen::Decoder;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(20), rx.next())
                .await
                .expect("a screen event in time");
            match event {
                ScreenEvent::Format(f) => {
                    self.picture = Some(Framebuffer::new(f.width, f.height).expect("a picture"));
                    self.decoder = tessera_screen::RawZstdDecoder::new();
                    self.formats.push(f);
                }
                ScreenEvent::Frame(whole) => {
                    let p = self.picture.as_mut().expect("a format first");
                    self.decoder
                        .decode(&whole.frame, p)
                        .expect("a frame that fits the picture");
                    tx.ack(whole.number).await.expect("ack");
                    return whole.frame.keyframe;
                }
                ScreenEvent::Resync { code } => panic!("the stream broke: {code}"),
                ScreenEvent::Ended { code, .. } => panic!("the session ended: {code}"),
                ScreenEvent::Closed { code, reason } => panic!("closed: {code:?} {reason}"),
                _ => {}
            }
        }
    }

    pub(crate) fn shows(&self, want: &[u32]) -> bool {
        self.picture.as_ref().is_some_and(|p| p.pixels() == want)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_xvfb_a_resolution_change_reaches_the_viewer_as_a_format_and_an_exact_keyframe() {
    let Some(mut x) = xvfb_or_skip("under_xvfb_a_resolution_change_reaches_the_viewer") else {
        return;
    };
    let (w, h) = (x.width, x.height);
    let client = XTestClient::open(x.display()).expect("X client");
    // The pattern is the window's background: the X server repaints it
    // when a resolution change exposes the window again.
    let drawn = client.paint_background(3).expect("pattern");

    let s = TestServer::start().await;
    let dir = ctl_admin(&s).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "kiosk").await;
    let agent = AgentProcess::start_on_display(&s, &device, x.display()).await;
    let session = create_screen_session(dir.path(), "kiosk", false).await;
    let (mut tx, mut rx, _) = join(&admin, &session).await;
    let mut seen = Seen::default();
    assert!(seen.next_drawn(&mut tx, &mut rx).await);
    assert!(seen.shows(&drawn), "the first keyframe is the display");

    // The display shrinks (xrandr): the viewer is told the new size and
    // gets a keyframe of what is left on screen, the top-left corner of
    // the pattern, pixel for pixel.
    let (sw, sh) = (w * 3 / 4, h * 3 / 4);
    x.resize(sw, sh).expect("xrandr");
    let corner: Vec<u32> = (0..sh)
        .flat_map(|y| drawn[(y * w) as usize..(y * w + sw) as usize].to_vec())
        .collect();
    assert!(
        seen.next_drawn(&mut tx, &mut rx).await,
        "the first frame after a new size is a keyframe\nagent log:\n{}",
        agent.log()
    );
    let f = seen.formats.last().expect("a new format");
    assert_eq!((f.width, f.height), (sw, sh), "{:?}", seen.formats);
    assert_eq!(f.reason, "resolution_changed");
    assert!(
        seen.shows(&corner),
        "the keyframe at the new size is the display"
    );

    // Drawing goes on at the new size, and growing back is followed too
    // (the whole pattern is back: the server repaints the window).
    client.fill(10, 10, 20, 20, 0x00FF_8000).expect("fill");
    let mut want = corner.clone();
    for y in 10..30 {
        for x in 10..30 {
            want[(y * sw + x) as usize] = 0x00FF_8000;
        }
    }
    while !seen.shows(&want) {
        seen.next_drawn(&mut tx, &mut rx).await;
    }
    x.resize(w, h).expect("xrandr");
    let expected = client
        .screenshot()
        .expect("the whole window is on screen again");
    assert!(expected == drawn, "the server repainted the background");
    let before = seen.formats.len();
    let mut keyframe = false;
    while seen.formats.len() == before {
        keyframe = seen.next_drawn(&mut tx, &mut rx).await;
    }
    assert!(keyframe, "the first frame after the format is a keyframe");
    assert!(
        seen.shows(&drawn),
        "the keyframe at the first size again is the display"
    );
    let f = &seen.formats[before];
    assert_eq!(
        (f.width, f.height, f.reason.as_str()),
        (w, h, "resolution_changed")
    );
    tx.close().await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_xvfb_a_pointer_shape_change_reaches_the_viewer() {
    let Some(x) = xvfb_or_skip("under_xvfb_a_pointer_shape_change_reaches_the_viewer") else {
        return;
    };
    let client = XTestClient::open(x.display()).expect("X client");
    client.draw_pattern(5).expect("pattern");
    let s = TestServer::start().await;
    let dir = ctl_admin(&s).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "kiosk").await;
    let agent = AgentProcess::start_on_display(&s, &device, x.display()).await;
    let session = create_screen_session(dir.path(), "kiosk", false).await;
    let (mut tx, mut rx, _) = join(&admin, &session).await;
    assert!(Seen::default().next_drawn(&mut tx, &mut rx).await);

    // An application over the whole screen changes the pointer: the
    // viewer gets the new shape, its pixels and hot spot.
    client
        .set_cursor(8, 6, 0x00FF_2000, (3, 4))
        .expect("a pointer shape");
    let shape = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.next().await {
                ScreenEvent::Cursor(c) if (c.width, c.height) == (8, 6) => return c,
                ScreenEvent::Frame(f) => tx.ack(f.number).await.expect("ack"),
                ScreenEvent::Ended { .. } | ScreenEvent::Closed { .. } => {
                    panic!("the session ended")
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no new pointer shape\nagent log:\n{}", agent.log()));
    assert_eq!((shape.hot_x, shape.hot_y), (3, 4));
    assert_eq!(shape.rgba.len(), 8 * 6 * 4);
    assert!(
        shape.rgba.chunks(4).all(|p| p == [0xFF, 0x20, 0x00, 0xFF]),
        "the shape's pixels: {:?}",
        &shape.rgba[..8]
    );
    tx.close().await;
    drop(agent);
}
