//! The screen channel against a real X server: Xvfb and an X client from
//! the test kit, the agent's `ScreenChannel` in between, and a viewer made
//! of the `tessera-screen` decoder. Needs `Xvfb` on the PATH.

use std::time::{Duration, Instant};

use tessera_agent::screen::ScreenChannel;
use tessera_proto::v1::{self as pb, screen::Body as S};
use tessera_proto::Body;
use tessera_screen::{Decoder, FrameAssembler, Framebuffer, RawZstdDecoder};
use tessera_testkit::{x_state, XInput, XTestClient, Xvfb};
use tokio::sync::mpsc;

const VIEWER: u32 = 7;
const WAIT: Duration = Duration::from_secs(10);

/// A hand-made viewer of one channel: takes the agent's messages,
/// reassembles and decodes frames, and acknowledges them as the server's
/// credits would.
struct Viewer {
    rx: mpsc::Receiver<Body>,
    channel: ScreenChannel,
    picture: Option<Framebuffer>,
    assembler: FrameAssembler,
    decoder: RawZstdDecoder,
    frames: Vec<pb::ScreenFrame>,
    formats: Vec<pb::ScreenFormat>,
    last: u64,
}

impl Viewer {
    fn open(display: &str, viewers: u32) -> (Viewer, pb::ScreenCapabilities) {
        let (tx, rx) = mpsc::channel(64);
        let channel = ScreenChannel::open(Some(display.into()), "s1".into(), 1, viewers, tx);
        let mut v = Viewer {
            rx,
            channel,
            picture: None,
            assembler: FrameAssembler::new(),
            decoder: RawZstdDecoder::new(),
            frames: Vec::new(),
            formats: Vec::new(),
            last: 0,
        };
        let caps = match v.next(WAIT) {
            Some(S::Capabilities(c)) => c,
            other => panic!("expected capabilities, got {other:?}"),
        };
        (v, caps)
    }

    /// The next screen message within `limit`, frames applied on the way.
    fn next(&mut self, limit: Duration) -> Option<S> {
        let deadline = Instant::now() + limit;
        loop {
            match self.rx.try_recv() {
                Ok(Body::Screen(s)) => {
                    assert_eq!((s.session_id.as_str(), s.channel_id), ("s1", 1));
                    let body = s.body.expect("a body");
                    match &body {
                        S::Format(f) => {
                            self.formats.push(f.clone());
                            self.picture = Some(Framebuffer::new(f.width, f.height).unwrap());
                            self.decoder = RawZstdDecoder::new();
                        }
                        S::Frame(f) => {
                            self.frames.push(f.clone());
                            if let Some(whole) = self.assembler.push(f.clone()).unwrap() {
                                let picture = self.picture.as_mut().expect("a format first");
                                self.decoder.decode(&whole.frame, picture).unwrap();
                                self.last = whole.number;
                                self.channel.handle(S::Credit(pb::ScreenCredit {
                                    number: whole.number,
                                }));
                            }
                        }
                        _ => {}
                    }
                    return Some(body);
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => return None,
            }
        }
    }

    /// Reads messages until the picture equals `want` (or fails after WAIT).
    fn until_picture(&mut self, want: &[u32]) {
        let deadline = Instant::now() + WAIT;
        while self.picture.as_ref().is_none_or(|p| p.pixels() != want) {
            assert!(
                Instant::now() < deadline,
                "the viewer's picture never matched the display"
            );
            self.next(Duration::from_millis(200));
        }
    }

    fn configure(&self) {
        self.channel.handle(S::Configure(pb::ScreenConfigure {
            codec: "raw-zstd".into(),
            monitor: 0,
        }));
    }

    fn key(&self, usage: u32, keysym: u32, down: bool, modifiers: u32) {
        self.channel.handle(S::Key(pb::KeyInput {
            usage,
            keysym,
            down,
            modifiers,
            viewer: VIEWER,
        }));
    }

    fn tap(&self, usage: u32) {
        self.key(usage, 0, true, 0);
        self.key(usage, 0, false, 0);
    }
}

fn keys_of(events: &[XInput]) -> Vec<(u8, u32, bool)> {
    events
        .iter()
        .filter_map(|e| match *e {
            XInput::Key {
                keycode,
                keysym,
                down,
                ..
            } => Some((keycode, keysym, down)),
            _ => None,
        })
        .collect()
}

#[test]
fn frames_match_the_display_pixel_for_pixel_and_follow_its_changes() {
    let x = Xvfb::start_with(640, 400).unwrap();
    let client = XTestClient::open(x.display()).unwrap();
    client.draw_pattern(1).unwrap();
    let (mut v, caps) = Viewer::open(x.display(), 1);
    // OpenH264 is built in, so its probe encodes and H.264 is offered
    // beside the raw-zstd that is always there.
    assert_eq!(caps.codecs, ["h264", "raw-zstd"]);
    let m = &caps.monitors[0];
    assert_eq!((m.width, m.height), (640, 400));
    v.configure();
    v.until_picture(&client.screenshot().unwrap());
    assert_eq!(v.formats[0].codec, "raw-zstd");
    assert!(v.frames[0].keyframe);

    // A small change travels as a small frame.
    let before = v.frames.len();
    client.fill(100, 50, 8, 8, 0xFF0000).unwrap();
    v.until_picture(&client.screenshot().unwrap());
    let delta = &v.frames[before..];
    assert!(delta.iter().all(|f| !f.keyframe));
    assert!(delta.iter().map(|f| f.data.len()).sum::<usize>() < 2048);

    // A scroll travels as a copy.
    let before = v.frames.len();
    client.copy_area(0, 40, 0, 0, 640, 360).unwrap();
    client.fill(0, 360, 640, 40, 0x202020).unwrap();
    v.until_picture(&client.screenshot().unwrap());
    assert!(
        v.frames[before..].iter().any(|f| !f.copies.is_empty()),
        "no copy for a scroll"
    );

    // An idle screen sends nothing.
    let sent = v.frames.len();
    assert!(v
        .next(Duration::from_millis(300))
        .is_none_or(|b| !matches!(b, S::Frame(_))));
    assert_eq!(v.frames.len(), sent);

    // A keyframe on request.
    v.channel.handle(S::KeyframeRequest(pb::KeyframeRequest {}));
    client.fill(0, 0, 1, 1, 0x010101).unwrap();
    v.until_picture(&client.screenshot().unwrap());
    assert!(v.frames[sent..].iter().any(|f| f.keyframe));
}

/// `lines` lines of text-like glyphs, `width` pixels wide, 16 pixels a
/// line, light dots on a dark background (row after row).
fn text(width: u16, lines: u16, seed: u32) -> Vec<u32> {
    let w = usize::from(width);
    let mut px = vec![0x1D1F21; w * usize::from(lines) * 16];
    let mut s = seed | 1;
    for line in 0..usize::from(lines) {
        for col in 0..w / 8 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            for gy in 3..14 {
                for gx in 1..7 {
                    if (s >> ((gy * 7 + gx) % 31)) & 1 == 1 {
                        px[(line * 16 + gy) * w + col * 8 + gx] = 0xC5C8C6;
                    }
                }
            }
        }
    }
    px
}

#[test]
fn a_terminal_scrolled_with_copy_area_travels_as_copies_and_stays_pixel_exact() {
    let x = Xvfb::start_with(800, 600).unwrap();
    let client = XTestClient::open(x.display()).unwrap();
    client.fill(0, 0, 800, 600, 0x2E3440).unwrap();
    // A terminal of 30 lines, 560×480 at (40, 60), and a panel beside it.
    let (tx, ty, tw, th) = (40i16, 60i16, 560u16, 480u16);
    client.put_pixels(tx, ty, tw, &text(tw, 30, 1)).unwrap();
    client.put_pixels(640, 60, 120, &text(120, 30, 2)).unwrap();
    let (mut v, _) = Viewer::open(x.display(), 1);
    v.configure();
    v.until_picture(&client.screenshot().unwrap());
    for (i, lines) in [1u16, 7, 3, 12, 2].into_iter().enumerate() {
        let before = v.frames.len();
        let by = lines * 16;
        // As a terminal does: the text moves up, new lines are drawn below;
        // here several lines at once, and a second scroll follows at once
        // (so a capture may see both), while the panel's clock changes.
        client
            .copy_area(tx, ty + by as i16, tx, ty, tw, th - by)
            .unwrap();
        let fresh = text(tw, lines, 100 + i as u32);
        client
            .put_pixels(tx, ty + (th - by) as i16, tw, &fresh)
            .unwrap();
        client.copy_area(tx, ty + 16, tx, ty, tw, th - 16).unwrap();
        client
            .put_pixels(tx, ty + th as i16 - 16, tw, &text(tw, 1, 200 + i as u32))
            .unwrap();
        client
            .fill(700, 20, 40, 10, 0x101010 * (i as u32 + 1))
            .unwrap();
        v.until_picture(&client.screenshot().unwrap());
        let delta = &v.frames[before..];
        assert!(delta.iter().all(|f| !f.keyframe));
        // The moved text came as copies: they write most of the terminal,
        // and the pixels sent are about the fresh lines, not the terminal.
        let copied: u64 = delta
            .iter()
            .flat_map(|f| &f.copies)
            .map(|c| {
                c.dst
                    .map_or(0, |d| u64::from(d.width) * u64::from(d.height))
            })
            .sum();
        assert!(
            copied >= u64::from(tw) * u64::from(th - by - 16) * 9 / 10,
            "{lines} lines: copies wrote {copied} pixels: {:?}",
            delta.iter().map(|f| &f.copies).collect::<Vec<_>>()
        );
        let sent: u64 = delta
            .iter()
            .flat_map(|f| &f.rects)
            .map(|r| u64::from(r.width) * u64::from(r.height))
            .sum();
        assert!(
            sent <= u64::from(tw) * u64::from(by + 16) * 2 + 4096,
            "{lines} lines: {sent} pixels sent"
        );
    }
}

#[test]
fn nothing_is_captured_before_configure_nor_while_nobody_watches() {
    let x = Xvfb::start_with(320, 200).unwrap();
    let client = XTestClient::open(x.display()).unwrap();
    client.draw_pattern(2).unwrap();
    let (mut v, _) = Viewer::open(x.display(), 0);
    assert!(
        v.next(Duration::from_millis(300)).is_none(),
        "nothing before configure"
    );
    v.configure();
    assert!(matches!(v.next(WAIT), Some(S::Format(_))));
    client.fill(0, 0, 50, 50, 0xFFFFFF).unwrap();
    assert!(
        v.next(Duration::from_millis(300))
            .is_none_or(|b| !matches!(b, S::Frame(_))),
        "no frame without viewers"
    );
    v.channel.viewers(1);
    v.until_picture(&client.screenshot().unwrap());
    assert!(v.frames[0].keyframe);
    // Back to nobody: frames stop.
    v.channel.viewers(0);
    std::thread::sleep(Duration::from_millis(100));
    while v.next(Duration::from_millis(50)).is_some() {}
    let sent = v.frames.len();
    client.fill(0, 0, 50, 50, 0x000000).unwrap();
    while v.next(Duration::from_millis(300)).is_some() {}
    assert_eq!(v.frames.len(), sent);
}

#[test]
fn keys_arrive_by_physical_position_with_their_keysyms() {
    let x = Xvfb::start_with(320, 200).unwrap();
    let client = XTestClient::open(x.display()).unwrap();
    let (mut v, _) = Viewer::open(x.display(), 1);
    v.configure();
    assert!(matches!(v.next(WAIT), Some(S::Format(_))));

    v.tap(0x04); // a
    v.key(0xE1, 0, true, 0); // Shift
    v.key(0x04, 0, true, 1);
    v.key(0x04, 0, false, 1);
    v.key(0xE1, 0, false, 1);
    v.tap(0x59); // keypad 1 (Num Lock off: KP_End)
    v.tap(0x3A); // F1
    v.tap(0xE3); // Super
    v.tap(0x1E); // 1
    assert!(
        client.wait_for(WAIT, |e| keys_of(e).len() >= 14),
        "{:?}",
        client.events()
    );
    let got = keys_of(&client.events());
    let downs: Vec<(u8, u32)> = got.iter().filter(|k| k.2).map(|k| (k.0, k.1)).collect();
    assert_eq!(
        downs,
        [
            (38, 0x61),    // a
            (50, 0xFFE1),  // Shift_L
            (38, 0x41),    // A
            (87, 0xFF9C),  // KP_End
            (67, 0xFFBE),  // F1
            (133, 0xFFEB), // Super_L
            (10, 0x31),    // 1
        ]
    );
    // Shift was down for the second a.
    let shifted = client
        .events()
        .into_iter()
        .find(|e| matches!(e, XInput::Key { keysym: 0x41, .. }));
    assert!(matches!(shifted, Some(XInput::Key { state, .. }) if state & x_state::SHIFT != 0));

    // A key the remote keymap lacks arrives by keysym (€ on a US keymap).
    client.clear_events();
    v.key(0, 0x20AC, true, 0);
    v.key(0, 0x20AC, false, 0);
    assert!(
        client.wait_for(WAIT, |e| keys_of(e).iter().any(|k| k.1 == 0x20AC && k.2)),
        "{:?}",
        client.events()
    );
}

#[test]
fn everything_a_viewer_holds_is_released_when_it_leaves_or_the_channel_closes() {
    let x = Xvfb::start_with(320, 200).unwrap();
    let client = XTestClient::open(x.display()).unwrap();
    let (mut v, _) = Viewer::open(x.display(), 1);
    v.configure();
    assert!(matches!(v.next(WAIT), Some(S::Format(_))));

    v.key(0xE0, 0, true, 0); // Ctrl held
    v.channel.handle(S::Pointer(pb::PointerInput {
        x: 30,
        y: 40,
        buttons: 0b1,
        wheel_x: 0,
        wheel_y: 0,
        viewer: VIEWER,
    }));
    assert!(client.wait_for(WAIT, |e| e.iter().any(|e| matches!(
        e,
        XInput::Button {
            button: 1,
            down: true,
            x: 30,
            y: 40
        }
    ))));
    v.channel
        .handle(S::ReleaseInput(pb::ReleaseInput { viewer: VIEWER }));
    assert!(
        client.wait_for(WAIT, |e| {
            e.iter().any(|e| {
                matches!(
                    e,
                    XInput::Button {
                        button: 1,
                        down: false,
                        ..
                    }
                )
            }) && keys_of(e).contains(&(37, 0xFFE3, false))
        }),
        "{:?}",
        client.events()
    );

    // Held again, then the channel closes: released too.
    client.clear_events();
    v.key(0xE1, 0, true, 0);
    assert!(client.wait_for(WAIT, |e| keys_of(e).contains(&(50, 0xFFE1, true))));
    drop(v);
    assert!(
        client.wait_for(WAIT, |e| keys_of(e).iter().any(|k| k.0 == 50 && !k.2)),
        "{:?}",
        client.events()
    );
}

#[test]
fn a_missing_display_is_screen_unavailable() {
    let (tx, mut rx) = mpsc::channel(8);
    let _channel = ScreenChannel::open(Some(":4321".into()), "s1".into(), 1, 1, tx);
    let mut saw_close = false;
    while let Some(body) = rx.blocking_recv() {
        if let Body::ChannelClose(c) = body {
            assert_eq!(c.reason, "screen_unavailable");
            saw_close = true;
            break;
        }
    }
    assert!(saw_close);
}

#[test]
fn clipboard_text_travels_both_ways() {
    let x = Xvfb::start_with(320, 200).unwrap();
    let client = XTestClient::open(x.display()).unwrap();
    let (mut v, _) = Viewer::open(x.display(), 1);
    v.configure();
    assert!(matches!(v.next(WAIT), Some(S::Format(_))));

    // Viewer → display: an application pastes what the viewer copied.
    v.channel.handle(S::Clipboard(pb::ClipboardText {
        text: "from the viewer ✓".into(),
        viewer: VIEWER,
    }));
    let deadline = Instant::now() + WAIT;
    let mut pasted = None;
    while pasted.is_none() && Instant::now() < deadline {
        pasted = client.paste_text(Duration::from_millis(300)).unwrap();
    }
    assert_eq!(pasted.as_deref(), Some("from the viewer ✓"));

    // Display → viewers: an application copies.
    client.copy_text("from the display").unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the display's clipboard never reached the viewer"
        );
        if let Some(S::Clipboard(c)) = v.next(Duration::from_millis(200)) {
            assert_eq!(c.text, "from the display");
            break;
        }
    }
}
