//! The relay: live sessions on this node, their viewers, and the fan-out of
//! device output.
//!
//! The device side rides the device's control connection (one WebSocket per
//! device, multiplexed by session and channel). Each viewer has a bounded
//! outbound queue. Device output is offered to every queue without waiting
//! (`try_send`): a full queue means that viewer fell too far behind, and for
//! a shell, dropping bytes would corrupt its screen, so the viewer is
//! disconnected with a reason instead. The device and the other viewers
//! never wait for a slow one.
//!
//! Recent output (the last [`SCROLLBACK`] bytes) is kept so a viewer who
//! joins late sees the current prompt.

pub mod viewer;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Bytes of recent output replayed to a joining viewer.
pub const SCROLLBACK: usize = 64 * 1024;
/// Messages a viewer's queue holds before the viewer counts as too slow.
pub const VIEWER_QUEUE: usize = 1024;
/// The shell channel's id within a session.
pub const SHELL_CHANNEL: u32 = 1;

/// What a viewer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ViewOnly,
    Control,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ViewOnly => "view_only",
            Access::Control => "control",
        }
    }
}

/// What the relay sends a viewer's connection task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToViewer {
    Output(Bytes),
    ChannelClosed {
        exit_status: Option<i32>,
        reason: String,
    },
    Ended {
        code: String,
        reason: String,
    },
}

struct Viewer {
    queue: mpsc::Sender<ToViewer>,
    user_id: String,
    login_id: String,
    /// Cancelled to disconnect the viewer (too slow, logged out).
    kick: CancellationToken,
    kicked_because: Arc<Mutex<Option<&'static str>>>,
}

#[derive(Default)]
struct Inner {
    viewers: HashMap<u64, Viewer>,
    scrollback: VecDeque<u8>,
    next_viewer: u64,
    ended: Option<(String, String)>,
}

/// A session being relayed on this node.
pub struct LiveSession {
    pub id: String,
    pub tenant_id: String,
    pub device_id: String,
    pub device_name: String,
    /// The most the session allows (`view` sessions never take input).
    pub max_access: Access,
    inner: Mutex<Inner>,
}

/// A viewer's place in a session.
pub struct Joined {
    pub viewer_id: u64,
    pub queue: mpsc::Receiver<ToViewer>,
    pub scrollback: Vec<u8>,
    pub kick: CancellationToken,
    pub kicked_because: Arc<Mutex<Option<&'static str>>>,
}

impl LiveSession {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a viewer; `None` if the session has already ended.
    pub fn join(&self, user_id: &str, login_id: &str) -> Option<Joined> {
        let mut inner = self.lock();
        if inner.ended.is_some() {
            return None;
        }
        inner.next_viewer += 1;
        let viewer_id = inner.next_viewer;
        let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
        let kick = CancellationToken::new();
        let kicked_because = Arc::new(Mutex::new(None));
        inner.viewers.insert(
            viewer_id,
            Viewer {
                queue: tx,
                user_id: user_id.to_owned(),
                login_id: login_id.to_owned(),
                kick: kick.clone(),
                kicked_because: kicked_because.clone(),
            },
        );
        Some(Joined {
            viewer_id,
            queue: rx,
            scrollback: inner.scrollback.iter().copied().collect(),
            kick,
            kicked_because,
        })
    }

    pub fn leave(&self, viewer_id: u64) {
        self.lock().viewers.remove(&viewer_id);
    }

    pub fn viewer_count(&self) -> usize {
        self.lock().viewers.len()
    }

    /// Fans device output out to every viewer, without waiting on any.
    pub fn output(&self, data: Bytes) {
        let mut inner = self.lock();
        inner.scrollback.extend(data.iter().copied());
        let excess = inner.scrollback.len().saturating_sub(SCROLLBACK);
        inner.scrollback.drain(..excess);
        inner.viewers.retain(
            |_, v| match v.queue.try_send(ToViewer::Output(data.clone())) {
                Ok(()) => true,
                Err(_) => {
                    kick(v, "viewer_too_slow");
                    false
                }
            },
        );
    }

    /// Tells every viewer a channel closed.
    pub fn channel_closed(&self, exit_status: Option<i32>, reason: &str) {
        let inner = self.lock();
        for v in inner.viewers.values() {
            let _ = v.queue.try_send(ToViewer::ChannelClosed {
                exit_status,
                reason: reason.to_owned(),
            });
        }
    }

    /// Disconnects the viewers whose login matches `pred`.
    pub fn kick_logins(&self, why: &'static str, pred: impl Fn(&str) -> bool) {
        let mut inner = self.lock();
        inner.viewers.retain(|_, v| {
            if pred(&v.login_id) {
                kick(v, why);
                false
            } else {
                true
            }
        });
    }

    fn end(&self, code: &str, reason: &str) {
        let mut inner = self.lock();
        inner.ended = Some((code.to_owned(), reason.to_owned()));
        for (_, v) in inner.viewers.drain() {
            let ended = ToViewer::Ended {
                code: code.to_owned(),
                reason: reason.to_owned(),
            };
            if v.queue.try_send(ended).is_err() {
                kick(&v, "session_ended");
            }
        }
    }

    /// (viewer id, user id, login id) of each viewer.
    pub fn viewers(&self) -> Vec<(u64, String, String)> {
        self.lock()
            .viewers
            .iter()
            .map(|(id, v)| (*id, v.user_id.clone(), v.login_id.clone()))
            .collect()
    }
}

fn kick(v: &Viewer, why: &'static str) {
    if let Ok(mut slot) = v.kicked_because.lock() {
        slot.get_or_insert(why);
    }
    v.kick.cancel();
}

/// The sessions relayed by this node.
#[derive(Default)]
pub struct Hub {
    live: Mutex<HashMap<String, Arc<LiveSession>>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveSession>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(
        &self,
        id: &str,
        tenant_id: &str,
        device_id: &str,
        device_name: &str,
        max_access: Access,
    ) -> Arc<LiveSession> {
        let s = Arc::new(LiveSession {
            id: id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            device_id: device_id.to_owned(),
            device_name: device_name.to_owned(),
            max_access,
            inner: Mutex::new(Inner::default()),
        });
        self.lock().insert(id.to_owned(), s.clone());
        s
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.lock().get(id).cloned()
    }

    /// Removes a session and tells its viewers why it ended.
    pub fn end(&self, id: &str, code: &str, reason: &str) -> Option<Arc<LiveSession>> {
        let s = self.lock().remove(id)?;
        s.end(code, reason);
        Some(s)
    }

    /// Ids of this device's live sessions here.
    pub fn sessions_of(&self, device_id: &str) -> Vec<String> {
        self.lock()
            .values()
            .filter(|s| s.device_id == device_id)
            .map(|s| s.id.clone())
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<LiveSession>> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Arc<LiveSession> {
        Hub::default().open("s", "t", "d", "desk", Access::Control)
    }

    #[test]
    fn output_reaches_every_viewer_and_late_joiners_get_scrollback() {
        let s = session();
        let mut a = s.join("u1", "l1").unwrap();
        s.output(Bytes::from_static(b"hello "));
        let b = s.join("u2", "l2").unwrap();
        assert_eq!(b.scrollback, b"hello ");
        s.output(Bytes::from_static(b"world"));
        assert_eq!(
            a.queue.try_recv().unwrap(),
            ToViewer::Output(Bytes::from_static(b"hello "))
        );
        assert_eq!(
            a.queue.try_recv().unwrap(),
            ToViewer::Output(Bytes::from_static(b"world"))
        );
        let mut bq = b.queue;
        assert_eq!(
            bq.try_recv().unwrap(),
            ToViewer::Output(Bytes::from_static(b"world"))
        );
    }

    #[test]
    fn a_stalled_viewer_is_kicked_and_the_others_keep_receiving() {
        let s = session();
        let stalled = s.join("u1", "l1").unwrap();
        let mut live = s.join("u2", "l2").unwrap();
        for i in 0..VIEWER_QUEUE + 10 {
            s.output(Bytes::from(vec![b'x'; 1]));
            // The live viewer drains as it goes.
            assert!(live.queue.try_recv().is_ok(), "message {i}");
        }
        assert!(stalled.kick.is_cancelled());
        assert_eq!(
            *stalled.kicked_because.lock().unwrap(),
            Some("viewer_too_slow")
        );
        assert_eq!(s.viewer_count(), 1);
    }

    #[test]
    fn scrollback_is_bounded() {
        let s = session();
        s.output(Bytes::from(vec![b'a'; SCROLLBACK]));
        s.output(Bytes::from_static(b"tail"));
        let j = s.join("u", "l").unwrap();
        assert_eq!(j.scrollback.len(), SCROLLBACK);
        assert!(j.scrollback.ends_with(b"tail"));
    }

    #[test]
    fn ending_tells_viewers_and_refuses_new_ones() {
        let hub = Hub::default();
        let s = hub.open("s", "t", "d", "desk", Access::Control);
        let mut v = s.join("u", "l").unwrap();
        hub.end("s", "ended_by_operator", "bye");
        assert!(
            matches!(v.queue.try_recv().unwrap(), ToViewer::Ended { code, .. } if code == "ended_by_operator")
        );
        assert!(s.join("u", "l").is_none());
        assert!(hub.get("s").is_none());
    }
}
