//! Connection benchmarks: many idle, heartbeating device connections, and
//! many devices connecting at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tessera_proto::v1::Heartbeat;
use tessera_proto::Body;

use crate::device::{self, frame, local_ip, recv, Device};
use crate::result::BenchResult;
use crate::server::{Opts, Server};
use crate::stats::{millis, percentile};

use super::*;

/// Holds one device connection: heartbeats at `every`, counting answers.
pub(super) fn hold(ws: device::Ws, every: Duration, acks: Arc<AtomicU64>, open: Arc<AtomicUsize>) {
    open.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    seq += 1;
                    if sink.send(frame(Body::Heartbeat(Heartbeat { seq }))).await.is_err() {
                        break;
                    }
                }
                body = recv(&mut stream) => match body {
                    Some(Body::HeartbeatAck(_)) => { acks.fetch_add(1, Ordering::Relaxed); }
                    Some(_) => {}
                    None => break,
                },
            }
        }
        open.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Connects every device, `concurrency` at a time, spread over source
/// addresses; returns (connections, time each took, failures).
async fn connect_all(
    addr: SocketAddr,
    devices: Vec<Device>,
    concurrency: usize,
) -> (Vec<device::Ws>, Vec<Duration>, usize) {
    let results: Vec<(anyhow::Result<device::Ws>, Duration)> =
        futures_util::stream::iter(devices.into_iter().enumerate())
            .map(|(i, d)| async move {
                let t0 = Instant::now();
                let r = device::connect(addr, &d, local_ip(i)).await;
                (r, t0.elapsed())
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let mut conns = Vec::new();
    let mut times = Vec::new();
    let mut failed = 0;
    for (r, t) in results {
        match r {
            Ok(ws) => {
                conns.push(ws);
                times.push(t);
            }
            Err(e) => {
                if failed == 0 {
                    eprintln!("first failed connect: {e:#}");
                }
                failed += 1;
            }
        }
    }
    (conns, times, failed)
}

/// What one node showed while holding its share of idle devices.
pub(super) struct NodeIdle {
    /// Resident memory growth per connection over the second half of its
    /// devices, in KiB.
    pub rss_per_connection_kib: f64,
    /// Resident memory with all its devices connected, in MiB.
    pub rss_mib: f64,
    /// CPU (user + system) over the quiet window, in % of one core.
    pub cpu_percent: f64,
}

/// Idle devices held on one or several nodes.
pub(super) struct Idle {
    pub nodes: Vec<NodeIdle>,
    pub held: usize,
    pub failed: usize,
    pub heartbeats_per_s: f64,
}

/// Enrolls `n` devices, spreads them over `nodes` (device `i` on node
/// `i mod nodes`), holds them heartbeating at `heartbeat`, and measures
/// each node's memory and, over two heartbeats of quiet, its CPU.
pub(super) async fn hold_idle(
    nodes: &[Server],
    admin: &ApiClient,
    n: usize,
    heartbeat: Duration,
) -> anyhow::Result<Idle> {
    let first = nodes.first().ok_or_else(|| anyhow!("no node"))?;
    let devices = device::enroll(first, admin, n).await?;
    let mut shares: Vec<Vec<Device>> = nodes.iter().map(|_| Vec::new()).collect();
    for (i, d) in devices.into_iter().enumerate() {
        shares[i % nodes.len()].push(d);
    }
    let acks = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    // Two halves: memory per connection is the growth over the second
    // half, so what the first connections warm up once (database cache,
    // allocator arenas, the registry's tables) is not charged to each.
    let seconds: Vec<Vec<Device>> = shares
        .iter_mut()
        .map(|s| s.split_off(s.len() / 2))
        .collect();
    let mut failed = 0;
    for (node, share) in nodes.iter().zip(shares) {
        let (conns, _, f) = connect_all(node.addr()?, share, 64).await;
        failed += f;
        for ws in conns {
            hold(ws, heartbeat, acks.clone(), open.clone());
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = nodes
        .iter()
        .map(Server::rss)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let halves: Vec<usize> = seconds.iter().map(Vec::len).collect();
    for (node, share) in nodes.iter().zip(seconds) {
        let (conns, _, f) = connect_all(node.addr()?, share, 64).await;
        failed += f;
        for ws in conns {
            hold(ws, heartbeat, acks.clone(), open.clone());
        }
    }
    // Let the connect burst settle, then measure a quiet window.
    tokio::time::sleep(heartbeat.max(Duration::from_secs(2))).await;
    let rss1 = nodes
        .iter()
        .map(Server::rss)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cpu0 = nodes
        .iter()
        .map(Server::cpu)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let acks0 = acks.load(Ordering::Relaxed);
    let w0 = Instant::now();
    tokio::time::sleep(heartbeat * 2).await;
    let wall = w0.elapsed();
    let cpu1 = nodes
        .iter()
        .map(Server::cpu)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let answered = acks.load(Ordering::Relaxed) - acks0;
    let per_node = (0..nodes.len())
        .map(|k| NodeIdle {
            rss_per_connection_kib: rss1[k].saturating_sub(rss0[k]) as f64
                / halves[k].max(1) as f64
                / 1024.0,
            rss_mib: rss1[k] as f64 / (1 << 20) as f64,
            cpu_percent: cpu1[k].saturating_sub(cpu0[k]).as_secs_f64() / wall.as_secs_f64() * 100.0,
        })
        .collect();
    Ok(Idle {
        nodes: per_node,
        held: open.load(Ordering::Relaxed),
        failed,
        heartbeats_per_s: answered as f64 / wall.as_secs_f64(),
    })
}

/// The heartbeat the idle benchmarks run with: the server's default
/// interval, or one second for a smoke run.
pub(super) fn idle_heartbeat(quick: bool) -> Duration {
    if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(15)
    }
}

pub(crate) async fn idle_devices(
    opts: &Opts,
    n: usize,
    quick: bool,
) -> anyhow::Result<BenchResult> {
    let heartbeat = idle_heartbeat(quick);
    let mut r = BenchResult::new(
        "idle-devices",
        json!({"devices": n, "heartbeat_s": heartbeat.as_secs(), "cpu_window_s": (heartbeat * 2).as_secs()}),
    );
    let hb = format!("{}s", heartbeat.as_secs());
    let mut flags = SERVER_FLAGS.to_vec();
    flags.extend(["--heartbeat-interval", hb.as_str()]);
    let server = Server::start(opts, &flags).await?;
    let admin = server.admin().await?;
    let idle = hold_idle(std::slice::from_ref(&server), &admin, n, heartbeat).await?;
    let node = idle.nodes.first().ok_or_else(|| anyhow!("no node"))?;
    r.figure("connections held", idle.held as f64, "");
    r.figure("failed connects", idle.failed as f64, "");
    r.figure(
        "server RSS per connection",
        node.rss_per_connection_kib,
        "KiB",
    );
    r.figure("server RSS with all connected", node.rss_mib, "MiB");
    r.figure("server CPU while idle", node.cpu_percent, "% of one core");
    r.figure(
        "heartbeats answered per second",
        idle.heartbeats_per_s,
        "/s",
    );
    r.check(
        "every device stayed connected",
        idle.held == n && idle.failed == 0,
    );
    Ok(r)
}

pub(crate) async fn connect_storm(opts: &Opts, n: usize) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new("connect-storm", json!({"devices": n}));
    let server = Server::start(opts, &SERVER_FLAGS).await?;
    let admin = server.admin().await?;
    let devices = device::enroll(&server, &admin, n).await?;
    let t0 = Instant::now();
    let (conns, mut times, failed) = connect_all(server.addr()?, devices, n).await;
    let all = t0.elapsed();
    // The server's own view: every device listed online.
    let online = admin
        .list_devices()
        .await?
        .iter()
        .filter(|d| d.online)
        .count();
    r.figure("devices connected", conns.len() as f64, "");
    r.figure("rejected or failed", failed as f64, "");
    r.figure("time until all online", millis(all), "ms");
    r.figure("connect p50", millis(percentile(&mut times, 50.0)), "ms");
    r.figure("connect p99", millis(percentile(&mut times, 99.0)), "ms");
    r.figure(
        "connects per second",
        conns.len() as f64 / all.as_secs_f64(),
        "/s",
    );
    r.check("the server lists every device online", online == n);
    Ok(r)
}
