//! Support codes in Chromium: a technician creates one (shown once), the
//! person runs `tessera agent support` with it in a real terminal, and the
//! page follows waiting → awaiting consent → live by itself; the grants
//! page lists what there is.

use std::time::Duration;

use tessera_testkit::{Terminal, TestServer};

use crate::driver::Browser;

const LIMIT: Duration = Duration::from_secs(20);

fn stage_is(stage: &str) -> String {
    format!(
        "var e = document.querySelector('[data-stage]'); return !!e && e.getAttribute('data-stage') === '{stage}';"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_code_goes_through_consent_on_the_page_by_itself() {
    let server = TestServer::start().await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/support", server.url)).await;
    b.wait_for_text("You have not created any support codes")
        .await;
    b.click_button("Create support code").await;
    b.wait_for_text("It is shown only this once").await;
    let code = b
        .exec("return document.getElementById('new-secret').textContent;")
        .await
        .as_str()
        .expect("code")
        .trim()
        .to_owned();
    assert_eq!(code.len(), 11, "{code}");
    b.wait_until("waiting", &stage_is("waiting")).await;
    b.exec("window.__stayed = true; return true;").await;

    let mut term = Terminal::spawn(
        &[
            "agent",
            "support",
            "--server",
            &server.url,
            "--code",
            &code,
            "--shell",
            "/bin/sh",
        ],
        &[("USER", "bob"), ("PS1", "$ ")],
    );
    term.wait_for("[y/N]", LIMIT).await;
    b.wait_until("awaiting consent", &stage_is("awaitingconsent"))
        .await;
    term.type_bytes(b"y\r");
    b.wait_until("live", &stage_is("live")).await;
    assert_eq!(
        b.exec("return window.__stayed === true;").await,
        serde_json::json!(true),
        "the page followed by itself"
    );
    // Reloaded, the code itself is gone for good.
    b.goto(&format!("{}/support", server.url)).await;
    let text = b.wait_for_text("Your codes").await;
    assert!(!text.contains(&code), "the code is shown once: {text}");
    b.click_link("Open terminal").await;
    b.wait_for_text("Connected to").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grants_page_says_when_there_are_none() {
    let server = TestServer::start().await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/grants", server.url)).await;
    b.wait_for_text("No grants yet").await;
    b.close().await;
}
