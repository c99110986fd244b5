//! The relay: live sessions on this node, their viewers, and the fan-out of
//! device output.
//!
//! The device side rides the device's control connection (one WebSocket per
//! device, multiplexed by session and channel). Each viewer has a bounded
//! outbound queue, and output is never dropped for a viewer that stays
//! connected (a shell's screen would be corrupted):
//!
//! - Output goes to every viewer whose queue has room (fewer than
//!   [`VIEWER_QUEUE`] messages and [`VIEWER_QUEUE_BYTES`] bytes waiting). A
//!   viewer whose queue is full while another viewer's has room has fallen
//!   behind the others:
//!   it is disconnected with a reason (`viewer_too_slow`), so it never holds
//!   back the device or the other viewers.
//! - When every viewer's queue is full, the device is outrunning all of them
//!   (bulk output to a remote operator): the relay waits for the first one
//!   to make room, which pushes back on the device through its socket the
//!   way SSH does. A wait longer than [`STALL_LIMIT`] means nobody is
//!   reading: the stalled viewers are disconnected and output resumes.
//!
//! Recent output (the last [`SCROLLBACK`] bytes) is kept so a viewer who
//! joins late sees the current prompt.

mod lane;
mod presence;
pub mod screen;
pub mod screen_device;
mod screen_live;
mod screen_viewer;
mod scrollback;
mod standing;
pub mod viewer;
pub mod viewer_queue;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message as _;
use tessera_proto::v1::ChannelData;
use tessera_proto::{Body, Envelope};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::scrollback::Scrollback;
pub use tessera_core::kinds::EndCode;
use tessera_core::kinds::SessionChannel;

pub use self::lane::Lane;
pub use self::screen::{CodecPolicy, SCREEN_CHANNEL};
pub use self::screen_live::{viewer_number, Configured, ScreenOutcome};
use self::screen_live::{ScreenState, ViewerScreen};

pub use self::standing::{allows, sweep, user_changed};

/// Bytes of recent output replayed to a joining viewer.
pub const SCROLLBACK: usize = 64 * 1024;
/// Messages a viewer's queue holds before the viewer counts as too slow.
pub const VIEWER_QUEUE: usize = 1024;
/// Bytes of output a viewer's queue holds before the viewer counts as too
/// slow: bounds the relay's memory per viewer whatever the message sizes.
pub const VIEWER_QUEUE_BYTES: usize = 16 << 20;
/// The shell channel's id within a session.
pub const SHELL_CHANNEL: u32 = 1;
/// Device output is relayed in pieces of at most this many bytes.
pub const MAX_PIECE: usize = 64 * 1024;
/// Viewers one session admits at once.
pub const MAX_VIEWERS: usize = 32;
/// How long output may wait for a viewer to make room before the viewers
/// that are not reading at all are disconnected.
pub const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a viewer may do.
pub use tessera_core::kinds::ViewerAccess as Access;

/// Why the relay dropped a viewer; the word is what the viewer is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// Its queue was full while another viewer's had room.
    TooSlow,
    /// Nobody read for the stall limit.
    Stalled,
    /// The login that minted its token ended.
    LoggedOut,
    /// The session ended and its queue had no room to say so.
    SessionEnded,
    /// Its operator's role no longer allows the access it joined with.
    RoleChanged,
    /// Its operator's account was disabled.
    UserDisabled,
}

impl Kick {
    pub fn as_str(self) -> &'static str {
        match self {
            Kick::TooSlow => "viewer_too_slow",
            Kick::Stalled => "viewer_stalled",
            Kick::LoggedOut => "logged_out",
            Kick::SessionEnded => "session_ended",
            Kick::RoleChanged => "role_changed",
            Kick::UserDisabled => "user_disabled",
        }
    }
}

/// A piece of device output and the envelope that carries it to a viewer:
/// encoded once for every viewer, or the device's own frame as it came
/// (see [`LiveSession::output_framed`]), so relaying copies no payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// What counts against a viewer's byte budget and goes to scrollback.
    pub data: Bytes,
    /// `Envelope { ChannelData { session, SHELL_CHANNEL, data } }`, encoded.
    pub envelope: Bytes,
}

/// What the relay sends a viewer's connection task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToViewer {
    Output(Output),
    ChannelClosed {
        exit_status: Option<i32>,
        reason: String,
    },
    Ended {
        code: EndCode,
        reason: String,
    },
}

struct Viewer {
    queue: viewer_queue::Sender<ToViewer>,
    /// Output bytes queued and not yet written to the viewer's socket.
    queued: Arc<AtomicUsize>,
    /// Notified each time the viewer's task wrote some out.
    drained: Arc<Notify>,
    user_id: String,
    login_id: String,
    /// What it joined with (after the session's own limit).
    access: Access,
    /// Cancelled to disconnect the viewer (too slow, logged out).
    kick: CancellationToken,
    kicked_because: Arc<Mutex<Option<Kick>>>,
    /// A screen session's viewer: its lane, flow and input rules.
    screen: Option<ViewerScreen>,
}

#[derive(Default)]
struct Inner {
    viewers: HashMap<u64, Viewer>,
    scrollback: Scrollback,
    next_viewer: u64,
    ended: Option<(EndCode, String)>,
    /// Since when nobody watches (see [`LiveSession::unwatched_for`]).
    empty_since: Option<tokio::time::Instant>,
    /// A viewer joined with `keep`: the session outlives its viewers.
    kept: bool,
    /// Whether the session ends once unwatched for the grace period (a
    /// managed shell does; an attended one ends with its device).
    ends_when_unwatched: bool,
    screen: ScreenState,
}

impl Inner {
    /// Notes when the last viewer left, however it left.
    fn settle(&mut self) {
        if self.viewers.is_empty() {
            self.empty_since
                .get_or_insert_with(tokio::time::Instant::now);
        } else {
            self.empty_since = None;
        }
    }
}

/// A session being relayed on this node.
pub struct LiveSession {
    pub id: String,
    pub tenant_id: String,
    pub device_id: String,
    pub device_name: String,
    /// The device connection the session's shell lives on.
    pub conn_id: u64,
    /// The most the session allows (`view` sessions never take input).
    pub max_access: Access,
    /// How many viewers it admits at once.
    pub max_viewers: usize,
    /// What it carries.
    pub channel: SessionChannel,
    /// The screen's codec policy and input rate (screen sessions).
    pub screen: ScreenSettings,
    inner: Mutex<Inner>,
}

/// What the node's configuration says about screen sessions.
#[derive(Clone, Copy, Debug)]
pub struct ScreenSettings {
    pub policy: CodecPolicy,
    /// Input events a control viewer may send per second.
    pub input_per_second: u32,
}

impl Default for ScreenSettings {
    fn default() -> Self {
        ScreenSettings {
            policy: CodecPolicy::default(),
            input_per_second: viewer::INPUT_PER_SECOND,
        }
    }
}

/// A viewer's place in a session.
pub struct Joined {
    pub viewer_id: u64,
    pub queue: viewer_queue::Receiver<ToViewer>,
    pub scrollback: Vec<u8>,
    pub kick: CancellationToken,
    pub kicked_because: Arc<Mutex<Option<Kick>>>,
    /// What the viewer's task reports as written out.
    pub drained: Drained,
    /// A screen viewer's lane (its frames and the device's other messages).
    pub lane: Option<Arc<Lane>>,
    /// What the device must be told because this screen viewer joined.
    pub screen: Option<ScreenOutcome>,
}

/// What a screen viewer's seat does with the outcome of its leaving
/// (release what it held, reconfigure) when its task never did.
pub type Farewell = Box<dyn FnOnce(ScreenOutcome) + Send>;

/// See [`LiveSession::seat`].
pub struct Seat {
    session: Arc<LiveSession>,
    viewer_id: u64,
    /// The `session_left` row to write if the viewer's task never reaches
    /// its own (it was aborted or panicked).
    leaving: Option<(crate::store::Db, crate::store::audit::AuditEvent)>,
    /// A screen viewer's leaving, if its task never reaches its own.
    screen: Option<(Access, Farewell)>,
}

impl Seat {
    /// Arms the seat to audit the viewer's departure when dropped.
    pub fn audit_leaving(&mut self, db: crate::store::Db, event: crate::store::audit::AuditEvent) {
        self.leaving = Some((db, event));
    }

    /// The task audits the departure itself (with what it tallied).
    pub fn leave_unaudited(&mut self) {
        self.leaving = None;
    }

    /// Arms the seat of a screen viewer with `access`: dropped before its
    /// task left the screen itself (aborted, panicked), it still leaves —
    /// the device is sent the release of what the viewer held — and hands
    /// that outcome to `farewell` to carry out.
    pub fn leave_screen_on_drop(&mut self, access: Access, farewell: Farewell) {
        self.screen = Some((access, farewell));
    }

    /// The task leaves the screen itself.
    pub fn screen_left_by_task(&mut self) {
        self.screen = None;
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.session.leave(self.viewer_id);
        if let Some((access, farewell)) = self.screen.take() {
            farewell(self.session.screen_left(self.viewer_id, access));
        }
        if let Some((db, event)) = self.leaving.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = db.audit(event).await {
                        tracing::warn!(error = %e, "cannot audit a viewer's departure");
                    }
                });
            }
        }
    }
}

/// The viewer task's side of the byte budget.
pub struct Drained {
    queued: Arc<AtomicUsize>,
    notify: Arc<Notify>,
}

impl Drained {
    /// `n` output bytes left the queue (written to the socket).
    pub fn wrote(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.notify.notify_one();
    }
}

impl Viewer {
    fn has_room(&self) -> bool {
        self.queue.capacity() > 0 && self.queued.load(Ordering::Acquire) < VIEWER_QUEUE_BYTES
    }

    /// Resolves when the viewer may have room again.
    fn room(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        if self.queue.capacity() == 0 {
            Box::pin(self.queue.room())
        } else {
            let n = self.drained.clone();
            Box::pin(async move { n.notified().await })
        }
    }
}

impl LiveSession {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a viewer; `None` if the session has ended or is full.
    pub fn join(&self, user_id: &str, login_id: &str, access: Access) -> Option<Joined> {
        let mut inner = self.lock();
        if inner.ended.is_some() || inner.viewers.len() >= self.max_viewers {
            return None;
        }
        inner.next_viewer += 1;
        let viewer_id = inner.next_viewer;
        let (tx, rx) = viewer_queue::bounded(VIEWER_QUEUE);
        inner.empty_since = None;
        let kick = CancellationToken::new();
        let kicked_because = Arc::new(Mutex::new(None));
        let queued = Arc::new(AtomicUsize::new(0));
        let drained = Arc::new(Notify::new());
        inner.viewers.insert(
            viewer_id,
            Viewer {
                queue: tx,
                queued: queued.clone(),
                drained: drained.clone(),
                user_id: user_id.to_owned(),
                login_id: login_id.to_owned(),
                access,
                kick: kick.clone(),
                kicked_because: kicked_because.clone(),
                screen: (self.channel == SessionChannel::Screen).then(|| {
                    ViewerScreen::new(
                        access,
                        viewer_number(viewer_id),
                        self.screen.input_per_second,
                    )
                }),
            },
        );
        let lane = inner
            .viewers
            .get(&viewer_id)
            .and_then(|v| v.screen.as_ref())
            .map(ViewerScreen::lane);
        let screen = lane
            .is_some()
            .then(|| self.screen_joined(&mut inner, viewer_id));
        Some(Joined {
            viewer_id,
            queue: rx,
            scrollback: inner.scrollback.to_vec(),
            kick,
            kicked_because,
            drained: Drained {
                queued,
                notify: drained,
            },
            lane,
            screen,
        })
    }

    pub fn leave(&self, viewer_id: u64) {
        let mut inner = self.lock();
        inner.viewers.remove(&viewer_id);
        inner.settle();
    }

    /// The session ends once nobody has watched it for the grace period
    /// (a managed shell; see [`LiveSession::unwatched_for`]).
    pub fn end_when_unwatched(&self) {
        let mut inner = self.lock();
        inner.ends_when_unwatched = true;
        inner.settle();
    }

    /// A viewer left on purpose (`connect --keep`): the session stays
    /// until it is ended or its device goes.
    pub fn keep(&self) {
        self.lock().kept = true;
    }

    /// How long a session that ends when unwatched has had no viewer;
    /// `None` while watched, when kept, or for sessions that do not end so.
    pub fn unwatched_for(&self, now: tokio::time::Instant) -> Option<std::time::Duration> {
        let inner = self.lock();
        if !inner.ends_when_unwatched || inner.kept || !inner.viewers.is_empty() {
            return None;
        }
        inner
            .empty_since
            .map(|since| now.saturating_duration_since(since))
    }

    /// The viewer's seat, which leaves the session when dropped: however
    /// the viewer's task ends (a panic, an abort), the relay stops
    /// queueing output for it and its place is free.
    pub fn seat(self: &Arc<Self>, viewer_id: u64) -> Seat {
        Seat {
            session: Arc::clone(self),
            viewer_id,
            leaving: None,
            screen: None,
        }
    }

    pub fn viewer_count(&self) -> usize {
        self.lock().viewers.len()
    }

    /// Delivers device output to every viewer (see the module doc): returns
    /// at once unless every viewer is behind, then waits for the first to
    /// catch up, at most [`STALL_LIMIT`].
    pub async fn output(&self, data: Bytes) {
        let envelope = Envelope::of(Body::ChannelData(ChannelData {
            session_id: self.id.clone(),
            channel_id: SHELL_CHANNEL,
            data: data.clone(),
        }))
        .encode_to_vec()
        .into();
        self.output_framed(Output { data, envelope }).await;
    }

    /// [`LiveSession::output`] of a piece whose envelope is already
    /// encoded: the caller vouches that `out.envelope` is this session's
    /// shell `ChannelData` carrying `out.data`.
    pub async fn output_framed(&self, out: Output) {
        // Read the clock only once some viewer is full: not per message.
        let mut deadline = None;
        loop {
            let full = match self.offer(&out) {
                None => return,
                Some(full) => full,
            };
            let deadline =
                *deadline.get_or_insert_with(|| tokio::time::Instant::now() + STALL_LIMIT);
            let room = futures_util::future::select_all(full);
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                self.kick_full(Kick::Stalled);
            }
        }
    }

    /// Sends `data` to every viewer with room, or, if none has room but
    /// some viewer exists, returns what to wait on for room.
    #[allow(clippy::type_complexity)]
    fn offer(&self, out: &Output) -> Option<Vec<Pin<Box<dyn Future<Output = ()> + Send>>>> {
        let mut inner = self.lock();
        let any_room = inner.viewers.values().any(Viewer::has_room);
        if !any_room && !inner.viewers.is_empty() {
            return Some(inner.viewers.values().map(Viewer::room).collect());
        }
        inner.viewers.retain(|_, v| {
            // The queue refuses when it is full by count, so only the byte
            // budget is checked here.
            if v.queued.load(Ordering::Acquire) < VIEWER_QUEUE_BYTES
                && v.queue.try_send(ToViewer::Output(out.clone())).is_ok()
            {
                v.queued.fetch_add(out.data.len(), Ordering::AcqRel);
                true
            } else {
                kick(v, Kick::TooSlow);
                false
            }
        });
        inner.settle();
        inner.scrollback.push(out.data.clone());
        None
    }

    /// Disconnects the viewers whose queues are full.
    fn kick_full(&self, why: Kick) {
        let mut inner = self.lock();
        inner.viewers.retain(|_, v| {
            if !v.has_room() {
                kick(v, why);
                false
            } else {
                true
            }
        });
        inner.settle();
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
    pub fn kick_logins(&self, why: Kick, pred: impl Fn(&str) -> bool) {
        self.kick_where(why, |login, _, _| pred(login));
    }

    /// Disconnects the viewers for which `pred(login id, user id, access)`
    /// holds.
    pub fn kick_where(&self, why: Kick, pred: impl Fn(&str, &str, Access) -> bool) {
        let mut inner = self.lock();
        inner.viewers.retain(|_, v| {
            if pred(&v.login_id, &v.user_id, v.access) {
                kick(v, why);
                false
            } else {
                true
            }
        });
        inner.settle();
    }

    fn end(&self, code: EndCode, reason: &str) {
        let mut inner = self.lock();
        inner.ended = Some((code, reason.to_owned()));
        for (_, v) in inner.viewers.drain() {
            let ended = ToViewer::Ended {
                code,
                reason: reason.to_owned(),
            };
            if v.queue.try_send(ended).is_err() {
                kick(&v, Kick::SessionEnded);
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

fn kick(v: &Viewer, why: Kick) {
    if let Ok(mut slot) = v.kicked_because.lock() {
        slot.get_or_insert(why);
    }
    v.kick.cancel();
}

/// The sessions relayed by this node.
pub struct Hub {
    live: Mutex<HashMap<String, Arc<LiveSession>>>,
    max_viewers: usize,
    screen: ScreenSettings,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub::with_max_viewers(MAX_VIEWERS)
    }
}

impl Hub {
    /// A hub whose sessions admit `max_viewers` viewers each.
    pub fn with_max_viewers(max_viewers: usize) -> Hub {
        Hub {
            live: Mutex::default(),
            max_viewers: max_viewers.max(1),
            screen: ScreenSettings::default(),
        }
    }

    /// The codec policy and input rate of this node's screen sessions.
    pub fn with_screen(mut self, screen: ScreenSettings) -> Hub {
        self.screen = screen;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveSession>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(
        &self,
        id: &str,
        tenant_id: &str,
        device_id: &str,
        device_name: &str,
        conn_id: u64,
        max_access: Access,
    ) -> Arc<LiveSession> {
        self.open_channel(
            id,
            tenant_id,
            device_id,
            device_name,
            conn_id,
            max_access,
            SessionChannel::Shell,
        )
    }

    /// Opens a session carrying `channel`.
    #[allow(clippy::too_many_arguments)]
    pub fn open_channel(
        &self,
        id: &str,
        tenant_id: &str,
        device_id: &str,
        device_name: &str,
        conn_id: u64,
        max_access: Access,
        channel: SessionChannel,
    ) -> Arc<LiveSession> {
        let s = Arc::new(LiveSession {
            id: id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            device_id: device_id.to_owned(),
            device_name: device_name.to_owned(),
            conn_id,
            max_access,
            max_viewers: self.max_viewers,
            channel,
            screen: self.screen,
            inner: Mutex::new(Inner::default()),
        });
        self.lock().insert(id.to_owned(), s.clone());
        s
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.lock().get(id).cloned()
    }

    /// Removes a session and tells its viewers why it ended.
    pub fn end(&self, id: &str, code: EndCode, reason: &str) -> Option<Arc<LiveSession>> {
        let s = self.lock().remove(id)?;
        s.end(code, reason);
        Some(s)
    }

    /// Ids of the sessions relayed over one device connection.
    pub fn sessions_of_conn(&self, device_id: &str, conn_id: u64) -> Vec<String> {
        self.lock()
            .values()
            .filter(|s| s.device_id == device_id && s.conn_id == conn_id)
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

    /// The data of the next output in a viewer's queue.
    fn next_output(q: &mut viewer_queue::Receiver<ToViewer>) -> Option<Bytes> {
        match q.try_recv() {
            Ok(ToViewer::Output(o)) => Some(o.data),
            _ => None,
        }
    }

    fn session() -> Arc<LiveSession> {
        Hub::default().open("s", "t", "d", "desk", 1, Access::Control)
    }

    #[tokio::test]
    async fn a_viewer_task_that_is_aborted_still_leaves_the_session() {
        let s = session();
        let joined = s.join("u1", "l1", Access::Control).unwrap();
        let seat = s.seat(joined.viewer_id);
        let task = tokio::spawn(async move {
            let _held = (seat, joined);
            std::future::pending::<()>().await;
        });
        assert_eq!(s.viewer_count(), 1);
        task.abort();
        let _ = task.await;
        assert_eq!(s.viewer_count(), 0);
    }

    #[tokio::test]
    async fn a_screen_viewer_task_that_is_aborted_still_releases_what_it_held() {
        let s = Hub::default().open_channel(
            "s",
            "t",
            "d",
            "desk",
            1,
            Access::Control,
            SessionChannel::Screen,
        );
        let joined = s.join("u1", "l1", Access::Control).unwrap();
        let number = viewer_number(joined.viewer_id);
        let mut seat = s.seat(joined.viewer_id);
        let (tx, rx) = std::sync::mpsc::channel();
        seat.leave_screen_on_drop(
            Access::Control,
            Box::new(move |out| {
                let _ = tx.send(out);
            }),
        );
        let task = tokio::spawn(async move {
            let _held = (seat, joined);
            std::future::pending::<()>().await;
        });
        task.abort();
        let _ = task.await;
        assert_eq!(s.viewer_count(), 0);
        let out = rx.try_recv().expect("the seat left the screen");
        match out.input {
            Some(Body::Screen(tessera_proto::v1::Screen {
                body: Some(tessera_proto::v1::screen::Body::ReleaseInput(r)),
                ..
            })) => assert_eq!(r.viewer, number),
            other => panic!("expected a release, got {other:?}"),
        }
        // A task that left the screen itself is not released twice.
        let joined = s.join("u2", "l2", Access::Control).unwrap();
        let mut seat = s.seat(joined.viewer_id);
        let (tx, rx) = std::sync::mpsc::channel();
        seat.leave_screen_on_drop(
            Access::Control,
            Box::new(move |out| {
                let _ = tx.send(out);
            }),
        );
        seat.screen_left_by_task();
        drop(seat);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn output_reaches_every_viewer_and_late_joiners_get_scrollback() {
        let s = session();
        let mut a = s.join("u1", "l1", Access::Control).unwrap();
        s.output(Bytes::from_static(b"hello ")).await;
        let b = s.join("u2", "l2", Access::Control).unwrap();
        assert_eq!(b.scrollback, b"hello ");
        s.output(Bytes::from_static(b"world")).await;
        assert_eq!(next_output(&mut a.queue).unwrap(), "hello ");
        assert_eq!(next_output(&mut a.queue).unwrap(), "world");
        let mut bq = b.queue;
        assert_eq!(next_output(&mut bq).unwrap(), "world");
    }

    #[tokio::test]
    async fn a_viewer_gets_output_in_its_sessions_shell_envelope() {
        let s = session();
        let mut v = s.join("u", "l", Access::Control).unwrap();
        s.output(Bytes::from_static(b"hi")).await;
        let Ok(ToViewer::Output(o)) = v.queue.try_recv() else {
            panic!("output")
        };
        assert_eq!(
            Envelope::decode(o.envelope).unwrap().body,
            Some(Body::ChannelData(ChannelData {
                session_id: "s".into(),
                channel_id: SHELL_CHANNEL,
                data: Bytes::from_static(b"hi"),
            }))
        );
    }

    #[tokio::test]
    async fn a_viewer_behind_the_others_is_kicked_and_the_others_keep_receiving() {
        let s = session();
        let stalled = s.join("u1", "l1", Access::Control).unwrap();
        let mut live = s.join("u2", "l2", Access::Control).unwrap();
        for i in 0..VIEWER_QUEUE + 10 {
            s.output(Bytes::from(vec![b'x'; 1])).await;
            // The live viewer drains as it goes.
            assert!(live.queue.try_recv().is_ok(), "message {i}");
        }
        assert!(stalled.kick.is_cancelled());
        assert_eq!(*stalled.kicked_because.lock().unwrap(), Some(Kick::TooSlow));
        assert_eq!(s.viewer_count(), 1);
    }

    #[tokio::test]
    async fn a_viewer_behind_by_more_bytes_than_its_budget_is_kicked_before_its_queue_fills() {
        let s = session();
        let stalled = s.join("u1", "l1", Access::Control).unwrap();
        let mut live = s.join("u2", "l2", Access::Control).unwrap();
        let piece = Bytes::from(vec![b'x'; MAX_PIECE]);
        let pieces = VIEWER_QUEUE_BYTES / MAX_PIECE + 1;
        assert!(pieces < VIEWER_QUEUE, "the byte budget binds first");
        for _ in 0..pieces {
            s.output(piece.clone()).await;
            let d = next_output(&mut live.queue).unwrap();
            live.drained.wrote(d.len());
        }
        assert_eq!(*stalled.kicked_because.lock().unwrap(), Some(Kick::TooSlow));
        assert_eq!(s.viewer_count(), 1);
    }

    #[tokio::test]
    async fn a_lone_viewer_over_its_byte_budget_holds_output_until_it_writes_some_out() {
        let s = session();
        let mut only = s.join("u1", "l1", Access::Control).unwrap();
        let piece = Bytes::from(vec![b'x'; MAX_PIECE]);
        for _ in 0..VIEWER_QUEUE_BYTES / MAX_PIECE {
            s.output(piece.clone()).await;
        }
        let s2 = s.clone();
        let pending = tokio::spawn(async move { s2.output(Bytes::from_static(b"last")).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pending.is_finished(), "waits for room, drops nothing");
        let d = next_output(&mut only.queue).unwrap();
        only.drained.wrote(d.len());
        pending.await.unwrap();
        assert_eq!(s.viewer_count(), 1);
    }

    #[tokio::test]
    async fn when_every_viewer_is_behind_output_waits_for_the_first_to_catch_up() {
        let s = session();
        let mut only = s.join("u1", "l1", Access::Control).unwrap();
        for _ in 0..VIEWER_QUEUE {
            s.output(Bytes::from_static(b"x")).await;
        }
        // The queue is full: the next output waits instead of dropping.
        let s2 = s.clone();
        let pending = tokio::spawn(async move { s2.output(Bytes::from_static(b"last")).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pending.is_finished());
        assert!(only.queue.try_recv().is_ok());
        pending.await.unwrap();
        let mut last = None;
        while let Some(d) = next_output(&mut only.queue) {
            last = Some(d);
        }
        assert_eq!(last.as_deref(), Some(&b"last"[..]));
        assert!(
            !only.kick.is_cancelled(),
            "the only viewer is never dropped for being behind"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn viewers_that_stop_reading_altogether_are_dropped_after_the_stall_limit() {
        let s = session();
        let stalled = s.join("u1", "l1", Access::Control).unwrap();
        for _ in 0..VIEWER_QUEUE {
            s.output(Bytes::from_static(b"x")).await;
        }
        s.output(Bytes::from_static(b"more")).await;
        assert!(stalled.kick.is_cancelled());
        assert_eq!(*stalled.kicked_because.lock().unwrap(), Some(Kick::Stalled));
    }

    #[tokio::test]
    async fn scrollback_is_bounded() {
        let s = session();
        s.output(Bytes::from(vec![b'a'; SCROLLBACK])).await;
        s.output(Bytes::from_static(b"tail")).await;
        let j = s.join("u", "l", Access::Control).unwrap();
        assert_eq!(j.scrollback.len(), SCROLLBACK);
        assert!(j.scrollback.ends_with(b"tail"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_managed_shell_counts_unwatched_time_from_its_last_viewer_leaving() {
        let s = session();
        s.end_when_unwatched();
        let j = s.join("u", "l", Access::Control).unwrap();
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert_eq!(s.unwatched_for(tokio::time::Instant::now()), None);
        drop(s.seat(j.viewer_id));
        tokio::time::advance(std::time::Duration::from_secs(7)).await;
        assert_eq!(
            s.unwatched_for(tokio::time::Instant::now()),
            Some(std::time::Duration::from_secs(7))
        );
        let again = s.join("u", "l", Access::Control).unwrap();
        assert_eq!(s.unwatched_for(tokio::time::Instant::now()), None);
        s.keep();
        s.leave(again.viewer_id);
        assert_eq!(
            s.unwatched_for(tokio::time::Instant::now()),
            None,
            "a kept session never lapses"
        );
    }

    #[test]
    fn a_session_admits_a_bounded_number_of_viewers() {
        let s = session();
        let joined: Vec<_> = (0..MAX_VIEWERS)
            .map(|i| s.join("u", &i.to_string(), Access::Control).unwrap())
            .collect();
        assert!(s.join("u", "one-too-many", Access::Control).is_none());
        drop(joined);
    }

    #[test]
    fn ending_tells_viewers_and_refuses_new_ones() {
        let hub = Hub::default();
        let s = hub.open("s", "t", "d", "desk", 1, Access::Control);
        let mut v = s.join("u", "l", Access::Control).unwrap();
        hub.end("s", EndCode::EndedByOperator, "bye");
        assert!(matches!(
            v.queue.try_recv().unwrap(),
            ToViewer::Ended {
                code: EndCode::EndedByOperator,
                ..
            }
        ));
        assert!(s.join("u", "l", Access::Control).is_none());
        assert!(hub.get("s").is_none());
    }
}
