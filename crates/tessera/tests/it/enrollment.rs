//! Enrollment tokens: creation, listing without secrets, the single-use
//! race, and a distinct error for each way a token can be dead.

use std::time::Duration;

use tessera_core::api::{CreateEnrollmentTokenRequest, EnrollRequest, SecretString};
use tessera_core::identity::DeviceKeys;

use tessera_testkit::{TestDevice, TestServer};

fn enroll_request(
    s: &TestServer,
    token: &SecretString,
    keys: &DeviceKeys,
    name: &str,
) -> EnrollRequest {
    s.enroll_request(token, keys, (name, &format!("{name}.lan"), "linux"))
}

async fn token(
    admin: &tessera_client::ApiClient,
    uses: u32,
    ttl: u64,
) -> tessera_core::api::CreatedEnrollmentToken {
    admin
        .create_enrollment_token(&CreateEnrollmentTokenRequest {
            uses,
            ttl_seconds: ttl,
            tags: vec!["site:lab".into()],
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_enrolls_devices_with_its_tags_and_is_listed_without_its_secret() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let t = token(&admin, 2, 3600).await;
    assert!(t.secret.expose().starts_with("etk_"));
    let device = TestDevice::enroll_with(&s, t.secret.clone(), "kiosk-1").await;
    let d = admin.device(&device.device_id).await.unwrap();
    assert_eq!(d.tags, ["site:lab"]);
    assert_eq!(d.enrolled_via, "enrollment_token");
    assert_eq!(d.enrolled_by, format!("token:{}", t.token.id));
    let me = admin.whoami().await.unwrap();
    assert_eq!(d.owner_user_id, me.user_id);

    let listed = admin.enrollment_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].uses_remaining, 1);
    assert_eq!(listed[0].state, "active");
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains(t.secret.expose()));
    assert!(text.contains(&t.token.prefix));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_enrollments_with_a_one_use_token_have_one_winner() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let t = token(&admin, 1, 3600).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let c = s.client();
            let req = enroll_request(
                &s,
                &t.secret,
                &DeviceKeys::generate(),
                &format!("racer-{i}"),
            );
            tokio::spawn(async move { c.enroll(&req).await })
        })
        .collect();
    let mut wins = 0;
    for r in futures_util::future::join_all(tasks).await {
        match r.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert_eq!(e.code(), Some("token_exhausted"), "{e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(admin.list_devices().await.unwrap().len(), 1);
    let listed = admin.enrollment_tokens().await.unwrap();
    assert_eq!(
        (listed[0].uses_remaining, listed[0].state.as_str()),
        (0, "exhausted")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tokens_fail_with_distinct_codes_and_change_nothing() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let c = s.client();

    let used = token(&admin, 1, 3600).await;
    c.enroll(&enroll_request(
        &s,
        &used.secret,
        &DeviceKeys::generate(),
        "first",
    ))
    .await
    .unwrap();
    let e = c
        .enroll(&enroll_request(
            &s,
            &used.secret,
            &DeviceKeys::generate(),
            "second",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("token_exhausted"));

    let revoked = token(&admin, 5, 3600).await;
    admin
        .revoke_enrollment_token(&revoked.token.id)
        .await
        .unwrap();
    let e = c
        .enroll(&enroll_request(
            &s,
            &revoked.secret,
            &DeviceKeys::generate(),
            "x",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("token_revoked"));

    let expiring = token(&admin, 5, 60).await;
    s.clock.advance(Duration::from_secs(61));
    let e = c
        .enroll(&enroll_request(
            &s,
            &expiring.secret,
            &DeviceKeys::generate(),
            "x",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("token_expired"));

    let unknown =
        tessera_core::secret::Secret::generate(tessera_core::secret::SecretKind::EnrollmentToken);
    let e = c
        .enroll(&enroll_request(
            &s,
            &SecretString::new(unknown.expose()),
            &DeviceKeys::generate(),
            "x",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_token"));
    // A device key is not an enrollment token.
    let e = c
        .enroll(&enroll_request(
            &s,
            &SecretString::new(
                tessera_core::secret::Secret::generate(tessera_core::secret::SecretKind::DeviceKey)
                    .expose(),
            ),
            &DeviceKeys::generate(),
            "x",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_token"));

    let states: Vec<String> = admin
        .enrollment_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.state)
        .collect();
    assert!(states.contains(&"revoked".to_owned()) && states.contains(&"expired".to_owned()));
    assert_eq!(admin.list_devices().await.unwrap().len(), 1);

    let audit = admin
        .audit_page(&tessera_client::AuditQuery {
            action: Some("enrollment_refused".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let reasons: Vec<&str> = audit
        .entries
        .iter()
        .map(|e| e.details["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["exhausted", "revoked", "expired"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_identity_or_a_known_device_is_refused_and_the_use_is_kept() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let t = token(&admin, 3, 3600).await;
    let c = s.client();
    let mut req = enroll_request(&s, &t.secret, &DeviceKeys::generate(), "x");
    req.identity = "not-an-identity".into();
    assert_eq!(
        c.enroll(&req).await.unwrap_err().code(),
        Some("invalid_identity")
    );
    // A signature over another X25519 key: the document does not verify.
    let keys = DeviceKeys::generate();
    let mut doc = keys.document();
    doc.x25519 = DeviceKeys::generate().x25519_public();
    let mut forged = enroll_request(&s, &t.secret, &keys, "x");
    forged.identity = doc.encode();
    assert_eq!(
        c.enroll(&forged).await.unwrap_err().code(),
        Some("invalid_identity")
    );

    let keys = DeviceKeys::generate();
    c.enroll(&enroll_request(&s, &t.secret, &keys, "once"))
        .await
        .unwrap();
    let again = c
        .enroll(&enroll_request(&s, &t.secret, &keys, "twice"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some("already_enrolled"));
    admin
        .revoke_device(&keys.device_id().to_string(), None)
        .await
        .unwrap();
    let revoked = c
        .enroll(&enroll_request(&s, &t.secret, &keys, "thrice"))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Some("device_revoked"));
    // Only the successful enrollment used the token.
    assert_eq!(
        admin.enrollment_tokens().await.unwrap()[0].uses_remaining,
        2
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_are_validated() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    for (uses, ttl, tags) in [
        (0, 3600, vec![]),
        (1, 10, vec![]),
        (1, 3600, vec!["Bad Tag".to_owned()]),
        (20_000, 3600, vec![]),
    ] {
        let e = admin
            .create_enrollment_token(&CreateEnrollmentTokenRequest {
                uses,
                ttl_seconds: ttl,
                tags,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e.code(), Some("invalid_field") | Some("invalid_tag")),
            "{e}"
        );
    }
    let viewer = s
        .user(&admin, "val", tessera_core::roles::Role::Viewer)
        .await;
    let e = viewer
        .create_enrollment_token(&CreateEnrollmentTokenRequest {
            uses: 1,
            ttl_seconds: 3600,
            tags: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));
    assert!(admin.enrollment_tokens().await.unwrap().is_empty());
    s.stop().await;
}
