//! `tessera agent enroll` as a user runs it (issue 17, item 3): an
//! interrupted enroll is retried at once with a fresh code, polling rides
//! out a server restart, and a revoked device is told so, with the reason.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tessera_testkit::{tessera_bin, Options, TestDb, TestDevice, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// `tessera agent enroll` by pairing, on `state`, against `server`.
fn enroll(server: &str, state: &Path) -> Child {
    tokio::process::Command::new(tessera_bin())
        .args(["agent", "enroll", "--server", server, "--state-dir"])
        .arg(state)
        .env("TESSERA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tessera agent enroll")
}

/// Reads the enroll's output until it waits for approval; the user code.
async fn user_code(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut code = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("enter the code ").nth(1) {
                code = rest.split_whitespace().next().map(str::to_owned);
            }
            if line.contains("Waiting for approval") {
                return code.expect("a code before the wait");
            }
        }
        panic!("enroll ended without showing a code");
    })
    .await
    .expect("enroll shows its code")
}

fn started(server: &str, state: &Path) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = enroll(server, state);
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Waits for the enroll to end; (success, stdout rest, stderr).
async fn finished(mut child: Child, mut lines: Lines<BufReader<ChildStdout>>) -> (bool, String) {
    let mut out = String::new();
    let status = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            out.push_str(&line);
            out.push('\n');
        }
        child.wait().await.unwrap()
    })
    .await
    .expect("enroll ends");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        e.read_to_string(&mut err).await.unwrap();
    }
    (status.success(), format!("{out}{err}"))
}

fn quick_polls() -> Options {
    Options {
        configure: Some(Box::new(|c| c.pairing_interval = Duration::from_secs(1))),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_enroll_started_again_at_once_gets_a_fresh_code_and_completes() {
    let s = TestServer::start_with(quick_polls()).await;
    let admin = s.admin().await;
    let state = tempfile::tempdir().unwrap();

    let (mut first, mut lines) = started(&s.url, state.path());
    let old_code = user_code(&mut lines).await;
    first.kill().await.unwrap();

    let (second, mut lines) = started(&s.url, state.path());
    let new_code = user_code(&mut lines).await;
    assert_ne!(old_code, new_code);
    // The replaced pairing's code no longer approves anything (and, being
    // a real code, is no guess toward a lockout).
    let e = admin.decide_pairing(&old_code, true).await.unwrap_err();
    assert_eq!(e.code(), Some("pairing_not_pending"), "{e}");
    let pending = admin.pairings().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");

    admin.decide_pairing(&new_code, true).await.unwrap();
    let (ok, out) = finished(second, lines).await;
    assert!(ok, "{out}");
    assert!(out.contains("Enrolled as device"), "{out}");
    let replaced = admin
        .audit_page(&tessera_client::AuditQuery {
            action: Some("pairing_replaced".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(replaced.entries.len(), 1);
    assert_eq!(admin.list_devices().await.unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_keeps_polling_through_a_server_restart_and_completes_after_approval() {
    let db = TestDb::new().await;
    let first = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        ..quick_polls()
    })
    .await;
    let (addr, url) = (first.addr, first.url.clone());
    let password = first.admin_password.clone().unwrap();
    let state = tempfile::tempdir().unwrap();

    let (child, mut lines) = started(&url, state.path());
    let code = user_code(&mut lines).await;
    first.stop().await;
    // Polls meet a closed port for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let second = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        configure: Some(Box::new(move |c| {
            c.listen = addr;
            c.pairing_interval = Duration::from_secs(1);
        })),
        ..Options::default()
    })
    .await;
    assert_eq!(second.url, url);
    let admin = second.login("admin", &password).await;
    admin.decide_pairing(&code, true).await.unwrap();
    let (ok, out) = finished(child, lines).await;
    assert!(ok, "{out}");
    assert!(out.contains("Enrolled as device"), "{out}");
    assert_eq!(admin.list_devices().await.unwrap().len(), 1);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_enrolling_again_is_told_it_was_revoked_and_why() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let device = TestDevice::enroll(&s, &admin, "laptop").await;
    admin
        .revoke_device(&device.device_id, Some("stolen laptop".into()))
        .await
        .unwrap();

    let (child, lines) = started(&s.url, device.dir());
    let (ok, out) = finished(child, lines).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("this device has been revoked (stolen laptop)"),
        "{out}"
    );
    assert!(out.contains("cannot enroll again"), "{out}");
    assert!(!out.contains("already enrolled"), "{out}");
    s.stop().await;
}
