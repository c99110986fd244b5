//! Sessions: their life from creation to end, across the database, the
//! relay hub and the device.
//!
//! ```text
//!   attended ─ bind code ─▶ pending ─ consent granted ─▶ active ─▶ ended
//!                              │  denied / timeout / device gone ─▶ ended
//!   managed ─ policy says consent ─▶ pending ─ …
//!           └ otherwise ────────────────────▶ active ─▶ ended
//! ```
//!
//! A pending session carries no traffic: the shell channel is opened on the
//! device only when the session becomes active, and viewer tokens are minted
//! only for active sessions. Every transition is a conditional UPDATE, so a
//! consent answer racing its timeout has exactly one outcome; what each
//! event means is decided in [`consent`], without a database.

pub mod consent;

use std::time::Duration;

use tessera_core::kinds::{EndCode, Origin, SessionChannel, ViewerAccess};
use tessera_proto::v1::{ChannelKind, ChannelOpen, ConsentRequest, SessionEnded};
use tessera_proto::Body;

use self::consent::{ConsentEvent, ConsentOutcome, Refusal};
use crate::cluster::orders::{self, Order};
use crate::cluster::Cluster;
use crate::control::Registry;
use crate::relay::{Hub, SCREEN_CHANNEL, SHELL_CHANNEL};
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::sessions::SessionRow;
use crate::store::{self, Db, StoreError};
use crate::AppState;

/// The initial terminal size, until a viewer reports its own.
const INITIAL_COLS: u32 = 80;
const INITIAL_ROWS: u32 = 24;

/// Why a session could not start relaying.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the session is not active")]
    NotActive,
    /// It ended between the caller's read and the relay's start.
    #[error("the session ended")]
    EndedMeanwhile,
    #[error("the device is not connected to this server")]
    DeviceOffline,
    #[error("the device is not responding")]
    DeviceUnresponsive,
    #[error("the device's agent is too old for this channel")]
    ChannelUnsupported,
    /// The device is held by another node that cannot be asked right now.
    #[error("the node holding the device cannot be reached")]
    RelayUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn max_access(row: &SessionRow) -> ViewerAccess {
    row.access.viewer()
}

/// What session transitions touch: the database, the devices connected to
/// this node, the sessions it relays, and the other nodes (told of every
/// end, see [`crate::cluster::orders`]).
#[derive(Clone, Copy)]
pub struct Sessions<'a> {
    pub db: &'a Db,
    pub registry: &'a Registry,
    pub hub: &'a Hub,
    pub cluster: &'a Cluster,
}

impl<'a> Sessions<'a> {
    pub fn of(state: &'a AppState) -> Sessions<'a> {
        Sessions {
            db: state.db(),
            registry: state.registry(),
            hub: state.hub(),
            cluster: state.cluster(),
        }
    }

    fn notify_device(self, device_id: &str, body: Body) {
        if let Some((_, notices)) = self.registry.notices(device_id) {
            // A full notice queue means the device is not reading at all; it
            // will be cut off by its heartbeat timeout.
            let _ = notices.try_send(crate::control::queued(body));
        }
    }

    /// Starts relaying an active session: opens it in the hub and asks the
    /// device to start the shell. The device must be connected to this node.
    pub async fn start_relay(self, row: &SessionRow) -> Result<(), SessionError> {
        if !row.state.carries_traffic() {
            return Err(SessionError::NotActive);
        }
        let id = row.id.as_str();
        let Some((conn_id, notices)) = self.registry.notices(&row.device_id) else {
            self.end(
                id,
                EndCode::DeviceOffline,
                "the device is not connected",
                Actor::System,
            )
            .await?;
            return Err(SessionError::DeviceOffline);
        };
        // A screen to an agent below protocol 4 is refused before the
        // device is sent anything it cannot read.
        if !crate::relay::screen::device_serves(
            row.channel,
            self.registry.protocol_of(&row.device_id),
        ) {
            self.end(id, EndCode::ChannelUnsupported, UNSUPPORTED, Actor::System)
                .await?;
            return Err(SessionError::ChannelUnsupported);
        }
        let live = self.hub.open_channel(
            id,
            &row.tenant_id,
            &row.device_id,
            &row.device_name,
            conn_id,
            max_access(row),
            row.channel,
        );
        // An operator's shell ends when nobody watches it any more (after
        // the grace period); an attended one ends with its helper's agent.
        if row.origin == Origin::Managed {
            live.end_when_unwatched();
        }
        // Where viewers on other nodes find it.
        store::sessions::set_relay_node(self.db, id, self.cluster.node_id()).await?;
        // An end that landed between the caller's read and the open above found
        // nothing in the hub to tear down: look again now that it is there.
        let current = store::sessions::by_id_any_tenant(self.db.pool(), id).await?;
        if current.is_none_or(|c| !c.state.carries_traffic()) {
            self.hub.end(id, EndCode::Ended, "the session ended");
            return Err(SessionError::EndedMeanwhile);
        }
        let open = crate::control::queued(Body::ChannelOpen(match row.channel {
            SessionChannel::Shell => ChannelOpen {
                session_id: id.to_owned(),
                channel_id: SHELL_CHANNEL,
                kind: ChannelKind::Shell.into(),
                cols: INITIAL_COLS,
                rows: INITIAL_ROWS,
            },
            SessionChannel::Screen => ChannelOpen {
                session_id: id.to_owned(),
                channel_id: SCREEN_CHANNEL,
                kind: ChannelKind::Screen.into(),
                cols: 0,
                rows: 0,
            },
        }));
        if notices.try_send(open).is_err() {
            self.end(
                id,
                EndCode::DeviceUnresponsive,
                "the device is not reading its connection",
                Actor::System,
            )
            .await?;
            return Err(SessionError::DeviceUnresponsive);
        }
        Ok(())
    }

    /// Ends a session everywhere: the row, the hub (viewers learn why), the
    /// device (it closes the shell). A one-session device is revoked with it.
    /// Returns false if the session had already ended.
    pub async fn end(
        self,
        id: &str,
        code: EndCode,
        reason: &str,
        actor: Actor,
    ) -> Result<bool, StoreError> {
        let ended = self
            .db
            .write(async |w| {
                let Some(row) = store::sessions::by_id_any_tenant(w.conn(), id).await? else {
                    return Ok::<_, StoreError>(None);
                };
                let now = w.now();
                if !store::sessions::end(w, id, code, reason, now).await? {
                    return Ok(None);
                }
                w.audit(ended_event(&row, actor, code, reason)).await?;
                retire_ephemeral(w, &row, now).await?;
                Ok(Some(row))
            })
            .await?;
        let Some(row) = ended else {
            return Ok(false);
        };
        self.finish_everywhere(&row.device_id, id, code, reason)
            .await;
        Ok(true)
    }

    /// The relay side of an end, here and on every other node at once
    /// (the node relaying it, or holding its device, may be another).
    async fn finish_everywhere(self, device_id: &str, id: &str, code: EndCode, reason: &str) {
        self.finish(device_id, id, code, reason);
        orders::publish(
            self.cluster,
            Order::SessionEnded {
                session_id: id.to_owned(),
                device_id: device_id.to_owned(),
                code,
                reason: reason.to_owned(),
            },
        )
        .await;
    }

    /// The relay side of an end on this node: viewers and device are told;
    /// a screen channel that was configured is audited as closed.
    pub(crate) fn finish(self, device_id: &str, id: &str, code: EndCode, reason: &str) {
        let live = self.hub.end(id, code, reason);
        if let Some((live, (codec, monitor, frames, bytes))) =
            live.and_then(|l| l.screen_summary().map(|s| (l, s)))
        {
            let event = AuditEvent::new(&live.tenant_id, Actor::System, Action::ScreenClosed)
                .target(format!("session:{id}"))
                .detail("device_id", live.device_id.clone())
                .detail("codec", codec)
                .detail("monitor", monitor)
                .detail("frames", frames)
                .detail("bytes", bytes)
                .detail("code", code.as_str());
            let db = self.db.clone();
            tokio::spawn(async move {
                if let Err(e) = db.audit(event).await {
                    tracing::warn!(error = %e, "cannot audit a screen channel's close");
                }
            });
        }
        self.notify_device(
            device_id,
            Body::SessionEnded(SessionEnded {
                session_id: id.to_owned(),
                code: code.as_str().to_owned(),
                reason: reason.to_owned(),
            }),
        );
    }

    /// pending → denied (or timed out, or abandoned): the session ends
    /// before it began.
    async fn refuse_consent(self, id: &str, refusal: Refusal) -> Result<bool, StoreError> {
        let Refusal {
            code,
            reason,
            action,
        } = refusal;
        let refused = self
            .db
            .write(async |w| {
                let Some(row) = store::sessions::by_id_any_tenant(w.conn(), id).await? else {
                    return Ok::<_, StoreError>(None);
                };
                let now = w.now();
                if !store::sessions::refuse_consent(w, id, code, reason, now).await? {
                    return Ok(None);
                }
                w.audit(
                    AuditEvent::new(&row.tenant_id, Actor::Device(row.device_id.clone()), action)
                        .target(format!("session:{id}"))
                        .detail("code", code.as_str()),
                )
                .await?;
                w.audit(ended_event(&row, Actor::System, code, reason))
                    .await?;
                retire_ephemeral(w, &row, now).await?;
                Ok(Some(row))
            })
            .await?;
        let Some(row) = refused else {
            return Ok(false);
        };
        self.finish_everywhere(&row.device_id, id, code, reason)
            .await;
        Ok(true)
    }

    /// What a consent event does to a pending session.
    pub async fn consent_event(
        self,
        row: &SessionRow,
        event: ConsentEvent,
    ) -> Result<(), StoreError> {
        let id = row.id.as_str();
        let refusal = match event.outcome() {
            ConsentOutcome::End(refusal) => refusal,
            ConsentOutcome::Start => {
                let granted = self
                    .db
                    .write(async |w| {
                        let now = w.now();
                        if !store::sessions::grant_consent(w, id, now).await? {
                            return Ok::<_, StoreError>(false);
                        }
                        w.audit(
                            AuditEvent::new(
                                &row.tenant_id,
                                Actor::Device(row.device_id.clone()),
                                Action::ConsentGranted,
                            )
                            .target(format!("session:{id}"))
                            .detail("access", row.access.as_str()),
                        )
                        .await?;
                        Ok(true)
                    })
                    .await?;
                if !granted {
                    return Ok(());
                }
                if let Some(active) = store::sessions::by_id_any_tenant(self.db.pool(), id).await? {
                    if let Err(e) = self.start_relay(&active).await {
                        tracing::warn!(error = %e, "could not start a consented session");
                    }
                }
                return Ok(());
            }
        };
        self.refuse_consent(id, refusal).await?;
        Ok(())
    }

    /// Ends the live sessions opened by operators since disabled: at once
    /// on the node that disables one, and by every node's sweep.
    pub async fn end_of_disabled_users(self) -> Result<(), StoreError> {
        for id in store::sessions::live_of_disabled_users(self.db).await? {
            self.end(
                &id,
                EndCode::UserDisabled,
                "the operator who opened it was disabled",
                Actor::System,
            )
            .await?;
        }
        Ok(())
    }

    /// Ends pending sessions past their consent deadline (their device may
    /// never have connected to be asked), active sessions whose device
    /// is gone from every node (not seen since `cutoff`), managed shells
    /// unwatched for `grace`, and sessions opened by a disabled operator.
    pub async fn sweep(
        self,
        cutoff: tessera_core::Timestamp,
        grace: Duration,
    ) -> Result<(), StoreError> {
        // First, so that the disabled operator's kicked viewers leaving
        // does not make it read as merely unwatched.
        self.end_of_disabled_users().await?;
        let now_relay = tokio::time::Instant::now();
        for live in self.hub.all() {
            if live.unwatched_for(now_relay).is_some_and(|d| d >= grace) {
                let reason = format!("nobody watched it for {grace:?} after its last viewer left");
                self.end(&live.id, EndCode::ViewersLeft, &reason, Actor::System)
                    .await?;
            }
        }
        let now = self.db.now();
        for id in store::sessions::pending_past_deadline(self.db, now).await? {
            if let ConsentOutcome::End(refusal) = ConsentEvent::TimedOut.outcome() {
                self.refuse_consent(&id, refusal).await?;
            }
        }
        // Relayed by a node that is gone (never one this node relays: its
        // own lease may lapse while the database is away). First: that is
        // why its device went too.
        let me = self.cluster.node_id();
        for id in store::sessions::active_on_lost_nodes(self.db, me, now).await? {
            if self.hub.get(&id).is_none() {
                self.end(
                    &id,
                    EndCode::NodeLost,
                    "the server node relaying it is gone",
                    Actor::System,
                )
                .await?;
            }
        }
        for id in store::sessions::active_with_device_gone(self.db, cutoff).await? {
            if self.hub.get(&id).is_none() {
                self.end(
                    &id,
                    EndCode::DeviceDisconnected,
                    "the device is no longer connected",
                    Actor::System,
                )
                .await?;
            }
        }
        Ok(())
    }
}

fn ended_event(row: &SessionRow, actor: Actor, code: EndCode, reason: &str) -> AuditEvent {
    AuditEvent::new(&row.tenant_id, actor, Action::SessionEnded)
        .target(format!("session:{}", row.id))
        .detail("device_id", row.device_id.clone())
        .detail("code", code.as_str())
        .detail("reason", reason)
}

/// A support-code device lives for its one session: when the session ends,
/// its key stops working.
async fn retire_ephemeral(
    tx: &mut store::Tx,
    row: &SessionRow,
    now: tessera_core::Timestamp,
) -> Result<(), StoreError> {
    if row.origin == Origin::Attended {
        store::devices::revoke(
            tx,
            &row.tenant_id,
            &row.device_id,
            "attended session ended",
            "system",
            now,
        )
        .await?;
    }
    Ok(())
}

/// Ends a session everywhere (see [`Sessions::end`]).
pub async fn end(
    state: &AppState,
    id: &str,
    code: EndCode,
    reason: &str,
    actor: Actor,
) -> Result<bool, StoreError> {
    Sessions::of(state).end(id, code, reason, actor).await
}

/// Starts relaying an active session (see [`Sessions::start_relay`]).
pub async fn start_relay(state: &AppState, row: &SessionRow) -> Result<(), SessionError> {
    Sessions::of(state).start_relay(row).await
}

const UNSUPPORTED: &str =
    "the device's agent is too old for screen sessions (it needs protocol 4); update it";

/// Asks the device (connected here) for consent, and arms the timeout. A
/// screen session to an agent that cannot open one ends instead
/// (`channel_unsupported`): nobody is asked to consent to what cannot run.
pub fn request_consent(state: &AppState, row: &SessionRow) {
    if !crate::relay::screen::device_serves(
        row.channel,
        state.registry().protocol_of(&row.device_id),
    ) {
        let state = state.clone();
        let id = row.id.to_string();
        tokio::spawn(async move {
            if let Err(e) = end(
                &state,
                &id,
                EndCode::ChannelUnsupported,
                UNSUPPORTED,
                Actor::System,
            )
            .await
            {
                tracing::warn!(error = %e, "cannot end an unsupported screen session");
            }
        });
        return;
    }
    let remaining = row
        .consent_deadline
        .map(|d| d.since(state.now()))
        .unwrap_or(state.config().consent_timeout);
    Sessions::of(state).notify_device(
        &row.device_id,
        Body::ConsentRequest(ConsentRequest {
            session_id: row.id.to_string(),
            technician: row
                .created_by_name
                .clone()
                .unwrap_or_else(|| "an operator".to_owned()),
            access: row.access.as_str().to_owned(),
            kind: match row.channel {
                SessionChannel::Shell => ChannelKind::Shell.into(),
                SessionChannel::Screen => ChannelKind::Screen.into(),
            },
            timeout_ms: u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX),
        }),
    );
    let state = state.clone();
    let row = row.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(remaining) => {}
            () = state.shutdown_token().cancelled() => return,
        }
        if let Err(e) = Sessions::of(&state)
            .consent_event(&row, ConsentEvent::TimedOut)
            .await
        {
            tracing::warn!(error = %e, "cannot time out a consent request");
        }
    });
}

/// The device's answer to a consent request.
pub async fn consent_answer(
    state: &AppState,
    device_id: &str,
    session_id: &str,
    granted: bool,
    unavailable: bool,
) -> Result<(), StoreError> {
    let Some(row) = store::sessions::by_id_any_tenant(state.db().pool(), session_id).await? else {
        return Ok(());
    };
    // A device answers only for its own sessions.
    if row.device_id != device_id {
        tracing::warn!(session = %session_id, "consent answer from another device ignored");
        return Ok(());
    }
    let event = if granted {
        ConsentEvent::Granted
    } else if unavailable {
        ConsentEvent::Unavailable
    } else {
        ConsentEvent::Denied
    };
    Sessions::of(state).consent_event(&row, event).await
}

/// The person at the device ended its session (`SessionEndRequest`): it
/// ends `ended_by_user`, with the device as actor. A device ends only its
/// own sessions; another's, or an unknown or ended one, is ignored.
pub async fn ended_by_user(
    state: &AppState,
    device_id: &str,
    session_id: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let Some(row) = store::sessions::by_id_any_tenant(state.db().pool(), session_id).await? else {
        return Ok(());
    };
    if row.device_id != device_id {
        tracing::warn!(session = %row.id, "an end request from another device ignored");
        return Ok(());
    }
    // The person at the machine of an attended session, only: an automatic
    // session ends through its creator (`automatic::end_by_creator`, which
    // stops its routing and tells the members), and a managed one is the
    // operator's to end (its agent can only close its shell).
    if row.origin != Origin::Attended {
        tracing::warn!(session = %row.id, origin = row.origin.as_str(), "an end request for a session that is not attended ignored");
        return Ok(());
    }
    let reason = if reason.is_empty() {
        "the person at the device ended the session"
    } else {
        reason
    };
    end(
        state,
        session_id,
        EndCode::EndedByUser,
        reason,
        Actor::Device(device_id.to_owned()),
    )
    .await
    .map(|_| ())
}

/// A device connection ended: the sessions whose shells lived on it end
/// (`device_disconnected`); sessions still waiting for consent end too
/// (`consent_abandoned`) unless the device already reconnected, whose new
/// connection asks again.
pub async fn connection_closed(state: &AppState, device_id: &str, conn_id: u64, reconnected: bool) {
    let sessions = Sessions::of(state);
    for id in state.hub().sessions_of_conn(device_id, conn_id) {
        let ended = sessions
            .end(
                &id,
                EndCode::DeviceDisconnected,
                "the device disconnected",
                Actor::System,
            )
            .await;
        if let Err(e) = ended {
            tracing::warn!(error = %e, "cannot end a departed device's session");
        }
    }
    if reconnected {
        return;
    }
    match store::sessions::pending_for_device(state.db(), device_id).await {
        Ok(rows) => {
            for row in rows {
                let abandoned = sessions.consent_event(&row, ConsentEvent::Abandoned).await;
                if let Err(e) = abandoned {
                    tracing::warn!(error = %e, "cannot end a departed device's pending session");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list a departed device's sessions"),
    }
}

/// For the session sweep (see [`Sessions::sweep`]).
pub async fn sweep(state: &AppState) -> Result<(), StoreError> {
    let cutoff = state.now().minus(state.config().heartbeat_interval * 3);
    Sessions::of(state)
        .sweep(cutoff, state.config().shell_grace)
        .await
}

/// At start-up, before any device connects here: a session recorded as
/// pending or active whose device no node holds has nothing relaying it
/// any more (this node's hub is empty; the device, once back, would find
/// no shell), so it ends with `server_restart`, audited, and `sessions
/// list` never shows a live session nobody can join. A session whose
/// device another node sharing the database holds is that node's, and
/// stays. (A node that crashed leaves its devices looking connected until
/// they are not seen for three heartbeats.)
pub async fn reconcile_at_start(state: &AppState) -> Result<usize, StoreError> {
    let sessions = Sessions::of(state);
    let cutoff = state.now().minus(state.config().heartbeat_interval * 3);
    let mut ended = 0;
    // What this very node relayed before it restarted died with it.
    let mine = store::sessions::active_relayed_by(state.db(), state.cluster().node_id()).await?;
    let offline = store::sessions::live_with_device_offline(state.db(), cutoff).await?;
    for id in mine.into_iter().chain(offline) {
        if sessions
            .end(
                &id,
                EndCode::ServerRestart,
                "the server restarted; nothing relays it any more",
                Actor::System,
            )
            .await?
        {
            ended += 1;
        }
    }
    Ok(ended)
}

/// A connecting device is asked about every session waiting on it.
pub async fn device_arrived(state: &AppState, device_id: &str) {
    match store::sessions::pending_for_device(state.db(), device_id).await {
        Ok(rows) => {
            for row in rows {
                request_consent(state, &row);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list sessions awaiting consent"),
    }
}

/// The device reported that a channel (the shell) ended.
pub async fn channel_closed(
    state: &AppState,
    device_id: &str,
    session_id: &str,
    exit_status: Option<i32>,
    why: &str,
) {
    let Some(live) = state.hub().get(session_id) else {
        return;
    };
    if live.device_id != device_id {
        return;
    }
    live.channel_closed(exit_status, why);
    let (code, reason) = match (live.channel, exit_status) {
        (SessionChannel::Screen, _) if why == EndCode::ScreenUnavailable.as_str() => (
            EndCode::ScreenUnavailable,
            "the device cannot share its screen (no display it can capture)".to_owned(),
        ),
        (SessionChannel::Screen, _) if why.is_empty() => (
            EndCode::ScreenClosed,
            "the device closed its screen".to_owned(),
        ),
        (SessionChannel::Screen, _) => (
            EndCode::ScreenClosed,
            format!("the device closed its screen: {why}"),
        ),
        (SessionChannel::Shell, Some(code)) => (
            EndCode::ShellExited,
            format!("the shell exited with status {code}"),
        ),
        (SessionChannel::Shell, None) if why.is_empty() => {
            (EndCode::ShellExited, "the shell ended".to_owned())
        }
        (SessionChannel::Shell, None) => (EndCode::ShellExited, format!("the shell ended: {why}")),
    };
    if let Err(e) = end(
        state,
        session_id,
        code,
        &reason,
        Actor::Device(device_id.to_owned()),
    )
    .await
    {
        tracing::warn!(error = %e, "cannot end a session whose shell exited");
    }
}

/// Default time a person has to answer a consent prompt.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(60);
