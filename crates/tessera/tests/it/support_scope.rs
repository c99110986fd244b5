//! A support-code device before consent, and its one-time key (issue 12,
//! finding 8): invisible to every operator but its technician, and its key
//! good for its own session's control channel only.

use reqwest::Method;
use serde_json::{json, Value};
use tessera_client::{ApiClient, TlsTrust};
use tessera_core::api::{
    BoundSupportCode, CreateSupportCodeRequest, EventBatch, EventIn, SecretString,
};
use tessera_core::roles::Role;

use tessera_testkit::{open_ws, TestDevice, TestServer};

/// `tech` asks for a code; the one-time agent binds it (no consent yet).
async fn pending_support_device(s: &TestServer, tech: &ApiClient) -> BoundSupportCode {
    let code = tech
        .create_support_code(&CreateSupportCodeRequest::default())
        .await
        .unwrap()
        .code;
    let (_, bound) = tessera_agent::support::bind(
        &s.url,
        &TlsTrust::PublicRoots,
        code.expose(),
        Some("helped-laptop".into()),
    )
    .await
    .expect("bind");
    bound
}

/// A fresh operator token for raw requests.
async fn token_of(s: &TestServer, user: &str, password: &str) -> String {
    let resp = s
        .client()
        .login(user, SecretString::new(password))
        .await
        .unwrap();
    resp.token.expose().to_owned()
}

/// Sends `method path` with `bearer` and a JSON body; (status, error code).
async fn send(s: &TestServer, bearer: &str, method: Method, path: &str) -> (u16, String) {
    let mut req = s
        .http()
        .request(method.clone(), s.api(path))
        .bearer_auth(bearer);
    if method == Method::POST {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_operator_finds_no_pending_support_device_on_any_device_route() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let tech = s.user(&admin, "tech", Role::Operator).await;
    let other = s.user(&admin, "other", Role::Operator).await;
    let bound = pending_support_device(&s, &tech).await;
    let id = bound.device_id.clone();
    let other_token = token_of(&s, "other", "other-password-123").await;
    let admin_token = token_of(&s, "admin", s.admin_password.as_deref().unwrap()).await;

    for token in [&other_token, &admin_token] {
        for (method, path) in [
            (Method::GET, format!("/api/v1/devices/{id}")),
            (Method::POST, format!("/api/v1/devices/{id}/revoke")),
            (Method::POST, format!("/api/v1/devices/{id}/tags")),
            (Method::GET, format!("/api/v1/devices/{id}/keys")),
            (Method::POST, format!("/api/v1/devices/{id}/keys")),
            (
                Method::POST,
                format!("/api/v1/devices/{id}/keys/any/revoke"),
            ),
        ] {
            let (status, code) = send(&s, token, method.clone(), &path).await;
            assert_eq!(
                (status, code.as_str()),
                (404, "not_found"),
                "{method} {path}"
            );
        }
        // A session on it cannot be opened either, by id or by name.
        for device in [id.as_str(), "helped-laptop"] {
            let resp = s
                .http()
                .post(s.api("/api/v1/sessions"))
                .bearer_auth(token)
                .json(&json!({ "device": device }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 404, "session on {device}");
        }
    }
    // Nor is it listed, nor its session.
    for c in [&other, &admin] {
        assert!(c.list_devices().await.unwrap().iter().all(|d| d.id != id));
        assert!(c
            .sessions(true)
            .await
            .unwrap()
            .iter()
            .all(|x| x.id != bound.session_id));
    }
    // Nothing changed: the device keeps its one key and no tags were added.
    let seen = tech.device(&id).await.expect("its technician sees it");
    assert_eq!(seen.name, "helped-laptop");
    assert!(!seen.revoked);
    assert_eq!(seen.tags, ["attended"]);
    assert_eq!(tech.device_keys(&id).await.unwrap().len(), 1);
    // Even its technician issues it no second key.
    let e = tech.issue_device_key(&id).await.unwrap_err();
    assert_eq!(e.code(), Some("support_key_scope"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_key_is_refused_everywhere_but_its_control_channel() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let tech = s.user(&admin, "tech", Role::Operator).await;
    let enrolled = TestDevice::enroll(&s, &admin, "peer").await;
    let bound = pending_support_device(&s, &tech).await;
    let key = bound.device_key.expose().to_owned();
    let peer = enrolled.device_id.clone();

    // Event ingestion, refused before anything is filed under the technician.
    let device = s.client().with_token(bound.device_key.clone());
    let e = device
        .push_events(&EventBatch {
            events: vec![EventIn {
                kind: "disk.full".into(),
                subject: "disk full".into(),
                occurred_at: chrono_now(&s),
                attributes: json!({}),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(403), Some("support_key_scope"))
    );
    // Peer lookup, trust and grant routes.
    for (method, path) in [
        (Method::GET, format!("/api/v1/device/peers/{peer}")),
        (
            Method::GET,
            format!("/api/v1/device/peers/{peer}/rotations"),
        ),
        (Method::POST, "/api/v1/device/trust/exchanges".to_owned()),
        (
            Method::GET,
            format!("/api/v1/device/trust/exchanges?peer={peer}"),
        ),
        (Method::POST, "/api/v1/device/trust/attestations".to_owned()),
        (Method::GET, "/api/v1/device/trust/attestations".to_owned()),
        (Method::POST, "/api/v1/device/trust/withdraw".to_owned()),
        (Method::POST, "/api/v1/device/grants".to_owned()),
        (Method::GET, "/api/v1/device/grants".to_owned()),
        (Method::POST, "/api/v1/device/grants/withdraw".to_owned()),
        (Method::POST, "/api/v1/device/identity/rotate".to_owned()),
    ] {
        let (status, code) = send(&s, &key, method.clone(), &path).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "support_key_scope"),
            "{method} {path}"
        );
    }
    // An enrolled device's key still looks its peers up.
    let (status, _) = send(
        &s,
        enrolled.key.expose(),
        Method::GET,
        &format!("/api/v1/device/peers/{}", bound.device_id),
    )
    .await;
    assert_ne!(status, 403);
    let events = admin.events(&[]).await.unwrap();
    assert!(events.events.is_empty(), "{:?}", events.events);

    // Its own control channel still opens.
    let ws = format!("{}/ws/device", s.url.replacen("http", "ws", 1));
    assert!(open_ws(&ws, &key).await.is_ok(), "control channel refused");
    s.stop().await;
}

fn chrono_now(s: &TestServer) -> String {
    tessera_core::Timestamp::from_millis(s.clock.now_ms()).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_device_that_asks_for_an_automatic_session_is_disconnected() {
    use futures_util::{SinkExt, StreamExt};
    use prost::Message as _;
    use tessera_client::control::{handshake, DeviceHello};
    use tessera_proto::v1::AutoSessionCreate;
    use tessera_proto::{Body, Envelope};
    use tokio_tungstenite::tungstenite::Message;

    let s = TestServer::start().await;
    let admin = s.admin().await;
    let tech = s.user(&admin, "tech", Role::Operator).await;
    let enrolled = TestDevice::enroll(&s, &admin, "peer").await;
    let code = tech
        .create_support_code(&CreateSupportCodeRequest::default())
        .await
        .unwrap()
        .code;
    let (creds, bound) =
        tessera_agent::support::bind(&s.url, &TlsTrust::PublicRoots, code.expose(), None)
            .await
            .expect("bind");
    let ws_url = format!("{}/ws/device", s.url.replacen("http", "ws", 1));
    let mut ws = open_ws(&ws_url, bound.device_key.expose())
        .await
        .expect("upgrade");
    let hello = DeviceHello::agent(&creds.keys, &creds.device_id, "test");
    handshake(&mut ws, &hello).await.expect("welcome");
    // What an enrolled device may ask: probe which device ids exist.
    let ask = AutoSessionCreate {
        members: vec![enrolled.device_id.clone()],
        ..Default::default()
    };
    let frame = Envelope::of(Body::AutoSessionCreate(ask)).encode_to_vec();
    ws.send(Message::Binary(frame.into())).await.unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(Some(f))) => {
                    return Some((u16::from(f.code), f.reason.to_string()))
                }
                Ok(Message::Binary(b)) => {
                    let env = Envelope::decode(&b[..]).unwrap();
                    assert!(
                        !matches!(env.body, Some(Body::AutoSessionCreated(_))),
                        "the server answered the probe"
                    );
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("an answer within 10 s");
    assert_eq!(closed, Some((1008, "support_key_scope".to_owned())));
    s.stop().await;
}
