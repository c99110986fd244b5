//! A server running in the test's own process, on 127.0.0.1:<ephemeral>,
//! with a manual clock, and operator clients for it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tessera_client::{ApiClient, TlsTrust};
use tessera_core::api::SecretString;
use tessera_core::ManualClock;
use tessera_server::{AppState, Server, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::db::TestDb;

/// The `/metrics` bearer token of every [`TestServer`].
pub const METRICS_TOKEN: &str = "test-metrics-token";

/// Adjusts a server's configuration before it starts.
pub type Configure = Box<dyn FnOnce(&mut ServerConfig) + Send>;

/// Options for [`TestServer::start_with`].
#[derive(Default)]
pub struct Options {
    /// Share this database instead of creating one.
    pub database_url: Option<String>,
    pub clock: Option<ManualClock>,
    pub configure: Option<Configure>,
    /// Route through the test NATS server ([`nats_url`]): every node of a
    /// test that runs several at once on one database needs it.
    pub nats: bool,
}

/// The NATS server the tests use: `TESSERA_TEST_NATS_URL`, else the
/// local one on 127.0.0.1:4222. Clusters are scoped by their database's
/// cluster id, so parallel tests do not hear each other.
pub fn nats_url() -> String {
    std::env::var("TESSERA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A server running in this process on 127.0.0.1:<ephemeral>.
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    pub clock: ManualClock,
    /// The bootstrap admin's password, if this start created the admin.
    pub admin_password: Option<String>,
    pub state: AppState,
    pub db: Option<TestDb>,
    pub database_url: String,
    data_dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> TestServer {
        let (db, database_url) = match opts.database_url {
            Some(url) => (None, url),
            None => {
                let db = TestDb::new().await;
                let url = db.url.clone();
                (Some(db), url)
            }
        };
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().unwrap(), data_dir.path().to_owned());
        config.database_url = Some(database_url.clone());
        config.metrics_token = Some(SecretString::new(METRICS_TOKEN.to_owned()));
        if opts.nats {
            config.nats = Some(tessera_server::config::NatsConfig {
                url: nats_url(),
                ..Default::default()
            });
        }
        if let Some(f) = opts.configure {
            f(&mut config);
        }
        let clock = opts.clock.unwrap_or_else(ManualClock::starting_now);
        let server = Server::start(config, Arc::new(clock.clone()))
            .await
            .expect("server starts");
        let addr = server.local_addr();
        let admin_password = server.bootstrap.as_ref().map(|b| b.password.to_string());
        let state = server.state().clone();
        let scheme = if server.tls_fingerprint.is_some() {
            "https"
        } else {
            "http"
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestServer {
            addr,
            url: format!("{scheme}://{addr}"),
            clock,
            admin_password,
            state,
            db,
            database_url,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// An unauthenticated client.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.url, &TlsTrust::PublicRoots).expect("client")
    }

    /// A plain reqwest client for requests the typed client would not send.
    pub fn http(&self) -> reqwest::Client {
        http_client()
    }

    /// `/metrics`, with the token the kit starts every server with.
    pub async fn metrics(&self) -> String {
        self.http()
            .get(self.api("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Logs in as the bootstrap admin.
    pub async fn admin(&self) -> ApiClient {
        let pw = self
            .admin_password
            .clone()
            .expect("this server bootstrapped the admin");
        self.login("admin", &pw).await
    }

    pub async fn login(&self, user: &str, password: &str) -> ApiClient {
        let resp = self
            .client()
            .login(user, SecretString::new(password))
            .await
            .expect("login");
        self.client().with_token(resp.token)
    }

    /// Creates a user with `role` and returns a logged-in client for them.
    pub async fn user(
        &self,
        admin: &ApiClient,
        name: &str,
        role: tessera_core::roles::Role,
    ) -> ApiClient {
        let password = format!("{name}-password-123");
        admin
            .create_user(&tessera_core::api::CreateUserRequest {
                username: name.to_owned(),
                role,
                password: Some(SecretString::new(password.clone())),
            })
            .await
            .expect("create user");
        self.login(name, &password).await
    }

    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A plain reqwest client (ring as the TLS provider).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Options for a server whose devices heartbeat every `ms` milliseconds.
pub fn fast_heartbeat(ms: u64) -> Options {
    Options {
        configure: Some(Box::new(move |c| {
            c.heartbeat_interval = Duration::from_millis(ms);
            c.pairing_interval = Duration::from_secs(1);
        })),
        ..Options::default()
    }
}
