//! Lockouts that stop guessers without stopping honest people (issue 12
//! finding 9, issue 17 item 6): one count per purpose, only guesses count,
//! IPv6 by /64, one count for every node on a database, passwords counted
//! per account at an address, and the wait shown in words everywhere.

use std::time::Duration;

use tessera_client::{ApiClient, ClientError, TlsTrust};
use tessera_core::api::{DeviceAuthorizationResponse, SecretString};
use tessera_core::identity::DeviceKeys;
use tessera_core::roles::Role;

use tessera_testkit::{Options, TestServer};

use crate::support::{bind_race, code as support_code};

/// A device asks to be paired; the answer carries the user code.
async fn pairing(s: &TestServer) -> DeviceAuthorizationResponse {
    let keys = DeviceKeys::generate();
    let form = s.pairing_form(&keys, ("build-box", "build-box.lan", "linux"));
    let form = tessera_testkit::form_pairs(&form);
    s.client()
        .device_authorization(&form)
        .await
        .expect("device authorization")
}

async fn lockout_rows(admin: &ApiClient) -> Vec<tessera_core::api::AuditEntryView> {
    let q = tessera_client::AuditQuery {
        action: Some("lockout_triggered".into()),
        ..Default::default()
    };
    admin.audit_page(&q).await.unwrap().entries
}

fn retry_after(e: &ClientError) -> Option<u64> {
    match e {
        ClientError::Api { retry_after, .. } => *retry_after,
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pairing_approvals_and_support_code_guesses_lock_separately() {
    let s = TestServer::start().await;
    let admin = s.admin().await;

    // Ten unknown pairing codes lock pairing approvals for this operator…
    for _ in 0..10 {
        let e = admin.decide_pairing("BBBB-BBBB", true).await.unwrap_err();
        assert_eq!(e.code(), Some("not_found"), "{e}");
    }
    let p = pairing(&s).await;
    let e = admin.decide_pairing(&p.user_code, true).await.unwrap_err();
    assert_eq!(e.code(), Some("locked_out"), "{e}");
    // …but not support codes, nor signing in.
    let code = support_code(&admin).await;
    s.client()
        .preview_support_code(&code)
        .await
        .expect("support codes have their own count");
    s.admin().await;

    s.clock.advance(Duration::from_secs(15 * 60 + 1));

    // Ten unknown support codes lock support codes from this address…
    for _ in 0..10 {
        let e = s
            .client()
            .preview_support_code("222-222-222")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("not_found"), "{e}");
    }
    let code = support_code(&admin).await;
    let e = s.client().preview_support_code(&code).await.unwrap_err();
    assert_eq!(e.code(), Some("locked_out"), "{e}");
    // …but not pairing approvals.
    let p = pairing(&s).await;
    admin
        .decide_pairing(&p.user_code, true)
        .await
        .expect("pairing approvals have their own count");

    let purposes: Vec<String> = lockout_rows(&admin)
        .await
        .iter()
        .map(|e| e.details["purpose"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(purposes.len(), 2, "{purposes:?}");
    assert!(
        purposes.contains(&"pairing_code".to_owned()),
        "{purposes:?}"
    );
    assert!(
        purposes.contains(&"support_code".to_owned()),
        "{purposes:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_honest_binders_racing_for_one_code_lock_nobody_out() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let code = support_code(&admin).await;
    let (wins, losses) = bind_race(&s, &code, 12).await;
    assert_eq!(losses, vec!["code_used"; 11]);
    assert_eq!(wins, 1);
    // The eleven losers were no guessers: a fresh code still works here.
    let fresh = support_code(&admin).await;
    s.client()
        .preview_support_code(&fresh)
        .await
        .expect("not locked out");
    assert!(lockout_rows(&admin).await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_code_is_named_and_is_no_guess() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let code = support_code(&admin).await;
    tessera_agent::support::bind(&s.url, &TlsTrust::PublicRoots, &code, None)
        .await
        .unwrap();
    let p = pairing(&s).await;
    admin.decide_pairing(&p.user_code, true).await.unwrap();
    for _ in 0..12 {
        let e = s.client().preview_support_code(&code).await.unwrap_err();
        assert_eq!(e.code(), Some("code_used"), "{e}");
        let e = admin.decide_pairing(&p.user_code, false).await.unwrap_err();
        assert_eq!(e.code(), Some("pairing_not_pending"), "{e}");
    }
    let fresh = support_code(&admin).await;
    s.client().preview_support_code(&fresh).await.unwrap();
    let p = pairing(&s).await;
    admin.decide_pairing(&p.user_code, true).await.unwrap();
    assert!(lockout_rows(&admin).await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_guessers_are_counted_by_their_slash_64() {
    // Behind a trusted proxy, so each request can come from another address.
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| {
            c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]
        })),
        ..Options::default()
    })
    .await;
    let admin = s.admin().await;
    let real = support_code(&admin).await;
    let preview = async |from: &str, code: &str| {
        s.http()
            .get(s.api(&format!("/api/v1/support-codes/{code}")))
            .header("x-forwarded-for", from)
            .send()
            .await
            .unwrap()
            .status()
    };
    for i in 1..=10 {
        let from = format!("2001:db8:5:6:{i:x}::{i:x}");
        assert_eq!(preview(&from, "222-222-222").await, 404, "{from}");
    }
    // Another address of the same /64 is locked out; an IPv4-mapped
    // address is that IPv4 host, and the next /64 is someone else.
    assert_eq!(preview("2001:db8:5:6:ffff::1", &real).await, 429);
    assert_eq!(preview("::ffff:192.0.2.7", &real).await, 200);
    assert_eq!(preview("2001:db8:5:7::1", &real).await, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_share_the_lockout() {
    let a = TestServer::start_with(Options {
        nats: true,
        ..Options::default()
    })
    .await;
    let b = TestServer::start_with(Options {
        database_url: Some(a.database_url.clone()),
        nats: true,
        clock: Some(a.clock.clone()),
        ..Options::default()
    })
    .await;
    let admin = a.admin().await;
    let real = support_code(&admin).await;
    // Five guesses on each node: under the limit of either alone.
    for node in [&a, &b] {
        for _ in 0..5 {
            let e = node
                .client()
                .preview_support_code("222-222-222")
                .await
                .unwrap_err();
            assert_eq!(e.code(), Some("not_found"), "{e}");
        }
    }
    for node in [&a, &b] {
        let e = node.client().preview_support_code(&real).await.unwrap_err();
        assert_eq!(e.code(), Some("locked_out"), "{e}");
    }
    assert_eq!(lockout_rows(&admin).await.len(), 1);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_wrong_passwords_do_not_lock_out_another_at_the_same_address() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    s.user(&admin, "bob", Role::Operator).await;
    let pw = s.admin_password.clone().unwrap();
    for _ in 0..10 {
        let e = s
            .client()
            .login("admin", SecretString::new("wrong password!"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("invalid_credentials"));
    }
    s.clock.advance(Duration::from_secs(60));
    let e = s
        .client()
        .login("admin", SecretString::new(pw))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("locked_out"), "{e}");
    assert_eq!(retry_after(&e), Some(14 * 60));
    let ClientError::Api { message, .. } = &e else {
        panic!("{e}")
    };
    assert!(
        message.starts_with(
            "locked out for 14 minutes after too many failed sign-ins to this account from \
             this address; try again after "
        ) && message.ends_with(" UTC"),
        "{message}"
    );
    // Bob, at the same address, signs in.
    s.login("bob", "bob-password-123").await;
    let rows = lockout_rows(&admin).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].details["purpose"], "login_account");
    assert!(rows[0].target.as_deref().unwrap_or("").starts_with("user:"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_page_says_how_long_a_lockout_lasts() {
    let s = TestServer::start().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = async |password: &str| {
        http.post(s.api("/device/login"))
            .form(&[("username", "admin"), ("password", password)])
            .send()
            .await
            .unwrap()
    };
    for _ in 0..10 {
        assert_eq!(sign_in("wrong password!").await.status(), 401);
    }
    let pw = s.admin_password.clone().unwrap();
    let resp = sign_in(&pw).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "900");
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("locked out for 15 minutes after too many failed sign-ins"),
        "{html}"
    );
    assert!(html.contains("try again after "), "{html}");
    // Still the sign-in form, to come back to.
    assert!(html.contains("action=\"/device/login\""), "{html}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_parallel_guesses_gets_no_more_checked_than_the_lockout_allows() {
    let s = TestServer::start().await;
    let http = s.http();
    // Twenty at once (the login rate limit's burst): each is counted before
    // its password is checked, so at most ten are ever checked.
    let guesses = (0..20).map(|i| {
        let (http, url) = (http.clone(), s.api("/api/v1/auth/login"));
        async move {
            let resp = http
                .post(url)
                .json(&serde_json::json!({"username": "admin", "password": format!("guess number {i}")}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
    });
    let answers = futures_util::future::join_all(guesses).await;
    let checked = answers.iter().filter(|(st, _)| *st == 401).count();
    let locked = answers
        .iter()
        .filter(|(st, code)| *st == 429 && code == "locked_out")
        .count();
    assert!(checked <= 10, "{checked} guesses were checked: {answers:?}");
    assert_eq!(checked + locked, 20, "{answers:?}");
    // And the account is locked at this address, right password or not.
    let pw = s.admin_password.clone().unwrap();
    let resp = http
        .post(s.api("/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    s.stop().await;
}
