//! What the person being helped sees: `tessera agent support` driven in a
//! real pseudo-terminal, the way they run it, against a real server, with
//! the technician joining through the relay.

use std::time::Duration;

use tessera_client::viewer::ViewerEvent;
use tessera_client::ApiClient;
use tessera_core::api::CreateSupportCodeRequest;
use tessera_testkit::{eventually, read_until, watch, Terminal, TestServer};

const LIMIT: Duration = Duration::from_secs(20);

async fn code(admin: &ApiClient, access: &str) -> String {
    admin
        .create_support_code(&CreateSupportCodeRequest {
            access: Some(access.to_owned()),
            ..Default::default()
        })
        .await
        .unwrap()
        .code
        .expose()
        .to_owned()
}

/// `tessera agent support` in a terminal, with a plain shell.
fn support_in_terminal(s: &TestServer, code: &str) -> Terminal {
    Terminal::spawn(
        &[
            "agent", "support", "--server", &s.url, "--code", code, "--shell", "/bin/sh",
        ],
        &[("USER", "bob"), ("PS1", "$ ")],
    )
}

/// The one session the admin has, once it is active.
async fn active_session(admin: &ApiClient) -> String {
    assert!(
        eventually(LIMIT, || async {
            admin
                .sessions(false)
                .await
                .unwrap()
                .iter()
                .any(|s| s.state == "active")
        })
        .await,
        "the session never became active"
    );
    admin.sessions(false).await.unwrap()[0].id.clone()
}

async fn ended(rx: &mut tessera_client::viewer::ViewerReceiver) -> (String, String) {
    tokio::time::timeout(LIMIT, async {
        loop {
            match rx.next().await {
                ViewerEvent::Ended { code, reason } => return (code, reason),
                ViewerEvent::Closed { code, reason } => panic!("closed {code:?} {reason}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the session never ended for the viewer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helped_person_sees_who_is_connected_how_to_end_and_why_it_ended() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = code(&admin, "control").await;
    let mut term = support_in_terminal(&s, &c);
    term.wait_for("Allow admin to control this computer? [y/N]", LIMIT)
        .await;
    let shown = term.output();
    assert!(
        shown.contains("a shell of their own on this machine, as you"),
        "the mode is explained before the question: {shown}"
    );
    term.type_bytes(b"y\r");
    term.wait_for("as you (bob)", LIMIT).await;
    term.wait_for(
        "To end the session, type end and press Enter (or press Ctrl-C).",
        LIMIT,
    )
    .await;
    let id = active_session(&admin).await;

    let (mut tx, _rx, access) = watch(&admin, &id).await;
    assert_eq!(access, "control");
    term.wait_for("admin is connected (controlling).", LIMIT)
        .await;
    tx.close().await;
    term.wait_for(
        "admin left (was controlling). Nobody is connected now.",
        LIMIT,
    )
    .await;

    let (_tx, mut rx, _) = watch(&admin, &id).await;
    admin.end_session(&id).await.unwrap();
    assert_eq!(ended(&mut rx).await.0, "ended_by_operator");
    term.wait_for(
        "Support session ended (ended_by_operator): the technician ended it (ended by admin).",
        LIMIT,
    )
    .await;
    assert_eq!(term.exit_code(LIMIT).await, Some(0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_the_session_and_the_technician_reads_that_the_person_ended_it() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = code(&admin, "control").await;
    let mut term = support_in_terminal(&s, &c);
    term.wait_for("[y/N]", LIMIT).await;
    term.type_bytes(b"y\r");
    let id = active_session(&admin).await;
    let (_tx, mut rx, _) = watch(&admin, &id).await;
    term.wait_for("admin is connected (controlling).", LIMIT)
        .await;
    term.type_bytes(b"\x03");
    let (code, reason) = ended(&mut rx).await;
    assert_eq!(code, "ended_by_user", "{reason}");
    assert!(
        reason.contains("the person at the device ended the session"),
        "{code}: {reason}"
    );
    term.wait_for("You ended the support session", LIMIT).await;
    assert_eq!(term.exit_code(LIMIT).await, Some(0));
    s.stop().await;
}

/// The `session_ended` audit rows of session `id`: (actor, code).
async fn audited_ends(admin: &ApiClient, id: &str) -> Vec<(String, String)> {
    let page = admin
        .audit_page(&tessera_client::AuditQuery {
            action: Some("session_ended".into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let target = format!("session:{id}");
    page.entries
        .iter()
        .filter(|e| e.target.as_deref() == Some(target.as_str()))
        .map(|e| {
            let code = e.details["code"].as_str().unwrap_or_default().to_owned();
            (e.actor.clone(), code)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_end_ends_the_session_and_the_technician_reads_ended_by_user() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = code(&admin, "control").await;
    let mut term = support_in_terminal(&s, &c);
    term.wait_for("[y/N]", LIMIT).await;
    term.type_bytes(b"y\r");
    term.wait_for("type end and press Enter", LIMIT).await;
    let id = active_session(&admin).await;
    let (_tx, mut rx, _) = watch(&admin, &id).await;
    term.wait_for("admin is connected (controlling).", LIMIT)
        .await;
    // Other lines do nothing; `end` alone does.
    term.type_bytes(b"hello\r");
    term.type_bytes(b"ending\r");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        admin.session(&id).await.unwrap().state,
        "active",
        "{}",
        term.output()
    );
    term.type_bytes(b"end\r");
    let (code, reason) = ended(&mut rx).await;
    assert_eq!(code, "ended_by_user", "{reason}");
    assert!(
        reason.contains("the person at the device ended the session"),
        "{reason}"
    );
    term.wait_for("You ended the support session", LIMIT).await;
    assert_eq!(term.exit_code(LIMIT).await, Some(0));
    let row = admin.session(&id).await.unwrap();
    assert_eq!(row.end_code.as_deref(), Some("ended_by_user"));
    let ends = audited_ends(&admin, &id).await;
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert!(ends[0].0.starts_with("device:"), "{ends:?}");
    assert_eq!(ends[0].1, "ended_by_user");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_view_mode_the_technician_watches_the_persons_own_shell() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = code(&admin, "view").await;
    let mut term = support_in_terminal(&s, &c);
    term.wait_for("Allow admin to view this computer? [y/N]", LIMIT)
        .await;
    term.type_bytes(b"y\r");
    term.wait_for("Your shell is shared, view-only", LIMIT)
        .await;
    term.wait_for("type exit", LIMIT).await;
    let id = active_session(&admin).await;
    let (mut tx, mut rx, access) = watch(&admin, &id).await;
    assert_eq!(access, "view_only");
    term.wait_for("admin is connected (watching).", LIMIT).await;

    // What the person types in their own terminal, the technician sees.
    term.type_bytes(b"echo typed-by-$((40+2))\r");
    read_until(&mut rx, "typed-by-42", LIMIT).await;
    term.wait_for("typed-by-42", LIMIT).await;
    // The technician cannot type into the person's shell.
    tx.input(b"echo from-$((6*7))-tech\r").await.unwrap();

    // Leaving their shell ends the session, for both of them.
    term.type_bytes(b"exit\r");
    let (code, _) = ended(&mut rx).await;
    assert_eq!(code, "shell_exited");
    term.wait_for(
        "Support session ended (shell_exited): the shell exited",
        LIMIT,
    )
    .await;
    assert!(
        !term.output().contains("from-42-tech"),
        "the technician's keys reached the person's shell"
    );
    assert_eq!(term.exit_code(LIMIT).await, Some(0));
    s.stop().await;
}
