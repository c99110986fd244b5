//! The `tessera` binary as child processes: a server (for process-level
//! tests and the benchmarks), an agent, `tessera ctl`, and what /proc says
//! about them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tempfile::TempDir;
use tessera_client::{ApiClient, TlsTrust};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::device::TestDevice;
use crate::server::TestServer;

/// Path of the `tessera` binary: `TESSERA_BIN`, else the one nextest names,
/// else the one beside the running executable or in its parent directory
/// (an integration test runs from `target/<profile>/deps/`).
pub fn tessera_bin() -> PathBuf {
    for var in ["TESSERA_BIN", "NEXTEST_BIN_EXE_tessera"] {
        if let Some(path) = std::env::var_os(var) {
            return PathBuf::from(path);
        }
    }
    let me = std::env::current_exe().expect("the running executable");
    let mut dir = me.parent();
    while let Some(d) = dir {
        let candidate = d.join("tessera");
        if candidate.is_file() {
            return candidate;
        }
        dir = d.parent().filter(|_| d.ends_with("deps"));
    }
    panic!(
        "the tessera binary is not beside {} (build it, or set TESSERA_BIN)",
        me.display()
    )
}

/// A `tessera server` child process; killed when dropped.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub url: String,
    /// Everything it printed on stdout up to "listening".
    pub stdout_head: String,
    pub stderr_path: PathBuf,
    /// How it was started, to start it again ([`ServerProcess::restart`]).
    launch: Launch,
    dir: TempDir,
}

struct Launch {
    bin: PathBuf,
    database_url: Option<String>,
    log_level: String,
    extra: Vec<String>,
}

impl ServerProcess {
    /// Starts `tessera server` on an ephemeral port against `database_url`,
    /// with logging at `log_level`; waits until it listens.
    pub async fn spawn(database_url: &str, log_level: &str, extra: &[&str]) -> ServerProcess {
        Self::launch(&tessera_bin(), Some(database_url), log_level, extra)
            .await
            .expect("tessera server starts and listens")
    }

    /// Starts `bin server` on an ephemeral port (against `database_url`, or
    /// its default database in a fresh data directory) with `extra` flags
    /// and logging at `log_level`; waits until it listens.
    pub async fn launch(
        bin: &Path,
        database_url: Option<&str>,
        log_level: &str,
        extra: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        let launch = Launch {
            bin: bin.to_owned(),
            database_url: database_url.map(str::to_owned),
            log_level: log_level.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        let dir = tempfile::tempdir()?;
        let (child, url, stdout_head) = launch.start(dir.path()).await?;
        Ok(ServerProcess {
            child,
            url,
            stdout_head,
            stderr_path: stderr_path(dir.path()),
            launch,
            dir,
        })
    }

    /// Kills it with SIGKILL — no shutdown path runs, whatever it was
    /// writing stays half-written — and waits until it is gone.
    pub async fn kill(&mut self) -> std::process::ExitStatus {
        self.child.start_kill().expect("SIGKILL the server");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("a killed server is gone within 20 s")
            .expect("wait")
    }

    /// Starts it again after [`ServerProcess::kill`] (or an exit): the same
    /// binary, flags, database and data directory, on a new ephemeral port
    /// (`url` changes); waits until it listens.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let (child, url, stdout_head) = self.launch.start(self.dir.path()).await?;
        self.child = child;
        self.url = url;
        self.stdout_head = stdout_head;
        Ok(())
    }

    /// Its data directory (the default SQLite database is `tessera.db` there).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
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

    /// The address it listens on (plain HTTP only).
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("expected http"))?;
        Ok(rest.parse()?)
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().ok_or_else(|| anyhow!("the server exited"))
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

/// Where the server in `dir` logs its stderr (appended across restarts).
fn stderr_path(dir: &Path) -> PathBuf {
    dir.join("stderr.log")
}

impl Launch {
    /// Starts the server with its data in `dir/data`; returns the child,
    /// its URL and what it printed up to "listening".
    async fn start(&self, dir: &Path) -> anyhow::Result<(tokio::process::Child, String, String)> {
        let stderr_path = stderr_path(dir);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(&self.extra)
            .env("TESSERA_LOG", &self.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        if let Some(url) = &self.database_url {
            cmd.env("TESSERA_DATABASE_URL", url);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut head = String::new();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                head.push_str(&line);
                head.push('\n');
                if let Some(url) = line.strip_prefix("tessera server listening on ") {
                    return Ok::<_, anyhow::Error>(url.to_owned());
                }
            }
            bail!(
                "the server exited before listening; stderr: {}",
                stderr_path.display()
            )
        })
        .await
        .context("the server did not listen within 60 s")??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((child, url, head))
    }
}

/// Runs `tessera ctl …` with its own config dir; returns (exit code, stdout,
/// stderr).
pub async fn ctl(config_dir: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(tessera_bin());
    cmd.arg("ctl")
        .arg("--config-dir")
        .arg(config_dir)
        .args(args);
    run_to_end(cmd, stdin, Duration::from_secs(60), "tessera ctl").await
}

/// Runs `tessera view ARGS --config-dir CONFIG_DIR` (a screen viewer, e.g.
/// with `--snapshot`); returns (exit code, stdout, stderr).
pub async fn view(config_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(tessera_bin());
    cmd.arg("view")
        .args(args)
        .arg("--config-dir")
        .arg(config_dir)
        .kill_on_drop(true);
    run_to_end(cmd, None, Duration::from_secs(90), "tessera view").await
}

/// Runs `cmd` with `stdin` fed in and waits, at most `limit`, for it to end;
/// returns (exit code, stdout, stderr).
async fn run_to_end(
    mut cmd: tokio::process::Command,
    stdin: Option<&str>,
    limit: Duration,
    what: &str,
) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} finishes within {limit:?}"))
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

/// Runs `tessera <args>` as `device` (its state dir); returns (exit code,
/// stdout, stderr).
pub async fn device_cmd(
    device: &TestDevice,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(tessera_bin());
    cmd.args(args)
        .env("TESSERA_AGENT_STATE_DIR", device.dir())
        .env("HOME", device.home())
        .kill_on_drop(true);
    run_to_end(cmd, stdin, Duration::from_secs(120), "tessera").await
}

/// A `tessera agent run` child process on a device's state directory,
/// logging to a file; killed when dropped.
pub struct AgentProcess {
    pub child: tokio::process::Child,
    pub log_path: PathBuf,
    _log_dir: TempDir,
}

impl AgentProcess {
    /// Starts the agent and waits until the server sees it online. It
    /// saves received files in [`TestDevice::inbox`].
    pub async fn start(server: &TestServer, device: &TestDevice) -> AgentProcess {
        Self::start_with(server, device, Some(&device.inbox())).await
    }

    /// [`AgentProcess::start`] with the inbox given through
    /// `TESSERA_INBOX`, or none (the agent's default, inside the device's
    /// own [`TestDevice::home`]: the real home is never touched).
    pub async fn start_with(
        server: &TestServer,
        device: &TestDevice,
        inbox: Option<&Path>,
    ) -> AgentProcess {
        Self::launch_agent(server, device, inbox, &[], &[]).await
    }

    /// Starts the agent with the X display `display` as its `$DISPLAY` (the
    /// screen it captures), and waits until the server sees it online.
    pub async fn start_on_display(
        server: &TestServer,
        device: &TestDevice,
        display: &str,
    ) -> AgentProcess {
        Self::launch_agent(
            server,
            device,
            Some(&device.inbox()),
            &[("DISPLAY", display)],
            &[],
        )
        .await
    }

    /// Like [`AgentProcess::start_on_display`], with more environment
    /// (e.g. a debug build's test hooks).
    pub async fn start_on_display_with_env(
        server: &TestServer,
        device: &TestDevice,
        display: &str,
        env: &[(&str, &str)],
    ) -> AgentProcess {
        let mut all = vec![("DISPLAY", display)];
        all.extend_from_slice(env);
        Self::launch_agent(server, device, Some(&device.inbox()), &all, &[]).await
    }

    /// Starts `tessera agent run ARGS` (e.g. `--server URL` for the nodes
    /// beside the one the device enrolled with) and waits until `online_on`
    /// sees it online.
    pub async fn start_with_args(
        online_on: &TestServer,
        device: &TestDevice,
        args: &[&str],
    ) -> AgentProcess {
        Self::launch_agent(online_on, device, Some(&device.inbox()), &[], args).await
    }

    /// Starts `tessera agent run ARGS` without waiting for it to come
    /// online (when the server it goes to is a child process, say): the
    /// test watches for that itself.
    pub fn spawn_with_args(device: &TestDevice, args: &[&str]) -> AgentProcess {
        Self::spawn(device, Some(&device.inbox()), &[], args)
    }

    async fn launch_agent(
        server: &TestServer,
        device: &TestDevice,
        inbox: Option<&Path>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> AgentProcess {
        let p = Self::spawn(device, inbox, env, args);
        let (state, id) = (server.state.clone(), device.device_id.clone());
        assert!(
            crate::eventually(Duration::from_secs(20), || {
                let (state, id) = (state.clone(), id.clone());
                async move { state.registry().is_connected(&id) }
            })
            .await,
            "agent process online; log: {}",
            p.log()
        );
        p
    }

    fn spawn(
        device: &TestDevice,
        inbox: Option<&Path>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> AgentProcess {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log_path = log_dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = tokio::process::Command::new(tessera_bin());
        cmd.args(["agent", "run", "--state-dir"])
            .arg(device.dir())
            .args(args)
            .env("HOME", device.home())
            .env_remove("TESSERA_SERVER")
            .env_remove("XDG_DOWNLOAD_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("TESSERA_INBOX");
        if let Some(inbox) = inbox {
            cmd.env("TESSERA_INBOX", inbox);
        }
        let child = cmd
            .env("TESSERA_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tessera agent run");
        AgentProcess {
            child,
            log_path,
            _log_dir: log_dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }
}

/// A numeric field of `/proc/<pid>/status` in kB (e.g. `VmRSS:`).
pub fn proc_status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// Peak resident memory of a live process, in bytes (Linux `VmHWM`).
pub fn peak_rss(pid: u32) -> u64 {
    proc_status_kb(pid, "VmHWM:").expect("VmHWM") * 1024
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// User + system CPU time of a process, from /proc/<pid>/stat.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces, in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second() as f64,
    ))
}
