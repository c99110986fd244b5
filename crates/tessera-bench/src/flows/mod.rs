//! The benchmarks. Each starts its own server process and drives it with
//! real clients over loopback; payloads carry sequence numbers so loss or
//! reordering is caught, not assumed away.
//!
//! Here: what several benchmarks share (numbered blocks, a device with a
//! session, viewers); the benchmarks are in `relay` (throughput, latency,
//! fan-out), `messages` (small messages both ways, idle relayed pairs),
//! `devices` (idle devices, connect storm), `cluster` (several nodes:
//! relay across them, idle devices, a node killed), `sessions`
//! (automatic session setup) and `ingest`.

mod cluster;
mod console;
mod console_seed;
mod devices;
mod ingest;
mod messages;
mod relay;
mod screen;
mod screen_workloads;
mod sessions;
mod stage;

pub(crate) use cluster::{cluster_idle, cluster_relay, cluster_storm};
pub(crate) use console::console_pages;
pub(crate) use console_seed::Fleet;
pub(crate) use devices::{connect_storm, idle_devices};
pub(crate) use ingest::ingest;
pub(crate) use messages::{idle_pairs, relay_messages};
pub(crate) use relay::{fanout, relay_latency, relay_throughput};
pub(crate) use screen::screen_encode;
pub(crate) use screen_workloads::screen_workloads;
pub(crate) use sessions::session_setup;

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use futures_util::SinkExt;
use tessera_client::viewer::{self, ViewerEvent, ViewerReceiver, ViewerSender};
use tessera_client::ApiClient;
use tessera_core::api::CreateSessionRequest;
use tessera_proto::v1::ChannelData;
use tessera_proto::Body;
use tokio_tungstenite::tungstenite::Message;

use crate::device::{self, frame, local_ip, recv};
use crate::server::Server;

/// Bytes per relayed message.
pub(crate) const CHUNK: usize = 64 * 1024;

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

/// A 100-byte message (a keystroke, a pointer event) numbered `seq`.
fn small(seq: u64) -> Bytes {
    let mut v = vec![0x61_u8; 100];
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
    let session = open_session(admin, &mut ws, &dev.id).await?;
    Ok((ws, session))
}

/// Opens a managed shell session to a connected device; returns its id
/// once the device was told (its ChannelOpen read off `ws`).
async fn open_session(
    admin: &ApiClient,
    ws: &mut device::Ws,
    device_id: &str,
) -> anyhow::Result<String> {
    let session = admin
        .create_session(&CreateSessionRequest {
            device: device_id.to_owned(),
            access: None,
            channel: None,
        })
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), recv(ws)).await? {
            Some(Body::ChannelOpen(o)) if o.session_id == session.id => break,
            Some(_) => continue,
            None => bail!("the device connection closed"),
        }
    }
    Ok(session.id)
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
