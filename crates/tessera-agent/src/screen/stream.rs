//! When the agent may send a frame, and which: frame numbers, credits,
//! keyframes and the pause while nobody watches. Pure: the capture loop
//! asks, this answers.

/// Frames sent beyond the fastest viewer's last drawn one: enough to hide
/// a round trip, few enough that a viewer never sees stale pictures.
pub(crate) const MAX_IN_FLIGHT: u64 = 3;
/// A keyframe at least every this many frames (an idle screen sends no
/// frames, so no keyframes either).
pub(crate) const KEYFRAME_EVERY: u32 = 600;

#[derive(Debug)]
pub(crate) struct Stream {
    /// Number of the next frame (the first is 1).
    next: u64,
    /// Highest frame the fastest viewer has drawn (0: none yet).
    credit: u64,
    viewers: u32,
    keyframe_due: bool,
    since_keyframe: u32,
}

impl Stream {
    pub(crate) fn new(viewers: u32) -> Stream {
        Stream {
            next: 1,
            credit: 0,
            viewers,
            keyframe_due: true,
            since_keyframe: 0,
        }
    }

    /// The viewer count changed (`ViewerJoined`/`ViewerLeft`). Coming back
    /// from nobody starts with a keyframe: frames were not captured meanwhile.
    pub(crate) fn set_viewers(&mut self, viewers: u32) {
        if self.viewers == 0 && viewers > 0 {
            self.keyframe_due = true;
            // Nobody was there to draw what was in flight.
            self.credit = self.next - 1;
        }
        self.viewers = viewers;
    }

    pub(crate) fn viewers(&self) -> u32 {
        self.viewers
    }

    /// A `ScreenCredit`: credits for frames never sent are ignored.
    pub(crate) fn credit(&mut self, number: u64) {
        if number < self.next {
            self.credit = self.credit.max(number);
        }
    }

    pub(crate) fn request_keyframe(&mut self) {
        self.keyframe_due = true;
    }

    /// A new format (monitor, size, codec): the next frame is a keyframe.
    pub(crate) fn restart(&mut self) {
        self.keyframe_due = true;
    }

    pub(crate) fn keyframe_due(&self) -> bool {
        self.keyframe_due
    }

    /// Whether capturing and sending now is allowed: someone watches and
    /// the fastest viewer is not too far behind.
    pub(crate) fn may_send(&self) -> bool {
        self.viewers > 0 && self.in_flight() < MAX_IN_FLIGHT
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.next - 1 - self.credit
    }

    /// Whether the frame about to be encoded must be a keyframe.
    pub(crate) fn wants_keyframe(&self) -> bool {
        self.keyframe_due || self.since_keyframe >= KEYFRAME_EVERY
    }

    /// A frame was sent: its number.
    pub(crate) fn sent(&mut self, keyframe: bool) -> u64 {
        let n = self.next;
        self.next += 1;
        if keyframe {
            self.keyframe_due = false;
            self.since_keyframe = 0;
        } else {
            self.since_keyframe += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_sent_without_viewers() {
        let mut s = Stream::new(0);
        assert!(!s.may_send());
        s.set_viewers(1);
        assert!(s.may_send() && s.wants_keyframe());
        s.set_viewers(0);
        assert!(!s.may_send());
    }

    #[test]
    fn credits_bound_frames_in_flight() {
        let mut s = Stream::new(1);
        for _ in 0..MAX_IN_FLIGHT {
            assert!(s.may_send());
            s.sent(false);
        }
        assert!(!s.may_send());
        s.credit(99); // never sent: ignored
        assert!(!s.may_send());
        s.credit(1);
        assert!(s.may_send());
        s.credit(0); // older: changes nothing
        assert_eq!(s.in_flight(), MAX_IN_FLIGHT - 1);
    }

    #[test]
    fn keyframes_first_on_request_and_periodically() {
        let mut s = Stream::new(1);
        assert!(s.wants_keyframe());
        assert_eq!(s.sent(true), 1);
        assert!(!s.wants_keyframe());
        s.request_keyframe();
        assert!(s.wants_keyframe());
        s.sent(true);
        for _ in 0..KEYFRAME_EVERY {
            s.credit(s.next - 1);
            s.sent(false);
        }
        assert!(s.wants_keyframe());
    }

    #[test]
    fn returning_viewers_get_a_keyframe_and_fresh_credit() {
        let mut s = Stream::new(1);
        s.sent(true);
        s.sent(false);
        s.sent(false);
        assert!(!s.may_send());
        s.set_viewers(0);
        s.set_viewers(2);
        assert!(s.may_send() && s.wants_keyframe());
    }
}
