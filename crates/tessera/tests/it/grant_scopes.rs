//! Grant scopes hold for the whole session, not only when joining: a member
//! that granted `shell` takes no file from a creator that pushes one
//! anyway (issue 12, finding 7). The creator here is the library's
//! `AutoSession`, the way a modified `tessera` would drive it: the CLI's
//! `send` only ever opens a `files` session.

use std::path::Path;
use std::time::Duration;

use tessera_agent::auto::AutoSession;
use tessera_agent::control::Credentials;
use tessera_agent::trust::{self, TrustStore};
use tessera_client::{ApiClient, AuditQuery};
use tessera_core::trust::Scope;

use tessera_testkit::{eventually, AgentProcess, TestDevice, TestServer};

const DAY: Duration = Duration::from_secs(86_400);

fn creds(d: &TestDevice) -> Credentials {
    Credentials::load(&d.state).expect("credentials")
}

/// Both devices verify each other (the test compares the SAS).
async fn trust_both(a: &TestDevice, b: &TestDevice) {
    let (ca, cb) = (creds(a), creds(b));
    let (xa, xb) = tokio::join!(
        trust::exchange(&ca, &b.device_id),
        trust::exchange(&cb, &a.device_id)
    );
    let (xa, xb) = (xa.expect("exchange a"), xb.expect("exchange b"));
    assert_eq!(xa.sas, xb.sas);
    trust::confirm(&a.state, &ca, &xa, "peer")
        .await
        .expect("confirm a");
    trust::confirm(&b.state, &cb, &xb, "peer")
        .await
        .expect("confirm b");
}

async fn grant(granter: &TestDevice, grantee: &TestDevice, scopes: &[Scope]) {
    trust::grant(
        &granter.state,
        &creds(granter),
        &grantee.device_id,
        scopes,
        30 * DAY,
    )
    .await
    .expect("grant");
}

async fn create(a: &TestDevice, members: &[&str], scope: Scope) -> AutoSession {
    let store = TrustStore::load(&a.state).expect("trust store");
    let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    AutoSession::create(&creds(a), &store, &members, scope, false)
        .await
        .expect("session request answered")
}

/// Everything in a member's inbox, partial files included.
fn inbox_entries(d: &TestDevice) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            out.push(e.path().display().to_string());
            if e.path().is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&d.inbox(), &mut out);
    out
}

/// The reasons members gave for leaving, by member.
async fn left_reasons(admin: &ApiClient, member: &str) -> Vec<String> {
    admin
        .audit_page(&AuditQuery {
            action: Some("auto_member_left".to_owned()),
            limit: Some(100),
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .entries
        .into_iter()
        .filter(|r| r.details["member"] == member)
        .filter_map(|r| r.details["reason"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_granted_shell_takes_no_file_pushed_in_a_shell_session() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    // B granted shell only; C granted both, but is invited to a shell session.
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    let c = TestDevice::enroll(&s, &admin, "charlie").await;
    trust_both(&a, &b).await;
    trust_both(&a, &c).await;
    grant(&b, &a, &[Scope::Shell]).await;
    grant(&c, &a, &[Scope::Files, Scope::Shell]).await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    let _agent_c = AgentProcess::start(&s, &c).await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("pushed.txt");
    std::fs::write(&file, b"a file nobody agreed to take".repeat(100)).unwrap();
    let items = tessera_agent::files::walk(&[file]).unwrap();

    let mut session = create(&a, &[&b.device_id, &c.device_id], Scope::Shell).await;
    let mut both = vec![b.device_id.clone(), c.device_id.clone()];
    both.sort();
    assert_eq!(session.joined(), both, "both join a shell session");
    // Text is what a shell session carries: nobody leaves over it.
    session.send_text("hello").await.unwrap();
    let err = session
        .send_files(&items, |_| {})
        .await
        .expect_err("the members refuse the transfer");
    assert!(
        err.to_string().contains("left the session: scope_missing"),
        "the sender sees why: {err}"
    );
    for member in [&b, &c] {
        let id = member.device_id.as_str();
        assert!(
            eventually(Duration::from_secs(10), || async {
                left_reasons(&admin, id).await.iter().any(|r| {
                    r.starts_with("scope_missing: a file_start payload needs the files scope")
                })
            })
            .await,
            "{id} leaves with the reason: {:?}",
            left_reasons(&admin, id).await
        );
    }
    session.end().await;
    assert!(inbox_entries(&b).is_empty(), "{:?}", inbox_entries(&b));
    assert!(inbox_entries(&c).is_empty(), "{:?}", inbox_entries(&c));

    // The same file in a files session C granted is taken: the refusal was
    // the scope, not the file.
    let mut files = create(&a, &[&c.device_id], Scope::Files).await;
    assert_eq!(files.joined(), vec![c.device_id.clone()]);
    files.send_files(&items, |_| {}).await.expect("c takes it");
    files.end().await;
    assert!(c.inbox().join("pushed.txt").is_file());
    s.stop().await;
}
