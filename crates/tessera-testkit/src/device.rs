//! Devices: enrolled through the real API with an agent state directory,
//! the agent's control loop in a task, and raw device sockets for tests
//! that speak the control protocol themselves.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
use tessera_client::ApiClient;
use tessera_core::api::SecretString;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::server::TestServer;

/// A raw client WebSocket (device or viewer plane).
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An upgrade the server refused: the HTTP status and its JSON body.
pub type Refusal = (u16, serde_json::Value);

/// Opens the WebSocket at `url` (e.g. `ws://<addr>/ws/device`) with a
/// bearer token; `Err` carries the HTTP refusal.
pub async fn open_ws(url: &str, bearer: &str) -> Result<Ws, Refusal> {
    open_ws_with(url, bearer, None).await
}

/// [`open_ws`] with the client's frame limits set.
pub async fn open_ws_with(
    url: &str,
    bearer: &str,
    config: Option<WebSocketConfig>,
) -> Result<Ws, Refusal> {
    let mut req = url.into_client_request().expect("a WebSocket URL");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {bearer}").parse().expect("a header value"),
    );
    match tokio_tungstenite::connect_async_with_config(req, config, false).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("{e}"),
    }
}

/// An enrolled device: its state directory (identity and key on disk),
/// enrolled through the real API with an enrollment token.
pub struct TestDevice {
    pub state: tessera_agent::AgentState,
    pub device_id: String,
    pub key: SecretString,
    _dir: TempDir,
}

impl TestDevice {
    /// Creates a one-use token as `admin` and enrolls a new device with it.
    pub async fn enroll(server: &TestServer, admin: &ApiClient, name: &str) -> TestDevice {
        let token = admin
            .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
                uses: 1,
                ttl_seconds: 3600,
                tags: vec![],
            })
            .await
            .expect("create token");
        Self::enroll_with(server, token.secret, name).await
    }

    pub async fn enroll_with(server: &TestServer, token: SecretString, name: &str) -> TestDevice {
        // The proof of key possession is dated by the server's (test) clock.
        Self::enroll_at(&server.url, token, name, server.clock.now_ms()).await
    }

    /// Enrolls a new device on the server at `url` (e.g. a
    /// [`crate::ServerProcess`]) with `token`, its proof of key possession
    /// dated `now_ms`.
    pub async fn enroll_at(url: &str, token: SecretString, name: &str, now_ms: i64) -> TestDevice {
        let dir = tempfile::tempdir().expect("tempdir");
        // The home its agent processes get (a shell starts there).
        std::fs::create_dir_all(dir.path().join("home")).expect("home folder");
        let state = tessera_agent::AgentState::new(dir.path().join("agent"));
        let opts = tessera_agent::enroll::EnrollOptions {
            server: url.to_owned(),
            tls_fingerprint: None,
            ca_cert: None,
            name: Some(name.to_owned()),
        };
        let id = tessera_agent::enroll::with_token_at(&state, &opts, token, now_ms)
            .await
            .expect("enroll");
        let key = state.key().expect("key saved");
        TestDevice {
            state,
            device_id: id.to_string(),
            key,
            _dir: dir,
        }
    }

    /// A client authenticated as this device (device plane).
    pub fn client(&self, server: &TestServer) -> ApiClient {
        server.client().with_token(self.key.clone())
    }

    pub fn dir(&self) -> &Path {
        self.state.dir()
    }

    /// Where this device's agent saves received files (beside its state
    /// directory, in its temporary folder).
    pub fn inbox(&self) -> std::path::PathBuf {
        self._dir.path().join("inbox")
    }

    /// The home folder this device's agent processes get (created empty,
    /// in its temporary folder): nothing a test runs writes into the real
    /// one.
    pub fn home(&self) -> std::path::PathBuf {
        self._dir.path().join("home")
    }
}

/// Runs the agent's control loop in a task; stop it with the sender.
pub struct RunningAgent {
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<tessera_agent::Exit, tessera_agent::control::AgentError>>,
}

impl RunningAgent {
    pub fn start(device: &TestDevice) -> RunningAgent {
        let state = device.state.clone();
        let inbox = device.inbox();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tessera_agent::run(
                &state,
                tessera_agent::RunOptions {
                    max_backoff: Duration::from_millis(500),
                    alternates: Vec::new(),
                    shell: Some("/bin/sh".to_owned()),
                    consent: tessera_agent::consent::ConsentMode::Deny,
                    inbox: Some(inbox),
                    display: None,
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await
        });
        RunningAgent {
            stop: Some(stop),
            task,
        }
    }

    /// Waits for the loop to end by itself (e.g. revoked).
    pub async fn exit_within(self, limit: Duration) -> tessera_agent::Exit {
        let RunningAgent { stop, task } = self;
        let out = tokio::time::timeout(limit, task)
            .await
            .expect("agent exits in time")
            .expect("agent task")
            .expect("agent ran");
        drop(stop);
        out
    }
}

/// A device with a running agent (shell `/bin/sh`), online on `server`.
pub async fn online_device(
    server: &TestServer,
    admin: &ApiClient,
    name: &str,
) -> (TestDevice, RunningAgent) {
    let device = TestDevice::enroll(server, admin, name).await;
    let agent = RunningAgent::start(&device);
    let id = device.device_id.clone();
    let state = server.state.clone();
    assert!(
        crate::eventually(Duration::from_secs(10), || {
            let state = state.clone();
            let id = id.clone();
            async move { state.registry().is_connected(&id) }
        })
        .await,
        "device online"
    );
    (device, agent)
}
