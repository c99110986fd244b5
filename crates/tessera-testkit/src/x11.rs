//! A real X display for screen tests: [`Xvfb`] starts one on a free display
//! number (killed when dropped), and [`XTestClient`] is a small X client on
//! it that covers the screen with one window, draws known patterns, and
//! records the key and pointer events it receives — what a person's
//! application would see of the input a viewer sends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask, ImageFormat, InputFocus, Keycode,
    Rectangle, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// An `Xvfb` server of its own; killed when dropped.
pub struct Xvfb {
    child: Child,
    display: String,
    pub width: u32,
    pub height: u32,
}

impl Xvfb {
    /// Starts Xvfb at 1280×800, depth 24.
    pub fn start() -> anyhow::Result<Xvfb> {
        Xvfb::start_with(1280, 800)
    }

    /// Starts Xvfb with one screen of `width`×`height`×24 on a display
    /// number it picks itself (`-displayfd`), so parallel tests never race
    /// for one; returns once the display accepts clients.
    pub fn start_with(width: u32, height: u32) -> anyhow::Result<Xvfb> {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0"])
            .arg(format!("{width}x{height}x24"))
            .args(["-nolisten", "tcp", "-noreset", "+extension", "RANDR"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting Xvfb (is the xvfb package installed?)")?;
        let stdout = child.stdout.take().context("Xvfb's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("Xvfb did not name its display within 20 s");
            }
        };
        let number: u32 = match line.trim().parse() {
            Ok(n) => n,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("Xvfb said {line:?} instead of a display number");
            }
        };
        let xvfb = Xvfb {
            child,
            display: format!(":{number}"),
            width,
            height,
        };
        // -displayfd speaks once the server listens; check anyway.
        x11rb::connect(Some(&xvfb.display)).context("connecting to the new Xvfb")?;
        Ok(xvfb)
    }

    /// The display name, e.g. `:12`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Runs `xrandr` (from x11-xserver-utils) against this display.
    pub fn xrandr(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("xrandr")
            .arg("-display")
            .arg(&self.display)
            .args(args)
            .output()
            .context("running xrandr")?;
        if !out.status.success() {
            bail!("xrandr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Changes the screen's resolution with `xrandr`, as a person would in
    /// display settings. Xvfb's RandR lets the screen shrink and grow back
    /// up to the size it started with (never beyond) and knows only its
    /// starting mode, so a mode of the new size is made (`--newmode`), put
    /// on Xvfb's one output, `screen`, and chosen along with the matching
    /// framebuffer. User modes live as long as the server does, which is
    /// why [`Xvfb::start_with`] passes `-noreset` (without it, the server
    /// resets when `xrandr` disconnects and the mode is gone).
    pub fn resize(&mut self, width: u32, height: u32) -> anyhow::Result<()> {
        let name = format!("{width}x{height}");
        if !self
            .xrandr(&[])?
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&name))
        {
            // The timings mean nothing to Xvfb; only the size counts.
            let n = |v: u32| v.to_string();
            self.xrandr(&[
                "--newmode",
                &name,
                "60",
                &n(width),
                &n(width + 8),
                &n(width + 16),
                &n(width + 24),
                &n(height),
                &n(height + 1),
                &n(height + 2),
                &n(height + 3),
            ])?;
            self.xrandr(&["--addmode", "screen", &name])?;
        }
        self.xrandr(&["--output", "screen", "--mode", &name, "--fb", &name])?;
        self.width = width;
        self.height = height;
        Ok(())
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An input event as the test client's window received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XInput {
    /// A key: its keycode, the keysym the display's keymap gives it under
    /// `state` (Shift and AltGr levels), and the modifier state before it.
    Key {
        keycode: u8,
        keysym: u32,
        down: bool,
        state: u16,
    },
    Button {
        button: u8,
        down: bool,
        x: i16,
        y: i16,
    },
    Motion {
        x: i16,
        y: i16,
    },
}

/// X modifier state bits (core protocol).
pub mod state {
    pub const SHIFT: u16 = 1 << 0;
    pub const LOCK: u16 = 1 << 1;
    pub const CONTROL: u16 = 1 << 2;
    pub const MOD1: u16 = 1 << 3;
    pub const MOD2: u16 = 1 << 4;
    pub const MOD4: u16 = 1 << 6;
    pub const MOD5: u16 = 1 << 7;
}

/// A client of the display with one window over the whole screen.
pub struct XTestClient {
    conn: Arc<RustConnection>,
    window: u32,
    gc: u32,
    pub width: u16,
    pub height: u16,
    events: Arc<Mutex<Vec<XInput>>>,
    clipboard: Arc<Mutex<Clipboard>>,
    atoms: [u32; 3],
}

/// The test client's side of the CLIPBOARD: what it offers as owner, and
/// the last text it read from another owner.
#[derive(Default)]
struct Clipboard {
    offered: Option<String>,
    received: Option<String>,
}

impl XTestClient {
    /// Connects to `display`, maps a window over the whole screen (no
    /// window manager needed), focuses it and starts recording its input.
    pub fn open(display: &str) -> anyhow::Result<XTestClient> {
        let (conn, screen_num) = x11rb::connect(Some(display)).context("connecting to X")?;
        let screen = conn
            .setup()
            .roots
            .get(screen_num)
            .ok_or_else(|| anyhow!("no screen {screen_num}"))?
            .clone();
        let (width, height) = (screen.width_in_pixels, screen.height_in_pixels);
        let window = conn.generate_id()?;
        conn.create_window(
            screen.root_depth,
            window,
            screen.root,
            0,
            0,
            width,
            height,
            0,
            WindowClass::INPUT_OUTPUT,
            screen.root_visual,
            &CreateWindowAux::new()
                .override_redirect(1)
                .background_pixel(0)
                .event_mask(
                    EventMask::KEY_PRESS
                        | EventMask::KEY_RELEASE
                        | EventMask::BUTTON_PRESS
                        | EventMask::BUTTON_RELEASE
                        | EventMask::POINTER_MOTION
                        | EventMask::EXPOSURE,
                ),
        )?;
        let gc = conn.generate_id()?;
        conn.create_gc(gc, window, &CreateGCAux::new().graphics_exposures(0))?;
        conn.map_window(window)?;
        conn.sync()?;
        conn.set_input_focus(InputFocus::POINTER_ROOT, window, x11rb::CURRENT_TIME)?;
        let min = conn.setup().min_keycode;
        let count = conn.setup().max_keycode - min + 1;
        let mapping = conn.get_keyboard_mapping(min, count)?.reply()?;
        conn.sync()?;
        let conn = Arc::new(conn);
        let events = Arc::new(Mutex::new(Vec::new()));
        let clipboard = Arc::new(Mutex::new(Clipboard::default()));
        let intern = |n: &str| -> anyhow::Result<u32> {
            Ok(conn.intern_atom(false, n.as_bytes())?.reply()?.atom)
        };
        let atoms = [
            intern("CLIPBOARD")?,
            intern("UTF8_STRING")?,
            intern("TEST_CLIPBOARD")?,
        ];
        let (c, ev, clip) = (conn.clone(), events.clone(), clipboard.clone());
        let mut per = usize::from(mapping.keysyms_per_keycode);
        let mut keysyms = mapping.keysyms;
        std::thread::spawn(move || {
            let keysym = |keysyms: &[u32], per: usize, keycode: Keycode, st: u16| -> u32 {
                let level =
                    usize::from(st & state::SHIFT != 0) + if st & state::MOD5 != 0 { 4 } else { 0 };
                let base = usize::from(keycode.saturating_sub(min)) * per;
                let at = |i: usize| keysyms.get(base + i).copied().unwrap_or(0);
                match at(level) {
                    0 => at(level & !1),
                    s => s,
                }
            };
            while let Ok(event) = c.wait_for_event() {
                let input = match event {
                    Event::KeyPress(e) => XInput::Key {
                        keycode: e.detail,
                        keysym: keysym(&keysyms, per, e.detail, e.state.into()),
                        down: true,
                        state: e.state.into(),
                    },
                    Event::KeyRelease(e) => XInput::Key {
                        keycode: e.detail,
                        keysym: keysym(&keysyms, per, e.detail, e.state.into()),
                        down: false,
                        state: e.state.into(),
                    },
                    Event::ButtonPress(e) => XInput::Button {
                        button: e.detail,
                        down: true,
                        x: e.event_x,
                        y: e.event_y,
                    },
                    Event::ButtonRelease(e) => XInput::Button {
                        button: e.detail,
                        down: false,
                        x: e.event_x,
                        y: e.event_y,
                    },
                    Event::MotionNotify(e) => XInput::Motion {
                        x: e.event_x,
                        y: e.event_y,
                    },
                    Event::SelectionNotify(e) if e.property != x11rb::NONE => {
                        let text = c
                            .get_property(
                                true,
                                e.requestor,
                                e.property,
                                x11rb::protocol::xproto::AtomEnum::ANY,
                                0,
                                1 << 20,
                            )
                            .ok()
                            .and_then(|c| c.reply().ok())
                            .map(|r| String::from_utf8_lossy(&r.value).into_owned());
                        if let Ok(mut clip) = clip.lock() {
                            clip.received = text;
                        }
                        continue;
                    }
                    Event::SelectionRequest(e) => {
                        let offered = clip.lock().ok().and_then(|c| c.offered.clone());
                        let mut property = x11rb::NONE;
                        if let Some(text) = offered.filter(|_| e.target == atoms[1]) {
                            let _ = c.change_property8(
                                x11rb::protocol::xproto::PropMode::REPLACE,
                                e.requestor,
                                e.property,
                                atoms[1],
                                text.as_bytes(),
                            );
                            property = e.property;
                        }
                        let notify = x11rb::protocol::xproto::SelectionNotifyEvent {
                            response_type: x11rb::protocol::xproto::SELECTION_NOTIFY_EVENT,
                            sequence: 0,
                            time: e.time,
                            requestor: e.requestor,
                            selection: e.selection,
                            target: e.target,
                            property,
                        };
                        let _ = c.send_event(false, e.requestor, EventMask::NO_EVENT, notify);
                        let _ = c.flush();
                        continue;
                    }
                    Event::MappingNotify(_) => {
                        // The agent bound a spare keycode: read the keymap again.
                        if let Ok(Ok(m)) = c.get_keyboard_mapping(min, count).map(|c| c.reply()) {
                            per = usize::from(m.keysyms_per_keycode);
                            keysyms = m.keysyms;
                        }
                        continue;
                    }
                    _ => continue,
                };
                if let Ok(mut events) = ev.lock() {
                    events.push(input);
                }
            }
        });
        Ok(XTestClient {
            conn,
            window,
            gc,
            width,
            height,
            events,
            clipboard,
            atoms,
        })
    }

    /// Takes the CLIPBOARD with `text` (as an application copying it).
    pub fn copy_text(&self, text: &str) -> anyhow::Result<()> {
        if let Ok(mut c) = self.clipboard.lock() {
            c.offered = Some(text.to_owned());
        }
        self.conn
            .set_selection_owner(self.window, self.atoms[0], x11rb::CURRENT_TIME)?;
        self.conn.sync()?;
        Ok(())
    }

    /// Reads the CLIPBOARD's text from its owner (as an application
    /// pasting), waiting up to `limit`.
    pub fn paste_text(&self, limit: Duration) -> anyhow::Result<Option<String>> {
        if let Ok(mut c) = self.clipboard.lock() {
            c.received = None;
        }
        self.conn.convert_selection(
            self.window,
            self.atoms[0],
            self.atoms[1],
            self.atoms[2],
            x11rb::CURRENT_TIME,
        )?;
        self.conn.sync()?;
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(text) = self.clipboard.lock().ok().and_then(|c| c.received.clone()) {
                return Ok(Some(text));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(None)
    }

    /// Everything received so far.
    pub fn events(&self) -> Vec<XInput> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Forgets what was received so far.
    pub fn clear_events(&self) {
        if let Ok(mut e) = self.events.lock() {
            e.clear();
        }
    }

    /// Waits until `check` holds for the events received (up to `limit`).
    pub fn wait_for(&self, limit: Duration, check: impl Fn(&[XInput]) -> bool) -> bool {
        let start = std::time::Instant::now();
        loop {
            if check(&self.events()) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Paints a rectangle one colour (`0x00RRGGBB`) and waits until the
    /// server has drawn it.
    pub fn fill(&self, x: i16, y: i16, width: u16, height: u16, colour: u32) -> anyhow::Result<()> {
        self.conn.change_gc(
            self.gc,
            &x11rb::protocol::xproto::ChangeGCAux::new().foreground(colour),
        )?;
        self.conn.poly_fill_rectangle(
            self.window,
            self.gc,
            &[Rectangle {
                x,
                y,
                width,
                height,
            }],
        )?;
        self.conn.sync()?;
        Ok(())
    }

    /// Draws `pixels` (`0x00RRGGBB`, row after row, `width` wide) at
    /// `(x, y)` and waits until the server has drawn it.
    pub fn put_pixels(&self, x: i16, y: i16, width: u16, pixels: &[u32]) -> anyhow::Result<()> {
        if width == 0 {
            return Ok(());
        }
        // Requests stay small: 64 rows at a time.
        for (band, chunk) in pixels.chunks(usize::from(width) * 64).enumerate() {
            let h = chunk.len() / usize::from(width);
            let bytes: Vec<u8> = chunk.iter().flat_map(|p| p.to_le_bytes()).collect();
            self.conn.put_image(
                ImageFormat::Z_PIXMAP,
                self.window,
                self.gc,
                width,
                h as u16,
                x,
                y + (band * 64) as i16,
                0,
                24,
                &bytes,
            )?;
        }
        self.conn.sync()?;
        Ok(())
    }

    /// Moves a region of the window (as a terminal scrolls or a window is
    /// dragged) and waits until the server has done it.
    pub fn copy_area(
        &self,
        src_x: i16,
        src_y: i16,
        dst_x: i16,
        dst_y: i16,
        width: u16,
        height: u16,
    ) -> anyhow::Result<()> {
        self.conn.copy_area(
            self.window,
            self.window,
            self.gc,
            src_x,
            src_y,
            dst_x,
            dst_y,
            width,
            height,
        )?;
        self.conn.sync()?;
        Ok(())
    }

    /// Gives the window a pointer shape: `width`×`height` pixels of one
    /// colour (`0x00RRGGBB`), hot spot at `hot` (what an application does
    /// over a text field or a link). The window covers the screen, so the
    /// pointer is over it and the display shows the new shape at once.
    pub fn set_cursor(
        &self,
        width: u16,
        height: u16,
        colour: u32,
        hot: (u16, u16),
    ) -> anyhow::Result<()> {
        let bits = self.conn.generate_id()?;
        self.conn
            .create_pixmap(1, bits, self.window, width, height)?;
        let ones = self.conn.generate_id()?;
        self.conn
            .create_gc(ones, bits, &CreateGCAux::new().foreground(1))?;
        self.conn.poly_fill_rectangle(
            bits,
            ones,
            &[Rectangle {
                x: 0,
                y: 0,
                width,
                height,
            }],
        )?;
        let channel = |shift: u32| ((colour >> shift) & 0xFF) as u16 * 0x101;
        let cursor = self.conn.generate_id()?;
        self.conn.create_cursor(
            cursor,
            bits,
            bits,
            channel(16),
            channel(8),
            channel(0),
            0,
            0,
            0,
            hot.0,
            hot.1,
        )?;
        self.conn.change_window_attributes(
            self.window,
            &x11rb::protocol::xproto::ChangeWindowAttributesAux::new().cursor(cursor),
        )?;
        self.conn.free_gc(ones)?;
        self.conn.free_pixmap(bits)?;
        self.conn.free_cursor(cursor)?;
        self.conn.sync()?;
        Ok(())
    }

    /// Draws a known pattern over the whole window: distinct, textured
    /// pixels derived from `seed`; returns them (row after row).
    pub fn draw_pattern(&self, seed: u32) -> anyhow::Result<Vec<u32>> {
        let pixels = pattern(u32::from(self.width), u32::from(self.height), seed);
        self.put_pixels(0, 0, self.width, &pixels)?;
        Ok(pixels)
    }

    /// Makes a known pattern (see [`XTestClient::draw_pattern`]) the
    /// window's background, so that the X server itself repaints it
    /// wherever the window is exposed again — after a resolution change,
    /// say — as an application redrawing on `Expose` would. Returns it.
    pub fn paint_background(&self, seed: u32) -> anyhow::Result<Vec<u32>> {
        let pixels = pattern(u32::from(self.width), u32::from(self.height), seed);
        let pixmap = self.conn.generate_id()?;
        self.conn
            .create_pixmap(24, pixmap, self.window, self.width, self.height)?;
        let width = usize::from(self.width);
        for (band, chunk) in pixels.chunks(width * 64).enumerate() {
            let bytes: Vec<u8> = chunk.iter().flat_map(|p| p.to_le_bytes()).collect();
            self.conn.put_image(
                ImageFormat::Z_PIXMAP,
                pixmap,
                self.gc,
                self.width,
                (chunk.len() / width) as u16,
                0,
                (band * 64) as i16,
                0,
                24,
                &bytes,
            )?;
        }
        self.conn.change_window_attributes(
            self.window,
            &x11rb::protocol::xproto::ChangeWindowAttributesAux::new().background_pixmap(pixmap),
        )?;
        self.conn.free_pixmap(pixmap)?;
        self.conn.clear_area(false, self.window, 0, 0, 0, 0)?;
        self.conn.sync()?;
        Ok(pixels)
    }

    /// Reads the screen back from the X server (`0x00RRGGBB`, row after row).
    pub fn screenshot(&self) -> anyhow::Result<Vec<u32>> {
        let reply = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.window,
                0,
                0,
                self.width,
                self.height,
                !0,
            )?
            .reply()?;
        Ok(reply
            .data
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
            .collect())
    }
}

/// The known pattern [`XTestClient::draw_pattern`] draws: blocks of colour
/// with fine texture, different for every seed.
pub fn pattern(width: u32, height: u32, seed: u32) -> Vec<u32> {
    (0..width * height)
        .map(|i| {
            let (x, y) = (i % width, i / width);
            let block =
                (x / 40).wrapping_mul(0x9E37_79B9) ^ (y / 30).wrapping_mul(0x85EB_CA6B) ^ seed;
            let texture = (x ^ y) & 7;
            (block.wrapping_mul(0x0101_0101) ^ texture) & 0x00FF_FFFF
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xvfb_starts_and_the_client_draws_and_reads_back() {
        let x = Xvfb::start_with(320, 200).unwrap();
        let client = XTestClient::open(x.display()).unwrap();
        assert_eq!((client.width, client.height), (320, 200));
        let drawn = client.draw_pattern(7).unwrap();
        assert_eq!(client.screenshot().unwrap(), drawn);
        client.fill(0, 0, 10, 10, 0x123456).unwrap();
        assert_eq!(client.screenshot().unwrap()[0], 0x123456);
        let xvfb2 = Xvfb::start_with(100, 100).unwrap();
        assert_ne!(x.display(), xvfb2.display());
    }

    #[test]
    fn xvfb_shrinks_and_grows_back_through_xrandr() {
        let mut x = Xvfb::start_with(320, 200).unwrap();
        let root_size = |x: &Xvfb| {
            let (conn, screen) = x11rb::connect(Some(x.display())).unwrap();
            let root = conn.setup().roots[screen].root;
            let g = conn.get_geometry(root).unwrap().reply().unwrap();
            (g.width, g.height)
        };
        x.resize(200, 120).unwrap();
        assert_eq!(root_size(&x), (200, 120));
        assert_eq!((x.width, x.height), (200, 120));
        x.resize(320, 200).unwrap();
        assert_eq!(root_size(&x), (320, 200));
        // Twice to one size: the mode made the first time is reused.
        x.resize(200, 120).unwrap();
        assert_eq!(root_size(&x), (200, 120));
    }
}
