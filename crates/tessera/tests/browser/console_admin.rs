//! Administration in Chromium: users (a generated password shown once,
//! roles, disabling), a device's new key shown once, and every main page
//! readable at 1280 and at 390 pixels wide. With `TESSERA_SCREENSHOTS=<dir>`
//! the pages are also saved there as PNGs (`scripts/screenshots.sh`).

use std::path::PathBuf;

use tessera_testkit::{AgentProcess, TestDevice, TestServer};

use crate::driver::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_user_who_signs_in_with_the_password_shown_once() {
    let server = TestServer::start().await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/users", server.url)).await;
    b.fill("username", "wendy").await;
    b.exec("document.querySelector('form[action=\"/users\"] select[name=role]').value = 'viewer'; return true;")
        .await;
    b.click_button("Add user").await;
    b.wait_for_text("shown only this once").await;
    let generated = b
        .exec("return document.getElementById('new-secret').textContent;")
        .await
        .as_str()
        .expect("password")
        .to_owned();
    assert!(generated.len() >= 12, "{generated}");
    b.goto(&format!("{}/users", server.url)).await;
    let text = b.wait_for_text("wendy").await;
    assert!(!text.contains(&generated), "shown once only");

    b.click_button("Sign out").await;
    b.wait_for_text("Sign in to Tessera").await;
    b.sign_in(&server.url, "wendy", &generated).await;
    let text = b.text().await;
    assert!(text.contains("wendy (viewer)"), "{text}");
    for hidden in ["Users", "Pairings", "Enrollment", "Support codes", "Audit"] {
        assert!(
            !text.lines().any(|l| l.trim() == hidden),
            "a viewer has no {hidden} entry: {text}"
        );
    }
    // Typed in by hand, the admin pages refuse a viewer on the server.
    b.goto(&format!("{}/users", server.url)).await;
    b.wait_for_text("Your role does not allow this").await;
    b.goto(&format!("{}/enrollment", server.url)).await;
    b.wait_for_text("Your role does not allow this").await;
    b.close().await;

    // Disabled by the admin, she is signed out everywhere at once.
    let admin = server.admin().await;
    admin
        .update_user(
            "wendy",
            &tessera_core::api::UpdateUserRequest {
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .expect("disable");
    let err = server
        .client()
        .login(
            "wendy",
            tessera_core::api::SecretString::new(generated.as_str()),
        )
        .await;
    assert!(err.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_key_is_shown_once_on_the_device_page() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dev = TestDevice::enroll(&server, &admin, "keyed-box").await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    b.goto(&format!("{}/devices/{}", server.url, dev.device_id))
        .await;
    b.click_button("Issue a new key").await;
    b.wait_for_text("shown only this once").await;
    let key = b
        .exec("return document.getElementById('new-secret').textContent;")
        .await
        .as_str()
        .expect("key")
        .to_owned();
    assert!(key.starts_with("cak_"), "{key}");
    assert_eq!(
        admin.device_keys(&dev.device_id).await.expect("keys").len(),
        2
    );
    b.goto(&format!("{}/devices/{}", server.url, dev.device_id))
        .await;
    let text = b.wait_for_text("Keys").await;
    assert!(!text.contains(&key));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_pages_read_at_1280_and_390_pixels() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dev = TestDevice::enroll(&server, &admin, "laptop-of-ada").await;
    let _agent = AgentProcess::start(&server, &dev).await;
    TestDevice::enroll(&server, &admin, "build-server-07").await;
    let pw = server.admin_password.clone().expect("admin password");
    let shots = std::env::var_os("TESSERA_SCREENSHOTS").map(PathBuf::from);
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;
    let session = tessera_testkit::shell_session(&admin, &dev.device_id).await;
    let pages = [
        ("overview", "/".to_owned()),
        ("devices", "/devices".to_owned()),
        ("device", format!("/devices/{}", dev.device_id)),
        ("sessions", "/sessions".to_owned()),
        ("terminal", format!("/sessions/{session}/terminal")),
        ("audit", "/audit".to_owned()),
        ("users", "/users".to_owned()),
    ];
    for (width, height) in [(1280u32, 900u32), (390, 844)] {
        b.client
            .set_window_size(width, height)
            .await
            .expect("window size");
        for (name, path) in &pages {
            b.goto(&format!("{}{path}", server.url)).await;
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            let fits = b
                .exec("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
                .await;
            if fits != serde_json::json!(true) {
                let wide = b
                    .exec(
                        "return Array.from(document.querySelectorAll('body *')).filter(function (e) {\
                           return e.getBoundingClientRect().right > window.innerWidth + 1 && !(e.parentElement && e.parentElement.closest('.scroll'));\
                         }).map(function (e) { return e.tagName + '.' + e.className; }).slice(0, 10);",
                    )
                    .await;
                panic!("{path} scrolls sideways at {width} px; too wide: {wide}");
            }
            if let Some(dir) = &shots {
                std::fs::create_dir_all(dir).expect("screenshot dir");
                let png = b.client.screenshot().await.expect("screenshot");
                std::fs::write(dir.join(format!("{name}-{width}.png")), png).expect("write png");
            }
        }
    }
    b.close().await;
}
