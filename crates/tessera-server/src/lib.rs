//! The Tessera server: HTTP API, storage, authentication, rate limits and the
//! audit log.
//!
//! Requests flow one way: transport (`http`) → domain (`auth`, `audit`,
//! `tenancy`) → storage (`store`). Handlers stay thin; decisions live in
//! functions tests can call without a socket.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod automatic;
pub mod bootstrap;
pub mod config;
pub mod control;
pub mod enrollment;
pub mod fsutil;
pub mod http;
pub mod metrics;
pub mod pairing;
pub mod relay;
pub mod session;
pub mod store;
pub mod tenancy;
pub mod tls;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use ipnet::IpNet;
use tessera_core::{Clock, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditEvent;
use crate::auth::lockout::{Lockout, LockoutPolicy};
use crate::auth::ratelimit::IpRateLimiter;
pub use crate::bootstrap::BootstrapAdmin;
pub use crate::config::{ServerConfig, TlsMode};
use crate::metrics::Metrics;
use crate::store::{Db, StoreResult, Tx};

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
    login_lockout: Lockout<IpAddr>,
    /// Failed user-code lookups: guessing codes locks an address out.
    pairing_lockout: Lockout<IpAddr>,
    limiters: Limiters,
    registry: control::Registry,
    hub: relay::Hub,
    auto: automatic::AutoHub,
    relay_tap: std::sync::RwLock<Option<automatic::RelayTap>>,
    viewer_keys: auth::viewer::ViewerKeys,
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

    fn all(&self) -> [&Arc<IpRateLimiter>; 6] {
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
    pub fn new(db: Db, clock: Arc<dyn Clock>, config: ServerConfig, viewer_secret: &[u8]) -> Self {
        let limiters = Limiters::new(&clock);
        let hub = relay::Hub::with_max_viewers(config.max_viewers);
        AppState {
            inner: Arc::new(Inner {
                db,
                clock,
                config,
                metrics: Metrics::default(),
                login_lockout: Lockout::new(LockoutPolicy::default()),
                pairing_lockout: Lockout::new(LockoutPolicy::default()),
                limiters,
                registry: control::Registry::default(),
                hub,
                auto: automatic::AutoHub::default(),
                relay_tap: std::sync::RwLock::new(None),
                viewer_keys: auth::viewer::ViewerKeys::new(viewer_secret),
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

    pub fn login_lockout(&self) -> &Lockout<IpAddr> {
        &self.inner.login_lockout
    }

    pub fn pairing_lockout(&self) -> &Lockout<IpAddr> {
        &self.inner.pairing_lockout
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

    pub fn limiters(&self) -> &Limiters {
        &self.inner.limiters
    }

    /// Cancelled when the server begins to shut down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Appends an audit event inside `tx`, at the current time.
    pub async fn audit(&self, tx: &mut Tx, event: AuditEvent) -> StoreResult<i64> {
        let seq = audit::record(tx, self.now(), event).await?;
        self.inner.metrics.audit_appended();
        Ok(seq)
    }
}

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

        let fresh: [u8; 32] = tessera_core::secret::random_bytes();
        let viewer_secret =
            store::server_keys::get_or_create(&db, "viewer_token_hs256", &fresh, clock.now())
                .await?;
        let state = AppState::new(db, clock, config, &viewer_secret);
        let bootstrap = bootstrap::ensure_admin(&state).await?;
        Ok(Server {
            state,
            listener,
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
        tokio::spawn(maintenance(state.clone()));
        tokio::spawn(control::presence_sweep(state.clone()));
        tokio::spawn(control::session_sweep(state.clone()));
        let result = match tls {
            Some(tls) => {
                axum_server::from_tcp_rustls(listener, tls)
                    .handle(handle)
                    .serve(app)
                    .await
            }
            None => {
                axum_server::from_tcp(listener)
                    .handle(handle)
                    .serve(app)
                    .await
            }
        };
        token.cancel();
        state.db().close().await;
        result.map_err(StartError::Serve)
    }
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
