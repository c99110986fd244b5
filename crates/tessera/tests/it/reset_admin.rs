//! `tessera server reset-admin`: a lost administrator password is replaced
//! offline, from the server's own database, audited, printed once.

use std::process::Command;

use tessera_core::api::SecretString;
use tessera_testkit::{tessera_bin, TestServer};

/// Runs `tessera server reset-admin ARGS`; exit code and all output.
fn reset_admin(args: &[&str]) -> (i32, String) {
    let out = Command::new(tessera_bin())
        .args(["server", "reset-admin"])
        .args(args)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_DATA_DIR")
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_admin_password_is_reset_offline_audited_and_the_old_sessions_end() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let old = s.admin_password.clone().unwrap();
    let (code, out) = reset_admin(&["--database-url", &s.database_url]);
    assert_eq!(code, 0, "{out}");
    let new = out
        .lines()
        .find_map(|l| l.strip_prefix("New password for admin: "))
        .expect("the new password, once")
        .trim()
        .to_owned();
    assert!(out.contains("session(s) of the account ended"), "{out}");

    // The old password and the old sign-in no longer work; the new one does.
    assert!(admin.whoami().await.is_err(), "the old session ended");
    let c = s.client();
    assert!(c.login("admin", SecretString::new(old)).await.is_err());
    let again = s.login("admin", &new).await;
    let rows = again
        .audit_page(&tessera_client::AuditQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries;
    let reset = rows
        .iter()
        .find(|r| r.action == "admin_password_reset")
        .expect("audited");
    assert_eq!(reset.actor, "system");
    assert_eq!(reset.details["via"], "reset-admin");
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains(&new), "the password is in no audit row");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_admin_refuses_a_missing_database_and_a_user_who_is_not_an_admin() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    let (code, out) = reset_admin(&["--data-dir", dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no Tessera database at"), "{out}");
    assert!(
        !empty.path().join("tessera.db").exists(),
        "no empty database is created where the operator mistyped"
    );

    let s = TestServer::start().await;
    let (code, out) = reset_admin(&["--database-url", &s.database_url, "--username", "nobody"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no user named `nobody`"), "{out}");
    s.stop().await;
}
