//! Automatic sessions between devices that trust each other.
//!
//! The creator names devices; the server checks each one ([`decide`]) and
//! answers per member with a machine-readable outcome. Members that pass are
//! invited; each re-checks locally (its own pin of the creator's key, its
//! own grant) and joins or refuses, and a refusal is recorded like any
//! other outcome. The server then only routes: Noise handshakes between the
//! creator and each member, and sealed payloads between members. It holds
//! no session key and cannot read or undetectably change what it routes.
//!
//! A session is routed by the node its creator is connected to; members
//! connected to other nodes are reached through those nodes over NATS
//! (`remote`).

mod create;
pub mod decide;
mod hub;
mod recheck;
pub mod remote;

use crate::store::trust::MemberAnswer;
use tessera_core::kinds::EndCode;
use tessera_proto::v1::{AutoJoinAnswer, E2eData, E2eHandshake, MemberLeft, SessionEnded};
use tessera_proto::Body;

pub use self::create::{create, Creation, Invites};
pub use self::decide::{decide, Facts};
use self::hub::{Auto, Conn, MemberState};
pub use self::hub::{AutoHub, RelayTap};
pub use self::recheck::{recheck, standing_changed};
use crate::cluster::Cluster;
use crate::session::Sessions;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, Db, StoreError};
use crate::AppState;

/// What routing automatic sessions touches: the sessions this node routes,
/// the sessions' rows and relay, the other nodes, and the test tap if one
/// is set.
#[derive(Clone)]
pub struct Routing<'a> {
    pub auto: &'a AutoHub,
    pub sessions: Sessions<'a>,
    pub cluster: &'a Cluster,
    pub tap: Option<RelayTap>,
}

impl<'a> Routing<'a> {
    pub fn of(state: &'a AppState) -> Routing<'a> {
        Routing {
            auto: state.auto(),
            sessions: Sessions::of(state),
            cluster: state.cluster(),
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
    if let Some(hub) = r.auto.hub_of(&a.session_id, member, conn_id) {
        remote::to_hub(r, &hub, member, conn_id, Body::AutoJoinAnswer(a)).await;
        return Ok(());
    }
    answer_from(r, member, &Conn::here(conn_id), a).await
}

/// A member's answer, from its connection here or on another node.
async fn answer_from(
    r: &Routing<'_>,
    member: &str,
    conn: &Conn,
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
            .filter(|m| m.conn == *conn && m.state == MemberState::Invited)
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
    if !a.accept {
        if let Some(node) = &conn.node {
            remote::refused_away(r, node, &a.session_id, member).await;
        }
    }
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
    let body = Body::AutoJoinAnswer(AutoJoinAnswer {
        session_id: a.session_id,
        accept: a.accept,
        reason,
        device_id: member.to_owned(),
    });
    deliver_here(r, creator_conn, body, Queue::Notices).await;
    Ok(())
}

/// A device-supplied name or reason as it may be stored and shown.
pub(crate) fn clip(s: &str) -> String {
    tessera_core::text::printable(s, 64)
}

/// How long a sender waits for room in a receiver's queue before the
/// receiver is treated as gone.
const ROUTE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which of a connection's queues a message goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Queue {
    /// Invitations, answers, departures and ends: never waited for (a
    /// full notice queue means the device is not reading at all, and its
    /// heartbeat timeout cuts it off).
    Notices,
    /// Handshakes and sealed payloads: the sender waits up to
    /// [`ROUTE_WAIT`] for room, so a slow member slows its sender and
    /// nobody else.
    E2e,
}

/// Queues `body` for connection `conn` of this node.
pub(super) async fn deliver_here(r: &Routing<'_>, conn: u64, body: Body, queue: Queue) {
    match queue {
        Queue::Notices => {
            if let Some(q) = r.sessions.registry.notices_of_conn(conn) {
                let _ = q.try_send(crate::control::queued(body));
            }
        }
        Queue::E2e => {
            if let Some(q) = r.sessions.registry.e2e_of_conn(conn) {
                let _ = q
                    .send_timeout(crate::control::queued(body), ROUTE_WAIT)
                    .await;
            }
        }
    }
}

/// A node that could not be reached, and the reason its members leave
/// with (`node_lost` or `relay_unavailable`).
type Lost = Vec<(String, &'static str)>;

/// Queues `body` for each of `conns`: here directly, on another node
/// through that node (one request per node, answered once its queues took
/// it). Returns the nodes that could not be reached.
async fn deliver(r: &Routing<'_>, conns: &[Conn], body: &Body, queue: Queue) -> Lost {
    let mut elsewhere: Vec<(&str, Vec<u64>)> = Vec::new();
    for c in conns {
        match &c.node {
            None => deliver_here(r, c.id, body.clone(), queue).await,
            Some(node) => match elsewhere.iter_mut().find(|(n, _)| n == node) {
                Some((_, ids)) => ids.push(c.id),
                None => elsewhere.push((node, vec![c.id])),
            },
        }
    }
    let mut lost = Vec::new();
    for (node, ids) in elsewhere {
        if let Err(why) = remote::deliver(r, node, &ids, body, queue).await {
            lost.push((node.to_owned(), why));
        }
    }
    lost
}

/// Members on nodes that could not be reached leave `session_id` with the
/// reason (audited, actor `system`); the others are told. A node that
/// cannot be reached while they are told is left to the next message.
async fn lose(r: &Routing<'_>, session_id: &str, lost: Lost) {
    for (node, why) in lost {
        let (gone, notify, tenant) = {
            let mut hub = r.auto.lock();
            let Some(s) = hub.get_mut(session_id) else {
                return;
            };
            let gone: Vec<String> = s
                .members
                .iter()
                .filter(|(_, m)| m.conn.node.as_deref() == Some(node.as_str()))
                .map(|(d, _)| d.clone())
                .collect();
            for d in &gone {
                s.members.remove(d);
            }
            (gone, s.conns(), s.tenant_id.clone())
        };
        for member in gone {
            tracing::warn!(session = session_id, node = %node, reason = why, "an automatic session lost a member on another node");
            let left = Left {
                tenant: &tenant,
                session_id,
                by: Actor::System,
                member: &member,
                reason: why,
            };
            if let Err(e) = record_left(r.sessions.db, left).await {
                tracing::warn!(error = %e, "could not record a member leaving");
            }
            let _ = deliver(
                r,
                &notify,
                &member_left(session_id, &member, why),
                Queue::Notices,
            )
            .await;
        }
    }
}

/// Routes a Noise handshake message to its addressee; the sender is named
/// by the server, never by the message.
pub async fn handshake(r: &Routing<'_>, from: &str, conn_id: u64, h: E2eHandshake) {
    if let Some(hub) = r.auto.hub_of(&h.session_id, from, conn_id) {
        remote::to_hub(r, &hub, from, conn_id, Body::E2eHandshake(h)).await;
        return;
    }
    handshake_from(r, from, &Conn::here(conn_id), h).await;
}

async fn handshake_from(r: &Routing<'_>, from: &str, conn: &Conn, mut h: E2eHandshake) {
    let Some(target) = r.auto.route(&h.session_id, from, conn, &h.to) else {
        return;
    };
    h.from = from.to_owned();
    let session_id = h.session_id.clone();
    let mut body = Body::E2eHandshake(h);
    if let Some(tap) = r.tap.clone() {
        tap(&mut body);
    }
    let lost = deliver(r, &[target], &body, Queue::E2e).await;
    lose(r, &session_id, lost).await;
}

/// Routes a sealed payload to the other participants (or one of them).
pub async fn data(r: &Routing<'_>, from: &str, conn_id: u64, d: E2eData) {
    if let Some(hub) = r.auto.hub_of(&d.session_id, from, conn_id) {
        remote::to_hub(r, &hub, from, conn_id, Body::E2eData(d)).await;
        return;
    }
    data_from(r, from, &Conn::here(conn_id), d).await;
}

async fn data_from(r: &Routing<'_>, from: &str, conn: &Conn, mut d: E2eData) {
    let Some((index, targets)) = r.auto.fan_out(&d.session_id, from, conn, &d.to) else {
        return;
    };
    // The sender's index is the server's to say: a member cannot pose as
    // another within the session's nonce space.
    d.sender = index;
    let session_id = d.session_id.clone();
    let mut body = Body::E2eData(d);
    if let Some(tap) = r.tap.clone() {
        tap(&mut body);
        if !matches!(body, Body::E2eData(_)) {
            return;
        }
    }
    let lost = deliver(r, &targets, &body, Queue::E2e).await;
    lose(r, &session_id, lost).await;
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
    if let Some(hub) = r.auto.hub_of(session_id, from, conn_id) {
        let left = Body::MemberLeft(MemberLeft {
            session_id: session_id.to_owned(),
            device_id: member.to_owned(),
            reason: reason.to_owned(),
        });
        remote::to_hub(r, &hub, from, conn_id, left).await;
        return;
    }
    remove_member_from(r, from, &Conn::here(conn_id), session_id, member, reason).await;
}

async fn remove_member_from(
    r: &Routing<'_>,
    from: &str,
    conn: &Conn,
    session_id: &str,
    member: &str,
    reason: &str,
) {
    let (notify, tenant) = {
        let mut hub = r.auto.lock();
        let allowed = |s: &Auto| {
            (s.creator == from && Conn::here(s.creator_conn) == *conn)
                || (from == member && s.members.get(member).is_some_and(|m| m.conn == *conn))
        };
        let Some(s) = hub.get_mut(session_id).filter(|s| allowed(s)) else {
            return;
        };
        let Some(gone) = s.members.remove(member) else {
            return;
        };
        let mut conns = s.conns();
        conns.push(gone.conn);
        (conns, s.tenant_id.clone())
    };
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
    tell_member_left(r, &notify, session_id, member, reason).await;
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
    tell_ended(r, session_id, &s, code.as_str(), reason).await;
}

/// A session whose row was ended elsewhere (by an operator through the
/// API, by the sweep, or on another node): routing for it stops here at
/// once and every participant is told why. The row and its audit entry are
/// the caller's; `false` if this node routed no such session.
pub async fn stop(r: &Routing<'_>, session_id: &str, code: &str, reason: &str) -> bool {
    let Some(s) = r.auto.lock().remove(session_id) else {
        return false;
    };
    tell_ended(r, session_id, &s, code, reason).await;
    true
}

/// Tells every participant the session ended; members on other nodes are
/// told through their nodes, which forget it (one that cannot be reached
/// learns it from its own sweep, or when its member next sends).
async fn tell_ended(r: &Routing<'_>, session_id: &str, s: &Auto, code: &str, reason: &str) {
    let body = Body::SessionEnded(SessionEnded {
        session_id: session_id.to_owned(),
        code: code.to_owned(),
        reason: reason.to_owned(),
    });
    let _ = deliver(r, &s.conns(), &body, Queue::Notices).await;
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
        let mut conns = s.conns();
        conns.push(gone.conn);
        (conns, s.tenant_id.clone())
    };
    tell_member_left(r, &notify, session_id, member, reason).await;
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

/// A connection closed: sessions it created end; where it was a member,
/// the others learn it left (the node routing a session elsewhere is told).
pub async fn connection_closed(r: &Routing<'_>, device: &str, conn_id: u64) {
    let created: Vec<String> = r
        .auto
        .lock()
        .iter()
        .filter(|(_, s)| s.creator_conn == conn_id)
        .map(|(id, _)| id.clone())
        .collect();
    for id in created {
        end(
            r,
            &id,
            EndCode::CreatorDisconnected,
            "the device that created the session disconnected",
        )
        .await;
    }
    member_disconnected(r, device, &Conn::here(conn_id), None).await;
    for (session, hub) in r.auto.closed_away(device, conn_id) {
        remote::gone(r, &hub, device, conn_id, &session).await;
    }
}

/// `device`'s connection `conn` closed: it leaves the sessions routed here
/// that it was a member of (only `only`, if named), audited, and the
/// others are told.
async fn member_disconnected(r: &Routing<'_>, device: &str, conn: &Conn, only: Option<&str>) {
    type MemberOf = (String, String, Vec<Conn>);
    let member_of: Vec<MemberOf> = {
        let mut hub = r.auto.lock();
        let mut member_of = Vec::new();
        for (id, s) in hub.iter_mut() {
            if only.is_some_and(|o| o != id) {
                continue;
            }
            if s.members.get(device).is_some_and(|m| m.conn == *conn) {
                s.members.remove(device);
                member_of.push((id.clone(), s.tenant_id.clone(), s.conns()));
            }
        }
        member_of
    };
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
        tell_member_left(r, &conns, &id, device, reason).await;
    }
}

fn member_left(session_id: &str, member: &str, reason: &str) -> Body {
    Body::MemberLeft(MemberLeft {
        session_id: session_id.to_owned(),
        device_id: member.to_owned(),
        reason: clip(reason),
    })
}

/// Tells the connections in `notify` that `member` left `session_id` and
/// why; a full notice queue means that device is not reading and will be
/// cut off by its heartbeat timeout. Members on a node that cannot be
/// reached leave too.
async fn tell_member_left(
    r: &Routing<'_>,
    notify: &[Conn],
    session_id: &str,
    member: &str,
    reason: &str,
) {
    let lost = deliver(
        r,
        notify,
        &member_left(session_id, member, reason),
        Queue::Notices,
    )
    .await;
    lose(r, session_id, lost).await;
}
