//! A change to an operator's standing reaches their viewers: a role change
//! or a disabled account re-evaluates every open viewer of theirs and
//! refuses the tokens they minted before it; an attended session admits
//! only the technician the person at the device consented to.

use std::time::Duration;

use tessera_agent::consent::ConsentMode;
use tessera_agent::RunOptions;
use tessera_client::viewer::{ViewerEvent, ViewerReceiver};
use tessera_client::{ApiClient, TlsTrust};
use tessera_core::api::{CreateSupportCodeRequest, UpdateUserRequest};
use tessera_core::roles::Role;

use tessera_testkit::{
    eventually, fast_heartbeat, online_device, read_until, shell_session, watch, TestServer,
};

/// The heartbeat the servers here run with, in milliseconds.
const HEARTBEAT_MS: u64 = 300;

async fn set_role(admin: &ApiClient, user: &str, role: Role) {
    admin
        .update_user(
            user,
            &UpdateUserRequest {
                role: Some(role),
                disabled: None,
            },
        )
        .await
        .expect("role changed");
}

/// The code a viewer is told it ended with, within one heartbeat (plus
/// slack for a loaded machine).
async fn ended_within_a_heartbeat(rx: &mut ViewerReceiver) -> String {
    tokio::time::timeout(Duration::from_millis(HEARTBEAT_MS + 1500), async {
        loop {
            match rx.next().await {
                ViewerEvent::Ended { code, .. } => return code,
                ViewerEvent::Closed { code, reason } => return format!("closed {code:?} {reason}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the viewer is told within a heartbeat")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_operators_control_viewer_is_cut_and_their_input_never_reaches_the_shell() {
    let s = TestServer::start_with(fast_heartbeat(HEARTBEAT_MS)).await;
    let admin = s.admin().await;
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let op = s.user(&admin, "otto", Role::Operator).await;
    let (mut op_tx, mut op_rx, access) = watch(&op, &id).await;
    assert_eq!(access, "control");
    let (mut admin_tx, mut admin_rx, _) = watch(&admin, &id).await;

    set_role(&admin, "otto", Role::Viewer).await;
    assert_eq!(ended_within_a_heartbeat(&mut op_rx).await, "role_changed");
    // Whatever the demoted operator still sends reaches nothing.
    let _ = op_tx.input(b"echo DEMOTED-$((5*5))\n").await;
    admin_tx
        .input(b"echo after-$((3+3)); echo done-$((4+4))\n")
        .await
        .unwrap();
    let seen = read_until(&mut admin_rx, "done-8", Duration::from_secs(10)).await;
    assert!(!seen.contains("DEMOTED-25"), "{seen}");
    // As a viewer now, they may watch again, view-only.
    let (_tx, _rx, access) = watch(&op, &id).await;
    assert_eq!(access, "view_only");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_minted_before_a_role_change_are_refused_after_it() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let op = s.user(&admin, "otto", Role::Operator).await;

    // A control token of an operator since made viewer.
    let control = op.viewer_token(&id).await.unwrap();
    assert_eq!(control.access, "control");
    set_role(&admin, "otto", Role::Viewer).await;
    let e = tessera_client::viewer::connect(&op, &id, &control.token)
        .await
        .err()
        .expect("a control token of a viewer is refused");
    assert_eq!(e.code(), Some("forbidden"));

    // Any token minted before a change is refused, even one the new role
    // would allow: it was minted under the old standing.
    let before = op.viewer_token(&id).await.unwrap();
    assert_eq!(before.access, "view_only");
    set_role(&admin, "otto", Role::Operator).await;
    let e = tessera_client::viewer::connect(&op, &id, &before.token)
        .await
        .err()
        .expect("a token minted before the change is refused");
    assert_eq!(e.code(), Some("token_expired"));
    // A token minted after the change works.
    let (_tx, _rx, access) = watch(&op, &id).await;
    assert_eq!(access, "control");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_users_open_viewer_is_closed_with_the_reason() {
    let s = TestServer::start_with(fast_heartbeat(HEARTBEAT_MS)).await;
    let admin = s.admin().await;
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let op = s.user(&admin, "otto", Role::Operator).await;
    let (_tx, mut rx, _) = watch(&op, &id).await;
    admin
        .update_user(
            "otto",
            &UpdateUserRequest {
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .unwrap();
    assert_eq!(ended_within_a_heartbeat(&mut rx).await, "user_disabled");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attended_session_admits_only_the_technician_the_person_consented_to() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let op1 = s.user(&admin, "op1", Role::Operator).await;
    let op2 = s.user(&admin, "op2", Role::Operator).await;
    let code = op1
        .create_support_code(&CreateSupportCodeRequest::default())
        .await
        .unwrap()
        .code
        .expose()
        .to_owned();
    let url = s.url.clone();
    let _agent = tokio::spawn(async move {
        let (creds, bound) =
            tessera_agent::support::bind(&url, &TlsTrust::PublicRoots, &code, None)
                .await
                .expect("bind");
        let opts = RunOptions {
            shell: Some("/bin/sh".into()),
            // The person says yes (to op1, whom the prompt names).
            consent: ConsentMode::Command("/bin/true".into()),
            ..RunOptions::default()
        };
        tessera_agent::support::serve(&creds, &bound, opts, std::future::pending()).await
    });
    assert!(
        eventually(Duration::from_secs(15), || async {
            op1.sessions(false)
                .await
                .unwrap()
                .first()
                .is_some_and(|x| x.state == "active")
        })
        .await
    );
    let id = op1.sessions(false).await.unwrap()[0].id.clone();

    // op2 sees the session (consent was granted) but may not join it.
    let e = op2.viewer_token(&id).await.unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));
    assert!(e.to_string().contains("op1"), "{e}");
    // Nor may an admin: the consent named op1.
    assert_eq!(
        admin.viewer_token(&id).await.unwrap_err().code(),
        Some("forbidden")
    );
    // op1 works in the shell.
    let (mut tx, mut rx, access) = watch(&op1, &id).await;
    assert_eq!(access, "control");
    tx.input(b"echo op1-$((6*7))\n").await.unwrap();
    read_until(&mut rx, "op1-42", Duration::from_secs(10)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_changed_on_another_node_cuts_the_control_viewer_here_within_a_heartbeat() {
    let s = TestServer::start_with(fast_heartbeat(HEARTBEAT_MS)).await;
    let admin = s.admin().await;
    let (_d, _agent) = online_device(&s, &admin, "box").await;
    let id = shell_session(&admin, "box").await;
    let op = s.user(&admin, "otto", Role::Operator).await;
    let vic = s.user(&admin, "vic", Role::Operator).await;
    let (_tx, mut rx, _) = watch(&op, &id).await;
    let (_vtx, mut vic_rx, _) = watch(&vic, &id).await;
    // Another node changed the role: only the shared database knows, so
    // this node's relay sweep must notice.
    sqlx::query("UPDATE users SET role = 'viewer' WHERE username = 'otto'")
        .execute(s.state.db().pool())
        .await
        .unwrap();
    sqlx::query("UPDATE users SET disabled_at = 1 WHERE username = 'vic'")
        .execute(s.state.db().pool())
        .await
        .unwrap();
    assert_eq!(ended_within_a_heartbeat(&mut rx).await, "role_changed");
    assert_eq!(ended_within_a_heartbeat(&mut vic_rx).await, "user_disabled");
    s.stop().await;
}
