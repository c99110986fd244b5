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

use tessera_proto::Envelope;
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
    /// Server notices for the device (channel opens, consent requests,
    /// session ends): never crowded out by viewer input.
    notices: mpsc::Sender<Envelope>,
    /// Viewer input for the device.
    input: mpsc::Sender<Envelope>,
}

/// What one registration hands its connection task.
pub struct Registration {
    pub conn_id: u64,
    pub commands: mpsc::Receiver<ControlCommand>,
    pub notices: mpsc::Receiver<Envelope>,
    pub input: mpsc::Receiver<Envelope>,
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
/// Viewer input waiting for the device's socket. Input waits a little for
/// room (holding back only its viewer), then is dropped and counted.
pub const INPUT_QUEUE: usize = 256;
/// Server notices waiting for the device's socket. Few and small; the
/// device reads them before any input.
pub const NOTICE_QUEUE: usize = 64;

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection, telling any older one of the same device to
    /// go. Returns the connection's id and its command receiver.
    pub fn register(&self, device_id: &str, key_id: &str) -> Registration {
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (notices_tx, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let old = self.lock().insert(
            device_id.to_owned(),
            Entry {
                conn_id,
                key_id: key_id.to_owned(),
                commands: tx,
                notices: notices_tx,
                input: input_tx,
            },
        );
        if let Some(old) = old {
            let _ = old.commands.try_send(ControlCommand::Replaced);
        }
        Registration {
            conn_id,
            commands: rx,
            notices: notices_rx,
            input: input_rx,
        }
    }

    /// The notice queue of a device connected here, with its connection.
    pub fn notices(&self, device_id: &str) -> Option<(u64, mpsc::Sender<Envelope>)> {
        self.lock()
            .get(device_id)
            .map(|e| (e.conn_id, e.notices.clone()))
    }

    /// The input queue of a device connected here.
    pub fn input(&self, device_id: &str) -> Option<mpsc::Sender<Envelope>> {
        self.lock().get(device_id).map(|e| e.input.clone())
    }

    /// The id of the device's current connection here, if any.
    pub fn conn_of(&self, device_id: &str) -> Option<u64> {
        self.lock().get(device_id).map(|e| e.conn_id)
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

/// Once per heartbeat interval: viewers whose login ended are cut off (the
/// login may have ended on another node), and support codes that lapsed
/// unused are marked expired and audited.
pub async fn session_sweep(state: AppState) {
    let mut tick = tokio::time::interval(state.config().heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown_token().cancelled() => return,
            _ = tick.tick() => {}
        }
        let live = state.hub().all();
        let logins: Vec<String> = live
            .iter()
            .flat_map(|s| s.viewers().into_iter().map(|(_, _, login)| login))
            .collect();
        if !logins.is_empty() {
            match store::logins::dead_among(state.db(), &logins, state.now()).await {
                Ok(dead) if !dead.is_empty() => {
                    for s in &live {
                        s.kick_logins("logged_out", |l| dead.iter().any(|d| d == l));
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "session sweep: cannot check viewer logins"),
            }
        }
        if let Err(e) = expire_support_codes(&state).await {
            tracing::warn!(error = %e, "session sweep: cannot expire support codes");
        }
        if let Err(e) = crate::session::sweep(&state).await {
            tracing::warn!(error = %e, "session sweep: cannot end lapsed sessions");
        }
    }
}

async fn expire_support_codes(state: &AppState) -> store::StoreResult<()> {
    let mut tx = state.db().begin_write().await?;
    let expired = store::support_codes::expire_lapsed(&mut tx, state.now()).await?;
    for (id, tenant) in expired {
        state
            .audit(
                &mut tx,
                crate::audit::AuditEvent::new(
                    &tenant,
                    crate::audit::Actor::System,
                    crate::audit::Action::SupportCodeExpired,
                )
                .target(format!("support_code:{id}")),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_replaces_the_old_one() {
        let r = Registry::default();
        let mut first = r.register("dev", "k1");
        let second = r.register("dev", "k1");
        let (old, new) = (first.conn_id, second.conn_id);
        assert_ne!(old, new);
        assert_eq!(first.commands.try_recv().unwrap(), ControlCommand::Replaced);
        // The old connection's cleanup must not remove the new one.
        r.unregister("dev", old);
        assert!(r.is_connected("dev"));
        r.unregister("dev", new);
        assert!(!r.is_connected("dev"));
    }

    #[test]
    fn revoking_a_key_reaches_only_its_connection() {
        let r = Registry::default();
        let mut a = r.register("a", "ka");
        let mut b = r.register("b", "kb");
        r.revoke_key("kb", "key_revoked", "test");
        assert!(a.commands.try_recv().is_err());
        assert!(matches!(
            b.commands.try_recv().unwrap(),
            ControlCommand::Revoke {
                code: "key_revoked",
                ..
            }
        ));
    }
}
