//! The creator side: a client connection of this device asks the server
//! for a session, keys every member that joins (each in its own Noise
//! channel), seals payloads with an origin tag per member, and moves the
//! remaining members to a new key whenever one leaves.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tessera_core::e2e::{self, E2eError, OriginKey, Place, ReplayGuard, SessionKey};
use tessera_core::identity::DeviceId;
use tessera_core::kinds::{self, EndCode};
use tessera_core::trust::{key_from_hex, Scope};
use tessera_proto::v1::{
    e2e_payload, AutoSessionCreate, E2eData, E2eHandshake, E2ePayload, MemberOutcome, OriginTag,
    SessionEnded, SessionKeyGrant, TransferAck,
};
use tessera_proto::Body;
use zeroize::Zeroizing;

use super::{leave, payload, place, tag_for, transport_write, Noise};
use crate::control::ClientConnection;
use crate::credentials::Credentials;
use crate::error::AgentError;
use crate::trust::TrustStore;

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
    /// A member's shell wrote to its terminal.
    Output { member: String, data: Bytes },
    /// A member's shell is gone: its exit status if it exited, else why it
    /// could not start.
    ShellExited {
        member: String,
        exit_status: Option<i32>,
        reason: String,
    },
}

/// The creator's end of an automatic session.
pub struct AutoSession {
    pub session_id: String,
    pub outcomes: Vec<MemberOutcome>,
    me: String,
    x_secret: Zeroizing<[u8; 32]>,
    pub(super) conn: ClientConnection,
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

/// Whether the server joined this member (an outcome word this version
/// does not know is no join).
fn joined(o: &MemberOutcome) -> bool {
    o.outcome
        .parse::<kinds::MemberOutcome>()
        .is_ok_and(kinds::MemberOutcome::joined)
}

/// How long the creator waits for invited members to join.
const JOIN_WAIT: Duration = Duration::from_secs(20);

/// At most this many messages that came before the reply to a create are
/// kept for after it.
const EARLY_KEPT: usize = 1024;

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
        // A member's answer travels on the server's notice queue and may
        // overtake the reply to the create: what comes first is kept, and
        // read before anything newer.
        let mut early = VecDeque::new();
        let created = loop {
            match conn.recv().await {
                Some(Body::AutoSessionCreated(c)) => break c,
                Some(Body::Error(e)) => {
                    return Err(AutoError::NotStarted(format!("{}: {}", e.code, e.message)))
                }
                Some(other) if early.len() < EARLY_KEPT => early.push_back(other),
                Some(_) => {}
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
        for o in created.outcomes.iter().filter(|o| joined(o)) {
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
            let next = match early.pop_front() {
                Some(b) => Ok(Some(b)),
                None => tokio::time::timeout_at(deadline, s.conn.recv()).await,
            };
            let body = match next {
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
    pub(super) fn seal(&mut self, body: e2e_payload::Body, to: &str) -> Body {
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
                    Ok(E2ePayload {
                        body: Some(e2e_payload::Body::PtyData(d)),
                    }) => Ok(Some(Event::Output {
                        member,
                        data: d.data,
                    })),
                    Ok(E2ePayload {
                        body: Some(e2e_payload::Body::PtyExit(x)),
                    }) => Ok(Some(Event::ShellExited {
                        member,
                        exit_status: x.exit_status,
                        reason: x.reason,
                    })),
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

    /// Ends the session for everyone.
    pub async fn end(self) {
        let _ = self
            .conn
            .send(Body::SessionEnded(SessionEnded {
                session_id: self.session_id.clone(),
                code: EndCode::EndedByCreator.as_str().into(),
                reason: String::new(),
            }))
            .await;
        self.conn.close().await;
    }
}
