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
