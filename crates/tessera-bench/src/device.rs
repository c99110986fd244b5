//! Synthetic devices: real identities enrolled through the API, and the
//! device side of the control protocol spoken directly over a WebSocket
//! (key, then the signed challenge through `tessera_client::control`), as an
//! agent would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use prost::Message as _;
use tessera_client::control::{handshake, DeviceHello};
use tessera_client::ApiClient;
use tessera_core::api::{
    CreateEnrollmentTokenRequest, EnrollRequest, EnrollResponse, SecretString,
};
use tessera_core::identity::DeviceKeys;
use tessera_proto::{Body, Envelope};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::server::Server;

pub(crate) type Ws = WebSocketStream<TcpStream>;

pub(crate) struct Device {
    pub id: String,
    pub keys: DeviceKeys,
    pub key: SecretString,
}

/// Source addresses to spread clients over: the per-address rate limits
/// (enrollment: a burst of 50) and the ephemeral ports of one address.
pub(crate) fn local_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        (1 + i / 250 % 250) as u8,
        (2 + i % 250) as u8,
    ))
}

/// Enrolls `n` devices with one-use-each tokens through `POST
/// /api/v1/enroll`, `concurrency` at a time.
pub(crate) async fn enroll(
    server: &Server,
    admin: &ApiClient,
    n: usize,
) -> anyhow::Result<Vec<Device>> {
    let mut tokens = Vec::new();
    let mut left = n;
    while left > 0 {
        let uses = left.min(10_000);
        let t = admin
            .create_enrollment_token(&CreateEnrollmentTokenRequest {
                uses: uses as u32,
                ttl_seconds: 3600,
                tags: vec!["bench".into()],
            })
            .await?;
        tokens.push((t.secret, uses));
        left -= uses;
    }
    let url = format!("{}/api/v1/enroll", server.url);
    let mut jobs = Vec::with_capacity(n);
    let mut i = 0;
    for (token, uses) in &tokens {
        for _ in 0..*uses {
            jobs.push((i, token.clone()));
            i += 1;
        }
    }
    let results: Vec<anyhow::Result<Device>> = futures_util::stream::iter(jobs)
        .map(|(i, token)| {
            let url = url.clone();
            async move {
                let http = reqwest::Client::builder()
                    .local_address(local_ip(i))
                    .build()?;
                let keys = DeviceKeys::generate();
                let name = format!("bench-{i}");
                let p = tessera_agent::enroll::possession_proof(
                    &keys,
                    (&name, &name, "bench"),
                    tessera_core::identity::ProofPurpose::Enroll,
                    &url,
                );
                let resp = http
                    .post(&url)
                    .json(&EnrollRequest {
                        token,
                        identity: keys.document().encode(),
                        name: name.clone(),
                        hostname: name,
                        os: "bench".into(),
                        issued_at: Some(p.issued_at),
                        proof: Some(p.proof),
                        audience: Some(p.audience),
                    })
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!("enroll: {} {}", resp.status(), resp.text().await?);
                }
                let r: EnrollResponse = resp.json().await?;
                Ok(Device {
                    id: r.device_id,
                    keys,
                    key: r.device_key,
                })
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

pub(crate) fn frame(body: Body) -> Message {
    Message::Binary(Envelope::of(body).encode_to_vec().into())
}

/// The next envelope's body; `None` when the socket closed.
pub(crate) async fn recv<S>(stream: &mut S) -> Option<Body>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await? {
            Ok(Message::Binary(b)) => {
                if let Ok(Envelope { body: Some(body) }) = Envelope::decode(b.as_ref()) {
                    return Some(body);
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Opens `/ws/device` from `local`, answers the challenge as an agent and
/// returns the socket once the server said Welcome.
pub(crate) async fn connect(addr: SocketAddr, d: &Device, local: IpAddr) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    let tcp = socket.connect(addr).await.context("tcp connect")?;
    tcp.set_nodelay(true)?;
    let mut req = format!("ws://{addr}/ws/device").into_client_request()?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", d.key.expose()).parse()?,
    );
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(tessera_proto::MAX_DEVICE_FRAME);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
        .await
        .context("websocket upgrade")?;
    let id = d.keys.device_id();
    let mut hello = DeviceHello::agent(&d.keys, &id, "bench");
    hello.os = "bench".into();
    hello.hostname = "bench".into();
    tokio::time::timeout(Duration::from_secs(60), handshake(&mut ws, &hello))
        .await
        .context("welcome in time")??;
    Ok(ws)
}
