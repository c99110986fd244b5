//! Automatic sessions between devices that trust each other.
//!
//! The creator names devices; the server checks each one ([`decide`]) and
//! answers per member with a machine-readable outcome. Members that pass are
//! invited; each re-checks locally (its own pin of the creator's key, its
//! own grant) and joins or refuses, and a refusal is recorded like any
//! other outcome. The server then only routes: Noise handshakes between the
//! creator and each member, and sealed payloads between members. It holds
//! no session key and cannot read or undetectably change what it routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tessera_core::trust::{fingerprint, grant_state, GrantState, Scope};
use tessera_core::Timestamp;
use tessera_proto::v1::{
    AutoJoinAnswer, AutoJoinInvite, AutoSessionCreate, AutoSessionCreated, E2eData, E2eHandshake,
    MemberLeft, MemberOutcome, SessionEnded,
};
use tessera_proto::{Body, AUTO_SESSION_VERSION};

use crate::auth::device::DevicePrincipal;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::devices::DeviceRow;
use crate::store::trust::{AttestationRow, GrantRow};
use crate::store::{self, StoreError};
use crate::AppState;

/// Default limit on members of one automatic session (the creator included).
pub const DEFAULT_MAX_MEMBERS: usize = 8;

/// Most devices one request may name; a longer list is refused whole.
pub const MAX_NAMED: usize = 256;

/// What the server knows about one named device.
#[derive(Debug, Default)]
pub struct Facts<'a> {
    pub device: Option<&'a DeviceRow>,
    pub same_tenant: bool,
    /// 1-based position among the members, the creator being 1.
    pub position: usize,
    pub online: bool,
    pub protocol: Option<u32>,
    pub creator_trusts_member: Option<&'a AttestationRow>,
    pub member_trusts_creator: Option<&'a AttestationRow>,
    /// The member's current grant to the creator.
    pub grant: Option<&'a GrantRow>,
}

fn hex(b: &[u8; 32]) -> String {
    tessera_core::secret::hex(b)
}

fn live(a: Option<&AttestationRow>) -> Option<&AttestationRow> {
    a.filter(|a| a.withdrawn_at.is_none())
}

/// The outcome for one named device: `joined` (invited), or the first
/// reason it cannot join, in a fixed order.
pub fn decide(
    creator: &DeviceRow,
    f: &Facts<'_>,
    scope: Scope,
    max_members: usize,
    now: Timestamp,
) -> &'static str {
    let Some(member) = f.device.filter(|d| d.revoked_at.is_none()) else {
        return "unknown_device";
    };
    if !f.same_tenant {
        return "other_tenant";
    }
    if f.position > max_members {
        return "too_many_members";
    }
    let (Some(c2m), Some(m2c)) = (live(f.creator_trusts_member), live(f.member_trusts_creator))
    else {
        return "not_mutually_trusted";
    };
    // Each side's pin must still be the other's current key.
    if c2m.trusted_ed25519 != hex(&member.ed25519_public)
        || m2c.trusted_ed25519 != hex(&creator.ed25519_public)
    {
        return "key_mismatch";
    }
    let Some(grant) = f.grant else {
        return "no_grant";
    };
    match grant_state(
        &grant.grant,
        grant.revoked_at.is_some(),
        &fingerprint(&creator.ed25519_public),
        now,
    ) {
        GrantState::Revoked => return "grant_revoked",
        GrantState::Expired => return "grant_expired",
        GrantState::KeyMismatch => return "key_mismatch",
        GrantState::Active | GrantState::ExpiringSoon => {}
    }
    if !grant.grant.scopes.contains(&scope) {
        return "scope_missing";
    }
    if !f.online {
        return "offline";
    }
    if f.protocol.is_none_or(|v| v < AUTO_SESSION_VERSION) {
        return "incompatible_version";
    }
    "joined"
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum MemberState {
    Invited,
    Joined,
}

#[derive(Clone, Debug)]
struct Member {
    conn_id: u64,
    index: u32,
    state: MemberState,
}

/// A live automatic session: who may send to whom.
#[derive(Debug)]
struct Auto {
    tenant_id: String,
    creator: String,
    creator_conn: u64,
    members: HashMap<String, Member>,
}

/// The automatic sessions routed by this node.
#[derive(Default)]
pub struct AutoHub {
    sessions: Mutex<HashMap<String, Auto>>,
}

/// A hook that sees (and may change) sealed payloads as the relay routes
/// them. Only tests set it, to show that a changed byte is detected by the
/// receiving member.
pub type RelayTap = Arc<dyn Fn(&mut Body) + Send + Sync>;

impl AutoHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Auto>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection to route to for `device` in `session`, if the sender
    /// (`from`, on `from_conn`) belongs to it.
    fn route(&self, session: &str, from: &str, from_conn: u64, to: &str) -> Option<u64> {
        let s = self.lock();
        let a = s.get(session)?;
        let sender_ok = (a.creator == from && a.creator_conn == from_conn)
            || a.members
                .get(from)
                .is_some_and(|m| m.conn_id == from_conn && m.state == MemberState::Joined);
        if !sender_ok {
            return None;
        }
        if a.creator == to {
            return Some(a.creator_conn);
        }
        a.members
            .get(to)
            .filter(|m| m.state == MemberState::Joined)
            .map(|m| m.conn_id)
    }

    /// Where a sealed payload goes, with the sender's member index: from
    /// the creator to every joined member (or the one named by `to`); from
    /// a joined member to the creator only. Members never hear each other.
    fn fan_out(
        &self,
        session: &str,
        from: &str,
        from_conn: u64,
        to: &str,
    ) -> Option<(u32, Vec<u64>)> {
        let s = self.lock();
        let a = s.get(session)?;
        if a.creator == from && a.creator_conn == from_conn {
            let conns = a
                .members
                .iter()
                .filter(|(d, m)| m.state == MemberState::Joined && (to.is_empty() || *d == to))
                .map(|(_, m)| m.conn_id)
                .collect();
            return Some((0, conns));
        }
        let m = a
            .members
            .get(from)
            .filter(|m| m.conn_id == from_conn && m.state == MemberState::Joined)?;
        Some((m.index, vec![a.creator_conn]))
    }
}

fn outcome(device_id: &str, outcome: &str, index: u32) -> MemberOutcome {
    MemberOutcome {
        device_id: device_id.to_owned(),
        outcome: outcome.to_owned(),
        member_index: index,
    }
}

/// Creates an automatic session for `creator` (on connection `conn_id`).
pub async fn create(
    state: &AppState,
    creator: &DevicePrincipal,
    conn_id: u64,
    req: AutoSessionCreate,
) -> Result<AutoSessionCreated, StoreError> {
    let now = state.now();
    let Some(scope) = Scope::parse(&req.scope) else {
        return Ok(AutoSessionCreated {
            session_id: String::new(),
            outcomes: vec![outcome("", "invalid_scope", 0)],
            started: false,
        });
    };
    let db = state.db();
    let Some(creator_row) = store::devices::by_id_any_tenant(db.pool(), &creator.device_id).await?
    else {
        return Err(StoreError::Db(sqlx::Error::RowNotFound));
    };
    if req.members.len() > MAX_NAMED {
        return Ok(AutoSessionCreated {
            session_id: String::new(),
            outcomes: vec![outcome("", "too_many_members", 0)],
            started: false,
        });
    }
    // The creator is always a member; duplicates and the creator are
    // dropped from the named list, which keeps its order. A name that is
    // no device id is answered as unknown, shortened, without a lookup.
    let mut named: Vec<String> = Vec::new();
    for m in req.members {
        let id = tessera_core::identity::DeviceId::parse(&m)
            .map(|d| d.to_string())
            .unwrap_or_else(|_| clip(&m));
        if id != creator.device_id && !named.contains(&id) {
            named.push(id);
        }
    }
    let max = state.config().auto_session_max_members;
    let mut outcomes = Vec::new();
    let mut invited = Vec::new();
    for (i, id) in named.iter().enumerate() {
        let device = match tessera_core::identity::DeviceId::parse(id) {
            Ok(_) => store::devices::by_id_any_tenant(db.pool(), id)
                .await?
                .filter(|d| !d.ephemeral),
            Err(_) => None,
        };
        let c2m = store::trust::latest_attestation(db.pool(), &creator.device_id, id).await?;
        let m2c = store::trust::latest_attestation(db.pool(), id, &creator.device_id).await?;
        let grant = store::trust::current_grant(db.pool(), id, &creator.device_id).await?;
        let facts = Facts {
            device: device.as_ref(),
            same_tenant: device
                .as_ref()
                .is_some_and(|d| d.tenant_id == creator.tenant_id),
            position: i + 2,
            online: state.registry().is_connected(id),
            protocol: state.registry().protocol_of(id),
            creator_trusts_member: c2m.as_ref(),
            member_trusts_creator: m2c.as_ref(),
            grant: grant.as_ref(),
        };
        let verdict = decide(&creator_row, &facts, scope, max, now);
        let index = (i + 1) as u32;
        outcomes.push(outcome(
            id,
            if verdict == "joined" {
                "joined"
            } else {
                verdict
            },
            index,
        ));
        if verdict == "joined" {
            if let (Some(conn), Some(g)) = (state.registry().conn_of(id), grant.as_ref()) {
                invited.push((id.clone(), conn, index, g.grant.id.clone()));
            }
        }
    }
    let rejected = outcomes.iter().any(|o| o.outcome != "joined");
    let started = !(invited.is_empty() || req.all_or_nothing && rejected);

    let session_id = uuid::Uuid::now_v7().to_string();
    let mut tx = db.begin_write().await?;
    store::sessions::insert(
        &mut tx,
        store::sessions::NewSession {
            id: &session_id,
            tenant_id: &creator.tenant_id,
            origin: "automatic",
            device_id: &creator.device_id,
            created_by: &format!("device:{}", creator.device_id),
            access: "control",
            consent: "not_required",
            support_code_id: None,
            now,
            consent_deadline: None,
        },
    )
    .await?;
    store::trust::insert_member(&mut tx, &session_id, &creator.device_id, 0, "creator").await?;
    let actor = Actor::Device(creator.device_id.clone());
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                &creator.tenant_id,
                actor.clone(),
                Action::AutoSessionCreated,
            )
            .target(format!("session:{session_id}"))
            .detail("scope", scope.as_str())
            .detail("named", named.len())
            .detail("all_or_nothing", req.all_or_nothing),
        )
        .await?;
    for o in &outcomes {
        let recorded = if o.outcome == "joined" && started {
            "invited"
        } else {
            o.outcome.as_str()
        };
        store::trust::insert_member(&mut tx, &session_id, &o.device_id, o.member_index, recorded)
            .await?;
        state
            .audit(
                &mut tx,
                AuditEvent::new(&creator.tenant_id, actor.clone(), Action::AutoJoin)
                    .target(format!("session:{session_id}"))
                    .detail("member", o.device_id.clone())
                    .detail(
                        "outcome",
                        if o.outcome == "joined" {
                            "invited"
                        } else {
                            o.outcome.as_str()
                        },
                    )
                    .detail("checked_by", "server"),
            )
            .await?;
    }
    if !started {
        let reason = if invited.is_empty() {
            "no named device could join"
        } else {
            "all or nothing: some devices could not join"
        };
        store::sessions::end(&mut tx, &session_id, "members_rejected", reason, now).await?;
    }
    tx.commit().await?;
    if !started {
        return Ok(AutoSessionCreated {
            session_id,
            outcomes,
            started: false,
        });
    }

    let creator_hex = (
        hex(&creator_row.ed25519_public),
        hex(&creator_row.x25519_public),
    );
    {
        let mut hub = state.auto().lock();
        let members = invited
            .iter()
            .map(|(id, conn, index, _)| {
                (
                    id.clone(),
                    Member {
                        conn_id: *conn,
                        index: *index,
                        state: MemberState::Invited,
                    },
                )
            })
            .collect();
        hub.insert(
            session_id.clone(),
            Auto {
                tenant_id: creator.tenant_id.clone(),
                creator: creator.device_id.clone(),
                creator_conn: conn_id,
                members,
            },
        );
    }
    for (id, conn, index, grant_id) in &invited {
        let _ = store::trust::touch_grant(db, grant_id, now).await;
        if let Some(q) = state.registry().notices_of_conn(*conn) {
            let _ = q.try_send(crate::control::queued(Body::AutoJoinInvite(
                AutoJoinInvite {
                    session_id: session_id.clone(),
                    creator: creator.device_id.clone(),
                    creator_ed25519: creator_hex.0.clone(),
                    creator_x25519: creator_hex.1.clone(),
                    scope: scope.as_str().to_owned(),
                    member_index: *index,
                    creator_name: creator_row.name.clone(),
                },
            )));
        }
        let _ = id;
    }
    Ok(AutoSessionCreated {
        session_id,
        outcomes,
        started: true,
    })
}

/// A member's answer to its invitation, after its own checks.
pub async fn answer(
    state: &AppState,
    member: &str,
    conn_id: u64,
    a: AutoJoinAnswer,
) -> Result<(), StoreError> {
    let (creator_conn, tenant, creator) = {
        let mut hub = state.auto().lock();
        let Some(s) = hub.get_mut(&a.session_id) else {
            return Ok(());
        };
        let Some(m) = s
            .members
            .get_mut(member)
            .filter(|m| m.conn_id == conn_id && m.state == MemberState::Invited)
        else {
            return Ok(());
        };
        if a.accept {
            m.state = MemberState::Joined;
        } else {
            s.members.remove(member);
        }
        (s.creator_conn, s.tenant_id.clone(), s.creator.clone())
    };
    let reason = clip(&a.reason);
    let recorded = if a.accept {
        "joined".to_owned()
    } else {
        reason.clone()
    };
    let mut tx = state.db().begin_write().await?;
    store::trust::set_member_outcome(&mut tx, &a.session_id, member, &recorded, state.now())
        .await?;
    state
        .audit(
            &mut tx,
            AuditEvent::new(&tenant, Actor::Device(member.to_owned()), Action::AutoJoin)
                .target(format!("session:{}", a.session_id))
                .detail("member", member)
                .detail("creator", creator)
                .detail("outcome", recorded.clone())
                .detail("checked_by", "member"),
        )
        .await?;
    tx.commit().await?;
    if let Some(q) = state.registry().notices_of_conn(creator_conn) {
        let _ = q.try_send(crate::control::queued(Body::AutoJoinAnswer(
            AutoJoinAnswer {
                session_id: a.session_id,
                accept: a.accept,
                reason,
                device_id: member.to_owned(),
            },
        )));
    }
    Ok(())
}

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// How long a sender waits for room in a receiver's queue before the
/// receiver is treated as gone.
const ROUTE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Routes a Noise handshake message to its addressee; the sender is named
/// by the server, never by the message.
pub async fn handshake(state: &AppState, from: &str, conn_id: u64, mut h: E2eHandshake) {
    let Some(target) = state.auto().route(&h.session_id, from, conn_id, &h.to) else {
        return;
    };
    h.from = from.to_owned();
    let mut body = Body::E2eHandshake(h);
    if let Some(tap) = state.relay_tap() {
        tap(&mut body);
    }
    if let Some(q) = state.registry().e2e_of_conn(target) {
        let _ = q
            .send_timeout(crate::control::queued(body), ROUTE_WAIT)
            .await;
    }
}

/// Routes a sealed payload to the other participants (or one of them).
pub async fn data(state: &AppState, from: &str, conn_id: u64, mut d: E2eData) {
    let Some((index, targets)) = state.auto().fan_out(&d.session_id, from, conn_id, &d.to) else {
        return;
    };
    // The sender's index is the server's to say: a member cannot pose as
    // another within the session's nonce space.
    d.sender = index;
    if let Some(tap) = state.relay_tap() {
        let mut body = Body::E2eData(d);
        tap(&mut body);
        let Body::E2eData(tapped) = body else { return };
        d = tapped;
    }
    for target in targets {
        if let Some(q) = state.registry().e2e_of_conn(target) {
            let _ = q
                .send_timeout(crate::control::queued(Body::E2eData(d.clone())), ROUTE_WAIT)
                .await;
        }
    }
}

/// The creator removes a member, or a member leaves (for instance after a
/// payload failed its check): it stops receiving, and the others learn it
/// left (the creator moves the session to a new key).
pub async fn remove_member(
    state: &AppState,
    from: &str,
    conn_id: u64,
    session_id: &str,
    member: &str,
    reason: &str,
) {
    let notify = {
        let mut hub = state.auto().lock();
        let allowed = |s: &Auto| {
            (s.creator == from && s.creator_conn == conn_id)
                || (from == member && s.members.get(member).is_some_and(|m| m.conn_id == conn_id))
        };
        let Some(s) = hub.get_mut(session_id).filter(|s| allowed(s)) else {
            return;
        };
        let Some(gone) = s.members.remove(member) else {
            return;
        };
        let mut conns: Vec<u64> = s.members.values().map(|m| m.conn_id).collect();
        conns.push(s.creator_conn);
        conns.push(gone.conn_id);
        (conns, s.tenant_id.clone())
    };
    let (notify, tenant) = notify;
    let _ = store::trust::member_left(state.db(), session_id, member, state.now()).await;
    let left = Left {
        tenant: &tenant,
        session_id,
        by: from,
        member,
        reason,
    };
    if let Err(e) = audit_left(state, left).await {
        tracing::warn!(error = %e, "could not record a member leaving");
    }
    for c in notify {
        if let Some(q) = state.registry().notices_of_conn(c) {
            let _ = q.try_send(crate::control::queued(Body::MemberLeft(MemberLeft {
                session_id: session_id.to_owned(),
                device_id: member.to_owned(),
                reason: clip(reason),
            })));
        }
    }
}

/// Records a member leaving (removed by the creator, or gone by itself, for
/// instance after a payload failed its check).
struct Left<'a> {
    tenant: &'a str,
    session_id: &'a str,
    by: &'a str,
    member: &'a str,
    reason: &'a str,
}

async fn audit_left(state: &AppState, l: Left<'_>) -> Result<(), StoreError> {
    let mut tx = state.db().begin_write().await?;
    state
        .audit(
            &mut tx,
            AuditEvent::new(
                l.tenant,
                Actor::Device(l.by.to_owned()),
                Action::AutoMemberLeft,
            )
            .target(format!("session:{}", l.session_id))
            .detail("member", l.member)
            .detail("reason", clip(l.reason)),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Ends an automatic session: every participant is told.
pub async fn end(state: &AppState, session_id: &str, code: &str, reason: &str) {
    let Some(s) = state.auto().lock().remove(session_id) else {
        return;
    };
    let _ = crate::session::end(
        state,
        session_id,
        code,
        reason,
        Actor::Device(s.creator.clone()),
    )
    .await;
    let mut conns: Vec<u64> = s.members.values().map(|m| m.conn_id).collect();
    conns.push(s.creator_conn);
    for c in conns {
        if let Some(q) = state.registry().notices_of_conn(c) {
            let _ = q.try_send(crate::control::queued(Body::SessionEnded(SessionEnded {
                session_id: session_id.to_owned(),
                code: code.to_owned(),
                reason: reason.to_owned(),
            })));
        }
    }
}

/// The creator ends its session.
pub async fn end_by_creator(state: &AppState, creator: &str, conn_id: u64, session_id: &str) {
    let owns = state
        .auto()
        .lock()
        .get(session_id)
        .is_some_and(|s| s.creator == creator && s.creator_conn == conn_id);
    if owns {
        end(
            state,
            session_id,
            "ended_by_creator",
            "the device that created the session ended it",
        )
        .await;
    }
}

/// A connection closed: sessions it created end; where it was a member, the
/// others learn it left.
pub async fn connection_closed(state: &AppState, device: &str, conn_id: u64) {
    let (created, member_of): (Vec<String>, Vec<(String, Vec<u64>)>) = {
        let mut hub = state.auto().lock();
        let created = hub
            .iter()
            .filter(|(_, s)| s.creator_conn == conn_id)
            .map(|(id, _)| id.clone())
            .collect();
        let mut member_of = Vec::new();
        for (id, s) in hub.iter_mut() {
            if s.members.get(device).is_some_and(|m| m.conn_id == conn_id) {
                s.members.remove(device);
                let mut conns: Vec<u64> = s.members.values().map(|m| m.conn_id).collect();
                conns.push(s.creator_conn);
                member_of.push((id.clone(), conns));
            }
        }
        (created, member_of)
    };
    for id in created {
        end(
            state,
            &id,
            "creator_disconnected",
            "the device that created the session disconnected",
        )
        .await;
    }
    for (id, conns) in member_of {
        let _ = store::trust::member_left(state.db(), &id, device, state.now()).await;
        for c in conns {
            if let Some(q) = state.registry().notices_of_conn(c) {
                let _ = q.try_send(crate::control::queued(Body::MemberLeft(MemberLeft {
                    session_id: id.clone(),
                    device_id: device.to_owned(),
                    reason: "disconnected".into(),
                })));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::trust::AutoJoinGrant;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn device(id: &str, ed: u8) -> DeviceRow {
        DeviceRow {
            id: id.into(),
            tenant_id: "t".into(),
            ed25519_public: [ed; 32],
            x25519_public: [ed; 32],
            name: id.into(),
            hostname: "h".into(),
            os: "o".into(),
            agent_version: None,
            tags: vec![],
            enrolled_via: "pairing".into(),
            enrolled_by: "user:u".into(),
            owner_user_id: "u".into(),
            created_at: NOW,
            connected_at: None,
            disconnected_at: None,
            last_seen_at: None,
            last_ip: None,
            revoked_at: None,
            revoked_reason: None,
            ephemeral: false,
        }
    }

    fn att(truster: &str, trusted: &DeviceRow) -> AttestationRow {
        AttestationRow {
            id: "a".into(),
            truster: truster.into(),
            trusted: trusted.id.clone(),
            trusted_ed25519: hex(&trusted.ed25519_public),
            trusted_x25519: hex(&trusted.x25519_public),
            issued_at: NOW,
            signature: String::new(),
            withdrawn_at: None,
        }
    }

    fn grant(creator: &DeviceRow, scopes: &[Scope]) -> GrantRow {
        GrantRow {
            grant: AutoJoinGrant {
                id: "g".into(),
                granter: "B".into(),
                grantee: creator.id.clone(),
                grantee_fingerprint: fingerprint(&creator.ed25519_public),
                scopes: scopes.to_vec(),
                issued_at: NOW,
                expires_at: NOW.plus(std::time::Duration::from_secs(86_400 * 30)),
            },
            tenant_id: "t".into(),
            signature: String::new(),
            superseded_by: None,
            revoked_at: None,
            revoked_by: None,
            revoked_reason: None,
            last_used_at: None,
        }
    }

    #[test]
    fn each_reason_in_its_order() {
        let a = device("A", 1);
        let b = device("B", 2);
        let (c2m, m2c) = (att("A", &b), att("B", &a));
        let g = grant(&a, &[Scope::Files]);
        let ok = Facts {
            device: Some(&b),
            same_tenant: true,
            position: 2,
            online: true,
            protocol: Some(2),
            creator_trusts_member: Some(&c2m),
            member_trusts_creator: Some(&m2c),
            grant: Some(&g),
        };
        let d = |f: &Facts<'_>, scope| decide(&a, f, scope, 8, NOW);
        assert_eq!(d(&ok, Scope::Files), "joined");
        assert_eq!(
            d(
                &Facts {
                    device: None,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            "unknown_device"
        );
        assert_eq!(
            d(
                &Facts {
                    same_tenant: false,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            "other_tenant"
        );
        assert_eq!(
            d(
                &Facts {
                    position: 9,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            "too_many_members"
        );
        assert_eq!(
            d(
                &Facts {
                    member_trusts_creator: None,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            "not_mutually_trusted"
        );
        assert_eq!(
            d(
                &Facts {
                    grant: None,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            "no_grant"
        );
        assert_eq!(d(&ok, Scope::Shell), "scope_missing");
        assert_eq!(
            d(
                &Facts {
                    online: false,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            "offline"
        );
        assert_eq!(
            d(
                &Facts {
                    protocol: Some(1),
                    ..clone(&ok)
                },
                Scope::Files
            ),
            "incompatible_version"
        );
        let mut revoked = grant(&a, &[Scope::Files]);
        revoked.revoked_at = Some(NOW);
        assert_eq!(
            d(
                &Facts {
                    grant: Some(&revoked),
                    ..clone(&ok)
                },
                Scope::Files
            ),
            "grant_revoked"
        );
        let late = NOW.plus(std::time::Duration::from_secs(86_400 * 31));
        assert_eq!(decide(&a, &ok, Scope::Files, 8, late), "grant_expired");
        let rotated = device("A", 9);
        assert_eq!(decide(&rotated, &ok, Scope::Files, 8, NOW), "key_mismatch");
    }

    fn clone<'a>(f: &Facts<'a>) -> Facts<'a> {
        Facts {
            device: f.device,
            same_tenant: f.same_tenant,
            position: f.position,
            online: f.online,
            protocol: f.protocol,
            creator_trusts_member: f.creator_trusts_member,
            member_trusts_creator: f.member_trusts_creator,
            grant: f.grant,
        }
    }
}
