//! The Tessera server: HTTP API, storage, authentication, rate limits and the
//! audit log.
//!
//! Requests flow one way: transport (`http`) → domain (`auth`, `audit`,
//! `tenancy`) → storage (`store`). Handlers stay thin; decisions live in
//! functions tests can call without a socket.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod automatic;
pub mod bootstrap;
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod control;
pub mod enrollment;
pub mod fsutil;
pub mod http;
pub mod metrics;
pub mod net;
pub mod node_key;
pub mod pairing;
pub mod relay;
pub mod session;
pub mod state;
pub mod store;
pub mod sweep;
pub mod tenancy;
pub mod tls;
pub mod trust;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use tessera_core::Clock;

pub use crate::bootstrap::BootstrapAdmin;
pub use crate::config::{ServerConfig, TlsMode};
pub use crate::state::AppState;
use crate::store::Db;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Refused(String),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    NodeKey(#[from] node_key::NodeKeyError),
    #[error(transparent)]
    NodeId(#[from] cluster::node_id::NodeIdError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("cannot open the database: {0}")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// A server that has opened its database and bound its socket.
pub struct Server {
    state: AppState,
    listener: std::net::TcpListener,
    /// `--metrics-listen`: serves `/metrics` only.
    metrics_listener: Option<std::net::TcpListener>,
    tls: Option<RustlsConfig>,
    /// The bootstrap admin's one-time credential, on the very first start.
    pub bootstrap: Option<BootstrapAdmin>,
    /// SHA-256 fingerprint of the TLS certificate, when serving TLS.
    pub tls_fingerprint: Option<String>,
}

impl Server {
    /// Checks the configuration, opens and migrates the database, creates
    /// the bootstrap admin on first start, loads TLS and binds the socket.
    pub async fn start(config: ServerConfig, clock: Arc<dyn Clock>) -> Result<Server, StartError> {
        if let Some(why) = config.refusal() {
            return Err(StartError::Refused(why));
        }
        fsutil::create_private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let url = config
            .database_url
            .clone()
            .unwrap_or_else(|| Db::sqlite_url(&config.data_dir));
        tracing::info!(database = %config::redact_database_url(&url), "opening database");
        let db = Db::connect(&url).await?;

        let (tls, tls_fingerprint) = match &config.tls {
            TlsMode::Off => (None, None),
            TlsMode::Files { cert, key } => {
                let (c, fp) = tls::from_files(cert, key).await?;
                (Some(c), Some(fp))
            }
            TlsMode::SelfSigned => {
                let extra: Vec<String> = if config.listen.ip().is_unspecified() {
                    Vec::new()
                } else {
                    vec![config.listen.ip().to_string()]
                };
                let (c, fp) = tls::self_signed(&config.data_dir, &extra).await?;
                (Some(c), Some(fp))
            }
        };

        let listener = std::net::TcpListener::bind(config.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;

        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };

        // The key that signs viewer tokens lives in a file, never in the
        // database; the database learns only its public half.
        let node_key = node_key::NodeKey::load_or_create(&config.node_key_path())?;
        store::node_keys::publish(&db, node_key.kid(), &node_key.public_key(), clock.now()).await?;
        tracing::info!(kid = node_key.kid(), "node key loaded");
        let viewer_keys = auth::viewer::ViewerKeys::new(&node_key)?;
        let cluster = Arc::new(join_cluster(&db, &config, clock.now()).await?);
        let state = AppState::new(db, clock, config, viewer_keys, Arc::new(node_key), cluster);
        let bootstrap = bootstrap::ensure_admin(state.db()).await?;
        let reconciled = session::reconcile_at_start(&state).await?;
        if reconciled > 0 {
            tracing::info!(
                sessions = reconciled,
                "ended sessions left live by the last run"
            );
        }
        Ok(Server {
            state,
            listener,
            metrics_listener,
            tls,
            bootstrap,
            tls_fingerprint,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.config().listen)
    }

    /// Where `--metrics-listen` serves, once bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains for up to 10 seconds.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Server {
            state,
            listener,
            metrics_listener,
            tls,
            ..
        } = self;
        let app = http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let handle = axum_server::Handle::new();
        let token = state.shutdown_token().clone();
        {
            let handle = handle.clone();
            let token = token.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown => {}
                    () = token.cancelled() => {}
                }
                token.cancel();
                handle.graceful_shutdown(Some(Duration::from_secs(10)));
            });
        }
        if let Some(listener) = metrics_listener {
            let app = http::ops::metrics_only(state.clone());
            let handle = axum_server::Handle::new();
            let (stop, token) = (handle.clone(), token.clone());
            tokio::spawn(async move {
                token.cancelled().await;
                stop.shutdown();
            });
            tokio::spawn(async move {
                if let Err(e) = axum_server::from_tcp(listener)
                    .handle(handle)
                    .serve(app.into_make_service())
                    .await
                {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
        }
        tokio::spawn(maintenance(state.clone()));
        tokio::spawn(sweep::presence(state.clone()));
        tokio::spawn(sweep::sessions(state.clone()));
        tokio::spawn(sweep::audit_checkpoints(state.clone()));
        tokio::spawn(cluster::link::serve(state.clone()));
        tokio::spawn(cluster::orders::serve(state.clone()));
        tokio::spawn(automatic::remote::serve(state.clone()));
        // TCP_NODELAY on every accepted socket: a relayed keystroke or
        // echo is one small write that must leave at once, not wait for
        // the peer's acknowledgement of the one before (Nagle).
        let no_delay = axum_server::accept::NoDelayAcceptor::new();
        let result = match tls {
            Some(tls) => {
                axum_server::from_tcp_rustls(listener, tls)
                    .map(|tls| tls.acceptor(no_delay))
                    .handle(handle)
                    .serve(app)
                    .await
            }
            None => {
                axum_server::from_tcp(listener)
                    .acceptor(no_delay)
                    .handle(handle)
                    .serve(app)
                    .await
            }
        };
        token.cancel();
        // The rows of this run end under a signature: a rewrite of them
        // while the server is down contradicts this checkpoint.
        if let Err(e) = checkpoint::write(&state, checkpoint::When::Uncovered).await {
            tracing::warn!(error = %e, "cannot write the closing audit checkpoint");
        }
        // Gone at once for the other nodes, rather than when the lease lapses.
        if let Err(e) = store::nodes::release(state.db(), state.cluster().node_id()).await {
            tracing::warn!(error = %e, "cannot give up this node's lease");
        }
        cluster::orders::publish(state.cluster(), cluster::orders::Order::NodesChanged).await;
        state.db().close().await;
        result.map_err(StartError::Serve)
    }
}

/// Finds this node's place among the nodes live on its database: refuses
/// what [`cluster::admission`] refuses, takes the node's lease, and
/// connects to NATS when configured.
async fn join_cluster(
    db: &Db,
    config: &ServerConfig,
    now: tessera_core::Timestamp,
) -> Result<cluster::Cluster, StartError> {
    let node_id = cluster::node_id::resolve(config.node_id.as_deref(), &config.data_dir)?;
    let cluster_id = store::nodes::cluster_id(db, &cluster::node_id::fresh(), now).await?;
    // The lease first, then the look: of two nodes starting at once, each
    // sees the other, so two nodes without NATS cannot both slip in.
    let lease = store::nodes::NodeRow {
        id: node_id.clone(),
        advertise_url: config.advertise_url.clone(),
        nats: config.nats.is_some(),
        started_at: now,
        lease_until: cluster::lease_until(now, config.heartbeat_interval),
    };
    store::nodes::claim(db, &lease).await?;
    let live = store::nodes::live(db, now).await?;
    if let Err(why) = cluster::admission(&node_id, lease.nats, &live) {
        store::nodes::release(db, &node_id).await?;
        return Err(StartError::Refused(why));
    }
    let advertise = config.advertise_url.clone();
    let cluster = match &config.nats {
        Some(nats) => cluster::Cluster::connect(nats, node_id, cluster_id, advertise).await?,
        None => cluster::Cluster::single(node_id, cluster_id, advertise),
    };
    tracing::info!(
        node = cluster.node_id(),
        cluster = cluster.cluster_id(),
        nats = cluster.nats().is_some(),
        "joined the cluster"
    );
    Ok(cluster)
}

/// Periodic housekeeping until shutdown.
async fn maintenance(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = state.shutdown_token().cancelled() => return,
            _ = tick.tick() => {
                for limiter in state.limiters().all() {
                    limiter.prune();
                }
            }
        }
    }
}
