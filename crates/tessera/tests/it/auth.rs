//! Login, logout and session revocation, on one server and across two.

use reqwest::StatusCode;
use tessera_core::api::{ChangePasswordRequest, SecretString};
use tessera_core::roles::Role;

use tessera_testkit::{Options, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_admin_is_created_once_and_only_on_an_empty_database() {
    let first = TestServer::start_with(Options {
        nats: true,
        ..Options::default()
    })
    .await;
    assert!(
        first.admin_password.is_some(),
        "first start creates the admin"
    );
    let url = first.database_url.clone();
    // A second server on the same, now non-empty database: no new admin.
    let second = TestServer::start_with(Options {
        database_url: Some(url.clone()),
        nats: true,
        ..Options::default()
    })
    .await;
    assert!(second.admin_password.is_none());
    // The first password still works through the second server.
    let pw = first.admin_password.clone().unwrap();
    second.login("admin", &pw).await.whoami().await.unwrap();
    let users = first.admin().await.list_users().await.unwrap();
    assert_eq!(users.len(), 1);
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_starts_create_exactly_one_admin() {
    let db = tessera_testkit::TestDb::new().await;
    // Migrate once, so the race is on the bootstrap itself (concurrent
    // migrations are covered by the migrator's lock on PostgreSQL).
    tessera_server::store::Db::connect(&db.url)
        .await
        .unwrap()
        .close()
        .await;
    let starts = (0..3).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            TestServer::start_with(Options {
                database_url: Some(url),
                nats: true,
                ..Options::default()
            })
            .await
        })
    });
    let servers: Vec<TestServer> = futures_util::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let created = servers
        .iter()
        .filter(|s| s.admin_password.is_some())
        .count();
    assert_eq!(created, 1);
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let s = TestServer::start().await;
    let c = s.client();
    let wrong = c
        .login("admin", SecretString::new("not-the-password"))
        .await
        .unwrap_err();
    let unknown = c
        .login("nobody", SecretString::new("not-the-password"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Some("invalid_credentials"));
    assert_eq!(unknown.code(), Some("invalid_credentials"));
    assert_eq!(wrong.to_string(), unknown.to_string());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_token_at_once_on_another_server() {
    let a = TestServer::start_with(Options {
        nats: true,
        ..Options::default()
    })
    .await;
    let b = TestServer::start_with(Options {
        database_url: Some(a.database_url.clone()),
        nats: true,
        ..Options::default()
    })
    .await;
    let pw = a.admin_password.clone().unwrap();
    let on_a = a.login("admin", &pw).await;
    // The same token, presented to server B.
    let token = {
        let resp = a
            .client()
            .login("admin", SecretString::new(pw.clone()))
            .await
            .unwrap();
        resp.token
    };
    let on_b = b.client().with_token(token.clone());
    on_b.whoami().await.unwrap();
    let on_a_same = a.client().with_token(token);
    on_a_same.logout().await.unwrap();
    let err = on_b.whoami().await.unwrap_err();
    assert_eq!(err.code(), Some("session_revoked"));
    // The other session is untouched.
    on_a.whoami().await.unwrap();
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_revokes_the_users_other_sessions_only() {
    let s = TestServer::start().await;
    let pw = s.admin_password.clone().unwrap();
    let one = s.login("admin", &pw).await;
    let two = s.login("admin", &pw).await;
    let resp = one
        .change_password(&ChangePasswordRequest {
            current_password: SecretString::new(pw.clone()),
            new_password: SecretString::new("a brand new passphrase"),
        })
        .await
        .unwrap();
    assert_eq!(resp.revoked_sessions, 1);
    one.whoami().await.unwrap();
    assert_eq!(
        two.whoami().await.unwrap_err().code(),
        Some("session_revoked")
    );
    let old = s
        .client()
        .login("admin", SecretString::new(pw))
        .await
        .unwrap_err();
    assert_eq!(old.code(), Some("invalid_credentials"));
    s.login("admin", "a brand new passphrase")
        .await
        .whoami()
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_checks_the_current_one_and_the_policy() {
    let s = TestServer::start().await;
    let pw = s.admin_password.clone().unwrap();
    let admin = s.admin().await;
    let wrong = admin
        .change_password(&ChangePasswordRequest {
            current_password: SecretString::new("wrong password here"),
            new_password: SecretString::new("a brand new passphrase"),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Some("invalid_credentials"));
    let weak = admin
        .change_password(&ChangePasswordRequest {
            current_password: SecretString::new(pw.clone()),
            new_password: SecretString::new("short"),
        })
        .await
        .unwrap_err();
    assert_eq!(weak.code(), Some("weak_password"));
    // Nothing changed.
    s.login("admin", &pw).await.whoami().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_refused() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    admin.whoami().await.unwrap();
    s.clock
        .advance(std::time::Duration::from_secs(12 * 3600 + 1));
    assert_eq!(
        admin.whoami().await.unwrap_err().code(),
        Some("session_expired")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_ends_their_sessions_and_blocks_login() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let bob = s.user(&admin, "bob", Role::Operator).await;
    bob.whoami().await.unwrap();
    admin
        .update_user(
            "bob",
            &tessera_core::api::UpdateUserRequest {
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .unwrap();
    let err = bob.whoami().await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Some("session_revoked") | Some("account_disabled")
        ),
        "{err}"
    );
    let login = s
        .client()
        .login("bob", SecretString::new("bob-password-123"))
        .await
        .unwrap_err();
    assert_eq!(login.code(), Some("account_disabled"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_and_foreign_credentials_are_refused_with_distinct_codes() {
    let s = TestServer::start().await;
    let http = s.http();
    let url = s.api("/api/v1/auth/whoami");
    let cases = [
        (None, "unauthenticated"),
        (Some("Bearer otk_tooshort".to_owned()), "invalid_token"),
        (Some("Basic YWRtaW46cGFzcw==".to_owned()), "unauthenticated"),
        (
            // A well-formed device key is the wrong plane for this API.
            Some(format!(
                "Bearer {}",
                tessera_core::secret::Secret::generate(tessera_core::secret::SecretKind::DeviceKey)
                    .expose()
            )),
            "wrong_credential_type",
        ),
        (
            Some(format!(
                "Bearer {}",
                tessera_core::secret::Secret::generate(
                    tessera_core::secret::SecretKind::OperatorToken
                )
                .expose()
            )),
            "invalid_token",
        ),
    ];
    for (header, code) in cases {
        let mut req = http.get(&url);
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code);
    }
    s.stop().await;
}
