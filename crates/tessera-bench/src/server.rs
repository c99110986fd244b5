//! The server under test: a `tessera server` child process on an ephemeral
//! loopback port, on a fresh SQLite file or a fresh PostgreSQL database,
//! and what /proc says about it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tessera_client::{ApiClient, TlsTrust};
use tessera_core::api::SecretString;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Backend;

pub struct Opts {
    pub backend: Backend,
    pub bin: PathBuf,
}

/// The `tessera` binary beside this one.
pub fn default_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("tessera");
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p tessera) or pass --server-bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn pg_admin_url() -> String {
    std::env::var("TESSERA_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn psql(sql: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("psql")
        .arg(pg_admin_url())
        .args(["-q", "-c", sql])
        .output()
        .context("psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

pub struct Server {
    child: tokio::process::Child,
    pub url: String,
    pub admin_password: String,
    pg_database: Option<String>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server with `extra` flags and waits until it listens.
    pub async fn start(opts: &Opts, extra: &[&str]) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let (database_url, pg_database) = match opts.backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let name = format!(
                    "tessera_bench_{}_{}",
                    std::process::id(),
                    tessera_core::secret::hex(&tessera_core::secret::random_bytes::<4>())
                );
                psql(&format!("CREATE DATABASE \"{name}\""))?;
                let admin = pg_admin_url();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                (Some(format!("{base}/{name}")), Some(name))
            }
        };
        let mut cmd = tokio::process::Command::new(&opts.bin);
        cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .env("TESSERA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(
                dir.path().join("server.log"),
            )?))
            .kill_on_drop(true);
        if let Some(url) = &database_url {
            cmd.env("TESSERA_DATABASE_URL", url);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut password = None;
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(p) = line.trim().strip_prefix("password: ") {
                    password = Some(p.to_owned());
                }
                if let Some(url) = line.strip_prefix("tessera server listening on ") {
                    return Ok::<_, anyhow::Error>(url.to_owned());
                }
            }
            bail!("the server exited before listening")
        })
        .await
        .context("the server did not listen within 60 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child,
            url,
            admin_password: password.ok_or_else(|| anyhow!("no bootstrap password printed"))?,
            pg_database,
            _dir: dir,
        })
    }

    pub fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(&self.url, &TlsTrust::PublicRoots)?)
    }

    /// An API client logged in as the bootstrap admin.
    pub async fn admin(&self) -> anyhow::Result<ApiClient> {
        let c = self.client()?;
        let login = c
            .login("admin", SecretString::new(self.admin_password.clone()))
            .await?;
        Ok(c.with_token(login.token))
    }

    pub fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("expected http"))?;
        Ok(rest.parse()?)
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().ok_or_else(|| anyhow!("the server exited"))
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        proc_status_kb(self.pid()?, "VmRSS:").map(|kb| kb * 1024)
    }

    /// CPU time used so far (user + system).
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(db) = &self.pg_database {
            // The server may still hold connections for a moment.
            std::thread::sleep(Duration::from_millis(200));
            let _ = psql(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
        }
    }
}

fn proc_status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
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
