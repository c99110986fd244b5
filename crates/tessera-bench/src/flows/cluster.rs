//! Several nodes (issue 15): `tessera server` processes on one PostgreSQL
//! database routing through NATS. The relay across nodes against the same
//! node, idle devices spread over three nodes against one node, and a node
//! killed under a fleet whose devices move to the others.
//!
//! Always on PostgreSQL (`TESSERA_BENCH_PG_URL`, a fresh database per
//! run) and the NATS server at `TESSERA_BENCH_NATS_URL` (default
//! nats://127.0.0.1:4222), whatever `--backend` says.
//!
//! Each figure is taken against its single-node counterpart in the same
//! run, on the same machine, so the ratios mean something even where the
//! absolute figures are those of a shared 2-core box.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tessera_agent::control::failover::{Failover, DEFAULT_MAX_BACKOFF};
use tessera_client::viewer::ViewerEvent;
use tessera_client::ApiClient;
use tessera_proto::v1::Heartbeat;
use tessera_proto::Body;

use crate::device::{self, frame, local_ip, recv, Device};
use crate::result::BenchResult;
use crate::server::{Cluster, Opts, Server};
use crate::stats::{mb_per_s, micros, millis, percentile};

use super::devices::{hold_idle, idle_heartbeat};
use super::*;

/// A device on `node` with a session, and a viewer admitted through
/// `viewer_admin` (a client of the same node or of another one).
async fn device_and_viewer(
    node: &Server,
    admin: &ApiClient,
    viewer_admin: &ApiClient,
) -> anyhow::Result<(device::Ws, String, ViewerSender, ViewerReceiver)> {
    let (ws, session) = device_with_session(node, admin).await?;
    let (tx, rx) = join(viewer_admin, &session).await?;
    Ok((ws, session, tx, rx))
}

/// `blocks` numbered 64 KiB blocks device → viewer; MB/s, every byte in
/// order, and the CPU all `nodes` spent.
async fn throughput_case(
    nodes: &[Server],
    admin: &ApiClient,
    viewer_admin: &ApiClient,
    blocks: u64,
) -> anyhow::Result<(f64, bool, Duration)> {
    let bytes = blocks * CHUNK as u64;
    let (ws, session, _tx, mut rx) = device_and_viewer(&nodes[0], admin, viewer_admin).await?;
    let (mut sink, mut stream) = ws.split();
    let drain = tokio::spawn(async move { while recv(&mut stream).await.is_some() {} });
    let cpu0 = cpu_of(nodes)?;
    let t0 = Instant::now();
    let send = tokio::spawn(async move { blast(&mut sink, &session, blocks).await.map(|()| sink) });
    let (t1, ordered) = drain_viewer(&mut rx, bytes).await?;
    let cpu = cpu_of(nodes)?.saturating_sub(cpu0);
    let _sink = send.await??;
    drain.abort();
    Ok((mb_per_s(bytes, t1 - t0), ordered, cpu))
}

/// `warmup + n` 100-byte round trips viewer → device → viewer (the device
/// echoes); the last `n` times, and whether every reply came back in order.
async fn latency_case(
    node: &Server,
    admin: &ApiClient,
    viewer_admin: &ApiClient,
    warmup: usize,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, bool)> {
    let (ws, _session, mut tx, mut rx) = device_and_viewer(node, admin, viewer_admin).await?;
    let (mut sink, mut stream) = ws.split();
    let echo = tokio::spawn(async move {
        while let Some(body) = recv(&mut stream).await {
            if let Body::ChannelData(d) = body {
                if sink.send(output(&d.session_id, d.data)).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut samples = Vec::with_capacity(n);
    let mut ordered = true;
    for i in 0..(warmup + n) as u64 {
        let payload = small(i);
        let t0 = Instant::now();
        tx.input(&payload).await?;
        match rx.next().await {
            ViewerEvent::Output(d) => ordered &= d == payload,
            other => bail!("viewer: {other:?}"),
        }
        if i >= warmup as u64 {
            samples.push(t0.elapsed());
        }
    }
    echo.abort();
    Ok((samples, ordered))
}

/// A cluster result names its backend itself: the nodes are on PostgreSQL
/// whatever `--backend` says.
fn on_postgres(mut r: BenchResult) -> BenchResult {
    r.backend = "postgres".to_owned();
    r
}

fn cpu_of(nodes: &[Server]) -> anyhow::Result<Duration> {
    nodes.iter().map(Server::cpu).sum()
}

pub(crate) async fn cluster_relay(
    opts: &Opts,
    bytes: u64,
    round_trips: usize,
) -> anyhow::Result<BenchResult> {
    let blocks = bytes.div_ceil(CHUNK as u64);
    let bytes = blocks * CHUNK as u64;
    let warmup = (round_trips / 10).clamp(10, 1000);
    let mut r = on_postgres(BenchResult::new(
        "cluster-relay",
        json!({"nodes": 2, "bytes": bytes, "message_bytes": CHUNK,
               "round_trips": round_trips, "round_trip_bytes": 100, "warmup": warmup}),
    ));
    let cluster = Cluster::start(opts, 2, &SERVER_FLAGS).await?;
    let nodes = &cluster.nodes;
    let one = nodes[0].admin().await?;
    let two = nodes[1].admin().await?;

    // The device always on node one; the viewer on node one, then on two.
    let (same, same_ok, same_cpu) = throughput_case(nodes, &one, &one, blocks).await?;
    r.check("same node: every byte, in order", same_ok);
    let (cross, cross_ok, cross_cpu) = throughput_case(nodes, &one, &two, blocks).await?;
    r.check("cross node: every byte, in order", cross_ok);
    let (mut same_rt, same_ok) = latency_case(&nodes[0], &one, &one, warmup, round_trips).await?;
    r.check("same node: every reply, in order", same_ok);
    let (mut cross_rt, cross_ok) = latency_case(&nodes[0], &one, &two, warmup, round_trips).await?;
    r.check("cross node: every reply, in order", cross_ok);

    let gib = bytes as f64 / f64::from(1u32 << 30);
    r.figure("same node throughput", same, "MB/s");
    r.figure("cross node throughput", cross, "MB/s");
    r.figure("cross / same node throughput", cross / same, "ratio");
    r.figure(
        "same node: CPU of both nodes per GiB",
        same_cpu.as_secs_f64() / gib,
        "s",
    );
    r.figure(
        "cross node: CPU of both nodes per GiB",
        cross_cpu.as_secs_f64() / gib,
        "s",
    );
    let s = [50.0, 99.0].map(|q| micros(percentile(&mut same_rt, q)));
    let c = [50.0, 99.0].map(|q| micros(percentile(&mut cross_rt, q)));
    r.figure("same node round trip p50", s[0], "µs");
    r.figure("same node round trip p99", s[1], "µs");
    r.figure("cross node round trip p50", c[0], "µs");
    r.figure("cross node round trip p99", c[1], "µs");
    r.figure("added p50 across nodes", c[0] - s[0], "µs");
    r.figure("added p99 across nodes", c[1] - s[1], "µs");
    Ok(r)
}

pub(crate) async fn cluster_idle(
    opts: &Opts,
    n: usize,
    quick: bool,
) -> anyhow::Result<BenchResult> {
    const NODES: usize = 3;
    let heartbeat = idle_heartbeat(quick);
    let per_node = n / NODES;
    let mut r = on_postgres(BenchResult::new(
        "cluster-idle",
        json!({"devices": n, "nodes": NODES, "single_node_devices": per_node,
               "heartbeat_s": heartbeat.as_secs(), "cpu_window_s": (heartbeat * 2).as_secs()}),
    ));
    let hb = format!("{}s", heartbeat.as_secs());
    let mut flags = SERVER_FLAGS.to_vec();
    flags.extend(["--heartbeat-interval", hb.as_str()]);

    // One node alone (no NATS) holding one node's share: the baseline.
    let single = {
        let server = Server::start(&opts.on_postgres(), &flags).await?;
        let admin = server.admin().await?;
        hold_idle(std::slice::from_ref(&server), &admin, per_node, heartbeat).await?
    };
    r.check(
        "one node: every device stayed connected",
        single.held == per_node && single.failed == 0,
    );
    let cluster = Cluster::start(opts, NODES, &flags).await?;
    let admin = cluster.nodes[0].admin().await?;
    let spread = hold_idle(&cluster.nodes, &admin, n, heartbeat).await?;
    r.check(
        "three nodes: every device stayed connected",
        spread.held == n && spread.failed == 0,
    );

    let base = single.nodes.first().ok_or_else(|| anyhow!("no node"))?;
    let mean = |f: fn(&devices::NodeIdle) -> f64| {
        spread.nodes.iter().map(f).sum::<f64>() / spread.nodes.len().max(1) as f64
    };
    let max = |f: fn(&devices::NodeIdle) -> f64| {
        spread.nodes.iter().map(f).fold(f64::NEG_INFINITY, f64::max)
    };
    let mem = mean(|x| x.rss_per_connection_kib);
    let cpu = mean(|x| x.cpu_percent);
    r.figure(
        "one node: RSS per device",
        base.rss_per_connection_kib,
        "KiB",
    );
    r.figure(
        "one node: CPU while idle",
        base.cpu_percent,
        "% of one core",
    );
    r.figure("one node: RSS with all connected", base.rss_mib, "MiB");
    r.figure("three nodes: RSS per device (mean of nodes)", mem, "KiB");
    r.figure(
        "three nodes: RSS per device (worst node)",
        max(|x| x.rss_per_connection_kib),
        "KiB",
    );
    r.figure(
        "three nodes: CPU per node while idle (mean)",
        cpu,
        "% of one core",
    );
    r.figure(
        "three nodes: CPU per node while idle (worst node)",
        max(|x| x.cpu_percent),
        "% of one core",
    );
    r.figure(
        "three nodes: RSS per node with all connected (worst node)",
        max(|x| x.rss_mib),
        "MiB",
    );
    r.figure(
        "RSS per device, cluster / one node",
        mem / base.rss_per_connection_kib,
        "ratio",
    );
    r.figure(
        "CPU per node, cluster / one node",
        cpu / base.cpu_percent,
        "ratio",
    );
    r.figure(
        "heartbeats answered per second (three nodes)",
        spread.heartbeats_per_s,
        "/s",
    );
    Ok(r)
}

/// Where one bench device is: the node it is connected to (`DOWN` while
/// it is between connections) and when that connection was welcomed.
struct Slot {
    node: AtomicUsize,
    since_ns: AtomicU64,
}

const DOWN: usize = usize::MAX;

/// A device's servers in the order it tries them: its own node, then the
/// others; every other device lists the others the other way round, as
/// a fleet configured in two halves would, so a lost node's devices
/// spread over the survivors rather than all landing on one.
fn server_order(home: usize, nodes: usize, device: usize) -> Vec<usize> {
    let mut others: Vec<usize> = (1..nodes).map(|k| (home + k) % nodes).collect();
    if device % 2 == 1 {
        others.reverse();
    }
    std::iter::once(home).chain(others).collect()
}

/// One bench device's life, as the agent's control loop lives it: connect
/// to the current server; while connected, heartbeat; when the connection
/// fails or ends, move to the next server after the agent's jittered
/// backoff (`tessera_agent::control::failover`). The first connection
/// waits for a permit so the fleet comes up at a bounded pace.
#[allow(clippy::too_many_arguments)]
fn run_device(
    device: Device,
    index: usize,
    addrs: Arc<Vec<std::net::SocketAddr>>,
    order: Vec<usize>,
    slot: Arc<Slot>,
    epoch: Instant,
    first: Arc<tokio::sync::Semaphore>,
    refused: Arc<AtomicU64>,
) {
    tokio::spawn(async move {
        let mut failover = Failover::new(order.len(), DEFAULT_MAX_BACKOFF);
        let mut permit = first.acquire_owned().await.ok();
        loop {
            let node = order[failover.current()];
            let wait = match device::connect(addrs[node], &device, local_ip(index)).await {
                Ok(ws) => {
                    permit.take();
                    let up = Instant::now();
                    slot.since_ns
                        .store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    slot.node.store(node, Ordering::Relaxed);
                    heartbeat_until_closed(ws).await;
                    slot.node.store(DOWN, Ordering::Relaxed);
                    failover.dropped(up.elapsed(), rand::random::<f64>())
                }
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    failover.failed(rand::random::<f64>())
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
}

/// Heartbeats every five seconds until the server closes the connection
/// (or its process is gone).
async fn heartbeat_until_closed(ws: device::Ws) {
    let (mut sink, mut stream) = ws.split();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                if sink.send(frame(Body::Heartbeat(Heartbeat { seq }))).await.is_err() {
                    return;
                }
            }
            body = recv(&mut stream) => if body.is_none() { return },
        }
    }
}

/// Waits until `done` holds, checking every 10 ms, for at most `limit`.
async fn wait_for(limit: Duration, done: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

pub(crate) async fn cluster_storm(opts: &Opts, n: usize) -> anyhow::Result<BenchResult> {
    const NODES: usize = 3;
    // The node killed: device `i` starts on node `i mod 3`.
    const VICTIM: usize = 0;
    let mut r = on_postgres(BenchResult::new(
        "cluster-storm",
        json!({"devices": n, "nodes": NODES, "killed": "one node, SIGKILL",
               "backoff": "tessera_agent::control::failover, max 5 s"}),
    ));
    let mut cluster = Cluster::start(opts, NODES, &SERVER_FLAGS).await?;
    let admin = cluster.nodes[0].admin().await?;
    let devices = device::enroll(&cluster.nodes[0], &admin, n).await?;
    let addrs = Arc::new(
        cluster
            .nodes
            .iter()
            .map(Server::addr)
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let epoch = Instant::now();
    let first = Arc::new(tokio::sync::Semaphore::new(64));
    let refused = Arc::new(AtomicU64::new(0));
    let mut slots = Vec::with_capacity(n);
    for (i, d) in devices.into_iter().enumerate() {
        let slot = Arc::new(Slot {
            node: AtomicUsize::new(DOWN),
            since_ns: AtomicU64::new(0),
        });
        slots.push(slot.clone());
        run_device(
            d,
            i,
            addrs.clone(),
            server_order(i % NODES, NODES, i),
            slot,
            epoch,
            first.clone(),
            refused.clone(),
        );
    }
    let t0 = Instant::now();
    let all_up = wait_for(Duration::from_secs(600), || {
        slots.iter().all(|s| s.node.load(Ordering::Relaxed) != DOWN)
    })
    .await;
    if !all_up {
        bail!("the fleet did not come online within 10 minutes");
    }
    let fleet_up = t0.elapsed();
    let on_victim: Vec<&Arc<Slot>> = slots
        .iter()
        .filter(|s| s.node.load(Ordering::Relaxed) == VICTIM)
        .collect();
    let refused_before = refused.load(Ordering::Relaxed);

    let killed_at = epoch.elapsed().as_nanos() as u64;
    cluster.nodes[VICTIM].kill().await?;
    let back = wait_for(Duration::from_secs(300), || {
        on_victim.iter().all(|s| {
            let node = s.node.load(Ordering::Relaxed);
            node != DOWN && node != VICTIM
        })
    })
    .await;
    r.check("every device of the killed node is back on another", back);
    let mut times: Vec<Duration> = on_victim
        .iter()
        .map(|s| Duration::from_nanos(s.since_ns.load(Ordering::Relaxed).saturating_sub(killed_at)))
        .collect();
    // The survivors' own view: every device listed online.
    let survivor = cluster.nodes[(VICTIM + 1) % NODES].admin().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let online = loop {
        let online = survivor
            .list_devices()
            .await?
            .iter()
            .filter(|d| d.online)
            .count();
        if online == n || Instant::now() > deadline {
            break online;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let listed = online == n;
    r.check("a surviving node lists every device online", listed);

    r.figure("devices", n as f64, "");
    r.figure("fleet online at start", millis(fleet_up), "ms");
    r.figure("devices on the killed node", on_victim.len() as f64, "");
    r.figure(
        "back online p50",
        millis(percentile(&mut times, 50.0)),
        "ms",
    );
    r.figure(
        "back online p99",
        millis(percentile(&mut times, 99.0)),
        "ms",
    );
    r.figure(
        "back online max",
        millis(percentile(&mut times, 100.0)),
        "ms",
    );
    r.figure(
        "failed attempts while moving",
        (refused.load(Ordering::Relaxed) - refused_before) as f64,
        "",
    );
    r.figure("listed online by a survivor", online as f64, "");
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_list_their_own_node_first_and_spread_the_alternates() {
        assert_eq!(server_order(0, 3, 0), vec![0, 1, 2]);
        assert_eq!(server_order(0, 3, 3), vec![0, 2, 1]);
        assert_eq!(server_order(2, 3, 2), vec![2, 0, 1]);
        assert_eq!(server_order(1, 3, 7), vec![1, 0, 2]);
        assert_eq!(server_order(0, 1, 5), vec![0]);
    }
}
