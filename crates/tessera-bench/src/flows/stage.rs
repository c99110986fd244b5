//! The remote desktop of `screen-workloads`: an X client of its own on the
//! benchmark's Xvfb that plays what a person's applications would — a
//! terminal that echoes keys, scrolls and is redrawn, a window dragged
//! across the desktop, full-screen motion — with plain X requests
//! (rectangles, images, `CopyArea` for scrolling, `ConfigureWindow` for a
//! move), so no terminal emulator or window manager is needed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ChangeGCAux, ConfigureWindowAux, ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask,
    ImageFormat, InputFocus, Rectangle, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

pub(crate) const W: u16 = 1920;
pub(crate) const H: u16 = 1080;
const DESKTOP: u32 = 0x2E3440;
const TERM_BG: u32 = 0x1D1F21;
/// The terminal: 150 columns × 56 lines of 8×16 cells.
const TERM: (i16, i16, u16, u16) = (100, 80, 1200, 896);
const CELL: (u16, u16) = (8, 16);
/// Colours of echoed glyphs, in turn (never the terminal's background).
const INK: [u32; 6] = [0xC5C8C6, 0x81A2BE, 0xB5BD68, 0xDE935F, 0xCC6666, 0x8ABEB7];
/// The dragged window.
const MOVER: (u16, u16) = (640, 400);
/// Distinct full-screen pictures the motion workload cycles through.
const MOTION_FRAMES: usize = 8;

/// Where the `n`-th echoed key's glyph lands, a pixel of it that is always
/// inked, and its colour: the viewer looks there for it.
pub(crate) fn echo_cell(n: u64) -> (u32, u32, u32) {
    let cols = u64::from(TERM.2 / CELL.0);
    let rows = u64::from(TERM.3 / CELL.1);
    let cell = n % (cols * rows);
    let x = TERM.0 as u32 + (cell % cols) as u32 * u32::from(CELL.0);
    let y = TERM.1 as u32 + (cell / cols) as u32 * u32::from(CELL.1);
    (x + 1, y + 7, INK[(n % INK.len() as u64) as usize])
}

/// The rectangles of an "E"-like glyph in the cell at (`x`, `y`).
fn glyph(x: i16, y: i16) -> [Rectangle; 4] {
    let r = |dx: i16, dy: i16, w: u16, h: u16| Rectangle {
        x: x + dx,
        y: y + dy,
        width: w,
        height: h,
    };
    [r(1, 2, 1, 12), r(1, 2, 5, 1), r(1, 7, 4, 1), r(1, 13, 5, 1)]
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

/// One terminal line of text-like glyphs (BGRX bytes, `width`×16): a
/// random length of random 6×11 dot patterns, light on the terminal's dark.
fn text_line(width: u16, seed: u32) -> Vec<u8> {
    let (w, h) = (usize::from(width), usize::from(CELL.1));
    let mut px = vec![TERM_BG; w * h];
    let mut rnd = xorshift(seed);
    let len = (rnd() as usize % (w / 8)).max(8);
    for col in 0..len {
        let shape = rnd();
        if shape % 7 == 0 {
            continue; // a space
        }
        for gy in 3..14 {
            for gx in 1..7 {
                if (shape.wrapping_mul(2_654_435_761) >> ((gy * 8 + gx) % 31)) & 1 == 1 {
                    px[gy * w + col * 8 + gx] = 0xC5C8C6;
                }
            }
        }
    }
    px.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// A full-screen picture of motion: colour fields that change everywhere
/// from one picture to the next (not a translation, which copies would
/// carry), like video.
fn motion_picture(t: u32) -> Vec<u8> {
    let (w, h) = (u32::from(W), u32::from(H));
    let mut out = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let r = (x * 255 / w + t * 23) & 0xFF;
            let g = (y * 255 / h + t * 41) & 0xFF;
            let b = ((x / 3) ^ (y / 2)).wrapping_add(t * 57) & 0xFF;
            out.extend_from_slice(&[b as u8, g as u8, r as u8, 0]);
        }
    }
    out
}

pub(crate) struct Stage {
    conn: Arc<RustConnection>,
    window: u32,
    gc: u32,
    mover: u32,
    motion: Vec<u32>,
    lines: Vec<Vec<u8>>,
    /// Keys echoed so far.
    echoes: Arc<AtomicU64>,
}

impl Stage {
    /// Connects to `display`, covers the screen with one focused window,
    /// paints a desktop with a terminal, and starts echoing keys.
    pub(crate) fn open(display: &str) -> anyhow::Result<Stage> {
        let (conn, screen_num) = x11rb::connect(Some(display)).context("connecting to X")?;
        let screen = conn
            .setup()
            .roots
            .get(screen_num)
            .ok_or_else(|| anyhow!("no X screen"))?
            .clone();
        let window = conn.generate_id()?;
        conn.create_window(
            screen.root_depth,
            window,
            screen.root,
            0,
            0,
            W,
            H,
            0,
            WindowClass::INPUT_OUTPUT,
            screen.root_visual,
            &CreateWindowAux::new()
                .override_redirect(1)
                .background_pixel(DESKTOP)
                .event_mask(EventMask::KEY_PRESS),
        )?;
        let gc = conn.generate_id()?;
        conn.create_gc(gc, window, &CreateGCAux::new().graphics_exposures(0))?;
        // The dragged window: its picture is its background, so the X
        // server moves and repaints it by itself.
        let content = conn.generate_id()?;
        conn.create_pixmap(screen.root_depth, content, window, MOVER.0, MOVER.1)?;
        for band in 0..MOVER.1 / CELL.1 {
            conn.put_image(
                ImageFormat::Z_PIXMAP,
                content,
                gc,
                MOVER.0,
                CELL.1,
                0,
                (band * CELL.1) as i16,
                0,
                screen.root_depth,
                &text_line(MOVER.0, 77 + u32::from(band)),
            )?;
        }
        conn.change_gc(gc, &ChangeGCAux::new().foreground(0x5E81AC))?;
        conn.poly_fill_rectangle(content, gc, &[rect(0, 0, MOVER.0, 24)])?;
        let mover = conn.generate_id()?;
        conn.create_window(
            screen.root_depth,
            mover,
            window,
            400,
            200,
            MOVER.0,
            MOVER.1,
            0,
            WindowClass::INPUT_OUTPUT,
            screen.root_visual,
            &CreateWindowAux::new().background_pixmap(content),
        )?;
        conn.free_pixmap(content)?;
        let mut motion = Vec::new();
        for t in 0..MOTION_FRAMES {
            let p = conn.generate_id()?;
            conn.create_pixmap(screen.root_depth, p, window, W, H)?;
            let bytes = motion_picture(t as u32);
            let band = usize::from(W) * 4 * 32;
            for (i, chunk) in bytes.chunks(band).enumerate() {
                conn.put_image(
                    ImageFormat::Z_PIXMAP,
                    p,
                    gc,
                    W,
                    (chunk.len() / (usize::from(W) * 4)) as u16,
                    0,
                    (i * 32) as i16,
                    0,
                    screen.root_depth,
                    chunk,
                )?;
            }
            motion.push(p);
        }
        conn.map_window(window)?;
        conn.sync()?;
        conn.set_input_focus(InputFocus::POINTER_ROOT, window, x11rb::CURRENT_TIME)?;
        let lines = (0..16).map(|i| text_line(TERM.2, 1000 + i)).collect();
        let stage = Stage {
            conn: Arc::new(conn),
            window,
            gc,
            mover,
            motion,
            lines,
            echoes: Arc::new(AtomicU64::new(0)),
        };
        stage.desktop()?;
        stage.spawn_echo();
        Ok(stage)
    }

    /// A terminal's echo: each key pressed inks the next cell at once.
    fn spawn_echo(&self) {
        let (conn, window, echoes) = (self.conn.clone(), self.window, self.echoes.clone());
        std::thread::spawn(move || {
            let Ok(gc) = conn.generate_id() else {
                return;
            };
            if conn.create_gc(gc, window, &CreateGCAux::new()).is_err() {
                return;
            }
            // Ends when the display goes away.
            while let Ok(event) = conn.wait_for_event() {
                if let Event::KeyPress(_) = event {
                    let n = echoes.fetch_add(1, Ordering::SeqCst);
                    let (x, y, colour) = echo_cell(n);
                    let _ = conn.change_gc(gc, &ChangeGCAux::new().foreground(colour));
                    let _ =
                        conn.poly_fill_rectangle(window, gc, &glyph(x as i16 - 1, y as i16 - 7));
                    let _ = conn.flush();
                }
            }
        });
    }

    /// Keys echoed so far.
    pub(crate) fn echoed(&self) -> u64 {
        self.echoes.load(Ordering::SeqCst)
    }

    /// The desktop and an empty terminal, the dragged window hidden.
    pub(crate) fn desktop(&self) -> anyhow::Result<()> {
        self.conn.unmap_window(self.mover)?;
        self.conn.clear_area(false, self.window, 0, 0, 0, 0)?;
        self.conn
            .change_gc(self.gc, &ChangeGCAux::new().foreground(TERM_BG))?;
        self.conn.poly_fill_rectangle(
            self.window,
            self.gc,
            &[rect(TERM.0, TERM.1, TERM.2, TERM.3)],
        )?;
        self.conn.sync()?;
        Ok(())
    }

    /// The terminal scrolls by one line: its text moves up (`CopyArea`, as
    /// terminals do) and a new line is drawn at the bottom.
    pub(crate) fn scroll(&self, i: usize) -> anyhow::Result<()> {
        let line = i16::try_from(CELL.1)?;
        self.conn.copy_area(
            self.window,
            self.window,
            self.gc,
            TERM.0,
            TERM.1 + line,
            TERM.0,
            TERM.1,
            TERM.2,
            TERM.3 - CELL.1,
        )?;
        self.conn.put_image(
            ImageFormat::Z_PIXMAP,
            self.window,
            self.gc,
            TERM.2,
            CELL.1,
            TERM.0,
            TERM.1 + i16::try_from(TERM.3)? - line,
            0,
            24,
            &self.lines[i % self.lines.len()],
        )?;
        self.conn.flush()?;
        Ok(())
    }

    /// The window, dragged: step `i` of a path that bounces around the
    /// desktop, 8 pixels across and 4 down a step.
    pub(crate) fn drag(&self, i: usize) -> anyhow::Result<()> {
        if i == 0 {
            self.conn.map_window(self.mover)?;
        }
        let bounce = |v: usize, span: usize| -> i32 {
            let m = v % (2 * span);
            (if m < span { m } else { 2 * span - m }) as i32
        };
        let x = 100 + bounce(i * 8, usize::from(W - MOVER.0) - 200);
        let y = 100 + bounce(i * 4, usize::from(H - MOVER.1) - 200);
        self.conn
            .configure_window(self.mover, &ConfigureWindowAux::new().x(x).y(y))?;
        self.conn.flush()?;
        Ok(())
    }

    /// Picture `i` of the motion: the whole screen changes.
    pub(crate) fn motion(&self, i: usize) -> anyhow::Result<()> {
        let p = self.motion[i % self.motion.len()];
        self.conn
            .copy_area(p, self.window, self.gc, 0, 0, 0, 0, W, H)?;
        self.conn.flush()?;
        Ok(())
    }

    /// Waits until the X server has done everything asked so far.
    pub(crate) fn sync(&self) -> anyhow::Result<()> {
        self.conn.sync()?;
        Ok(())
    }
}

fn rect(x: i16, y: i16, width: u16, height: u16) -> Rectangle {
    Rectangle {
        x,
        y,
        width,
        height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_land_in_distinct_cells_inside_the_terminal_in_ink() {
        let cells: std::collections::HashSet<(u32, u32)> =
            (0..500).map(|n| (echo_cell(n).0, echo_cell(n).1)).collect();
        assert_eq!(cells.len(), 500);
        for n in [0, 149, 150, 8399] {
            let (x, y, c) = echo_cell(n);
            assert!(
                (100..1300).contains(&x) && (80..976).contains(&y),
                "{n}: {x},{y}"
            );
            assert_ne!(c, TERM_BG);
        }
        // The looked-at pixel is on the glyph's vertical bar.
        let (x, y, _) = echo_cell(3);
        let bar = glyph(x as i16 - 1, y as i16 - 7)[0];
        assert!(i32::from(bar.x) == x as i32 && (bar.y..bar.y + 12).contains(&(y as i16)));
    }
}
