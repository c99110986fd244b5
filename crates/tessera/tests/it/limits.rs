//! Rate limits and lockout, driven by the injected clock.

use std::time::Duration;

use tessera_core::api::SecretString;

use tessera_testkit::{Options, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_failed_logins_lock_the_address_out_for_fifteen_minutes() {
    let s = TestServer::start().await;
    let pw = s.admin_password.clone().unwrap();
    let c = s.client();
    for _ in 0..10 {
        let e = c
            .login("admin", SecretString::new("wrong password!"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("invalid_credentials"));
    }
    // Locked: even the right password is refused, with Retry-After.
    let e = c
        .login("admin", SecretString::new(pw.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("locked_out"));
    match e {
        tessera_client::ClientError::Api {
            status,
            retry_after,
            ..
        } => {
            assert_eq!(status, 429);
            let secs = retry_after.expect("Retry-After header");
            assert!((899..=900).contains(&secs), "{secs}");
        }
        other => panic!("{other}"),
    }
    s.clock.advance(Duration::from_secs(14 * 60));
    assert_eq!(
        c.login("admin", SecretString::new(pw.clone()))
            .await
            .unwrap_err()
            .code(),
        Some("locked_out")
    );
    s.clock.advance(Duration::from_secs(61));
    c.login("admin", SecretString::new(pw))
        .await
        .expect("lockout expired");

    let audit = s
        .admin()
        .await
        .audit_page(&Default::default())
        .await
        .unwrap();
    let lockouts = audit
        .entries
        .iter()
        .filter(|e| e.action == "lockout_triggered")
        .count();
    assert_eq!(lockouts, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rate_limit_answers_429_with_retry_after_and_refills() {
    let s = TestServer::start().await;
    let http = s.http();
    let url = s.api("/api/v1/auth/login");
    // Malformed bodies cost no password hash but still count against the
    // limit, which is applied before the handler runs.
    for i in 0..20 {
        let resp = http
            .post(&url)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "request {i}");
    }
    let resp = http
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    s.clock.advance(Duration::from_secs(3));
    let resp = http
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422, "one token refilled after 3 s");

    let metrics = s.metrics().await;
    assert!(
        metrics.contains("tessera_ratelimit_rejections_total{limiter=\"login\"} 1"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_honoured_only_from_a_trusted_proxy() {
    // Untrusted: every request is 127.0.0.1 whatever the header says, so
    // spoofed addresses do not escape the lockout.
    let s = TestServer::start().await;
    let http = s.http();
    for i in 0..10 {
        let resp = http
            .post(s.api("/api/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&serde_json::json!({"username": "admin", "password": "wrong password!"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = http
        .post(s.api("/api/v1/auth/login"))
        .header("x-forwarded-for", "198.51.100.99")
        .json(&serde_json::json!({"username": "admin", "password": "wrong password!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    s.stop().await;

    // Trusted: each forwarded address has its own count.
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| {
            c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]
        })),
        ..Options::default()
    })
    .await;
    for i in 0..11 {
        let resp = http
            .post(s.api("/api/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&serde_json::json!({"username": "admin", "password": "wrong password!"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "request {i}");
    }
    let audit = s
        .admin()
        .await
        .audit_page(&Default::default())
        .await
        .unwrap();
    let failed = audit
        .entries
        .iter()
        .find(|e| e.action == "login_failed")
        .unwrap();
    assert_eq!(failed.source_ip.as_deref(), Some("198.51.100.0"));
    s.stop().await;
}
