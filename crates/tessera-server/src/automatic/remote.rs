//! Automatic sessions whose members sit on other nodes (issue 15).
//!
//! A session is routed by the node its creator is connected to (its hub,
//! the only place that decides who may send to whom). A member connected
//! to another node is reached through that node's subject
//! (`tessera.<cluster>.node.<node>.auto`), over NATS core request/reply:
//!
//! - the hub *probes* a member's node at creation (is the agent connected
//!   there, on which connection, with which protocol), *invites* it there,
//!   and *delivers* what the member must get (handshakes and sealed
//!   payloads into its end-to-end queue, answers, departures and ends into
//!   its notice queue);
//! - the member's node forwards what the member sends for the session to
//!   the hub, naming the member and its connection (taken from the
//!   authenticated connection, never from the message), and tells the hub
//!   when that connection closes.
//!
//! Every request is answered once the receiving node queued the message,
//! and a sender sends its next message only after that answer: what one
//! connection sends reaches each receiver in order, the creator's reply
//! still precedes any member's answer (PROTOCOL.md §8.2), and a slow member
//! slows its sender (up to [`super::ROUTE_WAIT`], as on one node) and
//! nobody else (each request is handled in its own task).
//!
//! A node that has no listener on its subject (`NoResponders`), or does not
//! answer a delivery in time and whose lease lapsed, is gone: its members
//! leave with `node_lost`. NATS down: members elsewhere leave
//! with `relay_unavailable`, creating a session that needs another node
//! answers `relay_unavailable` for those members, and sessions whose
//! participants are all here go on untouched.
//!
//! Nodes trust each other (they share the database); the hub still checks
//! every forwarded message against the member's node and connection.

use std::time::Duration;

use async_nats::header::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message as _;
use tessera_core::kinds::EndCode;
use tessera_core::{ErrorCode, Timestamp};
use tessera_proto::v1::{MemberLeft, SessionEnded};
use tessera_proto::{Body, Envelope};

use super::hub::Conn;
use super::{deliver_here, Queue, Routing, ROUTE_WAIT};
use crate::cluster::REQUEST_TIMEOUT;
use crate::store::{self, StoreError};
use crate::AppState;

/// The tail of every node's subject for automatic sessions.
const TAIL: &str = "auto";

const KIND: &str = "Tessera-Auto";
const NODE: &str = "Tessera-Node";
const DEVICE: &str = "Tessera-Device";
const CONN: &str = "Tessera-Conn";
const CONNS: &str = "Tessera-Conns";
const SESSION: &str = "Tessera-Session";
const QUEUE: &str = "Tessera-Queue";

/// What one node asks another about automatic sessions.
#[derive(Clone, Debug, PartialEq)]
enum Ask {
    /// Is `device`'s agent connected to you? (Answered `<conn> <protocol>`,
    /// or empty.)
    Probe { device: String },
    /// `device`, on your connection `conn`, is invited to a session routed
    /// by `hub`.
    Invite {
        hub: String,
        device: String,
        conn: u64,
        body: Body,
    },
    /// Queue `body` for these connections of yours; `hub` routes the
    /// session.
    Deliver {
        hub: String,
        conns: Vec<u64>,
        queue: Queue,
        body: Body,
    },
    /// `device`, on connection `conn` of node `node`, sent this for a
    /// session you route.
    FromMember {
        node: String,
        device: String,
        conn: u64,
        body: Body,
    },
    /// `device`'s connection `conn` on node `node` closed.
    Gone {
        node: String,
        device: String,
        conn: u64,
        session: String,
    },
    /// A member's standing changed on the asking node: check the sessions
    /// you route again.
    Recheck,
}

/// Why a message could not be decoded (cluster-internal, so only a bug or
/// a mismatched version of a node gets one).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("automatic-session message between nodes: {0}")]
struct Malformed(&'static str);

fn queue_word(q: Queue) -> &'static str {
    match q {
        Queue::Notices => "notices",
        Queue::E2e => "e2e",
    }
}

fn body_bytes(body: &Body) -> Bytes {
    Bytes::from(Envelope::of(body.clone()).encode_to_vec())
}

impl Ask {
    fn encode(&self) -> (HeaderMap, Bytes) {
        let mut h = HeaderMap::new();
        let payload = match self {
            Ask::Probe { device } => {
                h.insert(KIND, "probe");
                h.insert(DEVICE, device.as_str());
                Bytes::new()
            }
            Ask::Invite {
                hub,
                device,
                conn,
                body,
            } => {
                h.insert(KIND, "invite");
                h.insert(NODE, hub.as_str());
                h.insert(DEVICE, device.as_str());
                h.insert(CONN, conn.to_string().as_str());
                body_bytes(body)
            }
            Ask::Deliver {
                hub,
                conns,
                queue,
                body,
            } => {
                let conns: Vec<String> = conns.iter().map(u64::to_string).collect();
                h.insert(KIND, "deliver");
                h.insert(NODE, hub.as_str());
                h.insert(CONNS, conns.join(",").as_str());
                h.insert(QUEUE, queue_word(*queue));
                body_bytes(body)
            }
            Ask::FromMember {
                node,
                device,
                conn,
                body,
            } => {
                h.insert(KIND, "member");
                h.insert(NODE, node.as_str());
                h.insert(DEVICE, device.as_str());
                h.insert(CONN, conn.to_string().as_str());
                body_bytes(body)
            }
            Ask::Gone {
                node,
                device,
                conn,
                session,
            } => {
                h.insert(KIND, "gone");
                h.insert(NODE, node.as_str());
                h.insert(DEVICE, device.as_str());
                h.insert(CONN, conn.to_string().as_str());
                h.insert(SESSION, session.as_str());
                Bytes::new()
            }
            Ask::Recheck => {
                h.insert(KIND, "recheck");
                Bytes::new()
            }
        };
        (h, payload)
    }

    fn decode(h: Option<&HeaderMap>, payload: &[u8]) -> Result<Ask, Malformed> {
        let h = h.ok_or(Malformed("no headers"))?;
        let text = |name: &'static str| {
            h.get(name)
                .map(|v| v.as_str().to_owned())
                .ok_or(Malformed(name))
        };
        let conn = || {
            text(CONN)?
                .parse::<u64>()
                .map_err(|_| Malformed("connection id"))
        };
        let body = || {
            Envelope::decode(payload)
                .ok()
                .and_then(|e| e.body)
                .ok_or(Malformed("body"))
        };
        match text(KIND)?.as_str() {
            "probe" => Ok(Ask::Probe {
                device: text(DEVICE)?,
            }),
            "invite" => Ok(Ask::Invite {
                hub: text(NODE)?,
                device: text(DEVICE)?,
                conn: conn()?,
                body: body()?,
            }),
            "deliver" => Ok(Ask::Deliver {
                hub: text(NODE)?,
                conns: text(CONNS)?
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(|c| c.parse::<u64>().map_err(|_| Malformed("connection ids")))
                    .collect::<Result<_, _>>()?,
                queue: match text(QUEUE)?.as_str() {
                    "notices" => Queue::Notices,
                    "e2e" => Queue::E2e,
                    _ => return Err(Malformed("queue")),
                },
                body: body()?,
            }),
            "member" => Ok(Ask::FromMember {
                node: text(NODE)?,
                device: text(DEVICE)?,
                conn: conn()?,
                body: body()?,
            }),
            "gone" => Ok(Ask::Gone {
                node: text(NODE)?,
                device: text(DEVICE)?,
                conn: conn()?,
                session: text(SESSION)?,
            }),
            "recheck" => Ok(Ask::Recheck),
            _ => Err(Malformed("kind")),
        }
    }
}

/// Why another node did not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unanswered {
    /// Nobody listens on its subject: it is gone.
    Lost,
    /// NATS is down (or this node routes without it).
    RelayDown,
    /// It listens but did not answer in time (its member's queue stayed
    /// full): the message is dropped, as a full queue drops it on one node.
    Slow,
}

impl Unanswered {
    /// The reason members on that node leave with, if they leave.
    fn reason(self) -> Option<&'static str> {
        match self {
            Unanswered::Lost => Some(EndCode::NodeLost.as_str()),
            Unanswered::RelayDown => Some(ErrorCode::RelayUnavailable.as_str()),
            Unanswered::Slow => None,
        }
    }
}

/// Asks `node` and waits up to `wait` for its answer. Fails fast while
/// NATS is down.
async fn ask(r: &Routing<'_>, node: &str, a: &Ask, wait: Duration) -> Result<Bytes, Unanswered> {
    let Some(client) = r.cluster.nats().filter(|_| r.cluster.nats_connected()) else {
        return Err(Unanswered::RelayDown);
    };
    let (headers, payload) = a.encode();
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(payload)
        .timeout(Some(wait));
    let subject = r.cluster.node_subject(node, TAIL);
    match client.send_request(subject, request).await {
        Ok(m) => Ok(m.payload),
        Err(e) => Err(match e.kind() {
            async_nats::RequestErrorKind::NoResponders => Unanswered::Lost,
            async_nats::RequestErrorKind::TimedOut => Unanswered::Slow,
            async_nats::RequestErrorKind::Other => Unanswered::RelayDown,
        }),
    }
}

/// How long a delivery may take: the receiving node waits up to
/// [`ROUTE_WAIT`] for room in its member's queue, then answers.
const DELIVER_WAIT: Duration = Duration::from_secs(ROUTE_WAIT.as_secs() + 3);

/// Where a named device's agent is connected, as creating a session sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reach {
    /// Connected (here, or on another node that answered).
    At {
        conn: Conn,
        protocol: u32,
    },
    /// Connected to another node that cannot be reached now.
    Unreachable,
    Offline,
}

impl Reach {
    pub(super) fn conn(&self) -> Option<Conn> {
        match self {
            Reach::At { conn, .. } => Some(conn.clone()),
            _ => None,
        }
    }

    pub(super) fn protocol(&self) -> Option<u32> {
        match self {
            Reach::At { protocol, .. } => Some(*protocol),
            _ => None,
        }
    }
}

/// Where `device`'s agent is connected: here, else the node its row names
/// (while that node's lease is live), asked.
pub(super) async fn reach(
    r: &Routing<'_>,
    device: &str,
    now: Timestamp,
) -> Result<Reach, StoreError> {
    let registry = r.sessions.registry;
    if let (Some(conn), Some(protocol)) = (registry.conn_of(device), registry.protocol_of(device)) {
        return Ok(Reach::At {
            conn: Conn::here(conn),
            protocol,
        });
    }
    if r.cluster.nats().is_none() {
        return Ok(Reach::Offline);
    }
    let Some(node) = store::nodes::of_device(r.sessions.db, device, now).await? else {
        return Ok(Reach::Offline);
    };
    if node == r.cluster.node_id() {
        return Ok(Reach::Offline);
    }
    let probe = Ask::Probe {
        device: device.to_owned(),
    };
    Ok(match ask(r, &node, &probe, REQUEST_TIMEOUT).await {
        Ok(answer) => parse_probe(&answer)
            .map(|(conn, protocol)| Reach::At {
                conn: Conn::at(&node, conn),
                protocol,
            })
            .unwrap_or(Reach::Offline),
        Err(Unanswered::Lost) => Reach::Offline,
        Err(Unanswered::RelayDown | Unanswered::Slow) => Reach::Unreachable,
    })
}

fn parse_probe(answer: &[u8]) -> Option<(u64, u32)> {
    let text = std::str::from_utf8(answer).ok()?;
    let (conn, protocol) = text.split_once(' ')?;
    Some((conn.parse().ok()?, protocol.parse().ok()?))
}

/// Invites `device` on connection `conn` of `node`. `Err`: the reason it
/// leaves with.
pub(super) async fn invite(
    r: &Routing<'_>,
    node: &str,
    device: &str,
    conn: u64,
    body: Body,
) -> Result<(), &'static str> {
    let a = Ask::Invite {
        hub: r.cluster.node_id().to_owned(),
        device: device.to_owned(),
        conn,
        body,
    };
    unanswered_reason(ask(r, node, &a, REQUEST_TIMEOUT).await)
}

fn unanswered_reason(answer: Result<Bytes, Unanswered>) -> Result<(), &'static str> {
    match answer {
        Ok(_) => Ok(()),
        Err(why) => match why.reason() {
            Some(reason) => Err(reason),
            None => {
                tracing::warn!("another node did not take an automatic-session message in time");
                Ok(())
            }
        },
    }
}

/// Queues `body` for connections `conns` of `node`. `Err`: the reason its
/// members leave with.
pub(super) async fn deliver(
    r: &Routing<'_>,
    node: &str,
    conns: &[u64],
    body: &Body,
    queue: Queue,
) -> Result<(), &'static str> {
    let a = Ask::Deliver {
        hub: r.cluster.node_id().to_owned(),
        conns: conns.to_vec(),
        queue,
        body: body.clone(),
    };
    match ask(r, node, &a, DELIVER_WAIT).await {
        // Silence from a node whose lease lapsed: it is gone, even if NATS
        // has not noticed yet.
        Err(Unanswered::Slow) if !is_live(r, node).await => Err(EndCode::NodeLost.as_str()),
        answer => unanswered_reason(answer),
    }
}

/// Whether `node`'s lease is live (taken as live if the database cannot
/// say: a member is not removed on a guess).
async fn is_live(r: &Routing<'_>, node: &str) -> bool {
    let db = r.sessions.db;
    match store::nodes::live(db, db.now()).await {
        Ok(live) => live.iter().any(|n| n.id == node),
        Err(_) => true,
    }
}

/// Forwards what `device` (connection `conn`, here) sent for a session
/// routed by `hub`. If that node is gone or cannot be reached, the member
/// is told it left the session, and why.
pub(super) async fn to_hub(r: &Routing<'_>, hub: &str, device: &str, conn: u64, body: Body) {
    let session = session_of(&body).to_owned();
    let a = Ask::FromMember {
        node: r.cluster.node_id().to_owned(),
        device: device.to_owned(),
        conn,
        body,
    };
    if let Err(reason) = unanswered_reason(ask(r, hub, &a, DELIVER_WAIT).await) {
        r.auto.left_away(&session, device);
        let left = Body::MemberLeft(MemberLeft {
            session_id: session,
            device_id: device.to_owned(),
            reason: reason.to_owned(),
        });
        deliver_here(r, conn, left, Queue::Notices).await;
    }
}

fn session_of(body: &Body) -> &str {
    match body {
        Body::AutoJoinAnswer(a) => &a.session_id,
        Body::E2eHandshake(h) => &h.session_id,
        Body::E2eData(d) => &d.session_id,
        Body::MemberLeft(m) => &m.session_id,
        Body::AutoJoinInvite(i) => &i.session_id,
        Body::SessionEnded(e) => &e.session_id,
        _ => "",
    }
}

/// Tells `hub` that `device`'s connection `conn` here closed.
pub(super) async fn gone(r: &Routing<'_>, hub: &str, device: &str, conn: u64, session: &str) {
    let a = Ask::Gone {
        node: r.cluster.node_id().to_owned(),
        device: device.to_owned(),
        conn,
        session: session.to_owned(),
    };
    // A hub that is gone took the session with it.
    let _ = ask(r, hub, &a, REQUEST_TIMEOUT).await;
}

/// A member on `node` refused its invitation: that node forgets it.
pub(super) async fn refused_away(r: &Routing<'_>, node: &str, session: &str, member: &str) {
    let left = Body::MemberLeft(MemberLeft {
        session_id: session.to_owned(),
        device_id: member.to_owned(),
        reason: "refused".to_owned(),
    });
    // Only its node's record: the member itself refused, and is not told.
    let a = Ask::Deliver {
        hub: r.cluster.node_id().to_owned(),
        conns: Vec::new(),
        queue: Queue::Notices,
        body: left,
    };
    let _ = ask(r, node, &a, REQUEST_TIMEOUT).await;
}

/// Asks every node routing a session that members here belong to to check
/// its sessions again, and waits for each.
pub(crate) async fn recheck_hubs(r: &Routing<'_>) {
    for hub in r.auto.hubs_away() {
        if let Err(why) = ask(r, &hub, &Ask::Recheck, REQUEST_TIMEOUT).await {
            tracing::debug!(node = %hub, ?why, "cannot ask another node to re-check its automatic sessions");
        }
    }
}

/// Sessions routed by a node whose lease lapsed end for their members
/// here, with `node_lost`.
pub(super) async fn forget_lost_hubs(r: &Routing<'_>, now: Timestamp) -> Result<(), StoreError> {
    let hubs = r.auto.hubs_away();
    if hubs.is_empty() {
        return Ok(());
    }
    let live = store::nodes::live(r.sessions.db, now).await?;
    for hub in hubs {
        if live.iter().any(|n| n.id == hub) {
            continue;
        }
        for (session, members) in r.auto.lost_hub(&hub) {
            for (_, conn) in members {
                let ended = Body::SessionEnded(SessionEnded {
                    session_id: session.clone(),
                    code: EndCode::NodeLost.as_str().to_owned(),
                    reason: "the node routing the session is gone".to_owned(),
                });
                deliver_here(r, conn, ended, Queue::Notices).await;
            }
        }
    }
    Ok(())
}

/// While this node cannot reach NATS, no session crosses it: members
/// here of sessions routed elsewhere are told they left, and members
/// elsewhere of sessions routed here leave (the others are told), all with
/// `relay_unavailable` — what the first message that fails to cross says,
/// said within a heartbeat even when nobody sends. Once NATS is back, new
/// sessions cross again.
pub(super) async fn cut_off(r: &Routing<'_>) {
    let reason = ErrorCode::RelayUnavailable.as_str();
    for hub in r.auto.hubs_away() {
        for (session, members) in r.auto.lost_hub(&hub) {
            for (device, conn) in members {
                let left = Body::MemberLeft(MemberLeft {
                    session_id: session.clone(),
                    device_id: device,
                    reason: reason.to_owned(),
                });
                deliver_here(r, conn, left, Queue::Notices).await;
            }
        }
    }
    // The sessions routed here, with the other nodes their members are on.
    let elsewhere: Vec<(String, Vec<String>)> = r
        .auto
        .lock()
        .iter()
        .map(|(id, s)| {
            let mut nodes: Vec<String> = s
                .members
                .values()
                .filter_map(|m| m.conn.node.clone())
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            (id.clone(), nodes)
        })
        .filter(|(_, nodes)| !nodes.is_empty())
        .collect();
    for (session, nodes) in elsewhere {
        let lost = nodes.into_iter().map(|n| (n, reason)).collect();
        super::lose(r, &session, lost).await;
    }
}

/// Answers the other nodes' requests on this node's subject until shutdown.
/// Each request is handled in its own task, so one member's full queue
/// holds up only its own sender.
pub async fn serve(state: AppState) {
    let Some(client) = state.cluster().nats().cloned() else {
        return;
    };
    let subject = state
        .cluster()
        .node_subject(state.cluster().node_id(), TAIL);
    let mut requests = match client.subscribe(subject).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for automatic sessions of other nodes");
            return;
        }
    };
    loop {
        let m = tokio::select! {
            () = state.shutdown_token().cancelled() => return,
            m = requests.next() => m,
        };
        let Some(m) = m else { return };
        let (state, client) = (state.clone(), client.clone());
        tokio::spawn(async move {
            let answer = match Ask::decode(m.headers.as_ref(), &m.payload) {
                Ok(a) => handle(&state, a).await,
                Err(e) => {
                    tracing::warn!(error = %e, "ignored a message from another node");
                    Bytes::new()
                }
            };
            if let Some(reply) = m.reply {
                let _ = client.publish(reply, answer).await;
            }
        });
    }
}

async fn handle(state: &AppState, a: Ask) -> Bytes {
    let r = Routing::of(state);
    match a {
        Ask::Probe { device } => {
            let registry = r.sessions.registry;
            match (registry.conn_of(&device), registry.protocol_of(&device)) {
                (Some(conn), Some(protocol)) => Bytes::from(format!("{conn} {protocol}")),
                _ => Bytes::new(),
            }
        }
        Ask::Invite {
            hub,
            device,
            conn,
            body,
        } => {
            r.auto.invited_away(session_of(&body), &hub, &device, conn);
            deliver_here(&r, conn, body, Queue::Notices).await;
            Bytes::new()
        }
        Ask::Deliver {
            conns, queue, body, ..
        } => {
            match &body {
                Body::SessionEnded(e) => {
                    r.auto.ended_away(&e.session_id);
                }
                Body::MemberLeft(m) => r.auto.left_away(&m.session_id, &m.device_id),
                _ => {}
            }
            for c in conns {
                deliver_here(&r, c, body.clone(), queue).await;
            }
            Bytes::new()
        }
        Ask::FromMember {
            node,
            device,
            conn,
            body,
        } => {
            let from = Conn::at(&node, conn);
            match body {
                Body::AutoJoinAnswer(a) => {
                    if let Err(e) = super::answer_from(&r, &device, &from, a).await {
                        tracing::warn!(error = %e, "cannot record an automatic join answer");
                    }
                }
                Body::E2eHandshake(h) => super::handshake_from(&r, &device, &from, h).await,
                Body::E2eData(d) => super::data_from(&r, &device, &from, d).await,
                Body::MemberLeft(m) => {
                    super::remove_member_from(
                        &r,
                        &device,
                        &from,
                        &m.session_id,
                        &m.device_id,
                        &m.reason,
                    )
                    .await
                }
                _ => tracing::warn!("ignored an unexpected message forwarded by another node"),
            }
            Bytes::new()
        }
        Ask::Gone {
            node,
            device,
            conn,
            session,
        } => {
            super::member_disconnected(&r, &device, &Conn::at(&node, conn), Some(&session)).await;
            Bytes::new()
        }
        Ask::Recheck => {
            if let Err(e) = super::recheck(state).await {
                tracing::warn!(error = %e, "cannot re-check automatic sessions");
            }
            Bytes::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::v1::E2eData;

    fn data() -> Body {
        Body::E2eData(E2eData {
            session_id: "s".into(),
            sender: 3,
            counter: 9,
            ciphertext: Bytes::from_static(&[1, 2, 3]),
            ..Default::default()
        })
    }

    #[test]
    fn every_request_between_nodes_decodes_to_what_was_sent() {
        let asks = [
            Ask::Probe { device: "D".into() },
            Ask::Invite {
                hub: "n1".into(),
                device: "D".into(),
                conn: 7,
                body: data(),
            },
            Ask::Deliver {
                hub: "n1".into(),
                conns: vec![7, 8],
                queue: Queue::E2e,
                body: data(),
            },
            Ask::Deliver {
                hub: "n1".into(),
                conns: vec![],
                queue: Queue::Notices,
                body: data(),
            },
            Ask::FromMember {
                node: "n2".into(),
                device: "D".into(),
                conn: 7,
                body: data(),
            },
            Ask::Gone {
                node: "n2".into(),
                device: "D".into(),
                conn: 7,
                session: "s".into(),
            },
            Ask::Recheck,
        ];
        for a in asks {
            let (h, payload) = a.encode();
            assert_eq!(Ask::decode(Some(&h), &payload), Ok(a));
        }
    }

    #[test]
    fn a_malformed_request_is_named_not_acted_on() {
        assert_eq!(Ask::decode(None, b""), Err(Malformed("no headers")));
        let mut h = HeaderMap::new();
        h.insert(KIND, "teleport");
        assert_eq!(Ask::decode(Some(&h), b""), Err(Malformed("kind")));
        let (mut h, _) = Ask::FromMember {
            node: "n2".into(),
            device: "D".into(),
            conn: 7,
            body: data(),
        }
        .encode();
        assert_eq!(Ask::decode(Some(&h), b"\xff\xff"), Err(Malformed("body")));
        h.insert(CONN, "seven");
        assert_eq!(Ask::decode(Some(&h), b""), Err(Malformed("connection id")));
    }

    #[test]
    fn a_probe_answer_names_a_connection_and_a_protocol_or_nothing() {
        assert_eq!(parse_probe(b"12 4"), Some((12, 4)));
        assert_eq!(parse_probe(b""), None);
        assert_eq!(parse_probe(b"12"), None);
        assert_eq!(parse_probe(b"x 4"), None);
    }

    #[test]
    fn only_a_node_that_is_gone_or_out_of_reach_costs_members() {
        assert_eq!(Unanswered::Lost.reason(), Some("node_lost"));
        assert_eq!(Unanswered::RelayDown.reason(), Some("relay_unavailable"));
        assert_eq!(Unanswered::Slow.reason(), None);
    }
}
