//! How long a managed shell lives: it ends once its last viewer has been
//! gone for the grace period (and its background jobs die with it), unless
//! a viewer left it on purpose (`--keep`); a disabled operator's sessions
//! end; a restart ends the sessions nothing relays any more. And both
//! WebSocket endpoints keep the closing handshake: they answer a Close
//! with a Close, and after a Close of their own they end TCP only once
//! the peer answered.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tessera_client::AuditQuery;
use tessera_core::api::UpdateUserRequest;
use tessera_core::roles::Role;
use tessera_testkit::{
    ctl_admin, eventually, online_device, open_ws, shell_session, tessera_bin, watch, Options,
    Terminal, TestDb, TestServer,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const GRACE: Duration = Duration::from_secs(1);

fn short_grace() -> Options {
    Options {
        configure: Some(Box::new(|c| {
            c.heartbeat_interval = Duration::from_millis(200);
            c.shell_grace = GRACE;
        })),
        ..Options::default()
    }
}

/// Whether process `pid` is running (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 1..].to_owned();
            rest.split_whitespace()
                .next()
                .map(|st| st != "Z" && st != "X")
        })
        .unwrap_or(false)
}

/// The number the shell printed after the last `marker`.
fn number_after(screen: &str, marker: &str) -> Option<u32> {
    let at = screen.rfind(marker)? + marker.len();
    let digits: String = screen[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Types `sleep 3333 &` into the terminal's shell; returns the job's pid.
async fn start_background_job(term: &mut Terminal) -> u32 {
    term.type_bytes(b"sleep 3333 & echo BG=$!; echo READY\r");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let screen = term.wait_for("READY\r", Duration::from_secs(15)).await;
        if let Some(pid) = number_after(&screen, "BG=") {
            return pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "{screen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn end_code(admin: &tessera_client::ApiClient, id: &str) -> Option<String> {
    admin.session(id).await.unwrap().end_code
}

/// The codes of the `session_ended` audit rows of session `id`.
async fn audited_end_codes(admin: &tessera_client::ApiClient, id: &str) -> Vec<String> {
    let page = admin
        .audit_page(&AuditQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let target = format!("session:{id}");
    page.entries
        .iter()
        .filter(|e| e.action == "session_ended" && e.target.as_deref() == Some(target.as_str()))
        .map(|e| e.details["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_connect_with_ctrl_bracket_ends_the_shell_and_its_background_job_after_the_grace() {
    let s = TestServer::start_with(short_grace()).await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let cfg = ctl_admin(&s).await;
    let dir = cfg.path().to_str().unwrap().to_owned();
    let mut term = Terminal::spawn(&["connect", "--config-dir", &dir, "box"], &[]);
    term.wait_for("Ctrl-] disconnects", Duration::from_secs(20))
        .await;
    let pid = start_background_job(&mut term).await;
    assert!(alive(pid));
    let id = admin.sessions(false).await.unwrap()[0].id.clone();

    term.type_bytes(b"\x1d");
    assert_eq!(term.exit_code(Duration::from_secs(10)).await, Some(0));
    assert!(term.output().contains("--resume"), "{}", term.output());
    assert!(
        eventually(Duration::from_secs(10), || {
            let admin = admin.clone();
            let id = id.clone();
            async move { end_code(&admin, &id).await.as_deref() == Some("viewers_left") }
        })
        .await,
        "the unwatched shell ends after the grace period"
    );
    assert!(
        eventually(Duration::from_secs(10), || async move { !alive(pid) }).await,
        "`sleep 3333 &` (pid {pid}) outlived its session"
    );
    assert_eq!(audited_end_codes(&admin, &id).await, ["viewers_left"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_rejoined_within_the_grace_lives_on_and_resume_finds_it() {
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| {
            c.heartbeat_interval = Duration::from_millis(200);
            c.shell_grace = Duration::from_secs(4);
        })),
        ..Options::default()
    })
    .await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let cfg = ctl_admin(&s).await;
    let dir = cfg.path().to_str().unwrap().to_owned();
    let mut first = Terminal::spawn(&["connect", "--config-dir", &dir, "box"], &[]);
    first
        .wait_for("Ctrl-] disconnects", Duration::from_secs(20))
        .await;
    first.type_bytes(b"export MARK=kept-$((6*7))\r");
    first.type_bytes(b"\x1d");
    assert_eq!(first.exit_code(Duration::from_secs(10)).await, Some(0));

    let mut again = Terminal::spawn(&["connect", "--config-dir", &dir, "box", "--resume"], &[]);
    again
        .wait_for("Ctrl-] disconnects", Duration::from_secs(20))
        .await;
    again.type_bytes(b"echo $MARK\r");
    again.wait_for("kept-42", Duration::from_secs(10)).await;
    again.type_bytes(b"\x1d");
    assert_eq!(again.exit_code(Duration::from_secs(10)).await, Some(0));
    assert_eq!(admin.sessions(false).await.unwrap().len(), 1, "one shell");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_no_live_session_says_so() {
    let s = TestServer::start_with(short_grace()).await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let cfg = ctl_admin(&s).await;
    let out = tokio::process::Command::new(tessera_bin())
        .args(["connect", "--config-dir"])
        .arg(cfg.path())
        .args(["box", "--resume"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no live session on box"), "{err}");
    assert!(
        admin.sessions(false).await.unwrap().is_empty(),
        "none opened"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_left_with_keep_outlives_the_grace() {
    let s = TestServer::start_with(short_grace()).await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let cfg = ctl_admin(&s).await;
    let dir = cfg.path().to_str().unwrap().to_owned();
    let mut term = Terminal::spawn(&["connect", "--config-dir", &dir, "--keep", "box"], &[]);
    term.wait_for("Ctrl-] disconnects", Duration::from_secs(20))
        .await;
    let pid = start_background_job(&mut term).await;
    term.type_bytes(b"\x1d");
    assert_eq!(term.exit_code(Duration::from_secs(10)).await, Some(0));
    tokio::time::sleep(GRACE * 3).await;
    let live = admin.sessions(false).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].state, "active");
    assert!(alive(pid));
    admin.end_session(&live[0].id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async move { !alive(pid) }).await,
        "ending the kept session ends its background job"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_operators_sessions_end_with_user_disabled() {
    let s = TestServer::start_with(short_grace()).await;
    let admin = s.admin().await;
    let olga = s.user(&admin, "olga", Role::Operator).await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&olga, "box").await;
    let (_tx, _rx, _) = watch(&olga, &id).await;
    admin
        .update_user(
            "olga",
            &UpdateUserRequest {
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let admin = admin.clone();
            let id = id.clone();
            async move { end_code(&admin, &id).await.as_deref() == Some("user_disabled") }
        })
        .await,
        "the disabled operator's shell ends"
    );
    assert_eq!(audited_end_codes(&admin, &id).await, ["user_disabled"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_the_sessions_the_last_run_left_live() {
    let db = TestDb::new().await;
    let first = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        ..short_grace()
    })
    .await;
    let password = first.admin_password.clone().unwrap();
    let admin = first.admin().await;
    let (_device, agent) = online_device(&first, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let clock = first.clock.clone();
    drop(agent);
    first.stop().await;
    // As a crash leaves it: the row still says active.
    db.raw(&format!(
        "UPDATE sessions SET state = 'active', ended_at = NULL, end_code = NULL, \
         end_reason = NULL WHERE id = '{id}'"
    ))
    .await
    .unwrap();

    // The restart comes later than three heartbeats after the device was
    // last seen (the first run may stop before it records the agent's
    // disconnection, as a crash would): the device is not online then.
    clock.advance(Duration::from_secs(1));
    let second = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        clock: Some(clock),
        ..short_grace()
    })
    .await;
    let admin = second.login("admin", &password).await;
    assert!(
        admin.sessions(false).await.unwrap().is_empty(),
        "no unjoinable live session is listed"
    );
    assert_eq!(
        end_code(&admin, &id).await.as_deref(),
        Some("server_restart")
    );
    // (The first run's stop may have recorded its own end before the row
    // was set back; the restart's is the last.)
    let codes = audited_end_codes(&admin, &id).await;
    assert_eq!(
        codes.last().map(String::as_str),
        Some("server_restart"),
        "{codes:?}"
    );
    second.stop().await;
}

/// Sends Close(1000) and expects a Close frame back, not an abrupt end.
async fn close_is_answered(mut ws: tessera_testkit::Ws) {
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return Ok(frame),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("{e}")),
                None => return Err("the connection ended without a Close".into()),
            }
        }
    })
    .await
    .expect("an answer within 5 s");
    let frame = answer.expect("a Close frame back");
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Normal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_endpoint_answers_close_with_close() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let token = admin.viewer_token(&id).await.unwrap();
    let ws = open_ws(
        &format!("ws://{}/ws/viewer?session={id}", s.addr),
        token.token.expose(),
    )
    .await
    .unwrap();
    close_is_answered(ws).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_endpoint_answers_close_with_close() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = tessera_testkit::TestDevice::enroll(&s, &admin, "box").await;
    let ws = open_ws(&format!("ws://{}/ws/device", s.addr), device.key.expose())
        .await
        .unwrap();
    close_is_answered(ws).await;
    s.stop().await;
}

/// `device`'s control connection, past the challenge (welcomed).
async fn connected(s: &TestServer, device: &tessera_testkit::TestDevice) -> tessera_testkit::Ws {
    let mut ws = open_ws(&format!("ws://{}/ws/device", s.addr), device.key.expose())
        .await
        .unwrap();
    let keys = device.state.identity().unwrap();
    let id = keys.device_id();
    let hello = tessera_client::control::DeviceHello::agent(&keys, &id, "test");
    tessera_client::control::handshake(&mut ws, &hello)
        .await
        .expect("welcome");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_endpoint_answers_close_with_close_once_connected() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = tessera_testkit::TestDevice::enroll(&s, &admin, "box").await;
    let ws = connected(&s, &device).await;
    close_is_answered(ws).await;
    s.stop().await;
}

/// Reads until the server's Close and returns its code; then, before this
/// side answers, the server must still hold TCP open (no end of stream
/// within `quiet`), and once the answer goes out it must end TCP itself.
async fn server_close_waits_for_the_answer(mut ws: tessera_testkit::Ws) -> u16 {
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| f.code.into()),
                Some(Ok(_)) => continue,
                other => panic!("the connection ended without a Close: {other:?}"),
            }
        }
    })
    .await
    .expect("the server closes within 20 s");
    // The answer to that Close is queued, not yet sent. Meanwhile the
    // socket must not end: peek waits for a byte or the end of stream,
    // and the server sends nothing after its Close.
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() else {
        panic!("a plain TCP test connection");
    };
    let quiet = Duration::from_millis(300);
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(quiet, tcp.peek(&mut byte)).await;
    assert!(
        early.is_err(),
        "the server ended TCP before the peer answered its Close: {early:?}"
    );
    // Polling sends the queued answer; then the server ends TCP.
    let after = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the server ends TCP once answered");
    assert!(after.is_none(), "{after:?}");
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_the_server_closes_gets_the_code_and_tcp_ends_after_its_answer() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let token = admin.viewer_token(&id).await.unwrap();
    let mut ws = open_ws(
        &format!("ws://{}/ws/viewer?session={id}", s.addr),
        token.token.expose(),
    )
    .await
    .unwrap();
    // Joined (ViewerReady), then the operator ends the session.
    let ready = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    assert!(
        matches!(ready, Ok(Some(Ok(Message::Binary(_))))),
        "{ready:?}"
    );
    admin.end_session(&id).await.unwrap();
    assert_eq!(server_close_waits_for_the_answer(ws).await, 4000);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_server_closes_gets_the_code_and_tcp_ends_after_its_answer() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = tessera_testkit::TestDevice::enroll(&s, &admin, "box").await;
    let ws = connected(&s, &device).await;
    admin
        .revoke_device(&device.device_id, Some("lost".into()))
        .await
        .unwrap();
    assert_eq!(
        server_close_waits_for_the_answer(ws).await,
        tessera_proto::close::REVOKED
    );
    s.stop().await;
}

/// The audit rows of session `id` with `action`, their `detail` values.
async fn audited_details(
    admin: &tessera_client::ApiClient,
    id: &str,
    action: &str,
    detail: &str,
) -> Vec<String> {
    let page = admin
        .audit_page(&AuditQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let target = format!("session:{id}");
    let mut found: Vec<String> = page
        .entries
        .iter()
        .filter(|e| e.action == action && e.target.as_deref() == Some(target.as_str()))
        .map(|e| e.details[detail].as_str().unwrap_or_default().to_owned())
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_admitted_viewer_has_exactly_one_session_joined_row_carrying_its_jti() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let (_a, _a_rx, _) = watch(&admin, &id).await;
    let (_b, _b_rx, _) = watch(&admin, &id).await;
    let minted = audited_details(&admin, &id, "viewer_token_minted", "token_id").await;
    let joined = audited_details(&admin, &id, "session_joined", "jti").await;
    assert_eq!(minted.len(), 2, "{minted:?}");
    assert_eq!(
        joined, minted,
        "one join row per admitted viewer, with its jti"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_viewer_task_still_yields_session_left() {
    use tessera_server::store::audit::{Action, Actor, AuditEvent};
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let live = s.state.hub().get(&id).expect("relayed here");
    let joined = live
        .join("u", "l", tessera_server::relay::Access::Control)
        .unwrap();
    let mut seat = live.seat(joined.viewer_id);
    let tenant = live.tenant_id.clone();
    seat.audit_leaving(
        s.state.db().clone(),
        AuditEvent::new(&tenant, Actor::User("u".into()), Action::SessionLeft)
            .target(format!("session:{id}")),
    );
    let task = tokio::spawn(async move {
        let _held = (seat, joined);
        std::future::pending::<()>().await;
    });
    task.abort();
    let _ = task.await;
    assert_eq!(live.viewer_count(), 0);
    assert!(
        eventually(Duration::from_secs(10), || {
            let admin = admin.clone();
            let id = id.clone();
            async move {
                !audited_details(&admin, &id, "session_left", "access")
                    .await
                    .is_empty()
            }
        })
        .await,
        "the aborted viewer's departure is audited"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_without_a_device_finds_my_one_session_lists_several_and_says_when_there_is_none() {
    let s = TestServer::start_with(short_grace()).await;
    let admin = s.admin().await;
    let (_box, _box_agent) = online_device(&s, &admin, "box").await;
    let (_nas, _nas_agent) = online_device(&s, &admin, "nas").await;
    let cfg = ctl_admin(&s).await;
    let dir = cfg.path().to_str().unwrap().to_owned();
    let connect = |args: &[&str]| {
        let mut all = vec!["connect", "--config-dir", dir.as_str()];
        all.extend_from_slice(args);
        Terminal::spawn(&all, &[])
    };

    // One live session (kept), on box: `--resume` alone rejoins it.
    let mut first = connect(&["--keep", "box"]);
    first
        .wait_for("Ctrl-] disconnects", Duration::from_secs(20))
        .await;
    first.type_bytes(b"export MARK=kept-$((6*7))\r");
    first.type_bytes(b"\x1d");
    assert_eq!(first.exit_code(Duration::from_secs(10)).await, Some(0));
    let mut again = connect(&["--keep", "--resume"]);
    again
        .wait_for("Ctrl-] disconnects", Duration::from_secs(20))
        .await;
    assert!(
        again.output().contains("Connected to box"),
        "{}",
        again.output()
    );
    again.type_bytes(b"echo $MARK\r");
    again.wait_for("kept-42", Duration::from_secs(10)).await;
    again.type_bytes(b"\x1d");
    assert_eq!(again.exit_code(Duration::from_secs(10)).await, Some(0));

    // A second one, on nas: `--resume` lists both and opens nothing.
    let mut second = connect(&["--keep", "nas"]);
    second
        .wait_for("Ctrl-] disconnects", Duration::from_secs(20))
        .await;
    second.type_bytes(b"\x1d");
    assert_eq!(second.exit_code(Duration::from_secs(10)).await, Some(0));
    let live = admin.sessions(false).await.unwrap();
    assert_eq!(live.len(), 2);
    let mut several = connect(&["--resume"]);
    let code = several.exit_code(Duration::from_secs(20)).await;
    let screen = several.output();
    assert_ne!(code, Some(0), "{screen}");
    assert!(screen.contains("you have 2 live sessions"), "{screen}");
    assert!(screen.contains("tessera connect SESSION"), "{screen}");
    for v in &live {
        assert!(
            screen.contains(&format!("{}  on {}", v.id, v.device_name)),
            "{screen}"
        );
    }
    assert_eq!(admin.sessions(false).await.unwrap().len(), 2, "none opened");

    // None left: it says so.
    for v in &live {
        admin.end_session(&v.id).await.unwrap();
    }
    let mut none = connect(&["--resume"]);
    let code = none.exit_code(Duration::from_secs(20)).await;
    let screen = none.output();
    assert_ne!(code, Some(0), "{screen}");
    assert!(
        screen.contains("you have no live session to resume"),
        "{screen}"
    );
    assert!(admin.sessions(false).await.unwrap().is_empty());
    s.stop().await;
}
