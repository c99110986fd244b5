//! Control orders between nodes (issue 15): a change made through one node
//! reaches the node that must act on it at once, over NATS. Every server
//! here runs a one-minute heartbeat, so the database sweeps (the fallback
//! when NATS is down) cannot explain anything that arrives within seconds:
//! only the order can.

use std::time::Duration;

use tessera_client::viewer::{ViewerEvent, ViewerReceiver};
use tessera_core::api::{SecretString, UpdateUserRequest};
use tessera_core::roles::Role;
use tessera_proto::Body;

use tessera_testkit::{
    eventually, fast_heartbeat, online_device, shell_session, watch, Options, TestDevice,
    TestServer,
};

use crate::control::{hello, next, open};

/// A heartbeat no sweep fits into while a test waits.
const HEARTBEAT_MS: u64 = 60_000;
/// What "at once" means on a loaded 2-core machine: far inside a heartbeat.
const AT_ONCE: Duration = Duration::from_secs(10);

/// Two nodes on one database, routing through NATS, each having heard the
/// other (both count two live nodes), so each listens for orders.
async fn two_nodes() -> (TestServer, TestServer) {
    let a = TestServer::start_with(Options {
        nats: true,
        ..fast_heartbeat(HEARTBEAT_MS)
    })
    .await;
    let b = TestServer::start_with(Options {
        database_url: Some(a.database_url.clone()),
        nats: true,
        ..fast_heartbeat(HEARTBEAT_MS)
    })
    .await;
    assert!(
        eventually(AT_ONCE, || async {
            a.state.limiters().nodes() == 2 && b.state.limiters().nodes() == 2
        })
        .await,
        "each node hears the other join"
    );
    (a, b)
}

/// The code a viewer is told its session ended with (or why it was cut).
async fn ended(rx: &mut ViewerReceiver) -> String {
    tokio::time::timeout(AT_ONCE, async {
        loop {
            match rx.next().await {
                ViewerEvent::Ended { code, .. } => return code,
                ViewerEvent::Closed { code, reason } => return format!("closed {code:?} {reason}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the viewer is told at once")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_or_key_revoked_through_another_node_is_cut_at_once() {
    let (a, b) = two_nodes().await;
    let admin_a = a.admin().await;
    let admin_b = b.login("admin", &a.admin_password.clone().unwrap()).await;
    let (whole, whole_agent) = online_device(&a, &admin_a, "whole").await;
    let (keyed, keyed_agent) = online_device(&a, &admin_a, "keyed").await;

    admin_b
        .revoke_device(&whole.device_id, Some("stolen".into()))
        .await
        .unwrap();
    let exit = whole_agent.exit_within(AT_ONCE).await;
    assert!(
        matches!(&exit, tessera_agent::Exit::Revoked { code, .. } if code == "device_revoked"),
        "{exit:?}"
    );

    let keys = admin_b.device_keys(&keyed.device_id).await.unwrap();
    admin_b
        .revoke_device_key(&keyed.device_id, &keys[0].id, None)
        .await
        .unwrap();
    let exit = keyed_agent.exit_within(AT_ONCE).await;
    assert!(
        matches!(&exit, tessera_agent::Exit::Revoked { code, .. } if code == "key_revoked"),
        "{exit:?}"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_through_another_node_ends_its_relay_at_once() {
    let (a, b) = two_nodes().await;
    let admin_a = a.admin().await;
    let admin_b = b.login("admin", &a.admin_password.clone().unwrap()).await;
    let (_device, _agent) = online_device(&a, &admin_a, "box").await;
    let id = shell_session(&admin_a, "box").await;
    let (_tx, mut rx, _) = watch(&admin_a, &id).await;

    admin_b.end_session(&id).await.unwrap();
    assert_eq!(ended(&mut rx).await, "ended_by_operator");
    assert!(
        eventually(AT_ONCE, || async { a.state.hub().get(&id).is_none() }).await,
        "node A no longer relays it"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_or_logout_on_another_node_cuts_the_viewers_at_once() {
    let (a, b) = two_nodes().await;
    let admin_a = a.admin().await;
    let admin_b = b.login("admin", &a.admin_password.clone().unwrap()).await;
    let (_device, _agent) = online_device(&a, &admin_a, "box").await;
    let id = shell_session(&admin_a, "box").await;
    let otto = a.user(&admin_a, "otto", Role::Operator).await;
    let (_tx, mut otto_rx, access) = watch(&otto, &id).await;
    assert_eq!(access, "control");

    // Demoted through node B: the control viewer on A goes.
    admin_b
        .update_user(
            "otto",
            &UpdateUserRequest {
                role: Some(Role::Viewer),
                disabled: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ended(&mut otto_rx).await, "role_changed");

    // One login, watching through A and logging out through B.
    let token = a
        .client()
        .login("otto", SecretString::new("otto-password-123"))
        .await
        .unwrap()
        .token;
    let on_a = a.client().with_token(token.clone());
    let on_b = b.client().with_token(token);
    let (_tx, mut rx, _) = watch(&on_a, &id).await;
    on_b.logout().await.unwrap();
    assert_eq!(ended(&mut rx).await, "logged_out");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_connecting_to_another_node_replaces_its_older_connection_at_once() {
    let (a, b) = two_nodes().await;
    let admin_a = a.admin().await;
    let device = TestDevice::enroll(&a, &admin_a, "roamer").await;
    let keys = device.state.identity().unwrap();
    let id = keys.device_id();

    let mut first = open(&a, device.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut first, &keys, &id).await,
        Ok(Body::Welcome(_))
    ));
    let mut second = open(&b, device.key.expose()).await.unwrap();
    assert!(matches!(
        hello(&mut second, &keys, &id).await,
        Ok(Body::Welcome(_))
    ));
    assert_eq!(
        next(&mut first).await.unwrap_err(),
        tessera_proto::close::REPLACED
    );
    assert!(b.state.registry().is_connected(&device.device_id));
    assert!(
        eventually(AT_ONCE, || async {
            !a.state.registry().is_connected(&device.device_id)
        })
        .await
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_through_another_node_relays_on_the_devices_node() {
    let (a, b) = two_nodes().await;
    let admin_a = a.admin().await;
    let admin_b = b.login("admin", &a.admin_password.clone().unwrap()).await;
    let (_device, _agent) = online_device(&a, &admin_a, "box").await;

    // Asked through B, which does not hold the device: A starts it.
    let id = shell_session(&admin_b, "box").await;
    assert!(
        a.state.hub().get(&id).is_some(),
        "relayed by the device's node"
    );
    assert!(b.state.hub().get(&id).is_none());
    let view = admin_b.session(&id).await.unwrap();
    assert_eq!(view.state, "active");
    // The shell runs: a viewer on A sees it.
    let (mut tx, mut rx, _) = watch(&admin_a, &id).await;
    tx.input(b"echo via-$((40+2))\n").await.unwrap();
    tessera_testkit::read_until(&mut rx, "via-42", AT_ONCE).await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_request_through_another_node_reaches_the_device() {
    let (a, b) = two_nodes().await;
    let admin_a = a.admin().await;
    let admin_b = b.login("admin", &a.admin_password.clone().unwrap()).await;
    admin_b
        .set_policy(&tessera_core::api::Policy {
            require_consent_for_managed: true,
        })
        .await
        .unwrap();
    // The test agent has nobody to ask and answers so at once: its answer
    // proves that node A asked it (a timeout would take a minute).
    let (_device, _agent) = online_device(&a, &admin_a, "box").await;
    let id = shell_session(&admin_b, "box").await;
    assert!(
        eventually(AT_ONCE, || async {
            admin_b.session(&id).await.unwrap().end_code.as_deref() == Some("consent_unavailable")
        })
        .await,
        "{:?}",
        admin_b.session(&id).await.unwrap()
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_disabled_on_another_node_loses_their_sessions_at_once() {
    let (a, b) = two_nodes().await;
    let admin_a = a.admin().await;
    let admin_b = b.login("admin", &a.admin_password.clone().unwrap()).await;
    let (_device, _agent) = online_device(&a, &admin_a, "box").await;
    let otto = a.user(&admin_a, "otto", Role::Operator).await;
    let id = shell_session(&otto, "box").await;
    // The admin watches otto's session on A; otto is disabled through B.
    let (_tx, mut rx, _) = watch(&admin_a, &id).await;
    admin_b
        .update_user(
            "otto",
            &UpdateUserRequest {
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .unwrap();
    assert_eq!(ended(&mut rx).await, "user_disabled");
    assert!(
        eventually(AT_ONCE, || async { a.state.hub().get(&id).is_none() }).await,
        "node A no longer relays it"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_start_for_a_node_nats_cannot_reach_is_refused_and_records_nothing() {
    let a = TestServer::start_with(Options {
        nats: true,
        ..fast_heartbeat(HEARTBEAT_MS)
    })
    .await;
    let admin_a = a.admin().await;
    let (_device, _agent) = online_device(&a, &admin_a, "box").await;
    // Node B is configured for NATS, but nothing listens where it looks.
    let url = a.database_url.clone();
    let b = TestServer::start_with(Options {
        database_url: Some(url),
        configure: Some(Box::new(|c| {
            c.heartbeat_interval = Duration::from_millis(HEARTBEAT_MS);
            c.nats = Some(tessera_server::config::NatsConfig {
                url: "nats://127.0.0.1:1".to_owned(),
                ..Default::default()
            });
        })),
        ..Options::default()
    })
    .await;
    let admin_b = b.login("admin", &a.admin_password.clone().unwrap()).await;
    let e = admin_b
        .create_session(&tessera_core::api::CreateSessionRequest {
            device: "box".to_owned(),
            access: None,
            channel: None,
        })
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Some("relay_unavailable"), "{e}");
    assert!(admin_a.sessions(true).await.unwrap().is_empty());
    assert!(a.state.hub().all().is_empty());
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spread_over_two_nodes_refuses_at_the_single_node_budget() {
    let (a, b) = two_nodes().await;
    let http = a.http();
    let urls = [a.api("/api/v1/auth/login"), b.api("/api/v1/auth/login")];
    // One node alone allows 20 logins at once; spread over two, the client
    // still gets 20 in all, then 429 from either.
    let mut allowed = 0;
    for i in 0..40 {
        let resp = http
            .post(&urls[i % 2])
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            break;
        }
        assert_eq!(resp.status(), 422, "request {i}");
        allowed += 1;
    }
    assert_eq!(allowed, 20);
    for url in &urls {
        let resp = http
            .post(url)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429, "{url}");
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_start_for_a_killed_node_whose_lease_is_still_live_fails_fast() {
    // Node B in this process; node A a real process, killed below. A's
    // heartbeat is a minute: its lease (three heartbeats) outlives the test.
    let db = tessera_testkit::TestDb::new().await;
    let b = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        nats: true,
        ..fast_heartbeat(HEARTBEAT_MS)
    })
    .await;
    let nats = tessera_testkit::nats_url();
    let mut a = tessera_testkit::ServerProcess::spawn(
        &db.url,
        "warn",
        &["--nats-url", &nats, "--heartbeat-interval", "60s"],
    )
    .await;
    let pw = b.admin_password.clone().unwrap();
    let admin_b = b.login("admin", &pw).await;
    let device = TestDevice::enroll(&b, &admin_b, "on-a").await;
    let id = device.device_id.clone();
    let mut enrollment = device.state.enrollment().unwrap();
    enrollment.server = a.url.clone();
    device
        .state
        .save_enrollment(&enrollment, &device.key)
        .unwrap();
    let agent = tessera_testkit::AgentProcess::spawn_with_args(&device, &[]);
    assert!(
        eventually(AT_ONCE, || async {
            admin_b.device(&id).await.is_ok_and(|d| d.online)
        })
        .await,
        "online through node A; agent log: {}",
        agent.log()
    );
    assert!(!b.state.registry().is_connected(&id));

    a.kill().await;
    // A's lease is live for minutes yet: B still believes A holds the
    // device, and asks it. Nobody listens on A's subjects any more, so
    // NATS answers "no responders" at once.
    assert!(admin_b.device(&id).await.unwrap().online);
    let started = tokio::time::Instant::now();
    let e = admin_b
        .create_session(&tessera_core::api::CreateSessionRequest {
            device: id.clone(),
            access: None,
            channel: None,
        })
        .await
        .expect_err("refused");
    let took = started.elapsed();
    assert_eq!(e.code(), Some("relay_unavailable"), "{e}");
    // Far less than the request timeout, let alone a heartbeat.
    assert!(took < tessera_server::cluster::REQUEST_TIMEOUT, "{took:?}");
    // Nothing is left live: the session it had recorded ended node_lost.
    let sessions = admin_b.sessions(true).await.unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].end_code.as_deref(), Some("node_lost"));
    assert!(b.state.hub().all().is_empty());
    drop(agent);
    b.stop().await;
}
