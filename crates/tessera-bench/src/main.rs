//! `tessera-bench`: measures a real `tessera server` process with real
//! device and viewer clients over loopback sockets, and prints a table and
//! JSON. Build it in release (`cargo build --release -p tessera -p
//! tessera-bench`); it runs the `tessera` binary beside it.

mod device;
mod flows;
mod report;
mod result;
mod server;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "tessera-bench",
    about = "Measure the relay, connections, sessions and ingestion"
)]
struct Cli {
    /// Small sizes, for a smoke test (no figure is meaningful).
    #[arg(long, global = true)]
    quick: bool,
    /// The database the server runs on.
    #[arg(long, global = true, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Also write the result as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// The `tessera` binary (default: beside this one).
    #[arg(long, global = true, env = "TESSERA_BIN")]
    server_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Subcommand)]
enum Command {
    /// Bulk bytes device → viewer through a session, against a direct
    /// WebSocket and raw TCP on loopback.
    RelayThroughput {
        /// Bytes to move (default 1 GiB; quick 32 MiB).
        #[arg(long)]
        bytes: Option<u64>,
    },
    /// 100-byte round trips viewer → device → viewer, through the relay
    /// and direct.
    RelayLatency {
        /// Round trips (default 20,000; quick 500).
        #[arg(long)]
        round_trips: Option<usize>,
    },
    /// 100-byte messages device → viewer and viewer → device at once, at
    /// full speed; messages per server CPU-second.
    RelayMessages {
        /// Messages each way (default 200,000; quick 2,000).
        #[arg(long)]
        messages: Option<u64>,
    },
    /// Idle device + viewer pairs (a session each, nothing flowing):
    /// server memory per pair.
    IdlePairs {
        /// Pairs (default 2,000; quick 40).
        #[arg(long)]
        pairs: Option<usize>,
    },
    /// One device, 1/10/50 viewers; and one stalled viewer among 10.
    Fanout {
        /// Bytes the device sends per case (default 256 MiB; quick 40 MiB:
        /// more than a viewer's 16 MiB queue, so the stalled one is cut off).
        #[arg(long)]
        bytes: Option<u64>,
    },
    /// Many authenticated, heartbeating device connections held idle.
    IdleDevices {
        /// Devices (default 10,000; quick 200). Raise `ulimit -n` first.
        #[arg(long)]
        devices: Option<usize>,
    },
    /// Many devices connecting at once.
    ConnectStorm {
        /// Devices (default 2,000; quick 100).
        #[arg(long)]
        devices: Option<usize>,
    },
    /// Two nodes on one PostgreSQL database through NATS: a device on node
    /// one, its viewer on node one (same node) against node two (cross
    /// node); throughput and 100-byte round trips. Always on PostgreSQL.
    ClusterRelay {
        /// Bytes to move per case (default 1 GiB; quick 8 MiB).
        #[arg(long)]
        bytes: Option<u64>,
        /// Round trips per case (default 20,000; quick 300).
        #[arg(long)]
        round_trips: Option<usize>,
    },
    /// Idle devices spread over three nodes, against one node holding a
    /// third of them alone. Always on PostgreSQL.
    ClusterIdle {
        /// Devices over the three nodes (default 30,000; quick 300). Raise
        /// `ulimit -n` first.
        #[arg(long)]
        devices: Option<usize>,
    },
    /// Devices spread over three nodes with alternates; one node killed
    /// with SIGKILL; time until its devices are online on the others.
    /// Always on PostgreSQL.
    ClusterStorm {
        /// Devices (default 10,000; quick 99).
        #[arg(long)]
        devices: Option<usize>,
    },
    /// Automatic sessions of 2, 4 and 8 members, end-to-end keys set up.
    SessionSetup {
        /// Sessions per size (default 30; quick 3).
        #[arg(long)]
        sessions: Option<usize>,
    },
    /// Event batches with 0 % and 50 % duplicates; audit appends.
    Ingest {
        /// Batches of 500 events per case (default 200; quick 6).
        #[arg(long)]
        batches: Option<usize>,
    },
    /// The web console's devices, sessions and audit pages at fleet size,
    /// seeded straight into the database.
    ConsolePages {
        /// Devices (default 10,000; quick 200).
        #[arg(long)]
        devices: Option<usize>,
        /// Sessions, one in a hundred live (default 20,000; quick 500).
        #[arg(long)]
        sessions: Option<usize>,
        /// Audit rows (default 1,000,000; quick 20,000).
        #[arg(long)]
        audit_rows: Option<usize>,
    },
    /// The screen encoders alone on one core at 1920×1080: raw-zstd
    /// keyframes, typing and scrolling deltas; H.264 full-screen motion (no
    /// server needed).
    ScreenEncode {
        /// Frames per case (default 100; quick 10).
        #[arg(long)]
        frames: Option<usize>,
    },
    /// The whole screen path at 1920×1080 on its own Xvfb: a real agent,
    /// server and viewer; idle, typing (10 keys/s, key-to-pixel), scroll
    /// (60 lines/s), window move (30/s), full-screen motion (30 fps).
    ScreenWorkloads {
        /// Negotiate H.264 (server `--screen-codec prefer-h264`, a viewer
        /// that decodes it) instead of raw-zstd.
        #[arg(long)]
        h264: bool,
    },
    /// Turns result files (`*.json`) into docs/BENCHMARKS.md and its chart.
    Report {
        /// Directory of result files from several runs.
        #[arg(long)]
        results: PathBuf,
        /// Markdown to write.
        #[arg(long, default_value = "docs/BENCHMARKS.md")]
        out: PathBuf,
        /// SVG chart to write.
        #[arg(long, default_value = "docs/benchmarks.svg")]
        chart: PathBuf,
        /// Hand-written reading of the figures (what limits the goals not
        /// met), placed after the goals table if the file exists.
        #[arg(long, default_value = "docs/benchmarks-analysis.md")]
        analysis: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The enrollment clients build their own reqwest clients.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The encoder benchmark needs no server (nor its binary).
    let needs_server = !matches!(cli.command, Command::ScreenEncode { .. });
    let opts = server::Opts {
        backend: cli.backend,
        bin: match cli.server_bin {
            Some(b) => b,
            None if needs_server => server::default_bin()?,
            None => PathBuf::new(),
        },
    };
    let q = cli.quick;
    let result = match cli.command {
        Command::Report {
            results,
            out,
            chart,
            analysis,
        } => return report::write(&results, &out, &chart, &analysis),
        Command::RelayThroughput { bytes } => {
            flows::relay_throughput(&opts, bytes.unwrap_or(if q { 32 << 20 } else { 1 << 30 }))
                .await?
        }
        Command::RelayLatency { round_trips } => {
            flows::relay_latency(&opts, round_trips.unwrap_or(if q { 500 } else { 20_000 })).await?
        }
        Command::RelayMessages { messages } => {
            flows::relay_messages(&opts, messages.unwrap_or(if q { 2_000 } else { 200_000 }))
                .await?
        }
        Command::IdlePairs { pairs } => {
            flows::idle_pairs(&opts, pairs.unwrap_or(if q { 40 } else { 2_000 })).await?
        }
        Command::Fanout { bytes } => {
            flows::fanout(
                &opts,
                bytes.unwrap_or(if q { 40 << 20 } else { 256 << 20 }),
                q,
            )
            .await?
        }
        Command::IdleDevices { devices } => {
            flows::idle_devices(&opts, devices.unwrap_or(if q { 200 } else { 10_000 }), q).await?
        }
        Command::ConnectStorm { devices } => {
            flows::connect_storm(&opts, devices.unwrap_or(if q { 100 } else { 2_000 })).await?
        }
        Command::ClusterRelay { bytes, round_trips } => {
            flows::cluster_relay(
                &opts,
                bytes.unwrap_or(if q { 8 << 20 } else { 1 << 30 }),
                round_trips.unwrap_or(if q { 300 } else { 20_000 }),
            )
            .await?
        }
        Command::ClusterIdle { devices } => {
            flows::cluster_idle(&opts, devices.unwrap_or(if q { 300 } else { 30_000 }), q).await?
        }
        Command::ClusterStorm { devices } => {
            flows::cluster_storm(&opts, devices.unwrap_or(if q { 99 } else { 10_000 })).await?
        }
        Command::SessionSetup { sessions } => {
            flows::session_setup(&opts, sessions.unwrap_or(if q { 3 } else { 30 })).await?
        }
        Command::ConsolePages {
            devices,
            sessions,
            audit_rows,
        } => {
            let fleet = flows::Fleet {
                devices: devices.unwrap_or(if q { 200 } else { 10_000 }).max(1),
                sessions: sessions.unwrap_or(if q { 500 } else { 20_000 }),
                audit_rows: audit_rows.unwrap_or(if q { 20_000 } else { 1_000_000 }),
            };
            flows::console_pages(&opts, fleet).await?
        }
        Command::ScreenEncode { frames } => {
            flows::screen_encode(frames.unwrap_or(if q { 10 } else { 100 })).await?
        }
        Command::ScreenWorkloads { h264 } => flows::screen_workloads(&opts, q, h264).await?,
        Command::Ingest { batches } => {
            flows::ingest(&opts, batches.unwrap_or(if q { 6 } else { 200 }), q).await?
        }
    };
    let result = result.with_run(q, cli.backend);
    result.print();
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
    }
    if !result.all_checks_hold() {
        anyhow::bail!("a check failed (see above)");
    }
    Ok(())
}
