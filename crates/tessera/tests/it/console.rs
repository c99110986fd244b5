//! The web console over plain HTTP (no browser): its cookie, and the
//! refusals that must hold whatever a page's script does — cross-site
//! posts, missing or forged CSRF tokens, a viewer posting a control form,
//! and the web terminal's token endpoint.

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use tessera_core::roles::Role;
use tessera_testkit::{shell_session, AgentProcess, TestDevice, TestServer};

fn no_redirects() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in through the console's form; returns the `Cookie` header value.
async fn sign_in(s: &TestServer, user: &str, password: &str) -> String {
    let resp = no_redirects()
        .post(format!("{}/login", s.url))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", user), ("password", password), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "no TLS here: {set}");
    set.split(';').next().unwrap().to_owned()
}

async fn csrf(s: &TestServer, cookie: &str) -> String {
    let html = no_redirects()
        .get(format!("{}/", s.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = html.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    html[at..at + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_forms_are_refused_cross_site_without_csrf_and_beyond_the_role() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let dev = TestDevice::enroll(&s, &admin, "form-box").await;
    let pw = s.admin_password.clone().unwrap();
    let cookie = sign_in(&s, "admin", &pw).await;
    let token = csrf(&s, &cookie).await;
    let http = no_redirects();
    let revoke = format!("{}/devices/{}/revoke", s.url, dev.device_id);
    let post = |site: &'static str, csrf: Option<String>| {
        let mut form = vec![("reason", "test".to_owned())];
        if let Some(c) = csrf {
            form.push(("csrf", c));
        }
        http.post(&revoke)
            .header(COOKIE, &cookie)
            .header("sec-fetch-site", site)
            .form(&form)
    };
    for (what, req) in [
        ("cross-site", post("cross-site", Some(token.clone()))),
        ("no token", post("same-origin", None)),
        ("forged token", post("same-origin", Some("0".repeat(64)))),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{what}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(
            !admin.device(&dev.device_id).await.unwrap().revoked,
            "{what}"
        );
    }

    // A viewer with a valid session and token is refused by the same check
    // as the API.
    s.user(&admin, "vic", Role::Viewer).await;
    let vcookie = sign_in(&s, "vic", "vic-password-123").await;
    let vtoken = csrf(&s, &vcookie).await;
    let resp = http
        .post(&revoke)
        .header(COOKIE, &vcookie)
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", vtoken.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await.unwrap().contains("manage_devices"));
    assert!(!admin.device(&dev.device_id).await.unwrap().revoked);

    // The admin's own form does it, audited like the API.
    let resp = post("same-origin", Some(token)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(admin.device(&dev.device_id).await.unwrap().revoked);

    // Signed out, the cookie opens nothing (the login itself is ended).
    let resp = http
        .post(format!("{}/logout", s.url))
        .header(COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", csrf(&s, &cookie).await)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = http
        .get(format!("{}/devices", s.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(resp.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_terminals_token_needs_the_cookie_the_page_token_and_this_site() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let dev = TestDevice::enroll(&s, &admin, "tok-box").await;
    let _agent = AgentProcess::start(&s, &dev).await;
    let session = shell_session(&admin, &dev.device_id).await;
    let pw = s.admin_password.clone().unwrap();
    let cookie = sign_in(&s, "admin", &pw).await;
    let token = csrf(&s, &cookie).await;
    let http = no_redirects();
    let url = format!("{}/sessions/{session}/viewer-token", s.url);
    let ask = |cookie: Option<&str>, site: &'static str, csrf: Option<&str>| {
        let mut r = http.post(&url).header("sec-fetch-site", site);
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        r
    };
    for (what, req, status) in [
        (
            "no cookie",
            ask(None, "same-origin", Some(&token)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no token",
            ask(Some(&cookie), "same-origin", None),
            StatusCode::FORBIDDEN,
        ),
        (
            "cross-site",
            ask(Some(&cookie), "cross-site", Some(&token)),
            StatusCode::FORBIDDEN,
        ),
    ] {
        assert_eq!(req.send().await.unwrap().status(), status, "{what}");
    }
    let resp = ask(Some(&cookie), "same-origin", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["access"], "control");
    // The token opens the viewer socket offered as a subprotocol.
    let viewer_token = body["token"].as_str().unwrap().to_owned();
    let ws_url = format!(
        "{}/ws/viewer?session={session}",
        s.url.replacen("http", "ws", 1)
    );
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("tessera.viewer, tessera.token.{viewer_token}")
            .parse()
            .unwrap(),
    );
    let (_ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the viewer socket opens");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "tessera.viewer");
}

/// A screen session is offered as a screen, not as a terminal: its
/// terminal page refuses and points at its screen page (and `tessera
/// view`); a shell session's screen page refuses the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_session_opens_as_a_screen_and_never_as_a_web_terminal() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let d = TestDevice::enroll(&s, &admin, "desk").await;
    let _dev = tessera_testkit::HandDevice::connect(&s, &d, 4).await;
    let session = admin
        .create_session(&tessera_core::api::CreateSessionRequest {
            device: "desk".into(),
            access: None,
            channel: Some("screen".into()),
        })
        .await
        .expect("a screen session")
        .id;
    let cookie = sign_in(&s, "admin", s.admin_password.as_deref().unwrap()).await;
    let list = no_redirects()
        .get(format!("{}/sessions", s.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("desk"), "the session is listed");
    assert!(
        !list.contains(&format!("/sessions/{session}/terminal")),
        "no terminal link for a screen session"
    );
    assert!(
        list.contains(&format!("/sessions/{session}/screen")),
        "a screen link for it"
    );
    let screen_page = no_redirects()
        .get(format!("{}/sessions/{session}/screen", s.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(screen_page.status(), StatusCode::OK);
    let html = screen_page.text().await.unwrap();
    assert!(
        html.contains("<canvas class=\"screen fit\" id=\"screen\""),
        "{html}"
    );
    assert!(html.contains("data-keys="), "the key map rides on the page");
    let page = no_redirects()
        .get(format!("{}/sessions/{session}/terminal", s.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::CONFLICT);
    let text = page.text().await.unwrap();
    assert!(text.contains("tessera view"), "{text}");
    assert!(
        text.contains(&format!("/sessions/{session}/screen")),
        "{text}"
    );

    // A shell session has no screen page.
    let shell = admin
        .create_session(&tessera_core::api::CreateSessionRequest {
            device: "desk".into(),
            access: None,
            channel: None,
        })
        .await
        .expect("a shell session")
        .id;
    let page = no_redirects()
        .get(format!("{}/sessions/{shell}/screen", s.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::CONFLICT);
    let text = page.text().await.unwrap();
    assert!(
        text.contains("channel_unsupported") || text.contains("not a screen"),
        "{text}"
    );
    assert!(
        text.contains(&format!("/sessions/{shell}/terminal")),
        "{text}"
    );

    // The sessions page's form opens a screen and goes to its page; a
    // channel it does not know is refused and opens nothing.
    let token = csrf(&s, &cookie).await;
    let before = admin.sessions(true).await.unwrap().len();
    let resp = no_redirects()
        .post(format!("{}/sessions", s.url))
        .header(COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("csrf", token.as_str()),
            ("device", "desk"),
            ("channel", "telepathy"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(resp.text().await.unwrap().contains("channel"));
    assert_eq!(admin.sessions(true).await.unwrap().len(), before);
    let resp = no_redirects()
        .post(format!("{}/sessions", s.url))
        .header(COOKIE, &cookie)
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("csrf", token.as_str()),
            ("device", "desk"),
            ("channel", "screen"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let to = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.ends_with("/screen"), "{to}");
    let id = to.split('/').nth(2).unwrap();
    assert_eq!(admin.session(id).await.unwrap().channel, "screen");
    s.stop().await;
}
