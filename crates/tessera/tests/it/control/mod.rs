//! The device control channel: identity proof, presence, revocation within
//! one heartbeat (on this node and from another), frame limits, key
//! rotation, and the agent process end to end.
//!
//! Here: the protocol spoken by hand; key rotation and the agent as a
//! process are in `agent`.

mod agent;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_client::control::{handshake, DeviceHello, HandshakeError};
use tessera_core::api::SecretString;
use tessera_core::identity::DeviceKeys;
use tessera_proto::v1::Heartbeat;
use tessera_proto::{Body, Envelope};
use tokio_tungstenite::tungstenite::Message;

use tessera_testkit::{
    eventually, fast_heartbeat, open_ws, Options, Refusal, RunningAgent, TestDevice, TestServer, Ws,
};

/// Opens `/ws/device` with a bearer key; `Err` carries the HTTP refusal.
pub(crate) async fn open(s: &TestServer, key: &str) -> Result<Ws, Refusal> {
    open_ws(&format!("ws://{}/ws/device", s.addr), key).await
}

async fn send(ws: &mut Ws, body: Body) {
    ws.send(Message::Binary(Envelope::of(body).encode_to_vec().into()))
        .await
        .unwrap();
}

/// The next envelope, or the close frame's code.
pub(crate) async fn next(ws: &mut Ws) -> Result<Body, u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("message in time")
        {
            Some(Ok(Message::Binary(b))) => {
                return Ok(Envelope::decode(b.as_ref()).unwrap().body.unwrap())
            }
            Some(Ok(Message::Close(f))) => {
                return Err(f.map(|f| u16::from(f.code)).unwrap_or(1005))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(1006),
        }
    }
}

/// Answers the challenge with `signer`'s key, claiming `device_id`: the
/// server's reply (`Welcome` or `Error`), or the close code.
pub(crate) async fn hello(
    ws: &mut Ws,
    signer: &DeviceKeys,
    device_id: &tessera_core::identity::DeviceId,
) -> Result<Body, u16> {
    let mut hello = DeviceHello::agent(signer, device_id, "test");
    hello.os = "test-os".into();
    hello.hostname = "test-host".into();
    let outcome = tokio::time::timeout(Duration::from_secs(10), handshake(ws, &hello))
        .await
        .expect("handshake in time");
    match outcome {
        Ok(welcome) => Ok(Body::Welcome(welcome)),
        Err(HandshakeError::Refused { code, message }) => {
            Ok(Body::Error(tessera_proto::v1::Error { code, message }))
        }
        Err(HandshakeError::Closed { code, .. }) => Err(code.unwrap_or(1006)),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_connects_and_shows_online_with_what_it_reported() {
    let s = TestServer::start_with(fast_heartbeat(200)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "desk").await;
    assert!(!admin.device(&device.device_id).await.unwrap().online);
    let agent = RunningAgent::start(&device);
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.device(&device.device_id).await.unwrap().online
        })
        .await,
        "device comes online"
    );
    let d = admin.device(&device.device_id).await.unwrap();
    assert_eq!(
        d.agent_version.as_deref(),
        Some(tessera_agent::AGENT_VERSION)
    );
    assert!(d.last_seen_at.is_some());
    let _ = agent.stop.map(|s| s.send(()));
    assert_eq!(
        agent.task.await.unwrap().unwrap(),
        tessera_agent::Exit::Shutdown
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            !admin.device(&device.device_id).await.unwrap().online
        })
        .await,
        "device goes offline"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_device_key_without_the_identity_key_is_refused_and_audited() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "victim").await;
    let real = device.state.identity().unwrap();
    let thief = DeviceKeys::generate();

    // The thief signs with their own key, claiming the victim's id.
    let mut ws = open(&s, device.key.expose()).await.unwrap();
    match hello(&mut ws, &thief, &real.device_id()).await {
        Ok(Body::Error(e)) => assert_eq!(e.code, "identity_proof_failed"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next(&mut ws).await.unwrap_err(),
        tessera_proto::close::AUTH_FAILED
    );

    // Or claims their own id with the stolen key.
    let mut ws = open(&s, device.key.expose()).await.unwrap();
    match hello(&mut ws, &thief, &thief.device_id()).await {
        Ok(Body::Error(e)) => assert_eq!(e.code, "identity_proof_failed"),
        other => panic!("{other:?}"),
    }

    // The real device gets in.
    let mut ws = open(&s, device.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut ws, &real, &real.device_id()).await,
        Ok(Body::Welcome(_))
    ));

    let audit = admin
        .audit_page(&tessera_client::AuditQuery {
            action: Some("device_auth_failed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let reasons: Vec<&str> = audit
        .entries
        .iter()
        .map(|e| e.details["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["bad_challenge_signature", "device_id_mismatch"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_before_the_upgrade() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "d").await;
    let operator_token = s
        .client()
        .login(
            "admin",
            SecretString::new(s.admin_password.clone().unwrap()),
        )
        .await
        .unwrap()
        .token;
    let (status, body) = open(&s, operator_token.expose()).await.err().unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("wrong_credential_type"))
    );
    let (status, body) = open(&s, "cak_nonsense").await.err().unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );

    let keys = admin.device_keys(&device.device_id).await.unwrap();
    admin
        .revoke_device_key(&device.device_id, &keys[0].id, Some("lost".into()))
        .await
        .unwrap();
    let (status, body) = open(&s, device.key.expose()).await.err().unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("key_revoked"))
    );

    // And a device key opens no operator route.
    let e = device.client(&s).list_devices().await.unwrap_err();
    assert_eq!(e.code(), Some("wrong_credential_type"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_cuts_its_live_connection_and_its_next_request() {
    let s = TestServer::start_with(fast_heartbeat(300)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "laptop").await;
    let agent = RunningAgent::start(&device);
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.device(&device.device_id).await.unwrap().online
        })
        .await
    );
    admin
        .revoke_device(&device.device_id, Some("stolen".into()))
        .await
        .unwrap();
    let exit = agent.exit_within(Duration::from_millis(300 + 1000)).await;
    assert_eq!(
        exit,
        tessera_agent::Exit::Revoked {
            code: "device_revoked".into(),
            reason: "stolen".into()
        }
    );
    let e = device
        .client(&s)
        .push_events(&tessera_core::api::EventBatch { events: vec![] })
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("device_revoked")));
    // Reconnecting is refused too.
    let (status, body) = open(&s, device.key.expose()).await.err().unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("device_revoked"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_another_node_arrives_within_one_heartbeat() {
    let heartbeat = 400;
    let a = TestServer::start_with(Options {
        nats: true,
        ..fast_heartbeat(heartbeat)
    })
    .await;
    let b = TestServer::start_with(Options {
        database_url: Some(a.database_url.clone()),
        nats: true,
        ..fast_heartbeat(heartbeat)
    })
    .await;
    let admin_a = a.admin().await;
    let device = TestDevice::enroll(&a, &admin_a, "roaming").await;
    let agent = RunningAgent::start(&device);
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.state.registry().is_connected(&device.device_id)
        })
        .await
    );
    // Revoked through node B, which holds no connection for it.
    let pw = a.admin_password.clone().unwrap();
    let admin_b = b.login("admin", &pw).await;
    let keys = admin_b.device_keys(&device.device_id).await.unwrap();
    let started = tokio::time::Instant::now();
    admin_b
        .revoke_device_key(&device.device_id, &keys[0].id, None)
        .await
        .unwrap();
    let exit = agent.exit_within(Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(
        matches!(&exit, tessera_agent::Exit::Revoked { code, .. } if code == "key_revoked"),
        "{exit:?}"
    );
    // One sweep interval, plus scheduling slack on a loaded 2-core machine.
    assert!(
        took < Duration::from_millis(heartbeat + 600),
        "took {took:?}"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_leaves_the_device_online_on_every_node() {
    // Long heartbeats: "seen lately" is no part of what this checks.
    let a = TestServer::start_with(Options {
        nats: true,
        ..fast_heartbeat(60_000)
    })
    .await;
    let b = TestServer::start_with(Options {
        database_url: Some(a.database_url.clone()),
        nats: true,
        ..fast_heartbeat(60_000)
    })
    .await;
    let admin_a = a.admin().await;
    let admin_b = b.login("admin", &a.admin_password.clone().unwrap()).await;
    let device = TestDevice::enroll(&a, &admin_a, "twice").await;
    let keys = device.state.identity().unwrap();
    let id = keys.device_id();

    let mut first = open(&a, device.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut first, &keys, &id).await,
        Ok(Body::Welcome(_))
    ));
    // Later, a second connection of the same device takes over on node A.
    a.clock.advance(Duration::from_secs(1));
    let mut second = open(&a, device.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut second, &keys, &id).await,
        Ok(Body::Welcome(_))
    ));
    assert_eq!(
        next(&mut first).await.unwrap_err(),
        tessera_proto::close::REPLACED
    );
    // The replaced connection's cleanup must not make node B, which knows
    // the device only from the database, show it offline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(admin_a.device(&device.device_id).await.unwrap().online);
    assert!(
        admin_b.device(&device.device_id).await.unwrap().online,
        "online on the other node after the takeover"
    );

    // When the device's last connection closes, it goes offline everywhere.
    a.clock.advance(Duration::from_secs(1));
    second.close(None).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            !admin_b.device(&device.device_id).await.unwrap().online
        })
        .await,
        "offline on the other node once the last connection is gone"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_the_socket_with_1009() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "big").await;
    let keys = device.state.identity().unwrap();
    let mut ws = open(&s, device.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut ws, &keys, &keys.device_id()).await,
        Ok(Body::Welcome(_))
    ));
    let big = vec![0u8; tessera_proto::MAX_DEVICE_FRAME + 1];
    let _ = ws.send(Message::Binary(big.into())).await;
    assert_eq!(next(&mut ws).await.unwrap_err(), 1009);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("tessera_ws_oversized_frames_total{plane=\"device\"} 1"),
        "{metrics}"
    );

    // Garbage and text frames are refused with their own codes.
    let mut ws = open(&s, device.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut ws, &keys, &keys.device_id()).await,
        Ok(Body::Welcome(_))
    ));
    ws.send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await.unwrap_err(), 1007);
    let mut ws = open(&s, device.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut ws, &keys, &keys.device_id()).await,
        Ok(Body::Welcome(_))
    ));
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap_err(), 1003);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_answered_and_silence_ends_the_connection() {
    let s = TestServer::start_with(fast_heartbeat(200)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "quiet").await;
    let keys = device.state.identity().unwrap();
    let mut ws = open(&s, device.key.expose()).await.unwrap();
    let Ok(Body::Welcome(w)) = hello(&mut ws, &keys, &keys.device_id()).await else {
        panic!()
    };
    assert_eq!(w.heartbeat_interval_ms, 200);
    send(&mut ws, Body::Heartbeat(Heartbeat { seq: 7 })).await;
    assert!(matches!(next(&mut ws).await, Ok(Body::HeartbeatAck(a)) if a.seq == 7));
    // Then silence for more than three intervals.
    match next(&mut ws).await {
        Ok(Body::Error(e)) => assert_eq!(e.code, "heartbeat_timeout"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next(&mut ws).await.unwrap_err(),
        tessera_proto::close::HEARTBEAT_TIMEOUT
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_end_another_devices_session_nor_a_managed_one_of_its_own() {
    use tessera_proto::v1::SessionEndRequest;
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_box, _agent) = tessera_testkit::online_device(&s, &admin, "box").await;
    let id = tessera_testkit::shell_session(&admin, "box").await;
    let other = TestDevice::enroll(&s, &admin, "other").await;
    let keys = other.state.identity().unwrap();
    let mut ws = open(&s, other.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut ws, &keys, &keys.device_id()).await,
        Ok(Body::Welcome(_))
    ));

    // Another device's session: nothing changes, the connection stays.
    let end = |session_id: &str| {
        Body::SessionEndRequest(SessionEndRequest {
            session_id: session_id.to_owned(),
            reason: "not mine".into(),
        })
    };
    send(&mut ws, end(&id)).await;
    send(&mut ws, end("no-such-session")).await;
    send(&mut ws, Body::Heartbeat(Heartbeat { seq: 7 })).await;
    match next(&mut ws).await {
        Ok(Body::HeartbeatAck(a)) => assert_eq!(a.seq, 7),
        other => panic!("{other:?}"),
    }
    let row = admin.session(&id).await.unwrap();
    assert_eq!(row.state, "active");

    // Its own managed session is the operator's to end: ignored too (the
    // person at an attended session ends theirs: `support_ui::typing_end_…`).
    let mine = tessera_testkit::shell_session(&admin, &other.device_id).await;
    send(&mut ws, end(&mine)).await;
    send(&mut ws, Body::Heartbeat(Heartbeat { seq: 8 })).await;
    loop {
        // The session's ChannelOpen may come first.
        match next(&mut ws).await {
            Ok(Body::HeartbeatAck(a)) => break assert_eq!(a.seq, 8),
            Ok(Body::ChannelOpen(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(admin.session(&mine).await.unwrap().state, "active");
    assert_eq!(admin.session(&id).await.unwrap().state, "active");
    s.stop().await;
}
