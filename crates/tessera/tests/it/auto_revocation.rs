//! Automatic sessions stop when the standing behind them goes: an operator
//! ending one stops its routing at once and every participant is told; a
//! member whose grant is revoked, whose trust is withdrawn or whose device
//! is revoked leaves every live session within one heartbeat (the creator
//! is told and moves to a new key, the member is told, the removal is
//! audited with its reason), and nothing sent after reaches it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_agent::auto::{AutoSession, Event};
use tessera_core::trust::Scope;
use tessera_proto::Body;
use tessera_testkit::{eventually, fast_heartbeat, AgentProcess, Options, TestDevice, TestServer};

use crate::trusted::{audit, create, creds, grant, trust_both, DAY};

const HEARTBEAT: Duration = Duration::from_millis(1000);

/// Scheduling slack on a loaded 2-core machine, on top of a heartbeat.
const SLACK: Duration = Duration::from_millis(600);

/// Long enough for anything that does happen; used where the test waits
/// for something to arrive (never to show that something does not).
const ARRIVES: Duration = Duration::from_secs(10);

/// A node that routes through NATS, so that one case can add a second.
async fn start() -> TestServer {
    TestServer::start_with(Options {
        nats: true,
        ..fast_heartbeat(HEARTBEAT.as_millis() as u64)
    })
    .await
}

/// Sealed payloads of `session` the relay routes from now on.
fn routed(s: &TestServer, session: &str) -> Arc<Mutex<Vec<u64>>> {
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (sink, session) = (seen.clone(), session.to_owned());
    s.state.set_relay_tap(Some(Arc::new(move |b: &mut Body| {
        if let Body::E2eData(d) = b {
            if d.session_id == session {
                sink.lock().unwrap().push(d.counter);
            }
        }
    })));
    seen
}

/// Whether the agent's log shows `text` within `limit`.
async fn logged(p: &AgentProcess, text: &str, limit: Duration) -> bool {
    eventually(limit, || {
        let has = p.log().contains(text);
        async move { has }
    })
    .await
}

/// The first event of `session` that `pick` takes, within `limit`.
async fn event<T>(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_ending_an_automatic_session_stops_its_routing_at_once() {
    let s = start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let agent_b = AgentProcess::start(&s, &b).await;
    let mut session = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(session.joined(), vec![b.device_id.clone()]);
    session.send_text("before-the-end").await.unwrap();
    assert!(
        logged(&agent_b, "before-the-end", ARRIVES).await,
        "{}",
        agent_b.log()
    );

    let seen = routed(&s, &session.session_id);
    let view = admin
        .end_session(&session.session_id)
        .await
        .expect("the operator ends it");
    assert_eq!(view.state, "ended");
    assert_eq!(view.end_code.as_deref(), Some("ended_by_operator"));
    // Right after the answer, the creator's next payload goes nowhere.
    session.send_text("after-the-end").await.unwrap();
    let code = event(&mut session, HEARTBEAT, |e| match e {
        Event::Ended { code, .. } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(
        code.as_deref(),
        Some("ended_by_operator"),
        "the creator is told"
    );
    assert!(
        logged(&agent_b, "automatic session ended", HEARTBEAT).await,
        "the member is told: {}",
        agent_b.log()
    );
    assert!(agent_b.log().contains("ended_by_operator"));
    tokio::time::sleep(HEARTBEAT).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing of an ended session is routed"
    );
    assert!(!agent_b.log().contains("after-the-end"));
    let ended = audit(&admin, "session_ended").await;
    let target = format!("session:{}", session.session_id);
    assert!(
        ended
            .iter()
            .any(|r| r.target.as_deref() == Some(target.as_str()) && r.actor.starts_with("user:")),
        "{ended:?}"
    );
    // Ended once: the creator ending it now changes nothing.
    session.end().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creator_ending_its_session_tells_the_members_and_the_operator_cannot_end_it_again() {
    let s = start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let agent_b = AgentProcess::start(&s, &b).await;
    let session = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(session.joined(), vec![b.device_id.clone()]);
    let id = session.session_id.clone();
    session.end().await;
    assert!(
        logged(&agent_b, "automatic session ended", ARRIVES).await,
        "{}",
        agent_b.log()
    );
    assert!(agent_b.log().contains("ended_by_creator"));
    assert!(!s.state.auto().is_routing(&id), "nothing is routed for it");
    let again = admin.end_session(&id).await.expect_err("already ended");
    assert_eq!(again.code(), Some("already_ended"));
    s.stop().await;
}

/// How a member loses its standing.
#[derive(Clone, Copy, Debug)]
enum How {
    OperatorRevokesGrant,
    GranterWithdrawsGrant,
    CreatorWithdrawsTrust,
    OperatorRevokesDevice,
    /// Through another node sharing the database: the node routing the
    /// session learns it from its session sweep.
    OperatorOnAnotherNodeRevokesGrant,
}

/// A and members B and C in a session; C loses its standing `how`: within
/// one heartbeat the creator is told (with `reason`) and moves to a new
/// key, C is told, the removal is audited, and what A sends next reaches B
/// and not C.
async fn member_loses_standing(how: How, reason: &str) {
    let s = start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    let c = TestDevice::enroll(&s, &admin, "charlie").await;
    trust_both(&a, &b).await;
    trust_both(&a, &c).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let grant_c = grant(&c, &a, &[Scope::Files], 30 * DAY).await;
    let agent_b = AgentProcess::start(&s, &b).await;
    let agent_c = AgentProcess::start(&s, &c).await;
    let mut nodes = Vec::new();
    let mut session = create(&a, &[&b.device_id, &c.device_id], Scope::Files, false).await;
    assert_eq!(session.joined().len(), 2, "{how:?}");
    session.send_text("everyone-hears-this").await.unwrap();
    for p in [&agent_b, &agent_c] {
        assert!(
            logged(p, "everyone-hears-this", ARRIVES).await,
            "{how:?}: {}",
            p.log()
        );
    }

    match how {
        How::OperatorRevokesGrant => {
            admin
                .revoke_grant(&grant_c.id, Some("no longer needed".into()))
                .await
                .expect("revoke grant");
        }
        How::GranterWithdrawsGrant => {
            tessera_agent::trust::revoke_grant(&c.state, &creds(&c), &a.device_id)
                .await
                .expect("withdraw grant");
        }
        How::CreatorWithdrawsTrust => {
            tessera_agent::trust::remove(&a.state, &creds(&a), &c.device_id)
                .await
                .expect("withdraw trust");
        }
        How::OperatorRevokesDevice => {
            admin
                .revoke_device(&c.device_id, Some("lost".into()))
                .await
                .expect("revoke device");
        }
        How::OperatorOnAnotherNodeRevokesGrant => {
            let other = TestServer::start_with(Options {
                database_url: Some(s.database_url.clone()),
                nats: true,
                ..fast_heartbeat(HEARTBEAT.as_millis() as u64)
            })
            .await;
            let pw = s.admin_password.clone().unwrap();
            other
                .login("admin", &pw)
                .await
                .revoke_grant(&grant_c.id, None)
                .await
                .expect("revoke grant on the other node");
            nodes.push(other);
        }
    }
    // One heartbeat, plus scheduling slack on a loaded 2-core machine.
    let why = event(&mut session, HEARTBEAT + SLACK, |e| match e {
        Event::Left { member, reason } if member == c.device_id => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(
        why.as_deref(),
        Some(reason),
        "{how:?}: the creator is told within one heartbeat, with the reason"
    );
    if !matches!(how, How::OperatorRevokesDevice) {
        // (A revoked device's connection is cut off as well.)
        assert!(
            logged(&agent_c, "removed from an automatic session", ARRIVES).await,
            "{how:?}: the member is told: {}",
            agent_c.log()
        );
    }
    session.send_text("only-b-hears-this").await.unwrap();
    assert!(
        logged(&agent_b, "only-b-hears-this", ARRIVES).await,
        "{how:?}: B stays, under the new key: {}",
        agent_b.log()
    );
    tokio::time::sleep(HEARTBEAT).await;
    assert!(
        !agent_c.log().contains("only-b-hears-this"),
        "{how:?}: nothing after reaches C"
    );
    let left = audit(&admin, "auto_member_left").await;
    let target = format!("session:{}", session.session_id);
    assert!(
        left.iter()
            .any(|r| r.target.as_deref() == Some(target.as_str())
                && r.details["member"] == c.device_id.as_str()
                && r.details["reason"] == reason),
        "{how:?}: {left:?}"
    );
    assert!(
        !left
            .iter()
            .any(|r| r.details["member"] == b.device_id.as_str()),
        "{how:?}: B did not leave"
    );
    session.end().await;
    for n in nodes {
        n.stop().await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_grant_an_operator_revokes_leaves_within_one_heartbeat() {
    member_loses_standing(How::OperatorRevokesGrant, "grant_revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_withdraws_its_grant_leaves_within_one_heartbeat() {
    member_loses_standing(How::GranterWithdrawsGrant, "grant_revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_the_creator_stops_trusting_leaves_within_one_heartbeat() {
    member_loses_standing(How::CreatorWithdrawsTrust, "not_mutually_trusted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_device_is_revoked_leaves_within_one_heartbeat() {
    member_loses_standing(How::OperatorRevokesDevice, "device_revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_revoked_through_another_node_removes_the_member_within_one_heartbeat() {
    member_loses_standing(How::OperatorOnAnotherNodeRevokesGrant, "grant_revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_creator_runs_no_agent_outlives_the_sweep() {
    // The creator is a client connection only (a `tessera send`), which
    // never marks its device online: the sweep must not take that for a
    // device gone and end the session under it.
    let s = start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let agent_b = AgentProcess::start(&s, &b).await;
    let mut session = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(session.joined(), vec![b.device_id.clone()]);
    tokio::time::sleep(HEARTBEAT * 4).await;
    session.send_text("still-here").await.unwrap();
    assert!(
        logged(&agent_b, "still-here", ARRIVES).await,
        "{}",
        agent_b.log()
    );
    let target = format!("session:{}", session.session_id);
    let ended = audit(&admin, "session_ended").await;
    assert!(
        !ended
            .iter()
            .any(|r| r.target.as_deref() == Some(target.as_str())),
        "{ended:?}"
    );
    session.end().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_disconnects_is_audited_as_leaving_and_the_creator_is_told() {
    let s = start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let mut agent_b = AgentProcess::start(&s, &b).await;
    let mut session = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(session.joined(), vec![b.device_id.clone()]);

    agent_b.child.kill().await.expect("kill the member's agent");
    let left = event(&mut session, ARRIVES, |e| match e {
        Event::Left { member, reason } => Some((member, reason)),
        _ => None,
    })
    .await;
    assert_eq!(
        left,
        Some((b.device_id.clone(), "disconnected".to_owned())),
        "the creator is told"
    );
    let target = format!("session:{}", session.session_id);
    let rows = audit(&admin, "auto_member_left").await;
    assert!(
        rows.iter()
            .any(|r| r.target.as_deref() == Some(target.as_str())
                && r.actor == format!("device:{}", b.device_id)
                && r.details["member"] == b.device_id.as_str()
                && r.details["reason"] == "disconnected"),
        "{rows:?}"
    );
    session.end().await;
    s.stop().await;
}
