//! Device control channels: who is connected to this node, and how to reach
//! them.
//!
//! Each connected device has one entry, holding the key it authenticated
//! with and a bounded command channel to its connection task. A revocation
//! made on this node reaches the connection at once through [`Registry`];
//! one made on another node is found by the presence sweep, which runs once
//! per heartbeat interval, so a revoked device is cut off within one
//! heartbeat everywhere.

pub mod connection;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::store;
use crate::AppState;

/// What the node asks a connection task to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlCommand {
    /// The device, or the key this connection authenticated with, is revoked.
    Revoke {
        key_id: String,
        code: &'static str,
        reason: String,
    },
    /// A newer connection of the same device took over.
    Replaced,
}

struct Entry {
    conn_id: u64,
    key_id: String,
    commands: mpsc::Sender<ControlCommand>,
}

/// The devices connected to this node.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
}

/// Commands per connection that may wait; a connection that falls this far
/// behind is being torn down anyway, so further commands are dropped.
const COMMAND_QUEUE: usize = 8;

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection, telling any older one of the same device to
    /// go. Returns the connection's id and its command receiver.
    pub fn register(&self, device_id: &str, key_id: &str) -> (u64, mpsc::Receiver<ControlCommand>) {
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let old = self.lock().insert(
            device_id.to_owned(),
            Entry {
                conn_id,
                key_id: key_id.to_owned(),
                commands: tx,
            },
        );
        if let Some(old) = old {
            let _ = old.commands.try_send(ControlCommand::Replaced);
        }
        (conn_id, rx)
    }

    /// Removes a connection, unless a newer one already replaced it.
    pub fn unregister(&self, device_id: &str, conn_id: u64) {
        let mut entries = self.lock();
        if entries.get(device_id).is_some_and(|e| e.conn_id == conn_id) {
            entries.remove(device_id);
        }
    }

    /// After a key rotation, the connection is authenticated by the new key.
    pub fn set_key(&self, device_id: &str, conn_id: u64, key_id: &str) {
        if let Some(e) = self
            .lock()
            .get_mut(device_id)
            .filter(|e| e.conn_id == conn_id)
        {
            e.key_id = key_id.to_owned();
        }
    }

    pub fn is_connected(&self, device_id: &str) -> bool {
        self.lock().contains_key(device_id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts off a device's connection on this node.
    pub fn revoke_device(&self, device_id: &str, code: &'static str, reason: &str) {
        if let Some(e) = self.lock().get(device_id) {
            let _ = e.commands.try_send(ControlCommand::Revoke {
                key_id: e.key_id.clone(),
                code,
                reason: reason.to_owned(),
            });
        }
    }

    /// Cuts off the connection authenticated with `key_id`, if any.
    pub fn revoke_key(&self, key_id: &str, code: &'static str, reason: &str) {
        let entries = self.lock();
        if let Some(e) = entries.values().find(|e| e.key_id == key_id) {
            let _ = e.commands.try_send(ControlCommand::Revoke {
                key_id: key_id.to_owned(),
                code,
                reason: reason.to_owned(),
            });
        }
    }

    /// (device id, key id) of every connection.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(d, e)| (d.clone(), e.key_id.clone()))
            .collect()
    }
}

/// Once per heartbeat interval: record that connected devices were seen,
/// and cut off any whose key or device was revoked on another node.
pub async fn presence_sweep(state: AppState) {
    let mut tick = tokio::time::interval(state.config().heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown_token().cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = state.registry().snapshot();
        if snapshot.is_empty() {
            continue;
        }
        let (devices, keys): (Vec<String>, Vec<String>) = snapshot.into_iter().unzip();
        if let Err(e) = store::devices::touch_seen(state.db(), &devices, state.now()).await {
            tracing::warn!(error = %e, "presence sweep: cannot record last-seen times");
        }
        match store::devices::revoked_among(state.db(), &keys).await {
            Ok(revoked) => {
                for (key_id, code) in revoked {
                    state.registry().revoke_key(&key_id, code, "revoked");
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence sweep: cannot check revocations"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_replaces_the_old_one() {
        let r = Registry::default();
        let (old, mut old_rx) = r.register("dev", "k1");
        let (new, _new_rx) = r.register("dev", "k1");
        assert_ne!(old, new);
        assert_eq!(old_rx.try_recv().unwrap(), ControlCommand::Replaced);
        // The old connection's cleanup must not remove the new one.
        r.unregister("dev", old);
        assert!(r.is_connected("dev"));
        r.unregister("dev", new);
        assert!(!r.is_connected("dev"));
    }

    #[test]
    fn revoking_a_key_reaches_only_its_connection() {
        let r = Registry::default();
        let (_, mut a) = r.register("a", "ka");
        let (_, mut b) = r.register("b", "kb");
        r.revoke_key("kb", "key_revoked", "test");
        assert!(a.try_recv().is_err());
        assert!(matches!(
            b.try_recv().unwrap(),
            ControlCommand::Revoke {
                code: "key_revoked",
                ..
            }
        ));
    }
}
