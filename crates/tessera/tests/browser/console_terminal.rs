//! The web terminal in Chromium against a real agent: a command typed into
//! xterm.js runs on the device and its output is read off the page; a
//! viewer-role operator watching sees a read-only terminal whose
//! keystrokes never reach the shell.

use std::time::Duration;

use fantoccini::Locator;
use tessera_core::roles::Role;
use tessera_testkit::{read_until, shell_session, watch, AgentProcess, TestDevice, TestServer};

use crate::driver::Browser;

const TERMINAL_TEXT: &str =
    "var r = document.querySelector('#terminal .xterm-rows'); return r ? r.innerText : '';";

async fn terminal_text(b: &Browser) -> String {
    b.exec(TERMINAL_TEXT)
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_terminal(b: &Browser, needle: &str) -> String {
    let mut text = String::new();
    for _ in 0..150 {
        text = terminal_text(b).await;
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the terminal never showed {needle:?}; it shows:\n{text}\npage:\n{}",
        b.text().await
    );
}

async fn type_into_terminal(b: &Browser, keys: &str) {
    b.client
        .find(Locator::Css("#terminal textarea"))
        .await
        .expect("the terminal's input")
        .send_keys(keys)
        .await
        .expect("type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_in_the_web_terminal_and_its_output_shows() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dev = TestDevice::enroll(&server, &admin, "term-box").await;
    let _agent = AgentProcess::start(&server, &dev).await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/devices/{}", server.url, dev.device_id))
        .await;
    b.click_button("Open a terminal").await;
    b.wait_for_text("Connected to term-box").await;
    let url = b.client.current_url().await.expect("url");
    assert!(url.path().ends_with("/terminal"), "{url}");
    assert!(!url.as_str().contains("token"), "no token in the address");
    type_into_terminal(&b, "echo web-$((6*7))\n").await;
    wait_terminal(&b, "web-42").await;

    // The session is listed live, and ending it from the page ends it.
    b.goto(&format!("{}/sessions", server.url)).await;
    b.wait_for_text("term-box").await;
    b.click_button("End session").await;
    // The list's "Ended" heading is there before the click too: wait for
    // the ended row's reason itself.
    b.wait_for_text("ended by admin").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_only_operators_keystrokes_do_nothing() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dev = TestDevice::enroll(&server, &admin, "watched-box").await;
    let _agent = AgentProcess::start(&server, &dev).await;
    server.user(&admin, "vera", Role::Viewer).await;
    let session = shell_session(&admin, &dev.device_id).await;
    let (mut tx, mut rx, access) = watch(&admin, &session).await;
    assert_eq!(access, "control");

    let b = Browser::start().await;
    b.sign_in(&server.url, "vera", "vera-password-123").await;
    b.goto(&format!("{}/sessions", server.url)).await;
    let list = b.wait_for_text("watched-box").await;
    assert!(list.contains("Watch (view only)"), "{list}");
    for control in ["End session", "Open terminal", "Revoke", "Approve"] {
        assert!(
            !list.contains(control),
            "a viewer sees no {control:?}: {list}"
        );
    }
    b.click_link("Watch (view only)").await;
    b.wait_for_text("(view only)").await;
    let page = b.text().await;
    assert!(page.contains("View only: you can watch"), "{page}");

    // What the controller types shows in the viewer's terminal.
    tx.input(b"echo from-$((40+2))-controller\n")
        .await
        .expect("input");
    wait_terminal(&b, "from-42-controller").await;

    // What the viewer types goes nowhere: the page does not send it, and
    // the relay would drop it anyway.
    if let Ok(el) = b.client.find(Locator::Css("#terminal textarea")).await {
        let _ = el.send_keys("echo viewer-$((7*6))-typed\n").await;
    }
    tx.input(b"echo after-$((1+1))-marker\n")
        .await
        .expect("input");
    let seen = read_until(&mut rx, "after-2-marker", Duration::from_secs(10)).await;
    assert!(
        !seen.contains("viewer-42-typed") && !seen.contains("viewer-$((7*6))"),
        "the viewer's keystrokes reached the shell: {seen}"
    );
    let shown = terminal_text(&b).await;
    assert!(!shown.contains("viewer-42-typed"), "{shown}");

    // The server refuses a viewer's attempt to end it, whatever the page shows.
    b.goto(&format!("{}/sessions", server.url)).await;
    let refused = b
        .exec(&format!(
            "var f = document.createElement('form'); f.method = 'post'; f.action = '/sessions/{session}/end';\
             var i = document.createElement('input'); i.name = 'csrf'; i.value = document.querySelector('input[name=csrf]').value;\
             f.appendChild(i); document.body.appendChild(f); f.submit(); return true;"
        ))
        .await;
    assert_eq!(refused, serde_json::json!(true));
    b.wait_for_text("Not done").await;
    let s = admin.session(&session).await.expect("session");
    assert_eq!(s.state, "active", "the viewer could not end it");
    b.close().await;
}
