//! The member side: an invited device's agent checks the invitation
//! against its own pin and grant, answers the creator's Noise handshake,
//! and then acts only on payloads the creator sealed, writing received
//! files into its inbox, or running a shell for it (`shell`).
//!
//! Threat: a creator (or a device that took over its keys) granted only
//! `shell` pushing files anyway. The member keeps the scopes it joined
//! under and leaves at the first payload whose kind needs a scope it does
//! not hold, before acting on it.

use std::path::PathBuf;

use bytes::Bytes;
use prost::Message as _;
use tessera_core::e2e::{self, E2eError, OriginKey, ReplayGuard, SessionKey};
use tessera_core::kinds::RejectionReason;
use tessera_core::trust::{key_from_hex, Scope};
use tessera_proto::v1::{
    e2e_payload, AutoJoinInvite, E2eData, E2eHandshake, E2ePayload, FilePlacement, SessionKeyGrant,
    TransferAck,
};
use tessera_proto::Body;

use super::shell::{PtyShell, Sealer, SharedSealer, ShellService};
use super::transfer::{TransferEvent, TransferReport};
use super::{place, tag_for, transport_read, Noise};
use crate::files::{self, Placement, Receiver};
use crate::trust::TrustStore;

/// An invited device's part in one automatic session.
pub struct Member {
    pub session_id: String,
    creator: String,
    me: String,
    noise: Noise,
    key: Option<SessionKey>,
    /// Shared with the creator only: proves who sealed a payload.
    origin: Option<OriginKey>,
    /// This member's sender index (from the creator, inside Noise).
    index: u32,
    guard: ReplayGuard,
    /// Seals what goes to the creator (shared with a running shell).
    sealer: SharedSealer,
    /// Where a shell would come from; `None`: this agent runs none.
    shell_service: Option<ShellService>,
    /// The shell the creator opened, if any (dropping it kills it).
    shell: Option<PtyShell>,
    /// The scopes this member joined under: asked for by the invitation
    /// and allowed by its own grant (never empty).
    scopes: Vec<Scope>,
    receiver: Receiver,
    /// The first thing that went wrong in this transfer, reported in the
    /// acknowledgement.
    failed: Option<String>,
    /// Where received files are reported as they move.
    report: Option<TransferReport>,
    /// The file being received, by the name it was sent under (stopping
    /// abandons it).
    receiving: Option<String>,
}

/// Why a member left a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort(pub String);

/// The scope a payload kind needs, `None` for a kind any session carries.
///
/// Everything of a file transfer needs `files`: the parts that write
/// (start, chunk, end), and those that only make sense around a transfer
/// (done, cancel), so a shell session carries no transfer at all. Every
/// part of a shell that reaches a member (open, keystrokes, resize) needs
/// `shell`, so a session joined under `files` runs no program. A text
/// line is only shown and logged, never run: every session may carry one
/// (`tessera session create` sends the person's lines in either scope).
/// An acknowledgement is the members' word to the creator; a member never
/// acts on one it receives.
fn scope_needed(body: &e2e_payload::Body) -> Option<Scope> {
    use e2e_payload::Body as P;
    match body {
        P::FileStart(_) | P::FileChunk(_) | P::FileEnd(_) | P::TransferDone(_) | P::Cancel(_) => {
            Some(Scope::Files)
        }
        P::PtyOpen(_) | P::PtyData(_) | P::PtyResize(_) => Some(Scope::Shell),
        P::Text(_) | P::TransferAck(_) | P::PtyExit(_) => None,
    }
}

/// The wire name of a payload kind, for the reason a member gives.
fn kind_of(body: &e2e_payload::Body) -> &'static str {
    use e2e_payload::Body as P;
    match body {
        P::FileStart(_) => "file_start",
        P::FileChunk(_) => "file_chunk",
        P::FileEnd(_) => "file_end",
        P::TransferDone(_) => "transfer_done",
        P::TransferAck(_) => "transfer_ack",
        P::Cancel(_) => "cancel",
        P::Text(_) => "text",
        P::PtyOpen(_) => "pty_open",
        P::PtyData(_) => "pty_data",
        P::PtyResize(_) => "pty_resize",
        P::PtyExit(_) => "pty_exit",
    }
}

/// Whether a member holding `held` may act on `body`: if not, it leaves
/// with `scope_missing` (the word an invitation is refused with) and says
/// which kind needed which scope.
fn admit(held: &[Scope], body: &e2e_payload::Body) -> Result<(), Abort> {
    match scope_needed(body) {
        Some(needed) if !held.contains(&needed) => Err(Abort(format!(
            "{}: a {} payload needs the {needed} scope, this session holds {}",
            RejectionReason::ScopeMissing,
            kind_of(body),
            held.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ))),
        _ => Ok(()),
    }
}

/// Files an acknowledgement lists by name (the counts cover the rest).
const MAX_LISTED: usize = 100;

/// Fills in where this transfer's files went that were not saved under
/// their own name: each of them counted, the first [`MAX_LISTED`] named.
fn placements(receiver: &Receiver, ack: &mut TransferAck) {
    for p in &receiver.moved {
        let already_there = p.how == Placement::AlreadyThere;
        if already_there {
            ack.already_there += 1;
        } else {
            ack.renamed += 1;
        }
        if ack.placed.len() < MAX_LISTED {
            ack.placed.push(FilePlacement {
                path: p.name.clone(),
                saved_as: receiver.relative(&p.path),
                already_there,
            });
        }
    }
}

impl Member {
    /// Checks the invitation against this device's own pin and grant, and
    /// prepares the Noise responder with the pinned key. `Err(reason)`
    /// refuses.
    pub fn accept(
        store: &TrustStore,
        me: &str,
        my_x25519_secret: &[u8; 32],
        invite: &AutoJoinInvite,
        inbox: PathBuf,
        now: tessera_core::Timestamp,
        report: Option<TransferReport>,
    ) -> Result<Member, RejectionReason> {
        let (session_id, creator) = (invite.session_id.as_str(), invite.creator.as_str());
        let scope = Scope::parse(&invite.scope).ok_or(RejectionReason::ScopeMissing)?;
        let scopes = store.check_invite(creator, &invite.creator_ed25519, scope, now)?;
        let pin = store
            .peers
            .get(creator)
            .ok_or(RejectionReason::NotMutuallyTrusted)?;
        let creator_x = key_from_hex(&pin.x25519).ok_or(RejectionReason::KeyMismatch)?;
        let hs = e2e::kk_responder(
            my_x25519_secret,
            &creator_x,
            &e2e::prologue(session_id, creator, me),
        )
        .map_err(|_| RejectionReason::HandshakeFailed)?;
        Ok(Member {
            session_id: session_id.to_owned(),
            creator: creator.to_owned(),
            me: me.to_owned(),
            noise: Noise::Handshake(Box::new(hs)),
            key: None,
            origin: None,
            index: 0,
            guard: ReplayGuard::default(),
            sealer: std::sync::Arc::new(std::sync::Mutex::new(Sealer {
                session_id: session_id.to_owned(),
                creator: creator.to_owned(),
                key: None,
                origin: None,
                index: 0,
                counter: 0,
            })),
            shell_service: None,
            shell: None,
            scopes,
            receiver: Receiver::new(inbox),
            failed: None,
            report,
            receiving: None,
        })
    }

    /// Lets the creator open a shell here (in a session joined under
    /// `shell`).
    pub fn with_shell(mut self, service: ShellService) -> Member {
        self.shell_service = Some(service);
        self
    }

    /// A Noise message from the creator: the handshake's first message (the
    /// reply is returned), then the session key inside the channel.
    pub fn on_handshake(&mut self, h: &E2eHandshake) -> Result<Vec<Body>, Abort> {
        if h.from != self.creator {
            return Ok(vec![]);
        }
        let fail = |e: E2eError| Abort(format!("handshake_failed: {e}"));
        match std::mem::replace(&mut self.noise, Noise::Failed) {
            Noise::Handshake(mut hs) => {
                e2e::read(&mut hs, &h.payload).map_err(fail)?;
                let reply = e2e::write(&mut hs, &[]).map_err(fail)?;
                let t = hs
                    .into_transport_mode()
                    .map_err(|e| fail(E2eError::Noise(e.to_string())))?;
                self.noise = Noise::Transport(Box::new(t));
                Ok(vec![Body::E2eHandshake(E2eHandshake {
                    session_id: self.session_id.clone(),
                    from: self.me.clone(),
                    to: self.creator.clone(),
                    payload: Bytes::from(reply),
                })])
            }
            Noise::Transport(mut t) => {
                let plain = transport_read(&mut t, &h.payload).map_err(fail)?;
                self.noise = Noise::Transport(t);
                let grant = SessionKeyGrant::decode(plain.as_slice())
                    .map_err(|_| Abort("handshake_failed: bad key message".into()))?;
                let key = SessionKey::from_bytes(&grant.key, grant.epoch)
                    .ok_or_else(|| Abort("handshake_failed: bad key".into()))?;
                let origin = OriginKey::from_bytes(&grant.origin_key)
                    .ok_or_else(|| Abort("handshake_failed: bad origin key".into()))?;
                // The creator names this member's place in the nonce space;
                // 0 is its own, and it never changes within a session.
                if grant.member_index == 0 || (self.index != 0 && grant.member_index != self.index)
                {
                    return Err(Abort("handshake_failed: bad member index".into()));
                }
                self.index = grant.member_index;
                if let Ok(mut s) = self.sealer.lock() {
                    s.index = grant.member_index;
                    s.key = Some(key.clone());
                    s.origin = Some(origin.clone());
                }
                self.key = Some(key);
                self.origin = Some(origin);
                self.guard.reset();
                Ok(vec![])
            }
            Noise::Failed => Err(Abort("handshake_failed".into())),
        }
    }

    /// `body` sealed for the creator. In a files session only the member
    /// seals (acknowledgements); in a shell session only its shell's output
    /// thread does, so the two never interleave their counters.
    fn seal_to_creator(&mut self, body: e2e_payload::Body) -> Option<Body> {
        self.sealer.lock().ok()?.seal(body)
    }

    /// A sealed payload: checked, opened and acted on. Only the creator's
    /// payloads count; any failed check aborts the session for this member.
    pub fn on_data(&mut self, d: &E2eData) -> Result<Vec<Body>, Abort> {
        let (Some(key), Some(origin)) = (self.key.as_ref(), self.origin.as_ref()) else {
            return Err(Abort("no_session_key".into()));
        };
        if d.sender != 0 {
            return Err(Abort("tampered: a payload not from the creator".into()));
        }
        let plain = e2e::open_from(
            key,
            origin,
            &mut self.guard,
            place(d),
            &d.ciphertext,
            tag_for(d, self.index),
        )
        .map_err(|e| match e {
            E2eError::Replay { .. } => Abort(format!("replay: {e}")),
            other => Abort(format!("tampered: {other}")),
        })?;
        let p = E2ePayload::decode(plain.as_slice())
            .map_err(|_| Abort("tampered: undecodable payload".into()))?;
        if let Some(body) = &p.body {
            admit(&self.scopes, body)?;
        }
        let mut out = Vec::new();
        let result: Result<(), files::TransferError> = (|| {
            match p.body {
                Some(e2e_payload::Body::FileStart(f)) => {
                    self.receiver.start(f.file_id, &f.path, f.size)?;
                    self.receiving = Some(f.path.clone());
                    self.tell(TransferEvent::Started {
                        name: f.path,
                        size: f.size,
                    });
                }
                Some(e2e_payload::Body::FileChunk(c)) => {
                    let n = self.receiver.chunk(c.file_id, c.offset, &c.data)?;
                    self.tell(TransferEvent::Progress { bytes: n });
                }
                Some(e2e_payload::Body::FileEnd(e)) => {
                    let placed = self.receiver.end(e.file_id, &e.blake3)?;
                    if let Some(name) = self.receiving.take() {
                        self.tell(TransferEvent::Finished { name });
                    }
                    let path = placed.path.display();
                    match placed.how {
                        Placement::Saved => tracing::info!(%path, "file received"),
                        Placement::Renamed => {
                            tracing::info!(%path, sent_as = %placed.name, "file received under a new name: a different file had its name")
                        }
                        Placement::AlreadyThere => {
                            tracing::info!(%path, "file received: identical to the one already there, not written again")
                        }
                    }
                }
                Some(e2e_payload::Body::TransferDone(_)) => {
                    let mut ack = TransferAck {
                        ok: self.failed.is_none(),
                        error: self.failed.take().unwrap_or_default(),
                        bytes: self.receiver.bytes,
                        files: self.receiver.files,
                        ..TransferAck::default()
                    };
                    placements(&self.receiver, &mut ack);
                    self.receiver.reset_counts();
                    out.extend(self.seal_to_creator(e2e_payload::Body::TransferAck(ack)));
                }
                Some(e2e_payload::Body::Cancel(c)) => {
                    tracing::warn!(reason = %c.reason, "transfer cancelled by the sender");
                    self.receiver.abort();
                    self.abandon();
                }
                Some(e2e_payload::Body::Text(t)) => {
                    tracing::info!(text = %t.text, "message in session")
                }
                Some(e2e_payload::Body::PtyOpen(open)) => out.extend(self.open_shell(&open)),
                // What is typed is never logged.
                Some(e2e_payload::Body::PtyData(d)) => {
                    if let Some(shell) = &self.shell {
                        shell.write(&d.data);
                    }
                }
                Some(e2e_payload::Body::PtyResize(r)) => {
                    if let Some(shell) = &self.shell {
                        shell.resize(&r);
                    }
                }
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.receiver.abort();
            self.abandon();
            let why = e.to_string();
            tracing::warn!(error = %why, "a received file was refused");
            let ack = TransferAck {
                ok: false,
                error: why.clone(),
                bytes: self.receiver.bytes,
                files: self.receiver.files,
                ..TransferAck::default()
            };
            self.failed.get_or_insert(why);
            out.extend(self.seal_to_creator(e2e_payload::Body::TransferAck(ack)));
        }
        Ok(out)
    }

    /// Starts the shell the creator asked for; what could not start is
    /// answered with a `PtyExit` saying why.
    fn open_shell(&mut self, open: &tessera_proto::v1::PtyOpen) -> Option<Body> {
        let refused = |reason: &str| {
            e2e_payload::Body::PtyExit(tessera_proto::v1::PtyExit {
                exit_status: None,
                reason: reason.to_owned(),
            })
        };
        if self.shell.is_some() {
            return self.seal_to_creator(refused("a shell is already open in this session"));
        }
        let Some(service) = &self.shell_service else {
            return self.seal_to_creator(refused("this agent runs no shell"));
        };
        match PtyShell::spawn(service, open, self.sealer.clone()) {
            Ok(shell) => {
                tracing::info!(session = %self.session_id, creator = %self.creator, "shell started for an automatic session");
                self.shell = Some(shell);
                None
            }
            Err(e) => {
                tracing::warn!(session = %self.session_id, error = %e, "cannot start a shell");
                self.seal_to_creator(refused(&format!("cannot start the shell: {e}")))
            }
        }
    }

    /// The session ended or this member left: unfinished files are removed
    /// and the shell, with everything it started, is killed.
    pub fn close(&mut self) {
        self.receiver.abort();
        self.abandon();
        self.shell = None;
    }

    fn tell(&self, event: TransferEvent) {
        if let Some(report) = &self.report {
            report(event);
        }
    }

    /// Reports the file in progress, if any, as given up.
    fn abandon(&mut self) {
        if self.receiving.take().is_some() {
            self.tell(TransferEvent::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::v1::{
        Cancel, FileChunk, FileEnd, FileStart, PtyData, PtyExit, PtyOpen, PtyResize, Text,
        TransferDone,
    };

    fn every_kind() -> Vec<e2e_payload::Body> {
        use e2e_payload::Body as P;
        vec![
            P::FileStart(FileStart::default()),
            P::FileChunk(FileChunk::default()),
            P::FileEnd(FileEnd::default()),
            P::TransferDone(TransferDone::default()),
            P::Cancel(Cancel::default()),
            P::TransferAck(TransferAck::default()),
            P::Text(Text::default()),
            P::PtyOpen(PtyOpen::default()),
            P::PtyData(PtyData::default()),
            P::PtyResize(PtyResize::default()),
            P::PtyExit(PtyExit::default()),
        ]
    }

    fn is_shell_part(body: &e2e_payload::Body) -> bool {
        use e2e_payload::Body as P;
        matches!(body, P::PtyOpen(_) | P::PtyData(_) | P::PtyResize(_))
    }

    #[test]
    fn a_shell_member_refuses_every_part_of_a_file_transfer() {
        for body in every_kind() {
            let got = admit(&[Scope::Shell], &body);
            match body {
                e2e_payload::Body::Text(_)
                | e2e_payload::Body::TransferAck(_)
                | e2e_payload::Body::PtyExit(_) => {
                    assert_eq!(got, Ok(()), "{}", kind_of(&body))
                }
                _ if is_shell_part(&body) => assert_eq!(got, Ok(()), "{}", kind_of(&body)),
                _ => {
                    let Err(Abort(reason)) = got else {
                        panic!("{} admitted under shell", kind_of(&body));
                    };
                    assert!(reason.starts_with("scope_missing: "), "{reason}");
                    assert!(reason.contains(kind_of(&body)), "{reason}");
                    assert!(reason.contains("files scope"), "{reason}");
                }
            }
        }
    }

    #[test]
    fn a_files_member_takes_transfers_and_text_and_refuses_every_part_of_a_shell() {
        for body in every_kind() {
            let got = admit(&[Scope::Files], &body);
            if is_shell_part(&body) {
                let Err(Abort(reason)) = got else {
                    panic!("{} admitted under files", kind_of(&body));
                };
                assert!(reason.starts_with("scope_missing: "), "{reason}");
                assert!(reason.contains(kind_of(&body)), "{reason}");
                assert!(reason.contains("shell scope"), "{reason}");
            } else {
                assert_eq!(got, Ok(()), "{}", kind_of(&body));
            }
        }
    }

    #[test]
    fn an_acknowledgement_names_the_first_hundred_moved_files_and_counts_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiver::new(dir.path().to_owned());
        let mut id = 0;
        let mut receive = |r: &mut Receiver, name: &str, data: &[u8]| {
            id += 1;
            r.start(id, name, data.len() as u64).unwrap();
            r.chunk(id, 0, data).unwrap();
            r.end(id, blake3::hash(data).as_bytes()).unwrap();
        };
        receive(&mut r, "dir/a.txt", b"a");
        receive(&mut r, "dir/a.txt", b"a");
        receive(&mut r, "dir/a.txt", b"b");
        for i in 0..MAX_LISTED {
            receive(&mut r, &format!("n{i}"), b"x");
            receive(&mut r, &format!("n{i}"), b"y");
        }
        let mut ack = TransferAck::default();
        placements(&r, &mut ack);
        assert_eq!(ack.already_there, 1);
        assert_eq!(ack.renamed, 1 + MAX_LISTED as u32);
        assert_eq!(ack.placed.len(), MAX_LISTED);
        assert_eq!(
            ack.placed[0],
            FilePlacement {
                path: "dir/a.txt".into(),
                saved_as: "dir/a.txt".into(),
                already_there: true,
            }
        );
        assert_eq!(ack.placed[1].saved_as, "dir/a (1).txt");
        assert!(!ack.placed[1].already_there);
    }

    #[test]
    fn a_member_holding_nothing_takes_no_transfer() {
        let chunk = e2e_payload::Body::FileChunk(FileChunk::default());
        assert!(admit(&[], &chunk).is_err());
    }
}
