//! The X display: capture of one monitor's pixels (MIT-SHM when the server
//! offers it, GetImage otherwise), where it changed (XDamage), its monitors
//! (XRandR), the pointer's shape (XFixes), input injection (XTest), the
//! keymap for keysym fallback, and the text clipboard.
//!
//! Every call here is blocking X11 I/O; the decisions about what to send
//! and inject live in `stream`, `held` and `tessera_screen`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::selection::{self, SelectionAtoms};
use tessera_proto::v1 as pb;
use tessera_screen::{Framebuffer, Rect};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::damage::{self, ConnectionExt as _};
use x11rb::protocol::randr::{self, ConnectionExt as _};
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xfixes::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{
    self, AtomEnum, ConnectionExt as _, CreateWindowAux, EventMask, ImageFormat,
    SelectionRequestEvent, Window, WindowClass,
};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// Largest clipboard text carried either way: the protocol's cap, which the
/// server enforces (more from the device would close its connection).
pub(crate) const CLIPBOARD_CAP: usize = tessera_proto::MAX_CLIPBOARD_TEXT;
/// Largest pointer shape sent (CursorShape's own cap).
const CURSOR_CAP: u16 = 256;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DisplayError {
    #[error("cannot connect to X display {display}: {detail}")]
    Connect { display: String, detail: String },
    #[error("the X server lacks the {0} extension")]
    MissingExtension(&'static str),
    #[error("unsupported pixel format: depth {depth}, {bpp} bits per pixel")]
    PixelFormat { depth: u8, bpp: u8 },
    #[error("X connection: {0}")]
    X(String),
}

macro_rules! x_err {
    ($($t:ty),*) => {$(
        impl From<$t> for DisplayError {
            fn from(e: $t) -> Self { DisplayError::X(e.to_string()) }
        }
    )*};
}
x_err!(
    x11rb::errors::ConnectionError,
    x11rb::errors::ReplyError,
    x11rb::errors::ReplyOrIdError,
    std::io::Error
);

/// A monitor as XRandR reports it (root-window coordinates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Monitor {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) x: i16,
    pub(crate) y: i16,
    pub(crate) width: u16,
    pub(crate) height: u16,
    pub(crate) primary: bool,
}

impl Monitor {
    pub(crate) fn to_proto(&self) -> pb::Monitor {
        pb::Monitor {
            index: self.index,
            name: self.name.clone(),
            x: i32::from(self.x),
            y: i32::from(self.y),
            width: u32::from(self.width),
            height: u32::from(self.height),
            primary: self.primary,
        }
    }

    fn rect(&self) -> Rect {
        Rect::new(0, 0, u32::from(self.width), u32::from(self.height))
    }
}

/// A shared-memory segment the X server writes images into. The pixels are
/// read back with `pread` on the same memory file: no mapping, no unsafe.
struct ShmSegment {
    seg: shm::Seg,
    file: File,
    len: usize,
}

/// The keymap: keysyms per keycode, for the keysym fallback.
struct Keymap {
    min: u8,
    per: usize,
    keysyms: Vec<u32>,
    /// Keycodes with no symbol, which the fallback may bind (in turn).
    spare: Vec<u8>,
    next_spare: usize,
}

impl Keymap {
    fn syms(&self, keycode: u8) -> &[u32] {
        let Some(i) = keycode.checked_sub(self.min) else {
            return &[];
        };
        let start = usize::from(i) * self.per;
        self.keysyms.get(start..start + self.per).unwrap_or(&[])
    }

    fn has_symbols(&self, keycode: u8) -> bool {
        self.syms(keycode).iter().any(|&s| s != 0)
    }

    /// The keycode producing `keysym`, and whether it needs Shift.
    fn find(&self, keysym: u32) -> Option<(u8, bool)> {
        let count = self.keysyms.len() / self.per.max(1);
        for level in [0usize, 1] {
            for i in 0..count {
                let keycode = self.min.checked_add(u8::try_from(i).ok()?)?;
                if self.syms(keycode).get(level) == Some(&keysym) {
                    return Some((keycode, level == 1));
                }
            }
        }
        None
    }
}

struct Atoms {
    clipboard: u32,
    utf8: u32,
    targets: u32,
    property: u32,
    wake: u32,
}

pub(crate) struct Display {
    conn: Arc<RustConnection>,
    root: Window,
    /// An unmapped window of ours: clipboard owner and requestor, and the
    /// target of the event that wakes the event thread to stop.
    window: Window,
    damage: damage::Damage,
    region: xfixes::Region,
    shm: Option<ShmSegment>,
    has_shm: bool,
    has_xtest: bool,
    keymap: Keymap,
    atoms: Atoms,
    clipboard: Option<String>,
    cursor_serial: Option<u32>,
    scratch: Vec<u8>,
}

impl Display {
    /// Connects to `name` (`None`: `$DISPLAY`) and sets up damage tracking,
    /// monitor, cursor and clipboard notifications.
    pub(crate) fn open(name: Option<&str>) -> Result<Display, DisplayError> {
        let shown = name
            .map(str::to_owned)
            .or_else(|| std::env::var("DISPLAY").ok())
            .unwrap_or_default();
        let (conn, screen_num) = x11rb::connect(name).map_err(|e| DisplayError::Connect {
            display: shown.clone(),
            detail: e.to_string(),
        })?;
        let screen = conn
            .setup()
            .roots
            .get(screen_num)
            .ok_or_else(|| DisplayError::X(format!("no screen {screen_num}")))?
            .clone();
        let bpp = conn
            .setup()
            .pixmap_formats
            .iter()
            .find(|f| f.depth == screen.root_depth)
            .map(|f| f.bits_per_pixel)
            .unwrap_or(0);
        let little = conn.setup().image_byte_order == xproto::ImageOrder::LSB_FIRST;
        if !matches!(screen.root_depth, 24 | 32) || bpp != 32 || !little {
            return Err(DisplayError::PixelFormat {
                depth: screen.root_depth,
                bpp,
            });
        }
        for name in [damage::X11_EXTENSION_NAME, xfixes::X11_EXTENSION_NAME] {
            if conn.extension_information(name)?.is_none() {
                return Err(DisplayError::MissingExtension(name));
            }
        }
        conn.xfixes_query_version(5, 0)?.reply()?;
        conn.damage_query_version(1, 1)?.reply()?;
        let has_shm = conn
            .extension_information(shm::X11_EXTENSION_NAME)?
            .is_some()
            && conn
                .shm_query_version()?
                .reply()
                .is_ok_and(|v| (v.major_version, v.minor_version) >= (1, 2));
        let has_xtest = conn
            .extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)?
            .is_some()
            && conn.xtest_get_version(2, 2)?.reply().is_ok();
        let has_randr = conn
            .extension_information(randr::X11_EXTENSION_NAME)?
            .is_some()
            && conn
                .randr_query_version(1, 5)?
                .reply()
                .is_ok_and(|v| (v.major_version, v.minor_version) >= (1, 5));
        let root = screen.root;
        let window = conn.generate_id()?;
        conn.create_window(
            0,
            window,
            root,
            -1,
            -1,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new().event_mask(EventMask::PROPERTY_CHANGE),
        )?;
        let damage = conn.generate_id()?;
        conn.damage_create(damage, root, damage::ReportLevel::NON_EMPTY)?;
        let region = conn.generate_id()?;
        conn.xfixes_create_region(region, &[])?;
        if has_randr {
            conn.randr_select_input(
                root,
                randr::NotifyMask::SCREEN_CHANGE | randr::NotifyMask::CRTC_CHANGE,
            )?;
        }
        conn.xfixes_select_cursor_input(root, xfixes::CursorNotifyMask::DISPLAY_CURSOR)?;
        let intern = |n: &str| -> Result<u32, DisplayError> {
            Ok(conn.intern_atom(false, n.as_bytes())?.reply()?.atom)
        };
        let atoms = Atoms {
            clipboard: intern("CLIPBOARD")?,
            utf8: intern("UTF8_STRING")?,
            targets: intern("TARGETS")?,
            property: intern("TESSERA_CLIPBOARD")?,
            wake: intern("TESSERA_WAKE")?,
        };
        conn.xfixes_select_selection_input(
            window,
            atoms.clipboard,
            xfixes::SelectionEventMask::SET_SELECTION_OWNER,
        )?;
        let keymap = read_keymap(&conn)?;
        conn.sync()?;
        Ok(Display {
            conn: Arc::new(conn),
            root,
            window,
            damage,
            region,
            shm: None,
            has_shm,
            has_xtest,
            keymap,
            atoms,
            clipboard: None,
            cursor_serial: None,
            scratch: Vec::new(),
        })
    }

    /// The connection, for the thread that waits for events.
    pub(crate) fn connection(&self) -> Arc<RustConnection> {
        self.conn.clone()
    }

    pub(crate) fn can_inject(&self) -> bool {
        self.has_xtest
    }

    /// Wakes the event thread (blocked in `wait_for_event`) so it sees it
    /// must stop: an event sent to our own window.
    pub(crate) fn wake(&self) {
        let event = xproto::ClientMessageEvent::new(32, self.window, self.atoms.wake, [0u32; 5]);
        let _ = self
            .conn
            .send_event(false, self.window, EventMask::NO_EVENT, event);
        let _ = self.conn.flush();
    }

    /// The type of the event [`Display::wake`] sends.
    pub(crate) fn wake_atom(&self) -> u32 {
        self.atoms.wake
    }

    /// The monitors, in XRandR's order; the whole screen as one monitor
    /// when XRandR has none to report.
    pub(crate) fn monitors(&self) -> Result<Vec<Monitor>, DisplayError> {
        let mut out = Vec::new();
        if let Ok(reply) = self
            .conn
            .randr_get_monitors(self.root, true)
            .map_err(DisplayError::from)
            .and_then(|c| c.reply().map_err(DisplayError::from))
        {
            for (i, m) in reply.monitors.iter().enumerate() {
                let name = self
                    .conn
                    .get_atom_name(m.name)?
                    .reply()
                    .map(|r| String::from_utf8_lossy(&r.name).into_owned())
                    .unwrap_or_default();
                if m.width == 0 || m.height == 0 {
                    continue;
                }
                out.push(Monitor {
                    index: i as u32,
                    name,
                    x: m.x,
                    y: m.y,
                    width: m.width,
                    height: m.height,
                    primary: m.primary,
                });
            }
        }
        if out.is_empty() {
            let geo = self.conn.get_geometry(self.root)?.reply()?;
            out.push(Monitor {
                index: 0,
                name: "screen".into(),
                x: 0,
                y: 0,
                width: geo.width,
                height: geo.height,
                primary: true,
            });
        }
        Ok(out)
    }

    /// Makes sure a shared segment of `len` bytes is attached (MIT-SHM);
    /// `false` when the server has none or refuses it.
    fn ensure_shm(&mut self, len: usize) -> bool {
        if !self.has_shm {
            return false;
        }
        if self.shm.as_ref().is_some_and(|s| s.len >= len) {
            return true;
        }
        if let Some(old) = self.shm.take() {
            let _ = self.conn.shm_detach(old.seg);
        }
        let attached = (|| -> Result<ShmSegment, DisplayError> {
            let fd = nix::sys::memfd::memfd_create(
                c"tessera-screen",
                nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
            )
            .map_err(|e| DisplayError::X(e.to_string()))?;
            let file = File::from(fd);
            file.set_len(len as u64)?;
            let seg = self.conn.generate_id()?;
            let for_server = file.try_clone()?;
            self.conn
                .shm_attach_fd(seg, std::os::fd::OwnedFd::from(for_server), false)?
                .check()?;
            Ok(ShmSegment { seg, file, len })
        })();
        match attached {
            Ok(s) => {
                self.shm = Some(s);
                true
            }
            Err(e) => {
                tracing::info!(error = %e, "MIT-SHM unavailable; capturing with GetImage");
                self.has_shm = false;
                false
            }
        }
    }

    /// Reads `rect` (monitor coordinates) of `monitor` into `picture`.
    fn read_rect(
        &mut self,
        monitor: &Monitor,
        rect: Rect,
        picture: &mut Framebuffer,
    ) -> Result<(), DisplayError> {
        let (x, y) = (
            i32::from(monitor.x) + rect.x as i32,
            i32::from(monitor.y) + rect.y as i32,
        );
        let (w, h) = (rect.width as u16, rect.height as u16);
        let len = rect.width as usize * rect.height as usize * 4;
        let bad = |e: tessera_screen::FormatError| DisplayError::X(e.to_string());
        if self.ensure_shm(len) {
            if let Some(s) = &self.shm {
                self.conn
                    .shm_get_image(
                        self.root,
                        x as i16,
                        y as i16,
                        w,
                        h,
                        !0,
                        ImageFormat::Z_PIXMAP.into(),
                        s.seg,
                        0,
                    )?
                    .reply()?;
                self.scratch.resize(len, 0);
                s.file.read_exact_at(&mut self.scratch, 0)?;
                return picture
                    .write_bgrx(rect, &self.scratch, rect.width as usize * 4)
                    .map_err(bad);
            }
        }
        let reply = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.root,
                x as i16,
                y as i16,
                w,
                h,
                !0,
            )?
            .reply()?;
        picture
            .write_bgrx(rect, &reply.data, rect.width as usize * 4)
            .map_err(bad)
    }

    /// Captures the whole monitor into a new picture and clears the damage.
    pub(crate) fn capture_all(&mut self, monitor: &Monitor) -> Result<Framebuffer, DisplayError> {
        self.take_damage(monitor)?;
        let mut picture = Framebuffer::new(u32::from(monitor.width), u32::from(monitor.height))
            .map_err(|e| DisplayError::X(e.to_string()))?;
        self.read_rect(monitor, monitor.rect(), &mut picture)?;
        Ok(picture)
    }

    /// Takes what XDamage collected since the last call, in monitor
    /// coordinates (clipped to the monitor).
    pub(crate) fn take_damage(&mut self, monitor: &Monitor) -> Result<Vec<Rect>, DisplayError> {
        self.conn
            .damage_subtract(self.damage, x11rb::NONE, self.region)?;
        let reply = self.conn.xfixes_fetch_region(self.region)?.reply()?;
        let bounds = monitor.rect();
        let mut out = Vec::new();
        for r in reply.rectangles {
            let x0 = (i32::from(r.x) - i32::from(monitor.x)).max(0);
            let y0 = (i32::from(r.y) - i32::from(monitor.y)).max(0);
            let x1 = i32::from(r.x) + i32::from(r.width) - i32::from(monitor.x);
            let y1 = i32::from(r.y) + i32::from(r.height) - i32::from(monitor.y);
            if x1 <= x0 || y1 <= y0 {
                continue;
            }
            let rect = Rect::new(x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32)
                .intersect(&bounds);
            if !rect.is_empty() {
                out.push(rect);
            }
        }
        Ok(out)
    }

    /// Refreshes `damage` of `picture` from the screen: each rectangle when
    /// there are few, else their bounding box.
    pub(crate) fn capture_damage(
        &mut self,
        monitor: &Monitor,
        damage: &[Rect],
        picture: &mut Framebuffer,
    ) -> Result<(), DisplayError> {
        if damage.len() <= 16 {
            for r in damage {
                self.read_rect(monitor, *r, picture)?;
            }
        } else {
            let bbox = damage.iter().fold(Rect::default(), |a, r| a.union(r));
            self.read_rect(monitor, bbox, picture)?;
        }
        Ok(())
    }

    /// The pointer's shape, if it changed since the last call.
    pub(crate) fn cursor(&mut self) -> Result<Option<pb::CursorShape>, DisplayError> {
        let c = self.conn.xfixes_get_cursor_image()?.reply()?;
        if self.cursor_serial == Some(c.cursor_serial)
            || c.width > CURSOR_CAP
            || c.height > CURSOR_CAP
        {
            return Ok(None);
        }
        self.cursor_serial = Some(c.cursor_serial);
        Ok(Some(pb::CursorShape {
            width: u32::from(c.width),
            height: u32::from(c.height),
            hot_x: u32::from(c.xhot),
            hot_y: u32::from(c.yhot),
            rgba: cursor_rgba(&c.cursor_image).into(),
            serial: c.cursor_serial,
        }))
    }

    /// Forgets the last pointer shape, so the next call reports it.
    pub(crate) fn forget_cursor(&mut self) {
        self.cursor_serial = None;
    }

    // --- input -------------------------------------------------------------

    pub(crate) fn inject(&self, action: super::held::Action) -> Result<(), DisplayError> {
        use super::held::Action;
        let (type_, detail) = match action {
            Action::Key { keycode, down } => (
                if down {
                    xproto::KEY_PRESS_EVENT
                } else {
                    xproto::KEY_RELEASE_EVENT
                },
                keycode,
            ),
            Action::Button { button, down } => (
                if down {
                    xproto::BUTTON_PRESS_EVENT
                } else {
                    xproto::BUTTON_RELEASE_EVENT
                },
                button,
            ),
        };
        self.conn
            .xtest_fake_input(type_, detail, x11rb::CURRENT_TIME, self.root, 0, 0, 0)?;
        Ok(())
    }

    /// Moves the pointer to `(x, y)` of `monitor` (clamped inside it).
    pub(crate) fn move_pointer(
        &self,
        monitor: &Monitor,
        x: u32,
        y: u32,
    ) -> Result<(), DisplayError> {
        let x = i32::from(monitor.x) + x.min(u32::from(monitor.width).saturating_sub(1)) as i32;
        let y = i32::from(monitor.y) + y.min(u32::from(monitor.height).saturating_sub(1)) as i32;
        self.conn.xtest_fake_input(
            xproto::MOTION_NOTIFY_EVENT,
            0,
            x11rb::CURRENT_TIME,
            self.root,
            x as i16,
            y as i16,
            0,
        )?;
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<(), DisplayError> {
        self.conn.flush()?;
        Ok(())
    }

    /// Whether `keycode` means anything in the display's keymap.
    pub(crate) fn keycode_usable(&self, keycode: u8) -> bool {
        self.keymap.has_symbols(keycode)
    }

    /// A keycode for `keysym`: one the keymap has (and whether Shift is
    /// needed), else a spare keycode bound to it for the occasion.
    pub(crate) fn keycode_for_keysym(
        &mut self,
        keysym: u32,
    ) -> Result<Option<(u8, bool)>, DisplayError> {
        if let Some(found) = self.keymap.find(keysym) {
            return Ok(Some(found));
        }
        if self.keymap.spare.is_empty() {
            return Ok(None);
        }
        let keycode = self.keymap.spare[self.keymap.next_spare % self.keymap.spare.len()];
        self.keymap.next_spare += 1;
        let per = self.keymap.per;
        let mut syms = vec![0u32; per];
        syms[0] = keysym;
        if per > 1 {
            syms[1] = keysym;
        }
        self.conn
            .change_keyboard_mapping(1, keycode, per as u8, &syms)?
            .check()?;
        let at = usize::from(keycode - self.keymap.min) * per;
        self.keymap.keysyms[at..at + per].copy_from_slice(&syms);
        Ok(Some((keycode, false)))
    }

    /// The keymap changed (MappingNotify): read it again.
    pub(crate) fn reload_keymap(&mut self) -> Result<(), DisplayError> {
        self.keymap = read_keymap(&self.conn)?;
        Ok(())
    }

    /// Caps Lock and Num Lock on the display now.
    pub(crate) fn lock_state(&self) -> Result<tessera_screen::keys::Modifiers, DisplayError> {
        use tessera_screen::keys::Modifiers;
        let mask = u16::from(self.conn.query_pointer(self.root)?.reply()?.mask);
        let mut m = Modifiers::empty();
        if mask & u16::from(xproto::KeyButMask::LOCK) != 0 {
            m = m | Modifiers::CAPS_LOCK;
        }
        if mask & u16::from(xproto::KeyButMask::MOD2) != 0 {
            m = m | Modifiers::NUM_LOCK;
        }
        Ok(m)
    }

    // --- clipboard ---------------------------------------------------------

    /// Makes `text` the display's CLIPBOARD (a control viewer sent it).
    pub(crate) fn set_clipboard(&mut self, text: String) -> Result<(), DisplayError> {
        self.clipboard = Some(text);
        self.conn
            .set_selection_owner(self.window, self.atoms.clipboard, x11rb::CURRENT_TIME)?;
        self.conn.flush()?;
        Ok(())
    }

    /// Handles a clipboard-related event; returns text to send to the
    /// viewers when the display's CLIPBOARD changed to someone else's.
    pub(crate) fn clipboard_event(
        &mut self,
        event: &x11rb::protocol::Event,
    ) -> Result<Option<Result<String, usize>>, DisplayError> {
        use x11rb::protocol::Event;
        match event {
            Event::XfixesSelectionNotify(e)
                if e.selection == self.atoms.clipboard
                    && e.owner != self.window
                    && e.owner != x11rb::NONE =>
            {
                self.conn.convert_selection(
                    self.window,
                    self.atoms.clipboard,
                    self.atoms.utf8,
                    self.atoms.property,
                    e.selection_timestamp,
                )?;
                self.conn.flush()?;
                Ok(None)
            }
            Event::SelectionNotify(e)
                if e.requestor == self.window && e.property != x11rb::NONE =>
            {
                let reply = self
                    .conn
                    .get_property(
                        true,
                        self.window,
                        self.atoms.property,
                        AtomEnum::ANY,
                        0,
                        (CLIPBOARD_CAP / 4 + 1) as u32,
                    )?
                    .reply()?;
                if reply.bytes_after > 0
                    || reply.value.len() > CLIPBOARD_CAP
                    || reply.type_ != self.atoms.utf8 && reply.type_ != u32::from(AtomEnum::STRING)
                {
                    return Ok(Some(Err(reply.value.len() + reply.bytes_after as usize)));
                }
                Ok(Some(Ok(String::from_utf8_lossy(&reply.value).into_owned())))
            }
            Event::SelectionRequest(e) if e.owner == self.window => {
                self.answer_selection(e)?;
                Ok(None)
            }
            Event::SelectionClear(e) if e.selection == self.atoms.clipboard => {
                self.clipboard = None;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn answer_selection(&self, e: &SelectionRequestEvent) -> Result<(), DisplayError> {
        let atoms = SelectionAtoms {
            clipboard: self.atoms.clipboard,
            utf8: self.atoms.utf8,
            targets: self.atoms.targets,
        };
        selection::answer_request(&self.conn, e, atoms, self.clipboard.as_deref())?;
        Ok(())
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        if let Some(s) = self.shm.take() {
            let _ = self.conn.shm_detach(s.seg);
        }
        let _ = self.conn.damage_destroy(self.damage);
        let _ = self.conn.xfixes_destroy_region(self.region);
        let _ = self.conn.destroy_window(self.window);
        let _ = self.conn.flush();
    }
}

fn read_keymap(conn: &RustConnection) -> Result<Keymap, DisplayError> {
    let min = conn.setup().min_keycode;
    let max = conn.setup().max_keycode;
    let reply = conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
    let per = usize::from(reply.keysyms_per_keycode).max(1);
    let mut keymap = Keymap {
        min,
        per,
        keysyms: reply.keysyms,
        spare: Vec::new(),
        next_spare: 0,
    };
    // Spare keycodes from the top, where no keyboard has keys.
    keymap.spare = (min..=max)
        .rev()
        .filter(|&k| !keymap.has_symbols(k))
        .take(8)
        .collect();
    Ok(keymap)
}

/// XFixes cursor pixels (ARGB, premultiplied) as straight RGBA bytes.
fn cursor_rgba(argb: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(argb.len() * 4);
    for &p in argb {
        let a = (p >> 24) as u8;
        let un = |c: u32| -> u8 {
            let c = (c & 0xFF) as u16;
            if a == 0 {
                0
            } else {
                ((c * 255 + u16::from(a) / 2) / u16::from(a)).min(255) as u8
            }
        };
        out.extend_from_slice(&[un(p >> 16), un(p >> 8), un(p), a]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_pixels_are_unpremultiplied() {
        assert_eq!(cursor_rgba(&[0xFF_10_20_30]), [0x10, 0x20, 0x30, 0xFF]);
        assert_eq!(cursor_rgba(&[0x80_40_00_80]), [0x80, 0x00, 0xFF, 0x80]);
        assert_eq!(cursor_rgba(&[0x00_00_00_00]), [0, 0, 0, 0]);
    }

    #[test]
    fn keymap_finds_keysyms_and_levels() {
        let keymap = Keymap {
            min: 8,
            per: 2,
            keysyms: vec![0x61, 0x41, 0x31, 0x21, 0, 0],
            spare: vec![10],
            next_spare: 0,
        };
        assert_eq!(keymap.find(0x41), Some((8, true)));
        assert_eq!(keymap.find(0x31), Some((9, false)));
        assert_eq!(keymap.find(0x20AC), None);
        assert!(!keymap.has_symbols(10) && keymap.has_symbols(9));
        assert!(keymap.syms(3).is_empty());
    }
}
