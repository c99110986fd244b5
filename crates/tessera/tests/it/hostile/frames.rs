//! Hostile WebSocket frames on the device and viewer planes: garbage, text,
//! truncated, mistimed and oversized frames close their socket with a
//! documented close code; the server stays up.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::Value;
use tessera_client::control::{handshake, DeviceHello};
use tessera_core::api::CreateSessionRequest;
use tessera_core::identity::{challenge_body, DeviceKeys, Label};
use tessera_proto::v1::{
    AutoJoinAnswer, AutoSessionCreate, ChannelData, ChannelResize, ConsentResponse, E2eData,
    E2eHandshake, Heartbeat, Hello, MemberLeft, RotateKeyConfirm, SessionEnded, Welcome,
};
use tessera_proto::{Body, Envelope, PROTOCOL_VERSION};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use tessera_testkit::{online_device, open_ws_with, TestDevice, TestServer, Ws};

/// Close codes the server documents: the standard ones it uses and the
/// application codes in `tessera_proto::close` and the viewer plane's.
const DOCUMENTED_CLOSE: &[u16] = &[
    1001, 1003, 1007, 1008, 1009, 4000, 4001, 4003, 4004, 4008, 4009, 4010, 4011,
];

async fn connect(url: String, bearer: &str) -> Ws {
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    open_ws_with(&url, bearer, Some(config))
        .await
        .expect("upgrade")
}

/// What the server said next: an envelope body, or how the socket closed.
#[derive(Debug)]
enum Said {
    Body(Body),
    Closed(u16),
}

async fn next(ws: &mut Ws) -> Said {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the server answers in time")
        {
            Some(Ok(Message::Binary(b))) => {
                let env = Envelope::decode(b.as_ref()).expect("the server sends envelopes");
                return Said::Body(env.body.expect("with a body"));
            }
            Some(Ok(Message::Close(f))) => {
                return Said::Closed(f.map(|f| u16::from(f.code)).unwrap_or(1005))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Said::Closed(1006),
        }
    }
}

/// Reads until the socket closes; returns its code (skipping bodies such
/// as the `Error` that precedes a refusal).
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        if let Said::Closed(code) = next(ws).await {
            return code;
        }
    }
}

fn frame(body: Body) -> Message {
    Message::Binary(Envelope::of(body).encode_to_vec().into())
}

fn hello_body(keys: &DeviceKeys, nonce: &[u8], version: u32) -> Hello {
    let id = keys.device_id();
    Hello {
        protocol_version: version,
        agent_version: "hostile".into(),
        device_id: id.to_string(),
        signature: keys
            .sign(Label::Challenge, &challenge_body(nonce, &id, version))
            .to_vec()
            .into(),
        os: "\u{1b}[31mos".into(),
        hostname: "h".repeat(10_000),
        role: tessera_proto::role::AGENT,
    }
}

/// A device connection that has read its challenge; returns the nonce.
async fn challenged_ws(s: &TestServer, d: &TestDevice) -> (Ws, Vec<u8>) {
    let mut ws = connect(format!("ws://{}/ws/device", s.addr), d.key.expose()).await;
    let Said::Body(Body::Challenge(c)) = next(&mut ws).await else {
        panic!("a challenge first")
    };
    let nonce = c.nonce.to_vec();
    (ws, nonce)
}

/// A device connection before its Hello (challenge read), or after a valid
/// one (with odd but acceptable host details) and the Welcome.
async fn device_ws(s: &TestServer, d: &TestDevice, hello: bool) -> Ws {
    if !hello {
        return challenged_ws(s, d).await.0;
    }
    let mut ws = connect(format!("ws://{}/ws/device", s.addr), d.key.expose()).await;
    let keys = d.state.identity().unwrap();
    let id = keys.device_id();
    let mut hello = DeviceHello::agent(&keys, &id, "hostile");
    hello.os = "\u{1b}[31mos".into();
    hello.hostname = "h".repeat(10_000);
    tokio::time::timeout(Duration::from_secs(10), handshake(&mut ws, &hello))
        .await
        .expect("handshake in time")
        .expect("expected Welcome");
    ws
}

/// Frames that end a connection, with the close code each must get.
fn fatal_frames(before_hello: bool) -> Vec<(&'static str, Message, u16)> {
    let valid = Envelope::of(Body::Heartbeat(Heartbeat { seq: 1 })).encode_to_vec();
    let wrong_type = if before_hello { 4003 } else { 1008 };
    vec![
        ("garbage", Message::Binary(vec![0xff; 64].into()), 1007),
        ("text", Message::Text("{\"hello\": true}".into()), 1003),
        (
            "truncated",
            Message::Binary(valid[..valid.len() - 1].to_vec().into()),
            1007,
        ),
        (
            "server_message",
            frame(Body::Welcome(Welcome {
                protocol_version: 2,
                heartbeat_interval_ms: 1,
                connection_id: "x".into(),
            })),
            wrong_type,
        ),
        (
            "empty_envelope",
            Message::Binary(Vec::new().into()),
            wrong_type,
        ),
        (
            "viewer_message",
            frame(Body::ChannelResize(ChannelResize {
                session_id: "s".into(),
                channel_id: 0,
                cols: u32::MAX,
                rows: 0,
            })),
            wrong_type,
        ),
        (
            "oversized",
            Message::Binary(vec![0u8; tessera_proto::MAX_DEVICE_FRAME + 1].into()),
            1009,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_device_frames_close_with_documented_codes() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let d = TestDevice::enroll(&s, &admin, "hostile").await;

    for before_hello in [true, false] {
        for (name, msg, want) in fatal_frames(before_hello) {
            let mut ws = device_ws(&s, &d, !before_hello).await;
            // The server may close before an oversized frame is all written.
            let _ = ws.send(msg).await;
            let got = close_code(&mut ws).await;
            assert!(DOCUMENTED_CLOSE.contains(&got), "{name}: close {got}");
            assert_eq!(got, want, "{name} (before hello: {before_hello})");
        }
    }

    // Hellos that do not prove anything are refused with a reason.
    let keys = d.state.identity().unwrap();
    let thief = DeviceKeys::generate();
    type Forge = fn(&DeviceKeys, &DeviceKeys, &[u8]) -> Hello;
    // (A Hello for a newer version than the server's is not forged: it is
    // negotiated down, see `control.rs`.)
    let forged: [(&str, Forge, u16); 4] = [
        ("zero_version", |k, _, n| hello_body(k, n, 0), 4004),
        (
            "signed_by_another",
            |k, t, n| Hello {
                device_id: k.device_id().to_string(),
                ..hello_body(t, n, PROTOCOL_VERSION)
            },
            4003,
        ),
        (
            "garbage_signature",
            |k, _, n| Hello {
                signature: vec![7u8; 3].into(),
                ..hello_body(k, n, PROTOCOL_VERSION)
            },
            4003,
        ),
        (
            "garbage_device_id",
            |k, _, n| Hello {
                device_id: "\u{0}../../".into(),
                ..hello_body(k, n, PROTOCOL_VERSION)
            },
            4003,
        ),
    ];
    for (name, forge, want) in forged {
        let (mut ws, nonce) = challenged_ws(&s, &d).await;
        ws.send(frame(Body::Hello(forge(&keys, &thief, &nonce))))
            .await
            .unwrap();
        let got = close_code(&mut ws).await;
        assert_eq!(got, want, "{name}");
    }

    // After the Hello: valid envelopes for sessions that do not exist, or
    // in the wrong state, are ignored or answered; the connection lives on.
    let mut ws = device_ws(&s, &d, true).await;
    let junk = "\u{0}not-a-session";
    let out_of_state = [
        Body::RotateKeyConfirm(RotateKeyConfirm {
            key_id: junk.into(),
        }),
        Body::ConsentResponse(ConsentResponse {
            session_id: junk.into(),
            granted: true,
            unavailable: false,
        }),
        Body::ChannelData(ChannelData {
            session_id: junk.into(),
            channel_id: 9,
            data: vec![1; 1000].into(),
        }),
        Body::AutoJoinAnswer(AutoJoinAnswer {
            session_id: junk.into(),
            accept: true,
            reason: "x".repeat(5000),
            device_id: junk.into(),
        }),
        Body::E2eHandshake(E2eHandshake {
            session_id: junk.into(),
            from: junk.into(),
            to: junk.into(),
            payload: vec![0; 100].into(),
        }),
        Body::E2eData(E2eData {
            session_id: junk.into(),
            epoch: u32::MAX,
            sender: u32::MAX,
            counter: u64::MAX,
            ciphertext: vec![0; 100].into(),
            to: junk.into(),
            tags: vec![],
        }),
        Body::MemberLeft(MemberLeft {
            session_id: junk.into(),
            device_id: junk.into(),
            reason: junk.into(),
        }),
        Body::SessionEnded(SessionEnded {
            session_id: junk.into(),
            code: junk.into(),
            reason: junk.into(),
        }),
        Body::AutoSessionCreate(AutoSessionCreate {
            members: vec![junk.into(); 3],
            scope: "root".into(),
            all_or_nothing: true,
        }),
        Body::AutoSessionCreate(AutoSessionCreate {
            members: (0..300).map(|i| format!("m{i}")).collect(),
            scope: "files".into(),
            all_or_nothing: false,
        }),
        Body::AutoSessionCreate(AutoSessionCreate {
            members: vec![junk.into(), "ABCD".repeat(13)],
            scope: "files".into(),
            all_or_nothing: false,
        }),
    ];
    for body in out_of_state {
        let what = format!("{body:?}");
        ws.send(frame(body)).await.unwrap();
        // Some are answered (an Error, or the outcome of a create); none
        // ends the connection: a heartbeat still gets its ack.
        ws.send(frame(Body::Heartbeat(Heartbeat { seq: 42 })))
            .await
            .unwrap();
        loop {
            match next(&mut ws).await {
                Said::Body(Body::HeartbeatAck(a)) => {
                    assert_eq!(a.seq, 42);
                    break;
                }
                Said::Body(Body::Error(_) | Body::AutoSessionCreated(_)) => {}
                other => panic!("after {what}: {other:?}"),
            }
        }
    }

    // Still up, and a proper device still gets in.
    let ok = s.http().get(s.api("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    let _ = device_ws(&s, &d, true).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_viewer_frames_close_with_documented_codes() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let session = admin
        .create_session(&CreateSessionRequest {
            device: "box".into(),
            access: None,
            channel: None,
        })
        .await
        .unwrap()
        .id;
    let token = admin.viewer_token(&session).await.unwrap().token;
    let url = format!("ws://{}/ws/viewer?session={session}", s.addr);

    // Refused before the upgrade, with the error envelope.
    for (name, bearer, query) in [
        ("garbage_token", "e30.e30.e30", session.as_str()),
        ("operator_token_as_viewer", "otk_abc", session.as_str()),
        ("nul_token", "a\u{1}b", session.as_str()),
        ("another_session", token.expose(), "\u{0}nope"),
    ] {
        let mut req = s
            .http()
            .get(s.api("/ws/viewer"))
            .query(&[("session", query)])
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {bearer}")) {
            req = req.header("authorization", v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        assert!(status.is_client_error(), "{name}: {status}");
        assert!(body["error"]["code"].is_string(), "{name}: {body}");
    }

    let valid = Envelope::of(Body::ChannelResize(ChannelResize {
        session_id: session.clone(),
        channel_id: 0,
        cols: 80,
        rows: 24,
    }))
    .encode_to_vec();
    let fatal: Vec<(&str, Message, u16)> = vec![
        ("garbage", Message::Binary(vec![0xff; 64].into()), 1007),
        ("text", Message::Text("ls\n".into()), 1003),
        (
            "truncated",
            Message::Binary(valid[..valid.len() - 1].to_vec().into()),
            1007,
        ),
        ("device_message", frame(Body::Hello(Hello::default())), 1008),
        ("empty_envelope", Message::Binary(Vec::new().into()), 1008),
        (
            "oversized",
            Message::Binary(vec![0u8; tessera_proto::MAX_VIEWER_FRAME + 1].into()),
            1009,
        ),
    ];
    for (name, msg, want) in fatal {
        // A viewer token opens one viewer: each connection mints its own.
        let token = admin.viewer_token(&session).await.unwrap().token;
        let mut ws = connect(url.clone(), token.expose()).await;
        match next(&mut ws).await {
            Said::Body(Body::ViewerReady(_)) => {}
            other => panic!("expected ViewerReady, got {other:?}"),
        }
        let _ = ws.send(msg).await;
        let got = close_code(&mut ws).await;
        assert!(DOCUMENTED_CLOSE.contains(&got), "{name}: close {got}");
        assert_eq!(got, want, "{name}");
    }

    // Odd but well-formed input is clamped and relayed; the session lives.
    let token = admin.viewer_token(&session).await.unwrap().token;
    let mut ws = connect(url.clone(), token.expose()).await;
    assert!(matches!(
        next(&mut ws).await,
        Said::Body(Body::ViewerReady(_))
    ));
    for body in [
        Body::ChannelResize(ChannelResize {
            session_id: "\u{0}".into(),
            channel_id: u32::MAX,
            cols: 0,
            rows: u32::MAX,
        }),
        Body::ChannelData(ChannelData {
            session_id: "other".into(),
            channel_id: 77,
            data: b"echo still-$((6*7))\n".to_vec().into(),
        }),
    ] {
        ws.send(frame(body)).await.unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut out = String::new();
        loop {
            match next(&mut ws).await {
                Said::Body(Body::ChannelData(d)) => {
                    out.push_str(&String::from_utf8_lossy(&d.data));
                    if out.contains("still-42") {
                        return true;
                    }
                }
                Said::Body(_) => {}
                Said::Closed(_) => return false,
            }
        }
    })
    .await;
    assert!(matches!(seen, Ok(true)), "the session survives odd input");
    let ok = s.http().get(s.api("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    s.stop().await;
}
