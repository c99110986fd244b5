//! Serving the X11 CLIPBOARD selection while holding it: the one answer to
//! a `SelectionRequest`, shared by the agent's display (text copied on the
//! viewer's side) and `tessera view`'s window (text copied on the device).

use x11rb::connection::Connection;
use x11rb::errors::ConnectionError;
use x11rb::protocol::xproto::{
    self, AtomEnum, ConnectionExt as _, EventMask, PropMode, SelectionNotifyEvent,
    SelectionRequestEvent,
};
use x11rb::wrapper::ConnectionExt as _;

/// The atoms a clipboard owner answers with.
#[derive(Clone, Copy, Debug)]
pub struct SelectionAtoms {
    pub clipboard: u32,
    pub utf8: u32,
    pub targets: u32,
}

/// Answers `e` with `text` (when this client holds CLIPBOARD): the list of
/// targets, or the text as UTF8_STRING or STRING; any other request is
/// refused (property NONE), as ICCCM asks.
pub fn answer_request(
    conn: &impl Connection,
    e: &SelectionRequestEvent,
    atoms: SelectionAtoms,
    text: Option<&str>,
) -> Result<(), ConnectionError> {
    let property = if e.property == x11rb::NONE {
        e.target
    } else {
        e.property
    };
    let mut answered = x11rb::NONE;
    if let Some(text) = text.filter(|_| e.selection == atoms.clipboard) {
        if e.target == atoms.targets {
            let targets = [atoms.targets, atoms.utf8, u32::from(AtomEnum::STRING)];
            conn.change_property32(
                PropMode::REPLACE,
                e.requestor,
                property,
                AtomEnum::ATOM,
                &targets,
            )?;
            answered = property;
        } else if e.target == atoms.utf8 || e.target == u32::from(AtomEnum::STRING) {
            conn.change_property8(
                PropMode::REPLACE,
                e.requestor,
                property,
                e.target,
                text.as_bytes(),
            )?;
            answered = property;
        }
    }
    let notify = SelectionNotifyEvent {
        response_type: xproto::SELECTION_NOTIFY_EVENT,
        sequence: 0,
        time: e.time,
        requestor: e.requestor,
        selection: e.selection,
        target: e.target,
        property: answered,
    };
    conn.send_event(false, e.requestor, EventMask::NO_EVENT, notify)?;
    conn.flush()?;
    Ok(())
}
