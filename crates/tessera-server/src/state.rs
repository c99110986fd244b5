//! The shared state of one server process: pools, clocks, registries and
//! limiters, handed to every handler as axum `State`.
//!
//! Domain code takes the parts it uses (`&Db`, the registry, the hub), not
//! this whole struct, wherever it can; `AppState` is the transport's bag.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tessera_core::{Clock, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::auth::ratelimit::IpRateLimiter;
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::node_key::NodeKey;
use crate::store::Db;
use crate::{auth, automatic, control, relay, ServerConfig};

/// Shared state of one server process, handed to every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
    metrics: Metrics,
    limiters: Limiters,
    registry: control::Registry,
    hub: relay::Hub,
    auto: automatic::AutoHub,
    relay_tap: std::sync::RwLock<Option<automatic::RelayTap>>,
    viewer_keys: auth::viewer::ViewerKeys,
    /// Signs audit checkpoints (`crate::checkpoint`).
    node_key: Arc<NodeKey>,
    /// This node among the nodes on its database.
    cluster: Arc<Cluster>,
    shutdown: CancellationToken,
}

/// The named per-IP limiters that routes attach.
pub struct Limiters {
    pub login: Arc<IpRateLimiter>,
    pub password: Arc<IpRateLimiter>,
    pub device_authorization: Arc<IpRateLimiter>,
    pub enroll: Arc<IpRateLimiter>,
    pub pairing_lookup: Arc<IpRateLimiter>,
    pub support_code: Arc<IpRateLimiter>,
}

impl Limiters {
    fn new(clock: &Arc<dyn Clock>) -> Self {
        let per = |name, burst: u32, period_ms| {
            Arc::new(IpRateLimiter::new(
                name,
                NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
                Duration::from_millis(period_ms),
                clock.clone(),
            ))
        };
        Limiters {
            // 20 at once, then one every 3 s (20 a minute).
            login: per("login", 20, 3_000),
            password: per("change_password", 10, 6_000),
            device_authorization: per("device_authorization", 10, 6_000),
            enroll: per("enroll", 50, 1_000),
            pairing_lookup: per("pairing_lookup", 20, 3_000),
            // Generous enough for a burst of honest binders racing for one
            // code; guessing is stopped by the lockout.
            support_code: per("support_code", 30, 2_000),
        }
    }

    /// Shares every budget among `nodes` live nodes (see
    /// [`crate::auth::ratelimit::share`]).
    pub fn share_among(&self, nodes: usize) {
        for limiter in self.all() {
            limiter.share_among(nodes);
        }
    }

    /// The live nodes the budgets are shared among.
    pub fn nodes(&self) -> usize {
        self.login.nodes()
    }

    pub(crate) fn all(&self) -> [&Arc<IpRateLimiter>; 6] {
        [
            &self.login,
            &self.password,
            &self.device_authorization,
            &self.enroll,
            &self.pairing_lookup,
            &self.support_code,
        ]
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("backend", &self.inner.db.backend())
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
        viewer_keys: auth::viewer::ViewerKeys,
        node_key: Arc<NodeKey>,
        cluster: Arc<Cluster>,
    ) -> Self {
        let limiters = Limiters::new(&clock);
        let metrics = Metrics::default();
        let db = db
            .with_clock(clock.clone())
            .counting_audit_in(metrics.audit_counter());
        let hub =
            relay::Hub::with_max_viewers(config.max_viewers).with_screen(relay::ScreenSettings {
                policy: config.screen_codec,
                input_per_second: config.screen_input_per_second,
            });
        AppState {
            inner: Arc::new(Inner {
                db,
                clock,
                config,
                metrics,
                limiters,
                registry: control::Registry::default(),
                hub,
                auto: automatic::AutoHub::default(),
                relay_tap: std::sync::RwLock::new(None),
                viewer_keys,
                node_key,
                cluster,
                shutdown: CancellationToken::new(),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.inner.config.trusted_proxies
    }

    /// Devices connected to this node.
    pub fn registry(&self) -> &control::Registry {
        &self.inner.registry
    }

    /// Sessions relayed by this node.
    pub fn hub(&self) -> &relay::Hub {
        &self.inner.hub
    }

    /// Automatic sessions routed by this node.
    pub fn auto(&self) -> &automatic::AutoHub {
        &self.inner.auto
    }

    /// The relay tap, if a test set one (see [`automatic::RelayTap`]).
    pub fn relay_tap(&self) -> Option<automatic::RelayTap> {
        self.inner.relay_tap.read().ok().and_then(|t| t.clone())
    }

    /// Tests only: sees (and may alter) sealed payloads as they are routed.
    pub fn set_relay_tap(&self, tap: Option<automatic::RelayTap>) {
        if let Ok(mut t) = self.inner.relay_tap.write() {
            *t = tap;
        }
    }

    pub fn viewer_keys(&self) -> &auth::viewer::ViewerKeys {
        &self.inner.viewer_keys
    }

    /// This node's key, which signs audit checkpoints.
    pub fn node_key(&self) -> &NodeKey {
        &self.inner.node_key
    }

    /// This node among the nodes on its database (`crate::cluster`).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.inner.cluster
    }

    pub fn limiters(&self) -> &Limiters {
        &self.inner.limiters
    }

    /// Cancelled when the server begins to shut down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
