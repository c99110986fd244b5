//! The viewer's window: winit (X11 only) with a softbuffer surface. The
//! picture is scaled to the window (aspect kept, nearest pixel), the title
//! says codec, size, frame rate, latency and access, and says why when the
//! session ends. Keys and the pointer go to the remote screen only with
//! control access; the host key captures the keyboard (see `keys`, `grab`).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tessera_proto::v1::PointerInput;
use tessera_screen::Framebuffer;
use tokio::sync::mpsc::UnboundedSender;
use winit::application::ApplicationHandler;
use winit::dpi::PhysicalPosition;
use winit::event::{ElementState, MouseButton, MouseScrollDelta, WindowEvent};
use winit::event_loop::{ActiveEventLoop, ControlFlow, EventLoop};
use winit::keyboard::Key;
use winit::platform::scancode::PhysicalKeyExtScancode;
use winit::platform::x11::EventLoopBuilderExtX11;
use winit::window::{Window, WindowId};

use super::cursor;
use super::grab::KeyboardGrab;
use super::keys::{self, HostKey, KeyAction, Keyboard};
use super::stream::{self, Stream};
use super::{now_us, Cmd};

/// What the network side tells the window.
#[derive(Debug)]
pub(crate) enum Wake {
    /// The picture changed (or the stream's state did).
    Picture,
    /// A key from the keyboard grab: evdev code, keysym, down.
    GrabbedKey(u32, u32, bool),
}

/// The state both sides share: the picture and how the stream ended.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) stream: Stream,
    pub(crate) ended: Option<String>,
    pub(crate) notice: Option<String>,
    /// The remote pointer's newest shape, until the window takes it.
    pub(crate) cursor: Option<tessera_proto::v1::CursorShape>,
    /// The device's monitors, as its agent listed them.
    pub(crate) monitors: Vec<tessera_proto::v1::Monitor>,
    /// `--monitor N`, until the monitors are known.
    pub(crate) want_monitor: Option<u32>,
}

pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the picture sits in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

impl Placement {
    /// The largest picture of the source's aspect that fits the window,
    /// centred.
    pub(crate) fn fit(src: (u32, u32), win: (u32, u32)) -> Placement {
        let (sw, sh) = (u64::from(src.0.max(1)), u64::from(src.1.max(1)));
        let (ww, wh) = (u64::from(win.0), u64::from(win.1));
        let (w, h) = if ww * sh <= wh * sw {
            (ww, ww * sh / sw)
        } else {
            (wh * sw / sh, wh)
        };
        let (w, h) = (w.max(1) as u32, h.max(1) as u32);
        Placement {
            x: win.0.saturating_sub(w) / 2,
            y: win.1.saturating_sub(h) / 2,
            width: w,
            height: h,
        }
    }

    /// The remote pixel under window position (`x`, `y`), clamped to the picture.
    pub(crate) fn remote_pixel(self, src: (u32, u32), x: f64, y: f64) -> (u32, u32) {
        let map = |v: f64, off: u32, len: u32, src_len: u32| -> u32 {
            let rel = (v - f64::from(off)) / f64::from(len.max(1));
            let p = (rel * f64::from(src_len)).floor();
            p.clamp(0.0, f64::from(src_len.saturating_sub(1))) as u32
        };
        (
            map(x, self.x, self.width, src.0),
            map(y, self.y, self.height, src.1),
        )
    }
}

/// Draws `picture` into `out` (a `win` sized 0RGB buffer): scaled to
/// `place`, black around it, dimmed when the session is over.
pub(crate) fn draw(
    picture: &Framebuffer,
    win: (u32, u32),
    place: Placement,
    dim: bool,
    out: &mut [u32],
) {
    out.fill(0);
    let (sw, sh) = (picture.width(), picture.height());
    let cols: Vec<usize> = (0..place.width)
        .map(|c| (u64::from(c) * u64::from(sw) / u64::from(place.width)) as usize)
        .collect();
    for r in 0..place.height {
        let sy = (u64::from(r) * u64::from(sh) / u64::from(place.height)) as u32;
        let src = picture.row(sy);
        let start = (place.y + r) as usize * win.0 as usize + place.x as usize;
        let Some(dst) = out.get_mut(start..start + place.width as usize) else {
            return;
        };
        for (d, &c) in dst.iter_mut().zip(&cols) {
            let p = src[c];
            *d = if dim { (p >> 1) & 0x7F7F7F } else { p };
        }
    }
}

/// Mouse buttons as `PointerInput.buttons` bits.
fn button_bit(b: MouseButton) -> u32 {
    match b {
        MouseButton::Left => 1,
        MouseButton::Middle => 2,
        MouseButton::Right => 4,
        MouseButton::Back => 8,
        MouseButton::Forward => 16,
        MouseButton::Other(_) => 0,
    }
}

pub(crate) struct Options {
    pub(crate) device: String,
    pub(crate) control: bool,
    pub(crate) host_key: HostKey,
}

struct App {
    opts: Options,
    shared: Arc<Mutex<Shared>>,
    cmds: UnboundedSender<Cmd>,
    proxy: winit::event_loop::EventLoopProxy<Wake>,
    window: Option<Arc<Window>>,
    surface: Option<softbuffer::Surface<Arc<Window>, Arc<Window>>>,
    keyboard: Keyboard,
    grab: Option<KeyboardGrab>,
    buttons: u32,
    pointer: (u32, u32),
    place: Placement,
    src: (u32, u32),
    acked: Option<u64>,
    title: String,
    error: Option<anyhow::Error>,
    /// When the window closes by itself: a while after the session ended,
    /// long enough to read why in the title.
    close_at: Option<Instant>,
    /// The remote pointer's shape, and the scale (shown, remote width) it
    /// was last made at.
    cursor: Option<tessera_proto::v1::CursorShape>,
    cursor_made: Option<(u32, u32, u32)>,
}

/// How long the ended session's picture stays, dimmed, with the reason.
const LINGER: Duration = Duration::from_secs(5);

/// Opens the window and runs it until it is closed. Blocks: call it off
/// the async runtime.
pub(crate) fn run(
    opts: Options,
    shared: Arc<Mutex<Shared>>,
    cmds: UnboundedSender<Cmd>,
    on_proxy: impl FnOnce(winit::event_loop::EventLoopProxy<Wake>),
) -> anyhow::Result<()> {
    let event_loop = EventLoop::<Wake>::with_user_event()
        .with_any_thread(true)
        .build()
        .map_err(|e| {
            anyhow!("cannot open a window ({e}); `tessera view` needs an X display (DISPLAY), or use --snapshot")
        })?;
    let proxy = event_loop.create_proxy();
    on_proxy(proxy.clone());
    let mut app = App {
        keyboard: Keyboard::new(opts.host_key),
        opts,
        shared,
        cmds,
        proxy,
        window: None,
        surface: None,
        grab: None,
        buttons: 0,
        pointer: (0, 0),
        place: Placement::fit((1, 1), (1, 1)),
        src: (1, 1),
        acked: None,
        title: String::new(),
        error: None,
        close_at: None,
        cursor: None,
        cursor_made: None,
    };
    event_loop.run_app(&mut app)?;
    match app.error.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl App {
    fn send(&self, cmd: Cmd) {
        let _ = self.cmds.send(cmd);
    }

    fn refresh_title(&mut self) {
        let now = now_us();
        let text = {
            let s = lock(&self.shared);
            let pic = s.stream.picture();
            stream::title(&stream::TitleFacts {
                device: &self.opts.device,
                codec: s.stream.codec(),
                size: pic.map(|p| (p.width(), p.height())),
                fps: s.stream.stats.fps(now),
                latency_ms: s.stream.stats.latency_ms(),
                monitor: stream::monitor_shown(&s.monitors, s.stream.monitor()),
                control: self.opts.control,
                captured: self.grab.is_some(),
                host_key: self.opts.host_key.label(),
                ended: s.ended.as_deref(),
            })
        };
        if text != self.title {
            if let Some(w) = &self.window {
                w.set_title(&text);
            }
            self.title = text;
        }
    }

    fn redraw(&mut self) -> anyhow::Result<()> {
        let (Some(window), Some(surface)) = (self.window.as_ref(), self.surface.as_mut()) else {
            return Ok(());
        };
        let size = window.inner_size();
        let (Some(w), Some(h)) = (NonZeroU32::new(size.width), NonZeroU32::new(size.height)) else {
            return Ok(());
        };
        surface
            .resize(w, h)
            .map_err(|e| anyhow!("cannot size the window's surface: {e}"))?;
        let mut buf = surface
            .buffer_mut()
            .map_err(|e| anyhow!("cannot draw into the window: {e}"))?;
        let drawn = {
            let s = lock(&self.shared);
            match s.stream.picture() {
                Some(pic) => {
                    self.src = (pic.width(), pic.height());
                    self.place = Placement::fit(self.src, (w.get(), h.get()));
                    draw(
                        pic,
                        (w.get(), h.get()),
                        self.place,
                        s.ended.is_some(),
                        &mut buf,
                    );
                    s.stream.drawn()
                }
                None => {
                    buf.fill(0x202020);
                    None
                }
            }
        };
        buf.present()
            .map_err(|e| anyhow!("cannot show the picture: {e}"))?;
        if let Some(n) = drawn.filter(|&n| self.acked.is_none_or(|a| n > a)) {
            self.acked = Some(n);
            self.send(Cmd::Ack(n));
        }
        Ok(())
    }

    fn key(&mut self, evdev: Option<u32>, keysym: u32, down: bool) {
        let usage = evdev.map_or(0, keys::usage_of_evdev);
        match self.keyboard.key(usage, keysym, down) {
            KeyAction::Send(k) if self.opts.control => self.send(Cmd::Key(k)),
            KeyAction::Special(combo) if self.opts.control => self.send(Cmd::Special(combo)),
            KeyAction::NextMonitor if self.opts.control => {
                let next = {
                    let s = lock(&self.shared);
                    stream::next_monitor(&s.monitors, s.stream.monitor())
                };
                if let Some(m) = next {
                    self.send(Cmd::Monitor(m));
                }
            }
            KeyAction::ToggleCapture => self.toggle_capture(),
            _ => {}
        }
    }

    fn toggle_capture(&mut self) {
        if self.grab.take().is_some() {
            self.refresh_title();
            return;
        }
        if !self.opts.control {
            return;
        }
        let Some(window) = &self.window else {
            return;
        };
        match KeyboardGrab::start(window, self.proxy.clone()) {
            Ok(g) => self.grab = Some(g),
            Err(e) => {
                let mut s = lock(&self.shared);
                s.notice = Some(format!("cannot capture the keyboard: {e}"));
            }
        }
        self.refresh_title();
    }

    fn pointer(&mut self, wheel: (i32, i32)) {
        if !self.opts.control {
            return;
        }
        self.send(Cmd::Pointer(PointerInput {
            x: self.pointer.0,
            y: self.pointer.1,
            buttons: self.buttons,
            wheel_x: wheel.0,
            wheel_y: wheel.1,
            viewer: 0,
        }));
    }

    /// Makes the remote pointer's shape the window's pointer, scaled with
    /// the picture, when the shape or the scale changed.
    fn apply_cursor(&mut self, event_loop: &ActiveEventLoop) {
        let (Some(window), Some(shape)) = (&self.window, &self.cursor) else {
            return;
        };
        let made = (shape.serial, self.place.width, self.src.0);
        if self.cursor_made == Some(made) {
            return;
        }
        self.cursor_made = Some(made);
        let Some(img) = cursor::scaled(shape, self.place.width, self.src.0) else {
            return;
        };
        match winit::window::CustomCursor::from_rgba(
            img.rgba, img.width, img.height, img.hot_x, img.hot_y,
        ) {
            Ok(source) => window.set_cursor(event_loop.create_custom_cursor(source)),
            Err(e) => tracing::debug!(error = %e, "the remote pointer's shape is not usable here"),
        }
    }

    fn lost_focus(&mut self) {
        self.grab = None;
        let held = self.keyboard.forget_held();
        if self.opts.control && (held || self.buttons != 0) {
            self.buttons = 0;
            self.send(Cmd::Release);
        }
        self.refresh_title();
    }
}

impl ApplicationHandler<Wake> for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.window.is_some() {
            return;
        }
        let attrs =
            Window::default_attributes().with_title(format!("{} — Tessera", self.opts.device));
        let made = event_loop
            .create_window(attrs)
            .map_err(anyhow::Error::from)
            .and_then(|w| {
                let w = Arc::new(w);
                let ctx = softbuffer::Context::new(Arc::clone(&w))
                    .map_err(|e| anyhow!("cannot draw on this display: {e}"))?;
                let surface = softbuffer::Surface::new(&ctx, Arc::clone(&w))
                    .map_err(|e| anyhow!("cannot draw on this display: {e}"))?;
                Ok((w, surface))
            });
        match made {
            Ok((w, surface)) => {
                self.window = Some(w);
                self.surface = Some(surface);
                self.refresh_title();
            }
            Err(e) => {
                self.error = Some(e.context("cannot open the viewer's window"));
                event_loop.exit();
            }
        }
    }

    fn about_to_wait(&mut self, event_loop: &ActiveEventLoop) {
        self.apply_cursor(event_loop);
        match self.close_at {
            Some(at) if Instant::now() >= at => event_loop.exit(),
            Some(at) => event_loop.set_control_flow(ControlFlow::WaitUntil(at)),
            None => {}
        }
    }

    fn user_event(&mut self, _: &ActiveEventLoop, event: Wake) {
        match event {
            Wake::Picture => {
                let (ended, cursor) = {
                    let mut s = lock(&self.shared);
                    (s.ended.is_some(), s.cursor.take())
                };
                if self.close_at.is_none() && ended {
                    self.grab = None;
                    self.close_at = Some(Instant::now() + LINGER);
                }
                if cursor.is_some() {
                    self.cursor = cursor;
                }
                self.refresh_title();
                if let Some(w) = &self.window {
                    w.request_redraw();
                }
            }
            Wake::GrabbedKey(evdev, keysym, down) => self.key(Some(evdev), keysym, down),
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _: WindowId, event: WindowEvent) {
        match event {
            WindowEvent::CloseRequested => {
                self.grab = None;
                self.send(Cmd::Close);
                event_loop.exit();
            }
            WindowEvent::RedrawRequested => {
                if let Err(e) = self.redraw() {
                    self.error = Some(e);
                    self.send(Cmd::Close);
                    event_loop.exit();
                }
            }
            WindowEvent::Resized(_) => {
                if let Some(w) = &self.window {
                    w.request_redraw();
                }
            }
            WindowEvent::Focused(false) => self.lost_focus(),
            WindowEvent::KeyboardInput { event, .. } => {
                if self.grab.is_some() {
                    // The grab's own connection reports keys while it holds them.
                    return;
                }
                let evdev = event.physical_key.to_scancode();
                let keysym = match &event.logical_key {
                    Key::Character(s) => keys::keysym_of_text(s),
                    _ => 0,
                };
                self.key(evdev, keysym, event.state == ElementState::Pressed);
            }
            WindowEvent::CursorMoved { position, .. } => {
                let PhysicalPosition { x, y } = position;
                let at = self.place.remote_pixel(self.src, x, y);
                if at != self.pointer {
                    self.pointer = at;
                    self.pointer((0, 0));
                }
            }
            WindowEvent::MouseInput { state, button, .. } => {
                let bit = button_bit(button);
                if state == ElementState::Pressed {
                    self.buttons |= bit;
                } else {
                    self.buttons &= !bit;
                }
                self.pointer((0, 0));
            }
            WindowEvent::MouseWheel { delta, .. } => {
                let (x, y) = match delta {
                    MouseScrollDelta::LineDelta(x, y) => (x.round() as i32, y.round() as i32),
                    MouseScrollDelta::PixelDelta(p) => ((p.x / 40.0) as i32, (p.y / 40.0) as i32),
                };
                if (x, y) != (0, 0) {
                    self.pointer((x, y));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picture_fits_the_window_with_its_aspect() {
        let p = Placement::fit((1280, 800), (640, 600));
        assert_eq!(
            p,
            Placement {
                x: 0,
                y: 100,
                width: 640,
                height: 400
            }
        );
        let p = Placement::fit((1280, 800), (2000, 800));
        assert_eq!(
            p,
            Placement {
                x: 360,
                y: 0,
                width: 1280,
                height: 800
            }
        );
    }

    #[test]
    fn window_positions_map_to_remote_pixels_clamped() {
        let src = (1280, 800);
        let p = Placement::fit(src, (640, 600));
        assert_eq!(p.remote_pixel(src, 0.0, 100.0), (0, 0));
        assert_eq!(p.remote_pixel(src, 320.0, 300.0), (640, 400));
        assert_eq!(p.remote_pixel(src, 639.9, 499.9), (1279, 799));
        assert_eq!(
            p.remote_pixel(src, -5.0, 9999.0),
            (0, 799),
            "outside: the nearest edge"
        );
    }

    #[test]
    fn drawing_scales_by_nearest_pixel_and_dims_at_the_end() {
        let pic = Framebuffer::from_pixels(2, 1, vec![0x00FF_0000, 0x0000_FF00]).unwrap();
        let place = Placement::fit((2, 1), (4, 4));
        let mut out = vec![7; 16];
        draw(&pic, (4, 4), place, false, &mut out);
        assert_eq!(
            out,
            [
                0, 0, 0, 0, 0xFF0000, 0xFF0000, 0xFF00, 0xFF00, 0xFF0000, 0xFF0000, 0xFF00, 0xFF00,
                0, 0, 0, 0
            ]
        );
        draw(&pic, (4, 4), place, true, &mut out);
        assert_eq!(out[4], 0x7F0000);
    }
}
