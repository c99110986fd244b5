//! Attended sessions: support codes, the one-time agent, consent.

use std::path::PathBuf;
use std::time::Duration;

use tessera_agent::consent::ConsentMode;
use tessera_agent::control::Exit;
use tessera_agent::RunOptions;
use tessera_client::TlsTrust;
use tessera_core::api::CreateSupportCodeRequest;
use tessera_core::roles::Role;

use tessera_testkit::{eventually, read_until, tessera_bin, watch, Options, TestServer};

pub(crate) async fn code(admin: &tessera_client::ApiClient) -> String {
    admin
        .create_support_code(&CreateSupportCodeRequest::default())
        .await
        .unwrap()
        .code
        .expose()
        .to_owned()
}

/// Binds `code` and serves the session with `consent`, in a task.
fn support_agent(
    s: &TestServer,
    code: &str,
    consent: ConsentMode,
) -> tokio::task::JoinHandle<Exit> {
    let url = s.url.clone();
    let code = code.to_owned();
    tokio::spawn(async move {
        let (creds, bound) = tessera_agent::support::bind(
            &url,
            &TlsTrust::PublicRoots,
            &code,
            Some("helped".into()),
        )
        .await
        .expect("bind");
        let opts = RunOptions {
            shell: Some("/bin/sh".into()),
            consent,
            ..RunOptions::default()
        };
        tessera_agent::support::serve(&creds, &bound, opts, std::future::pending())
            .await
            .expect("serve")
    })
}

fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.path().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_look_right_preview_without_being_used_and_bind_once() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let created = admin
        .create_support_code(&CreateSupportCodeRequest::default())
        .await
        .unwrap();
    let c = created.code.expose().to_owned();
    assert_eq!(c.len(), 11);
    assert_eq!((&c[3..4], &c[7..8]), ("-", "-"));
    assert!(c
        .replace('-', "")
        .bytes()
        .all(|b| tessera_core::codes::SUPPORT_CODE_ALPHABET.contains(&b)));
    let expires = tessera_core::Timestamp::parse_rfc3339(&created.expires_at).unwrap();
    assert_eq!(
        expires.since(tessera_core::Clock::now(&s.clock)),
        Duration::from_secs(1800)
    );

    let public = s.client();
    for _ in 0..3 {
        let p = public
            .preview_support_code(&c.to_lowercase())
            .await
            .unwrap();
        assert_eq!(
            (p.valid, p.requested_by.as_str(), p.access.as_str()),
            (true, "admin", "control")
        );
    }
    // The code is not in the audit log, only its id.
    let audit =
        serde_json::to_string(&admin.audit_page(&Default::default()).await.unwrap()).unwrap();
    assert!(!audit.contains(&c) && !audit.contains(&c.replace('-', "")));
    s.stop().await;
}

/// `n` one-time agents bind `code` at once; how many won, and the error
/// codes of those that lost.
pub(crate) async fn bind_race(s: &TestServer, code: &str, n: usize) -> (usize, Vec<String>) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = s.url.clone();
            let code = code.to_owned();
            tokio::spawn(async move {
                tessera_agent::support::bind(
                    &url,
                    &TlsTrust::PublicRoots,
                    &code,
                    Some(format!("racer-{i}")),
                )
                .await
            })
        })
        .collect();
    let mut wins = 0;
    let mut losses = Vec::new();
    for r in futures_util::future::join_all(tasks).await {
        match r.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => losses.push(e.code().unwrap_or("none").to_owned()),
        }
    }
    (wins, losses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_binders_one_winner() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = code(&admin).await;
    let (wins, losses) = bind_race(&s, &c, 20).await;
    assert_eq!(wins, 1);
    // Losers are told the code was used; they are no guessers.
    assert!(losses.iter().all(|l| l == "code_used"), "{losses:?}");
    let sessions = admin.sessions(true).await.unwrap();
    assert_eq!(sessions.len(), 1, "exactly one attended session");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_support_codes_locks_the_address_out() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let real = code(&admin).await;
    let public = s.client();
    for _ in 0..10 {
        assert_eq!(
            public
                .preview_support_code("222-222-222")
                .await
                .unwrap_err()
                .code(),
            Some("not_found")
        );
    }
    assert_eq!(
        public.preview_support_code(&real).await.unwrap_err().code(),
        Some("locked_out")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_consent_the_session_is_invisible_and_carries_nothing() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let other = s.user(&admin, "otto", Role::Operator).await;
    let c = code(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    // The person takes their time: answers yes after 3 s.
    let slow_yes = script(&dir, "slow-yes", "exec sleep 3");
    let agent = support_agent(&s, &c, ConsentMode::Command(slow_yes));
    let pending = eventually(Duration::from_secs(10), || async {
        !admin.sessions(false).await.unwrap().is_empty()
    })
    .await;
    assert!(pending);
    let mine = admin.sessions(false).await.unwrap();
    assert_eq!(
        (mine[0].state.as_str(), mine[0].consent.as_str()),
        ("pending", "pending")
    );
    let id = mine[0].id.clone();
    // Invisible to everyone else; no viewer token for anyone yet.
    assert!(other.sessions(true).await.unwrap().is_empty());
    assert_eq!(
        other.session(&id).await.unwrap_err().code(),
        Some("not_found")
    );
    assert_eq!(
        other.viewer_token(&id).await.unwrap_err().code(),
        Some("not_found")
    );
    assert_eq!(
        admin.viewer_token(&id).await.unwrap_err().code(),
        Some("consent_pending")
    );
    // And no shell exists: the relay does not know the session.
    assert!(s.state.hub().get(&id).is_none());

    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.session(&id).await.unwrap().state == "active"
        })
        .await
    );
    assert_eq!(other.session(&id).await.unwrap().consent, "granted");
    let (mut tx, mut rx, _) = watch(&admin, &id).await;
    tx.input(b"echo consented-$((1+2))\n").await.unwrap();
    read_until(&mut rx, "consented-3", Duration::from_secs(10)).await;
    admin.end_session(&id).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(exit, Exit::SessionEnded { ref code, .. } if code == "ended_by_operator"),
        "{exit:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_tears_the_session_down_and_leaves_it_invisible() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let other = s.user(&admin, "otto", Role::Operator).await;
    let c = code(&admin).await;
    let agent = support_agent(&s, &c, ConsentMode::Command("/bin/false".into()));
    let exit = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(exit, Exit::SessionEnded { ref code, .. } if code == "consent_denied"),
        "{exit:?}"
    );
    let mine = admin.sessions(true).await.unwrap();
    assert_eq!(
        (mine[0].state.as_str(), mine[0].consent.as_str()),
        ("ended", "denied")
    );
    assert!(
        other.sessions(true).await.unwrap().is_empty(),
        "still invisible to others"
    );
    assert_eq!(
        admin.viewer_token(&mine[0].id).await.unwrap_err().code(),
        Some("session_ended")
    );
    // The code is spent.
    assert_eq!(
        s.client()
            .preview_support_code(&c)
            .await
            .unwrap_err()
            .code(),
        Some("code_used")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_answering_times_out_and_ends_the_session() {
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| c.consent_timeout = Duration::from_millis(800))),
        ..Options::default()
    })
    .await;
    let admin = s.admin().await;
    let c = code(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let never = script(&dir, "never", "exec sleep 30");
    let agent = support_agent(&s, &c, ConsentMode::Command(never));
    // Generous bounds: on a loaded machine the agent may take seconds to
    // start; the timeout itself is the server's 800 ms.
    let exit = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(exit, Exit::SessionEnded { ref code, .. } if code == "consent_timeout"),
        "{exit:?}"
    );
    let wanted = [
        "support_code_created",
        "support_code_consumed",
        "session_created",
        "consent_requested",
        "consent_timed_out",
        "session_ended",
    ];
    // The agent is told the session ended as the end is recorded: the last
    // rows may land a moment after it exits.
    let all_there = eventually(Duration::from_secs(10), || async {
        let audit = admin.audit_page(&Default::default()).await.unwrap();
        wanted
            .iter()
            .all(|a| audit.entries.iter().any(|e| e.action == *a))
    })
    .await;
    let audit = admin.audit_page(&Default::default()).await.unwrap();
    let actions: Vec<&str> = audit.entries.iter().map(|e| e.action.as_str()).collect();
    assert!(all_there, "audit rows missing: {actions:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_support_agent_disconnecting_ends_the_session() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = code(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let never = script(&dir, "never", "exec sleep 30");
    let agent = support_agent(&s, &c, ConsentMode::Command(never));
    assert!(
        eventually(Duration::from_secs(10), || async {
            !admin.sessions(false).await.unwrap().is_empty()
        })
        .await
    );
    let id = admin.sessions(false).await.unwrap()[0].id.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.state.registry().len() == 1
        })
        .await
    );
    agent.abort();
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin.session(&id).await.unwrap().state == "ended"
        })
        .await
    );
    assert_eq!(
        admin.session(&id).await.unwrap().end_code.as_deref(),
        Some("consent_abandoned")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_codes_are_marked_expired_and_refused() {
    let s = TestServer::start_with(tessera_testkit::fast_heartbeat(200)).await;
    let admin = s.admin().await;
    let created = admin
        .create_support_code(&CreateSupportCodeRequest {
            access: Some("view".into()),
            ttl_seconds: Some(60),
            channel: None,
        })
        .await
        .unwrap();
    s.clock.advance(Duration::from_secs(61));
    let e = s
        .client()
        .preview_support_code(created.code.expose())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("code_expired"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            admin
                .audit_page(&tessera_client::AuditQuery {
                    action: Some("support_code_expired".into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .entries
                .len()
                == 1
        })
        .await
    );
    s.stop().await;
}

/// The "done when": a technician creates a code; the person runs
/// `tessera agent support` in a terminal and answers yes at the prompt; the
/// technician works in the shell with `tessera connect` and watches it in a
/// second viewer; another user, whom the consent did not name, gets no
/// viewer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn technician_and_helped_person_in_terminals() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let watcher = s.user(&admin, "watcher", Role::Viewer).await;
    let c = code(&admin).await;

    // The helped person's terminal: `script` gives the agent a real TTY,
    // on which it asks; we answer "y".
    let cmd = format!(
        "{} agent support --server {} --code {} --shell /bin/sh",
        tessera_bin().display(),
        s.url,
        c
    );
    let mut person = tokio::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut person_out = person.stdout.take().unwrap();
    let mut seen = Vec::new();
    let asked = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            let n = person_out.read(&mut buf).await.unwrap();
            assert!(n > 0, "agent exited: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("[y/N]") {
                return;
            }
        }
    })
    .await;
    assert!(
        asked.is_ok(),
        "no prompt: {}",
        String::from_utf8_lossy(&seen)
    );
    assert!(String::from_utf8_lossy(&seen).contains("Allow admin to control this computer? [y/N]"));
    person
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"y\n")
        .await
        .unwrap();

    assert!(
        eventually(Duration::from_secs(10), || async {
            admin
                .sessions(false)
                .await
                .unwrap()
                .first()
                .is_some_and(|x| x.state == "active")
        })
        .await
    );
    let id = admin.sessions(false).await.unwrap()[0].id.clone();

    // The technician's terminal: `tessera connect` under a PTY.
    let cfg = tempfile::tempdir().unwrap();
    let pw = s.admin_password.clone().unwrap();
    let (code_, _, _) = tessera_testkit::ctl(
        cfg.path(),
        &["login", "--server", &s.url, "--password-stdin"],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code_, 0);
    let connect = format!("{} connect {id}", tessera_bin().display());
    let mut tech = tokio::process::Command::new("script")
        .args(["-qfec", &connect, "/dev/null"])
        .env("TESSERA_CONFIG_DIR", cfg.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The person consented to admin: nobody else may watch.
    assert_eq!(
        watcher.viewer_token(&id).await.unwrap_err().code(),
        Some("forbidden")
    );
    let (_w_tx, mut w_rx, _) = watch(&admin, &id).await;

    let mut tech_in = tech.stdin.take().unwrap();
    let mut tech_out = tech.stdout.take().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tech_in
        .write_all(b"echo from-the-tech-$((6*7))\n")
        .await
        .unwrap();
    let mut screen = Vec::new();
    let typed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = tech_out.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connect exited: {}",
                String::from_utf8_lossy(&screen)
            );
            screen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&screen).contains("from-the-tech-42") {
                return;
            }
        }
    })
    .await;
    assert!(typed.is_ok(), "{}", String::from_utf8_lossy(&screen));
    read_until(&mut w_rx, "from-the-tech-42", Duration::from_secs(10)).await;

    // The technician ends the shell; both terminals end and say why.
    tech_in.write_all(b"exit\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), tech.wait())
        .await
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tech_out.read_to_end(&mut rest)).await;
    screen.extend_from_slice(&rest);
    let screen = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{screen}");
    assert!(screen.contains("session ended (shell_exited)"), "{screen}");
    let p = tokio::time::timeout(Duration::from_secs(15), person.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(p.success());
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), person_out.read_to_end(&mut out)).await;
    assert!(
        String::from_utf8_lossy(&out).contains("Support session ended (shell_exited)"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_can_open_another_session_on_a_support_device() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let other = s.user(&admin, "otto", Role::Operator).await;
    let c = code(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let never = script(&dir, "never", "exec sleep 30");
    let _agent = support_agent(&s, &c, ConsentMode::Command(never));
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.state.registry().len() == 1
        })
        .await
    );
    let pending = admin.sessions(false).await.unwrap();
    let device = pending[0].device_id.clone();
    // While consent is pending, neither the creator nor anyone else can open
    // a managed session (a shell without consent) on the support device.
    for who in [&admin, &other] {
        let e = who
            .create_session(&tessera_core::api::CreateSessionRequest {
                device: device.clone(),
                access: None,
                channel: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("not_found"), "{e}");
    }
    assert!(
        admin.list_devices().await.unwrap().is_empty(),
        "support devices are not in the registry list"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_code_whose_agent_never_connects_times_out_anyway() {
    let s = TestServer::start_with(tessera_testkit::fast_heartbeat(200)).await;
    let admin = s.admin().await;
    let c = code(&admin).await;
    let (creds, bound) = tessera_agent::support::bind(&s.url, &TlsTrust::PublicRoots, &c, None)
        .await
        .unwrap();
    // The agent never connects. Past the deadline the sweep ends it.
    s.clock.advance(Duration::from_secs(61));
    assert!(
        eventually(Duration::from_secs(5), || async {
            admin.session(&bound.session_id).await.unwrap().state == "ended"
        })
        .await
    );
    let v = admin.session(&bound.session_id).await.unwrap();
    assert_eq!(v.end_code.as_deref(), Some("consent_timeout"));
    // Its one-session key died with it.
    let e = s
        .client()
        .with_token(creds.key.clone())
        .push_events(&tessera_core::api::EventBatch { events: vec![] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("device_revoked"));
    s.stop().await;
}
