//! What one control connection serves: shells for session channels, the
//! person's consent answers (which gate those shells), and this device's
//! part in automatic sessions it is invited to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tessera_core::identity::{DeviceId, DeviceKeys};
use tessera_core::kinds::RejectionReason;
use tessera_proto::v1::{ChannelClose, ChannelKind, ConsentResponse};
use tessera_proto::Body;
use tokio::sync::mpsc;

use super::{Exit, RunOptions};
use crate::auto::TransferReport;
use crate::channels::{default_shell, Shell};
use crate::consent;
use crate::screen::ScreenChannel;
use crate::state::AgentState;
use crate::support::{Attended, Notice};
use tessera_core::kinds::SessionAccess;

/// What a connection is to serve, and as whom.
pub(super) struct Serving<'a> {
    pub(super) opts: &'a RunOptions,
    /// One-session mode: the session this agent exists for.
    pub(super) only: Option<&'a str>,
    /// The agent's state (trust store, inbox); none for the one-time agent,
    /// which takes part in no automatic session.
    pub(super) state: Option<&'a AgentState>,
    /// This device's id and identity keys.
    pub(super) identity: Option<(DeviceId, &'a DeviceKeys)>,
    /// Where files received in automatic sessions are reported.
    pub(super) report: Option<TransferReport>,
    /// The person attending a one-time session.
    pub(super) attended: Option<&'a Attended>,
}

/// What one connection serves: its shells and pending consent questions.
pub(super) struct Sessions<'a> {
    pub(super) opts: &'a RunOptions,
    /// One-session mode: the session this agent exists for.
    pub(super) only: Option<&'a str>,
    pub(super) shells: HashMap<(String, u32), Shell>,
    /// Screen channels, by session and channel.
    pub(super) screens: HashMap<(String, u32), ScreenChannel>,
    /// People in each session now (from `ViewerJoined`/`ViewerLeft`), so a
    /// screen channel opening after they joined knows someone watches.
    pub(super) viewers: HashMap<String, u32>,
    pub(super) outbound: mpsc::Sender<Body>,
    /// The person's answers, by session: a shell opens for a session that
    /// asked only once it was granted, never for one that was refused.
    pub(super) answers: Arc<std::sync::Mutex<HashMap<String, bool>>>,
    /// The agent's state (trust store, inbox); none for the one-time agent,
    /// which takes part in no automatic session.
    pub(super) state: Option<&'a AgentState>,
    /// This device's id and identity keys.
    pub(super) identity: Option<(DeviceId, &'a DeviceKeys)>,
    /// Automatic sessions this device is a member of.
    pub(super) members: HashMap<String, crate::auto::Member>,
    /// Where files received in automatic sessions are reported.
    pub(super) report: Option<TransferReport>,
    /// The person attending a one-time session.
    pub(super) attended: Option<&'a Attended>,
}

impl<'a> Sessions<'a> {
    pub(super) fn new(serving: Serving<'a>, outbound: mpsc::Sender<Body>) -> Sessions<'a> {
        let Serving {
            opts,
            only,
            state,
            identity,
            report,
            attended,
        } = serving;
        Sessions {
            opts,
            only,
            shells: HashMap::new(),
            screens: HashMap::new(),
            viewers: HashMap::new(),
            outbound,
            answers: Arc::default(),
            state,
            identity,
            members: HashMap::new(),
            report,
            attended,
        }
    }

    /// The session's viewer count changed: its screen channels pause at 0.
    fn viewers_now(&mut self, session: &str, viewers: u32) {
        self.viewers.insert(session.to_owned(), viewers);
        for ((sid, _), screen) in &self.screens {
            if sid == session {
                screen.viewers(viewers);
            }
        }
    }

    /// Tells the attending person (if any) what happened.
    fn notify(&self, notice: Notice) {
        if let Some(a) = self.attended {
            // Full: nobody is reading; the person misses a line, the
            // session goes on.
            let _ = a.notices.try_send(notice);
        }
    }

    /// What to say before the connection closes because the person (or a
    /// signal) stopped the agent: its one session ends `ended_by_user`,
    /// and each open shell closes with that reason, so the technician
    /// reads why.
    pub(super) fn farewell(&self) -> Vec<Body> {
        let Some(only) = self.only else {
            return Vec::new();
        };
        let why = "the person at the device ended the session";
        // The session ends `ended_by_user` first; the channels' closes
        // then find it over.
        std::iter::once(Body::SessionEndRequest(
            tessera_proto::v1::SessionEndRequest {
                session_id: only.to_owned(),
                reason: why.into(),
            },
        ))
        .chain(
            self.shells
                .keys()
                .chain(self.screens.keys())
                .map(|(session_id, channel_id)| {
                    Body::ChannelClose(ChannelClose {
                        session_id: session_id.clone(),
                        channel_id: *channel_id,
                        exit_status: None,
                        reason: why.into(),
                    })
                }),
        )
        .collect()
    }

    /// Whether a shell may open for `session`: the one-time agent opens one
    /// only for its own session and only after a yes; a managed agent never
    /// for a session the person refused.
    fn may_open(&self, session: &str) -> bool {
        let answer = self
            .answers
            .lock()
            .ok()
            .and_then(|a| a.get(session).copied());
        match self.only {
            Some(only) => only == session && answer == Some(true),
            None => answer != Some(false),
        }
    }

    /// An invitation to an automatic session: this device's own checks.
    fn join(&mut self, inv: &tessera_proto::v1::AutoJoinInvite) -> Result<(), RejectionReason> {
        let (Some(state), Some((me, keys))) = (self.state, self.identity.as_ref()) else {
            return Err(RejectionReason::NotMutuallyTrusted);
        };
        let store = crate::trust::TrustStore::load(state)
            .map_err(|_| RejectionReason::NotMutuallyTrusted)?;
        let inbox = self
            .opts
            .inbox
            .clone()
            .unwrap_or_else(|| crate::auto::inbox_of(state));
        let me = me.to_string();
        let now = tessera_core::Clock::now(&tessera_core::SystemClock);
        let secret = zeroize::Zeroizing::new(keys.x25519_secret().to_bytes());
        let member = crate::auto::Member::accept(
            &store,
            &me,
            &secret,
            inv,
            inbox,
            now,
            self.report.clone(),
        )
        .inspect_err(|reason| tracing::warn!(session = %inv.session_id, %reason, "refused an automatic session"))?
        .with_shell(crate::auto::ShellService {
            program: self.opts.shell.clone(),
            outbound: self.outbound.clone(),
        });
        tracing::info!(session = %inv.session_id, creator = %inv.creator_name, "joined an automatic session");
        self.members.insert(inv.session_id.clone(), member);
        Ok(())
    }

    /// Sends what a member produced, or leaves the session if it aborted.
    fn member_result(
        &mut self,
        session: &str,
        result: Option<Result<Vec<Body>, crate::auto::Abort>>,
    ) {
        match result {
            Some(Ok(out)) => {
                for b in out {
                    let _ = self.outbound.try_send(b);
                }
            }
            Some(Err(crate::auto::Abort(reason))) => {
                tracing::warn!(session, %reason, "left an automatic session");
                if let Some(mut m) = self.members.remove(session) {
                    m.close();
                }
                if let Some((me, _)) = &self.identity {
                    let _ = self.outbound.try_send(crate::auto::leave(
                        session,
                        &me.to_string(),
                        &reason,
                    ));
                }
            }
            None => {}
        }
    }

    /// Handles one relay message from the server; `Some(exit)` ends the run.
    pub(super) fn handle(&mut self, body: Body) -> Option<Exit> {
        match body {
            Body::ConsentRequest(req) => {
                // The one-time agent answers only for its own session.
                if self.only.is_some_and(|only| only != req.session_id) {
                    let _ = self
                        .outbound
                        .try_send(Body::ConsentResponse(ConsentResponse {
                            session_id: req.session_id,
                            granted: false,
                            unavailable: false,
                        }));
                    return None;
                }
                let mode = self.opts.consent.clone();
                let outbound = self.outbound.clone();
                let answers = self.answers.clone();
                let notices = self.attended.map(|a| a.notices.clone());
                tokio::spawn(async move {
                    let timeout = Duration::from_millis(u64::from(req.timeout_ms));
                    let unavailable = !consent::can_ask(&mode);
                    let granted = consent::ask(
                        &mode,
                        &req.technician,
                        &req.access,
                        &req.session_id,
                        timeout,
                    )
                    .await;
                    if let Ok(mut a) = answers.lock() {
                        a.insert(req.session_id.clone(), granted);
                    }
                    if let Some(notices) = notices {
                        let _ = notices.try_send(Notice::Answered {
                            technician: req.technician.clone(),
                            access: req.access.parse().unwrap_or(SessionAccess::View),
                            granted,
                        });
                    }
                    let _ = outbound
                        .send(Body::ConsentResponse(ConsentResponse {
                            session_id: req.session_id,
                            granted,
                            unavailable: !granted && unavailable,
                        }))
                        .await;
                });
            }
            Body::ChannelOpen(open) if !self.may_open(&open.session_id) => {
                tracing::warn!(session = %open.session_id, "refused to open a channel without consent");
                let _ = self.outbound.try_send(Body::ChannelClose(ChannelClose {
                    session_id: open.session_id,
                    channel_id: open.channel_id,
                    exit_status: None,
                    reason: "the person at this device did not consent to this session".into(),
                }));
            }
            Body::ChannelOpen(open) if open.kind == ChannelKind::Screen as i32 => {
                // A channel opens for someone: count one until told otherwise.
                let viewers = self.viewers.get(&open.session_id).copied().unwrap_or(1);
                tracing::info!(session = %open.session_id, channel = open.channel_id, "screen channel opens");
                self.notify(Notice::ScreenStarted);
                let screen = ScreenChannel::open(
                    self.opts.display.clone(),
                    open.session_id.clone(),
                    open.channel_id,
                    viewers,
                    self.outbound.clone(),
                );
                self.screens
                    .insert((open.session_id, open.channel_id), screen);
            }
            Body::Screen(s) => {
                if let (Some(screen), Some(body)) =
                    (self.screens.get(&(s.session_id, s.channel_id)), s.body)
                {
                    screen.handle(body);
                }
            }
            Body::ChannelOpen(open) => {
                let shell = self.opts.shell.clone().unwrap_or_else(default_shell);
                let mirrored = self.attended.is_some_and(|a| a.mirror);
                let started = if mirrored {
                    Shell::spawn_mirrored(
                        &shell,
                        &open.session_id,
                        open.channel_id,
                        self.outbound.clone(),
                    )
                } else {
                    Shell::spawn(
                        &shell,
                        &open.session_id,
                        open.channel_id,
                        open.cols,
                        open.rows,
                        self.outbound.clone(),
                    )
                };
                match started {
                    Ok(s) => {
                        tracing::info!(session = %open.session_id, mirrored, "shell started");
                        self.notify(Notice::ShellStarted { mirrored });
                        self.shells.insert((open.session_id, open.channel_id), s);
                    }
                    Err(e) => {
                        let _ = self.outbound.try_send(Body::ChannelClose(ChannelClose {
                            session_id: open.session_id,
                            channel_id: open.channel_id,
                            exit_status: None,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            // The person's own shell takes keys and size from their
            // terminal only, whatever the session sends.
            Body::ChannelData(d) => {
                if let Some(shell) = self.shells.get(&(d.session_id, d.channel_id)) {
                    if !shell.is_mirrored() {
                        shell.write(&d.data);
                    }
                }
            }
            Body::ChannelResize(r) => {
                if let Some(shell) = self.shells.get(&(r.session_id, r.channel_id)) {
                    if !shell.is_mirrored() {
                        shell.resize(r.cols, r.rows);
                    }
                }
            }
            Body::ViewerJoined(v) => {
                tracing::info!(session = %v.session_id, name = %v.name, access = %v.access, "a viewer joined");
                self.viewers_now(&v.session_id, v.viewers);
                if let Ok(access) = v.access.parse() {
                    self.notify(Notice::Joined {
                        name: v.name,
                        access,
                        viewers: v.viewers,
                    });
                }
            }
            Body::ViewerLeft(v) => {
                tracing::info!(session = %v.session_id, name = %v.name, reason = %v.reason, "a viewer left");
                self.viewers_now(&v.session_id, v.viewers);
                if let Ok(access) = v.access.parse() {
                    self.notify(Notice::Left {
                        name: v.name,
                        access,
                        reason: v.reason,
                        viewers: v.viewers,
                    });
                }
            }
            Body::ChannelClose(c) => {
                let key = (c.session_id, c.channel_id);
                self.shells.remove(&key);
                // Dropping a screen channel releases every held key and button.
                self.screens.remove(&key);
            }
            Body::AutoJoinInvite(inv) => {
                let verdict = self.join(&inv);
                let _ = self
                    .outbound
                    .try_send(crate::auto::answer(&inv.session_id, verdict));
            }
            Body::E2eHandshake(h) => {
                let result = self
                    .members
                    .get_mut(&h.session_id)
                    .map(|m| m.on_handshake(&h));
                self.member_result(&h.session_id, result);
            }
            Body::E2eData(d) => {
                let result = self.members.get_mut(&d.session_id).map(|m| m.on_data(&d));
                self.member_result(&d.session_id, result);
            }
            Body::MemberLeft(m)
                if self
                    .identity
                    .as_ref()
                    .is_some_and(|(me, _)| me.to_string() == m.device_id) =>
            {
                if let Some(mut member) = self.members.remove(&m.session_id) {
                    member.close();
                    tracing::info!(session = %m.session_id, reason = %m.reason, "removed from an automatic session");
                }
            }
            Body::SessionEnded(e) => {
                if let Some(mut member) = self.members.remove(&e.session_id) {
                    member.close();
                    tracing::info!(session = %e.session_id, code = %e.code, reason = %e.reason, "automatic session ended");
                }
                self.shells.retain(|(sid, _), _| *sid != e.session_id);
                self.screens.retain(|(sid, _), _| *sid != e.session_id);
                self.viewers.remove(&e.session_id);
                if self.only == Some(e.session_id.as_str()) {
                    return Some(Exit::SessionEnded {
                        code: e.code,
                        reason: e.reason,
                    });
                }
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod consent_gate {
    use super::*;

    fn sessions<'a>(opts: &'a RunOptions, only: Option<&'a str>) -> Sessions<'a> {
        let (outbound, _rx) = mpsc::channel(8);
        let serving = Serving {
            opts,
            only,
            state: None,
            identity: None,
            report: None,
            attended: None,
        };
        Sessions::new(serving, outbound)
    }

    #[test]
    fn the_one_time_agent_opens_only_its_own_consented_session() {
        let opts = RunOptions::default();
        let s = sessions(&opts, Some("mine"));
        assert!(!s.may_open("mine"), "not before a yes");
        s.answers.lock().unwrap().insert("mine".into(), true);
        assert!(s.may_open("mine"));
        s.answers.lock().unwrap().insert("other".into(), true);
        assert!(!s.may_open("other"), "never another session");
    }

    #[test]
    fn a_managed_agent_never_opens_a_refused_session() {
        let opts = RunOptions::default();
        let s = sessions(&opts, None);
        assert!(s.may_open("not-asked"), "no consent needed by policy");
        s.answers.lock().unwrap().insert("refused".into(), false);
        assert!(!s.may_open("refused"));
    }
}
