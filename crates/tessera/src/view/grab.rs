//! Capturing the keyboard: an X keyboard grab on the viewer's window, so
//! combinations the local desktop would take (Alt+Tab, Super, Ctrl+Alt+…)
//! reach the remote screen. winit has no keyboard grab, and the X server
//! reports grabbed keys to the client that grabbed them, so the grab lives
//! on its own X connection and a thread hands its key events to the window
//! as `Wake::GrabbedKey`. Dropping the grab gives the keyboard back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail};
use winit::event_loop::EventLoopProxy;
use winit::raw_window_handle::{HasWindowHandle, RawWindowHandle};
use winit::window::Window;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ClientMessageEvent, ConnectionExt, CreateWindowAux, EventMask, GrabMode, GrabStatus,
    KeyButMask, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::CURRENT_TIME;

use super::window::Wake;

pub(crate) struct KeyboardGrab {
    conn: Arc<RustConnection>,
    /// An unmapped window of the grab's connection, to wake its thread.
    waker: u32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The keyboard map of the X server: keysyms per keycode.
struct KeyMap {
    min: u8,
    per: usize,
    syms: Vec<u32>,
}

impl KeyMap {
    /// The keysym of `keycode` with Shift held or not (level 1 or 2).
    fn keysym(&self, keycode: u8, shift: bool) -> u32 {
        let base = usize::from(keycode.saturating_sub(self.min)) * self.per;
        let at = |i: usize| self.syms.get(base + i).copied().unwrap_or(0);
        match (shift, at(1)) {
            (true, s) if s != 0 => s,
            _ => at(0),
        }
    }
}

impl KeyboardGrab {
    /// Grabs the keyboard for `window`; fails when another client holds it.
    pub(crate) fn start(
        window: &Window,
        proxy: EventLoopProxy<Wake>,
    ) -> anyhow::Result<KeyboardGrab> {
        let target = match window.window_handle().map(|h| h.as_raw()) {
            Ok(RawWindowHandle::Xlib(h)) => u32::try_from(h.window)?,
            Ok(RawWindowHandle::Xcb(h)) => h.window.get(),
            _ => bail!("the window is not an X11 window"),
        };
        let (conn, screen) = x11rb::connect(None)?;
        let root = conn
            .setup()
            .roots
            .get(screen)
            .map(|s| s.root)
            .ok_or_else(|| anyhow!("the X display has no screen {screen}"))?;
        let (min, max) = (conn.setup().min_keycode, conn.setup().max_keycode);
        let map = conn
            .get_keyboard_mapping(min, max.saturating_sub(min).saturating_add(1))?
            .reply()?;
        let map = KeyMap {
            min,
            per: usize::from(map.keysyms_per_keycode.max(1)),
            syms: map.keysyms,
        };
        let waker = conn.generate_id()?;
        conn.create_window(
            0,
            waker,
            root,
            0,
            0,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new(),
        )?;
        let status = conn
            .grab_keyboard(
                false,
                target,
                CURRENT_TIME,
                GrabMode::ASYNC,
                GrabMode::ASYNC,
            )?
            .reply()?
            .status;
        if status != GrabStatus::SUCCESS {
            bail!("another program holds the keyboard ({status:?})");
        }
        let conn = Arc::new(conn);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let conn = Arc::clone(&conn);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(event) = conn.wait_for_event() else {
                        return;
                    };
                    let (code, state, down) = match event {
                        Event::KeyPress(e) => (e.detail, e.state, true),
                        Event::KeyRelease(e) => (e.detail, e.state, false),
                        _ => continue,
                    };
                    let shift = state.contains(KeyButMask::SHIFT);
                    let keysym = map.keysym(code, shift);
                    let evdev = u32::from(code).saturating_sub(8);
                    if proxy
                        .send_event(Wake::GrabbedKey(evdev, keysym, down))
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        Ok(KeyboardGrab {
            conn,
            waker,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for KeyboardGrab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.conn.ungrab_keyboard(CURRENT_TIME);
        let wake = ClientMessageEvent::new(32, self.waker, 1u32, [0u32; 5]);
        let _ = self
            .conn
            .send_event(false, self.waker, EventMask::NO_EVENT, wake);
        let _ = self.conn.flush();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keysyms_take_the_shift_level_when_there_is_one() {
        // keycodes 8 (a/A) and 9 (1/!) and 10 (Return, one level).
        let map = KeyMap {
            min: 8,
            per: 2,
            syms: vec![0x61, 0x41, 0x31, 0x21, 0xFF0D, 0],
        };
        assert_eq!(map.keysym(8, false), 0x61);
        assert_eq!(map.keysym(8, true), 0x41);
        assert_eq!(map.keysym(9, true), 0x21);
        assert_eq!(map.keysym(10, true), 0xFF0D);
        assert_eq!(map.keysym(200, false), 0, "past the map: no keysym");
    }
}
