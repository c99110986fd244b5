//! `/device` in a real browser: `tessera agent enroll` prints a code, an
//! operator signs in on the page, types the code, checks the device and
//! approves it, and the enroll finishes.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use tessera_testkit::{tessera_bin, ServerProcess, TestDb};

use crate::driver::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_a_device_on_the_device_page_in_chromium() {
    let db = TestDb::new().await;
    let server = ServerProcess::spawn(&db.url, "info", &["--pairing-interval", "1s"]).await;
    let pw = server.bootstrap_password().expect("bootstrap password");
    let state_dir = tempfile::tempdir().expect("tempdir");

    let mut enroll = tokio::process::Command::new(tessera_bin())
        .args(["agent", "--state-dir"])
        .arg(state_dir.path().join("agent"))
        .args(["enroll", "--server", &server.url, "--name", "browser-box"])
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

    let b = Browser::start().await;
    // The address the person types: no code in it, so the page asks.
    b.goto(&format!("{}/device", server.url)).await;
    b.wait_for_text("Sign in as an operator").await;

    // A wrong password says so on the page and signs nobody in.
    b.fill("username", "admin").await;
    b.fill("password", "not the password").await;
    b.click_button("Sign in").await;
    let refused = b.wait_for_text("incorrect").await;
    assert!(!refused.contains("cross-site"), "{refused}");

    b.fill("username", "admin").await;
    b.fill("password", &pw).await;
    b.click_button("Sign in").await;
    let signed_in = b.wait_for_text("Signed in as").await;
    assert!(
        !signed_in.contains("cross-site"),
        "the browser's own form post was refused: {signed_in}"
    );

    b.fill("user_code", &code).await;
    b.click_button("Continue").await;
    let details = b.wait_for_text("Approve a device?").await;
    assert!(details.contains("browser-box"), "{details}");
    b.click_button("Approve").await;
    b.wait_for_text("Device approved").await;
    b.close().await;

    let status = tokio::time::timeout(Duration::from_secs(30), enroll.wait())
        .await
        .expect("enroll finished after approval")
        .expect("enroll exit status");
    while let Ok(Some(line)) = lines.next_line().await {
        printed.push_str(&line);
        printed.push('\n');
    }
    assert!(status.success(), "{printed}");
    assert!(printed.contains("Enrolled as device"), "{printed}");
}
