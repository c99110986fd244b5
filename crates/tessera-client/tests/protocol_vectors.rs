//! The device side of `docs/PROTOCOL.md` §4.2, checked against the
//! vectors file: given the documented `Challenge` envelope, the real
//! handshake ([`tessera_client::control::handshake`]) sends exactly the
//! documented `Hello` envelope.

use std::path::PathBuf;

use data_encoding::HEXLOWER;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::Value;
use tessera_client::control::{handshake, DeviceHello};
use tessera_core::identity::DeviceKeys;
use tessera_proto::v1::Welcome;
use tessera_proto::{role, Body, Envelope};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

fn vectors() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors file")).expect("JSON")
}

fn unhex(v: &Value) -> Vec<u8> {
    HEXLOWER
        .decode(v.as_str().expect("hex string").as_bytes())
        .expect("lowercase hex")
}

#[tokio::test]
async fn the_handshake_sends_the_documented_hello() {
    let v = vectors();
    let a = &v["keys"]["device_a"];
    let mut private = unhex(&a["ed25519_seed"]);
    private.extend(unhex(&a["x25519_secret"]));
    let keys = DeviceKeys::from_bytes(&private).expect("64 bytes");
    let id = keys.device_id();
    let env = &v["control_envelopes"];
    let hello = &env["hello"];
    assert_eq!(hello["device_id"].as_str(), Some(id.as_str()));
    assert_eq!(hello["role"].as_u64(), Some(u64::from(role::AGENT)));

    let (device_end, server_end) = tokio::io::duplex(64 * 1024);
    let mut device = WebSocketStream::from_raw_socket(device_end, Role::Client, None).await;
    let mut server = WebSocketStream::from_raw_socket(server_end, Role::Server, None).await;
    let challenge = unhex(&env["challenge_envelope_hex"]);
    let expected_hello = unhex(&env["hello_envelope_hex"]);
    let server_task = tokio::spawn(async move {
        server
            .send(Message::Binary(challenge.into()))
            .await
            .expect("send challenge");
        let sent = loop {
            match server.next().await.expect("a message").expect("no error") {
                Message::Binary(b) => break b.to_vec(),
                _ => continue,
            }
        };
        let welcome = Envelope::of(Body::Welcome(Welcome {
            protocol_version: 2,
            heartbeat_interval_ms: 1000,
            connection_id: "c".into(),
        }));
        server
            .send(Message::Binary(welcome.encode_to_vec().into()))
            .await
            .expect("send welcome");
        sent
    });
    let mut me = DeviceHello::agent(
        &keys,
        &id,
        hello["agent_version"].as_str().expect("agent_version"),
    );
    me.os = hello["os"].as_str().expect("os").to_owned();
    me.hostname = hello["hostname"].as_str().expect("hostname").to_owned();
    let welcome = handshake(&mut device, &me).await.expect("handshake");
    assert_eq!(welcome.protocol_version, 2);
    let sent = server_task.await.expect("server side");
    assert_eq!(
        HEXLOWER.encode(&sent),
        HEXLOWER.encode(&expected_hello),
        "the Hello on the wire differs from docs/protocol-vectors.json"
    );
}
