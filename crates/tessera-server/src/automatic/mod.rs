//! Automatic sessions between devices that trust each other.
//!
//! The creator names devices; the server checks each one ([`decide`]) and
//! answers per member with a machine-readable outcome. Members that pass are
//! invited; each re-checks locally (its own pin of the creator's key, its
//! own grant) and joins or refuses, and a refusal is recorded like any
//! other outcome. The server then only routes: Noise handshakes between the
//! creator and each member, and sealed payloads between members. It holds
//! no session key and cannot read or undetectably change what it routes.

mod create;
pub mod decide;
mod hub;
mod recheck;

use crate::store::trust::MemberAnswer;
use tessera_core::kinds::EndCode;
use tessera_proto::v1::{AutoJoinAnswer, E2eData, E2eHandshake, MemberLeft, SessionEnded};
use tessera_proto::Body;

pub use self::create::{create, Creation, Invites};
pub use self::decide::{decide, Facts};
use self::hub::{Auto, MemberState};
pub use self::hub::{AutoHub, RelayTap};
pub use self::recheck::{recheck, standing_changed};
use crate::session::Sessions;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, Db, StoreError};
use crate::AppState;

/// What routing automatic sessions touches: the sessions this node routes,
/// the sessions' rows and relay, and the test tap if one is set.
#[derive(Clone)]
pub struct Routing<'a> {
    pub auto: &'a AutoHub,
    pub sessions: Sessions<'a>,
    pub tap: Option<RelayTap>,
}

impl<'a> Routing<'a> {
    pub fn of(state: &'a AppState) -> Routing<'a> {
        Routing {
            auto: state.auto(),
            sessions: Sessions::of(state),
            tap: state.relay_tap(),
        }
    }
}

/// Default limit on members of one automatic session (the creator included).
pub const DEFAULT_MAX_MEMBERS: usize = 8;

/// Most devices one request may name; a longer list is refused whole.
pub const MAX_NAMED: usize = 256;

/// A member's answer to its invitation, after its own checks.
pub async fn answer(
    r: &Routing<'_>,
    member: &str,
    conn_id: u64,
    a: AutoJoinAnswer,
) -> Result<(), StoreError> {
    let (creator_conn, tenant, creator) = {
        let mut hub = r.auto.lock();
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
    let answer = if a.accept {
        MemberAnswer::Joined
    } else {
        MemberAnswer::Refused(&reason)
    };
    r.sessions
        .db
        .write(async |w| {
            let now = w.now();
            store::trust::set_member_outcome(w, &a.session_id, member, answer, now).await?;
            w.audit(
                AuditEvent::new(&tenant, Actor::Device(member.to_owned()), Action::AutoJoin)
                    .target(format!("session:{}", a.session_id))
                    .detail("member", member)
                    .detail("creator", creator)
                    .detail("outcome", answer.word())
                    .detail("checked_by", "member"),
            )
            .await
        })
        .await?;
    if let Some(q) = r.sessions.registry.notices_of_conn(creator_conn) {
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

/// A device-supplied name or reason as it may be stored and shown.
pub(crate) fn clip(s: &str) -> String {
    tessera_core::text::printable(s, 64)
}

/// How long a sender waits for room in a receiver's queue before the
/// receiver is treated as gone.
const ROUTE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Routes a Noise handshake message to its addressee; the sender is named
/// by the server, never by the message.
pub async fn handshake(r: &Routing<'_>, from: &str, conn_id: u64, mut h: E2eHandshake) {
    let Some(target) = r.auto.route(&h.session_id, from, conn_id, &h.to) else {
        return;
    };
    h.from = from.to_owned();
    let mut body = Body::E2eHandshake(h);
    if let Some(tap) = r.tap.clone() {
        tap(&mut body);
    }
    if let Some(q) = r.sessions.registry.e2e_of_conn(target) {
        let _ = q
            .send_timeout(crate::control::queued(body), ROUTE_WAIT)
            .await;
    }
}

/// Routes a sealed payload to the other participants (or one of them).
pub async fn data(r: &Routing<'_>, from: &str, conn_id: u64, mut d: E2eData) {
    let Some((index, targets)) = r.auto.fan_out(&d.session_id, from, conn_id, &d.to) else {
        return;
    };
    // The sender's index is the server's to say: a member cannot pose as
    // another within the session's nonce space.
    d.sender = index;
    if let Some(tap) = r.tap.clone() {
        let mut body = Body::E2eData(d);
        tap(&mut body);
        let Body::E2eData(tapped) = body else { return };
        d = tapped;
    }
    for target in targets {
        if let Some(q) = r.sessions.registry.e2e_of_conn(target) {
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
    r: &Routing<'_>,
    from: &str,
    conn_id: u64,
    session_id: &str,
    member: &str,
    reason: &str,
) {
    let notify = {
        let mut hub = r.auto.lock();
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
    let left = Left {
        tenant: &tenant,
        session_id,
        by: Actor::Device(from.to_owned()),
        member,
        reason,
    };
    if let Err(e) = record_left(r.sessions.db, left).await {
        tracing::warn!(error = %e, "could not record a member leaving");
    }
    tell_member_left(r, &notify, session_id, member, reason);
}

/// A member leaving: removed by the creator or by the server, gone by
/// itself (for instance after a payload failed its check), or disconnected.
struct Left<'a> {
    tenant: &'a str,
    session_id: &'a str,
    by: Actor,
    member: &'a str,
    reason: &'a str,
}

/// Marks the member gone and audits it, in one transaction.
async fn record_left(db: &Db, l: Left<'_>) -> Result<(), StoreError> {
    db.write(async |w| {
        let now = w.now();
        store::trust::member_left(w, l.session_id, l.member, now).await?;
        let event = AuditEvent::new(l.tenant, l.by.clone(), Action::AutoMemberLeft)
            .target(format!("session:{}", l.session_id))
            .detail("member", l.member)
            .detail("reason", clip(l.reason));
        w.audit(event).await?;
        Ok(())
    })
    .await
}

/// Ends an automatic session: routing stops, the row ends (audited), and
/// every participant is told.
pub async fn end(r: &Routing<'_>, session_id: &str, code: EndCode, reason: &str) {
    let Some(s) = r.auto.lock().remove(session_id) else {
        return;
    };
    let _ = r
        .sessions
        .end(session_id, code, reason, Actor::Device(s.creator.clone()))
        .await;
    tell_ended(r, session_id, &s, code.as_str(), reason);
}

/// A session whose row was ended elsewhere (by an operator through the
/// API, by the sweep, or on another node): routing for it stops here at
/// once and every participant is told why. The row and its audit entry are
/// the caller's; `false` if this node routed no such session.
pub fn stop(r: &Routing<'_>, session_id: &str, code: &str, reason: &str) -> bool {
    let Some(s) = r.auto.lock().remove(session_id) else {
        return false;
    };
    tell_ended(r, session_id, &s, code, reason);
    true
}

fn tell_ended(r: &Routing<'_>, session_id: &str, s: &Auto, code: &str, reason: &str) {
    let mut conns: Vec<u64> = s.members.values().map(|m| m.conn_id).collect();
    conns.push(s.creator_conn);
    for c in conns {
        if let Some(q) = r.sessions.registry.notices_of_conn(c) {
            let _ = q.try_send(crate::control::queued(Body::SessionEnded(SessionEnded {
                session_id: session_id.to_owned(),
                code: code.to_owned(),
                reason: reason.to_owned(),
            })));
        }
    }
}

/// The server removes a member whose standing changed (grant revoked or
/// lapsed, trust withdrawn, key changed, device revoked): it stops
/// receiving at once, it and the others are told with the reason (the
/// creator moves the session to a new key), and the removal is audited.
/// `false` if the member was no longer in the session.
pub async fn drop_member(
    r: &Routing<'_>,
    session_id: &str,
    member: &str,
    reason: &str,
) -> Result<bool, StoreError> {
    let (notify, tenant) = {
        let mut hub = r.auto.lock();
        let Some(s) = hub.get_mut(session_id) else {
            return Ok(false);
        };
        let Some(gone) = s.members.remove(member) else {
            return Ok(false);
        };
        let mut conns: Vec<u64> = s.members.values().map(|m| m.conn_id).collect();
        conns.push(s.creator_conn);
        conns.push(gone.conn_id);
        (conns, s.tenant_id.clone())
    };
    tell_member_left(r, &notify, session_id, member, reason);
    let left = Left {
        tenant: &tenant,
        session_id,
        by: Actor::System,
        member,
        reason,
    };
    record_left(r.sessions.db, left).await?;
    Ok(true)
}

/// The creator ends its session.
pub async fn end_by_creator(r: &Routing<'_>, creator: &str, conn_id: u64, session_id: &str) {
    let owns = r
        .auto
        .lock()
        .get(session_id)
        .is_some_and(|s| s.creator == creator && s.creator_conn == conn_id);
    if owns {
        end(
            r,
            session_id,
            EndCode::EndedByCreator,
            "the device that created the session ended it",
        )
        .await;
    }
}

/// A connection closed: sessions it created end; where it was a member, the
/// others learn it left.
pub async fn connection_closed(r: &Routing<'_>, device: &str, conn_id: u64) {
    type MemberOf = (String, String, Vec<u64>);
    let (created, member_of): (Vec<String>, Vec<MemberOf>) = {
        let mut hub = r.auto.lock();
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
                member_of.push((id.clone(), s.tenant_id.clone(), conns));
            }
        }
        (created, member_of)
    };
    for id in created {
        end(
            r,
            &id,
            EndCode::CreatorDisconnected,
            "the device that created the session disconnected",
        )
        .await;
    }
    let reason = "disconnected";
    for (id, tenant, conns) in member_of {
        let left = Left {
            tenant: &tenant,
            session_id: &id,
            by: Actor::Device(device.to_owned()),
            member: device,
            reason,
        };
        if let Err(e) = record_left(r.sessions.db, left).await {
            tracing::warn!(error = %e, "could not record a member leaving");
        }
        tell_member_left(r, &conns, &id, device, reason);
    }
}

/// Tells the connections in `notify` that `member` left `session_id` and
/// why; a full notice queue means that device is not reading and will be
/// cut off by its heartbeat timeout.
fn tell_member_left(r: &Routing<'_>, notify: &[u64], session_id: &str, member: &str, reason: &str) {
    for &c in notify {
        if let Some(q) = r.sessions.registry.notices_of_conn(c) {
            let _ = q.try_send(crate::control::queued(Body::MemberLeft(MemberLeft {
                session_id: session_id.to_owned(),
                device_id: member.to_owned(),
                reason: clip(reason),
            })));
        }
    }
}
