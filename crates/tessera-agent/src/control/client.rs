//! A client connection of this device, beside its agent: the creator's
//! end of the automatic sessions a command such as `tessera send` starts.

use std::time::Duration;

use tessera_proto::v1::Heartbeat;
use tessera_proto::Body;
use tokio::sync::mpsc;

use super::connection::{connect, recv, send, Connected};
use super::Exit;
use crate::credentials::Credentials;
use crate::error::AgentError;

/// A client connection of this device (`Hello.role = CLIENT`), alongside its
/// agent: for sessions a command such as `tessera send` creates. A task
/// keeps it alive with heartbeats and passes messages through queues.
pub struct ClientConnection {
    tx: mpsc::Sender<Body>,
    rx: mpsc::Receiver<Body>,
    task: tokio::task::JoinHandle<()>,
}

impl ClientConnection {
    pub async fn open(creds: &Credentials) -> Result<ClientConnection, AgentError> {
        let conn = match connect(creds, tessera_proto::role::CLIENT).await? {
            Connected::Ok(c) => c,
            Connected::Revoked(Exit::Revoked { code, reason })
            | Connected::Revoked(Exit::SessionEnded { code, reason }) => {
                return Err(AgentError::Refused {
                    code,
                    message: reason,
                })
            }
            Connected::Revoked(Exit::Shutdown) => {
                return Err(AgentError::Connection("stopped".into()))
            }
        };
        let (tx, mut out_rx) = mpsc::channel::<Body>(64);
        let (in_tx, rx) = mpsc::channel::<Body>(1024);
        let task = tokio::spawn(async move {
            let mut c = conn;
            let mut tick = tokio::time::interval(c.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        seq += 1;
                        if send(&mut c.ws, Body::Heartbeat(Heartbeat { seq })).await.is_err() {
                            break;
                        }
                    }
                    out = out_rx.recv() => match out {
                        Some(b) => {
                            if send(&mut c.ws, b).await.is_err() {
                                break;
                            }
                        }
                        None => {
                            let _ = c.ws.close(None).await;
                            break;
                        }
                    },
                    msg = recv(&mut c.ws) => match msg {
                        Ok(Some(Body::HeartbeatAck(_))) => {}
                        Ok(Some(b)) => {
                            if in_tx.send(b).await.is_err() {
                                break;
                            }
                        }
                        _ => break,
                    },
                }
            }
        });
        Ok(ClientConnection { tx, rx, task })
    }

    pub async fn send(&self, body: Body) -> Result<(), AgentError> {
        self.tx
            .send(body)
            .await
            .map_err(|_| AgentError::Connection("the connection to the server closed".into()))
    }

    pub async fn recv(&mut self) -> Option<Body> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<Body> {
        self.rx.try_recv().ok()
    }

    /// Flushes what was sent and closes.
    pub async fn close(self) {
        let ClientConnection { tx, rx, task } = self;
        drop(tx);
        drop(rx);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}
