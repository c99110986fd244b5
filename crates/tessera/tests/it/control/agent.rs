//! The agent end to end: key rotation over the control channel, and the
//! agent process (revocation exit code, key file permissions, reconnection,
//! SIGTERM).

use std::time::Duration;

use tessera_core::api::SecretString;
use tessera_proto::{Body, PROTOCOL_VERSION};

use tessera_testkit::{
    eventually, fast_heartbeat, tessera_bin, RunningAgent, TestDevice, TestServer,
};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_rotates_its_key_over_the_control_channel() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "rotator").await;
    let old = device.state.key().unwrap();
    let new_id = tessera_agent::control::rotate_device_key(&device.state)
        .await
        .unwrap();
    let new = device.state.key().unwrap();
    assert_ne!(old, new);
    let keys = admin.device_keys(&device.device_id).await.unwrap();
    let states: Vec<(&str, &str)> = keys
        .iter()
        .map(|k| (k.id.as_str(), k.state.as_str()))
        .collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&(new_id.as_str(), "active")));
    assert_eq!(
        keys.iter()
            .find(|k| k.id != new_id)
            .unwrap()
            .revoked_reason
            .as_deref(),
        Some("rotated")
    );
    // Old key refused, new key works.
    let e = s
        .client()
        .with_token(old)
        .push_events(&tessera_core::api::EventBatch { events: vec![] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("key_revoked"));
    s.client()
        .with_token(new)
        .push_events(&tessera_core::api::EventBatch { events: vec![] })
        .await
        .unwrap();
    let audit = admin
        .audit_page(&tessera_client::AuditQuery {
            action: Some("key_rotated".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.entries.len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_rotation_key_does_not_authenticate_until_confirmed() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "half").await;
    let keys = device.state.identity().unwrap();
    let mut ws = open(&s, device.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut ws, &keys, &keys.device_id()).await,
        Ok(Body::Welcome(_))
    ));
    send(
        &mut ws,
        Body::RotateKeyRequest(tessera_proto::v1::RotateKeyRequest {}),
    )
    .await;
    let Ok(Body::RotateKeyOffer(offer)) = next(&mut ws).await else {
        panic!("offer")
    };
    let e = s
        .client()
        .with_token(SecretString::new(offer.device_key.clone()))
        .push_events(&tessera_core::api::EventBatch { events: vec![] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("key_not_active"));
    // Confirming a key id that was not offered does nothing.
    send(
        &mut ws,
        Body::RotateKeyConfirm(tessera_proto::v1::RotateKeyConfirm {
            key_id: "bogus".into(),
        }),
    )
    .await;
    assert!(matches!(next(&mut ws).await, Ok(Body::Error(e)) if e.code == "unknown_rotation"));
    device
        .client(&s)
        .push_events(&tessera_core::api::EventBatch { events: vec![] })
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_process_reports_revocation_and_exits_3() {
    let s = TestServer::start_with(fast_heartbeat(300)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "proc").await;
    let child = tokio::process::Command::new(tessera_bin())
        .args(["agent", "--state-dir"])
        .arg(device.dir())
        .arg("run")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            admin.device(&device.device_id).await.unwrap().online
        })
        .await
    );
    admin
        .revoke_device(&device.device_id, Some("decommissioned".into()))
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("revoked this device (device_revoked): decommissioned"),
        "{stdout}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_a_key_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "lax").await;
    let path = device.dir().join("identity.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = tokio::process::Command::new(tessera_bin())
        .args(["agent", "--state-dir"])
        .arg(device.dir())
        .arg("run")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("identity.key") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_after_the_server_restarts() {
    let s = TestServer::start_with(fast_heartbeat(200)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "patient").await;
    let agent = RunningAgent::start(&device);
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.state.registry().is_connected(&device.device_id)
        })
        .await
    );
    // Drop every connection this node holds by replacing it: the agent's
    // connection is told it was replaced and reconnects with backoff.
    let _registration = s.state.registry().register(
        &device.device_id,
        "someone-else",
        tessera_proto::role::AGENT,
        PROTOCOL_VERSION,
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.state
                .registry()
                .snapshot()
                .iter()
                .any(|(d, k)| d == &device.device_id && k != "someone-else")
        })
        .await,
        "agent reconnected"
    );
    let _ = agent.stop.map(|s| s.send(()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_cleanly() {
    let s = TestServer::start_with(fast_heartbeat(300)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "term").await;
    let child = tokio::process::Command::new(tessera_bin())
        .args(["agent", "--state-dir"])
        .arg(device.dir())
        .arg("run")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            admin.device(&device.device_id).await.unwrap().online
        })
        .await
    );
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"));
    // The server saw a clean close, not a timeout: offline at once.
    assert!(
        eventually(Duration::from_secs(5), || async {
            !admin.device(&device.device_id).await.unwrap().online
        })
        .await
    );
    s.stop().await;
}
