//! `tessera session shell PEER` (issue 17, item 8): a shell on a trusted
//! peer that granted `shell`, end to end encrypted, driven through a real
//! pseudo-terminal with a real `tessera agent run` on the peer: typing,
//! resizing, Ctrl-] (and the shell with all it started is gone), the exit
//! status of a shell that exits, a peer that granted only `files`, and a
//! relay that never sees what was typed or printed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_core::trust::Scope;
use tessera_proto::Body;
use tessera_testkit::{device_cmd, eventually, AgentProcess, Terminal, TestDevice, TestServer};

use crate::trusted::{audit, create, grant, trust_both, DAY};

const SHOWS: Duration = Duration::from_secs(30);

/// Every body the relay routes from now on, as its debug text (bytes are
/// shown as escaped ASCII, so plaintext would be readable in it).
fn routed(s: &TestServer) -> Arc<Mutex<Vec<String>>> {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    s.state.set_relay_tap(Some(Arc::new(move |b: &mut Body| {
        sink.lock().unwrap().push(format!("{b:?}"));
    })));
    seen
}

/// Processes whose terminal session is `sid` (field 6 of /proc/PID/stat).
fn in_session(sid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if rest.split_whitespace().nth(3).and_then(|s| s.parse().ok()) == Some(sid) {
            out.push(pid);
        }
    }
    out
}

/// The number printed after `marker` (the first one followed by a digit).
fn number_after(text: &str, marker: &str) -> Option<u32> {
    text.match_indices(marker).find_map(|(at, _)| {
        let digits: String = text[at + marker.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

fn shell_in(a: &TestDevice, b: &TestDevice) -> Terminal {
    let dir = a.dir().to_str().unwrap().to_owned();
    Terminal::spawn(
        &["session", "shell", &b.device_id],
        &[("TESSERA_AGENT_STATE_DIR", &dir), ("TESSERA_LOG", "warn")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_on_a_trusted_peer_is_end_to_end_resizes_and_dies_with_the_session() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Shell], 30 * DAY).await;
    let agent_b = AgentProcess::start(&s, &b).await;
    let seen = routed(&s);

    let mut term = shell_in(&a, &b);
    let shown = term.wait_for("Ctrl-] disconnects", SHOWS).await;
    let session_id = shown
        .split("(session ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("the session id is shown")
        .to_owned();
    term.type_bytes(b"echo pid-$$; sleep 3917 &\r");
    assert!(
        eventually(SHOWS, || {
            let shown = number_after(&term.output(), "pid-").is_some();
            async move { shown }
        })
        .await,
        "{}",
        term.output()
    );
    let shell = number_after(&term.output(), "pid-").expect("the shell's pid");
    assert!(
        eventually(SHOWS, || async { in_session(shell).len() >= 2 }).await,
        "the shell and its background job run on the peer"
    );
    term.type_bytes(b"echo hi-$((40+2))\r");
    term.wait_for("hi-42", SHOWS).await;
    term.resize(33, 101);
    tokio::time::sleep(Duration::from_millis(300)).await;
    term.type_bytes(b"stty size\r");
    term.wait_for("33 101", SHOWS).await;

    term.type_bytes(b"\x1d");
    assert_eq!(term.exit_code(SHOWS).await, Some(0), "{}", term.output());
    assert!(term.output().contains("disconnected (Ctrl-])"));
    assert!(
        eventually(SHOWS, || async { in_session(shell).is_empty() }).await,
        "the shell and everything it started are gone: {:?}",
        in_session(shell)
    );

    // The relay carried sealed payloads only.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|b| b.starts_with("E2eData")), "{seen:?}");
    for b in &seen {
        for plain in ["hi-42", "40+2", "stty size", "sleep 3917"] {
            assert!(!b.contains(plain), "the relay saw {plain:?}: {b}");
        }
    }
    assert!(!agent_b.log().contains("hi-42"), "nothing typed is logged");

    // Audited like any session: created with its scope, and ended.
    let target = format!("session:{session_id}");
    assert!(
        audit(&admin, "auto_session_created")
            .await
            .iter()
            .any(|r| r.target.as_deref() == Some(&target) && r.details["scope"] == "shell"),
        "created"
    );
    assert!(
        eventually(SHOWS, || async {
            audit(&admin, "session_ended")
                .await
                .iter()
                .any(|r| r.target.as_deref() == Some(target.as_str()))
        })
        .await,
        "ended"
    );

    // A shell that exits ends the session with its status.
    let mut term = shell_in(&a, &b);
    term.wait_for("Ctrl-] disconnects", SHOWS).await;
    term.type_bytes(b"exit 3\r");
    term.wait_for("the remote shell exited with status 3", SHOWS)
        .await;
    assert_eq!(term.exit_code(SHOWS).await, Some(3), "{}", term.output());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_granted_only_files_opens_no_shell() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let agent_b = AgentProcess::start(&s, &b).await;

    let (code, out, err) = device_cmd(&a, &["session", "shell", &b.device_id], None).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("refused the shell (scope_missing)") && err.contains("--scope shell"),
        "a clear message: {err}"
    );

    // A creator that opens a files session and pushes a shell anyway (a
    // modified `tessera`) gets none: the member leaves before acting.
    let mut session = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(session.joined(), vec![b.device_id.clone()]);
    session.open_shell(80, 24).await.unwrap();
    let member = b.device_id.clone();
    assert!(
        eventually(SHOWS, || async {
            audit(&admin, "auto_member_left").await.iter().any(|r| {
                r.details["member"] == member.as_str()
                    && r.details["reason"].as_str().is_some_and(|w| {
                        w.starts_with("scope_missing: a pty_open payload needs the shell scope")
                    })
            })
        })
        .await,
        "the member leaves with the reason; log: {}",
        agent_b.log()
    );
    assert!(
        !agent_b.log().contains("shell started"),
        "{}",
        agent_b.log()
    );
    session.end().await;
    s.stop().await;
}
