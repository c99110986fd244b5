//! Event ingestion: canonical ids dedupe one owner's devices, whole-batch
//! validation, limits, and refusal after revocation.

use tessera_core::api::{EventBatch, EventIn};

use tessera_testkit::{TestDevice, TestServer};

fn batch(n: usize, base_ms: i64, subject: &str) -> EventBatch {
    EventBatch {
        events: (0..n)
            .map(|i| EventIn {
                kind: "login.failed".into(),
                subject: format!("{subject} {i}"),
                occurred_at: tessera_core::Timestamp::from_millis(base_ms + i as i64 * 1000)
                    .to_rfc3339(),
                attributes: serde_json::json!({"attempt": i}),
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_of_one_owner_pushing_the_same_500_events_store_500() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let token = admin
        .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
            uses: 2,
            ttl_seconds: 3600,
            tags: vec![],
        })
        .await
        .unwrap();
    let a = TestDevice::enroll_with(&s, token.secret.clone(), "a").await;
    let b = TestDevice::enroll_with(&s, token.secret.clone(), "b").await;
    let now = s.clock.now_ms();
    let events = batch(500, now, "user root");
    let (ca, cb) = (a.client(&s), b.client(&s));
    let (ea, eb) = (events.clone(), events.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { ca.push_events(&ea).await.unwrap() }),
        tokio::spawn(async move { cb.push_events(&eb).await.unwrap() })
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.accepted + rb.accepted, 500, "{ra:?} {rb:?}");
    assert_eq!(ra.duplicates + rb.duplicates, 500);
    assert_eq!(
        tessera_server::store::events::count(
            s.state.db(),
            tessera_server::tenancy::BOOTSTRAP_TENANT
        )
        .await
        .unwrap(),
        500
    );

    // A retry is all duplicates; the same subject spelled differently too.
    let again = a
        .client(&s)
        .push_events(&batch(500, now, "  USER   Root "))
        .await
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 500));

    // Another owner's device does not collide.
    let other_admin = s
        .user(&admin, "olga", tessera_core::roles::Role::Admin)
        .await;
    let c = TestDevice::enroll(&s, &other_admin, "c").await;
    let theirs = c
        .client(&s)
        .push_events(&batch(10, now, "user root"))
        .await
        .unwrap();
    assert_eq!((theirs.accepted, theirs.duplicates), (10, 0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_whole_and_store_nothing() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let d = TestDevice::enroll(&s, &admin, "noisy").await;
    let c = d.client(&s);
    let now = s.clock.now_ms();
    let count = || async {
        tessera_server::store::events::count(
            s.state.db(),
            tessera_server::tenancy::BOOTSTRAP_TENANT,
        )
        .await
        .unwrap()
    };

    let mut bad_kind = batch(3, now, "x");
    bad_kind.events[2].kind = "Bad Kind".into();
    let e = c.push_events(&bad_kind).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_event"));
    assert!(e.to_string().contains("events[2]"), "{e}");

    let mut bad_time = batch(2, now, "x");
    bad_time.events[0].occurred_at = "yesterday".into();
    assert_eq!(
        c.push_events(&bad_time).await.unwrap_err().code(),
        Some("invalid_event")
    );

    let mut not_object = batch(1, now, "x");
    not_object.events[0].attributes = serde_json::json!([1, 2]);
    assert_eq!(
        c.push_events(&not_object).await.unwrap_err().code(),
        Some("invalid_event")
    );

    let too_many = batch(1001, now, "x");
    let e = c.push_events(&too_many).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(413), Some("batch_too_large")));

    let mut too_big = batch(1, now, "x");
    too_big.events[0].attributes = serde_json::json!({"blob": "x".repeat(1_100_000)});
    let e = c.push_events(&too_big).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(413), Some("body_too_large")));

    let mut big_attrs = batch(1, now, "x");
    big_attrs.events[0].attributes = serde_json::json!({"blob": "x".repeat(20_000)});
    assert_eq!(
        c.push_events(&big_attrs).await.unwrap_err().code(),
        Some("invalid_event")
    );

    assert_eq!(count().await, 0);
    // A batch just under the body limit is accepted.
    let ok = c.push_events(&batch(1000, now, "fine")).await.unwrap();
    assert_eq!(ok.accepted, 1000);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_after_revocation_is_rejected_whole() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let d = TestDevice::enroll(&s, &admin, "gone").await;
    let now = s.clock.now_ms();
    d.client(&s)
        .push_events(&batch(5, now, "before"))
        .await
        .unwrap();
    admin.revoke_device(&d.device_id, None).await.unwrap();
    let e = d
        .client(&s)
        .push_events(&batch(5, now, "after"))
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("device_revoked")));
    let page = admin.events(&[]).await.unwrap();
    assert_eq!(page.events.len(), 5);
    assert!(page.events.iter().all(|e| e.subject.starts_with("before")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_read_events_filtered_and_paged() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let d = TestDevice::enroll(&s, &admin, "reporter").await;
    let now = s.clock.now_ms();
    d.client(&s)
        .push_events(&batch(7, now, "subject"))
        .await
        .unwrap();
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let mut q = vec![
            ("limit", "3".to_owned()),
            ("kind", "login.failed".to_owned()),
            ("device", d.device_id.clone()),
        ];
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let page = admin.events(&q).await.unwrap();
        seen += page.events.len();
        match page.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, 7);
    let none = admin.events(&[("kind", "other".to_owned())]).await.unwrap();
    assert!(none.events.is_empty());
    let e = admin
        .events(&[("after", "garbage".to_owned())])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_query"));
    // Devices cannot read events.
    assert_eq!(
        d.client(&s).events(&[]).await.unwrap_err().code(),
        Some("wrong_credential_type")
    );
    s.stop().await;
}
