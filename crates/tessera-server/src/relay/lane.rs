//! A screen viewer's outbound lane: encoded envelopes waiting for its
//! socket, and how far behind that makes it.
//!
//! Unlike a shell viewer's queue, a lane is never waited on by the device:
//! the relay looks at its [`Backlog`] and decides per frame (see
//! `screen::ViewerFlow`) whether the viewer gets the frame or skips to the
//! next keyframe. What it holds is bounded by that decision (a few frames
//! and the one in progress); [`LANE_HARD_LIMIT`] catches a viewer that
//! stopped reading altogether.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use super::screen::{Backlog, MAX_BYTES_BEHIND, MAX_FRAME_BYTES};

/// Bytes a lane may hold at all: the skip threshold plus one whole frame
/// in progress, plus room for formats, cursors and notices.
pub(super) const LANE_HARD_LIMIT: usize = MAX_BYTES_BEHIND + MAX_FRAME_BYTES + (1 << 20);

#[derive(Default)]
struct Waiting {
    /// Each envelope, and whether it begins a frame.
    items: VecDeque<(Bytes, bool)>,
    bytes: usize,
    frames: usize,
}

#[derive(Default)]
pub struct Lane {
    waiting: Mutex<Waiting>,
    /// One consumer (the viewer's task): a stored permit is never lost.
    ready: Notify,
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one envelope; returns the bytes now waiting.
    pub fn push(&self, envelope: Bytes, frame_start: bool) -> usize {
        let mut w = self.lock();
        w.bytes += envelope.len();
        w.frames += usize::from(frame_start);
        w.items.push_back((envelope, frame_start));
        let bytes = w.bytes;
        drop(w);
        self.ready.notify_one();
        bytes
    }

    pub fn backlog(&self) -> Backlog {
        let w = self.lock();
        Backlog {
            frames: w.frames,
            bytes: w.bytes,
        }
    }

    fn try_pop(&self) -> Option<Bytes> {
        let mut w = self.lock();
        let (b, start) = w.items.pop_front()?;
        w.bytes -= b.len();
        w.frames -= usize::from(start);
        Some(b)
    }

    /// The next envelope to write. Cancel-safe: an envelope leaves the
    /// lane only in the poll that returns it.
    pub async fn next(&self) -> Bytes {
        loop {
            if let Some(b) = self.try_pop() {
                return b;
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lane_counts_frames_and_bytes_until_written() {
        let lane = Lane::default();
        lane.push(Bytes::from_static(b"format"), false);
        lane.push(Bytes::from_static(b"f1p0"), true);
        lane.push(Bytes::from_static(b"f1p1"), false);
        assert_eq!(
            lane.backlog(),
            Backlog {
                frames: 1,
                bytes: 14
            }
        );
        assert_eq!(lane.next().await, Bytes::from_static(b"format"));
        assert_eq!(lane.next().await, Bytes::from_static(b"f1p0"));
        assert_eq!(lane.backlog().frames, 0);
        assert_eq!(lane.next().await, Bytes::from_static(b"f1p1"));
        assert_eq!(lane.backlog(), Backlog::default());
    }
}
