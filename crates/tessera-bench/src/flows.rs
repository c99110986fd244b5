//! The benchmarks. Each starts its own server process and drives it with
//! real clients over loopback; payloads carry sequence numbers so loss or
//! reordering is caught, not assumed away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tessera_client::viewer::{self, ViewerEvent, ViewerReceiver, ViewerSender};
use tessera_client::ApiClient;
use tessera_core::api::{CreateSessionRequest, EventBatch, EventIn};
use tessera_proto::v1::{ChannelData, Heartbeat};
use tessera_proto::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::device::{self, frame, local_ip, recv, Device};
use crate::result::BenchResult;
use crate::server::{Opts, Server};
use crate::stats::{mb_per_s, micros, millis, percentile};

/// Bytes per relayed message.
pub const CHUNK: usize = 64 * 1024;

/// Flags every benchmark server gets: enough viewers for the fan-out, and
/// no input throttling in the way of round trips.
const SERVER_FLAGS: [&str; 4] = ["--max-viewers", "64", "--viewer-input-rate", "1000000"];

fn one_ip() -> std::net::IpAddr {
    local_ip(0)
}

/// A 64 KiB block whose first 8 bytes are its sequence number.
fn block(seq: u64) -> Bytes {
    let mut v = vec![0x5a_u8; CHUNK];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    Bytes::from(v)
}

/// Checks that a byte stream is the blocks 0, 1, 2… in order, whatever
/// pieces it arrives in.
#[derive(Default)]
struct Sequence {
    offset: u64,
    header: Vec<u8>,
    broken: bool,
}

impl Sequence {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let within = (self.offset % CHUNK as u64) as usize;
            if within < 8 {
                let take = (8 - within).min(data.len());
                self.header.extend_from_slice(&data[..take]);
                if self.header.len() == 8 {
                    let mut h = [0u8; 8];
                    h.copy_from_slice(&self.header);
                    if u64::from_be_bytes(h) != self.offset / CHUNK as u64 {
                        self.broken = true;
                    }
                    self.header.clear();
                }
                self.offset += take as u64;
                data = &data[take..];
            } else {
                let take = (CHUNK - within).min(data.len());
                self.offset += take as u64;
                data = &data[take..];
            }
        }
    }

    fn in_order(&self) -> bool {
        !self.broken
    }
}

/// A device online with a managed session opened to it; returns the
/// device's socket halves (after its ChannelOpen) and the session id.
async fn device_with_session(
    server: &Server,
    admin: &ApiClient,
) -> anyhow::Result<(device::Ws, String)> {
    let dev = device::enroll(server, admin, 1)
        .await?
        .pop()
        .ok_or_else(|| anyhow!("no device"))?;
    let mut ws = device::connect(server.addr()?, &dev, one_ip()).await?;
    let session = admin
        .create_session(&CreateSessionRequest {
            device: dev.id.clone(),
            access: None,
        })
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), recv(&mut ws)).await? {
            Some(Body::ChannelOpen(o)) if o.session_id == session.id => break,
            Some(_) => continue,
            None => bail!("the device connection closed"),
        }
    }
    Ok((ws, session.id))
}

async fn join(admin: &ApiClient, session: &str) -> anyhow::Result<(ViewerSender, ViewerReceiver)> {
    let token = admin.viewer_token(session).await?;
    let (tx, mut rx) = viewer::connect(admin, session, &token.token).await?;
    match rx.next().await {
        ViewerEvent::Ready { .. } => Ok((tx, rx)),
        other => Err(anyhow!("expected Ready, got {other:?}")),
    }
}

fn output(session: &str, data: Bytes) -> Message {
    frame(Body::ChannelData(ChannelData {
        session_id: session.to_owned(),
        channel_id: 1,
        data,
    }))
}

/// Sends `blocks` numbered blocks as shell output.
async fn blast<S>(sink: &mut S, session: &str, blocks: u64) -> anyhow::Result<()>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    for seq in 0..blocks {
        sink.feed(output(session, block(seq))).await?;
    }
    sink.flush().await?;
    Ok(())
}

/// Reads a viewer's output until `bytes` arrived; checks the order.
async fn drain_viewer(rx: &mut ViewerReceiver, bytes: u64) -> anyhow::Result<(Instant, bool)> {
    let mut seq = Sequence::default();
    while seq.offset < bytes {
        match rx.next().await {
            ViewerEvent::Output(d) => seq.feed(&d),
            other => bail!("viewer: {other:?} after {} bytes", seq.offset),
        }
    }
    Ok((Instant::now(), seq.in_order() && seq.offset == bytes))
}

pub async fn relay_throughput(opts: &Opts, bytes: u64) -> anyhow::Result<BenchResult> {
    let blocks = bytes.div_ceil(CHUNK as u64);
    let bytes = blocks * CHUNK as u64;
    let mut r = BenchResult::new(
        "relay-throughput",
        json!({"bytes": bytes, "message_bytes": CHUNK}),
    );

    // Through the relay: device → server → viewer.
    let server = Server::start(opts, &SERVER_FLAGS).await?;
    let admin = server.admin().await?;
    let (ws, session) = device_with_session(&server, &admin).await?;
    let (_tx, mut rx) = join(&admin, &session).await?;
    let (mut sink, mut stream) = ws.split();
    let drain = tokio::spawn(async move { while recv(&mut stream).await.is_some() {} });
    let t0 = Instant::now();
    let send = tokio::spawn(async move { blast(&mut sink, &session, blocks).await.map(|()| sink) });
    let (t1, ordered) = drain_viewer(&mut rx, bytes).await?;
    let _sink = send.await??;
    drain.abort();
    let relay = mb_per_s(bytes, t1 - t0);
    r.check("relay: every byte, in order", ordered);
    drop(server);

    // A direct WebSocket between the two ends, same messages.
    let direct = direct_ws_throughput(blocks).await?;
    r.check("direct websocket: every byte, in order", direct.1);
    // Raw TCP on loopback.
    let tcp = tcp_throughput(bytes).await?;

    r.figure("relay", relay, "MB/s");
    r.figure("direct websocket", direct.0, "MB/s");
    r.figure("raw tcp", tcp, "MB/s");
    r.figure("relay / raw tcp", relay / tcp, "ratio");
    r.figure("relay / direct websocket", relay / direct.0, "ratio");
    Ok(r)
}

async fn direct_ws_throughput(blocks: u64) -> anyhow::Result<(f64, bool)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let bytes = blocks * CHUNK as u64;
    let receiver = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(tessera_proto::MAX_DEVICE_FRAME);
        let mut ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
        let mut seq = Sequence::default();
        while seq.offset < bytes {
            match recv(&mut ws).await {
                Some(Body::ChannelData(d)) => seq.feed(&d.data),
                Some(_) => {}
                None => bail!("closed early"),
            }
        }
        Ok::<_, anyhow::Error>((Instant::now(), seq.in_order()))
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp).await?;
    let t0 = Instant::now();
    blast(&mut ws, "direct", blocks).await?;
    let (t1, ordered) = receiver.await??;
    Ok((mb_per_s(bytes, t1 - t0), ordered))
}

async fn tcp_throughput(bytes: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let receiver = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await?;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < bytes {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                bail!("closed early");
            }
            got += n as u64;
        }
        Ok::<_, anyhow::Error>(Instant::now())
    });
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let buf = vec![0x5a_u8; CHUNK];
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        tcp.write_all(&buf).await?;
        sent += CHUNK as u64;
    }
    let t1 = receiver.await??;
    Ok(mb_per_s(bytes, t1 - t0))
}

/// Percentile figures for one set of round trips.
fn latency_figures(r: &mut BenchResult, label: &str, samples: &mut [Duration]) -> [f64; 3] {
    let p = [50.0, 99.0, 99.9].map(|q| micros(percentile(samples, q)));
    r.figure(&format!("{label} p50"), p[0], "µs");
    r.figure(&format!("{label} p99"), p[1], "µs");
    r.figure(&format!("{label} p99.9"), p[2], "µs");
    p
}

fn small(seq: u64) -> Bytes {
    let mut v = vec![0x61_u8; 100];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    Bytes::from(v)
}

pub async fn relay_latency(opts: &Opts, round_trips: usize) -> anyhow::Result<BenchResult> {
    let warmup = (round_trips / 10).clamp(10, 1000);
    let mut r = BenchResult::new(
        "relay-latency",
        json!({"round_trips": round_trips, "message_bytes": 100, "warmup": warmup}),
    );
    let server = Server::start(opts, &SERVER_FLAGS).await?;
    let admin = server.admin().await?;
    let (ws, session) = device_with_session(&server, &admin).await?;
    let (mut tx, mut rx) = join(&admin, &session).await?;
    // The device echoes input back as output.
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
    let mut relay = Vec::with_capacity(round_trips);
    let mut ordered = true;
    for i in 0..(warmup + round_trips) as u64 {
        let payload = small(i);
        let t0 = Instant::now();
        tx.input(&payload).await?;
        match rx.next().await {
            ViewerEvent::Output(d) => ordered &= d == payload,
            other => bail!("viewer: {other:?}"),
        }
        if i >= warmup as u64 {
            relay.push(t0.elapsed());
        }
    }
    echo.abort();
    drop(server);
    r.check("relay: every reply, in order", ordered);

    let (mut direct, direct_ordered) = direct_ws_latency(warmup, round_trips).await?;
    r.check("direct: every reply, in order", direct_ordered);
    let rp = latency_figures(&mut r, "relay", &mut relay);
    let dp = latency_figures(&mut r, "direct", &mut direct);
    r.figure("added p50", rp[0] - dp[0], "µs");
    r.figure("added p99", rp[1] - dp[1], "µs");
    r.figure("added p99.9", rp[2] - dp[2], "µs");
    Ok(r)
}

async fn direct_ws_latency(
    warmup: usize,
    round_trips: usize,
) -> anyhow::Result<(Vec<Duration>, bool)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let mut ws = tokio_tungstenite::accept_async(tcp).await?;
        while let Some(body) = recv(&mut ws).await {
            if let Body::ChannelData(d) = body {
                ws.send(output(&d.session_id, d.data)).await?;
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp).await?;
    let mut samples = Vec::with_capacity(round_trips);
    let mut ordered = true;
    for i in 0..(warmup + round_trips) as u64 {
        let payload = small(i);
        let t0 = Instant::now();
        ws.send(output("direct", payload.clone())).await?;
        match recv(&mut ws).await {
            Some(Body::ChannelData(d)) => ordered &= d.data == payload,
            _ => bail!("direct echo closed"),
        }
        if i >= warmup as u64 {
            samples.push(t0.elapsed());
        }
    }
    drop(ws);
    echo.abort();
    Ok((samples, ordered))
}

/// One fan-out case: `viewers` reading, `stalled` connected but never
/// reading. Returns each reader's MB/s and whether every reader got every
/// byte in order.
async fn fanout_case(
    opts: &Opts,
    viewers: usize,
    stalled: usize,
    bytes: u64,
) -> anyhow::Result<(Vec<f64>, bool, bool)> {
    let blocks = bytes / CHUNK as u64;
    let server = Server::start(opts, &SERVER_FLAGS).await?;
    let admin = server.admin().await?;
    let (ws, session) = device_with_session(&server, &admin).await?;
    let mut readers = Vec::new();
    for _ in 0..viewers {
        readers.push(join(&admin, &session).await?);
    }
    let mut sleepers = Vec::new();
    for _ in 0..stalled {
        sleepers.push(join(&admin, &session).await?);
    }
    let (mut sink, mut stream) = ws.split();
    let drain = tokio::spawn(async move { while recv(&mut stream).await.is_some() {} });
    let t0 = Instant::now();
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|(tx, mut rx)| {
            tokio::spawn(async move {
                let r = drain_viewer(&mut rx, blocks * CHUNK as u64).await;
                drop(tx);
                r
            })
        })
        .collect();
    let session2 = session.clone();
    let send = tokio::spawn(async move { blast(&mut sink, &session2, blocks).await });
    let mut rates = Vec::new();
    let mut all_ordered = true;
    for t in tasks {
        let (t1, ordered) = t.await??;
        rates.push(mb_per_s(blocks * CHUNK as u64, t1 - t0));
        all_ordered &= ordered;
    }
    send.await??;
    drain.abort();
    // A stalled viewer is cut off with `viewer_too_slow` once the others
    // are ahead of it (it first gets what was already queued for it).
    let mut kicked = true;
    for (_, mut rx) in sleepers {
        kicked &= tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match rx.next().await {
                    ViewerEvent::Output(_) => continue,
                    ViewerEvent::Ended { code, .. } => return code == "viewer_too_slow",
                    ViewerEvent::Closed { code, .. } => return code == Some(4010),
                    _ => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
    }
    Ok((rates, all_ordered, kicked))
}

pub async fn fanout(opts: &Opts, bytes: u64, quick: bool) -> anyhow::Result<BenchResult> {
    let cases: &[usize] = if quick { &[1, 3] } else { &[1, 10, 50] };
    let with_stalled = if quick { 3 } else { 10 };
    let mut r = BenchResult::new(
        "fanout",
        json!({"bytes_per_viewer": bytes, "viewers": cases, "stalled_case": format!("{with_stalled} readers + 1 stalled")}),
    );
    for &v in cases {
        let (rates, ordered, _) = fanout_case(opts, v, 0, bytes).await?;
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let min = rates.iter().cloned().fold(f64::INFINITY, f64::min);
        r.figure(&format!("{v} viewers: per viewer (mean)"), mean, "MB/s");
        r.figure(&format!("{v} viewers: slowest viewer"), min, "MB/s");
        r.figure(
            &format!("{v} viewers: delivered in all"),
            mean * v as f64,
            "MB/s",
        );
        r.check(&format!("{v} viewers: every byte, in order"), ordered);
    }
    let (rates, ordered, kicked) = fanout_case(opts, with_stalled, 1, bytes).await?;
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let min = rates.iter().cloned().fold(f64::INFINITY, f64::min);
    r.figure(
        &format!("{with_stalled} viewers + 1 stalled: per viewer (mean)"),
        mean,
        "MB/s",
    );
    r.figure(
        &format!("{with_stalled} viewers + 1 stalled: slowest reader"),
        min,
        "MB/s",
    );
    r.check("with a stalled viewer: every byte, in order", ordered);
    r.check("the stalled viewer is disconnected (4010)", kicked);
    Ok(r)
}

/// Holds one device connection: heartbeats at `every`, counting answers.
fn hold(ws: device::Ws, every: Duration, acks: Arc<AtomicU64>, open: Arc<AtomicUsize>) {
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

pub async fn idle_devices(opts: &Opts, n: usize, quick: bool) -> anyhow::Result<BenchResult> {
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

pub async fn connect_storm(opts: &Opts, n: usize) -> anyhow::Result<BenchResult> {
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

pub async fn session_setup(opts: &Opts, sessions: usize) -> anyhow::Result<BenchResult> {
    use tessera_agent::auto::AutoSession;
    use tessera_agent::control::Credentials;
    use tessera_agent::trust::{self, TrustStore};
    use tessera_core::trust::Scope;
    const SIZES: [usize; 3] = [2, 4, 8];
    let mut r = BenchResult::new(
        "session-setup",
        json!({"sizes": SIZES, "sessions_per_size": sessions, "measured": "create → every member keyed"}),
    );
    let server = Server::start(opts, &SERVER_FLAGS).await?;
    let admin = server.admin().await?;
    let dirs = tempfile::tempdir()?;
    let mut states = Vec::new();
    for i in 0..8 {
        let state = tessera_agent::AgentState::new(dirs.path().join(format!("d{i}")));
        let token = admin
            .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
                uses: 1,
                ttl_seconds: 600,
                tags: vec![],
            })
            .await?;
        tessera_agent::enroll::with_token(
            &state,
            &tessera_agent::enroll::EnrollOptions {
                server: server.url.clone(),
                tls_fingerprint: None,
                ca_cert: None,
                name: Some(format!("member-{i}")),
            },
            token.secret,
        )
        .await?;
        states.push(state);
    }
    let creds: Vec<Credentials> = states
        .iter()
        .map(Credentials::load)
        .collect::<Result<_, _>>()?;
    let ids: Vec<String> = creds.iter().map(|c| c.device_id.to_string()).collect();
    // The creator (0) and each member verify each other; members grant.
    let pairs = (1..8).map(|m| {
        let (c0, cm) = (&creds[0], &creds[m]);
        let (s0, sm) = (&states[0], &states[m]);
        let (id0, idm) = (ids[0].clone(), ids[m].clone());
        async move {
            let (x0, xm) = tokio::join!(trust::exchange(c0, &idm), trust::exchange(cm, &id0));
            let (x0, xm) = (x0?, xm?);
            if x0.sas != xm.sas {
                bail!("codes differ");
            }
            trust::confirm(s0, c0, &x0, "member").await?;
            trust::confirm(sm, cm, &xm, "creator").await?;
            trust::grant(sm, cm, &id0, &[Scope::Files], Duration::from_secs(3600)).await?;
            Ok::<_, anyhow::Error>(())
        }
    });
    for p in futures_util::future::join_all(pairs).await {
        p.context("setting up trust")?;
    }
    // Members' agents run in this process.
    let mut agents = Vec::new();
    for state in states.iter().skip(1) {
        let state = state.clone();
        let inbox = dirs.path().join(format!("inbox-{}", agents.len()));
        agents.push(tokio::spawn(async move {
            tessera_agent::run(
                &state,
                tessera_agent::RunOptions {
                    inbox: Some(inbox),
                    ..tessera_agent::RunOptions::default()
                },
                std::future::pending::<()>(),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let store = TrustStore::load(&states[0])?;
    for size in SIZES {
        let members: Vec<String> = ids[1..size].to_vec();
        let mut times = Vec::new();
        let mut all_keyed = true;
        for _ in 0..sessions {
            let t0 = Instant::now();
            let s = AutoSession::create(&creds[0], &store, &members, Scope::Files, false).await?;
            times.push(t0.elapsed());
            all_keyed &= s.joined().len() == size - 1;
            s.end().await;
        }
        r.figure(
            &format!("{size} members p50"),
            millis(percentile(&mut times, 50.0)),
            "ms",
        );
        r.figure(
            &format!("{size} members p99"),
            millis(percentile(&mut times, 99.0)),
            "ms",
        );
        r.check(&format!("{size} members: every member keyed"), all_keyed);
    }
    for a in agents {
        a.abort();
    }
    Ok(r)
}

fn events(device: usize, from: usize, count: usize) -> Vec<EventIn> {
    (from..from + count)
        .map(|i| EventIn {
            kind: "bench.sample".into(),
            // The canonical id covers kind, subject and the second: one
            // subject per event keeps them distinct.
            subject: format!("device-{device}-item-{i}"),
            occurred_at: format!(
                "2026-01-01T00:{:02}:{:02}.{:03}Z",
                i / 60_000 % 60,
                i / 1000 % 60,
                i % 1000
            ),
            attributes: json!({ "i": i }),
        })
        .collect()
}

/// Pushes `batches` batches of 500 from each of `devices` at once; with
/// `dup`, half of each batch repeats the previous one. Returns events/s and
/// whether the server counted exactly the new ones as accepted.
async fn push(
    server: &Server,
    devices: &[Device],
    batches: usize,
    dup: bool,
    offset: usize,
) -> anyhow::Result<(f64, bool)> {
    const BATCH: usize = 500;
    let t0 = Instant::now();
    let tasks = devices.iter().enumerate().map(|(di, d)| {
        let client = server.client().map(|c| c.with_token(d.key.clone()));
        async move {
            let client = client?;
            let (mut sent, mut accepted, mut expected) = (0u64, 0u64, 0u64);
            let mut next = offset;
            for b in 0..batches {
                let batch = if dup && b > 0 {
                    let mut v = events(di, next - BATCH / 2, BATCH / 2);
                    v.extend(events(di, next, BATCH / 2));
                    next += BATCH / 2;
                    expected += (BATCH / 2) as u64;
                    v
                } else {
                    let v = events(di, next, BATCH);
                    next += BATCH;
                    expected += BATCH as u64;
                    v
                };
                sent += batch.len() as u64;
                let resp = client.push_events(&EventBatch { events: batch }).await?;
                accepted += resp.accepted;
            }
            Ok::<_, anyhow::Error>((sent, accepted == expected))
        }
    });
    let mut total = 0;
    let mut exact = true;
    for r in futures_util::future::join_all(tasks).await {
        let (sent, ok) = r?;
        total += sent;
        exact &= ok;
    }
    Ok((total as f64 / t0.elapsed().as_secs_f64(), exact))
}

pub async fn ingest(opts: &Opts, batches: usize, quick: bool) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new(
        "ingest",
        json!({"batches_per_device": batches, "batch": 500, "devices": 4, "audit_writes": if quick { 40 } else { 2000 }}),
    );
    r.backend = "sqlite+postgres".into();
    for backend in [crate::Backend::Sqlite, crate::Backend::Postgres] {
        let name = format!("{backend:?}").to_lowercase();
        let opts = Opts {
            backend,
            bin: opts.bin.clone(),
        };
        let server = Server::start(&opts, &SERVER_FLAGS).await?;
        let admin = server.admin().await?;
        let devices = device::enroll(&server, &admin, 4).await?;
        let (fresh, exact0) = push(&server, &devices, batches, false, 0).await?;
        let (dups, exact50) = push(&server, &devices, batches, true, 10_000_000).await?;
        r.figure(&format!("{name}: events, 0% duplicates"), fresh, "events/s");
        r.figure(&format!("{name}: events, 50% duplicates"), dups, "events/s");
        r.check(
            &format!("{name}: every new event stored once"),
            exact0 && exact50,
        );
        // Audited writes: enrollment tokens, each one row and one audit
        // append, four writers at once.
        let writes = if quick { 40 } else { 2000 };
        let t0 = Instant::now();
        let tasks = (0..4).map(|_| {
            let admin = admin.clone();
            async move {
                for _ in 0..writes / 4 {
                    admin
                        .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
                            uses: 1,
                            ttl_seconds: 60,
                            tags: vec![],
                        })
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        });
        for t in futures_util::future::join_all(tasks).await {
            t?;
        }
        r.figure(
            &format!("{name}: audited writes"),
            writes as f64 / t0.elapsed().as_secs_f64(),
            "/s",
        );
        let verify = admin.audit_page(&Default::default()).await.is_ok();
        r.check(&format!("{name}: audit log readable"), verify);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_check_sees_order_through_any_split() {
        let stream: Vec<u8> = (0..4).flat_map(|i| block(i).to_vec()).collect();
        for piece in [1, 7, 8, 9, 1000, CHUNK, CHUNK + 3] {
            let mut s = Sequence::default();
            for p in stream.chunks(piece) {
                s.feed(p);
            }
            assert!(s.in_order(), "{piece}");
            assert_eq!(s.offset, stream.len() as u64);
        }
        let swapped: Vec<u8> = [1, 0, 2, 3]
            .iter()
            .flat_map(|i| block(*i).to_vec())
            .collect();
        let mut s = Sequence::default();
        s.feed(&swapped);
        assert!(!s.in_order());
    }

    #[test]
    fn a_duplicate_half_batch_repeats_the_previous_events() {
        let a = events(0, 0, 500);
        let b = events(0, 250, 250);
        assert_eq!(a[250..], b[..]);
    }
}
