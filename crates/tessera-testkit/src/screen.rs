//! Screen sessions spoken by hand: a device connection at a chosen
//! protocol version that answers a screen channel itself, and a raw viewer
//! socket, so the relay's rules are tested without X.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_client::control::{handshake, DeviceHello};
use tessera_client::ApiClient;
use tessera_proto::v1::screen::Body as ScreenBody;
use tessera_proto::v1::{Heartbeat, Screen, ViewerReady};
use tessera_proto::{Body, Envelope};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::device::{open_ws_with, TestDevice, Ws};
use crate::server::TestServer;

/// What came next on a raw socket: an envelope body, or the close code.
pub type Next = Result<Body, u16>;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// Wraps a screen body for `session` (the channel id is the server's
/// business: it stamps its own).
pub fn screen(session: &str, body: ScreenBody) -> Body {
    Body::Screen(Screen {
        session_id: session.to_owned(),
        channel_id: 2,
        body: Some(body),
    })
}

/// The screen body inside `body`, if it is one.
pub fn screen_body(body: &Body) -> Option<&ScreenBody> {
    match body {
        Body::Screen(Screen { body: Some(b), .. }) => Some(b),
        _ => None,
    }
}

async fn next_on(ws: &mut Ws, limit: Duration) -> Next {
    loop {
        match tokio::time::timeout(limit, ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Binary(b))) => {
                return Ok(Envelope::decode(b.as_ref())
                    .expect("an envelope")
                    .body
                    .expect("with a body"))
            }
            Some(Ok(Message::Close(f))) => {
                return Err(f.map(|f| u16::from(f.code)).unwrap_or(1005))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(1006),
        }
    }
}

async fn send_on(ws: &mut Ws, body: Body) {
    ws.send(Message::Binary(Envelope::of(body).encode_to_vec().into()))
        .await
        .expect("send");
}

/// A device's agent connection spoken by hand, at `protocol`.
pub struct HandDevice {
    pub ws: Ws,
    keepalive: u64,
}

/// Heartbeats the hand-spoken device sends on its own count from here.
const KEEPALIVE: u64 = 1 << 40;

impl HandDevice {
    /// Connects `device` as its agent speaking `protocol`, and waits until
    /// the server has it online.
    pub async fn connect(server: &TestServer, device: &TestDevice, protocol: u32) -> HandDevice {
        let keys = device.state.identity().expect("identity");
        Self::connect_as(server, &keys, device.key.expose(), protocol).await
    }

    /// Connects the device of `keys` (e.g. a one-time support agent's)
    /// with device key `key`, speaking `protocol`.
    pub async fn connect_as(
        server: &TestServer,
        keys: &tessera_core::identity::DeviceKeys,
        key: &str,
        protocol: u32,
    ) -> HandDevice {
        let mut ws = open_ws_with(
            &format!("ws://{}/ws/device", server.addr),
            key,
            Some(config()),
        )
        .await
        .expect("upgrade");
        let id = keys.device_id();
        let mut hello = DeviceHello::agent(keys, &id, "hand");
        hello.protocol_version = protocol;
        hello.os = "test-os".into();
        hello.hostname = "test-host".into();
        handshake(&mut ws, &hello).await.expect("welcome");
        let state = server.state.clone();
        let id = id.to_string();
        assert!(
            crate::eventually(Duration::from_secs(10), || {
                let (state, id) = (state.clone(), id.clone());
                async move { state.registry().is_connected(&id) }
            })
            .await,
            "device online"
        );
        HandDevice { ws, keepalive: 0 }
    }

    pub async fn send(&mut self, body: Body) {
        send_on(&mut self.ws, body).await;
    }

    /// The next message from the server (within 10 s). While it waits,
    /// the device sends its own heartbeats, as an agent does, so that a
    /// server with a short heartbeat interval keeps it; their answers are
    /// not returned.
    pub async fn next(&mut self) -> Next {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let slice = tokio::time::timeout(Duration::from_millis(100), self.ws.next()).await;
            match slice {
                Err(_) => {
                    assert!(tokio::time::Instant::now() < deadline, "a message in time");
                    self.keepalive += 1;
                    let seq = KEEPALIVE + self.keepalive;
                    send_on(&mut self.ws, Body::Heartbeat(Heartbeat { seq })).await;
                }
                Ok(Some(Ok(Message::Binary(b)))) => {
                    let body = Envelope::decode(b.as_ref())
                        .expect("an envelope")
                        .body
                        .expect("with a body");
                    if !matches!(&body, Body::HeartbeatAck(a) if a.seq > KEEPALIVE) {
                        return Ok(body);
                    }
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    return Err(f.map(|f| u16::from(f.code)).unwrap_or(1005))
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return Err(1006),
            }
        }
    }

    /// The next message that `pick` accepts, skipping presence notices and
    /// anything else `pick` turns down.
    pub async fn next_where<T>(&mut self, mut pick: impl FnMut(&Body) -> Option<T>) -> T {
        loop {
            match self.next().await {
                Ok(b) => {
                    if let Some(t) = pick(&b) {
                        return t;
                    }
                }
                Err(code) => panic!("the device's connection closed ({code})"),
            }
        }
    }
}

/// A viewer socket spoken by hand.
pub struct HandViewer {
    pub ws: Ws,
    pub ready: ViewerReady,
}

impl HandViewer {
    /// Mints a viewer token as `client` and joins `session`.
    pub async fn join(server: &TestServer, client: &ApiClient, session: &str) -> HandViewer {
        let token = client.viewer_token(session).await.expect("viewer token");
        let mut ws = open_ws_with(
            &format!("ws://{}/ws/viewer?session={session}", server.addr),
            token.token.expose(),
            Some(config()),
        )
        .await
        .expect("upgrade");
        let ready = match next_on(&mut ws, Duration::from_secs(10)).await {
            Ok(Body::ViewerReady(r)) => r,
            other => panic!("expected ViewerReady, got {other:?}"),
        };
        HandViewer { ws, ready }
    }

    pub async fn send(&mut self, body: Body) {
        send_on(&mut self.ws, body).await;
    }

    /// Sends raw bytes as one binary message.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let _ = self.ws.send(Message::Binary(bytes.into())).await;
    }

    /// The next message, past the device's capabilities (the relay
    /// forwards them to every viewer; `next_any` shows them).
    pub async fn next(&mut self) -> Next {
        loop {
            let got = self.next_any().await;
            if !matches!(
                &got,
                Ok(b) if matches!(screen_body(b), Some(tessera_proto::v1::screen::Body::Capabilities(_)))
            ) {
                return got;
            }
        }
    }

    /// The next message, whatever it is.
    pub async fn next_any(&mut self) -> Next {
        next_on(&mut self.ws, Duration::from_secs(10)).await
    }

    /// Reads until the socket closes; its close code.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            if let Err(code) = self.next().await {
                return code;
            }
        }
    }
}
