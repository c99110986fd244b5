//! The screen channel on the device: capture of an X display, encoded with
//! raw-zstd or H.264 (`tessera_screen`; the choice and the fall back are
//! `encoding`), and input from control viewers injected through XTest.
//!
//! One thread per channel owns the X connection (X11 I/O is blocking); a
//! second waits for X events. Both feed one queue that the channel thread
//! works through, so a keystroke, a credit and a damage notice are handled
//! in the order they came, and an idle screen costs no wake-ups.
//!
//! The flow (docs/PROTOCOL.md): on `ChannelOpen` the agent connects to the
//! display and answers `ScreenCapabilities` (or closes with
//! `screen_unavailable`); nothing is captured before the server's
//! `ScreenConfigure` names a monitor, nor while no viewer watches; frames
//! follow damage, at most a few ahead of the fastest viewer's credit. Every
//! key and button a viewer holds is released when it leaves
//! (`ReleaseInput`), and everyone's when the channel closes.

mod display;
mod encoding;
mod held;
pub mod selection;
mod stream;

use std::sync::mpsc as std_mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tessera_proto::v1::{self as pb, screen::Body as ScreenBody};
use tessera_proto::Body;
use tessera_screen::keys::{self, Combo, Modifiers};
use tessera_screen::{Codec, Framebuffer};
use tokio::sync::mpsc;
use x11rb::connection::Connection as _;

use display::{Display, Monitor, CLIPBOARD_CAP};
use encoding::{CodecSupport, EncodeFailure, Encoding, FellBack};
use held::{Action, HeldInput, KeyId};
use stream::Stream;

/// `ChannelClose.reason` when the agent cannot serve a screen.
pub const SCREEN_UNAVAILABLE: &str = "screen_unavailable";

/// What the channel thread works through, in order.
enum Input {
    Screen(ScreenBody),
    Viewers(u32),
    Close,
    X(x11rb::protocol::Event),
    XGone(String),
}

/// A running screen channel; closing it (or dropping it) releases every
/// held key and button and ends its threads.
pub struct ScreenChannel {
    tx: std_mpsc::Sender<Input>,
}

impl ScreenChannel {
    /// Starts serving channel `channel_id` of `session_id` on `display`
    /// (`None`: `$DISPLAY`), with `viewers` people watching now.
    pub fn open(
        display: Option<String>,
        session_id: String,
        channel_id: u32,
        viewers: u32,
        outbound: mpsc::Sender<Body>,
    ) -> ScreenChannel {
        let (tx, rx) = std_mpsc::channel();
        let events = tx.clone();
        let out = Out {
            session_id,
            channel_id,
            outbound,
        };
        std::thread::spawn(move || run(display, out, viewers, rx, events));
        ScreenChannel { tx }
    }

    /// A `Screen` message from the server for this channel.
    pub fn handle(&self, body: ScreenBody) {
        let _ = self.tx.send(Input::Screen(body));
    }

    /// The session's viewer count changed.
    pub fn viewers(&self, viewers: u32) {
        let _ = self.tx.send(Input::Viewers(viewers));
    }
}

impl Drop for ScreenChannel {
    fn drop(&mut self) {
        let _ = self.tx.send(Input::Close);
    }
}

/// The way out: `Screen` messages of this channel to the server.
struct Out {
    session_id: String,
    channel_id: u32,
    outbound: mpsc::Sender<Body>,
}

impl Out {
    /// Sends one message, waiting while the connection's queue is full (the
    /// credits bound how much that can be). `false`: the connection is gone.
    fn send(&self, body: ScreenBody) -> bool {
        self.outbound
            .blocking_send(Body::Screen(pb::Screen {
                session_id: self.session_id.clone(),
                channel_id: self.channel_id,
                body: Some(body),
            }))
            .is_ok()
    }

    fn notice(&self, code: &str, message: &str) -> bool {
        self.send(ScreenBody::Notice(pb::ScreenNotice {
            code: code.into(),
            message: message.into(),
        }))
    }

    fn close(&self, reason: &str) {
        let _ = self
            .outbound
            .blocking_send(Body::ChannelClose(pb::ChannelClose {
                session_id: self.session_id.clone(),
                channel_id: self.channel_id,
                exit_status: None,
                reason: reason.into(),
            }));
    }
}

/// What is being captured, once the server has configured the stream.
struct Capture {
    monitor: Monitor,
    picture: Option<Framebuffer>,
    encoding: Encoding,
    damage_pending: bool,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn run(
    display_name: Option<String>,
    out: Out,
    viewers: u32,
    rx: std_mpsc::Receiver<Input>,
    events: std_mpsc::Sender<Input>,
) {
    let display = match Display::open(display_name.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "no screen to share");
            out.notice(SCREEN_UNAVAILABLE, &e.to_string());
            out.close(SCREEN_UNAVAILABLE);
            return;
        }
    };
    let monitors = match display.monitors() {
        Ok(m) => m,
        Err(e) => {
            out.notice(SCREEN_UNAVAILABLE, &e.to_string());
            out.close(SCREEN_UNAVAILABLE);
            return;
        }
    };
    if !display.can_inject() {
        tracing::warn!("the X server lacks XTEST: viewers can watch but not control");
    }
    let conn = display.connection();
    let wake = display.wake_atom();
    std::thread::spawn(move || loop {
        match conn.wait_for_event() {
            Ok(x11rb::protocol::Event::ClientMessage(m)) if m.type_ == wake => return,
            Ok(event) => {
                if events.send(Input::X(event)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = events.send(Input::XGone(e.to_string()));
                return;
            }
        }
    });
    let codecs = CodecSupport::probe();
    if !out.send(ScreenBody::Capabilities(pb::ScreenCapabilities {
        codecs: codecs.names(),
        monitors: monitors.iter().map(Monitor::to_proto).collect(),
    })) {
        display.wake();
        return;
    }
    let mut channel = Channel {
        display,
        out,
        capture: None,
        codecs,
        codec: Codec::RawZstd,
        capabilities_stale: false,
        stream: Stream::new(viewers),
        held: HeldInput::default(),
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut go_on = true;
        // Work through everything queued before capturing once.
        while let Some(input) = next {
            go_on = channel.input(input);
            if !go_on {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !go_on || !channel.pump() {
            break;
        }
    }
    channel.finish();
}

struct Channel {
    display: Display,
    out: Out,
    capture: Option<Capture>,
    codecs: CodecSupport,
    /// The codec the server configured, as far as this agent can follow.
    codec: Codec,
    /// H.264 failed mid-frame: the server hears the new capabilities once
    /// the frame is out.
    capabilities_stale: bool,
    stream: Stream,
    held: HeldInput,
}

impl Channel {
    /// One input; `false` ends the channel.
    fn input(&mut self, input: Input) -> bool {
        match input {
            Input::Close => false,
            Input::XGone(e) => {
                tracing::warn!(error = %e, "the X display went away");
                self.out
                    .notice("display_gone", "the remote display went away");
                self.out.close(SCREEN_UNAVAILABLE);
                false
            }
            Input::Viewers(n) => {
                self.stream.set_viewers(n);
                true
            }
            Input::Screen(body) => self.screen(body),
            Input::X(event) => self.x_event(event),
        }
    }

    fn screen(&mut self, body: ScreenBody) -> bool {
        match body {
            ScreenBody::Configure(c) => return self.configure(&c),
            ScreenBody::Credit(c) => self.stream.credit(c.number),
            ScreenBody::KeyframeRequest(_) => self.stream.request_keyframe(),
            ScreenBody::Pointer(p) => self.pointer(&p),
            ScreenBody::Key(k) => self.key(&k),
            ScreenBody::SpecialKeys(s) => self.special(&s),
            ScreenBody::Clipboard(c) => {
                if c.text.len() <= CLIPBOARD_CAP {
                    if let Err(e) = self.display.set_clipboard(c.text) {
                        tracing::warn!(error = %e, "could not set the clipboard");
                    }
                }
            }
            ScreenBody::ReleaseInput(r) => {
                let actions = self.held.release_viewer(r.viewer);
                self.inject(&actions);
            }
            other => tracing::debug!(?other, "ignored a screen message"),
        }
        true
    }

    /// The server chose (or changed) the monitor and codec.
    fn configure(&mut self, c: &pb::ScreenConfigure) -> bool {
        let monitors = match self.display.monitors() {
            Ok(m) => m,
            Err(e) => {
                self.out.notice(SCREEN_UNAVAILABLE, &e.to_string());
                self.out.close(SCREEN_UNAVAILABLE);
                return false;
            }
        };
        if Codec::from_name(&c.codec).is_none() {
            self.out.notice(
                "codec_unsupported",
                &format!("this agent does not encode {:?}; sending raw-zstd", c.codec),
            );
        }
        let codec = self.codecs.choose(&c.codec);
        let codec_changed = std::mem::replace(&mut self.codec, codec) != codec;
        let monitor = match monitors.iter().find(|m| m.index == c.monitor) {
            Some(m) => m.clone(),
            None => {
                self.out.notice(
                    "monitor_unknown",
                    &format!("no monitor {}; showing the first", c.monitor),
                );
                monitors[0].clone()
            }
        };
        let reason = match &self.capture {
            None => "",
            Some(cap) if cap.monitor != monitor => "monitor_changed",
            Some(_) if codec_changed => "codec_changed",
            Some(_) => return true,
        };
        self.start(monitor, reason)
    }

    /// Starts (or restarts) the stream on `monitor` with the configured
    /// codec: format, then a keyframe.
    fn start(&mut self, monitor: Monitor, reason: &str) -> bool {
        let (encoding, failed) = self.codecs.start(self.codec);
        let mut reason = reason;
        if let Some(FellBack(why)) = failed {
            tracing::warn!(error = %why, "the H.264 encoder did not start; sending raw-zstd");
            self.codec = Codec::RawZstd;
            reason = "encoder_failed";
            if !self.out.notice("encoder_failed", &why) || !self.send_capabilities() {
                return false;
            }
        }
        let format = pb::ScreenFormat {
            codec: encoding.codec().name().into(),
            monitor: monitor.index,
            width: u32::from(monitor.width),
            height: u32::from(monitor.height),
            reason: reason.into(),
        };
        tracing::info!(
            monitor = monitor.index,
            width = monitor.width,
            height = monitor.height,
            reason,
            codec = %encoding.codec(),
            "screen stream starts"
        );
        self.capture = Some(Capture {
            monitor,
            picture: None,
            encoding,
            damage_pending: true,
        });
        self.stream.restart();
        self.out.send(ScreenBody::Format(format))
    }

    fn x_event(&mut self, event: x11rb::protocol::Event) -> bool {
        use x11rb::protocol::Event;
        match &event {
            Event::DamageNotify(_) => {
                if let Some(c) = &mut self.capture {
                    c.damage_pending = true;
                }
            }
            Event::RandrScreenChangeNotify(_) | Event::RandrNotify(_) => {
                return self.screen_changed()
            }
            Event::XfixesCursorNotify(_) => return self.send_cursor(),
            Event::MappingNotify(_) => {
                if let Err(e) = self.display.reload_keymap() {
                    tracing::warn!(error = %e, "could not reload the keymap");
                }
            }
            _ => match self.display.clipboard_event(&event) {
                Ok(Some(Ok(text))) if self.stream.viewers() > 0 => {
                    return self
                        .out
                        .send(ScreenBody::Clipboard(pb::ClipboardText { text, viewer: 0 }));
                }
                Ok(Some(Err(size))) => {
                    self.out.notice(
                        "clipboard_too_large",
                        &format!("the remote clipboard holds {size} bytes; at most {CLIPBOARD_CAP} are shared"),
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "clipboard"),
            },
        }
        true
    }

    /// XRandR says the screen changed: follow the monitor's new size.
    fn screen_changed(&mut self) -> bool {
        let Some(cap) = &self.capture else {
            return true;
        };
        let Ok(monitors) = self.display.monitors() else {
            return true;
        };
        let current = monitors
            .iter()
            .find(|m| m.name == cap.monitor.name)
            .or_else(|| monitors.iter().find(|m| m.index == cap.monitor.index));
        match current {
            Some(m) if *m == cap.monitor => true,
            Some(m) if m.width == cap.monitor.width && m.height == cap.monitor.height => {
                // Moved, same size: keep streaming from the new place.
                let m = m.clone();
                if let Some(c) = &mut self.capture {
                    c.monitor = m;
                    c.damage_pending = true;
                }
                self.stream.request_keyframe();
                true
            }
            Some(m) => {
                let m = m.clone();
                self.start(m, "resolution_changed")
            }
            None => {
                let m = monitors[0].clone();
                self.start(m, "monitor_changed")
            }
        }
    }

    fn send_cursor(&mut self) -> bool {
        if self.capture.is_none() || self.stream.viewers() == 0 {
            return true;
        }
        match self.display.cursor() {
            Ok(Some(shape)) => self.out.send(ScreenBody::Cursor(shape)),
            Ok(None) => true,
            Err(e) => {
                tracing::debug!(error = %e, "no cursor image");
                true
            }
        }
    }

    /// Captures and sends a frame if there is something to send and the
    /// viewers have room for it. `false`: the connection is gone.
    fn pump(&mut self) -> bool {
        let Some(cap) = &mut self.capture else {
            return true;
        };
        if !self.stream.may_send() || !(cap.damage_pending || self.stream.keyframe_due()) {
            return true;
        }
        let keyframe = self.stream.wants_keyframe() || cap.picture.is_none();
        let capture_started = Instant::now();
        let captured = if keyframe {
            self.display.capture_all(&cap.monitor).map(|p| {
                cap.picture = Some(p);
                None
            })
        } else {
            let damage = self.display.take_damage(&cap.monitor);
            match (damage, cap.picture.as_mut()) {
                (Ok(d), Some(picture)) => self
                    .display
                    .capture_damage(&cap.monitor, &d, picture)
                    .map(|_| Some(d)),
                (Err(e), _) => Err(e),
                (Ok(_), None) => Ok(None),
            }
        };
        cap.damage_pending = false;
        let captured_at = now_us();
        let damage = match captured {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "capture failed");
                self.out.notice("capture_failed", &e.to_string());
                return true;
            }
        };
        let Some(picture) = cap.picture.as_ref() else {
            return true;
        };
        if damage.as_ref().is_some_and(Vec::is_empty) {
            return true;
        }
        let capture_us = capture_started.elapsed().as_micros();
        let encode_started = Instant::now();
        let frame = match cap.encoding.encode(picture, damage.as_deref(), keyframe) {
            Ok(Some(f)) => f,
            Ok(None) => return true,
            Err(EncodeFailure::FellBack(FellBack(why))) => {
                // H.264 is gone for this channel: the viewers learn why and
                // get a raw-zstd format and keyframe of this very picture;
                // the server gets capabilities without h264.
                tracing::warn!(error = %why, "the H.264 encoder failed; falling back to raw-zstd");
                self.codecs.h264_failed();
                self.codec = Codec::RawZstd;
                self.capabilities_stale = true;
                let format = pb::ScreenFormat {
                    codec: Codec::RawZstd.name().into(),
                    monitor: cap.monitor.index,
                    width: u32::from(cap.monitor.width),
                    height: u32::from(cap.monitor.height),
                    reason: "encoder_failed".into(),
                };
                self.stream.restart();
                if !self.out.notice("encoder_failed", &why)
                    || !self.out.send(ScreenBody::Format(format))
                {
                    return false;
                }
                match cap.encoding.encode(picture, None, true) {
                    Ok(Some(f)) => f,
                    _ => return true,
                }
            }
            Err(EncodeFailure::Raw(e)) => {
                tracing::warn!(error = %e, "encoding failed");
                self.out.notice("encoder_failed", &e.to_string());
                self.stream.request_keyframe();
                cap.encoding = Encoding::raw();
                return true;
            }
        };
        let encode_us = encode_started.elapsed().as_micros();
        let is_key = frame.keyframe;
        let number = self.stream.sent(is_key);
        // What `tessera-bench screen-workloads` reads for encode times.
        tracing::debug!(
            number,
            keyframe = is_key,
            capture_us,
            encode_us,
            bytes = frame.data_len(),
            "screen frame sent"
        );
        for msg in frame.into_messages(number, captured_at) {
            if !self.out.send(ScreenBody::Frame(msg)) {
                return false;
            }
        }
        if std::mem::take(&mut self.capabilities_stale) && !self.send_capabilities() {
            return false;
        }
        if is_key {
            // A viewer starting from this keyframe needs the pointer too.
            self.display.forget_cursor();
            return self.send_cursor();
        }
        true
    }

    /// Tells the server what this agent encodes now (after H.264 failed).
    fn send_capabilities(&mut self) -> bool {
        let Ok(monitors) = self.display.monitors() else {
            return true;
        };
        let codecs = self.codecs.names();
        self.out
            .send(ScreenBody::Capabilities(pb::ScreenCapabilities {
                codecs,
                monitors: monitors.iter().map(Monitor::to_proto).collect(),
            }))
    }

    // --- input -------------------------------------------------------------

    fn inject(&self, actions: &[Action]) {
        if actions.is_empty() || !self.display.can_inject() {
            return;
        }
        for a in actions {
            if let Err(e) = self.display.inject(*a) {
                tracing::warn!(error = %e, "input injection failed");
                return;
            }
        }
        let _ = self.display.flush();
    }

    fn pointer(&mut self, p: &pb::PointerInput) {
        let Some(cap) = &self.capture else {
            return;
        };
        if !self.display.can_inject() {
            return;
        }
        if let Err(e) = self.display.move_pointer(&cap.monitor, p.x, p.y) {
            tracing::warn!(error = %e, "pointer injection failed");
            return;
        }
        let mut actions = self.held.buttons(p.viewer, p.buttons);
        actions.extend(held::wheel_clicks(p.wheel_x, p.wheel_y));
        self.inject(&actions);
        let _ = self.display.flush();
    }

    fn key(&mut self, k: &pb::KeyInput) {
        let id = match (k.usage, k.keysym) {
            (0, 0) => return,
            (0, sym) => KeyId::Keysym(sym),
            (usage, _) => KeyId::Usage(usage),
        };
        if !k.down {
            let actions = self.held.key_up(k.viewer, id);
            self.inject(&actions);
            return;
        }
        let physical = keys::by_usage(k.usage)
            .and_then(keys::Key::x_keycode)
            .filter(|&kc| self.display.keycode_usable(kc));
        let (keycode, shift) = match physical {
            Some(kc) => (kc, false),
            None if k.keysym != 0 => match self.display.keycode_for_keysym(k.keysym) {
                Ok(Some(found)) => found,
                Ok(None) => {
                    tracing::debug!(keysym = k.keysym, "no keycode for keysym");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keymap change failed");
                    return;
                }
            },
            None => return,
        };
        let modifiers = Modifiers::from_bits(k.modifiers);
        let mut actions = Vec::new();
        let is_lock_or_modifier = matches!(k.usage, 0x39 | 0x53 | 0xE0..=0xE7);
        if !is_lock_or_modifier {
            if let Ok(remote) = self.display.lock_state() {
                for lock in keys::lock_taps(modifiers, remote) {
                    if let Some(kc) = lock.x_keycode() {
                        actions.push(Action::Key {
                            keycode: kc,
                            down: true,
                        });
                        actions.push(Action::Key {
                            keycode: kc,
                            down: false,
                        });
                    }
                }
            }
        }
        // A keysym found at the Shift level, typed without Shift held.
        let shift_kc = keys::by_name("shift_left").and_then(keys::Key::x_keycode);
        let wrap_shift = shift && !modifiers.contains(Modifiers::SHIFT);
        if let (true, Some(s)) = (wrap_shift, shift_kc) {
            actions.push(Action::Key {
                keycode: s,
                down: true,
            });
        }
        actions.extend(self.held.key_down(k.viewer, id, keycode));
        if let (true, Some(s)) = (wrap_shift, shift_kc) {
            actions.push(Action::Key {
                keycode: s,
                down: false,
            });
        }
        self.inject(&actions);
    }

    fn special(&mut self, s: &pb::SpecialKeys) {
        let Some(combo) = Combo::parse(&s.combo) else {
            tracing::debug!(combo = %s.combo, "unknown special key combination");
            return;
        };
        let codes: Vec<u8> = combo.keys().iter().filter_map(|k| k.x_keycode()).collect();
        let mut actions: Vec<Action> = codes
            .iter()
            .map(|&keycode| Action::Key {
                keycode,
                down: true,
            })
            .collect();
        actions.extend(codes.iter().rev().map(|&keycode| Action::Key {
            keycode,
            down: false,
        }));
        self.inject(&actions);
    }

    /// The channel ends: everything anyone holds comes up, the event thread stops.
    fn finish(&mut self) {
        let actions = self.held.release_all();
        self.inject(&actions);
        self.display.wake();
    }
}
