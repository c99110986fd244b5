//! Several nodes on one database (issue 15).
//!
//! One process on SQLite stays the default: without `--nats-url` a node
//! runs alone, exactly as before, and refuses to start beside another live
//! node on the same database (its viewers could not reach devices held
//! there). With NATS, nodes reach each other through subjects scoped by
//! the cluster's id (`tessera.<cluster>.…`, see [`Cluster::subject`]), so
//! several clusters or test runs can share one NATS server.
//!
//! Every node holds a lease in the `nodes` table, renewed each heartbeat
//! (`store::nodes`); a node whose lease lapsed is gone, and so are the
//! device connections it held (`devices.node_id` names the holder).

pub mod link;
pub mod node_id;
pub mod orders;

use std::time::Duration;

use tessera_core::Timestamp;

use crate::config::NatsConfig;
use crate::store::nodes::NodeRow;

/// Heartbeats a lease outlives its last renewal by.
pub const LEASE_HEARTBEATS: u32 = 3;

/// How long a lease taken or renewed now lasts.
pub fn lease_until(now: Timestamp, heartbeat: Duration) -> Timestamp {
    now.plus(heartbeat * LEASE_HEARTBEATS)
}

/// Why a node must not join the nodes already live on its database, if it
/// must not: a node without NATS beside any other, or a node with NATS
/// beside one running without it (that one cannot be reached).
pub fn admission(me: &str, nats: bool, live: &[NodeRow]) -> Result<(), String> {
    let others: Vec<&NodeRow> = live.iter().filter(|n| n.id != me).collect();
    if others.is_empty() {
        return Ok(());
    }
    let names = |ns: &[&NodeRow]| {
        ns.iter()
            .map(|n| match &n.advertise_url {
                Some(url) => format!("{} ({url})", n.id),
                None => n.id.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !nats {
        return Err(format!(
            "another node already runs on this database: {}. Several nodes reach each other's \
             devices only through NATS: start every node with --nats-url. (A node that is gone \
             without a clean stop holds its lease for {LEASE_HEARTBEATS} heartbeats.)",
            names(&others)
        ));
    }
    let lone: Vec<&NodeRow> = others.iter().copied().filter(|n| !n.nats).collect();
    if !lone.is_empty() {
        return Err(format!(
            "a node without NATS runs on this database: {}. It cannot reach devices held by \
             other nodes: restart it with --nats-url before adding nodes.",
            names(&lone)
        ));
    }
    Ok(())
}

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid --nats-url `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read the NATS credentials {path}: {source}")]
    Credentials {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
}

/// This node's place among the nodes on its database.
pub struct Cluster {
    node_id: String,
    cluster_id: String,
    advertise_url: Option<String>,
    nats: Option<async_nats::Client>,
}

impl Cluster {
    /// A node that runs alone.
    pub fn single(node_id: String, cluster_id: String, advertise_url: Option<String>) -> Self {
        Cluster {
            node_id,
            cluster_id,
            advertise_url,
            nats: None,
        }
    }

    /// A node that reaches the others through NATS. The connection is
    /// retried in the background, so a node starts (and serves its own
    /// devices and viewers) while NATS is down.
    pub async fn connect(
        config: &NatsConfig,
        node_id: String,
        cluster_id: String,
        advertise_url: Option<String>,
    ) -> Result<Self, ClusterError> {
        let addrs = config
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|e| ClusterError::Url {
                        url: u.to_owned(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err(ClusterError::Url {
                url: config.url.clone(),
                reason: "no server address".to_owned(),
            });
        }
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("tessera node {node_id}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .require_tls(config.require_tls)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost NATS: cross-node traffic fails until it returns")
                    }
                    other => tracing::debug!(event = %other, "NATS"),
                }
            });
        if let Some(path) = &config.credentials {
            options = options.credentials_file(path).await.map_err(|source| {
                ClusterError::Credentials {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        if let Some(path) = &config.nkey {
            let seed =
                std::fs::read_to_string(path).map_err(|source| ClusterError::Credentials {
                    path: path.clone(),
                    source,
                })?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &config.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .connect(addrs)
            .await
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        Ok(Cluster {
            node_id,
            cluster_id,
            advertise_url,
            nats: Some(client),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn advertise_url(&self) -> Option<&str> {
        self.advertise_url.as_deref()
    }

    /// The NATS connection, if this node routes through NATS.
    pub fn nats(&self) -> Option<&async_nats::Client> {
        self.nats.as_ref()
    }

    /// Whether NATS is configured and connected right now.
    pub fn nats_connected(&self) -> bool {
        self.nats
            .as_ref()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
    }

    /// `tessera.<cluster>.<tail>`.
    pub fn subject(&self, tail: &str) -> String {
        format!("tessera.{}.{tail}", self.cluster_id)
    }

    /// `tessera.<cluster>.node.<node>.<tail>`: what one node answers.
    pub fn node_subject(&self, node: &str, tail: &str) -> String {
        self.subject(&format!("node.{node}.{tail}"))
    }
}

/// How long a request to another node waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, nats: bool) -> NodeRow {
        NodeRow {
            id: id.to_owned(),
            advertise_url: None,
            nats,
            started_at: Timestamp::from_millis(0),
            lease_until: Timestamp::from_millis(1),
        }
    }

    #[test]
    fn a_node_alone_or_beside_its_own_old_lease_starts() {
        assert!(admission("a", false, &[]).is_ok());
        assert!(admission("a", false, &[node("a", false)]).is_ok());
        assert!(admission("a", true, &[node("a", false)]).is_ok());
    }

    #[test]
    fn a_second_node_without_nats_is_refused_and_told_why() {
        let why = admission("b", false, &[node("a", true)]).unwrap_err();
        assert!(why.contains("--nats-url") && why.contains("a"), "{why}");
    }

    #[test]
    fn a_node_with_nats_is_refused_beside_one_without() {
        let why = admission("b", true, &[node("a", false)]).unwrap_err();
        assert!(why.contains("without NATS"), "{why}");
        assert!(admission("c", true, &[node("a", true), node("b", true)]).is_ok());
    }
}
