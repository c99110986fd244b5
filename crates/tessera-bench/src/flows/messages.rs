//! Small messages and idle pairs: 100-byte messages (keystrokes, pointer
//! events) device → viewer and viewer → device at full speed, judged by
//! messages per server CPU-second; and the server memory one idle relayed
//! device + viewer pair costs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tessera_client::viewer::ViewerEvent;
use tessera_proto::Body;

use crate::device::{self, local_ip, recv};
use crate::result::BenchResult;
use crate::server::{Opts, Server};

use super::devices::hold;
use super::*;

pub(crate) async fn relay_messages(opts: &Opts, messages: u64) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new(
        "relay-messages",
        json!({"messages_each_way": messages, "message_bytes": 100}),
    );
    let server = Server::start(opts, &SERVER_FLAGS).await?;
    let admin = server.admin().await?;
    let (ws, session) = device_with_session(&server, &admin).await?;
    let (mut tx, mut rx) = join(&admin, &session).await?;
    let (mut sink, mut stream) = ws.split();

    let cpu0 = server.cpu()?;
    let t0 = Instant::now();
    // Device → viewer: output as fast as the socket takes it.
    let out = tokio::spawn(async move {
        for seq in 0..messages {
            sink.feed(output(&session, small(seq))).await?;
        }
        sink.flush().await?;
        Ok::<_, anyhow::Error>(sink)
    });
    // Viewer → device: input, one message per write, as a viewer sends
    // keystrokes.
    let input = tokio::spawn(async move {
        for seq in 0..messages {
            tx.input(&small(seq)).await?;
        }
        Ok::<_, anyhow::Error>(tx)
    });
    // The device reads the input.
    let device_reads = tokio::spawn(async move {
        let mut ordered = true;
        let mut seq = 0;
        while seq < messages {
            match recv(&mut stream).await {
                Some(Body::ChannelData(d)) => {
                    ordered &= d.data == small(seq);
                    seq += 1;
                }
                Some(_) => {}
                None => bail!("the device connection closed after {seq} inputs"),
            }
        }
        Ok::<_, anyhow::Error>((Instant::now(), ordered))
    });
    // The viewer reads the output.
    let mut to_viewer_ordered = true;
    for seq in 0..messages {
        match rx.next().await {
            ViewerEvent::Output(d) => to_viewer_ordered &= d == small(seq),
            other => bail!("viewer: {other:?} after {seq} messages"),
        }
    }
    let t_viewer = Instant::now();
    let (t_device, to_device_ordered) = device_reads.await??;
    let cpu = server.cpu()?.saturating_sub(cpu0);
    let _sink = out.await??;
    let _tx = input.await??;

    let per_s = |t: Instant| messages as f64 / (t - t0).as_secs_f64();
    r.figure("device → viewer", per_s(t_viewer), "messages/s");
    r.figure("viewer → device", per_s(t_device), "messages/s");
    r.figure(
        "messages per server CPU-second",
        (2 * messages) as f64 / cpu.as_secs_f64().max(0.01),
        "messages/s",
    );
    r.figure(
        "server CPU per message",
        cpu.as_secs_f64() * 1e6 / (2 * messages) as f64,
        "µs",
    );
    r.check(
        "device → viewer: every message, in order",
        to_viewer_ordered,
    );
    r.check(
        "viewer → device: every message, in order",
        to_device_ordered,
    );
    Ok(r)
}

/// Connects each device, opens a session to it, holds the device's
/// connection (heartbeating) and joins one viewer; returns the viewers.
async fn pair_up(
    server: &Server,
    admin: &ApiClient,
    devices: Vec<device::Device>,
    first: usize,
    hold_with: (Duration, &Arc<AtomicU64>, &Arc<AtomicUsize>),
) -> anyhow::Result<Vec<(ViewerSender, ViewerReceiver)>> {
    let addr = server.addr()?;
    let (heartbeat, acks, open) = hold_with;
    futures_util::stream::iter(devices.into_iter().enumerate())
        .map(|(i, d)| async move {
            let mut ws = device::connect(addr, &d, local_ip(first + i)).await?;
            let session = open_session(admin, &mut ws, &d.id).await?;
            hold(ws, heartbeat, acks.clone(), open.clone());
            join(admin, &session).await
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

pub(crate) async fn idle_pairs(opts: &Opts, n: usize) -> anyhow::Result<BenchResult> {
    let heartbeat = Duration::from_secs(15);
    let mut r = BenchResult::new(
        "idle-pairs",
        json!({"pairs": n, "heartbeat_s": heartbeat.as_secs()}),
    );
    let hb = format!("{}s", heartbeat.as_secs());
    let mut flags = SERVER_FLAGS.to_vec();
    flags.extend(["--heartbeat-interval", hb.as_str()]);
    let server = Server::start(opts, &flags).await?;
    let admin = server.admin().await?;
    let acks = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let mut viewers = Vec::new();
    let mut rss = Vec::new();
    // Two halves, as in idle-devices: memory per pair is the growth over
    // the second half, so what the first pairs warm up once is not
    // charged to each.
    let half = n / 2;
    for (first, count) in [(0, half), (half, n - half)] {
        let devices = device::enroll(&server, &admin, count).await?;
        viewers.extend(pair_up(&server, &admin, devices, first, (heartbeat, &acks, &open)).await?);
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss.push(server.rss()?);
    }
    let [rss0, rss1] = rss[..] else {
        return Err(anyhow!("two measurements"));
    };
    r.figure(
        "server RSS per idle device + viewer pair",
        rss1.saturating_sub(rss0) as f64 / (n - half).max(1) as f64 / 1024.0,
        "KiB",
    );
    r.figure(
        "server RSS with all paired",
        rss1 as f64 / (1 << 20) as f64,
        "MiB",
    );
    r.check(
        "every pair formed and every device stayed connected",
        open.load(Ordering::Relaxed) == n && viewers.len() == n,
    );
    Ok(r)
}
