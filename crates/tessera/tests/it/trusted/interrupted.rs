//! `tessera trust add` after an interrupted attempt: a run that was killed
//! leaves an exchange the peer's next run answers; the next attempt must
//! supersede it instead of both sides waiting forever. Ctrl-C withdraws
//! what the run opened.

use std::time::Duration;

use tessera_core::kinds::ExchangeState;
use tessera_testkit::{eventually, TestDevice, TestServer};

use super::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_withdraws_the_trust_add_attempt() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;

    let mut p = TrustAdd::spawn(&a, &b);
    assert!(
        exchanges_until(&b, &a, |open| !open.is_empty()).await,
        "the attempt opened an exchange"
    );
    let pid = p.child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(20), p.child.wait())
        .await
        .expect("it stops on Ctrl-C")
        .expect("exit status");
    assert_eq!(status.code(), Some(130));
    assert!(
        exchanges_until(&b, &a, |open| open.is_empty()).await,
        "nothing is left open for B to answer"
    );
    s.stop().await;
}
