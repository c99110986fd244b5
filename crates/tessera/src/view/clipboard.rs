//! The viewer's side of clipboard sharing: the X11 CLIPBOARD of the
//! display the window is on. Text copied there (by any program) is read
//! and handed to the caller to send; text the remote display's clipboard
//! received is offered here, so a paste on this desktop gets it.
//!
//! Only a `control` viewer shares the clipboard, and only without
//! `--no-clipboard` ([`shares_clipboard`]); the relay sends remote text to
//! control viewers only, and drops a view-only viewer's. Text over the
//! protocol's cap (`tessera_proto::MAX_CLIPBOARD_TEXT`) is not sent
//! ([`judge_copied`]): the relay would close the connection for it.
//!
//! Like the keyboard grab (`grab`), this lives on its own X connection,
//! with an unmapped window of its own as the selection's owner and
//! requestor, and a thread that waits for its events. A change of owner
//! comes from XFixes; the window's own ownership is never read back, so
//! remote text set here is not sent back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::anyhow;
use x11rb::connection::{Connection, RequestConnection as _};
use x11rb::protocol::xfixes::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{
    AtomEnum, ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask,
    SelectionRequestEvent, Window, WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

use tessera_agent::screen::selection::{self, SelectionAtoms};
use tessera_proto::MAX_CLIPBOARD_TEXT;

/// Whether this viewer shares the clipboard at all.
pub(crate) fn shares_clipboard(control: bool, disabled: bool) -> bool {
    control && !disabled
}

/// Text read from this desktop's clipboard: `Ok` to send, or `Err` with
/// its size in bytes when it is over the cap (or not whole: `more` bytes
/// were left unread), or not text.
pub(crate) fn judge_copied(value: Vec<u8>, more: u32, is_text: bool) -> Result<String, usize> {
    let size = value.len().saturating_add(more as usize);
    if !is_text || more > 0 || value.len() > MAX_CLIPBOARD_TEXT {
        return Err(size);
    }
    match String::from_utf8(value) {
        Ok(text) => Ok(text),
        Err(e) => {
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            if lossy.len() > MAX_CLIPBOARD_TEXT {
                Err(lossy.len())
            } else {
                Ok(lossy)
            }
        }
    }
}

struct Atoms {
    clipboard: u32,
    utf8: u32,
    targets: u32,
    property: u32,
    wake: u32,
}

/// The shared part: what the thread answers requests with.
struct State {
    conn: RustConnection,
    window: Window,
    atoms: Atoms,
    /// The text this window offers, while it owns CLIPBOARD.
    offered: Mutex<Option<String>>,
    stop: AtomicBool,
}

pub(crate) struct LocalClipboard {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl LocalClipboard {
    /// Connects to `$DISPLAY` and watches its CLIPBOARD: `copied` gets what
    /// another program puts there from now on.
    pub(crate) fn start(
        copied: impl Fn(Result<String, usize>) + Send + 'static,
    ) -> anyhow::Result<LocalClipboard> {
        let (conn, screen) = x11rb::connect(None)?;
        let root = conn
            .setup()
            .roots
            .get(screen)
            .map(|s| s.root)
            .ok_or_else(|| anyhow!("the X display has no screen {screen}"))?;
        if conn
            .extension_information(xfixes::X11_EXTENSION_NAME)?
            .is_none()
        {
            return Err(anyhow!("the X server lacks the XFIXES extension"));
        }
        conn.xfixes_query_version(5, 0)?.reply()?;
        let intern = |n: &str| -> anyhow::Result<u32> {
            Ok(conn.intern_atom(false, n.as_bytes())?.reply()?.atom)
        };
        let atoms = Atoms {
            clipboard: intern("CLIPBOARD")?,
            utf8: intern("UTF8_STRING")?,
            targets: intern("TARGETS")?,
            property: intern("TESSERA_VIEW_CLIPBOARD")?,
            wake: intern("TESSERA_VIEW_WAKE")?,
        };
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
        conn.xfixes_select_selection_input(
            window,
            atoms.clipboard,
            xfixes::SelectionEventMask::SET_SELECTION_OWNER,
        )?;
        conn.sync()?;
        let state = Arc::new(State {
            conn,
            window,
            atoms,
            offered: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let state = Arc::clone(&state);
            std::thread::spawn(move || state.run(&copied))
        };
        Ok(LocalClipboard {
            state,
            thread: Some(thread),
        })
    }

    /// Makes `text` this desktop's CLIPBOARD (the remote one changed).
    pub(crate) fn offer(&self, text: String) -> anyhow::Result<()> {
        let s = &self.state;
        *s.offered.lock().unwrap_or_else(PoisonError::into_inner) = Some(text);
        s.conn
            .set_selection_owner(s.window, s.atoms.clipboard, x11rb::CURRENT_TIME)?;
        s.conn.flush()?;
        Ok(())
    }
}

impl Drop for LocalClipboard {
    fn drop(&mut self) {
        let s = &self.state;
        s.stop.store(true, Ordering::Relaxed);
        let wake = ClientMessageEvent::new(32, s.window, s.atoms.wake, [0u32; 5]);
        let _ = s
            .conn
            .send_event(false, s.window, EventMask::NO_EVENT, wake);
        let _ = s.conn.flush();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = s.conn.destroy_window(s.window);
        let _ = s.conn.flush();
    }
}

impl State {
    fn run(&self, copied: &dyn Fn(Result<String, usize>)) {
        while !self.stop.load(Ordering::Relaxed) {
            let Ok(event) = self.conn.wait_for_event() else {
                return;
            };
            if let Err(e) = self.event(&event, copied) {
                tracing::debug!(error = %e, "the local clipboard");
            }
        }
    }

    fn event(&self, event: &Event, copied: &dyn Fn(Result<String, usize>)) -> anyhow::Result<()> {
        match event {
            // Another program copied: ask it for the text as UTF-8.
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
            }
            Event::SelectionNotify(e) if e.requestor == self.window => {
                if e.property == x11rb::NONE {
                    // The owner has no text to give.
                    return Ok(());
                }
                let cap = u32::try_from(MAX_CLIPBOARD_TEXT / 4 + 1).unwrap_or(u32::MAX);
                let reply = self
                    .conn
                    .get_property(
                        true,
                        self.window,
                        self.atoms.property,
                        AtomEnum::ANY,
                        0,
                        cap,
                    )?
                    .reply()?;
                let is_text =
                    reply.type_ == self.atoms.utf8 || reply.type_ == u32::from(AtomEnum::STRING);
                copied(judge_copied(reply.value, reply.bytes_after, is_text));
            }
            Event::SelectionRequest(e) if e.owner == self.window => self.answer(e)?,
            Event::SelectionClear(e) if e.selection == self.atoms.clipboard => {
                *self.offered.lock().unwrap_or_else(PoisonError::into_inner) = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// Gives a program that pastes the offered text (or the targets).
    fn answer(&self, e: &SelectionRequestEvent) -> anyhow::Result<()> {
        let offered = self
            .offered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let atoms = SelectionAtoms {
            clipboard: self.atoms.clipboard,
            utf8: self.atoms.utf8,
            targets: self.atoms.targets,
        };
        selection::answer_request(&self.conn, e, atoms, offered.as_deref())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_control_viewer_with_sharing_on_shares() {
        assert!(shares_clipboard(true, false));
        assert!(!shares_clipboard(false, false), "view only");
        assert!(!shares_clipboard(true, true), "--no-clipboard");
    }

    #[test]
    fn copied_text_is_sent_up_to_the_cap_and_no_further() {
        assert_eq!(judge_copied(b"hello".to_vec(), 0, true), Ok("hello".into()));
        let whole = vec![b'x'; MAX_CLIPBOARD_TEXT];
        assert_eq!(
            judge_copied(whole.clone(), 0, true).map(|t| t.len()),
            Ok(MAX_CLIPBOARD_TEXT)
        );
        assert_eq!(
            judge_copied(whole, 10, true),
            Err(MAX_CLIPBOARD_TEXT + 10),
            "more left unread: too large"
        );
        assert_eq!(
            judge_copied(vec![b'x'; MAX_CLIPBOARD_TEXT + 1], 0, true),
            Err(MAX_CLIPBOARD_TEXT + 1)
        );
        assert_eq!(judge_copied(vec![1, 2], 0, false), Err(2), "not text");
        assert_eq!(
            judge_copied(vec![b'a', 0xFF], 0, true),
            Ok("a\u{FFFD}".into()),
            "invalid UTF-8 is replaced"
        );
    }
}
