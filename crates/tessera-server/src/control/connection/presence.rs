//! What a registered connection must undo when it ends, however it ends.
//!
//! A connection is in the registry (so it receives orders, notices and
//! routed traffic), may carry relay sessions and automatic sessions, makes
//! its device online, and holds one of its device's connection slots. All
//! of that is released by [`Presence::release`] at the end of the
//! connection, and, if the connection's task never gets there (it
//! panicked, or was aborted or dropped), by [`Presence`]'s `Drop`: the
//! registry entry at once, the rest in a task of its own. Without this, a
//! panic in one handler would leave a device online forever, its sessions
//! routed to a dead queue, and its slot taken.

use tessera_core::Timestamp;

use crate::auth::device::DevicePrincipal;
use crate::control::{Registration, Slot};
use crate::store;
use crate::AppState;

/// A registered connection's hold on the node; see the module doc.
pub struct Presence(Option<Held>);

struct Held {
    state: AppState,
    device_id: String,
    conn_id: u64,
    /// An agent connection: it makes the device online.
    agent: bool,
    connected_at: Timestamp,
    /// Given back last, once everything else is released.
    _slot: Slot,
}

impl Presence {
    /// Registers a connection of `device` that holds `slot`.
    pub fn enter(
        state: &AppState,
        slot: Slot,
        device: &DevicePrincipal,
        agent: bool,
        version: u32,
        connected_at: Timestamp,
    ) -> (Presence, Registration) {
        let role = if agent {
            tessera_proto::role::AGENT
        } else {
            tessera_proto::role::CLIENT
        };
        let registration =
            state
                .registry()
                .register(&device.device_id, &device.key_id, role, version);
        let held = Held {
            state: state.clone(),
            device_id: device.device_id.clone(),
            conn_id: registration.conn_id,
            agent,
            connected_at,
            _slot: slot,
        };
        (Presence(Some(held)), registration)
    }

    /// Releases everything, in order, before returning.
    pub async fn release(mut self) {
        if let Some(held) = self.0.take() {
            held.release().await;
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let Some(held) = self.0.take() else { return };
        tracing::warn!(
            conn_id = held.conn_id,
            "a device connection ended without its cleanup; releasing it"
        );
        // At once, so nothing more is routed to the dead connection.
        held.state
            .registry()
            .unregister(&held.device_id, held.conn_id);
        // The rest needs the database. Without a runtime (the process is
        // going down) there is nothing left to route to anyway.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(held.release());
        }
    }
}

impl Held {
    async fn release(self) {
        let Held {
            state,
            device_id,
            conn_id,
            agent,
            connected_at,
            _slot,
        } = self;
        let registry = state.registry();
        registry.unregister(&device_id, conn_id);
        Box::pin(crate::automatic::connection_closed(
            &crate::automatic::Routing::of(&state),
            &device_id,
            conn_id,
        ))
        .await;
        if agent {
            // The shells of this connection died with it; sessions waiting for
            // consent end too unless a newer connection took over (it asks again).
            let reconnected =
                registry.is_connected(&device_id) || connected_elsewhere(&state, &device_id).await;
            Box::pin(crate::session::connection_closed(
                &state,
                &device_id,
                conn_id,
                reconnected,
            ))
            .await;
            if let Err(e) = Box::pin(store::devices::mark_disconnected(
                state.db(),
                &device_id,
                connected_at,
                state.now(),
            ))
            .await
            {
                tracing::warn!(error = %e, "cannot record the disconnection");
            }
        }
        tracing::info!(conn_id, "device disconnected");
    }
}

/// Whether the device's agent is connected to another live node now (it
/// took over from this one): its sessions waiting for consent are asked
/// again there, not abandoned here.
async fn connected_elsewhere(state: &AppState, device_id: &str) -> bool {
    if state.cluster().nats().is_none() {
        return false;
    }
    match store::nodes::of_device(state.db(), device_id, state.now()).await {
        Ok(holder) => {
            crate::cluster::orders::gives_way(state.cluster().node_id(), holder.as_deref())
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether a device moved to another node");
            false
        }
    }
}
