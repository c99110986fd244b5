//! `tessera trust add` after an interrupted attempt: a run that was killed
//! leaves an exchange the peer's next run answers; the next attempt must
//! supersede it instead of both sides waiting forever. Ctrl-C withdraws
//! what the run opened.

use std::time::Duration;

use tessera_core::kinds::ExchangeState;
use tessera_testkit::{device_cmd, eventually, Terminal, TestDevice, TestServer};

use super::*;

/// Generous: the commands run on a shared, loaded machine.
const LIMIT: Duration = Duration::from_secs(30);

/// Waits until `who`'s view of the exchanges with `peer` satisfies `check`.
async fn exchanges_until(
    who: &TestDevice,
    peer: &TestDevice,
    check: impl Fn(&[tessera_core::api::ExchangeView]) -> bool,
) -> bool {
    let client = creds(who).client().expect("client");
    eventually(Duration::from_secs(20), || {
        let client = client.clone();
        let check = &check;
        async move {
            client
                .exchanges(&peer.device_id)
                .await
                .is_ok_and(|open| check(&open))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_trust_add_does_not_deadlock_the_next_attempt_on_both_sides() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;

    // A starts, commits, and dies without a chance to clean up.
    let mut stale = TrustAdd::spawn(&a, &b);
    assert!(
        exchanges_until(&b, &a, |open| open
            .iter()
            .any(|e| e.initiator == a.device_id))
        .await,
        "A's first attempt opened an exchange"
    );
    stale.child.kill().await.expect("kill the first attempt");

    // B's run answers the stale exchange, as it did in the report...
    let mut pb = TrustAdd::spawn(&b, &a);
    assert!(
        exchanges_until(&a, &b, |open| open
            .iter()
            .any(|e| e.state == ExchangeState::Responded.as_str()))
        .await,
        "B answered the stale exchange"
    );
    // ...and A's next attempt still ends in the same code on both screens.
    let mut pa = TrustAdd::spawn(&a, &b);
    let (sa, sb) = tokio::join!(pa.sas(), pb.sas());
    assert_eq!(sa, sb, "both screens show the same code");
    let ((ca, oa), (cb, ob)) = tokio::join!(pa.answer("yes\n"), pb.answer("yes\n"));
    assert_eq!((ca, cb), (0, 0), "{oa}\n{ob}");
    assert!(
        oa.contains("Trusted") && ob.contains("Trusted"),
        "{oa}\n{ob}"
    );
    s.stop().await;
}

/// `tessera trust add` as `me` for `peer`, in a terminal of its own.
fn trust_add_in_terminal(me: &TestDevice, peer: &TestDevice) -> Terminal {
    let dir = me.dir().to_str().expect("a UTF-8 state dir");
    Terminal::spawn(
        &["trust", "add", &peer.device_id],
        &[("TESSERA_AGENT_STATE_DIR", dir)],
    )
}

/// Ctrl-C typed in the terminal while `trust add` waits for the other
/// device: it stops with 130 and withdraws the exchange it opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_withdraws_the_trust_add_attempt() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;

    let mut term = trust_add_in_terminal(&a, &b);
    term.wait_for("Waiting for", LIMIT).await;
    assert!(
        exchanges_until(&b, &a, |open| !open.is_empty()).await,
        "the attempt opened an exchange"
    );
    term.type_bytes(b"\x03");
    assert_eq!(term.exit_code(LIMIT).await, Some(130), "{}", term.output());
    term.wait_for("Stopped; nothing was trusted.", LIMIT).await;
    assert!(
        exchanges_until(&b, &a, |open| open.is_empty()).await,
        "nothing is left open for B to answer"
    );
    s.stop().await;
}

/// Ctrl-C typed at the "same code?" question (after the wait, whose own
/// Ctrl-C handling would otherwise swallow it): it stops with 130 and
/// pins nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_at_the_code_question_stops_trust_add_and_pins_nothing() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;

    let mut term = trust_add_in_terminal(&a, &b);
    let mut pb = TrustAdd::spawn(&b, &a);
    let shown = pb.sas().await;
    term.wait_for("Type yes to trust it:", LIMIT).await;
    assert!(term.output().contains(&shown), "{}", term.output());
    term.type_bytes(b"\x03");
    assert_eq!(term.exit_code(LIMIT).await, Some(130), "{}", term.output());
    term.wait_for("Stopped; nothing was trusted.", LIMIT).await;
    let (code, out, err) = device_cmd(&a, &["trust", "list", "--json"], None).await;
    assert_eq!(code, 0, "{out}{err}");
    let pins: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(
        pins.get(&b.device_id).is_none(),
        "A pinned B after Ctrl-C: {pins}"
    );
    let (code, out) = pb.answer("no\n").await;
    assert_eq!(code, 2, "{out}");
    s.stop().await;
}
