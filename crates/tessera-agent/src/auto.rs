//! Automatic sessions, end to end: the member side (an invited device's
//! agent) and the creator side (`tessera send`, `tessera session create`).
//!
//! Every member runs a Noise KK handshake with the creator between the
//! X25519 keys each pinned for the other; the creator then hands each member
//! the session key, its sender index and an origin key (shared by the two
//! of them only) inside its Noise channel. Payloads are sealed with the
//! session key and carry origin tags (see `tessera_core::e2e`), so a member
//! acts only on what the creator sent and the creator knows which member
//! answered. A member that sees a payload fail a check leaves the session
//! at once: what arrived is not trusted.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tessera_core::e2e::{self, E2eError, OriginKey, Place, ReplayGuard, SessionKey};
use tessera_core::identity::DeviceId;
use tessera_core::trust::{key_from_hex, Scope};
use tessera_proto::v1::{
    e2e_payload, AutoJoinAnswer, AutoJoinInvite, AutoSessionCreate, E2eData, E2eHandshake,
    E2ePayload, FileChunk, FileEnd, FileStart, MemberLeft, MemberOutcome, OriginTag, SessionEnded,
    SessionKeyGrant, TransferAck, TransferDone,
};
use tessera_proto::Body;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::control::ClientConnection;
use crate::credentials::Credentials;
use crate::error::AgentError;
use crate::files::{self, Outgoing, Receiver};
use crate::trust::TrustStore;

fn payload(body: e2e_payload::Body) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(E2ePayload { body: Some(body) }.encode_to_vec())
}

enum Noise {
    Handshake(Box<snow::HandshakeState>),
    Transport(Box<snow::TransportState>),
    Failed,
}

fn transport_read(
    t: &mut snow::TransportState,
    msg: &[u8],
) -> Result<Zeroizing<Vec<u8>>, E2eError> {
    let mut out = Zeroizing::new(vec![0u8; e2e::NOISE_MAX]);
    let n = t
        .read_message(msg, &mut out)
        .map_err(|e| E2eError::Noise(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

fn transport_write(t: &mut snow::TransportState, msg: &[u8]) -> Result<Vec<u8>, E2eError> {
    let mut out = vec![0u8; e2e::NOISE_MAX];
    let n = t
        .write_message(msg, &mut out)
        .map_err(|e| E2eError::Noise(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

fn place<'a>(d: &'a E2eData) -> Place<'a> {
    Place {
        session_id: &d.session_id,
        epoch: d.epoch,
        sender: d.sender,
        counter: d.counter,
    }
}

/// The tag `d` carries for `member`.
fn tag_for(d: &E2eData, member: u32) -> &[u8] {
    d.tags
        .iter()
        .find(|t| t.member == member)
        .map(|t| t.tag.as_ref())
        .unwrap_or_default()
}

// ---- member side ---------------------------------------------------------

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
    counter: u64,
    receiver: Receiver,
    /// The first thing that went wrong in this transfer, reported in the
    /// acknowledgement.
    failed: Option<String>,
    progress: Option<indicatif::ProgressBar>,
}

/// Why a member left a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort(pub String);

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
    ) -> Result<Member, &'static str> {
        let (session_id, creator) = (invite.session_id.as_str(), invite.creator.as_str());
        let scope = Scope::parse(&invite.scope).ok_or("scope_missing")?;
        store.check_invite(creator, &invite.creator_ed25519, scope, now)?;
        let pin = store.peers.get(creator).ok_or("not_mutually_trusted")?;
        let creator_x = key_from_hex(&pin.x25519).ok_or("key_mismatch")?;
        let hs = e2e::kk_responder(
            my_x25519_secret,
            &creator_x,
            &e2e::prologue(session_id, creator, me),
        )
        .map_err(|_| "handshake_failed")?;
        Ok(Member {
            session_id: session_id.to_owned(),
            creator: creator.to_owned(),
            me: me.to_owned(),
            noise: Noise::Handshake(Box::new(hs)),
            key: None,
            origin: None,
            index: 0,
            guard: ReplayGuard::default(),
            counter: 0,
            receiver: Receiver::new(inbox),
            failed: None,
            progress: None,
        })
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
                self.key = Some(key);
                self.origin = Some(origin);
                self.guard.reset();
                Ok(vec![])
            }
            Noise::Failed => Err(Abort("handshake_failed".into())),
        }
    }

    fn seal_to_creator(&mut self, body: e2e_payload::Body) -> Option<Body> {
        let (key, origin) = (self.key.as_ref()?, self.origin.as_ref()?);
        self.counter += 1;
        let at = Place {
            session_id: &self.session_id,
            epoch: key.epoch,
            sender: self.index,
            counter: self.counter,
        };
        let ciphertext = e2e::seal(key, at.session_id, at.sender, at.counter, &payload(body));
        let tag = e2e::origin_tag(origin, at, &ciphertext);
        Some(Body::E2eData(E2eData {
            session_id: self.session_id.clone(),
            epoch: key.epoch,
            sender: self.index,
            counter: self.counter,
            ciphertext: Bytes::from(ciphertext),
            to: self.creator.clone(),
            tags: vec![OriginTag {
                member: self.index,
                tag: Bytes::copy_from_slice(&tag),
            }],
        }))
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
        let mut out = Vec::new();
        let result: Result<(), files::TransferError> = (|| {
            match p.body {
                Some(e2e_payload::Body::FileStart(f)) => {
                    self.receiver.start(f.file_id, &f.path, f.size)?;
                    let bar = indicatif::ProgressBar::new(f.size).with_message(f.path.clone());
                    bar.set_style(progress_style());
                    self.progress = Some(bar);
                }
                Some(e2e_payload::Body::FileChunk(c)) => {
                    let n = self.receiver.chunk(c.file_id, c.offset, &c.data)?;
                    if let Some(b) = &self.progress {
                        b.inc(n);
                    }
                }
                Some(e2e_payload::Body::FileEnd(e)) => {
                    let path = self.receiver.end(e.file_id, &e.blake3)?;
                    if let Some(b) = self.progress.take() {
                        b.finish_and_clear();
                    }
                    tracing::info!(path = %path.display(), "file received");
                }
                Some(e2e_payload::Body::TransferDone(_)) => {
                    let ack = TransferAck {
                        ok: self.failed.is_none(),
                        error: self.failed.take().unwrap_or_default(),
                        bytes: self.receiver.bytes,
                        files: self.receiver.files,
                    };
                    self.receiver.reset_counts();
                    out.extend(self.seal_to_creator(e2e_payload::Body::TransferAck(ack)));
                }
                Some(e2e_payload::Body::Cancel(c)) => {
                    tracing::warn!(reason = %c.reason, "transfer cancelled by the sender");
                    self.receiver.abort();
                }
                Some(e2e_payload::Body::Text(t)) => {
                    tracing::info!(text = %t.text, "message in session")
                }
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.receiver.abort();
            if let Some(b) = self.progress.take() {
                b.abandon();
            }
            let why = e.to_string();
            tracing::warn!(error = %why, "a received file was refused");
            let ack = TransferAck {
                ok: false,
                error: why.clone(),
                bytes: self.receiver.bytes,
                files: self.receiver.files,
            };
            self.failed.get_or_insert(why);
            out.extend(self.seal_to_creator(e2e_payload::Body::TransferAck(ack)));
        }
        Ok(out)
    }

    /// The session ended or this member left: unfinished files are removed.
    pub fn close(&mut self) {
        self.receiver.abort();
        if let Some(b) = self.progress.take() {
            b.abandon();
        }
    }
}

fn progress_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// The answer to send for an invitation.
pub fn answer(session_id: &str, accepted: Result<(), &str>) -> Body {
    Body::AutoJoinAnswer(AutoJoinAnswer {
        session_id: session_id.to_owned(),
        accept: accepted.is_ok(),
        reason: accepted.err().unwrap_or("").to_owned(),
        device_id: String::new(),
    })
}

/// A member leaving (after an abort).
pub fn leave(session_id: &str, me: &str, reason: &str) -> Body {
    Body::MemberLeft(MemberLeft {
        session_id: session_id.to_owned(),
        device_id: me.to_owned(),
        reason: reason.to_owned(),
    })
}

// ---- creator side --------------------------------------------------------

struct Link {
    noise: Noise,
    keyed: bool,
    /// The member's sender index: distinct per member, never 0.
    index: u32,
    origin: OriginKey,
}

/// What happened in a session, for whoever drives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A member acknowledged a transfer.
    Ack { member: String, ack: TransferAck },
    /// A member left (the others moved to a new key).
    Left { member: String, reason: String },
    /// The session is over.
    Ended { code: String, reason: String },
}

/// The creator's end of an automatic session.
pub struct AutoSession {
    pub session_id: String,
    pub outcomes: Vec<MemberOutcome>,
    me: String,
    x_secret: Zeroizing<[u8; 32]>,
    conn: ClientConnection,
    links: HashMap<String, Link>,
    key: SessionKey,
    counter: u64,
    guard: ReplayGuard,
    /// Members that refused locally, with their reasons.
    pub refusals: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AutoError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("end-to-end failure: {0}")]
    E2e(#[from] E2eError),
    #[error("the session could not start: {0}")]
    NotStarted(String),
    #[error("the connection to the server closed")]
    Closed,
    #[error("{0}")]
    Transfer(String),
}

/// How long the creator waits for invited members to join.
const JOIN_WAIT: Duration = Duration::from_secs(20);

/// The device ids asked for, in their canonical spelling.
fn canonical(members: &[String]) -> HashSet<String> {
    members
        .iter()
        .filter_map(|m| DeviceId::parse(m).ok())
        .map(|d| d.to_string())
        .collect()
}

impl AutoSession {
    /// Connects as a client of this device, asks the server for a session
    /// with `members`, and sets up end-to-end keys with each that joins.
    /// Only devices asked for, and pinned here, are ever keyed.
    pub async fn create(
        creds: &Credentials,
        store: &TrustStore,
        members: &[String],
        scope: Scope,
        all_or_nothing: bool,
    ) -> Result<AutoSession, AutoError> {
        let asked = canonical(members);
        let mut conn = ClientConnection::open(creds).await?;
        conn.send(Body::AutoSessionCreate(AutoSessionCreate {
            members: members.to_vec(),
            scope: scope.as_str().to_owned(),
            all_or_nothing,
        }))
        .await?;
        let created = loop {
            match conn.recv().await {
                Some(Body::AutoSessionCreated(c)) => break c,
                Some(Body::Error(e)) => {
                    return Err(AutoError::NotStarted(format!("{}: {}", e.code, e.message)))
                }
                Some(_) => continue,
                None => return Err(AutoError::Closed),
            }
        };
        let me = creds.device_id.to_string();
        let mut s = AutoSession {
            session_id: created.session_id.clone(),
            outcomes: created.outcomes.clone(),
            me,
            x_secret: Zeroizing::new(creds.keys.x25519_secret().to_bytes()),
            conn,
            links: HashMap::new(),
            key: SessionKey::generate(0),
            counter: 0,
            guard: ReplayGuard::default(),
            refusals: Vec::new(),
        };
        if !created.started {
            return Ok(s);
        }
        let mut waiting: Vec<String> = Vec::new();
        let mut indexes: HashMap<String, u32> = HashMap::new();
        for o in created.outcomes.iter().filter(|o| o.outcome == "joined") {
            // A device nobody asked for is never keyed, and two members
            // sharing an index would share nonces under one key.
            if !asked.contains(&o.device_id)
                || o.member_index == 0
                || indexes.values().any(|i| *i == o.member_index)
            {
                return Err(AutoError::NotStarted(
                    "the server's answer names devices or indexes that do not fit the request"
                        .into(),
                ));
            }
            indexes.insert(o.device_id.clone(), o.member_index);
            waiting.push(o.device_id.clone());
        }
        let deadline = tokio::time::Instant::now() + JOIN_WAIT;
        while !waiting.is_empty() {
            let body = match tokio::time::timeout_at(deadline, s.conn.recv()).await {
                Ok(Some(b)) => b,
                Ok(None) => return Err(AutoError::Closed),
                Err(_) => break,
            };
            match body {
                Body::AutoJoinAnswer(a)
                    if a.session_id == s.session_id && waiting.contains(&a.device_id) =>
                {
                    if a.accept {
                        // The member's key comes from this device's own pin.
                        let pinned = store
                            .peers
                            .get(&a.device_id)
                            .and_then(|p| key_from_hex(&p.x25519));
                        match (pinned, indexes.get(&a.device_id)) {
                            (Some(x), Some(i)) => s.start_handshake(&a.device_id, &x, *i).await?,
                            _ => {
                                s.refusals
                                    .push((a.device_id.clone(), "not pinned here".into()));
                                waiting.retain(|w| *w != a.device_id);
                                s.conn
                                    .send(leave(
                                        &s.session_id,
                                        &a.device_id,
                                        "not pinned by the creator",
                                    ))
                                    .await?;
                            }
                        }
                    } else {
                        s.refusals.push((a.device_id.clone(), a.reason.clone()));
                        waiting.retain(|w| *w != a.device_id);
                    }
                }
                Body::E2eHandshake(h) if h.session_id == s.session_id => {
                    let done = s.finish_handshake(&h).await?;
                    if done {
                        waiting.retain(|w| *w != h.from);
                    }
                }
                Body::MemberLeft(m) if m.session_id == s.session_id => {
                    s.links.remove(&m.device_id);
                    waiting.retain(|w| *w != m.device_id);
                }
                _ => {}
            }
        }
        Ok(s)
    }

    async fn start_handshake(
        &mut self,
        member: &str,
        member_x: &[u8; 32],
        index: u32,
    ) -> Result<(), AutoError> {
        let mut hs = e2e::kk_initiator(
            &self.x_secret,
            member_x,
            &e2e::prologue(&self.session_id, &self.me, member),
        )?;
        let m1 = e2e::write(&mut hs, &[])?;
        self.links.insert(
            member.to_owned(),
            Link {
                noise: Noise::Handshake(Box::new(hs)),
                keyed: false,
                index,
                origin: OriginKey::generate(),
            },
        );
        self.conn
            .send(Body::E2eHandshake(E2eHandshake {
                session_id: self.session_id.clone(),
                from: self.me.clone(),
                to: member.to_owned(),
                payload: Bytes::from(m1),
            }))
            .await?;
        Ok(())
    }

    /// The session key, the member's index and its origin key, sealed in
    /// its Noise channel.
    fn key_message(key: &SessionKey, link: &mut Link) -> Result<Option<Vec<u8>>, AutoError> {
        let Noise::Transport(t) = &mut link.noise else {
            return Ok(None);
        };
        let grant = SessionKeyGrant {
            key: Bytes::from(key.to_bytes().to_vec()),
            epoch: key.epoch,
            member_index: link.index,
            origin_key: Bytes::from(link.origin.to_bytes().to_vec()),
        };
        let plain = Zeroizing::new(grant.encode_to_vec());
        Ok(Some(transport_write(t, &plain)?))
    }

    /// Completes a member's handshake and hands it the session key.
    async fn finish_handshake(&mut self, h: &E2eHandshake) -> Result<bool, AutoError> {
        let Some(link) = self.links.get_mut(&h.from) else {
            return Ok(false);
        };
        let Noise::Handshake(mut hs) = std::mem::replace(&mut link.noise, Noise::Failed) else {
            return Ok(false);
        };
        e2e::read(&mut hs, &h.payload)?;
        let t = hs
            .into_transport_mode()
            .map_err(|e| E2eError::Noise(e.to_string()))?;
        link.noise = Noise::Transport(Box::new(t));
        let Some(sealed) = Self::key_message(&self.key, link)? else {
            return Ok(false);
        };
        link.keyed = true;
        self.conn
            .send(Body::E2eHandshake(E2eHandshake {
                session_id: self.session_id.clone(),
                from: self.me.clone(),
                to: h.from.clone(),
                payload: Bytes::from(sealed),
            }))
            .await?;
        Ok(true)
    }

    /// Members holding the session key.
    pub fn joined(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| l.keyed)
            .map(|(d, _)| d.clone())
            .collect();
        v.sort();
        v
    }

    /// Seals a payload for every member (or one), with each recipient's
    /// origin tag.
    fn seal(&mut self, body: e2e_payload::Body, to: &str) -> Body {
        self.counter += 1;
        let at = Place {
            session_id: &self.session_id,
            epoch: self.key.epoch,
            sender: 0,
            counter: self.counter,
        };
        let ciphertext = e2e::seal(&self.key, at.session_id, 0, at.counter, &payload(body));
        let tags = self
            .links
            .iter()
            .filter(|(m, l)| l.keyed && (to.is_empty() || *m == to))
            .map(|(_, l)| OriginTag {
                member: l.index,
                tag: Bytes::copy_from_slice(&e2e::origin_tag(&l.origin, at, &ciphertext)),
            })
            .collect();
        Body::E2eData(E2eData {
            session_id: self.session_id.clone(),
            epoch: self.key.epoch,
            sender: 0,
            counter: self.counter,
            ciphertext: Bytes::from(ciphertext),
            to: to.to_owned(),
            tags,
        })
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), AutoError> {
        let b = self.seal(
            e2e_payload::Body::Text(tessera_proto::v1::Text {
                text: text.to_owned(),
            }),
            "",
        );
        self.conn.send(b).await.map_err(Into::into)
    }

    /// Moves everyone still keyed to a new key, sent in each one's Noise
    /// channel: whoever left never sees it.
    async fn rekey(&mut self) -> Result<(), AutoError> {
        self.key = SessionKey::generate(self.key.epoch + 1);
        self.guard.reset();
        let members: Vec<String> = self.links.keys().cloned().collect();
        for m in members {
            let Some(link) = self.links.get_mut(&m) else {
                continue;
            };
            let Some(sealed) = Self::key_message(&self.key, link)? else {
                continue;
            };
            self.conn
                .send(Body::E2eHandshake(E2eHandshake {
                    session_id: self.session_id.clone(),
                    from: self.me.clone(),
                    to: m.clone(),
                    payload: Bytes::from(sealed),
                }))
                .await?;
        }
        Ok(())
    }

    /// Removes a member and moves everyone left to a new key it never sees.
    pub async fn remove(&mut self, member: &str) -> Result<(), AutoError> {
        self.conn
            .send(leave(&self.session_id, member, "removed"))
            .await?;
        self.links.remove(member);
        self.rekey().await
    }

    /// Handles one message from the server: a member's sealed payload is
    /// checked (in order, from that member, unaltered), a member that left
    /// is dropped and the key moves on. `None` for messages of no interest.
    pub async fn handle(&mut self, body: Body) -> Result<Option<Event>, AutoError> {
        match body {
            Body::E2eData(d) if d.session_id == self.session_id => {
                let Some((member, link)) = self.links.iter().find(|(_, l)| l.index == d.sender)
                else {
                    return Err(E2eError::Tampered.into());
                };
                let plain = e2e::open_from(
                    &self.key,
                    &link.origin,
                    &mut self.guard,
                    place(&d),
                    &d.ciphertext,
                    tag_for(&d, d.sender),
                )?;
                let member = member.clone();
                match E2ePayload::decode(plain.as_slice()) {
                    Ok(E2ePayload {
                        body: Some(e2e_payload::Body::TransferAck(ack)),
                    }) => Ok(Some(Event::Ack { member, ack })),
                    _ => Ok(None),
                }
            }
            Body::MemberLeft(m)
                if m.session_id == self.session_id && self.links.contains_key(&m.device_id) =>
            {
                self.links.remove(&m.device_id);
                self.rekey().await?;
                Ok(Some(Event::Left {
                    member: m.device_id,
                    reason: m.reason,
                }))
            }
            Body::SessionEnded(e) if e.session_id == self.session_id => Ok(Some(Event::Ended {
                code: e.code,
                reason: e.reason,
            })),
            _ => Ok(None),
        }
    }

    /// The next event of this session; `None` once the connection closed.
    pub async fn next_event(&mut self) -> Result<Option<Event>, AutoError> {
        while let Some(body) = self.conn.recv().await {
            if let Some(e) = self.handle(body).await? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Sends files and folders to every member; returns once each member
    /// acknowledged every file whole and verified.
    pub async fn send_files(
        &mut self,
        items: &[Outgoing],
        show_progress: bool,
    ) -> Result<u64, AutoError> {
        use tokio::io::AsyncReadExt;
        let total: u64 = items.iter().map(|o| o.size).sum();
        let bar = if show_progress {
            indicatif::ProgressBar::new(total)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(progress_style());
        let mut acks: HashMap<String, TransferAck> = HashMap::new();
        let receivers = self.joined();
        for (i, item) in items.iter().enumerate() {
            let id = i as u32 + 1;
            bar.set_message(item.name.clone());
            let start = self.seal(
                e2e_payload::Body::FileStart(FileStart {
                    file_id: id,
                    path: item.name.clone(),
                    size: item.size,
                    mode: 0o644,
                }),
                "",
            );
            self.conn.send(start).await?;
            let mut f = tokio::fs::File::open(&item.source)
                .await
                .map_err(|e| AutoError::Transfer(format!("{}: {e}", item.source.display())))?;
            let mut hasher = blake3::Hasher::new();
            let mut offset = 0u64;
            let mut buf = vec![0u8; files::CHUNK];
            loop {
                let n = f
                    .read(&mut buf)
                    .await
                    .map_err(|e| AutoError::Transfer(format!("{}: {e}", item.source.display())))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                let chunk = self.seal(
                    e2e_payload::Body::FileChunk(FileChunk {
                        file_id: id,
                        offset,
                        data: Bytes::copy_from_slice(&buf[..n]),
                    }),
                    "",
                );
                self.conn.send(chunk).await?;
                offset += n as u64;
                bar.inc(n as u64);
                self.drain(&mut acks).await?;
            }
            if offset != item.size {
                return Err(AutoError::Transfer(format!(
                    "{} changed while it was sent",
                    item.name
                )));
            }
            let end = self.seal(
                e2e_payload::Body::FileEnd(FileEnd {
                    file_id: id,
                    blake3: Bytes::copy_from_slice(hasher.finalize().as_bytes()),
                }),
                "",
            );
            self.conn.send(end).await?;
        }
        let done = self.seal(
            e2e_payload::Body::TransferDone(TransferDone {
                files: items.len() as u32,
                bytes: total,
            }),
            "",
        );
        self.conn.send(done).await?;
        bar.finish_and_clear();
        while receivers.iter().any(|r| !acks.contains_key(r)) {
            match self.next_event().await? {
                Some(e) => self.take(e, &mut acks)?,
                None => return Err(AutoError::Closed),
            }
        }
        for (member, ack) in &acks {
            if ack.bytes != total || ack.files as usize != items.len() {
                return Err(AutoError::Transfer(format!(
                    "{member} received {} file(s), {} bytes of {} file(s), {total} bytes",
                    ack.files,
                    ack.bytes,
                    items.len()
                )));
            }
        }
        Ok(total)
    }

    /// Takes what arrived while sending, without waiting.
    async fn drain(&mut self, acks: &mut HashMap<String, TransferAck>) -> Result<(), AutoError> {
        while let Some(body) = self.conn.try_recv() {
            if let Some(e) = self.handle(body).await? {
                self.take(e, acks)?;
            }
        }
        Ok(())
    }

    /// A transfer's view of an event: a refusal, a departure or the end
    /// fails it.
    fn take(&self, e: Event, acks: &mut HashMap<String, TransferAck>) -> Result<(), AutoError> {
        match e {
            Event::Ack { member, ack } if !ack.ok => Err(AutoError::Transfer(format!(
                "{member} refused the transfer: {}",
                ack.error
            ))),
            Event::Ack { member, ack } => {
                acks.insert(member, ack);
                Ok(())
            }
            Event::Left { member, reason } => Err(AutoError::Transfer(format!(
                "{member} left the session: {reason}"
            ))),
            Event::Ended { reason, .. } => {
                Err(AutoError::Transfer(format!("the session ended: {reason}")))
            }
        }
    }

    /// Cancels a transfer in progress (members drop what they received).
    pub async fn cancel(&mut self, reason: &str) -> Result<(), AutoError> {
        let b = self.seal(
            e2e_payload::Body::Cancel(tessera_proto::v1::Cancel {
                reason: reason.to_owned(),
            }),
            "",
        );
        self.conn.send(b).await.map_err(Into::into)
    }

    /// Ends the session for everyone.
    pub async fn end(self) {
        let _ = self
            .conn
            .send(Body::SessionEnded(SessionEnded {
                session_id: self.session_id.clone(),
                code: "ended_by_creator".into(),
                reason: String::new(),
            }))
            .await;
        self.conn.close().await;
    }
}

/// The inbox a member writes received files into.
pub fn inbox_of(state: &crate::AgentState) -> PathBuf {
    state.dir().join("inbox")
}

/// Queue for bodies produced by member handling.
pub type Outbound = mpsc::Sender<Body>;
