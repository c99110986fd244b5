//! The keyboard as the viewer sends it: a physical key as its USB HID
//! usage, found through the one key table (`tessera_screen::keys`, evdev
//! code → usage) from the evdev code the local X server reports; the keysym
//! the local layout made of it; the modifier snapshot of the keys held; and
//! the host key, which is never sent: tapped alone it captures the keyboard
//! (system combinations such as Alt+Tab and Super go to the remote screen)
//! or gives it back; held with Delete or F1–F12 it sends Ctrl+Alt+Delete or
//! Ctrl+Alt+F1–F12 as a `SpecialKeys` request, and with M it shows the
//! device's next monitor.

use std::collections::BTreeSet;

use clap::ValueEnum;
use tessera_proto::v1::KeyInput;
use tessera_screen::keys::{self, Modifiers};

/// The key that captures and releases the keyboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum HostKey {
    RightCtrl,
    RightSuper,
    Menu,
    ScrollLock,
    Pause,
}

impl HostKey {
    /// Its usage, from the key table.
    pub(crate) fn usage(self) -> u32 {
        let name = match self {
            HostKey::RightCtrl => "control_right",
            HostKey::RightSuper => "super_right",
            HostKey::Menu => "context_menu",
            HostKey::ScrollLock => "scroll_lock",
            HostKey::Pause => "pause",
        };
        keys::by_name(name).map_or(0, |k| k.usage)
    }

    /// Its name in the title.
    pub(crate) fn label(self) -> &'static str {
        match self {
            HostKey::RightCtrl => "Right Ctrl",
            HostKey::RightSuper => "Right Super",
            HostKey::Menu => "Menu",
            HostKey::ScrollLock => "Scroll Lock",
            HostKey::Pause => "Pause",
        }
    }
}

/// The usage of the key with this evdev code (X keycode − 8); 0 when the
/// table does not know it (the keysym then speaks for it).
pub(crate) fn usage_of_evdev(evdev: u32) -> u32 {
    u16::try_from(evdev)
        .ok()
        .and_then(keys::by_evdev)
        .map_or(0, |k| k.usage)
}

/// The keysym of the text a key produced (one character), or 0.
pub(crate) fn keysym_of_text(text: &str) -> u32 {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => keys::keysym_for_char(c),
        _ => 0,
    }
}

/// What to do with one key event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeyAction {
    Send(KeyInput),
    /// The host key was tapped alone: capture the keyboard, or give it back.
    ToggleCapture,
    /// Host key + Delete / F1–F12.
    Special(String),
    /// Host key + M: the device's next monitor.
    NextMonitor,
    Nothing,
}

/// The keys this viewer holds down on the remote screen, and the host key.
#[derive(Debug)]
pub(crate) struct Keyboard {
    host: u32,
    host_down: bool,
    /// Another key went down while the host key was held (no toggle then).
    host_chord: bool,
    held: BTreeSet<u32>,
}

impl Keyboard {
    pub(crate) fn new(host: HostKey) -> Keyboard {
        Keyboard {
            host: host.usage(),
            host_down: false,
            host_chord: false,
            held: BTreeSet::new(),
        }
    }

    /// The modifier snapshot of the keys held.
    pub(crate) fn modifiers(&self) -> u32 {
        self.held
            .iter()
            .fold(Modifiers::empty(), |m, &u| m | Modifiers::of_key(u))
            .bits()
    }

    pub(crate) fn key(&mut self, usage: u32, keysym: u32, down: bool) -> KeyAction {
        if usage != 0 && usage == self.host {
            let tapped = !down && self.host_down && !self.host_chord;
            self.host_down = down;
            self.host_chord = false;
            return if tapped {
                KeyAction::ToggleCapture
            } else {
                KeyAction::Nothing
            };
        }
        if self.host_down && down {
            self.host_chord = true;
            if let Some(combo) = special_for(usage) {
                return KeyAction::Special(combo);
            }
            if keys::by_usage(usage).is_some_and(|k| k.name == "m") {
                return KeyAction::NextMonitor;
            }
        }
        if usage == 0 && keysym == 0 {
            return KeyAction::Nothing;
        }
        if down {
            self.held.insert(usage);
        } else if !self.held.remove(&usage) && usage != 0 {
            // A release of a key pressed before this window had the keyboard.
            return KeyAction::Nothing;
        }
        KeyAction::Send(KeyInput {
            usage,
            keysym,
            down,
            modifiers: self.modifiers(),
            viewer: 0,
        })
    }

    /// Focus went elsewhere: the remote end releases what this viewer holds
    /// (one `ReleaseInput`), and so does this record.
    pub(crate) fn forget_held(&mut self) -> bool {
        let any = !self.held.is_empty();
        self.held.clear();
        self.host_down = false;
        self.host_chord = false;
        any
    }
}

fn special_for(usage: u32) -> Option<String> {
    let key = keys::by_usage(usage)?;
    if key.name == "delete" {
        return Some("ctrl_alt_del".into());
    }
    let n: u8 = key.name.strip_prefix('f')?.parse().ok()?;
    (1..=12).contains(&n).then(|| format!("ctrl_alt_f{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(name: &str) -> u32 {
        keys::by_name(name).unwrap().usage
    }

    #[test]
    fn evdev_codes_map_through_the_one_key_table() {
        assert_eq!(usage_of_evdev(30), 0x04, "KEY_A");
        assert_eq!(usage_of_evdev(125), 0xE3, "KEY_LEFTMETA is Super");
        assert_eq!(usage_of_evdev(79), 0x59, "KEY_KP1");
        assert_eq!(usage_of_evdev(100), 0xE6, "KEY_RIGHTALT (AltGr)");
        assert_eq!(usage_of_evdev(0), 0);
        assert_eq!(usage_of_evdev(70_000), 0);
    }

    #[test]
    fn keysyms_come_from_the_text_typed() {
        assert_eq!(keysym_of_text("a"), 0x61);
        assert_eq!(keysym_of_text("A"), 0x41);
        assert_eq!(keysym_of_text("é"), 0xE9);
        assert_eq!(keysym_of_text("€"), 0x0100_20AC);
        assert_eq!(keysym_of_text(""), 0);
        assert_eq!(keysym_of_text("ab"), 0, "composed text has no one keysym");
    }

    #[test]
    fn held_modifiers_make_the_snapshot() {
        let mut k = Keyboard::new(HostKey::RightCtrl);
        k.key(usage("shift_left"), 0, true);
        k.key(usage("alt_right"), 0, true);
        let KeyAction::Send(a) = k.key(usage("q"), 0x40, true) else {
            panic!("a key is sent");
        };
        assert_eq!(
            a.modifiers,
            (Modifiers::SHIFT | Modifiers::ALTGR).bits(),
            "Shift and AltGr held"
        );
        assert_eq!((a.usage, a.keysym, a.down), (0x14, 0x40, true));
        k.key(usage("shift_left"), 0, false);
        assert_eq!(k.modifiers(), Modifiers::ALTGR.bits());
    }

    #[test]
    fn the_host_key_is_never_sent_and_toggles_when_tapped_alone() {
        let mut k = Keyboard::new(HostKey::RightCtrl);
        let host = usage("control_right");
        assert_eq!(k.key(host, 0, true), KeyAction::Nothing);
        assert_eq!(k.key(host, 0, false), KeyAction::ToggleCapture);
        // Host + Delete: Ctrl+Alt+Delete, and no toggle.
        k.key(host, 0, true);
        assert_eq!(
            k.key(usage("delete"), 0, true),
            KeyAction::Special("ctrl_alt_del".into())
        );
        assert_eq!(k.key(host, 0, false), KeyAction::Nothing);
        k.key(host, 0, true);
        assert_eq!(
            k.key(usage("f2"), 0, true),
            KeyAction::Special("ctrl_alt_f2".into())
        );
        // Host + M: the next monitor, and M itself is not sent.
        k.key(host, 0, true);
        assert_eq!(k.key(usage("m"), 0x6d, true), KeyAction::NextMonitor);
        assert_eq!(k.key(usage("m"), 0x6d, false), KeyAction::Nothing);
        assert_eq!(k.key(host, 0, false), KeyAction::Nothing);
        k.key(host, 0, true);
        assert!(matches!(k.key(usage("a"), 0x61, true), KeyAction::Send(_)));
        assert_eq!(k.key(host, 0, false), KeyAction::Nothing);
    }

    #[test]
    fn releases_of_keys_never_pressed_here_are_not_sent() {
        let mut k = Keyboard::new(HostKey::Pause);
        assert_eq!(k.key(usage("a"), 0x61, false), KeyAction::Nothing);
        assert_eq!(
            k.key(0, 0, true),
            KeyAction::Nothing,
            "nothing to name it by"
        );
        k.key(usage("a"), 0x61, true);
        assert!(k.forget_held());
        assert_eq!(k.key(usage("a"), 0x61, false), KeyAction::Nothing);
        assert!(!k.forget_held());
    }

    #[test]
    fn every_host_key_is_in_the_table() {
        for h in HostKey::value_variants() {
            assert_ne!(h.usage(), 0, "{h:?}");
        }
    }
}
