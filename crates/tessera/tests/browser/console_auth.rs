//! The console's own safety in Chromium: signing in and out, the CSP on
//! every page, nothing loaded from anywhere but the server, and forms
//! refused without their CSRF token.

use tessera_core::roles::Role;
use tessera_testkit::{TestDevice, TestServer};

use crate::driver::Browser;

/// Every page of the console an admin can open (the device page of `dev`).
fn pages(dev: &str) -> Vec<String> {
    [
        "/",
        "/devices",
        "/pairings",
        "/enrollment",
        "/sessions",
        "/support",
        "/grants",
        "/audit",
        "/users",
        "/account/password",
        "/device",
    ]
    .iter()
    .map(|p| p.to_string())
    .chain([format!("/devices/{dev}"), format!("/devices/{dev}/revoke")])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_and_out_of_the_console() {
    let server = TestServer::start().await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;

    // Not signed in: any page leads to the sign-in form, and back after.
    b.goto(&format!("{}/devices", server.url)).await;
    b.wait_for_text("Sign in to Tessera").await;
    b.fill("username", "admin").await;
    b.fill("password", "not the password").await;
    b.click_button("Sign in").await;
    b.wait_for_text("The username or password is incorrect")
        .await;

    b.fill("username", "admin").await;
    b.fill("password", &pw).await;
    b.click_button("Sign in").await;
    let text = b.wait_for_text("No devices yet").await;
    assert!(text.contains("admin (admin)"), "{text}");
    let url = b.client.current_url().await.expect("url");
    assert_eq!(url.path(), "/devices", "came back to the page asked for");

    // The cookie is HttpOnly: the page's scripts cannot read it.
    let cookie = b.exec("return document.cookie;").await;
    assert_eq!(
        cookie,
        serde_json::json!(""),
        "the session cookie is HttpOnly"
    );

    b.click_button("Sign out").await;
    b.wait_for_text("Sign in to Tessera").await;
    b.goto(&format!("{}/", server.url)).await;
    b.wait_for_text("Sign in to Tessera").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_ends_their_console_session() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    server.user(&admin, "olga", Role::Operator).await;
    let b = Browser::start().await;
    b.sign_in(&server.url, "olga", "olga-password-123").await;
    admin
        .update_user(
            "olga",
            &tessera_core::api::UpdateUserRequest {
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .expect("disable");
    b.goto(&format!("{}/devices", server.url)).await;
    b.wait_for_text("Sign in to Tessera").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_has_the_csp_and_loads_nothing_from_elsewhere() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dev = TestDevice::enroll(&server, &admin, "csp-box").await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    let origin = format!("{}/", server.url);
    // The sign-in page first (signed in, it redirects), then every page.
    for (i, path) in ["/login".to_owned()]
        .iter()
        .chain(pages(&dev.device_id).iter())
        .enumerate()
    {
        if i == 1 {
            b.sign_in(&server.url, "admin", &pw).await;
        }
        b.goto(&format!("{}{path}", server.url)).await;
        // Scripts ran and settled (the local-time rewrite is one of them).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for url in b.loaded_urls().await {
            assert!(
                url.starts_with(&origin),
                "{path} loaded {url}, which is not on this server"
            );
        }
        let (status, csp) = b.fetch_header(path, "content-security-policy").await;
        assert_eq!(status, 200, "{path}");
        let csp = csp.unwrap_or_else(|| panic!("{path} has no CSP header"));
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    }
    // The terminal's vendored files are on the server too, cached for good.
    let css = b
        .exec("return document.querySelector('link[rel=stylesheet]').getAttribute('href');")
        .await;
    let css = css.as_str().expect("a stylesheet").to_owned();
    let (status, cache) = b.fetch_header(&css, "cache-control").await;
    assert_eq!(status, 200);
    assert!(cache.unwrap_or_default().contains("immutable"));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let pw = server.admin_password.clone().expect("admin password");
    let b = Browser::start().await;
    b.sign_in(&server.url, "admin", &pw).await;

    for (what, script) in [
        (
            "forged",
            "document.querySelectorAll('input[name=csrf]').forEach(function (i) { i.value = 'forged'; }); return true;",
        ),
        (
            "missing",
            "document.querySelectorAll('input[name=csrf]').forEach(function (i) { i.remove(); }); return true;",
        ),
    ] {
        b.goto(&format!("{}/enrollment", server.url)).await;
        b.wait_for_text("Create a token").await;
        b.exec(script).await;
        b.click_button("Create token").await;
        let text = b.wait_for_text("security token is missing or wrong").await;
        assert!(!text.contains("shown only this once"), "{what}: {text}");
        assert!(
            admin.enrollment_tokens().await.expect("tokens").is_empty(),
            "a {what} CSRF token created nothing"
        );
    }
    // With the page's own token, the same form works, and the secret is
    // shown once, never in the address.
    b.goto(&format!("{}/enrollment", server.url)).await;
    b.click_button("Create token").await;
    let text = b.wait_for_text("shown only this once").await;
    let secret = b
        .exec("return document.getElementById('new-secret').textContent;")
        .await;
    let secret = secret.as_str().expect("secret").to_owned();
    assert!(secret.starts_with("etk_"), "{secret}");
    assert!(text.contains("Copy"), "the copy button is shown: {text}");
    let url = b.client.current_url().await.expect("url");
    assert!(!url.as_str().contains(&secret));
    assert_eq!(admin.enrollment_tokens().await.expect("tokens").len(), 1);
    b.goto(&format!("{}/enrollment", server.url)).await;
    let again = b.wait_for_text("Tokens").await;
    assert!(!again.contains(&secret), "the secret is shown once only");
    b.close().await;
}
