//! Devices in the console, in Chromium, with real agents: a pairing
//! started by `tessera agent enroll` approved on the Pairings page, the
//! device coming online while the page stays put, and a revocation seen
//! live in the list.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use tessera_testkit::{tessera_bin, ServerProcess, TestDb};

use crate::driver::Browser;

/// Marks the page; a reload (or any navigation) clears the mark.
const MARK: &str = "window.__stayed = true; return true;";
const STAYED: &str = "return window.__stayed === true;";

fn presence_is(id: &str, state: &str) -> String {
    format!(
        "var e = document.querySelector('[data-presence=\"{id}\"]'); return !!e && e.textContent.trim() === '{state}';"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairing_approved_in_the_console_comes_online_and_a_revocation_shows_live() {
    let db = TestDb::new().await;
    let server = ServerProcess::spawn(&db.url, "info", &["--pairing-interval", "1s"]).await;
    let pw = server.bootstrap_password().expect("bootstrap password");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = state_dir.path().join("agent");

    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/pairings", server.url)).await;
    b.wait_for_text("No device is waiting for approval").await;

    let mut enroll = tokio::process::Command::new(tessera_bin())
        .args(["agent", "--state-dir"])
        .arg(&agent_dir)
        .args(["enroll", "--server", &server.url, "--name", "console-box"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn enroll");
    let mut lines = BufReader::new(enroll.stdout.take().expect("stdout")).lines();
    let mut printed = String::new();
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(at) = line.find("user_code=") {
                return line[at + 10..].trim_end_matches(").").to_owned();
            }
        }
        panic!("no code in: {printed}");
    })
    .await
    .expect("enroll printed a code");

    b.click_link("Refresh the list").await;
    let text = b.wait_for_text("console-box").await;
    assert!(
        text.contains(&code.to_uppercase()) || text.contains(&code),
        "the code {code} is shown: {text}"
    );
    b.click_button("Approve console-box").await;
    let text = b.wait_for_text("Device approved").await;
    assert!(text.contains("offline"), "{text}");
    b.exec(MARK).await;

    let status = tokio::time::timeout(Duration::from_secs(30), enroll.wait())
        .await
        .expect("enroll finished after approval")
        .expect("enroll exit status");
    assert!(status.success(), "{printed}");
    let _agent = tokio::process::Command::new(tessera_bin())
        .args(["agent", "run", "--state-dir"])
        .arg(&agent_dir)
        .env("TESSERA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent run");

    // The approval page's badge turns "online" by itself.
    let login = server
        .client()
        .login("admin", tessera_core::api::SecretString::new(pw.as_str()))
        .await
        .expect("login");
    let admin = server.client().with_token(login.token);
    let id = admin.list_devices().await.expect("devices")[0].id.clone();
    b.wait_until("the device shows online", &presence_is(&id, "online"))
        .await;
    assert_eq!(b.exec(STAYED).await, serde_json::json!(true), "no reload");

    // The list shows it online; revoking it elsewhere flips it live.
    b.goto(&format!("{}/devices", server.url)).await;
    let text = b.wait_for_text("console-box").await;
    assert!(text.contains("online"), "{text}");
    b.exec(MARK).await;
    admin
        .revoke_device(&id, Some("lost in the test".to_owned()))
        .await
        .expect("revoke");
    b.wait_until("the device shows revoked", &presence_is(&id, "revoked"))
        .await;
    assert_eq!(b.exec(STAYED).await, serde_json::json!(true), "no reload");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_revokes_a_device_after_confirming() {
    let server = tessera_testkit::TestServer::start().await;
    let admin = server.admin().await;
    let dev = tessera_testkit::TestDevice::enroll(&server, &admin, "doomed-box").await;
    let _agent = tessera_testkit::AgentProcess::start(&server, &dev).await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/devices", server.url)).await;
    b.click_link("doomed-box").await;
    b.wait_until(
        "the device page shows online",
        &presence_is(&dev.device_id, "online"),
    )
    .await;
    b.click_link("Revoke this device…").await;
    b.wait_for_text("This cannot be undone").await;
    b.fill("reason", "retired").await;
    b.click_button("Revoke doomed-box").await;
    let text = b.wait_for_text("Revoked").await;
    assert!(text.contains("retired"), "{text}");
    let d = admin.device(&dev.device_id).await.expect("device");
    assert!(d.revoked);
    assert!(
        tessera_testkit::eventually(Duration::from_secs(5), || async {
            !server.state.registry().is_connected(&dev.device_id)
        })
        .await,
        "the revoked device was cut off"
    );
    // The audit page shows the revocation, and the chain verifies.
    b.goto(&format!("{}/audit?action=device_revoked", server.url))
        .await;
    b.wait_for_text("device_revoked").await;
    b.click_button("Verify chain").await;
    b.wait_for_text("The chain verifies").await;
    b.close().await;
}

/// Inserts `n` devices `box-000`… straight into the server's database.
async fn seed_devices(server: &tessera_testkit::TestServer, n: usize) {
    let pool = server.state.db().pool();
    let owner: String = sqlx::query_scalar("SELECT id FROM users WHERE username = 'admin'")
        .fetch_one(pool)
        .await
        .expect("admin");
    for i in 0..n {
        let keys = tessera_core::identity::DeviceKeys::generate();
        sqlx::query(
            "INSERT INTO devices (id, tenant_id, ed25519_public, x25519_public, identity_signature, \
             name, hostname, os, enrolled_via, enrolled_by, owner_user_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'host.lan', 'linux', 'pairing', $7, $7, 0)",
        )
        .bind(keys.device_id().as_str().to_owned())
        .bind(tessera_server::tenancy::BOOTSTRAP_TENANT)
        .bind(keys.ed25519_public().to_vec())
        .bind(keys.x25519_public().to_vec())
        .bind(vec![0u8; 64])
        .bind(format!("box-{i:03}"))
        .bind(&owner)
        .execute(pool)
        .await
        .expect("insert device");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pages_and_searches_the_device_list() {
    let server = tessera_testkit::TestServer::start().await;
    seed_devices(&server, 60).await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/devices", server.url)).await;
    let text = b.wait_for_text("Page 1 of 2").await;
    assert!(
        text.contains("box-049") && !text.contains("box-050"),
        "{text}"
    );
    b.click_link("Next →").await;
    let text = b.wait_for_text("Page 2 of 2").await;
    assert!(
        text.contains("box-059") && !text.contains("box-049"),
        "{text}"
    );
    b.click_link("← Previous").await;
    b.wait_for_text("Page 1 of 2").await;
    // Typing narrows the list in place (htmx), the pager goes away.
    b.fill("q", "box-05").await;
    let text = b.wait_for_text("10 of 60 devices").await;
    assert!(!text.contains("Page 1 of"), "{text}");
    b.fill("q", "%").await;
    b.wait_for_text("No device matches this search.").await;
    b.close().await;
}
