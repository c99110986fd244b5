//! Relay benchmarks: bulk throughput and round-trip latency through a
//! session (against a direct WebSocket and raw TCP), and fan-out to many
//! viewers with one stalled.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tessera_client::viewer::ViewerEvent;
use tessera_proto::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::device::recv;
use crate::result::BenchResult;
use crate::server::{Opts, Server};
use crate::stats::{mb_per_s, micros, percentile};

use super::*;

pub(crate) async fn relay_throughput(opts: &Opts, bytes: u64) -> anyhow::Result<BenchResult> {
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
    let cpu0 = server.cpu()?;
    let t0 = Instant::now();
    let send = tokio::spawn(async move { blast(&mut sink, &session, blocks).await.map(|()| sink) });
    let (t1, ordered) = drain_viewer(&mut rx, bytes).await?;
    // The server's own user + system time: robust to the clients sharing
    // the cores with it, unlike MB/s.
    let cpu = server.cpu()?.saturating_sub(cpu0);
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
    r.figure(
        "server CPU per GiB relayed",
        cpu.as_secs_f64() / (bytes as f64 / f64::from(1u32 << 30)),
        "s",
    );
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

pub(crate) async fn relay_latency(opts: &Opts, round_trips: usize) -> anyhow::Result<BenchResult> {
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

pub(crate) async fn fanout(opts: &Opts, bytes: u64, quick: bool) -> anyhow::Result<BenchResult> {
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
