//! RFC 8628 pairing: the token endpoint's full error sequence, a standard
//! OAuth 2.0 client completing the flow, and the `/device` approval page.

use std::time::Duration;

use reqwest::StatusCode;
use tessera_client::ClientError;
use tessera_core::identity::DeviceKeys;

use tessera_testkit::{fast_heartbeat, http_client, Options, TestServer};

fn authorization_form(s: &TestServer, keys: &DeviceKeys) -> Vec<(&'static str, String)> {
    s.pairing_form(keys, ("build-box", "build-box.lan", "linux"))
}

async fn authorize(
    s: &TestServer,
    keys: &DeviceKeys,
) -> tessera_core::api::DeviceAuthorizationResponse {
    let form = authorization_form(s, keys);
    let pairs = tessera_testkit::form_pairs(&form);
    s.client()
        .device_authorization(&pairs)
        .await
        .expect("device authorization")
}

fn oauth_code(e: ClientError) -> String {
    match e {
        ClientError::OAuth(o) => o.error,
        other => panic!("expected an OAuth error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_walks_the_rfc_8628_sequence() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let keys = DeviceKeys::generate();
    let auth = authorize(&s, &keys).await;
    assert_eq!(auth.expires_in, 600);
    assert_eq!(auth.interval, 5);
    assert_eq!(auth.user_code.len(), 9);
    assert_eq!(&auth.user_code[4..5], "-");
    assert!(auth
        .user_code
        .replace('-', "")
        .bytes()
        .all(|b| b"BCDFGHJKLMNPQRSTVWXZ".contains(&b)));
    assert_eq!(auth.verification_uri, format!("{}/device", s.url));
    assert!(auth
        .verification_uri_complete
        .ends_with(&format!("?user_code={}", auth.user_code)));

    let c = s.client();
    let code = auth.device_code.expose().to_owned();
    let poll = || c.device_token(&code, "tessera-agent");

    // First poll: pending.
    assert_eq!(
        oauth_code(poll().await.unwrap_err()),
        "authorization_pending"
    );
    // Again at once: too fast → slow_down, and the interval grows by 5 s.
    assert_eq!(oauth_code(poll().await.unwrap_err()), "slow_down");
    s.clock.advance(Duration::from_secs(6));
    // 6 s later is still inside the raised 10 s interval.
    assert_eq!(oauth_code(poll().await.unwrap_err()), "slow_down");
    s.clock.advance(Duration::from_secs(16));
    assert_eq!(
        oauth_code(poll().await.unwrap_err()),
        "authorization_pending"
    );

    // Wrong client, wrong grant type, unknown code.
    assert_eq!(
        oauth_code(c.device_token(&code, "someone-else").await.unwrap_err()),
        "invalid_grant"
    );
    let unknown =
        tessera_core::secret::Secret::generate(tessera_core::secret::SecretKind::DeviceCode);
    assert_eq!(
        oauth_code(
            c.device_token(unknown.expose(), "tessera-agent")
                .await
                .unwrap_err()
        ),
        "invalid_grant"
    );
    assert_eq!(
        oauth_code(
            c.device_token("garbage", "tessera-agent")
                .await
                .unwrap_err()
        ),
        "invalid_grant"
    );

    // Approve (user code typed in lower case, without its dash).
    let typed = auth.user_code.replace('-', "").to_lowercase();
    admin.decide_pairing(&typed, true).await.unwrap();
    s.clock.advance(Duration::from_secs(16));
    let token = poll().await.expect("approved");
    assert_eq!(token.token_type, "Bearer");
    assert!(token.access_token.expose().starts_with("cak_"));
    assert_eq!(token.device_id, keys.device_id().to_string());
    // Single use.
    s.clock.advance(Duration::from_secs(16));
    assert_eq!(oauth_code(poll().await.unwrap_err()), "invalid_grant");

    // The key works on the device plane.
    let device = s.client().with_token(token.access_token.clone());
    let r = device
        .push_events(&tessera_core::api::EventBatch { events: vec![] })
        .await
        .unwrap();
    assert_eq!(r.accepted, 0);
    let d = admin.device(&token.device_id).await.unwrap();
    assert_eq!(d.enrolled_via, "pairing");
    assert_eq!(d.name, "build-box");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_expired_pairings_answer_access_denied_and_expired_token() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = s.client();

    let denied = authorize(&s, &DeviceKeys::generate()).await;
    admin
        .decide_pairing(&denied.user_code, false)
        .await
        .unwrap();
    let e = c
        .device_token(denied.device_code.expose(), "tessera-agent")
        .await
        .unwrap_err();
    assert_eq!(oauth_code(e), "access_denied");
    // A decided pairing cannot be decided again (and its code, being
    // real, is named as decided rather than counted as a guess).
    let again = admin
        .decide_pairing(&denied.user_code, true)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some("pairing_not_pending"));

    let expired = authorize(&s, &DeviceKeys::generate()).await;
    s.clock.advance(Duration::from_secs(601));
    let e = c
        .device_token(expired.device_code.expose(), "tessera-agent")
        .await
        .unwrap_err();
    assert_eq!(oauth_code(e), "expired_token");
    let late = admin
        .decide_pairing(&expired.user_code, true)
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some("pairing_not_pending"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oauth_requests_get_rfc_errors_with_no_store() {
    let s = TestServer::start().await;
    let http = http_client();
    let form = |body: &str, path: &str| {
        http.post(s.api(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
    };
    let keys = DeviceKeys::generate();
    let doc = keys.document().encode();
    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (form("client_id=tessera-agent", "/oauth/device_authorization"), "invalid_request"),
        (form(&format!("client_id=evil&identity={doc}&name=a&hostname=b&os=c"), "/oauth/device_authorization"), "invalid_client"),
        (form("client_id=tessera-agent&identity=AAAA&name=a&hostname=b&os=c", "/oauth/device_authorization"), "invalid_request"),
        (form(&format!("client_id=tessera-agent&client_id=tessera-agent&identity={doc}&name=a&hostname=b&os=c"), "/oauth/device_authorization"), "invalid_request"),
        (form("grant_type=password&username=a", "/oauth/token"), "unsupported_grant_type"),
        (form("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=tessera-agent", "/oauth/token"), "invalid_request"),
        (http.post(s.api("/oauth/token")).json(&serde_json::json!({"grant_type": "x"})), "invalid_request"),
    ];
    for (req, code) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{code}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], code);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_oauth2_client_completes_the_device_flow() {
    use oauth2::basic::BasicClient;
    use oauth2::{
        ClientId, DeviceAuthorizationUrl, StandardDeviceAuthorizationResponse, TokenResponse,
        TokenUrl,
    };

    // Real-time polling here (the client library sleeps), so one-second intervals.
    let s = TestServer::start_with(fast_heartbeat(1000)).await;
    let admin = s.admin().await;
    let keys = DeviceKeys::generate();
    let client = BasicClient::new(ClientId::new("tessera-agent".into()))
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(s.api("/oauth/device_authorization")).unwrap(),
        )
        .set_token_uri(TokenUrl::new(s.api("/oauth/token")).unwrap())
        .set_auth_type(oauth2::AuthType::RequestBody);
    let http = no_redirects();
    let fields = ("oauth2-client", "oauth2.lan", "test");
    let proof = s.proof(&keys, fields, tessera_core::identity::ProofPurpose::Pairing);
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_extra_param("identity", keys.document().encode())
        .add_extra_param("name", "oauth2-client")
        .add_extra_param("hostname", "oauth2.lan")
        .add_extra_param("os", "test")
        .add_extra_param("issued_at", proof.issued_at.to_string())
        .add_extra_param("proof", proof.proof)
        .add_extra_param("audience", proof.audience)
        .request_async(&http)
        .await
        .expect("device authorization");
    let code = details.user_code().secret().clone();
    let approver = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        admin.decide_pairing(&code, true).await.unwrap();
    });
    let token = client
        .exchange_device_access_token(&details)
        .request_async(&http, tokio::time::sleep, Some(Duration::from_secs(30)))
        .await
        .expect("token");
    approver.await.unwrap();
    assert!(token.access_token().secret().starts_with("cak_"));
    assert_eq!(token.token_type(), &oauth2::basic::BasicTokenType::Bearer);
    s.stop().await;
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Pulls `name="csrf" value="…"` out of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    html[at..at + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_page_signs_in_shows_the_device_and_approves_it() {
    let s = TestServer::start().await;
    let keys = DeviceKeys::generate();
    let auth = authorize(&s, &keys).await;
    let http = no_redirects();

    // Following verification_uri_complete while signed out: a sign-in form
    // that carries the code along.
    let page = http
        .get(&auth.verification_uri_complete)
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains("action=\"/device/login\"") && html.contains(&auth.user_code),
        "{html}"
    );

    // A wrong password is refused on the page.
    let wrong = http
        .post(s.api("/device/login"))
        .form(&[
            ("username", "admin"),
            ("password", "nope nope nope"),
            ("user_code", &auth.user_code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("incorrect"));

    let pw = s.admin_password.clone().unwrap();
    let signed = http
        .post(s.api("/device/login"))
        .form(&[
            ("username", "admin"),
            ("password", pw.as_str()),
            ("user_code", &auth.user_code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let location = signed.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/device?user_code={}", auth.user_code));
    let cookie_header = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie_header.contains("HttpOnly") && cookie_header.contains("SameSite=Strict"),
        "{cookie_header}"
    );
    let cookie = cookie_header.split(';').next().unwrap().to_owned();

    let details = http
        .get(s.api(&location))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for shown in [
        "build-box",
        "build-box.lan",
        "linux",
        "127.0.0.1",
        &keys.device_id().grouped(),
        "authorising a device",
    ] {
        assert!(details.contains(shown), "page lacks {shown}: {details}");
    }
    let csrf = csrf_of(&details);

    // Without the CSRF token nothing happens.
    let forged = http
        .post(s.api("/device"))
        .header("cookie", &cookie)
        .form(&[
            ("user_code", auth.user_code.as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(
        s.admin().await.pairings().await.unwrap().len() == 1,
        "still pending"
    );

    let approved = http
        .post(s.api("/device"))
        .header("cookie", &cookie)
        .form(&[
            ("user_code", auth.user_code.as_str()),
            ("decision", "approve"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    assert!(approved.text().await.unwrap().contains("Device approved"));

    s.clock.advance(Duration::from_secs(6));
    let token = s
        .client()
        .device_token(auth.device_code.expose(), "tessera-agent")
        .await
        .unwrap();
    assert_eq!(token.device_id, keys.device_id().to_string());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_text_from_the_device_is_escaped() {
    let s = TestServer::start().await;
    let keys = DeviceKeys::generate();
    let c = s.client();
    let form = s.pairing_form(
        &keys,
        ("<script>alert(1)</script>", "\"><img src=x>", "linux"),
    );
    let pairs = tessera_testkit::form_pairs(&form);
    let auth = c.device_authorization(&pairs).await.unwrap();
    let pw = s.admin_password.clone().unwrap();
    let http = no_redirects();
    let signed = http
        .post(s.api("/device/login"))
        .form(&[("username", "admin"), ("password", pw.as_str())])
        .send()
        .await
        .unwrap();
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = http
        .get(s.api(&format!("/device?user_code={}", auth.user_code)))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("\"><img"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_user_codes_locks_the_address_out() {
    let s = TestServer::start_with(Options::default()).await;
    let admin = s.admin().await;
    let real = authorize(&s, &DeviceKeys::generate()).await;
    for _ in 0..10 {
        let e = admin.decide_pairing("BBBB-BBBB", true).await.unwrap_err();
        assert_eq!(e.code(), Some("not_found"));
    }
    // Now even the right code is refused until the lockout ends.
    let e = admin
        .decide_pairing(&real.user_code, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("locked_out"));
    s.clock.advance(Duration::from_secs(15 * 60));
    // (The first pairing expired meanwhile; a fresh one goes through.)
    let fresh = authorize(&s, &DeviceKeys::generate()).await;
    admin.decide_pairing(&fresh.user_code, true).await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_approve_pairings() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let viewer = s
        .user(&admin, "vic", tessera_core::roles::Role::Viewer)
        .await;
    let auth = authorize(&s, &DeviceKeys::generate()).await;
    let e = viewer
        .decide_pairing(&auth.user_code, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));
    assert_eq!(admin.pairings().await.unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_requires_proof_of_the_key_and_a_new_identity() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = s.client();
    let keys = DeviceKeys::generate();
    let send = |form: Vec<(&'static str, String)>| {
        let c = c.clone();
        async move {
            let pairs = tessera_testkit::form_pairs(&form);
            c.device_authorization(&pairs).await
        }
    };
    let description = |e: ClientError| match e {
        ClientError::OAuth(o) => (o.error, o.error_description.unwrap_or_default()),
        other => panic!("{other}"),
    };

    // The public identity document with someone else's signature.
    let mut stolen = authorization_form(&s, &keys);
    let thief = authorization_form(&s, &DeviceKeys::generate());
    stolen[6].1 = thief[6].1.clone();
    let (code, why) = description(send(stolen).await.unwrap_err());
    assert_eq!(code, "invalid_request");
    assert!(why.contains("proof"), "{why}");

    // A proof of the right key but for other fields.
    let mut renamed = authorization_form(&s, &keys);
    renamed[2].1 = "renamed".into();
    assert_eq!(
        description(send(renamed).await.unwrap_err()).0,
        "invalid_request"
    );

    // A stale proof.
    let form = authorization_form(&s, &keys);
    s.clock.advance(Duration::from_secs(301));
    let (_, why) = description(send(form).await.unwrap_err());
    assert!(why.contains("five minutes"), "{why}");

    // One pending pairing per identity: a new request (with its proof)
    // replaces the pending one, whose user code stops working.
    let sent = authorization_form(&s, &keys);
    let replaced = send(sent.clone()).await.expect("a pairing");
    // The same request again is a replay (a proof is used once): refused,
    // and the pending pairing stands.
    let (code, why) = description(send(sent).await.unwrap_err());
    assert_eq!(code, "invalid_request");
    assert!(why.contains("already used"), "{why}");
    // A retry makes a new proof, at a new time.
    s.clock.advance(Duration::from_millis(1));
    let first = authorize(&s, &keys).await;
    let e = admin
        .decide_pairing(&replaced.user_code, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("pairing_not_pending"), "{e}");

    // Once enrolled, the identity cannot pair again.
    admin.decide_pairing(&first.user_code, true).await.unwrap();
    s.clock.advance(Duration::from_secs(6));
    c.device_token(first.device_code.expose(), "tessera-agent")
        .await
        .unwrap();
    let (code, why) = description(send(authorization_form(&s, &keys)).await.unwrap_err());
    assert_eq!(code, "access_denied");
    assert!(why.contains("already enrolled"), "{why}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_form_posts_to_the_device_page_are_refused() {
    let s = TestServer::start().await;
    let pw = s.admin_password.clone().unwrap();
    let resp = no_redirects()
        .post(s.api("/device/login"))
        .header("origin", "https://evil.example")
        .form(&[("username", "admin"), ("password", pw.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("set-cookie").is_none());
    s.stop().await;
}

/// Issue 17: an abandoned pairing leaves `tessera ctl pairing list` when its
/// lifetime ends, and that lifetime is the server's `pairing_ttl`
/// (`--pairing-ttl`), here 2 minutes instead of the default 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_pairing_leaves_the_list_when_its_configured_lifetime_ends() {
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| c.pairing_ttl = Duration::from_secs(120))),
        ..Options::default()
    })
    .await;
    let ctl = tessera_testkit::ctl_admin(&s).await;
    let listed = || async {
        let (code, out, err) =
            tessera_testkit::ctl(ctl.path(), &["pairing", "list", "--json"], None).await;
        assert_eq!(code, 0, "{out}{err}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("a JSON list");
        rows.iter()
            .filter_map(|r| r["device_id"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };

    // The agent gave up on this one; it is never approved or denied.
    let (old_keys, new_keys) = (DeviceKeys::generate(), DeviceKeys::generate());
    let (old_id, new_id) = (
        old_keys.device_id().to_string(),
        new_keys.device_id().to_string(),
    );
    let abandoned = authorize(&s, &old_keys).await;
    assert_eq!(abandoned.expires_in, 120, "the configured lifetime");
    assert_eq!(listed().await, vec![old_id.clone()]);

    s.clock.advance(Duration::from_secs(119));
    assert_eq!(listed().await, vec![old_id.clone()]);
    authorize(&s, &new_keys).await;

    s.clock.advance(Duration::from_secs(2));
    assert_eq!(
        listed().await,
        vec![new_id],
        "the lapsed pairing is gone, the younger one stays"
    );
    let e = s
        .client()
        .device_token(abandoned.device_code.expose(), "tessera-agent")
        .await
        .unwrap_err();
    assert_eq!(oauth_code(e), "expired_token");
    s.stop().await;
}
