//! An agent given several servers (nodes on one database, issue 15 item
//! 4): when its node goes away it reconnects to the next one after the
//! documented first wait (0.5–1 s) and serves sessions there; a server
//! that is down when it starts is passed over; revocation still stops it
//! for good; a `--server` that is no URL is refused before anything runs.
//! The nodes are in-process servers on one database, and one `tessera
//! server` child process for `kill -9`.

use std::time::Duration;

use tessera_testkit::{
    eventually, read_until, shell_session, tessera_bin, watch, AgentProcess, Options,
    ServerProcess, TestDb, TestDevice, TestServer,
};

/// Generous: the agent's own bound is about a second; this only stops a
/// broken test from hanging.
const BACK: Duration = Duration::from_secs(30);

/// Two nodes on one fresh database; the first bootstrapped the admin.
async fn two_nodes() -> (TestDb, TestServer, TestServer) {
    let db = TestDb::new().await;
    let first = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        nats: true,
        ..Options::default()
    })
    .await;
    let second = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        nats: true,
        ..Options::default()
    })
    .await;
    (db, first, second)
}

/// The waits (ms) the agent logged before each reconnection.
fn retry_waits(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("control connection lost"))
        .filter_map(|l| {
            let at = l.find("retry_in_ms=")? + "retry_in_ms=".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Whether the agent logged a connection to `url` (which it does once the
/// handshake is over: after the node registered it).
fn connected_to(log: &str, url: &str) -> bool {
    log.lines()
        .any(|l| l.contains(" connected ") && l.contains(&format!("server={url} ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_node_stops_the_agent_comes_back_on_the_next_and_serves_a_shell_there() {
    let (_db, first, second) = two_nodes().await;
    let password = first.admin_password.clone().expect("admin bootstrapped");
    let admin = first.admin().await;
    let device = TestDevice::enroll(&first, &admin, "box").await;
    let id = device.device_id.clone();
    let agent = AgentProcess::start_with_args(&first, &device, &["--server", &second.url]).await;
    assert!(
        eventually(BACK, || async { connected_to(&agent.log(), &first.url) }).await,
        "{}",
        agent.log()
    );
    assert!(!second.state.registry().is_connected(&id));

    first.stop().await;
    assert!(
        eventually(BACK, || async { second.state.registry().is_connected(&id) }).await,
        "the agent reconnects to the second node; log: {}",
        agent.log()
    );
    assert!(
        eventually(BACK, || async { connected_to(&agent.log(), &second.url) }).await,
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains(&format!("next=\"{}\"", second.url)),
        "it says where it goes next: {log}"
    );
    // Its node served it, then went: the first retry waits 0.5–1 s.
    let waits = retry_waits(&log);
    assert!(
        waits.first().is_some_and(|w| (500..=1000).contains(w)),
        "{waits:?}: {log}"
    );

    let admin = second.login("admin", &password).await;
    assert!(admin.device(&id).await.unwrap().online);
    let session = shell_session(&admin, &id).await;
    let (mut tx, mut rx, access) = watch(&admin, &session).await;
    assert_eq!(access, "control");
    tx.input(b"echo moved-$((40+2))\n").await.unwrap();
    read_until(&mut rx, "moved-42", BACK).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_loses_its_agent_to_the_alternate_stored_in_device_json() {
    let db = TestDb::new().await;
    let second = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        nats: true,
        ..Options::default()
    })
    .await;
    let nats = tessera_testkit::nats_url();
    let first = ServerProcess::spawn(&db.url, "warn", &["--nats-url", &nats]).await;
    let admin = second.admin().await;
    let device = TestDevice::enroll(&second, &admin, "box").await;
    let id = device.device_id.clone();
    // What device.json may say: the node first, another as its alternate.
    let mut enrollment = device.state.enrollment().unwrap();
    enrollment.alternates = vec![enrollment.server.clone()];
    enrollment.server = first.url.clone();
    device
        .state
        .save_enrollment(&enrollment, &device.key)
        .unwrap();
    let agent = AgentProcess::spawn_with_args(&device, &[]);
    assert!(
        eventually(BACK, || async { connected_to(&agent.log(), &first.url) }).await,
        "the agent connects to the first node; log: {}",
        agent.log()
    );
    assert!(!second.state.registry().is_connected(&id));

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        eventually(BACK, || async { second.state.registry().is_connected(&id) }).await,
        "the agent reconnects to its alternate; log: {}",
        agent.log()
    );
    let waits = retry_waits(&agent.log());
    assert!(
        waits.first().is_some_and(|w| (500..=1000).contains(w)),
        "{waits:?}: {}",
        agent.log()
    );
    assert!(admin.device(&id).await.unwrap().online);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_is_passed_over_and_revocation_still_stops_the_agent() {
    let (_db, first, second) = two_nodes().await;
    let password = first.admin_password.clone().expect("admin bootstrapped");
    let admin = first.admin().await;
    let device = TestDevice::enroll(&first, &admin, "box").await;
    let id = device.device_id.clone();
    // The server it enrolled with is gone: its port on 127.0.0.1 is closed.
    let down = first.url.clone();
    first.stop().await;

    // A comma-separated list; the enrolled server again is taken once.
    // The second goes by a name, which is resolved and kept as the name.
    let named = format!("http://localhost:{}", second.addr.port());
    let list = format!("{named},{down}");
    let mut agent = AgentProcess::start_with_args(&second, &device, &["--server", &list]).await;
    assert!(
        eventually(BACK, || async { connected_to(&agent.log(), &named) }).await,
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("control connection lost")
            && l.contains(&format!("server=\"{down}\""))
            && l.contains(&format!("next=\"{named}\""))),
        "the refused first server is named, and the next one: {log}"
    );
    assert!(
        log.contains(&format!(
            "server={named} address=127.0.0.1:{}",
            second.addr.port()
        )),
        "{log}"
    );
    assert!(!connected_to(&log, &down), "{log}");

    let admin = second.login("admin", &password).await;
    admin
        .revoke_device(&id, Some("stolen".into()))
        .await
        .unwrap();
    let status = tokio::time::timeout(BACK, agent.child.wait())
        .await
        .expect("the revoked agent exits instead of trying its other servers")
        .unwrap();
    assert_eq!(status.code(), Some(3), "log: {}", agent.log());
    assert_eq!(
        agent.log().matches(" connected ").count(),
        1,
        "no reconnection after the revocation: {}",
        agent.log()
    );
    second.stop().await;
}

#[test]
fn agent_run_refuses_a_server_that_is_not_a_url_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for (bad, words) in [
        ("127.0.0.1:9", "did you mean `http://127.0.0.1:9`"),
        ("ftp://example.org", "ftp:// is not supported"),
    ] {
        let out = std::process::Command::new(tessera_bin())
            .args(["agent", "run", "--state-dir"])
            .arg(&state)
            .args(["--server", &format!("http://127.0.0.1:1,{bad}")])
            .env_clear()
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("--server") && err.contains(words),
            "{bad}: {err}"
        );
        assert!(!state.exists(), "nothing is written for {bad}");
    }
}
