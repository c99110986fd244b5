//! Devices that try to pin the server (issue 12, finding 4): more
//! connections than a device may hold, and connections that stop reading
//! while the server pushes to them. A device that stops reading must still
//! be cut off by its heartbeat deadline, by a revocation, or by the write
//! timeout, and show offline; and a connection task that never reaches its
//! cleanup (aborted) still releases what it held.

use std::time::Duration;

use tessera_client::control::{handshake, DeviceHello};
use tessera_client::AuditQuery;
use tessera_testkit::{eventually, open_ws, Options, TestDevice, TestServer, Ws};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;

/// A raw device socket whose receive buffer is small, so a server that
/// pushes to a device that does not read fills it quickly.
type SmallWs = WebSocketStream<tokio::net::TcpStream>;

/// A server with these device settings and a high viewer input rate (the
/// tests push through a viewer's input).
fn server(heartbeat: Duration, write_timeout: Duration, cap: usize) -> Options {
    Options {
        configure: Some(Box::new(move |c| {
            c.heartbeat_interval = heartbeat;
            c.device_write_timeout = write_timeout;
            c.max_connections_per_device = cap;
            c.viewer_input_per_second = 100_000;
        })),
        ..Options::default()
    }
}

async fn prove<S>(ws: &mut WebSocketStream<S>, device: &TestDevice)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let keys = device.state.identity().unwrap();
    let id = keys.device_id();
    let hello = DeviceHello::agent(&keys, &id, "test");
    tokio::time::timeout(Duration::from_secs(10), handshake(ws, &hello))
        .await
        .expect("handshake in time")
        .expect("welcomed");
}

/// Connects as `device` (its agent) over a socket with a 4 KiB receive
/// buffer and proves its identity; the caller then never reads it.
async fn connect_small(s: &TestServer, device: &TestDevice) -> SmallWs {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(s.addr).await.unwrap();
    let mut req = format!("ws://{}/ws/device", s.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", device.key.expose()).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    prove(&mut ws, device).await;
    ws
}

/// Opens a shell session on the device and has its operator paste input
/// without end, which the server pushes down the device's socket, until
/// the device's input queue has stayed full (the server's writes to the
/// device are blocked). The paste goes on in the returned task.
async fn push_until_blocked(s: &TestServer, device: &TestDevice) -> tokio::task::JoinHandle<()> {
    let admin = s.admin().await;
    let session = tessera_testkit::shell_session(&admin, &device.device_id).await;
    let (mut tx, rx, _) = tessera_testkit::watch(&admin, &session).await;
    let paste = tokio::spawn(async move {
        let _rx = rx;
        let chunk = vec![b'x'; 60 * 1024];
        // Input the server cannot queue is dropped (and counted); the
        // viewer itself is never refused for it.
        while tx.input(&chunk).await.is_ok() {}
    });
    assert!(
        eventually(Duration::from_secs(60), || async {
            s.state
                .metrics()
                .render()
                .contains("reason=\"device_busy\"")
        })
        .await,
        "the device's input queue never filled"
    );
    paste
}

async fn connected(s: &TestServer, device: &TestDevice) -> bool {
    s.state.registry().is_connected(&device.device_id)
}

async fn cut_off_and_offline(s: &TestServer, device: &TestDevice, limit: Duration) -> bool {
    let admin = s.admin().await;
    eventually(limit, || async {
        !connected(s, device).await && !admin.device(&device.device_id).await.unwrap().online
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_device_cap_is_refused_with_too_many_connections() {
    let s =
        TestServer::start_with(server(Duration::from_secs(60), Duration::from_secs(10), 2)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "greedy").await;
    let url = format!("ws://{}/ws/device", s.addr);
    let mut first = open_ws(&url, device.key.expose()).await.unwrap();
    prove(&mut first, &device).await;
    // The second is still proving its identity: it counts all the same.
    let second: Ws = open_ws(&url, device.key.expose()).await.unwrap();
    let (status, body) = open_ws(&url, device.key.expose()).await.err().unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("too_many_connections")),
        "{body}"
    );
    // Another device is not held back by this one's connections.
    let other = TestDevice::enroll(&s, &admin, "modest").await;
    let mut theirs = open_ws(&url, other.key.expose()).await.unwrap();
    prove(&mut theirs, &other).await;
    // A connection that ends gives its slot back.
    drop(second);
    assert!(
        eventually(Duration::from_secs(15), || async {
            open_ws(&url, device.key.expose()).await.is_ok()
        })
        .await,
        "the slot of a closed connection was never given back"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_reading_is_still_cut_off_by_its_heartbeat_deadline() {
    // The deadline (3 × 5 s) falls while the server's writes to the device
    // are blocked; the write timeout is far away.
    let s =
        TestServer::start_with(server(Duration::from_secs(5), Duration::from_secs(300), 4)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "deaf").await;
    let _ws = connect_small(&s, &device).await;
    let _paste = push_until_blocked(&s, &device).await;
    assert!(
        cut_off_and_offline(&s, &device, Duration::from_secs(30)).await,
        "a device that neither reads nor heartbeats stayed connected"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_that_stops_reading_is_cut_off_at_once() {
    // Neither the heartbeat deadline nor the write timeout falls during the
    // test: only the revocation can end the connection.
    let s = TestServer::start_with(server(
        Duration::from_secs(120),
        Duration::from_secs(300),
        4,
    ))
    .await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "stolen").await;
    let _ws = connect_small(&s, &device).await;
    let _paste = push_until_blocked(&s, &device).await;
    assert!(connected(&s, &device).await);
    admin
        .revoke_device(&device.device_id, Some("stolen".into()))
        .await
        .unwrap();
    assert!(
        cut_off_and_offline(&s, &device, Duration::from_secs(5)).await,
        "a revoked device that does not read stayed connected"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_reading_is_disconnected_after_the_write_timeout_and_audited() {
    let s =
        TestServer::start_with(server(Duration::from_secs(120), Duration::from_secs(6), 4)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "stalled").await;
    let _ws = connect_small(&s, &device).await;
    let _paste = push_until_blocked(&s, &device).await;
    assert!(
        cut_off_and_offline(&s, &device, Duration::from_secs(30)).await,
        "a device that does not read stayed connected past the write timeout"
    );
    let page = admin
        .audit_page(&AuditQuery {
            action: Some("device_stalled".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let row = page
        .entries
        .iter()
        .find(|e| e.target.as_deref() == Some(&format!("device:{}", device.device_id)))
        .expect("a device_stalled audit row");
    assert_eq!(row.details["reason"], "write_timeout");
    // The key is nowhere in it.
    assert!(!row.details.to_string().contains(device.key.expose()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_connection_task_still_releases_presence_sessions_and_its_slot() {
    use tessera_server::control::connection::Presence;
    use tessera_server::control::Registry;

    let s =
        TestServer::start_with(server(Duration::from_secs(120), Duration::from_secs(10), 1)).await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "doomed").await;
    let principal = tessera_server::auth::device::DevicePrincipal {
        device_id: device.device_id.clone(),
        key_id: "k".into(),
        key_prefix: "cak_test".into(),
        tenant_id: "t".into(),
        owner_user_id: "u".into(),
        ed25519_public: [0; 32],
        support_session_only: false,
    };
    // A connection task as the server runs it: a slot, a registration, a
    // relayed session on it; then it is aborted before its cleanup.
    let state = s.state.clone();
    let slot = Registry::reserve(&state, &device.device_id, 1).expect("a free slot");
    let (presence, registration) = Presence::enter(&state, slot, &principal, true, 2, state.now());
    let session = tessera_testkit::shell_session(&admin, &device.device_id).await;
    let task = tokio::spawn(async move {
        let _held = (presence, registration);
        std::future::pending::<()>().await;
    });
    task.abort();
    let _ = task.await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let row = admin.session(&session).await.unwrap();
            row.state == "ended" && row.end_code.as_deref() == Some("device_disconnected")
        })
        .await,
        "the aborted connection's session is still relayed"
    );
    // The rest of the release runs in a task of its own after the abort.
    assert!(
        eventually(Duration::from_secs(10), || async {
            !connected(&s, &device).await && s.state.registry().slots_of(&device.device_id) == 0
        })
        .await,
        "the aborted connection still holds its registration or slot"
    );
    // So the device can connect again (its cap is 1).
    assert!(Registry::reserve(&state, &device.device_id, 1).is_some());
    s.stop().await;
}

/// Not a check: measures the resident memory of a `tessera server`
/// process (`TESSERA_BIN`, to compare builds) while three devices that do
/// not read (nor heartbeat, every 2 s) have input pasted at them, and
/// whether they still show online 15 s later. Run with
/// `--run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_server_memory_with_devices_that_do_not_read() {
    use tessera_testkit::{proc_status_kb, tessera_bin, ServerProcess};

    let server = ServerProcess::launch(
        &tessera_bin(),
        None,
        "warn",
        &[
            "--viewer-input-rate",
            "100000",
            "--heartbeat-interval",
            "2s",
        ],
    )
    .await
    .unwrap();
    let pid = server.pid().unwrap();
    let pw = server.bootstrap_password().unwrap();
    let login = server
        .client()
        .login("admin", tessera_core::api::SecretString::new(pw))
        .await
        .unwrap();
    let admin = server.client().with_token(login.token);
    let addr = server.addr().unwrap();
    let mut sockets = Vec::new();
    let mut pastes = Vec::new();
    let before = proc_status_kb(pid, "VmRSS:").unwrap();
    for i in 0..3 {
        let token = admin
            .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
                uses: 1,
                ttl_seconds: 3600,
                tags: vec![],
            })
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state = tessera_agent::AgentState::new(dir.path().join("agent"));
        let opts = tessera_agent::enroll::EnrollOptions {
            server: server.url.clone(),
            tls_fingerprint: None,
            ca_cert: None,
            name: Some(format!("deaf{i}")),
        };
        tessera_agent::enroll::with_token(&state, &opts, token.secret)
            .await
            .unwrap();
        let key = state.key().unwrap();
        let keys = state.identity().unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let tcp = sock.connect(addr).await.unwrap();
        let mut req = format!("ws://{addr}/ws/device")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", key.expose()).parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        let id = keys.device_id();
        handshake(&mut ws, &DeviceHello::agent(&keys, &id, "test"))
            .await
            .unwrap();
        let session = tessera_testkit::shell_session(&admin, id.as_str()).await;
        let (mut tx, rx, _) = tessera_testkit::watch(&admin, &session).await;
        pastes.push(tokio::spawn(async move {
            let _rx = rx;
            let chunk = vec![b'x'; 60 * 1024];
            while tx.input(&chunk).await.is_ok() {}
        }));
        sockets.push((ws, dir, id));
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = proc_status_kb(pid, "VmRSS:").unwrap();
    let peak = proc_status_kb(pid, "VmHWM:").unwrap();
    println!(
        "server RSS: {} MiB before, {} MiB with 3 non-reading devices (peak {} MiB)",
        before / 1024,
        after / 1024,
        peak / 1024
    );
    let mut online = 0;
    for (_, _, id) in &sockets {
        online += usize::from(admin.device(id.as_str()).await.unwrap().online);
    }
    println!("devices still online after 15 s without a heartbeat: {online} of 3");
    for p in pastes {
        p.abort();
    }
}
