//! A PostgreSQL server of the test's own, for faults that cannot be made
//! on the shared one: stopping the database under a running Tessera
//! server. `initdb` makes a cluster in a temporary directory, `pg_ctl`
//! starts it on a free loopback port (trust authentication, user
//! `postgres`, no Unix socket outside that directory) and stops it the way
//! a crash would (`-m immediate`).
//!
//! PostgreSQL refuses to run as root: when the test runs as root, the
//! cluster belongs to the `postgres` user and every command runs through
//! `runuser -u postgres --`.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use tempfile::TempDir;

/// A private PostgreSQL cluster; stopped at once when dropped.
pub struct PrivatePostgres {
    cluster: Cluster,
    /// Removed after the cluster is stopped (fields drop after `drop`).
    _dir: TempDir,
}

impl PrivatePostgres {
    /// The directory holding `initdb` and `pg_ctl`: `TESSERA_TEST_PG_BIN`,
    /// else the newest `/usr/lib/postgresql/<version>/bin`, else the
    /// directory on `PATH` that has both. `None` when there is none.
    pub fn bin_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("TESSERA_TEST_PG_BIN") {
            return Some(PathBuf::from(dir));
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Some(bin);
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    }

    /// Creates a cluster and starts it; waits until it accepts connections.
    pub async fn start() -> anyhow::Result<PrivatePostgres> {
        let bin =
            Self::bin_dir().context("no initdb: PostgreSQL's server binaries are not installed")?;
        let dir = tempfile::Builder::new().prefix("tessera-pg-").tempdir()?;
        let as_postgres = std::fs::metadata("/proc/self")?.uid() == 0;
        let cluster = Cluster {
            bin,
            port: free_port()?,
            as_postgres,
            root: dir.path().to_owned(),
        };
        let pg = PrivatePostgres { cluster, _dir: dir };
        pg.blocking(Cluster::create).await?;
        Ok(pg)
    }

    /// The URL of its `postgres` database (trust authentication).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.cluster.port
        )
    }

    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// Stops it the way a crash would: every backend ends at once,
    /// nothing is flushed or checkpointed, open connections break.
    pub async fn stop_immediately(&self) -> anyhow::Result<()> {
        self.blocking(Cluster::stop).await
    }

    /// Starts it again on the same port and data (crash recovery runs
    /// first); waits until it accepts connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        self.blocking(Cluster::start).await
    }

    async fn blocking(&self, f: fn(&Cluster) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || f(&cluster))
            .await
            .context("the PostgreSQL tool's task")?
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Already stopped is fine.
        let _ = self.cluster.stop();
    }
}

/// Where the cluster lives and how its tools are run.
#[derive(Clone)]
struct Cluster {
    bin: PathBuf,
    port: u16,
    /// Run the tools as the `postgres` user (the test runs as root).
    as_postgres: bool,
    root: PathBuf,
}

impl Cluster {
    fn create(&self) -> anyhow::Result<()> {
        if self.as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&self.root))?;
        }
        self.tool(
            "initdb",
            &[
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--no-instructions",
                "--encoding=UTF8",
                "-D",
            ],
            &[&self.data()],
        )?;
        self.start()
    }

    fn start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={}",
            self.port,
            self.root.display()
        );
        let log = self.root.join("postgres.log");
        self.tool(
            "pg_ctl",
            &["start", "-w", "-t", "60", "-o", &options, "-l"],
            &[&log, Path::new("-D"), &self.data()],
        )
        .with_context(|| format!("log: {}", std::fs::read_to_string(&log).unwrap_or_default()))
    }

    fn stop(&self) -> anyhow::Result<()> {
        self.tool(
            "pg_ctl",
            &["stop", "-m", "immediate", "-w", "-D"],
            &[&self.data()],
        )
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Runs `bin/name args paths…`, as `postgres` through `runuser` when
    /// the test runs as root.
    fn tool(&self, name: &str, args: &[&str], paths: &[&Path]) -> anyhow::Result<()> {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        run(cmd.args(args).args(paths).current_dir(&self.root))
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
