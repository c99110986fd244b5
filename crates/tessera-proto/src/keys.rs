//! The key table: a physical key as a USB HID usage (what viewers send), as
//! a Linux evdev code, and as an X keycode (evdev + 8 under the X server's
//! evdev keycodes, which Xorg and Xvfb use), plus the modifier bits of
//! `KeyInput` and the special combinations of `SpecialKeys`.
//!
//! Usages of the keyboard page (0x07) travel as their id (0x04 = A);
//! usages of other pages as `page << 16 | id` (consumer 0x0C: media keys;
//! generic desktop 0x01: power and sleep).
//!
//! Injecting by physical key keeps the remote layout in charge: the viewer
//! says "the key right of Tab", the remote display's own keymap decides
//! whether that is q, a or '. The keysym a viewer also sends is the fallback
//! for keys missing here or from the remote keymap.

/// A physical key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// USB HID usage (keyboard page: the id; other pages: `page << 16 | id`).
    pub usage: u32,
    /// Linux input event code (`KEY_*`).
    pub evdev: u16,
    /// A name for logs and tests.
    pub name: &'static str,
}

const fn k(usage: u32, evdev: u16, name: &'static str) -> Key {
    Key { usage, evdev, name }
}

const CONSUMER: u32 = 0x0C << 16;
const DESKTOP: u32 = 0x01 << 16;

/// Every key the table knows, in usage order within each page.
pub const KEYS: &[Key] = &[
    k(0x04, 30, "a"),
    k(0x05, 48, "b"),
    k(0x06, 46, "c"),
    k(0x07, 32, "d"),
    k(0x08, 18, "e"),
    k(0x09, 33, "f"),
    k(0x0A, 34, "g"),
    k(0x0B, 35, "h"),
    k(0x0C, 23, "i"),
    k(0x0D, 36, "j"),
    k(0x0E, 37, "k"),
    k(0x0F, 38, "l"),
    k(0x10, 50, "m"),
    k(0x11, 49, "n"),
    k(0x12, 24, "o"),
    k(0x13, 25, "p"),
    k(0x14, 16, "q"),
    k(0x15, 19, "r"),
    k(0x16, 31, "s"),
    k(0x17, 20, "t"),
    k(0x18, 22, "u"),
    k(0x19, 47, "v"),
    k(0x1A, 17, "w"),
    k(0x1B, 45, "x"),
    k(0x1C, 21, "y"),
    k(0x1D, 44, "z"),
    k(0x1E, 2, "1"),
    k(0x1F, 3, "2"),
    k(0x20, 4, "3"),
    k(0x21, 5, "4"),
    k(0x22, 6, "5"),
    k(0x23, 7, "6"),
    k(0x24, 8, "7"),
    k(0x25, 9, "8"),
    k(0x26, 10, "9"),
    k(0x27, 11, "0"),
    k(0x28, 28, "enter"),
    k(0x29, 1, "escape"),
    k(0x2A, 14, "backspace"),
    k(0x2B, 15, "tab"),
    k(0x2C, 57, "space"),
    k(0x2D, 12, "minus"),
    k(0x2E, 13, "equal"),
    k(0x2F, 26, "bracket_left"),
    k(0x30, 27, "bracket_right"),
    k(0x31, 43, "backslash"),
    // ISO "#~" shares its evdev code with backslash (as Linux maps it); the
    // reverse lookup gives 0x31.
    k(0x32, 43, "non_us_hash"),
    k(0x33, 39, "semicolon"),
    k(0x34, 40, "apostrophe"),
    k(0x35, 41, "grave"),
    k(0x36, 51, "comma"),
    k(0x37, 52, "period"),
    k(0x38, 53, "slash"),
    k(0x39, 58, "caps_lock"),
    k(0x3A, 59, "f1"),
    k(0x3B, 60, "f2"),
    k(0x3C, 61, "f3"),
    k(0x3D, 62, "f4"),
    k(0x3E, 63, "f5"),
    k(0x3F, 64, "f6"),
    k(0x40, 65, "f7"),
    k(0x41, 66, "f8"),
    k(0x42, 67, "f9"),
    k(0x43, 68, "f10"),
    k(0x44, 87, "f11"),
    k(0x45, 88, "f12"),
    k(0x46, 99, "print_screen"),
    k(0x47, 70, "scroll_lock"),
    k(0x48, 119, "pause"),
    k(0x49, 110, "insert"),
    k(0x4A, 102, "home"),
    k(0x4B, 104, "page_up"),
    k(0x4C, 111, "delete"),
    k(0x4D, 107, "end"),
    k(0x4E, 109, "page_down"),
    k(0x4F, 106, "arrow_right"),
    k(0x50, 105, "arrow_left"),
    k(0x51, 108, "arrow_down"),
    k(0x52, 103, "arrow_up"),
    k(0x53, 69, "num_lock"),
    k(0x54, 98, "kp_divide"),
    k(0x55, 55, "kp_multiply"),
    k(0x56, 74, "kp_subtract"),
    k(0x57, 78, "kp_add"),
    k(0x58, 96, "kp_enter"),
    k(0x59, 79, "kp_1"),
    k(0x5A, 80, "kp_2"),
    k(0x5B, 81, "kp_3"),
    k(0x5C, 75, "kp_4"),
    k(0x5D, 76, "kp_5"),
    k(0x5E, 77, "kp_6"),
    k(0x5F, 71, "kp_7"),
    k(0x60, 72, "kp_8"),
    k(0x61, 73, "kp_9"),
    k(0x62, 82, "kp_0"),
    k(0x63, 83, "kp_decimal"),
    k(0x64, 86, "intl_backslash"),
    k(0x65, 127, "context_menu"),
    k(0x66, 116, "power"),
    k(0x67, 117, "kp_equal"),
    k(0x68, 183, "f13"),
    k(0x69, 184, "f14"),
    k(0x6A, 185, "f15"),
    k(0x6B, 186, "f16"),
    k(0x6C, 187, "f17"),
    k(0x6D, 188, "f18"),
    k(0x6E, 189, "f19"),
    k(0x6F, 190, "f20"),
    k(0x70, 191, "f21"),
    k(0x71, 192, "f22"),
    k(0x72, 193, "f23"),
    k(0x73, 194, "f24"),
    k(0x74, 134, "open"),
    k(0x75, 138, "help"),
    k(0x76, 130, "props"),
    k(0x77, 132, "select"),
    k(0x78, 128, "stop"),
    k(0x79, 129, "again"),
    k(0x7A, 131, "undo"),
    k(0x7B, 137, "cut"),
    k(0x7C, 133, "copy"),
    k(0x7D, 135, "paste"),
    k(0x7E, 136, "find"),
    k(0x7F, 113, "audio_volume_mute"),
    k(0x80, 115, "audio_volume_up"),
    k(0x81, 114, "audio_volume_down"),
    k(0x85, 121, "kp_comma"),
    k(0x87, 89, "intl_ro"),
    k(0x88, 93, "kana_mode"),
    k(0x89, 124, "intl_yen"),
    k(0x8A, 92, "convert"),
    k(0x8B, 94, "non_convert"),
    k(0x90, 122, "lang1"),
    k(0x91, 123, "lang2"),
    k(0x92, 90, "lang3"),
    k(0x93, 91, "lang4"),
    k(0x94, 85, "lang5"),
    k(0xE0, 29, "control_left"),
    k(0xE1, 42, "shift_left"),
    k(0xE2, 56, "alt_left"),
    k(0xE3, 125, "super_left"),
    k(0xE4, 97, "control_right"),
    k(0xE5, 54, "shift_right"),
    k(0xE6, 100, "alt_right"),
    k(0xE7, 126, "super_right"),
    k(DESKTOP | 0x81, 116, "system_power"),
    k(DESKTOP | 0x82, 142, "sleep"),
    k(DESKTOP | 0x83, 143, "wake_up"),
    k(CONSUMER | 0x6F, 225, "brightness_up"),
    k(CONSUMER | 0x70, 224, "brightness_down"),
    k(CONSUMER | 0xB5, 163, "media_track_next"),
    k(CONSUMER | 0xB6, 165, "media_track_previous"),
    k(CONSUMER | 0xB7, 166, "media_stop"),
    k(CONSUMER | 0xB8, 161, "eject"),
    k(CONSUMER | 0xCD, 164, "media_play_pause"),
    k(CONSUMER | 0xE2, 113, "mute"),
    k(CONSUMER | 0xE9, 115, "volume_up"),
    k(CONSUMER | 0xEA, 114, "volume_down"),
    k(CONSUMER | 0x183, 171, "media_select"),
    k(CONSUMER | 0x18A, 155, "launch_mail"),
    k(CONSUMER | 0x192, 140, "launch_calculator"),
    k(CONSUMER | 0x194, 144, "launch_files"),
    k(CONSUMER | 0x221, 217, "browser_search"),
    k(CONSUMER | 0x223, 172, "browser_home"),
    k(CONSUMER | 0x224, 158, "browser_back"),
    k(CONSUMER | 0x225, 159, "browser_forward"),
    k(CONSUMER | 0x226, 128, "browser_stop"),
    k(CONSUMER | 0x227, 173, "browser_refresh"),
    k(CONSUMER | 0x22A, 156, "browser_favorites"),
];

/// The key with this usage.
pub fn by_usage(usage: u32) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.usage == usage)
}

/// The key with this evdev code (the first usage listed for it).
pub fn by_evdev(evdev: u16) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.evdev == evdev)
}

/// The key with this name.
pub fn by_name(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Offset of X keycodes over evdev codes (X reserves keycodes below 8).
pub const X_KEYCODE_OFFSET: u16 = 8;

impl Key {
    /// The X keycode under evdev keycodes; `None` past 255 (X cannot name it).
    pub fn x_keycode(&self) -> Option<u8> {
        u8::try_from(self.evdev + X_KEYCODE_OFFSET).ok()
    }
}

/// The key a browser names by `KeyboardEvent.code` (the UI Events
/// code names), for the web console's screen viewer.
pub fn by_web_code(code: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.web_code().as_deref() == Some(code))
}

/// Every key a browser can name, as (`KeyboardEvent.code`, usage): what
/// the web console hands its screen viewer, so the page and `tessera view`
/// use this one table.
pub fn web_codes() -> impl Iterator<Item = (String, u32)> {
    KEYS.iter().filter_map(|k| Some((k.web_code()?, k.usage)))
}

impl Key {
    /// The key's `KeyboardEvent.code` (UI Events), derived from its name:
    /// `a` → `KeyA`, `1` → `Digit1`, `kp_1` → `Numpad1`, `arrow_left` →
    /// `ArrowLeft`; `None` for the keys a browser reports under another
    /// entry of this table (the ISO `#~` key is `Backslash`; the consumer
    /// page's volume keys are `AudioVolume*`; `system_power` is `Power`).
    pub fn web_code(&self) -> Option<String> {
        let exact = match self.name {
            "apostrophe" => Some("Quote"),
            "grave" => Some("Backquote"),
            "super_left" => Some("MetaLeft"),
            "super_right" => Some("MetaRight"),
            "launch_calculator" => Some("LaunchApp2"),
            "launch_files" => Some("LaunchApp1"),
            "non_us_hash" | "system_power" | "mute" | "volume_up" | "volume_down" => return None,
            _ => None,
        };
        if let Some(code) = exact {
            return Some(code.to_owned());
        }
        let mut chars = self.name.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            return Some(if c.is_ascii_digit() {
                format!("Digit{c}")
            } else {
                format!("Key{}", c.to_ascii_uppercase())
            });
        }
        let (prefix, rest) = match self.name.strip_prefix("kp_") {
            Some(rest) => ("Numpad", rest),
            None => ("", self.name),
        };
        let pascal: String = rest
            .split('_')
            .map(|w| {
                let mut cs = w.chars();
                cs.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + cs.as_str())
                    .unwrap_or_default()
            })
            .collect();
        Some(format!("{prefix}{pascal}"))
    }
}

/// The key an X keycode stands for.
pub fn by_x_keycode(keycode: u8) -> Option<&'static Key> {
    by_evdev(u16::from(keycode).checked_sub(X_KEYCODE_OFFSET)?)
}

/// The modifier snapshot of `KeyInput.modifiers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Modifiers(u32);

impl Modifiers {
    pub const SHIFT: Modifiers = Modifiers(1 << 0);
    pub const CTRL: Modifiers = Modifiers(1 << 1);
    pub const ALT: Modifiers = Modifiers(1 << 2);
    pub const SUPER: Modifiers = Modifiers(1 << 3);
    pub const ALTGR: Modifiers = Modifiers(1 << 4);
    pub const CAPS_LOCK: Modifiers = Modifiers(1 << 5);
    pub const NUM_LOCK: Modifiers = Modifiers(1 << 6);
    const ALL: u32 = (1 << 7) - 1;

    pub const fn empty() -> Modifiers {
        Modifiers(0)
    }

    /// The bits as sent; unknown bits are dropped (a newer viewer may send more).
    pub const fn from_bits(bits: u32) -> Modifiers {
        Modifiers(bits & Self::ALL)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: Modifiers) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Modifiers) -> Modifiers {
        Modifiers(self.0 | other.0)
    }

    /// The modifier a key is (a lock key's bit is its lock state, not the key).
    pub fn of_key(usage: u32) -> Modifiers {
        match usage {
            0xE0 | 0xE4 => Modifiers::CTRL,
            0xE1 | 0xE5 => Modifiers::SHIFT,
            0xE2 => Modifiers::ALT,
            0xE6 => Modifiers::ALTGR,
            0xE3 | 0xE7 => Modifiers::SUPER,
            _ => Modifiers::empty(),
        }
    }
}

impl std::ops::BitOr for Modifiers {
    type Output = Modifiers;
    fn bitor(self, rhs: Modifiers) -> Modifiers {
        self.union(rhs)
    }
}

/// Lock keys to tap on the remote display so its Caps Lock and Num Lock
/// match the viewer's snapshot.
pub fn lock_taps(viewer: Modifiers, remote: Modifiers) -> Vec<&'static Key> {
    let mut taps = Vec::new();
    for (bit, name) in [
        (Modifiers::CAPS_LOCK, "caps_lock"),
        (Modifiers::NUM_LOCK, "num_lock"),
    ] {
        if viewer.contains(bit) != remote.contains(bit) {
            taps.extend(by_name(name));
        }
    }
    taps
}

/// A combination a viewer's own system would keep (`SpecialKeys.combo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combo {
    CtrlAltDel,
    /// Ctrl+Alt+F1 … F12 (switch virtual terminal).
    CtrlAltF(u8),
    Super,
    AltTab,
}

impl Combo {
    /// Parses `combo`; `None` for names this build does not know.
    pub fn parse(combo: &str) -> Option<Combo> {
        match combo {
            "ctrl_alt_del" => Some(Combo::CtrlAltDel),
            "super" => Some(Combo::Super),
            "alt_tab" => Some(Combo::AltTab),
            _ => {
                let n: u8 = combo.strip_prefix("ctrl_alt_f")?.parse().ok()?;
                (1..=12).contains(&n).then_some(Combo::CtrlAltF(n))
            }
        }
    }

    /// The keys to press in order, then release in reverse order.
    pub fn keys(self) -> Vec<&'static Key> {
        let names: Vec<String> = match self {
            Combo::CtrlAltDel => vec!["control_left".into(), "alt_left".into(), "delete".into()],
            Combo::CtrlAltF(n) => vec!["control_left".into(), "alt_left".into(), format!("f{n}")],
            Combo::Super => vec!["super_left".into()],
            Combo::AltTab => vec!["alt_left".into(), "tab".into()],
        };
        names.iter().filter_map(|n| by_name(n)).collect()
    }
}

/// The X keysym for a character: Latin-1 maps to itself, the rest of
/// Unicode to `0x0100_0000 | code point` (X's convention); control
/// characters to their function keysyms where X has one.
pub fn keysym_for_char(c: char) -> u32 {
    match c {
        '\u{8}' => 0xFF08,     // BackSpace
        '\t' => 0xFF09,        // Tab
        '\n' | '\r' => 0xFF0D, // Return
        '\u{1b}' => 0xFF1B,    // Escape
        '\u{7f}' => 0xFFFF,    // Delete
        ' '..='~' | '\u{a0}'..='\u{ff}' => c as u32,
        _ => 0x0100_0000 | c as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn browser_codes_name_the_keys_a_browser_reports() {
        let code = |name: &str| by_name(name).unwrap().web_code();
        assert_eq!(code("a").as_deref(), Some("KeyA"));
        assert_eq!(code("1").as_deref(), Some("Digit1"));
        assert_eq!(code("kp_1").as_deref(), Some("Numpad1"));
        assert_eq!(code("kp_enter").as_deref(), Some("NumpadEnter"));
        assert_eq!(code("arrow_left").as_deref(), Some("ArrowLeft"));
        assert_eq!(code("f12").as_deref(), Some("F12"));
        assert_eq!(code("control_right").as_deref(), Some("ControlRight"));
        assert_eq!(code("super_left").as_deref(), Some("MetaLeft"));
        assert_eq!(code("apostrophe").as_deref(), Some("Quote"));
        assert_eq!(code("grave").as_deref(), Some("Backquote"));
        assert_eq!(code("bracket_left").as_deref(), Some("BracketLeft"));
        assert_eq!(code("intl_backslash").as_deref(), Some("IntlBackslash"));
        assert_eq!(code("media_play_pause").as_deref(), Some("MediaPlayPause"));
        assert_eq!(code("non_us_hash"), None, "browsers call it Backslash");
        assert_eq!(by_web_code("Backslash").unwrap().usage, 0x31);
        assert_eq!(by_web_code("ShiftLeft").unwrap().usage, 0xE1);
        assert!(by_web_code("Nonsense").is_none());
        let codes: Vec<_> = web_codes().map(|(c, _)| c).collect();
        let unique: HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len(), "each code names one key");
        assert!(codes
            .iter()
            .all(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric())));
    }

    #[test]
    fn usages_and_names_are_unique() {
        let usages: HashSet<_> = KEYS.iter().map(|k| k.usage).collect();
        let names: HashSet<_> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(usages.len(), KEYS.len());
        assert_eq!(names.len(), KEYS.len());
    }

    #[test]
    fn usage_evdev_keycode_round_trip() {
        for key in KEYS {
            let back = by_evdev(key.evdev).unwrap();
            assert_eq!(back.evdev, key.evdev);
            let kc = key.x_keycode().unwrap();
            assert_eq!(by_x_keycode(kc).unwrap().evdev, key.evdev, "{}", key.name);
        }
        // Every evdev code but the shared ones maps back to its own usage.
        assert_eq!(by_evdev(43).unwrap().usage, 0x31);
        assert_eq!(by_usage(0x04).unwrap().x_keycode(), Some(38)); // "a" under evdev keycodes
        assert_eq!(by_usage(0xE3).unwrap().x_keycode(), Some(133)); // Super_L
        assert_eq!(by_usage(0xE6).unwrap().x_keycode(), Some(108)); // ISO_Level3_Shift
        assert_eq!(by_usage(0x58).unwrap().x_keycode(), Some(104)); // KP_Enter
    }

    #[test]
    fn the_table_covers_what_the_issue_names() {
        for c in 'a'..='z' {
            assert!(by_name(&c.to_string()).is_some());
        }
        for d in 0..=9 {
            assert!(by_name(&d.to_string()).is_some());
        }
        for f in 1..=24 {
            assert!(by_name(&format!("f{f}")).is_some(), "f{f}");
        }
        for kp in 0..=9 {
            assert!(by_name(&format!("kp_{kp}")).is_some());
        }
        for name in [
            "home",
            "end",
            "page_up",
            "page_down",
            "insert",
            "delete",
            "arrow_up",
            "arrow_down",
            "arrow_left",
            "arrow_right",
            "super_left",
            "super_right",
            "alt_right",
            "media_play_pause",
            "volume_up",
            "volume_down",
            "mute",
            "media_track_next",
        ] {
            assert!(by_name(name).is_some(), "{name}");
        }
        assert!(by_usage(0).is_none());
    }

    #[test]
    fn combos_parse_and_expand() {
        assert_eq!(Combo::parse("ctrl_alt_f3"), Some(Combo::CtrlAltF(3)));
        assert_eq!(Combo::parse("ctrl_alt_f13"), None);
        assert_eq!(Combo::parse("ctrl_alt_f"), None);
        assert_eq!(Combo::parse("reboot"), None);
        let names: Vec<_> = Combo::CtrlAltDel.keys().iter().map(|k| k.name).collect();
        assert_eq!(names, ["control_left", "alt_left", "delete"]);
        assert_eq!(Combo::CtrlAltF(12).keys().len(), 3);
        assert_eq!(Combo::AltTab.keys().len(), 2);
    }

    #[test]
    fn lock_taps_only_where_states_differ() {
        let caps = Modifiers::CAPS_LOCK;
        assert!(lock_taps(caps, caps).is_empty());
        let taps: Vec<_> = lock_taps(caps, Modifiers::NUM_LOCK)
            .iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(taps, ["caps_lock", "num_lock"]);
    }

    #[test]
    fn keysyms_for_chars() {
        assert_eq!(keysym_for_char('a'), 0x61);
        assert_eq!(keysym_for_char('é'), 0xE9);
        assert_eq!(keysym_for_char('€'), 0x0100_20AC);
        assert_eq!(keysym_for_char('\n'), 0xFF0D);
    }

    proptest! {
        #[test]
        fn modifier_bits_keep_only_known_bits(bits in any::<u32>()) {
            let m = Modifiers::from_bits(bits);
            prop_assert_eq!(m.bits(), bits & 0x7F);
            prop_assert_eq!(Modifiers::from_bits(m.bits()), m);
        }

        #[test]
        fn lookups_never_panic(usage in any::<u32>(), evdev in any::<u16>(), kc in any::<u8>()) {
            let _ = by_usage(usage);
            let _ = by_evdev(evdev);
            let _ = by_x_keycode(kc);
        }
    }
}
