//! The server under test: a `tessera server` child process (started by
//! `tessera_testkit::ServerProcess`) on an ephemeral loopback port, on a
//! fresh SQLite file or a fresh PostgreSQL database, and what /proc says
//! about it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tessera_client::ApiClient;
use tessera_core::api::SecretString;
use tessera_testkit::{ServerProcess, TestDb};

use crate::Backend;

pub(crate) struct Opts {
    pub backend: Backend,
    pub bin: PathBuf,
}

impl Opts {
    /// The same binary on PostgreSQL: what several nodes share.
    pub(crate) fn on_postgres(&self) -> Opts {
        Opts {
            backend: Backend::Postgres,
            bin: self.bin.clone(),
        }
    }
}

/// The `tessera` binary beside this one.
pub(crate) fn default_bin() -> anyhow::Result<PathBuf> {
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

pub(crate) struct Server {
    process: ServerProcess,
    pub url: String,
    pub admin_password: String,
    /// The PostgreSQL database, dropped with the server.
    db: Option<TestDb>,
}

impl Server {
    /// Starts a server with `extra` flags and waits until it listens.
    pub(crate) async fn start(opts: &Opts, extra: &[&str]) -> anyhow::Result<Server> {
        let db = match opts.backend {
            // The server's default database in its data directory.
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                TestDb::create(
                    tessera_testkit::Backend::Postgres,
                    &pg_admin_url(),
                    &format!("tessera_bench_{}_", std::process::id()),
                )
                .await?,
            ),
        };
        let database_url = db.as_ref().map(|d| d.url.as_str());
        let process = ServerProcess::launch(&opts.bin, database_url, "warn", extra).await?;
        let admin_password = process
            .bootstrap_password()
            .ok_or_else(|| anyhow!("no bootstrap password printed"))?;
        Ok(Server {
            url: process.url.clone(),
            process,
            admin_password,
            db,
        })
    }

    pub(crate) fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(
            &self.url,
            &tessera_client::TlsTrust::PublicRoots,
        )?)
    }

    /// An API client logged in as the bootstrap admin.
    pub(crate) async fn admin(&self) -> anyhow::Result<ApiClient> {
        let c = self.client()?;
        let login = c
            .login("admin", SecretString::new(self.admin_password.clone()))
            .await?;
        Ok(c.with_token(login.token))
    }

    /// The database the server uses, for seeding it directly.
    pub(crate) fn database_url(&self) -> String {
        match &self.db {
            Some(d) => d.url.clone(),
            None => format!(
                "sqlite://{}",
                self.process.data_dir().join("tessera.db").display()
            ),
        }
    }

    pub(crate) fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        self.process.addr()
    }

    /// Resident memory now, in bytes.
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        tessera_testkit::proc_status_kb(self.process.pid()?, "VmRSS:").map(|kb| kb * 1024)
    }

    /// CPU time used so far (user + system).
    pub(crate) fn cpu(&self) -> anyhow::Result<Duration> {
        tessera_testkit::cpu_time(self.process.pid()?)
    }

    /// Ends the process with SIGKILL, as a crashed or lost machine: no
    /// lease given back, no connection closed cleanly.
    pub(crate) async fn kill(&mut self) -> anyhow::Result<()> {
        self.process.child.kill().await?;
        Ok(())
    }
}

/// The NATS server the nodes of a cluster route through.
fn nats_url() -> String {
    std::env::var("TESSERA_BENCH_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Several `tessera server` nodes on one fresh PostgreSQL database,
/// routing through NATS (issue 15). The first node owns the database (it
/// drops it); the others are stopped before it.
pub(crate) struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts `n` nodes with `extra` flags, one after the other, and waits
    /// until each listens. Always on PostgreSQL, whatever `--backend` says.
    pub(crate) async fn start(opts: &Opts, n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        let opts = opts.on_postgres();
        let nats = nats_url();
        let mut flags = extra.to_vec();
        flags.extend(["--nats-url", nats.as_str()]);
        let first = Server::start(&opts, &flags).await?;
        let database_url = first.database_url();
        let admin_password = first.admin_password.clone();
        let mut nodes = vec![first];
        for _ in 1..n {
            let process =
                ServerProcess::launch(&opts.bin, Some(&database_url), "warn", &flags).await?;
            nodes.push(Server {
                url: process.url.clone(),
                process,
                admin_password: admin_password.clone(),
                db: None,
            });
        }
        Ok(Cluster { nodes })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The later nodes first: the first one drops the database.
        while let Some(node) = self.nodes.pop() {
            drop(node);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.child.start_kill();
        if let Some(name) = self.db.as_ref().and_then(|d| d.pg_name.as_deref()) {
            // The server may still hold connections for a moment.
            std::thread::sleep(Duration::from_millis(200));
            let _ = psql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
        }
    }
}
