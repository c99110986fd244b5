//! Device control channels: who is connected to this node, and how to reach
//! them.
//!
//! Each connected device has one entry, holding the key it authenticated
//! with and a small order box for its connection task. A revocation
//! made on this node reaches the connection at once through [`Registry`];
//! one made on another node arrives as a control order over NATS
//! (`crate::cluster::orders`), and, should that be lost, is found by the
//! presence sweep, which runs once per heartbeat interval, so a revoked
//! device is cut off within one heartbeat everywhere.

pub mod connection;
pub mod queue;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tessera_core::ErrorCode;
use tessera_proto::Envelope;
use tokio::sync::Notify;

pub use self::queue::{Inbox, Outbox, QueueError};
use crate::store;

/// A message waiting in a connection's queue. Boxed: a queue allocates its
/// first block of slots up front, and an idle connection should cost little.
pub type Queued = Box<Envelope>;

/// Queues `body` as an envelope.
pub fn queued(body: tessera_proto::Body) -> Queued {
    Box::new(Envelope::of(body))
}

/// What the node asks a connection task to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlCommand {
    /// The device, or the key this connection authenticated with, is revoked.
    /// Boxed so that every idle connection's loop, which has room for an
    /// order it is acting on, stays small.
    Revoke(Box<Revocation>),
    /// A newer connection of the same device took over.
    Replaced,
    /// The device rotated its identity key: it reconnects to prove the new
    /// one.
    IdentityRotated,
}

/// Why a connection is cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub key_id: String,
    /// `device_revoked` or `key_revoked`.
    pub code: ErrorCode,
    pub reason: String,
}

struct Entry {
    device_id: String,
    key_id: String,
    /// `role::AGENT` or `role::CLIENT`.
    role: u32,
    /// The protocol version the connection speaks.
    protocol: u32,
    orders: Arc<Orders>,
    /// Server notices for the device (channel opens, consent requests,
    /// session ends, invitations): never crowded out by other traffic.
    notices: Outbox,
    /// Viewer input for the device.
    input: Outbox,
    /// End-to-end session traffic for the device.
    e2e: Outbox,
}

/// What one registration hands its connection task.
pub struct Registration {
    pub conn_id: u64,
    pub orders: Arc<Orders>,
    pub notices: Inbox,
    pub input: Inbox,
    pub e2e: Inbox,
}

#[derive(Default)]
struct Connections {
    by_conn: HashMap<u64, Entry>,
    /// Each device's agent connection.
    agent_of: HashMap<String, u64>,
    /// Connections each device holds or is opening (from before the
    /// upgrade to the end of the connection's cleanup).
    slots: HashMap<String, usize>,
}

/// The device connections on this node: at most one agent connection per
/// device (a newer one replaces it), and up to a configured number of
/// connections of any role per device (see [`Registry::reserve`]).
#[derive(Default)]
pub struct Registry {
    conns: Mutex<Connections>,
    next_id: AtomicU64,
}

/// Orders per connection that may wait; a connection that falls this far
/// behind is being torn down anyway, so further orders are dropped.
const ORDER_QUEUE: usize = 8;

/// The orders waiting for one connection task.
///
/// Orders are rare (every one but a stale revocation ends the connection),
/// so this is a short list and a wake-up rather than a channel: a tokio
/// channel allocates its first block of slots and two cache-padded halves
/// up front, about 0.8 KiB that every idle device would carry.
#[derive(Debug, Default)]
pub struct Orders {
    queue: Mutex<VecDeque<ControlCommand>>,
    wake: Notify,
}

impl Orders {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ControlCommand>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an order (dropped if the connection has [`ORDER_QUEUE`]
    /// waiting) and wakes the connection task.
    fn post(&self, order: ControlCommand) {
        {
            let mut q = self.lock();
            if q.len() >= ORDER_QUEUE {
                return;
            }
            q.push_back(order);
        }
        // Stores a permit if the task is not waiting, so an order posted
        // between its check and its wait still wakes it.
        self.wake.notify_one();
    }

    /// The oldest waiting order, without waiting.
    fn take(&self) -> Option<ControlCommand> {
        self.lock().pop_front()
    }

    /// The next order. Cancel-safe: an order is only taken off the list
    /// in the same poll that returns it.
    pub async fn next(&self) -> ControlCommand {
        loop {
            if let Some(order) = self.take() {
                return order;
            }
            self.wake.notified().await;
        }
    }
}
/// Viewer input waiting for the device's socket. Input waits a little for
/// room (holding back only its viewer), then is dropped and counted.
pub const INPUT_QUEUE: usize = 256;
/// Bytes of viewer input waiting: viewer frames are at most 64 KiB, so
/// this is a few seconds of paste at the input rate limit.
pub const INPUT_QUEUE_BYTES: usize = 1 << 20;
/// Server notices waiting for the device's socket. Few and small; the
/// device reads them before any input.
pub const NOTICE_QUEUE: usize = 64;
/// Bytes of notices waiting (a notice is well under 1 KiB).
pub const NOTICE_QUEUE_BYTES: usize = 256 << 10;
/// End-to-end messages waiting for the device's socket; a sender waits for
/// room, which pushes back on it through its own socket.
pub const E2E_QUEUE: usize = 64;
/// Bytes of end-to-end traffic waiting: two full device frames, so one
/// can be written while the next waits. This, not the message count, is
/// what bounds a connection's memory (64 full frames would be 256 MiB).
pub const E2E_QUEUE_BYTES: usize = 2 * tessera_proto::MAX_DEVICE_FRAME;
/// Connections one device may hold on a node at once, unless configured
/// (`--max-connections-per-device`): its agent, a reconnecting agent whose
/// old connection has not timed out yet, and a `tessera send` or two.
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 4;

/// A device's claim on one of its connection slots, taken before the
/// WebSocket upgrade and given back when dropped: at the end of the
/// connection's cleanup, or wherever its task ends (a refused handshake, a
/// panic, an abort).
pub struct Slot {
    state: crate::AppState,
    device_id: String,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("device_id", &self.device_id)
            .finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.registry().release(&self.device_id);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection. An agent connection tells any older agent
    /// connection of the same device to go.
    pub fn register(
        &self,
        device_id: &str,
        key_id: &str,
        role: u32,
        protocol: u32,
    ) -> Registration {
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let orders = Arc::new(Orders::default());
        let (notices_tx, notices_rx) = queue::bounded(NOTICE_QUEUE, NOTICE_QUEUE_BYTES);
        let (input_tx, input_rx) = queue::bounded(INPUT_QUEUE, INPUT_QUEUE_BYTES);
        let (e2e_tx, e2e_rx) = queue::bounded(E2E_QUEUE, E2E_QUEUE_BYTES);
        let mut c = self.lock();
        c.by_conn.insert(
            conn_id,
            Entry {
                device_id: device_id.to_owned(),
                key_id: key_id.to_owned(),
                role,
                protocol,
                orders: Arc::clone(&orders),
                notices: notices_tx,
                input: input_tx,
                e2e: e2e_tx,
            },
        );
        if role == tessera_proto::role::AGENT {
            if let Some(old) = c.agent_of.insert(device_id.to_owned(), conn_id) {
                if let Some(e) = c.by_conn.get(&old) {
                    e.orders.post(ControlCommand::Replaced);
                }
            }
        }
        Registration {
            conn_id,
            orders,
            notices: notices_rx,
            input: input_rx,
            e2e: e2e_rx,
        }
    }

    fn agent_entry<'a>(c: &'a Connections, device_id: &str) -> Option<(u64, &'a Entry)> {
        let id = *c.agent_of.get(device_id)?;
        c.by_conn.get(&id).map(|e| (id, e))
    }

    /// The notice queue of a device's agent connection here.
    pub fn notices(&self, device_id: &str) -> Option<(u64, Outbox)> {
        let c = self.lock();
        Self::agent_entry(&c, device_id).map(|(id, e)| (id, e.notices.clone()))
    }

    /// The notice queue of one connection.
    pub fn notices_of_conn(&self, conn_id: u64) -> Option<Outbox> {
        self.lock().by_conn.get(&conn_id).map(|e| e.notices.clone())
    }

    /// The end-to-end queue of one connection.
    pub fn e2e_of_conn(&self, conn_id: u64) -> Option<Outbox> {
        self.lock().by_conn.get(&conn_id).map(|e| e.e2e.clone())
    }

    /// The input queue of a device's agent connection here.
    pub fn input(&self, device_id: &str) -> Option<Outbox> {
        let c = self.lock();
        Self::agent_entry(&c, device_id).map(|(_, e)| e.input.clone())
    }

    /// The id of the device's agent connection here, if any.
    pub fn conn_of(&self, device_id: &str) -> Option<u64> {
        self.lock().agent_of.get(device_id).copied()
    }

    /// The protocol version the device's agent connection speaks.
    pub fn protocol_of(&self, device_id: &str) -> Option<u32> {
        let c = self.lock();
        Self::agent_entry(&c, device_id).map(|(_, e)| e.protocol)
    }

    /// Removes a connection (and, if it was the device's agent connection,
    /// the device's entry).
    pub fn unregister(&self, device_id: &str, conn_id: u64) {
        let mut c = self.lock();
        c.by_conn.remove(&conn_id);
        if c.agent_of.get(device_id) == Some(&conn_id) {
            c.agent_of.remove(device_id);
        }
    }

    /// Takes one of the device's `cap` connection slots; `None` if it
    /// holds them all. Taken before the upgrade and held to the end of the
    /// connection's cleanup, so connections still proving their identity
    /// count too, and two racing upgrades cannot both take the last slot.
    pub fn reserve(state: &crate::AppState, device_id: &str, cap: usize) -> Option<Slot> {
        let mut c = state.registry().lock();
        let held = c.slots.entry(device_id.to_owned()).or_insert(0);
        if *held >= cap.max(1) {
            return None;
        }
        *held += 1;
        Some(Slot {
            state: state.clone(),
            device_id: device_id.to_owned(),
        })
    }

    fn release(&self, device_id: &str) {
        let mut c = self.lock();
        if let Some(held) = c.slots.get_mut(device_id) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                c.slots.remove(device_id);
            }
        }
    }

    /// Connection slots the device holds here.
    pub fn slots_of(&self, device_id: &str) -> usize {
        self.lock().slots.get(device_id).copied().unwrap_or(0)
    }

    /// After a key rotation, the connection is authenticated by the new key.
    pub fn set_key(&self, _device_id: &str, conn_id: u64, key_id: &str) {
        if let Some(e) = self.lock().by_conn.get_mut(&conn_id) {
            e.key_id = key_id.to_owned();
        }
    }

    /// Whether the device's agent is connected here.
    pub fn is_connected(&self, device_id: &str) -> bool {
        self.lock().agent_of.contains_key(device_id)
    }

    /// Agents connected here.
    pub fn len(&self) -> usize {
        self.lock().agent_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts off every connection of a device on this node.
    pub fn revoke_device(&self, device_id: &str, code: ErrorCode, reason: &str) {
        for e in self
            .lock()
            .by_conn
            .values()
            .filter(|e| e.device_id == device_id)
        {
            e.orders.post(ControlCommand::Revoke(Box::new(Revocation {
                key_id: e.key_id.clone(),
                code,
                reason: reason.to_owned(),
            })));
        }
    }

    /// Tells the device's agent connection here that a newer one (on
    /// another node) took over.
    pub fn replace_agent(&self, device_id: &str) {
        let c = self.lock();
        if let Some((_, e)) = Self::agent_entry(&c, device_id) {
            e.orders.post(ControlCommand::Replaced);
        }
    }

    /// Asks every connection of a device on this node to reconnect (after
    /// its identity key changed, so each proves the new key).
    pub fn reconnect_device(&self, device_id: &str) {
        for e in self
            .lock()
            .by_conn
            .values()
            .filter(|e| e.device_id == device_id)
        {
            e.orders.post(ControlCommand::IdentityRotated);
        }
    }

    /// Cuts off the connections authenticated with `key_id`.
    pub fn revoke_key(&self, key_id: &str, code: ErrorCode, reason: &str) {
        for e in self.lock().by_conn.values().filter(|e| e.key_id == key_id) {
            e.orders.post(ControlCommand::Revoke(Box::new(Revocation {
                key_id: key_id.to_owned(),
                code,
                reason: reason.to_owned(),
            })));
        }
    }

    /// (device id, key id) of every connection.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        self.lock()
            .by_conn
            .values()
            .map(|e| (e.device_id.clone(), e.key_id.clone()))
            .collect()
    }

    /// Whether a connection is of a client (not the device's agent).
    pub fn is_client(&self, conn_id: u64) -> bool {
        self.lock()
            .by_conn
            .get(&conn_id)
            .is_some_and(|e| e.role == tessera_proto::role::CLIENT)
    }
}

/// The presence sweep's work, once per heartbeat interval: record that
/// the devices connected here were seen, and cut off any whose key or
/// device was revoked on another node.
pub async fn sweep(registry: &Registry, db: &store::Db) {
    let snapshot = registry.snapshot();
    if snapshot.is_empty() {
        return;
    }
    let (devices, keys): (Vec<String>, Vec<String>) = snapshot.into_iter().unzip();
    if let Err(e) = store::devices::touch_seen(db, &devices, db.now()).await {
        tracing::warn!(error = %e, "presence sweep: cannot record last-seen times");
    }
    match store::devices::revoked_among(db, &keys).await {
        Ok(revoked) => {
            for (key_id, code) in revoked {
                // Either word cuts the connection off; only the device's
                // message differs.
                let code = code.parse().unwrap_or(ErrorCode::KeyRevoked);
                registry.revoke_key(&key_id, code, "revoked");
            }
        }
        Err(e) => tracing::warn!(error = %e, "presence sweep: cannot check revocations"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_replaces_the_old_one() {
        let r = Registry::default();
        let first = r.register("dev", "k1", 0, 2);
        let second = r.register("dev", "k1", 0, 2);
        let (old, new) = (first.conn_id, second.conn_id);
        assert_ne!(old, new);
        assert_eq!(first.orders.take(), Some(ControlCommand::Replaced));
        // The old connection's cleanup must not remove the new one.
        r.unregister("dev", old);
        assert!(r.is_connected("dev"));
        r.unregister("dev", new);
        assert!(!r.is_connected("dev"));
    }

    #[test]
    fn revoking_a_key_reaches_only_its_connection() {
        let r = Registry::default();
        let a = r.register("a", "ka", 0, 2);
        let b = r.register("b", "kb", 0, 2);
        r.revoke_key("kb", ErrorCode::KeyRevoked, "test");
        assert!(a.orders.take().is_none());
        assert!(matches!(
            b.orders.take(),
            Some(ControlCommand::Revoke(r)) if r.code == ErrorCode::KeyRevoked
        ));
    }

    #[tokio::test]
    async fn an_order_posted_before_the_wait_still_wakes_it() {
        let orders = Orders::default();
        orders.post(ControlCommand::Replaced);
        orders.post(ControlCommand::IdentityRotated);
        assert_eq!(orders.next().await, ControlCommand::Replaced);
        assert_eq!(orders.next().await, ControlCommand::IdentityRotated);
        // The permit left by the second post must not make a third wait
        // return early with nothing.
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), orders.next()).await;
        assert!(waited.is_err());
    }

    #[tokio::test]
    async fn a_waiting_task_wakes_for_an_order_and_a_full_list_drops_more() {
        let orders = Arc::new(Orders::default());
        let waiter = tokio::spawn({
            let orders = Arc::clone(&orders);
            async move { orders.next().await }
        });
        tokio::task::yield_now().await;
        orders.post(ControlCommand::Replaced);
        assert_eq!(waiter.await.ok(), Some(ControlCommand::Replaced));
        for _ in 0..ORDER_QUEUE + 3 {
            orders.post(ControlCommand::IdentityRotated);
        }
        let mut taken = 0;
        while orders.take().is_some() {
            taken += 1;
        }
        assert_eq!(taken, ORDER_QUEUE);
    }
}
