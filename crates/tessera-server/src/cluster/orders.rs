//! Control orders between the nodes of a cluster, over NATS.
//!
//! A change made through one node often must be acted on by another: the
//! node holding a revoked device's connection cuts it, the node relaying an
//! ended session tells its viewers and device, every node re-checks its
//! viewers when a user changes or a login ends, the node holding an older
//! agent connection of a device that connected elsewhere lets it go, and
//! every node shares the rate-limit budget with the others. Each such
//! change is published once, as a typed [`Order`] (serde JSON) on
//! `cluster.subject("orders")`; every node subscribes, skips its own
//! orders (it acted on them already) and acts on what concerns it.
//!
//! Orders are fire-and-forget (NATS core): an order lost while NATS is
//! down is caught by the database sweeps every heartbeat, which stay as
//! the fallback. The one thing that must be answered — starting a
//! session's relay on the node holding its device — is a request/reply on
//! that node's own subject (`node_subject(node, "start")`): no responder,
//! a timeout or NATS down fail fast with `relay_unavailable`.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tessera_core::kinds::EndCode;
use tessera_core::roles::Role;
use tessera_core::ErrorCode;

use super::Cluster;
use crate::relay::Kick;
use crate::session::{SessionError, Sessions};
use crate::store::sessions::SessionRow;
use crate::store::{self, StoreError};
use crate::AppState;

/// What one node tells the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum Order {
    /// Cut every connection of this device (`device_revoked`).
    DeviceRevoked { device_id: String, reason: String },
    /// Cut the connections authenticated with this key (`key_revoked`).
    KeyRevoked { key_id: String, reason: String },
    /// The session's row has ended: whoever relays it ends its relay, and
    /// whoever holds its device tells the device.
    SessionEnded {
        session_id: String,
        device_id: String,
        code: EndCode,
        reason: String,
    },
    /// Viewers of this user re-checked against its new role or disabling.
    UserChanged {
        user_id: String,
        role: Role,
        disabled: bool,
    },
    /// A login ended (logout): its viewers go.
    LoginEnded { login_id: String },
    /// The device's agent connected to the sending node; an older agent
    /// connection of it elsewhere is replaced.
    AgentConnected { device_id: String },
    /// A node joined or left: the live nodes are counted again (the rate
    /// limits share their budgets among them).
    NodesChanged,
}

/// An order with the node that sent it.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    order: Order,
}

/// Publishes `order` to the other nodes. Best effort: without NATS (one
/// node, or NATS down) nothing is sent and the sweeps catch up within a
/// heartbeat, so a failure is logged, never returned.
pub async fn publish(cluster: &Cluster, order: Order) {
    let Some(nats) = cluster.nats() else {
        return;
    };
    let envelope = Envelope {
        from: cluster.node_id().to_owned(),
        order,
    };
    let payload = match serde_json::to_vec(&envelope) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a control order");
            return;
        }
    };
    if let Err(e) = nats
        .publish(cluster.subject("orders"), payload.into())
        .await
    {
        tracing::warn!(error = %e, "cannot publish a control order; the sweeps catch up");
    }
}

/// Whether an order from `from` is for this node to act on: every node's
/// but its own (the sender acted on it before publishing).
pub fn concerns(me: &str, from: &str) -> bool {
    me != from
}

/// Whether this node's agent connection of a device must give way, given
/// the node the database names as holding the device's newest agent
/// connection: the last connection to record itself wins, so an order
/// that arrives after this node's own, newer connection changes nothing.
pub fn gives_way(me: &str, newest_holder: Option<&str>) -> bool {
    newest_holder.is_some_and(|holder| holder != me)
}

/// Acts on an order from another node.
async fn apply(state: &AppState, order: Order) {
    match order {
        Order::DeviceRevoked { device_id, reason } => {
            state
                .registry()
                .revoke_device(&device_id, ErrorCode::DeviceRevoked, &reason);
        }
        Order::KeyRevoked { key_id, reason } => {
            state
                .registry()
                .revoke_key(&key_id, ErrorCode::KeyRevoked, &reason);
        }
        Order::SessionEnded {
            session_id,
            device_id,
            code,
            reason,
        } => {
            Sessions::of(state).finish(&device_id, &session_id, code, &reason);
            // An automatic session routed here (its creator is connected to
            // this node) stops now and its members are told, rather than
            // at this node's next session sweep.
            let routing = crate::automatic::Routing::of(state);
            crate::automatic::stop(&routing, &session_id, code.as_str(), &reason).await;
        }
        Order::UserChanged {
            user_id,
            role,
            disabled,
        } => crate::relay::user_changed(state.hub(), &user_id, role, disabled),
        Order::LoginEnded { login_id } => login_ended_here(state, &login_id),
        Order::AgentConnected { device_id } => {
            if !state.registry().is_connected(&device_id) {
                return;
            }
            match store::nodes::of_device(state.db(), &device_id, state.now()).await {
                Ok(holder) if gives_way(state.cluster().node_id(), holder.as_deref()) => {
                    state.registry().replace_agent(&device_id);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check a takeover elsewhere"),
            }
        }
        Order::NodesChanged => count_nodes(state).await,
    }
}

/// Viewers of an ended login are cut off on this node.
fn login_ended_here(state: &AppState, login_id: &str) {
    for s in state.hub().all() {
        s.kick_logins(Kick::LoggedOut, |l| l == login_id);
    }
}

/// A login ended (logout): its viewers go on this node now, and on the
/// others as soon as they hear.
pub async fn login_ended(state: &AppState, login_id: &str) {
    login_ended_here(state, login_id);
    publish(
        state.cluster(),
        Order::LoginEnded {
            login_id: login_id.to_owned(),
        },
    )
    .await;
}

/// Counts the live nodes, shares the rate limits among them, and shows
/// the count (and whether NATS is up) in the cluster metrics.
pub async fn count_nodes(state: &AppState) {
    match store::nodes::live(state.db(), state.now()).await {
        Ok(live) => {
            state.limiters().share_among(live.len());
            state
                .metrics()
                .cluster(state.cluster().nats_connected(), live.len());
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the live nodes"),
    }
}

/// Listens for orders and start requests until shutdown (spawned by
/// `Server::serve`). A node without NATS only counts its peers, once.
pub async fn serve(state: AppState) {
    let cluster = state.cluster().clone();
    let Some(nats) = cluster.nats() else {
        count_nodes(&state).await;
        return;
    };
    let orders = nats.subscribe(cluster.subject("orders")).await;
    let starts = nats
        .subscribe(cluster.node_subject(cluster.node_id(), "start"))
        .await;
    let (mut orders, mut starts) = match (orders, starts) {
        (Ok(o), Ok(s)) => (o, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot subscribe to control orders; the sweeps stand in");
            return;
        }
    };
    // Subscribed before announcing: the others recount and so do we.
    publish(&cluster, Order::NodesChanged).await;
    count_nodes(&state).await;
    loop {
        tokio::select! {
            () = state.shutdown_token().cancelled() => break,
            message = orders.next() => {
                let Some(message) = message else { break };
                match serde_json::from_slice::<Envelope>(&message.payload) {
                    Ok(e) if concerns(cluster.node_id(), &e.from) => {
                        // Each order is acted on in its own task, so one that
                        // waits on the database does not hold up the rest.
                        let state = state.clone();
                        tokio::spawn(async move { apply(&state, e.order).await });
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "an unreadable control order ignored"),
                }
            }
            message = starts.next() => {
                let Some(message) = message else { break };
                let state = state.clone();
                tokio::spawn(async move { answer_start(&state, message).await });
            }
        }
    }
    // Gone at once for the rate limits of the others (the lease is given
    // back by `Server::serve` before it returns).
    let _ = orders.unsubscribe().await;
    let _ = starts.unsubscribe().await;
}

/// What to start on the node holding the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// An active session: open the relay and the device's channel.
    Relay,
    /// A session waiting for consent: ask the device.
    Consent,
}

#[derive(Debug, Serialize, Deserialize)]
struct StartRequest {
    session_id: String,
    start: Start,
}

/// Why the node holding the device could not start a session, on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StartReply {
    Started,
    NotActive,
    EndedMeanwhile,
    DeviceOffline,
    DeviceUnresponsive,
    ChannelUnsupported,
    Failed,
}

impl StartReply {
    fn of(result: &Result<(), SessionError>) -> Self {
        match result {
            Ok(()) => StartReply::Started,
            Err(SessionError::NotActive) => StartReply::NotActive,
            Err(SessionError::EndedMeanwhile) => StartReply::EndedMeanwhile,
            Err(SessionError::DeviceOffline) => StartReply::DeviceOffline,
            Err(SessionError::DeviceUnresponsive) => StartReply::DeviceUnresponsive,
            Err(SessionError::ChannelUnsupported) => StartReply::ChannelUnsupported,
            Err(SessionError::RelayUnavailable | SessionError::Store(_)) => StartReply::Failed,
        }
    }

    fn result(self) -> Result<(), SessionError> {
        match self {
            StartReply::Started => Ok(()),
            StartReply::NotActive => Err(SessionError::NotActive),
            StartReply::EndedMeanwhile => Err(SessionError::EndedMeanwhile),
            StartReply::DeviceOffline => Err(SessionError::DeviceOffline),
            StartReply::DeviceUnresponsive => Err(SessionError::DeviceUnresponsive),
            StartReply::ChannelUnsupported => Err(SessionError::ChannelUnsupported),
            StartReply::Failed => Err(SessionError::RelayUnavailable),
        }
    }
}

/// Where a device's agent connection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    Here,
    Node(String),
    Nobody,
}

/// Where the device's agent connection is: here, on another live node
/// (only when this node routes through NATS), or nowhere.
pub async fn holder(state: &AppState, device_id: &str) -> Result<Holder, StoreError> {
    if state.registry().is_connected(device_id) {
        return Ok(Holder::Here);
    }
    if state.cluster().nats().is_none() {
        return Ok(Holder::Nobody);
    }
    Ok(
        match store::nodes::of_device(state.db(), device_id, state.now()).await? {
            Some(node) if node != state.cluster().node_id() => Holder::Node(node),
            _ => Holder::Nobody,
        },
    )
}

/// Starts a session's relay (or asks for its consent) on the node holding
/// its device: here, or through a request to that node. A node that cannot
/// be asked (NATS down, no answer) leaves nothing half-done: the session
/// ends `node_lost`, audited, and the caller hears `relay_unavailable`.
pub async fn start(state: &AppState, row: &SessionRow, start: Start) -> Result<(), SessionError> {
    let node = match holder(state, &row.device_id).await? {
        Holder::Node(node) => node,
        Holder::Here | Holder::Nobody => return start_here(state, row, start).await,
    };
    let asked = ask_start(state, &node, row, start).await;
    if matches!(asked, Err(SessionError::RelayUnavailable)) {
        crate::session::end(
            state,
            row.id.as_str(),
            EndCode::NodeLost,
            "the node holding the device cannot be reached",
            store::audit::Actor::System,
        )
        .await?;
    }
    asked
}

async fn start_here(state: &AppState, row: &SessionRow, start: Start) -> Result<(), SessionError> {
    match start {
        Start::Relay => crate::session::start_relay(state, row).await,
        Start::Consent => {
            crate::session::request_consent(state, row);
            Ok(())
        }
    }
}

async fn ask_start(
    state: &AppState,
    node: &str,
    row: &SessionRow,
    start: Start,
) -> Result<(), SessionError> {
    let cluster = state.cluster();
    let Some(nats) = cluster.nats() else {
        return Err(SessionError::RelayUnavailable);
    };
    if !cluster.nats_connected() {
        return Err(SessionError::RelayUnavailable);
    }
    let request = StartRequest {
        session_id: row.id.to_string(),
        start,
    };
    let payload = serde_json::to_vec(&request).map_err(|_| SessionError::RelayUnavailable)?;
    let answer = nats
        .request(cluster.node_subject(node, "start"), payload.into())
        .await
        .map_err(|e| {
            tracing::warn!(node, error = %e, "cannot ask the device's node to start a session");
            SessionError::RelayUnavailable
        })?;
    serde_json::from_slice::<StartReply>(&answer.payload)
        .map_err(|_| SessionError::RelayUnavailable)?
        .result()
}

/// Answers another node's request to start a session here.
async fn answer_start(state: &AppState, message: async_nats::Message) {
    let Some(reply) = message.reply else {
        return;
    };
    let outcome = match serde_json::from_slice::<StartRequest>(&message.payload) {
        Ok(request) => start_requested(state, &request).await,
        Err(_) => Err(SessionError::NotActive),
    };
    let Ok(payload) = serde_json::to_vec(&StartReply::of(&outcome)) else {
        return;
    };
    if let Some(nats) = state.cluster().nats() {
        if let Err(e) = nats.publish(reply, payload.into()).await {
            tracing::warn!(error = %e, "cannot answer a start request");
        }
    }
}

async fn start_requested(state: &AppState, request: &StartRequest) -> Result<(), SessionError> {
    let Some(row) =
        store::sessions::by_id_any_tenant(state.db().pool(), &request.session_id).await?
    else {
        return Err(SessionError::NotActive);
    };
    start_here(state, &row, request.start).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_skips_its_own_orders() {
        assert!(!concerns("a", "a"));
        assert!(concerns("a", "b"));
    }

    #[test]
    fn the_newest_agent_connection_wins_a_takeover() {
        // The device's newest connection is on b: a's gives way.
        assert!(gives_way("a", Some("b")));
        // a's own connection is the newest (it recorded itself after b's).
        assert!(!gives_way("a", Some("a")));
        // Nobody live holds it: nothing to compare, nothing replaced.
        assert!(!gives_way("a", None));
    }

    #[test]
    fn orders_read_back_as_sent() {
        let orders = [
            Order::DeviceRevoked {
                device_id: "D".into(),
                reason: "lost".into(),
            },
            Order::KeyRevoked {
                key_id: "k".into(),
                reason: String::new(),
            },
            Order::SessionEnded {
                session_id: "s".into(),
                device_id: "D".into(),
                code: EndCode::EndedByOperator,
                reason: "done".into(),
            },
            Order::UserChanged {
                user_id: "u".into(),
                role: Role::Viewer,
                disabled: false,
            },
            Order::LoginEnded {
                login_id: "l".into(),
            },
            Order::AgentConnected {
                device_id: "D".into(),
            },
            Order::NodesChanged,
        ];
        for order in orders {
            let sent = Envelope {
                from: "n".into(),
                order: order.clone(),
            };
            let back: Envelope =
                serde_json::from_slice(&serde_json::to_vec(&sent).unwrap()).unwrap();
            assert_eq!((back.from.as_str(), back.order), ("n", order));
        }
    }

    #[test]
    fn an_order_from_a_newer_node_that_this_one_does_not_know_is_refused() {
        let unknown = br#"{"from":"n","order":"reboot_everything"}"#;
        assert!(serde_json::from_slice::<Envelope>(unknown).is_err());
    }

    #[test]
    fn every_start_outcome_crosses_the_wire_intact() {
        for reply in [
            StartReply::Started,
            StartReply::NotActive,
            StartReply::EndedMeanwhile,
            StartReply::DeviceOffline,
            StartReply::DeviceUnresponsive,
            StartReply::ChannelUnsupported,
        ] {
            let back = StartReply::of(&reply.result());
            assert_eq!(back, reply);
        }
        assert!(matches!(
            StartReply::Failed.result(),
            Err(SessionError::RelayUnavailable)
        ));
    }
}
