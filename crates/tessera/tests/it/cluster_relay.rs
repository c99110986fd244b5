//! A viewer on one node, its session's device on another (issue 15): the
//! link through NATS carries the shell both ways with the rules of a local
//! viewer, and a viewer is told why when the node relaying its session
//! goes away.

use std::time::Duration;

use tessera_client::viewer::ViewerEvent;
use tessera_testkit::{online_device, read_until, shell_session, watch, Options, TestServer};

const ARRIVES: Duration = Duration::from_secs(15);

/// A node on `first`'s database (or a new one), routing through NATS.
async fn node(first: Option<&TestServer>) -> TestServer {
    TestServer::start_with(Options {
        database_url: first.map(|f| f.database_url.clone()),
        nats: true,
        ..Options::default()
    })
    .await
}

/// Reads events until one matches; returns it.
async fn until(
    rx: &mut tessera_client::viewer::ViewerReceiver,
    what: impl Fn(&ViewerEvent) -> bool,
) -> ViewerEvent {
    tokio::time::timeout(ARRIVES, async {
        loop {
            let e = rx.next().await;
            if what(&e) {
                return e;
            }
            if matches!(e, ViewerEvent::Closed { .. }) {
                panic!("the viewer closed first: {e:?}");
            }
        }
    })
    .await
    .expect("the event arrives")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_two_other_nodes_drive_a_shell_held_by_the_first() {
    let one = node(None).await;
    let two = node(Some(&one)).await;
    let three = node(Some(&one)).await;
    let pw = one.admin_password.clone().unwrap();
    let admin_one = one.admin().await;
    let (_device, _agent) = online_device(&one, &admin_one, "held-by-one").await;
    let session = shell_session(&admin_one, "held-by-one").await;

    // A controller on node two, a view-only watcher on node three.
    let admin_two = two.login("admin", &pw).await;
    let (mut tx, mut rx, access) = watch(&admin_two, &session).await;
    assert_eq!(access, "control");
    assert!(
        tessera_testkit::eventually(ARRIVES, || async {
            one.state
                .hub()
                .get(&session)
                .is_some_and(|l| l.viewer_count() == 1)
        })
        .await,
        "the linked viewer sits in the session on node one"
    );
    assert!(two
        .metrics()
        .await
        .contains("tessera_cluster_links{side=\"viewer\"} 1"));
    assert!(one
        .metrics()
        .await
        .contains("tessera_cluster_links{side=\"session\"} 1"));
    let admin_three = three.login("admin", &pw).await;
    let watcher = three
        .user(&admin_three, "watcher", tessera_core::roles::Role::Viewer)
        .await;
    let (mut wtx, mut wrx, waccess) = watch(&watcher, &session).await;
    assert_eq!(waccess, "view_only");

    tx.input(b"echo linked-$((6*7))\n").await.unwrap();
    read_until(&mut rx, "linked-42", ARRIVES).await;
    read_until(&mut wrx, "linked-42", ARRIVES).await;

    // The watcher's keystrokes are dropped on the session's node, as for a
    // local view-only viewer: nothing it types runs.
    wtx.input(b"echo watcher-typed-$((2*3))\n").await.unwrap();
    tx.input(b"echo after-$((1+1))\n").await.unwrap();
    let seen = read_until(&mut rx, "after-2", ARRIVES).await;
    assert!(!seen.contains("watcher-typed-6"), "{seen}");

    // A burst longer than the link's window (4.5 MB) arrives whole.
    tx.input(b"seq 1 600000; echo burst-$((3*3))\n")
        .await
        .unwrap();
    let out = read_until(&mut rx, "burst-9", Duration::from_secs(60)).await;
    let lines = out
        .lines()
        .filter(|l| l.trim().parse::<u32>().is_ok())
        .count();
    assert!(lines >= 600_000, "{lines} numbered lines");

    // Ending it tells the viewer on node two why, through the link.
    admin_one.end_session(&session).await.unwrap();
    let ended = until(&mut rx, |e| matches!(e, ViewerEvent::Ended { .. })).await;
    assert!(
        matches!(&ended, ViewerEvent::Ended { code, .. } if code == "ended_by_operator"),
        "{ended:?}"
    );
    three.stop().await;
    two.stop().await;
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_viewer_is_counted_against_the_sessions_viewer_cap() {
    let one = TestServer::start_with(Options {
        nats: true,
        configure: Some(Box::new(|c| c.max_viewers = 1)),
        ..Options::default()
    })
    .await;
    let two = node(Some(&one)).await;
    let pw = one.admin_password.clone().unwrap();
    let admin_one = one.admin().await;
    let (_device, _agent) = online_device(&one, &admin_one, "capped").await;
    let session = shell_session(&admin_one, "capped").await;
    let (_tx, _rx, _) = watch(&admin_one, &session).await;

    let admin_two = two.login("admin", &pw).await;
    let token = admin_two.viewer_token(&session).await.unwrap();
    let refused = tessera_client::viewer::connect(&admin_two, &session, &token.token).await;
    let err = refused.err().expect("refused");
    assert!(err.to_string().contains("too_many_viewers"), "{err}");
    two.stop().await;
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_nats_cannot_start_beside_a_live_one_and_says_why() {
    let one = node(None).await;
    let mut config = tessera_server::ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        tempfile::tempdir().unwrap().keep(),
    );
    config.database_url = Some(one.database_url.clone());
    let refused = tessera_server::Server::start(
        config,
        std::sync::Arc::new(tessera_core::ManualClock::starting_now()),
    )
    .await
    .err()
    .expect("a second node without NATS is refused");
    let why = refused.to_string();
    assert!(why.contains("--nats-url"), "{why}");
    assert!(why.contains(one.state.cluster().node_id()), "{why}");
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_session_tells_its_viewers_elsewhere_and_the_device_moves_on() {
    let db = tessera_testkit::TestDb::new().await;
    let two = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        nats: true,
        ..tessera_testkit::fast_heartbeat(300)
    })
    .await;
    let nats = tessera_testkit::nats_url();
    let one = tessera_testkit::ServerProcess::spawn(
        &db.url,
        "warn",
        &["--nats-url", &nats, "--heartbeat-interval", "1s"],
    )
    .await;
    let pw = two.admin_password.clone().unwrap();
    let admin_two = two.login("admin", &pw).await;
    let device = tessera_testkit::TestDevice::enroll(&two, &admin_two, "on-one").await;
    let id = device.device_id.clone();
    // Its agent knows node one first, node two as the alternate.
    let mut enrollment = device.state.enrollment().unwrap();
    enrollment.alternates = vec![enrollment.server.clone()];
    enrollment.server = one.url.clone();
    device
        .state
        .save_enrollment(&enrollment, &device.key)
        .unwrap();
    let agent = tessera_testkit::AgentProcess::spawn_with_args(&device, &[]);
    let login = one
        .client()
        .login("admin", tessera_core::api::SecretString::new(pw.clone()))
        .await
        .unwrap();
    let admin_one = one.client().with_token(login.token);
    assert!(
        tessera_testkit::eventually(ARRIVES, || async {
            admin_one.device(&id).await.is_ok_and(|d| d.online)
        })
        .await,
        "online through node one; agent log: {}",
        agent.log()
    );
    assert!(!two.state.registry().is_connected(&id));
    let session = shell_session(&admin_one, &id).await;

    // A viewer on node two, through the link to node one.
    let (mut tx, mut rx, _) = watch(&admin_two, &session).await;
    tx.input(b"echo before-$((5*5))\n").await.unwrap();
    read_until(&mut rx, "before-25", ARRIVES).await;

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &one.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = tokio::time::Instant::now();
    let ended = until(&mut rx, |e| matches!(e, ViewerEvent::Ended { .. })).await;
    assert!(
        matches!(&ended, ViewerEvent::Ended { code, .. } if code == "node_lost"),
        "{ended:?}"
    );
    let closed = tokio::time::timeout(ARRIVES, rx.next()).await.unwrap();
    assert!(
        matches!(&closed, ViewerEvent::Closed { code: Some(4000), reason } if reason == "node_lost"),
        "{closed:?}"
    );
    // About a second (the link's ping); bounded well under a heartbeat
    // of this test's node two even on a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // The device comes back on node two.
    assert!(
        tessera_testkit::eventually(ARRIVES, || async { two.state.registry().is_connected(&id) })
            .await,
        "the agent reconnects to node two; log: {}",
        agent.log()
    );
    // Once node one's lease lapses (three of its 1 s heartbeats, by its
    // real clock), node two's sweep ends the session it relayed as
    // node_lost. Node two's clock is a test clock: move it past that.
    two.clock.advance(Duration::from_secs(30));
    assert!(
        tessera_testkit::eventually(ARRIVES, || async {
            admin_two
                .session(&session)
                .await
                .is_ok_and(|s| s.end_code.as_deref() == Some("node_lost"))
        })
        .await,
        "{:?}",
        admin_two.session(&session).await
    );
    two.stop().await;
}

/// A node on `db` that routes through the NATS server at `nats`.
async fn node_on(db: &str, nats: &str) -> TestServer {
    let nats = nats.to_owned();
    TestServer::start_with(Options {
        database_url: Some(db.to_owned()),
        configure: Some(Box::new(move |c| {
            c.nats = Some(tessera_server::config::NatsConfig {
                url: nats,
                ..Default::default()
            })
        })),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_same_node_sessions_go_on_cross_node_fails_fast_and_all_recovers() {
    let mut nats = tessera_testkit::PrivateNats::start().await;
    let db = tessera_testkit::TestDb::new().await;
    let one = node_on(&db.url, &nats.url()).await;
    let two = node_on(&db.url, &nats.url()).await;
    let pw = one.admin_password.clone().unwrap();
    let admin_one = one.admin().await;
    let admin_two = two.login("admin", &pw).await;
    let (_device, _agent) = online_device(&one, &admin_one, "steady").await;
    let session = shell_session(&admin_one, "steady").await;
    let (mut local_tx, mut local_rx, _) = watch(&admin_one, &session).await;
    let (_far_tx, mut far_rx, _) = watch(&admin_two, &session).await;
    local_tx.input(b"echo both-$((4*4))\n").await.unwrap();
    read_until(&mut local_rx, "both-16", ARRIVES).await;
    read_until(&mut far_rx, "both-16", ARRIVES).await;

    nats.stop().await;
    // The viewer across nodes is told the way is gone, and soon.
    let started = tokio::time::Instant::now();
    let closed = tokio::time::timeout(ARRIVES, async {
        loop {
            if let e @ ViewerEvent::Closed { .. } = far_rx.next().await {
                return e;
            }
        }
    })
    .await
    .expect("the far viewer is closed");
    assert!(
        matches!(&closed, ViewerEvent::Closed { code: Some(4015), reason } if reason == "relay_unavailable"),
        "{closed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The viewer on the session's own node goes on.
    local_tx.input(b"echo still-$((8*8))\n").await.unwrap();
    read_until(&mut local_rx, "still-64", ARRIVES).await;
    // A new viewer across nodes is refused at once, with the reason.
    let token = admin_two.viewer_token(&session).await.unwrap();
    let asked = tokio::time::Instant::now();
    let refused = tessera_client::viewer::connect(&admin_two, &session, &token.token)
        .await
        .err()
        .expect("refused while NATS is down");
    assert!(
        refused.to_string().contains("relay_unavailable"),
        "{refused}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );

    // NATS returns: everything recovers by itself.
    nats.resume().await;
    assert!(
        tessera_testkit::eventually(Duration::from_secs(30), || async {
            one.state.cluster().nats_connected() && two.state.cluster().nats_connected()
        })
        .await,
        "both nodes reconnect to NATS"
    );
    let (mut tx, mut rx, _) = watch(&admin_two, &session).await;
    tx.input(b"echo again-$((9*9))\n").await.unwrap();
    read_until(&mut rx, "again-81", ARRIVES).await;
    two.stop().await;
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_held_by_one_node_is_watched_and_driven_from_two_others() {
    use crate::screen::{format, frame, key, next_screen, screen_setup, RAW};
    use tessera_proto::v1::screen::Body as SB;
    use tessera_proto::v1::{ScreenAck, ScreenDecoders};
    use tessera_testkit::{screen, screen_body, HandViewer};

    let one = node(None).await;
    let two = node(Some(&one)).await;
    let three = node(Some(&one)).await;
    let pw = one.admin_password.clone().unwrap();
    let admin_one = one.admin().await;
    let (mut dev, session) = screen_setup(&one, &admin_one).await;

    // A controller on node two: the device is configured, and a frame and
    // its acknowledgement cross the link.
    let admin_two = two.login("admin", &pw).await;
    let mut control = HandViewer::join(&two, &admin_two, &session).await;
    assert_eq!(control.ready.access, "control");
    let SB::Configure(c) = next_screen(&mut dev).await else {
        panic!("configure")
    };
    assert_eq!(c.codec, RAW);
    control
        .send(screen(
            &session,
            SB::Decoders(ScreenDecoders {
                codecs: vec![RAW.into()],
            }),
        ))
        .await;
    dev.send(screen(&session, format())).await;
    // Bigger than one link part: it crosses in pieces and arrives whole.
    dev.send(screen(&session, frame(1, true, 0, true, 700 * 1024)))
        .await;
    let got = control.next().await.unwrap();
    assert!(matches!(screen_body(&got), Some(SB::Format(_))));
    let got = control.next().await.unwrap();
    assert!(
        matches!(screen_body(&got), Some(SB::Frame(f)) if f.number == 1 && f.data.len() == 700 * 1024)
    );
    control
        .send(screen(&session, SB::Ack(ScreenAck { number: 1 })))
        .await;
    let SB::Credit(credit) = next_screen(&mut dev).await else {
        panic!("credit")
    };
    assert_eq!(credit.number, 1);

    // A view-only operator on node three: its keys never reach the device;
    // the controller's, sent after, come first.
    let admin_three = three.login("admin", &pw).await;
    let watcher = three
        .user(&admin_three, "watcher", tessera_core::roles::Role::Viewer)
        .await;
    let mut view_only = HandViewer::join(&three, &watcher, &session).await;
    assert_eq!(view_only.ready.access, "view_only");
    view_only.send(screen(&session, key(100))).await;
    control.send(screen(&session, key(4))).await;
    let k = loop {
        match next_screen(&mut dev).await {
            SB::Key(k) => break k,
            _ => continue,
        }
    };
    assert_eq!(k.usage, 4, "the view-only key was dropped on node one");
    three.stop().await;
    two.stop().await;
    one.stop().await;
}

/// An operator client signed in at a server process.
async fn signed_in(
    p: &tessera_testkit::ServerProcess,
    user: &str,
    pw: &str,
) -> tessera_client::ApiClient {
    let login = p
        .client()
        .login(user, tessera_core::api::SecretString::new(pw.to_owned()))
        .await
        .expect("sign in");
    p.client().with_token(login.token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_server_processes_share_a_device_its_viewers_a_revocation_and_a_lockout() {
    let db = tessera_testkit::TestDb::new().await;
    let nats = tessera_testkit::nats_url();
    let args = ["--nats-url", nats.as_str(), "--heartbeat-interval", "1s"];
    let p1 = tessera_testkit::ServerProcess::spawn(&db.url, "warn", &args).await;
    let p2 = tessera_testkit::ServerProcess::spawn(&db.url, "warn", &args).await;
    let p3 = tessera_testkit::ServerProcess::spawn(&db.url, "warn", &args).await;
    let pw = p1
        .bootstrap_password()
        .expect("the first node made the admin");
    let (a1, a2, a3) = (
        signed_in(&p1, "admin", &pw).await,
        signed_in(&p2, "admin", &pw).await,
        signed_in(&p3, "admin", &pw).await,
    );

    // The device's agent runs against node one.
    let token = a1
        .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
            uses: 1,
            ttl_seconds: 600,
            tags: vec![],
        })
        .await
        .unwrap();
    use tessera_core::Clock as _;
    let now = tessera_core::SystemClock.now().as_millis();
    let device = tessera_testkit::TestDevice::enroll_at(&p1.url, token.secret, "far", now).await;
    let id = device.device_id.clone();
    let agent = tessera_testkit::AgentProcess::spawn_with_args(&device, &[]);
    assert!(
        tessera_testkit::eventually(ARRIVES, || async {
            a1.device(&id).await.is_ok_and(|d| d.online)
        })
        .await,
        "online on node one; agent log: {}",
        agent.log()
    );
    let session = shell_session(&a1, &id).await;

    // A controller on node two, a view-only operator on node three.
    let (mut tx, mut rx, _) = watch(&a2, &session).await;
    a3.create_user(&tessera_core::api::CreateUserRequest {
        username: "watcher".to_owned(),
        role: tessera_core::roles::Role::Viewer,
        password: Some(tessera_core::api::SecretString::new(
            "watcher-password-123".to_owned(),
        )),
    })
    .await
    .unwrap();
    let watcher = signed_in(&p3, "watcher", "watcher-password-123").await;
    let (mut wtx, mut wrx, access) = watch(&watcher, &session).await;
    assert_eq!(access, "view_only");
    tx.input(b"echo three-nodes-$((7*6))\n").await.unwrap();
    read_until(&mut rx, "three-nodes-42", ARRIVES).await;
    read_until(&mut wrx, "three-nodes-42", ARRIVES).await;
    wtx.input(b"echo from-the-watcher-$((3*3))\n")
        .await
        .unwrap();
    tx.input(b"echo control-again-$((2*2))\n").await.unwrap();
    let seen = read_until(&mut rx, "control-again-4", ARRIVES).await;
    assert!(!seen.contains("from-the-watcher-9"), "{seen}");

    // Guesses at a support code spread over the nodes count together.
    let real = a1
        .create_support_code(&tessera_core::api::CreateSupportCodeRequest::default())
        .await
        .unwrap()
        .code
        .expose()
        .to_owned();
    for p in [&p1, &p2, &p3, &p1, &p2, &p3, &p1, &p2, &p3, &p1] {
        let e = p
            .client()
            .preview_support_code("222-222-222")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("not_found"), "{e}");
    }
    for p in [&p1, &p2, &p3] {
        let e = p.client().preview_support_code(&real).await.unwrap_err();
        assert_eq!(e.code(), Some("locked_out"), "{e}");
    }

    // A revocation through node three cuts the device on node one within
    // one heartbeat (1 s here), plus slack for a loaded machine.
    let keys = a3.device_keys(&id).await.unwrap();
    let started = tokio::time::Instant::now();
    a3.revoke_device_key(&id, &keys[0].id, None).await.unwrap();
    assert!(
        tessera_testkit::eventually(ARRIVES, || async {
            a2.device(&id).await.is_ok_and(|d| !d.online)
        })
        .await
    );
    let ended = until(&mut rx, |e| {
        matches!(e, ViewerEvent::Closed { .. } | ViewerEvent::Ended { .. })
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?} {ended:?}",
        started.elapsed()
    );
    drop(agent);
}

/// The node holding `device`'s agent connection, by the database.
async fn holder(db: &str, device: &str) -> Option<String> {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(db).await.ok()?;
    sqlx::query_scalar::<_, Option<String>>("SELECT node_id FROM devices WHERE id = $1")
        .bind(device)
        .fetch_one(&mut conn)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_one_address_survive_the_loss_of_the_devices_node() {
    let db = tessera_testkit::TestDb::new().await;
    let nats = tessera_testkit::nats_url();
    let args = ["--nats-url", nats.as_str(), "--heartbeat-interval", "1s"];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(tessera_testkit::ServerProcess::spawn(&db.url, "warn", &args).await);
    }
    let pw = nodes[0]
        .bootstrap_password()
        .expect("the first node made the admin");
    let ids: Vec<String> = nodes
        .iter()
        .map(|p| {
            std::fs::read_to_string(p.data_dir().join("node.id"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    let lb =
        tessera_testkit::Balancer::start(nodes.iter().map(|p| p.addr().unwrap()).collect()).await;
    let client = || {
        tessera_client::ApiClient::new(&lb.url(), &tessera_client::TlsTrust::PublicRoots).unwrap()
    };
    let login = client()
        .login("admin", tessera_core::api::SecretString::new(pw.clone()))
        .await
        .unwrap();
    let admin = client().with_token(login.token);

    // Everything goes through the one address: enrollment, the agent.
    let token = admin
        .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
            uses: 1,
            ttl_seconds: 600,
            tags: vec![],
        })
        .await
        .unwrap();
    use tessera_core::Clock as _;
    let now = tessera_core::SystemClock.now().as_millis();
    let device =
        tessera_testkit::TestDevice::enroll_at(&lb.url(), token.secret, "behind", now).await;
    let id = device.device_id.clone();
    let agent = tessera_testkit::AgentProcess::spawn_with_args(&device, &[]);
    assert!(
        tessera_testkit::eventually(ARRIVES, || async {
            admin.device(&id).await.is_ok_and(|d| d.online)
        })
        .await,
        "online; agent log: {}",
        agent.log()
    );
    let held = holder(&db.url, &id).await;
    let held = held.expect("a node holds the device");
    let lost = ids.iter().position(|n| *n == held).expect("one of ours");
    let session = shell_session(&admin, &id).await;

    // The viewer reaches another node than the device's.
    let token = admin.viewer_token(&session).await.unwrap();
    lb.steer(lost + 1);
    let (mut tx, mut rx) = tessera_client::viewer::connect(&admin, &session, &token.token)
        .await
        .expect("viewer connects");
    until(&mut rx, |e| matches!(e, ViewerEvent::Ready { .. })).await;
    tx.input(b"echo through-one-address-$((6*7))\n")
        .await
        .unwrap();
    read_until(&mut rx, "through-one-address-42", ARRIVES).await;

    // The device's node is killed: the viewer is told why, and the device
    // is back online through the same address on another node.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &nodes[lost].pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = tokio::time::Instant::now();
    let ended = until(&mut rx, |e| matches!(e, ViewerEvent::Ended { .. })).await;
    assert!(
        matches!(&ended, ViewerEvent::Ended { code, .. } if code == "node_lost"),
        "{ended:?}"
    );
    assert!(
        tessera_testkit::eventually(ARRIVES, || async {
            holder(&db.url, &id).await.is_some_and(|n| n != held)
                && admin.device(&id).await.is_ok_and(|d| d.online)
        })
        .await,
        "back online on another node; agent log: {}",
        agent.log()
    );
    // The documented bound: at most a second after the agent notices
    // (at once for a killed process), plus its handshake; slack for load.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A new session through the same address works again.
    let again = shell_session(&admin, &id).await;
    let (mut tx, mut rx, _) = watch(&admin, &again).await;
    tx.input(b"echo after-the-loss-$((2*21))\n").await.unwrap();
    read_until(&mut rx, "after-the-loss-42", ARRIVES).await;
}

/// The next `Closed` a viewer sees (output before it is skipped).
async fn closed(rx: &mut tessera_client::viewer::ViewerReceiver) -> ViewerEvent {
    tokio::time::timeout(ARRIVES, async {
        loop {
            if let e @ (ViewerEvent::Closed { .. } | ViewerEvent::Ended { .. }) = rx.next().await {
                return e;
            }
        }
    })
    .await
    .expect("the viewer is closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_closes_its_own_viewers_with_server_shutting_down() {
    let one = node(None).await;
    let two = node(Some(&one)).await;
    let pw = one.admin_password.clone().unwrap();
    let admin_one = one.admin().await;
    let admin_two = two.login("admin", &pw).await;
    let (_device, _agent) = online_device(&one, &admin_one, "stays").await;
    let session = shell_session(&admin_one, "stays").await;
    let (mut local_tx, mut local_rx, _) = watch(&admin_one, &session).await;
    let (_far_tx, mut far_rx, _) = watch(&admin_two, &session).await;
    local_tx.input(b"echo both-$((3*5))\n").await.unwrap();
    read_until(&mut local_rx, "both-15", ARRIVES).await;
    read_until(&mut far_rx, "both-15", ARRIVES).await;

    // Node two is drained: its viewer (linked to node one) is told why.
    two.stop().await;
    let e = closed(&mut far_rx).await;
    assert!(
        matches!(&e, ViewerEvent::Closed { code: Some(1001), reason } if reason == "server_shutting_down"),
        "{e:?}"
    );
    // The session goes on on node one, and node one lets the linked
    // viewer go at once (its answering Close crossed the link).
    local_tx.input(b"echo still-$((7*7))\n").await.unwrap();
    read_until(&mut local_rx, "still-49", ARRIVES).await;
    assert!(
        tessera_testkit::eventually(ARRIVES, || async {
            one.state
                .hub()
                .get(&session)
                .is_some_and(|l| l.viewer_count() == 1)
        })
        .await,
        "only the local viewer is left"
    );

    // Node one is stopped: its own viewer is told why, too.
    one.stop().await;
    let e = closed(&mut local_rx).await;
    assert!(
        matches!(&e, ViewerEvent::Closed { code: Some(1001), reason } if reason == "server_shutting_down"),
        "{e:?}"
    );
}
