//! Health, readiness, metrics, the OpenAPI document, TLS, the plain-HTTP
//! refusal, graceful shutdown, and idempotent migrations.

use std::collections::BTreeSet;

use tessera_client::{ApiClient, TlsTrust};
use tessera_core::api::SecretString;
use tessera_server::{Server, ServerConfig, StartError, TlsMode};

use tessera_testkit::{ctl, tessera_bin, Options, ServerProcess, TestDb, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_readyz_and_metrics_answer() {
    let s = TestServer::start().await;
    let http = s.http();
    let h: serde_json::Value = http
        .get(s.api("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    let r = http.get(s.api("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.admin().await.whoami().await.unwrap();
    let m = http
        .get(s.api("/metrics"))
        .bearer_auth(tessera_testkit::METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(m.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics"));
    let text = m.text().await.unwrap();
    assert!(text.contains(r#"tessera_http_requests_total{method="POST",route="/api/v1/auth/login",status="200"} 1"#), "{text}");
    assert!(
        text.contains("tessera_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("tessera_audit_appends_total 2"),
        "bootstrap and login: {text}"
    );
    // A request id comes back on every response.
    let resp = http.get(s.api("/healthz")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_on_the_main_listener_and_none_on_their_own() {
    let s = TestServer::start().await;
    let http = s.http();
    for (token, status, code) in [
        (None, 401, "unauthenticated"),
        (Some("test-metrics-toke"), 401, "unauthenticated"),
        (Some("test-metrics-token-and-more"), 401, "unauthenticated"),
    ] {
        let mut req = http.get(s.api("/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "{token:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{token:?}");
    }
    s.stop().await;

    // The binary by default serves no metrics on its main address; with
    // --metrics-listen it serves them, and only them, on their own.
    let db = TestDb::new().await;
    let plain = ServerProcess::spawn(&db.url, "warn", &[]).await;
    let resp = reqwest::get(format!("{}/metrics", plain.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--metrics-listen"),
        "{body}"
    );
    plain.terminate().await;

    let db = TestDb::new().await;
    let p = ServerProcess::spawn(&db.url, "warn", &["--metrics-listen", "127.0.0.1:0"]).await;
    let addr = p
        .stdout_head
        .lines()
        .find_map(|l| l.strip_prefix("metrics on "))
        .unwrap_or_else(|| panic!("no metrics address in: {}", p.stdout_head))
        .to_owned();
    let m = reqwest::get(&addr).await.unwrap();
    assert_eq!(m.status(), 200);
    let text = m.text().await.unwrap();
    assert!(text.contains("tessera_audit_appends_total"), "{text}");
    let other = reqwest::get(addr.replace("/metrics", "/api/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics address serves nothing else"
    );
    assert_eq!(
        reqwest::get(format!("{}/metrics", p.url))
            .await
            .unwrap()
            .status(),
        404
    );
    p.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_503_when_the_database_is_gone() {
    let s = TestServer::start().await;
    s.state.db().close().await;
    let r = s.http().get(s.api("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_unavailable");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_covers_every_json_route() {
    let s = TestServer::start().await;
    let doc: serde_json::Value = s
        .http()
        .get(s.api("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let expected: BTreeSet<String> = [
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "POST /api/v1/auth/login",
        "POST /api/v1/auth/logout",
        "GET /api/v1/auth/whoami",
        "POST /api/v1/auth/password",
        "GET /api/v1/users",
        "POST /api/v1/users",
        "PATCH /api/v1/users/{user}",
        "GET /api/v1/audit",
        "GET /api/v1/audit/checkpoints",
        "POST /api/v1/audit/checkpoints",
        "GET /api/v1/audit/keys",
        "GET /api/v1/audit/verify",
        "GET /api/v1/devices",
        "GET /api/v1/devices/{id}",
        "POST /api/v1/devices/{id}/revoke",
        "POST /api/v1/devices/{id}/tags",
        "GET /api/v1/devices/{id}/keys",
        "POST /api/v1/devices/{id}/keys",
        "POST /api/v1/devices/{id}/keys/{key_id}/revoke",
        "POST /api/v1/enrollment-tokens",
        "GET /api/v1/enrollment-tokens",
        "POST /api/v1/enrollment-tokens/{id}/revoke",
        "POST /api/v1/enroll",
        "POST /oauth/device_authorization",
        "POST /oauth/token",
        "GET /api/v1/pairings",
        "POST /api/v1/pairings/{user_code}/approve",
        "POST /api/v1/pairings/{user_code}/deny",
        "POST /api/v1/events",
        "GET /api/v1/events",
        "GET /api/v1/policy",
        "PUT /api/v1/policy",
        "GET /api/v1/sessions",
        "POST /api/v1/sessions",
        "GET /api/v1/sessions/{id}",
        "POST /api/v1/sessions/{id}/end",
        "POST /api/v1/sessions/{id}/viewer-token",
        "POST /api/v1/support-codes",
        "GET /api/v1/support-codes/{code}",
        "POST /api/v1/support-codes/bind",
        "GET /api/v1/device/peers",
        "GET /api/v1/device/peers/{id}",
        "GET /api/v1/device/peers/{id}/rotations",
        "POST /api/v1/device/trust/exchanges",
        "GET /api/v1/device/trust/exchanges",
        "POST /api/v1/device/trust/exchanges/{id}/respond",
        "POST /api/v1/device/trust/exchanges/{id}/reveal",
        "POST /api/v1/device/trust/exchanges/{id}/withdraw",
        "POST /api/v1/device/trust/attestations",
        "GET /api/v1/device/trust/attestations",
        "POST /api/v1/device/trust/withdraw",
        "POST /api/v1/device/grants",
        "GET /api/v1/device/grants",
        "POST /api/v1/device/grants/withdraw",
        "POST /api/v1/device/identity/rotate",
        "GET /api/v1/grants",
        "POST /api/v1/grants/{id}/revoke",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(documented, expected);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_a_public_address_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new("0.0.0.0:0".parse().unwrap(), dir.path().to_owned());
    let err = Server::start(config, std::sync::Arc::new(tessera_core::SystemClock))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, StartError::Refused(_)));
    assert!(err.to_string().contains("--insecure-http"));

    let out = tokio::process::Command::new(tessera_bin())
        .args(["server", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve plain HTTP"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_tls_is_generated_once_and_pinned_by_fingerprint() {
    let db = TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_owned();
    let s = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        configure: Some(Box::new(move |c| {
            c.tls = TlsMode::SelfSigned;
            c.data_dir = data_path;
        })),
        ..Options::default()
    })
    .await;
    assert!(s.url.starts_with("https://"));
    let fp = tessera_server::tls::fingerprint(&{
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(data.path().join("tls/cert.pem"))
            .unwrap()
            .to_vec()
    });
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.path().join("tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    let pinned = ApiClient::new(&s.url, &TlsTrust::Fingerprint(fp.clone())).unwrap();
    let pw = s.admin_password.clone().unwrap();
    pinned
        .login("admin", SecretString::new(pw.clone()))
        .await
        .unwrap();

    let wrong = ApiClient::new(&s.url, &TlsTrust::Fingerprint("00".repeat(32))).unwrap();
    let err = wrong
        .login("admin", SecretString::new(pw.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, tessera_client::ClientError::FingerprintMismatch { .. }),
        "{err}"
    );
    let public = ApiClient::new(&s.url, &TlsTrust::PublicRoots).unwrap();
    assert!(public
        .login("admin", SecretString::new(pw.clone()))
        .await
        .is_err());

    // The CLI pins the same way and remembers the pin.
    let cfg = tempfile::tempdir().unwrap();
    let (code, out, err) = ctl(
        cfg.path(),
        &[
            "login",
            "--server",
            &s.url,
            "--password-stdin",
            "--tls-fingerprint",
            &fp,
        ],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = ctl(cfg.path(), &["whoami"], None).await;
    assert_eq!(code, 0, "{out}");
    s.stop().await;

    // Restarting reuses the certificate.
    let again = TestServer::start_with(Options {
        database_url: Some(db.url.clone()),
        configure: Some(Box::new({
            let p = data.path().to_owned();
            move |c| {
                c.tls = TlsMode::SelfSigned;
                c.data_dir = p;
            }
        })),
        ..Options::default()
    })
    .await;
    let pinned = ApiClient::new(&again.url, &TlsTrust::Fingerprint(fp)).unwrap();
    pinned.login("admin", SecretString::new(pw)).await.unwrap();
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_twice_on_one_database_leaves_the_schema_alone() {
    let db = TestDb::new().await;
    let count = || async {
        sqlx::any::install_default_drivers();
        let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&mut c)
            .await
            .unwrap();
        n
    };
    let first = tessera_server::store::Db::connect(&db.url).await.unwrap();
    first.close().await;
    let applied = count().await;
    assert!(applied >= 1);
    let second = tessera_server::store::Db::connect(&db.url).await.unwrap();
    second.close().await;
    assert_eq!(count().await, applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_the_server_down_cleanly() {
    let db = TestDb::new().await;
    let p = ServerProcess::spawn(&db.url, "info", &[]).await;
    p.client().whoami().await.unwrap_err();
    let status = p.terminate().await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_migrations_keep_the_rows_earlier_schemas_held() {
    use tessera_server::store::{migrator_up_to, Backend};
    let db = TestDb::new().await;
    sqlx::any::install_default_drivers();
    let backend = if db.url.starts_with("sqlite") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    if backend == Backend::Sqlite {
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&pool)
            .await
            .unwrap();
    }
    migrator_up_to(backend, 2).run(&pool).await.unwrap();
    let exec = |sql: &'static str| sqlx::query(sql);
    exec("INSERT INTO users (id, username, password_hash, role, created_at, updated_at) VALUES ('u1', 'old', 'x', 'admin', 0, 0)")
        .execute(&pool)
        .await
        .unwrap();
    exec("INSERT INTO devices (id, ed25519_public, x25519_public, identity_signature, name, hostname, os, enrolled_via, enrolled_by, owner_user_id, created_at) \
          VALUES ('D1', $1, $1, $2, 'old-device', 'h', 'o', 'pairing', 'user:u1', 'u1', 0)")
        .bind(vec![1u8; 32])
        .bind(vec![2u8; 64])
        .execute(&pool)
        .await
        .unwrap();
    exec("INSERT INTO device_keys (id, device_id, key_hash, key_prefix, created_at, created_by, activated_at) VALUES ('K1', 'D1', $1, 'cak_x', 0, 'user:u1', 0)")
        .bind(vec![3u8; 32])
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    // Everything after version 2 applies over that data.
    let migrated = tessera_server::store::Db::connect(&db.url).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT name FROM devices WHERE id = 'D1'")
        .fetch_one(migrated.pool())
        .await
        .unwrap();
    assert_eq!(name, "old-device");
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_keys WHERE device_id = 'D1'")
        .fetch_one(migrated.pool())
        .await
        .unwrap();
    assert_eq!(keys, 1);
    // The new value is allowed, and foreign keys still hold.
    sqlx::query("UPDATE devices SET enrolled_via = 'support_code' WHERE id = 'D1'")
        .execute(migrated.pool())
        .await
        .unwrap();
    let orphan = sqlx::query("INSERT INTO device_keys (id, device_id, key_hash, key_prefix, created_at, created_by) VALUES ('K2', 'nope', $1, 'cak_y', 0, 'x')")
        .bind(vec![4u8; 32])
        .execute(migrated.pool())
        .await;
    assert!(orphan.is_err(), "foreign keys enforced after the rebuild");
}
