//! Managed sessions, the relay and viewer tokens: a real server, a real
//! agent running a real shell in a PTY, real viewers over WebSockets.

use std::time::Duration;

use tessera_client::viewer::ViewerEvent;
use tessera_core::api::{CreateSessionRequest, SecretString};
use tessera_core::roles::Role;

use tessera_testkit::{
    fast_heartbeat, online_device, read_until, shell_session, watch, TestServer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_runs_echo_and_resize_and_two_viewers_see_the_same_output() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let (mut a, mut a_rx, access) = watch(&admin, &id).await;
    assert_eq!(access, "control");
    let (_b, mut b_rx, _) = watch(&admin, &id).await;

    a.input(b"echo relay-$((20+22))\n").await.unwrap();
    read_until(&mut a_rx, "relay-42", Duration::from_secs(10)).await;
    read_until(&mut b_rx, "relay-42", Duration::from_secs(10)).await;

    a.resize(123, 45).await.unwrap();
    a.input(b"stty size\n").await.unwrap();
    read_until(&mut a_rx, "45 123", Duration::from_secs(10)).await;
    read_until(&mut b_rx, "45 123", Duration::from_secs(10)).await;

    a.input(b"exit 7\n").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match b_rx.next().await {
                ViewerEvent::Ended { code, reason } => return (code, reason),
                ViewerEvent::Closed { .. } => panic!("closed without a reason"),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended.0, "shell_exited");
    assert!(ended.1.contains("status 7"), "{}", ended.1);
    let view = admin.session(&id).await.unwrap();
    assert_eq!(
        (view.state.as_str(), view.end_code.as_deref()),
        ("ended", Some("shell_exited"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_only_input_never_reaches_the_shell() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let viewer = s.user(&admin, "watcher", Role::Viewer).await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let (mut ctl, mut ctl_rx, _) = watch(&admin, &id).await;
    let (mut vo, mut vo_rx, access) = watch(&viewer, &id).await;
    assert_eq!(access, "view_only");

    vo.input(b"echo INJECTED-$((1+1))\n").await.unwrap();
    vo.resize(11, 7).await.unwrap();
    // The last echo marks the end of `stty size`'s line, whichever chunks
    // the output arrives in.
    ctl.input(b"echo after-$((3+3)); stty size; echo done-$((4+4))\n")
        .await
        .unwrap();
    let seen = read_until(&mut ctl_rx, "done-8", Duration::from_secs(10)).await;
    assert!(!seen.contains("INJECTED-2"), "{seen}");
    assert!(
        !seen.contains("7 11"),
        "a view-only resize reached the PTY: {seen}"
    );
    // The watcher still sees the output.
    read_until(&mut vo_rx, "after-6", Duration::from_secs(10)).await;
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"tessera_relay_input_dropped_total{reason="view_only"} 2"#),
        "{metrics}"
    );

    vo.close().await;
    let audit = admin
        .audit_page(&tessera_client::AuditQuery {
            action: Some("viewer_throttled".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        tessera_testkit::eventually(Duration::from_secs(5), || async {
            admin
                .audit_page(&tessera_client::AuditQuery {
                    action: Some("viewer_throttled".into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .entries
                .iter()
                .any(|e| e.details["dropped_view_only"] == 2)
        })
        .await,
        "aggregate throttle row: {audit:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_tokens_open_their_own_session_only_and_nothing_else() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_d1, _a1) = online_device(&s, &admin, "one").await;
    let (_d2, _a2) = online_device(&s, &admin, "two").await;
    let a = shell_session(&admin, "one").await;
    let b = shell_session(&admin, "two").await;
    let token_a = admin.viewer_token(&a).await.unwrap().token;

    let code = |r: Result<_, tessera_client::ClientError>| {
        r.err().expect("refused").code().map(str::to_owned)
    };
    // A's token on B.
    assert_eq!(
        code(tessera_client::viewer::connect(&admin, &b, &token_a).await).as_deref(),
        Some("wrong_session")
    );
    // A login token, a device key, garbage: not viewer tokens.
    let login = s
        .client()
        .login(
            "admin",
            SecretString::new(s.admin_password.clone().unwrap()),
        )
        .await
        .unwrap()
        .token;
    assert_eq!(
        code(tessera_client::viewer::connect(&admin, &a, &login).await).as_deref(),
        Some("invalid_token")
    );
    assert_eq!(
        code(tessera_client::viewer::connect(&admin, &a, &_d1.key).await).as_deref(),
        Some("invalid_token")
    );
    // And a viewer token opens no API route.
    let as_api = s
        .client()
        .with_token(token_a.clone())
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(as_api.code(), Some("invalid_token"));
    let as_device = s
        .client()
        .with_token(token_a.clone())
        .push_events(&tessera_core::api::EventBatch { events: vec![] })
        .await
        .unwrap_err();
    assert_eq!(as_device.code(), Some("invalid_token"));

    // Expired: the server's clock moves past the token's five minutes.
    s.clock.advance(Duration::from_secs(121));
    assert_eq!(
        code(tessera_client::viewer::connect(&admin, &a, &token_a).await).as_deref(),
        Some("token_expired")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_kills_the_viewer_tokens_it_minted_and_its_open_viewers() {
    let s = TestServer::start_with(fast_heartbeat(300)).await;
    let admin = s.admin().await;
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let op = s.user(&admin, "otto", Role::Operator).await;
    let spare = op.viewer_token(&id).await.unwrap().token;
    let (_tx, mut rx, _) = watch(&op, &id).await;
    op.logout().await.unwrap();
    // A token minted before the logout is refused…
    let e = tessera_client::viewer::connect(&op, &id, &spare)
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Some("session_revoked"));
    // …and the open viewer is cut within a heartbeat interval.
    let cut = tokio::time::timeout(Duration::from_millis(300 + 1500), async {
        loop {
            match rx.next().await {
                ViewerEvent::Ended { code, .. } => return code,
                ViewerEvent::Closed { .. } => return "closed".to_owned(),
                _ => {}
            }
        }
    })
    .await
    .expect("cut in time");
    assert_eq!(cut, "logged_out");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_token_minting_follows_permissions_and_session_state() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let viewer = s.user(&admin, "vic", Role::Viewer).await;
    assert_eq!(viewer.viewer_token(&id).await.unwrap().access, "view_only");
    assert_eq!(admin.viewer_token(&id).await.unwrap().access, "control");
    // Viewers cannot open sessions at all.
    let e = viewer
        .create_session(&CreateSessionRequest {
            device: "box".into(),
            access: None,
            channel: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));
    admin.end_session(&id).await.unwrap();
    let e = admin.viewer_token(&id).await.unwrap_err();
    assert_eq!(e.code(), Some("session_ended"));
    let e = admin.end_session(&id).await.unwrap_err();
    assert_eq!(e.code(), Some("already_ended"));
    // An offline device gets no session.
    let e = admin
        .create_session(&CreateSessionRequest {
            device: "nope".into(),
            access: None,
            channel: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("not_found"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_viewer_frame_closes_the_socket_with_1009() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let (mut tx, mut rx, _) = watch(&admin, &id).await;
    let _ = tx.raw(vec![0u8; tessera_proto::MAX_VIEWER_FRAME + 1]).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let ViewerEvent::Closed { code, .. } = rx.next().await {
                return code;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(1009));
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"tessera_ws_oversized_frames_total{plane="viewer"} 1"#),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_is_disconnected_and_does_not_slow_the_other() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    // One viewer never reads its socket again.
    let (_stalled_tx, mut stalled_rx, _) = watch(&admin, &id).await;
    let (mut live, mut live_rx, _) = watch(&admin, &id).await;
    // ~24 MB of output, then a marker.
    live.input(b"head -c 24000000 /dev/zero | tr '\\0' 'x'; echo; echo done-$((5*5))\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut bytes = 0usize;
    let mut tail = String::new();
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match live_rx.next().await {
                ViewerEvent::Output(d) => {
                    bytes += d.len();
                    tail.push_str(&String::from_utf8_lossy(&d));
                    if tail.len() > 256 {
                        tail = tail.split_off(tail.len() - 128);
                    }
                    if tail.contains("done-25") {
                        return true;
                    }
                }
                ViewerEvent::Closed { .. } | ViewerEvent::Ended { .. } => return false,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        matches!(finished, Ok(true)),
        "the live viewer got everything"
    );
    assert!(bytes >= 24_000_000, "{bytes}");
    eprintln!("live viewer: {bytes} bytes in {:?}", started.elapsed());
    // The stalled viewer, once it reads again, learns it was cut off and why.
    let why = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled_rx.next().await {
                ViewerEvent::Ended { code, .. } => return Some(code),
                ViewerEvent::Closed { code, .. } => return code.map(|c| c.to_string()),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(why.as_deref(), Some("viewer_too_slow"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_input_is_rate_limited_per_viewer() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let (mut tx, _rx, _) = watch(&admin, &id).await;
    // Far more than 200 events at once: the bucket lets a burst through and
    // drops the rest.
    for _ in 0..600 {
        tx.input(b":").await.unwrap();
    }
    assert!(
        tessera_testkit::eventually(Duration::from_secs(5), || async {
            let m = s.metrics().await;
            m.lines().any(|l| {
                l.starts_with(r#"tessera_relay_input_dropped_total{reason="rate_limited"}"#)
                    && l.rsplit(' ')
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n >= 300)
            })
        })
        .await
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_device_ends_its_sessions_and_tells_viewers() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (device, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let (_tx, mut rx, _) = watch(&admin, &id).await;
    admin
        .revoke_device(&device.device_id, Some("lost".into()))
        .await
        .unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.next().await {
                ViewerEvent::Ended { code, .. } => return code,
                ViewerEvent::Closed { .. } => return "closed".into(),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(code, "device_disconnected");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_sessions_ask_for_consent_when_the_policy_says_so() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    admin
        .set_policy(&tessera_core::api::Policy {
            require_consent_for_managed: true,
        })
        .await
        .unwrap();
    // This device's agent cannot ask anybody (no consent command): the
    // session is refused as unavailable, not as a person's "no".
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let ended = tessera_testkit::eventually(Duration::from_secs(10), || async {
        admin.session(&id).await.unwrap().state == "ended"
    })
    .await;
    assert!(ended);
    let v = admin.session(&id).await.unwrap();
    assert_eq!(
        (v.consent.as_str(), v.end_code.as_deref()),
        ("denied", Some("consent_unavailable"))
    );
    let viewer = s.user(&admin, "vee", Role::Viewer).await;
    assert!(viewer.policy().await.unwrap().require_consent_for_managed);
    let e = viewer
        .set_policy(&tessera_core::api::Policy {
            require_consent_for_managed: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));
    s.stop().await;
}

/// Issue 17: a managed session refused for want of consent tells the
/// operator which it was: nobody could be asked (`consent_unavailable`,
/// an unattended agent) or the person said no (`consent_denied`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_managed_session_says_whether_a_person_declined_or_nobody_could_be_asked() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    admin
        .set_policy(&tessera_core::api::Policy {
            require_consent_for_managed: true,
        })
        .await
        .unwrap();
    // Unattended: no consent command, no terminal.
    let (_unattended, _agent) = online_device(&s, &admin, "unattended").await;
    // Attended: a consent command standing for a person who says no.
    let person = tessera_testkit::TestDevice::enroll(&s, &admin, "attended").await;
    let state = person.state.clone();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let _attended = tokio::spawn(async move {
        tessera_agent::run(
            &state,
            tessera_agent::RunOptions {
                max_backoff: Duration::from_millis(500),
                alternates: Vec::new(),
                shell: Some("/bin/sh".to_owned()),
                consent: tessera_agent::consent::ConsentMode::Command("/bin/false".into()),
                inbox: None,
                display: None,
            },
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    let (st, pid) = (s.state.clone(), person.device_id.clone());
    assert!(
        tessera_testkit::eventually(Duration::from_secs(10), || {
            let (st, pid) = (st.clone(), pid.clone());
            async move { st.registry().is_connected(&pid) }
        })
        .await
    );
    for (name, code, words) in [
        ("unattended", "consent_unavailable", "nobody declined"),
        ("attended", "consent_denied", "declined"),
    ] {
        let id = shell_session(&admin, name).await;
        assert!(
            tessera_testkit::eventually(Duration::from_secs(10), || async {
                admin.session(&id).await.unwrap().state == "ended"
            })
            .await,
            "{name}'s session ends"
        );
        let v = admin.session(&id).await.unwrap();
        assert_eq!(v.end_code.as_deref(), Some(code), "{name}");
        let reason = v.end_reason.unwrap_or_default();
        assert!(reason.contains(words), "{name}: {reason}");
    }
}
