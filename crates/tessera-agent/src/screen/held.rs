//! Which keys and buttons each viewer holds down on the remote display, so
//! that all of them come up when that viewer leaves, loses focus or the
//! session ends — a viewer that vanishes mid-press must never leave Ctrl
//! stuck down on someone's desktop. Pure: it says what to inject.

use std::collections::HashMap;

/// What to inject through XTest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Key { keycode: u8, down: bool },
    Button { button: u8, down: bool },
}

/// How a viewer named a key: by physical position, else by keysym.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KeyId {
    Usage(u32),
    Keysym(u32),
}

/// `PointerInput.buttons` bits → X buttons: left, middle, right, back, forward.
const BUTTONS: [(u32, u8); 5] = [
    (1 << 0, 1),
    (1 << 1, 2),
    (1 << 2, 3),
    (1 << 3, 8),
    (1 << 4, 9),
];
/// Most wheel notches taken from one event.
const MAX_NOTCHES: i32 = 10;

#[derive(Default, Debug)]
pub(crate) struct HeldInput {
    keys: HashMap<u32, HashMap<KeyId, u8>>,
    buttons: HashMap<u32, u32>,
}

impl HeldInput {
    /// A key went down; `keycode` is where it was resolved. A repeat of a
    /// held key presses again (as X's own autorepeat does).
    pub(crate) fn key_down(&mut self, viewer: u32, id: KeyId, keycode: u8) -> Vec<Action> {
        let held = self.keys.entry(viewer).or_default();
        let keycode = *held.entry(id).or_insert(keycode);
        vec![Action::Key {
            keycode,
            down: true,
        }]
    }

    /// A key came up: released where it went down; nothing for a key this
    /// viewer does not hold.
    pub(crate) fn key_up(&mut self, viewer: u32, id: KeyId) -> Vec<Action> {
        let Some(keycode) = self.keys.get_mut(&viewer).and_then(|h| h.remove(&id)) else {
            return Vec::new();
        };
        if self.key_held_by_anyone(keycode) {
            return Vec::new();
        }
        vec![Action::Key {
            keycode,
            down: false,
        }]
    }

    fn key_held_by_anyone(&self, keycode: u8) -> bool {
        self.keys
            .values()
            .any(|h| h.values().any(|&k| k == keycode))
    }

    fn button_held_by_anyone(&self, bit: u32) -> bool {
        self.buttons.values().any(|&m| m & bit != 0)
    }

    /// The viewer's buttons are now `mask`: presses and releases for what changed.
    pub(crate) fn buttons(&mut self, viewer: u32, mask: u32) -> Vec<Action> {
        let before = self.buttons.insert(viewer, mask).unwrap_or(0);
        let mut out = Vec::new();
        for (bit, button) in BUTTONS {
            match (before & bit != 0, mask & bit != 0) {
                (false, true) => out.push(Action::Button { button, down: true }),
                (true, false) if !self.button_held_by_anyone(bit) => out.push(Action::Button {
                    button,
                    down: false,
                }),
                _ => {}
            }
        }
        out
    }

    /// Everything `viewer` holds comes up.
    pub(crate) fn release_viewer(&mut self, viewer: u32) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(keys) = self.keys.remove(&viewer) {
            let mut codes: Vec<u8> = keys.into_values().collect();
            codes.sort_unstable();
            codes.dedup();
            for keycode in codes {
                if !self.key_held_by_anyone(keycode) {
                    out.push(Action::Key {
                        keycode,
                        down: false,
                    });
                }
            }
        }
        if let Some(mask) = self.buttons.remove(&viewer) {
            for (bit, button) in BUTTONS {
                if mask & bit != 0 && !self.button_held_by_anyone(bit) {
                    out.push(Action::Button {
                        button,
                        down: false,
                    });
                }
            }
        }
        out
    }

    /// Everything everyone holds comes up (the session ends).
    pub(crate) fn release_all(&mut self) -> Vec<Action> {
        let viewers: Vec<u32> = self
            .keys
            .keys()
            .chain(self.buttons.keys())
            .copied()
            .collect();
        let mut out = Vec::new();
        for v in viewers {
            out.extend(self.release_viewer(v));
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.values().all(HashMap::is_empty) && self.buttons.values().all(|&m| m == 0)
    }
}

/// Wheel notches as X button clicks: `wheel_y > 0` scrolls down (button
/// 5), `< 0` up (4); `wheel_x > 0` right (7), `< 0` left (6).
pub(crate) fn wheel_clicks(wheel_x: i32, wheel_y: i32) -> Vec<Action> {
    let mut out = Vec::new();
    for (amount, neg, pos) in [(wheel_y, 4u8, 5u8), (wheel_x, 6, 7)] {
        let button = if amount < 0 { neg } else { pos };
        for _ in 0..amount.unsigned_abs().min(MAX_NOTCHES as u32) {
            out.push(Action::Button { button, down: true });
            out.push(Action::Button {
                button,
                down: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: KeyId = KeyId::Usage(0x04);
    const CTRL: KeyId = KeyId::Usage(0xE0);

    #[test]
    fn a_viewer_leaving_mid_press_releases_everything_it_holds() {
        let mut h = HeldInput::default();
        h.key_down(1, CTRL, 37);
        h.key_down(1, A, 38);
        h.buttons(1, 0b101);
        let mut out = h.release_viewer(1);
        out.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(out.len(), 4);
        assert!(out.contains(&Action::Key {
            keycode: 37,
            down: false
        }));
        assert!(out.contains(&Action::Key {
            keycode: 38,
            down: false
        }));
        assert!(out.contains(&Action::Button {
            button: 1,
            down: false
        }));
        assert!(out.contains(&Action::Button {
            button: 3,
            down: false
        }));
        assert!(h.is_empty());
        assert!(h.release_viewer(1).is_empty());
    }

    #[test]
    fn a_key_another_viewer_holds_stays_down() {
        let mut h = HeldInput::default();
        h.key_down(1, CTRL, 37);
        h.key_down(2, CTRL, 37);
        assert!(h.release_viewer(1).is_empty());
        assert_eq!(
            h.key_up(2, CTRL),
            [Action::Key {
                keycode: 37,
                down: false
            }]
        );
    }

    #[test]
    fn releases_go_where_the_press_went_and_strays_are_ignored() {
        let mut h = HeldInput::default();
        h.key_down(1, KeyId::Keysym(0x20AC), 250);
        assert_eq!(
            h.key_up(1, KeyId::Keysym(0x20AC)),
            [Action::Key {
                keycode: 250,
                down: false
            }]
        );
        assert!(h.key_up(1, A).is_empty(), "never pressed");
        assert!(h.key_up(9, A).is_empty(), "unknown viewer");
    }

    #[test]
    fn buttons_follow_the_mask() {
        let mut h = HeldInput::default();
        assert_eq!(
            h.buttons(1, 0b1),
            [Action::Button {
                button: 1,
                down: true
            }]
        );
        assert!(h.buttons(1, 0b1).is_empty());
        assert_eq!(
            h.buttons(1, 0b11000),
            [
                Action::Button {
                    button: 1,
                    down: false
                },
                Action::Button {
                    button: 8,
                    down: true
                },
                Action::Button {
                    button: 9,
                    down: true
                }
            ]
        );
        assert_eq!(h.release_all().len(), 2);
    }

    #[test]
    fn wheel_notches_become_clicks() {
        assert_eq!(wheel_clicks(0, 2).len(), 4);
        assert_eq!(
            wheel_clicks(0, -1)[0],
            Action::Button {
                button: 4,
                down: true
            }
        );
        assert_eq!(
            wheel_clicks(1, 0)[0],
            Action::Button {
                button: 7,
                down: true
            }
        );
        assert_eq!(wheel_clicks(0, i32::MIN).len(), 2 * MAX_NOTCHES as usize);
    }
}
