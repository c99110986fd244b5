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

pub(crate) async fn idle_devices(
    opts: &Opts,
    n: usize,
    quick: bool,
) -> anyhow::Result<BenchResult> {
    let heartbeat = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(15)
    };
    let window = heartbeat * 2;
    let mut r = BenchResult::new(
        "idle-devices",
        json!({"devices": n, "heartbeat_s": heartbeat.as_secs(), "cpu_window_s": window.as_secs()}),
    );
    let hb = format!("{}s", heartbeat.as_secs());
    let mut flags = SERVER_FLAGS.to_vec();
    flags.extend(["--heartbeat-interval", hb.as_str()]);
    let server = Server::start(opts, &flags).await?;
    let admin = server.admin().await?;
    let mut devices = device::enroll(&server, &admin, n).await?;
    let addr = server.addr()?;
    let acks = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    // Two halves: memory per connection is the growth over the second
    // half, so what the first connections warm up once (database cache,
    // allocator arenas, the registry's tables) is not charged to each.
    let second = devices.split_off(n / 2);
    let (conns, _, failed_a) = connect_all(addr, devices, 64).await;
    for ws in conns {
        hold(ws, heartbeat, acks.clone(), open.clone());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = server.rss()?;
    let half = second.len();
    let (conns, _, failed_b) = connect_all(addr, second, 64).await;
    let failed = failed_a + failed_b;
    for ws in conns {
        hold(ws, heartbeat, acks.clone(), open.clone());
    }
    // Let the connect burst settle, then measure a quiet window.
    tokio::time::sleep(heartbeat.max(Duration::from_secs(2))).await;
    let rss1 = server.rss()?;
    let cpu0 = server.cpu()?;
    let acks0 = acks.load(Ordering::Relaxed);
    let w0 = Instant::now();
    tokio::time::sleep(window).await;
    let wall = w0.elapsed();
    let cpu = server.cpu()? - cpu0;
    let answered = acks.load(Ordering::Relaxed) - acks0;
    let held = open.load(Ordering::Relaxed);
    r.figure("connections held", held as f64, "");
    r.figure("failed connects", failed as f64, "");
    r.figure(
        "server RSS per connection",
        (rss1.saturating_sub(rss0)) as f64 / half.max(1) as f64 / 1024.0,
        "KiB",
    );
    r.figure(
        "server RSS with all connected",
        rss1 as f64 / (1 << 20) as f64,
        "MiB",
    );
    r.figure(
        "server CPU while idle",
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        "% of one core",
    );
    r.figure(
        "heartbeats answered per second",
        answered as f64 / wall.as_secs_f64(),
        "/s",
    );
    r.check("every device stayed connected", held == n && failed == 0);
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
