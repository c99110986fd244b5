//! Automatic sessions whose members sit on different nodes (issue 15): two
//! nodes on one database, routing through the real NATS server. The
//! creator connects to node A, which routes the session; members' agents
//! connect to node B (and one to A). Invitations, answers, handshakes and
//! sealed payloads cross in both directions; a member that loses its grant
//! or disconnects on B is removed for everyone; the creator ending the
//! session stops routing on both nodes; with NATS out of reach, a member
//! on another node is answered `relay_unavailable` and a session on one
//! node goes on; a member's node killed with `kill -9` costs the session
//! that member (`node_lost`), and only that member.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_agent::auto::{AutoSession, Event};
use tessera_client::ApiClient;
use tessera_core::trust::Scope;
use tessera_proto::Body;
use tessera_testkit::{
    eventually, nats_url, tessera_bin, AgentProcess, Options, ServerProcess, TestDevice, TestServer,
};

use crate::trusted::{audit, create, grant, trust_both, DAY};

const HEARTBEAT: Duration = Duration::from_millis(1000);

/// Long enough for anything that does happen; used where the test waits
/// for something to arrive (never to show that something does not).
const ARRIVES: Duration = Duration::from_secs(15);

fn node_options(database_url: Option<String>, nats_url: Option<String>) -> Options {
    node_options_beating(database_url, nats_url, HEARTBEAT)
}

/// [`node_options`] with another heartbeat (a long one shows that what
/// arrives within seconds is no sweep's doing).
fn node_options_beating(
    database_url: Option<String>,
    nats_url: Option<String>,
    heartbeat: Duration,
) -> Options {
    Options {
        database_url,
        nats: nats_url.is_none(),
        configure: Some(Box::new(move |c| {
            c.heartbeat_interval = heartbeat;
            c.pairing_interval = Duration::from_secs(1);
            if let Some(url) = nats_url {
                c.nats = Some(tessera_server::config::NatsConfig {
                    url,
                    ..Default::default()
                });
            }
        })),
        ..Options::default()
    }
}

/// Node A, then node B on A's database, both on the test NATS server; and
/// the bootstrap admin logged in on each.
async fn two_nodes() -> (TestServer, TestServer, ApiClient, ApiClient) {
    let a = TestServer::start_with(node_options(None, None)).await;
    let b = TestServer::start_with(node_options(Some(a.database_url.clone()), None)).await;
    let admin_a = a.admin().await;
    let admin_b = b.login("admin", &a.admin_password.clone().unwrap()).await;
    (a, b, admin_a, admin_b)
}

/// `member` trusts `creator` both ways and lets it auto-join it for files.
async fn befriend(creator: &TestDevice, member: &TestDevice) -> tessera_core::api::GrantView {
    trust_both(creator, member).await;
    grant(member, creator, &[Scope::Files], 30 * DAY).await
}

/// Sealed payloads node `s` routes for `session` from now on.
fn routed(s: &TestServer, session: &str) -> Arc<Mutex<usize>> {
    let seen: Arc<Mutex<usize>> = Arc::default();
    let (sink, session) = (seen.clone(), session.to_owned());
    s.state.set_relay_tap(Some(Arc::new(move |b: &mut Body| {
        if let Body::E2eData(d) = b {
            if d.session_id == session {
                *sink.lock().unwrap() += 1;
            }
        }
    })));
    seen
}

/// Moves `s`'s test clock along with the real one, so that a node on the
/// real clock (a child process) reads `s`'s lease as live.
fn keep_pace(s: &TestServer) -> tokio::task::JoinHandle<()> {
    let clock = s.clock.clone();
    tokio::spawn(async move {
        let step = Duration::from_millis(200);
        loop {
            tokio::time::sleep(step).await;
            clock.advance(step);
        }
    })
}

async fn logged(p: &AgentProcess, text: &str) -> bool {
    eventually(ARRIVES, || {
        let has = p.log().contains(text);
        async move { has }
    })
    .await
}

/// The first event of `session` that `pick` takes, within [`ARRIVES`].
async fn event<T>(session: &mut AutoSession, pick: impl FnMut(Event) -> Option<T>) -> Option<T> {
    event_within(session, ARRIVES, pick).await
}

/// The first event of `session` that `pick` takes, within `limit`.
async fn event_within<T>(
    session: &mut AutoSession,
    limit: Duration,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, session.next_event()).await {
            Ok(Ok(Some(e))) => {
                if let Some(t) = pick(e) {
                    return Some(t);
                }
            }
            _ => return None,
        }
    }
}

fn small_file(dir: &std::path::Path, name: &str, size: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_another_node_take_part_end_to_end_and_the_end_reaches_both_nodes() {
    let (na, nb, admin_a, admin_b) = two_nodes().await;
    let creator = TestDevice::enroll(&na, &admin_a, "creator").await;
    let b = TestDevice::enroll(&nb, &admin_b, "bravo").await;
    let c = TestDevice::enroll(&nb, &admin_b, "charlie").await;
    let d = TestDevice::enroll(&na, &admin_a, "delta").await;
    for m in [&b, &c, &d] {
        befriend(&creator, m).await;
    }
    let agent_b = AgentProcess::start(&nb, &b).await;
    let agent_c = AgentProcess::start(&nb, &c).await;
    let agent_d = AgentProcess::start(&na, &d).await;

    let mut session = create(
        &creator,
        &[&b.device_id, &c.device_id, &d.device_id],
        Scope::Files,
        false,
    )
    .await;
    let mut joined = session.joined();
    joined.sort();
    let mut want = vec![
        b.device_id.clone(),
        c.device_id.clone(),
        d.device_id.clone(),
    ];
    want.sort();
    assert_eq!(joined, want, "{:?}", session.outcomes);
    let id = session.session_id.clone();
    // Routed by the creator's node; node B only forwards for its members.
    assert!(na.state.auto().is_routing(&id));
    assert!(!nb.state.auto().is_routing(&id));
    assert!(nb.state.auto().is_joined_away(&id));

    let seen = routed(&na, &id);
    session.send_text("hello-from-node-a").await.unwrap();
    for p in [&agent_b, &agent_c, &agent_d] {
        assert!(logged(p, "hello-from-node-a").await, "{}", p.log());
    }
    // Files go out, and every member's acknowledgement comes back (from B
    // through A): `send_files` returns only once each member verified all.
    let dir = tempfile::tempdir().unwrap();
    let file = small_file(dir.path(), "across.bin", 300 * 1024);
    let items = tessera_agent::files::walk(std::slice::from_ref(&file)).unwrap();
    session
        .send_files(&items, |_| {})
        .await
        .expect("every member, on either node, acknowledges");
    let sent = std::fs::read(&file).unwrap();
    for m in [&b, &c, &d] {
        assert_eq!(std::fs::read(m.inbox().join("across.bin")).unwrap(), sent);
    }
    assert!(*seen.lock().unwrap() > 0, "node A routed the payloads");

    session.end().await;
    for p in [&agent_b, &agent_c, &agent_d] {
        assert!(logged(p, "automatic session ended").await, "{}", p.log());
        assert!(p.log().contains("ended_by_creator"), "{}", p.log());
    }
    assert!(!na.state.auto().is_routing(&id), "node A stopped routing");
    assert!(
        eventually(ARRIVES, || async { !nb.state.auto().is_joined_away(&id) }).await,
        "node B forgot the session"
    );
    let ended = audit(&admin_b, "session_ended").await;
    let target = format!("session:{id}");
    assert!(
        ended
            .iter()
            .any(|r| r.target.as_deref() == Some(target.as_str())),
        "{ended:?}"
    );
    nb.stop().await;
    na.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_on_another_node_that_loses_its_grant_or_disconnects_is_removed_for_everyone() {
    let (na, nb, admin_a, admin_b) = two_nodes().await;
    let creator = TestDevice::enroll(&na, &admin_a, "creator").await;
    let b = TestDevice::enroll(&nb, &admin_b, "bravo").await;
    let c = TestDevice::enroll(&nb, &admin_b, "charlie").await;
    let d = TestDevice::enroll(&na, &admin_a, "delta").await;
    befriend(&creator, &b).await;
    let grant_c = befriend(&creator, &c).await;
    befriend(&creator, &d).await;
    let agent_b = AgentProcess::start(&nb, &b).await;
    let agent_c = AgentProcess::start(&nb, &c).await;
    let agent_d = AgentProcess::start(&na, &d).await;
    let mut session = create(
        &creator,
        &[&b.device_id, &c.device_id, &d.device_id],
        Scope::Files,
        false,
    )
    .await;
    assert_eq!(session.joined().len(), 3, "{:?}", session.outcomes);
    session.send_text("everyone-hears-this").await.unwrap();
    for p in [&agent_b, &agent_c, &agent_d] {
        assert!(logged(p, "everyone-hears-this").await, "{}", p.log());
    }

    // An operator on node B, which does not route the session, revokes C's
    // grant: C is removed for everyone, with the reason.
    admin_b
        .revoke_grant(&grant_c.id, Some("no longer needed".into()))
        .await
        .expect("revoke on node B");
    let why = event(&mut session, |e| match e {
        Event::Left { member, reason } if member == c.device_id => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(why.as_deref(), Some("grant_revoked"), "the creator is told");
    assert!(
        logged(&agent_c, "removed from an automatic session").await,
        "C is told: {}",
        agent_c.log()
    );

    // B's agent goes away on node B: the creator learns it disconnected.
    drop(agent_b);
    let why = event(&mut session, |e| match e {
        Event::Left { member, reason } if member == b.device_id => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(why.as_deref(), Some("disconnected"), "the creator is told");

    session.send_text("only-d-hears-this").await.unwrap();
    assert!(
        logged(&agent_d, "only-d-hears-this").await,
        "D stays, under the new key: {}",
        agent_d.log()
    );
    tokio::time::sleep(HEARTBEAT).await;
    assert!(
        !agent_c.log().contains("only-d-hears-this"),
        "nothing after reaches C"
    );

    let left = audit(&admin_a, "auto_member_left").await;
    let target = format!("session:{}", session.session_id);
    let left_with = |member: &str, reason: &str| {
        left.iter().any(|r| {
            r.target.as_deref() == Some(target.as_str())
                && r.details["member"] == member
                && r.details["reason"] == reason
        })
    };
    assert!(left_with(&c.device_id, "grant_revoked"), "{left:?}");
    assert!(left_with(&b.device_id, "disconnected"), "{left:?}");
    assert!(
        !left
            .iter()
            .any(|r| r.details["member"] == d.device_id.as_str()),
        "D did not leave"
    );
    session.end().await;
    nb.stop().await;
    na.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_a_member_on_another_node_is_relay_unavailable_and_one_node_goes_on() {
    // Node A's NATS is a closed loopback port: it never connects. Node B
    // routes through the test NATS server as usual.
    let na =
        TestServer::start_with(node_options(None, Some("nats://127.0.0.1:1".to_owned()))).await;
    let nb = TestServer::start_with(node_options(Some(na.database_url.clone()), None)).await;
    let admin_a = na.admin().await;
    let admin_b = nb.login("admin", &na.admin_password.clone().unwrap()).await;
    let creator = TestDevice::enroll(&na, &admin_a, "creator").await;
    let b = TestDevice::enroll(&nb, &admin_b, "bravo").await;
    let d = TestDevice::enroll(&na, &admin_a, "delta").await;
    befriend(&creator, &b).await;
    befriend(&creator, &d).await;
    let _agent_b = AgentProcess::start(&nb, &b).await;
    let agent_d = AgentProcess::start(&na, &d).await;

    let session = create(&creator, &[&b.device_id], Scope::Files, false).await;
    assert!(session.joined().is_empty());
    let outcome = session
        .outcomes
        .iter()
        .find(|o| o.device_id == b.device_id)
        .map(|o| o.outcome.clone());
    assert_eq!(outcome.as_deref(), Some("relay_unavailable"));

    // Both named: D (here) joins, B is answered why not; the session on
    // one node works.
    let mut session = create(&creator, &[&b.device_id, &d.device_id], Scope::Files, false).await;
    assert_eq!(session.joined(), vec![d.device_id.clone()]);
    session.send_text("one-node-goes-on").await.unwrap();
    assert!(
        logged(&agent_d, "one-node-goes-on").await,
        "{}",
        agent_d.log()
    );
    let joins = audit(&admin_a, "auto_join").await;
    assert!(
        joins
            .iter()
            .any(|r| r.details["member"] == b.device_id.as_str()
                && r.details["outcome"] == "relay_unavailable"),
        "{joins:?}"
    );
    session.end().await;
    nb.stop().await;
    na.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_node_is_killed_leaves_with_node_lost_and_the_rest_goes_on() {
    let na = TestServer::start_with(node_options(None, None)).await;
    // Node B, on the real clock, reads the lease A (the session's hub)
    // renews by its test clock.
    let ticking = keep_pace(&na);
    // Node B is a child process on A's database, so it can be killed.
    let nats = nats_url();
    let mut nb = ServerProcess::spawn(
        &na.database_url,
        "info",
        &["--nats-url", &nats, "--heartbeat-interval", "1s"],
    )
    .await;
    let admin_a = na.admin().await;
    let creator = TestDevice::enroll(&na, &admin_a, "creator").await;
    let b = TestDevice::enroll(&na, &admin_a, "bravo").await;
    let d = TestDevice::enroll(&na, &admin_a, "delta").await;
    befriend(&creator, &b).await;
    befriend(&creator, &d).await;
    // B's agent talks to node B.
    let mut enrollment = b.state.enrollment().unwrap();
    enrollment.server = nb.url.clone();
    b.state.save_enrollment(&enrollment, &b.key).unwrap();
    let log_path = b.dir().join("agent-on-b.log");
    let _agent_b = tokio::process::Command::new(tessera_bin())
        .args(["agent", "run", "--state-dir"])
        .arg(b.dir())
        .env("HOME", b.home())
        .env("TESSERA_INBOX", b.inbox())
        .env("TESSERA_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let b_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let on_b = eventually(ARRIVES, || async {
        let node =
            tessera_server::store::nodes::of_device(na.state.db(), &b.device_id, na.state.now())
                .await
                .unwrap();
        node.is_some_and(|n| n != na.state.cluster().node_id())
    })
    .await;
    assert!(on_b, "B's agent is online on node B: {}", b_log());
    let agent_d = AgentProcess::start(&na, &d).await;

    let mut session = create(&creator, &[&b.device_id, &d.device_id], Scope::Files, false).await;
    assert_eq!(session.joined().len(), 2, "{:?}", session.outcomes);
    session.send_text("before-the-kill").await.unwrap();
    assert!(
        eventually(ARRIVES, || {
            let has = b_log().contains("before-the-kill");
            async move { has }
        })
        .await,
        "{}",
        b_log()
    );
    assert!(logged(&agent_d, "before-the-kill").await);

    nb.child.start_kill().unwrap();
    let _ = nb.child.wait().await;
    // Node A's clock passes node B's lease: whether NATS already dropped
    // B's subscription (no responders) or a delivery goes unanswered until
    // its deadline, B is gone.
    na.clock.advance(Duration::from_secs(10));
    session.send_text("after-the-kill").await.unwrap();
    let why = event_within(&mut session, ARRIVES * 2, |e| match e {
        Event::Left { member, reason } if member == b.device_id => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(why.as_deref(), Some("node_lost"), "the creator is told why");
    session.send_text("d-still-hears-this").await.unwrap();
    assert!(
        logged(&agent_d, "d-still-hears-this").await,
        "D stays: {}",
        agent_d.log()
    );
    let left = audit(&admin_a, "auto_member_left").await;
    assert!(
        left.iter()
            .any(|r| r.details["member"] == b.device_id.as_str()
                && r.details["reason"] == "node_lost"
                && r.actor == "system"),
        "{left:?}"
    );
    session.end().await;
    ticking.abort();
    na.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_ending_it_through_another_node_stops_it_everywhere_at_once() {
    // A minute's heartbeat: no sweep runs while the test waits, so only
    // the order can explain what arrives within seconds.
    let beat = Duration::from_secs(60);
    let na = TestServer::start_with(node_options_beating(None, None, beat)).await;
    let nb = TestServer::start_with(node_options_beating(
        Some(na.database_url.clone()),
        None,
        beat,
    ))
    .await;
    let admin_a = na.admin().await;
    let admin_b = nb.login("admin", &na.admin_password.clone().unwrap()).await;
    let creator = TestDevice::enroll(&na, &admin_a, "creator").await;
    let b = TestDevice::enroll(&nb, &admin_b, "bravo").await;
    befriend(&creator, &b).await;
    let agent_b = AgentProcess::start(&nb, &b).await;
    let mut session = create(&creator, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(
        session.joined(),
        vec![b.device_id.clone()],
        "{:?}",
        session.outcomes
    );
    let id = session.session_id.clone();
    assert!(na.state.auto().is_routing(&id));
    session.send_text("before-the-end").await.unwrap();
    assert!(
        logged(&agent_b, "before-the-end").await,
        "{}",
        agent_b.log()
    );

    // Ended through node B, which does not route it.
    admin_b.end_session(&id).await.unwrap();
    let code = event(&mut session, |e| match e {
        Event::Ended { code, .. } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(code.as_deref(), Some("ended_by_operator"));
    assert!(
        eventually(ARRIVES, || async { !na.state.auto().is_routing(&id) }).await,
        "node A stopped routing it"
    );
    assert!(
        logged(&agent_b, "automatic session ended").await,
        "{}",
        agent_b.log()
    );
    assert!(
        agent_b.log().contains("ended_by_operator"),
        "{}",
        agent_b.log()
    );
    assert!(
        eventually(ARRIVES, || async { !nb.state.auto().is_joined_away(&id) }).await,
        "node B forgot it"
    );
    nb.stop().await;
    na.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopping_mid_session_is_told_on_both_nodes_and_sessions_cross_again_once_back() {
    let mut nats = tessera_testkit::PrivateNats::start().await;
    let na = TestServer::start_with(node_options(None, Some(nats.url()))).await;
    let nb = TestServer::start_with(node_options(
        Some(na.database_url.clone()),
        Some(nats.url()),
    ))
    .await;
    let admin_a = na.admin().await;
    let admin_b = nb.login("admin", &na.admin_password.clone().unwrap()).await;
    let creator = TestDevice::enroll(&na, &admin_a, "creator").await;
    let b = TestDevice::enroll(&nb, &admin_b, "bravo").await;
    let d = TestDevice::enroll(&na, &admin_a, "delta").await;
    befriend(&creator, &b).await;
    befriend(&creator, &d).await;
    let agent_b = AgentProcess::start(&nb, &b).await;
    let agent_d = AgentProcess::start(&na, &d).await;
    let mut session = create(&creator, &[&b.device_id, &d.device_id], Scope::Files, false).await;
    assert_eq!(session.joined().len(), 2, "{:?}", session.outcomes);
    let id = session.session_id.clone();
    session.send_text("before-the-outage").await.unwrap();
    assert!(
        logged(&agent_b, "before-the-outage").await,
        "{}",
        agent_b.log()
    );
    assert!(logged(&agent_d, "before-the-outage").await);
    assert!(nb.state.auto().is_joined_away(&id));

    nats.stop().await;
    // Nobody sends: within a heartbeat each node finds NATS gone. The
    // creator is told B left, and B's agent that it was removed, both
    // with the reason.
    let why = event(&mut session, |e| match e {
        Event::Left { member, reason } if member == b.device_id => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(why.as_deref(), Some("relay_unavailable"));
    assert!(
        logged(&agent_b, "removed from an automatic session").await,
        "{}",
        agent_b.log()
    );
    assert!(
        agent_b.log().contains("relay_unavailable"),
        "{}",
        agent_b.log()
    );
    assert!(!nb.state.auto().is_joined_away(&id));
    // The member on the creator's node stays.
    session.send_text("delta-still-hears-this").await.unwrap();
    assert!(
        logged(&agent_d, "delta-still-hears-this").await,
        "{}",
        agent_d.log()
    );

    // NATS comes back: a new session crosses the nodes again.
    nats.resume().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            na.state.cluster().nats_connected() && nb.state.cluster().nats_connected()
        })
        .await,
        "both nodes reconnect to NATS"
    );
    let mut again = create(&creator, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(
        again.joined(),
        vec![b.device_id.clone()],
        "{:?}",
        again.outcomes
    );
    again.send_text("after-the-outage").await.unwrap();
    assert!(
        logged(&agent_b, "after-the-outage").await,
        "{}",
        agent_b.log()
    );
    again.end().await;
    session.end().await;
    nb.stop().await;
    na.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creators_node_killed_ends_the_session_for_members_elsewhere_with_node_lost() {
    // Node B in this process; node A, which the creator connects to and
    // which routes the session, a real process killed below.
    let nb = TestServer::start_with(node_options(None, None)).await;
    // A, on the real clock, reads the lease B renews by its test clock.
    let ticking = keep_pace(&nb);
    let nats = nats_url();
    let mut na = ServerProcess::spawn(
        &nb.database_url,
        "warn",
        &["--nats-url", &nats, "--heartbeat-interval", "1s"],
    )
    .await;
    let admin_b = nb.admin().await;
    let creator = TestDevice::enroll(&nb, &admin_b, "creator").await;
    let b = TestDevice::enroll(&nb, &admin_b, "bravo").await;
    befriend(&creator, &b).await;
    let agent_b = AgentProcess::start(&nb, &b).await;
    let mut enrollment = creator.state.enrollment().unwrap();
    enrollment.server = na.url.clone();
    creator
        .state
        .save_enrollment(&enrollment, &creator.key)
        .unwrap();
    let mut session = create(&creator, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(
        session.joined(),
        vec![b.device_id.clone()],
        "{:?}",
        session.outcomes
    );
    let id = session.session_id.clone();
    assert!(nb.state.auto().is_joined_away(&id), "routed by node A");
    session.send_text("before-the-kill").await.unwrap();
    assert!(
        logged(&agent_b, "before-the-kill").await,
        "{}",
        agent_b.log()
    );

    na.kill().await;
    // Node B's clock passes A's lease (three of its 1 s heartbeats); B's
    // session sweep finds the session's hub gone and tells its member.
    nb.clock.advance(Duration::from_secs(10));
    assert!(
        logged(&agent_b, "automatic session ended").await,
        "{}",
        agent_b.log()
    );
    assert!(agent_b.log().contains("node_lost"), "{}", agent_b.log());
    assert!(!nb.state.auto().is_joined_away(&id));
    // Its row ends too: no session is left listed as live that nothing
    // routes.
    assert!(
        eventually(ARRIVES, || async {
            admin_b
                .session(&id)
                .await
                .is_ok_and(|s| s.end_code.as_deref() == Some("node_lost"))
        })
        .await,
        "{:?}",
        admin_b.session(&id).await
    );
    drop(session);
    ticking.abort();
    nb.stop().await;
}
