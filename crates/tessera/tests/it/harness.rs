//! The test kit: one call gives a real server on an ephemeral loopback port,
//! with a fresh database on the backend under test, a manual clock, and
//! clients for it.
//!
//! The backend comes from `TESSERA_TEST_BACKEND` (`sqlite`, the default, or
//! `postgres`). For PostgreSQL every test creates its own database on the
//! server named by `TESSERA_TEST_PG_URL` (default: the local trust-auth
//! server), named with `TESSERA_TEST_PG_PREFIX` so a CI run can drop them all.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tessera_client::{ApiClient, TlsTrust};
use tessera_core::api::SecretString;
use tessera_core::ManualClock;
use tessera_server::{AppState, Server, ServerConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("TESSERA_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

fn pg_admin_url() -> String {
    std::env::var("TESSERA_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database for one test, and the directory it lives in.
pub struct TestDb {
    pub url: String,
    pub dir: TempDir,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = match backend() {
            Backend::Sqlite => tessera_server::store::Db::sqlite_url(dir.path()),
            Backend::Postgres => {
                let prefix = std::env::var("TESSERA_TEST_PG_PREFIX")
                    .unwrap_or_else(|_| "tessera_test_".to_owned());
                let name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
                let admin = pg_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to PostgreSQL (is it running?)");
                conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                format!("{base}/{name}")
            }
        };
        TestDb { url, dir }
    }

    /// Runs raw SQL against the test database, behind the server's back.
    pub async fn raw(&self, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await?;
        conn.execute(sql).await.map(|_| ())
    }
}

/// Adjusts a server's configuration before it starts.
pub type Configure = Box<dyn FnOnce(&mut ServerConfig) + Send>;

/// Options for [`TestServer::start_with`].
#[derive(Default)]
pub struct Options {
    /// Share this database instead of creating one.
    pub database_url: Option<String>,
    pub clock: Option<ManualClock>,
    pub configure: Option<Configure>,
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

/// Path of the `tessera` binary under test.
pub fn tessera_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tessera"))
}

/// A `tessera server` child process.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub url: String,
    /// Everything it printed on stdout up to "listening".
    pub stdout_head: String,
    pub stderr_path: PathBuf,
    _dir: TempDir,
}

impl ServerProcess {
    /// Starts `tessera server` on an ephemeral port against `database_url`,
    /// with logging at `log_level`; waits until it listens.
    pub async fn spawn(database_url: &str, log_level: &str, extra: &[&str]) -> ServerProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = tokio::process::Command::new(tessera_bin())
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .env("TESSERA_DATABASE_URL", database_url)
            .env("TESSERA_LOG", log_level)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tessera server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut head = String::new();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                head.push_str(&line);
                head.push('\n');
                if let Some(url) = line.strip_prefix("tessera server listening on ") {
                    return url.to_owned();
                }
            }
            panic!(
                "server exited before listening; stderr: {}",
                stderr_path.display()
            );
        })
        .await
        .expect("server listens within 30 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess {
            child,
            url,
            stdout_head: head,
            stderr_path,
            _dir: dir,
        }
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.url, &TlsTrust::PublicRoots).expect("client")
    }

    /// The bootstrap password from the console banner, if it printed one.
    pub fn bootstrap_password(&self) -> Option<String> {
        self.stdout_head
            .lines()
            .find_map(|l| l.trim().strip_prefix("password: ").map(str::to_owned))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("server exits within 20 s of SIGTERM")
            .expect("wait")
    }
}

/// Runs `tessera ctl …` with its own config dir; returns (exit code, stdout,
/// stderr).
pub async fn ctl(config_dir: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(tessera_bin())
        .arg("ctl")
        .arg("--config-dir")
        .arg(config_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tessera ctl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("ctl finishes within 60 s")
        .expect("ctl output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
        let dir = tempfile::tempdir().expect("tempdir");
        let state = tessera_agent::AgentState::new(dir.path().join("agent"));
        let opts = tessera_agent::enroll::EnrollOptions {
            server: server.url.clone(),
            tls_fingerprint: None,
            ca_cert: None,
            name: Some(name.to_owned()),
        };
        let id = tessera_agent::enroll::with_token(&state, &opts, token)
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
}

/// Runs the agent's control loop in a task; stop it with the sender.
pub struct RunningAgent {
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<tessera_agent::Exit, tessera_agent::control::AgentError>>,
}

impl RunningAgent {
    pub fn start(device: &TestDevice) -> RunningAgent {
        let state = device.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tessera_agent::run(
                &state,
                tessera_agent::RunOptions {
                    max_backoff: Duration::from_millis(500),
                    shell: Some("/bin/sh".to_owned()),
                    consent: tessera_agent::consent::ConsentMode::Deny,
                    inbox: None,
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

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// Joins `session` as the operator behind `client`.
pub async fn watch(
    client: &ApiClient,
    session: &str,
) -> (
    tessera_client::viewer::ViewerSender,
    tessera_client::viewer::ViewerReceiver,
    String,
) {
    let token = client.viewer_token(session).await.expect("viewer token");
    let (tx, mut rx) = tessera_client::viewer::connect(client, session, &token.token)
        .await
        .expect("viewer connects");
    match rx.next().await {
        tessera_client::viewer::ViewerEvent::Ready { access, .. } => (tx, rx, access),
        other => panic!("expected Ready, got {other:?}"),
    }
}

/// Reads viewer output until it contains `needle`; returns all of it.
pub async fn read_until(
    rx: &mut tessera_client::viewer::ViewerReceiver,
    needle: &str,
    limit: Duration,
) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(limit, async {
        loop {
            match rx.next().await {
                tessera_client::viewer::ViewerEvent::Output(data) => {
                    seen.push_str(&String::from_utf8_lossy(&data));
                    if seen.contains(needle) {
                        return true;
                    }
                }
                tessera_client::viewer::ViewerEvent::Closed { .. } => return false,
                _ => {}
            }
        }
    })
    .await;
    assert!(matches!(found, Ok(true)), "never saw {needle:?} in: {seen}");
    seen
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
        eventually(Duration::from_secs(10), || {
            let state = state.clone();
            let id = id.clone();
            async move { state.registry().is_connected(&id) }
        })
        .await,
        "device online"
    );
    (device, agent)
}

/// A `tessera agent run` child process on a device's state directory,
/// logging to a file; killed when dropped.
pub struct AgentProcess {
    pub child: tokio::process::Child,
    pub log_path: PathBuf,
    _log_dir: TempDir,
}

impl AgentProcess {
    /// Starts the agent and waits until the server sees it online.
    pub async fn start(server: &TestServer, device: &TestDevice) -> AgentProcess {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log_path = log_dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = tokio::process::Command::new(tessera_bin())
            .args(["agent", "run", "--state-dir"])
            .arg(device.dir())
            .env("TESSERA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tessera agent run");
        let p = AgentProcess {
            child,
            log_path,
            _log_dir: log_dir,
        };
        let (state, id) = (server.state.clone(), device.device_id.clone());
        assert!(
            eventually(Duration::from_secs(20), || {
                let (state, id) = (state.clone(), id.clone());
                async move { state.registry().is_connected(&id) }
            })
            .await,
            "agent process online; log: {}",
            p.log()
        );
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }
}

/// Peak resident memory of a live process, in bytes (Linux `VmHWM`).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM")
}

/// Runs `tessera <args>` as `device` (its state dir); returns (exit code,
/// stdout, stderr).
pub async fn device_cmd(
    device: &TestDevice,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(tessera_bin())
        .args(args)
        .env("TESSERA_AGENT_STATE_DIR", device.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tessera");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("tessera finishes within 120 s")
        .expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Logs `tessera ctl` in as the bootstrap admin, in a fresh config dir.
pub async fn ctl_admin(server: &TestServer) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = server.admin_password.clone().expect("bootstrap password");
    let (code, out, err) = ctl(
        dir.path(),
        &[
            "login",
            "--server",
            &server.url,
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    dir
}
