//! The audit chain: what is recorded, filtering and paging, append-only
//! enforcement by the database, tamper detection, and linearity under
//! concurrent writers in two processes.

use std::time::Duration;

use tessera_client::AuditQuery;
use tessera_core::api::{SecretString, UpdateUserRequest};
use tessera_core::audit::{canonical_json, AuditContent, ChainVerifier};
use tessera_core::roles::Role;
use tessera_core::{Clock, Timestamp};

use tessera_testkit::{backend, ctl, Backend, ServerProcess, TestDb, TestServer};

fn hash(hex: &str) -> [u8; 32] {
    data_encoding::HEXLOWER
        .decode(hex.as_bytes())
        .unwrap()
        .try_into()
        .unwrap()
}

/// Verifies every row the API returns, as `ctl audit verify` does.
async fn verify_all(client: &tessera_client::ApiClient) -> u64 {
    let mut v = ChainVerifier::default();
    let mut after = None;
    loop {
        let page = client
            .audit_page(&AuditQuery {
                after,
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        for e in &page.entries {
            let content = AuditContent {
                seq: e.seq,
                occurred_at: Timestamp::parse_rfc3339(&e.occurred_at).unwrap(),
                tenant_id: e.tenant_id.clone(),
                actor: e.actor.clone(),
                action: e.action.clone(),
                target: e.target.clone(),
                source_ip: e.source_ip.clone(),
                details: canonical_json(&e.details),
            };
            v.push(&content, &hash(&e.prev_hash), &hash(&e.hash))
                .unwrap_or_else(|b| panic!("chain broken: {b}"));
        }
        match page.next_after {
            Some(n) => after = Some(n),
            None => return v.checked(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_events_are_recorded_with_actor_target_and_reason() {
    let s = TestServer::start().await;
    let _ = s
        .client()
        .login("admin", SecretString::new("wrong password!"))
        .await;
    let admin = s.admin().await;
    let me = admin.whoami().await.unwrap();
    let dora = s.user(&admin, "dora", Role::Viewer).await;
    admin
        .update_user(
            "dora",
            &UpdateUserRequest {
                role: Some(Role::Operator),
                disabled: None,
            },
        )
        .await
        .unwrap();
    dora.logout().await.unwrap();
    admin
        .update_user(
            "dora",
            &UpdateUserRequest {
                role: None,
                disabled: Some(true),
            },
        )
        .await
        .unwrap();

    let page = admin.audit_page(&AuditQuery::default()).await.unwrap();
    let actions: Vec<&str> = page.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "bootstrap_admin_created",
            "login_failed",
            "login_succeeded",
            "user_created",
            "login_succeeded",
            "user_role_changed",
            "logout",
            "user_disabled",
        ]
    );
    let failed = &page.entries[1];
    assert_eq!(failed.actor, "ip:127.0.0.1");
    assert_eq!(failed.details["reason"], "wrong_password");
    let changed = &page.entries[5];
    assert_eq!(changed.actor, format!("user:{}", me.user_id));
    assert_eq!(changed.details["from"], "viewer");
    assert_eq!(changed.details["to"], "operator");
    assert_eq!(verify_all(&admin).await, 8);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_filters_by_action_actor_and_time_and_pages() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let me = admin.whoami().await.unwrap();
    let t_before = s.clock.now();
    s.clock.advance(Duration::from_secs(60));
    for i in 0..5 {
        s.user(&admin, &format!("u{i}"), Role::Viewer).await;
    }
    let only_created = admin
        .audit_page(&AuditQuery {
            action: Some("user_created".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only_created.entries.len(), 5);
    let by_actor = admin
        .audit_page(&AuditQuery {
            actor: Some(format!("user:{}", me.user_id)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(by_actor
        .entries
        .iter()
        .all(|e| e.actor == format!("user:{}", me.user_id)));
    let until = admin
        .audit_page(&AuditQuery {
            until: Some(t_before.plus(Duration::from_secs(1)).to_rfc3339()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(until.entries.len(), 2, "bootstrap and the admin's login");
    let since = admin
        .audit_page(&AuditQuery {
            since: Some(t_before.plus(Duration::from_secs(30)).to_rfc3339()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since.entries.len(), 10, "five creations and five logins");

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = admin
            .audit_page(&AuditQuery {
                after,
                limit: Some(3),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.entries.iter().map(|e| e.seq));
        match page.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (1..=12).collect::<Vec<i64>>());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_updates_and_deletes_of_audit_rows() {
    let s = TestServer::start().await;
    let db = s.db.as_ref().unwrap();
    for sql in [
        "UPDATE audit_log SET action = 'tampered' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
        "DELETE FROM audit_log",
    ] {
        let err = db.raw(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    if backend() == Backend::Postgres {
        let err = db.raw("TRUNCATE audit_log").await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    let admin = s.admin().await;
    assert_eq!(verify_all(&admin).await, 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_altered_behind_the_triggers_back_fails_verify_and_is_named() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    for i in 0..3 {
        s.user(&admin, &format!("t{i}"), Role::Viewer).await;
    }
    let cfg = tempfile::tempdir().unwrap();
    let pw = s.admin_password.clone().unwrap();
    let (code, out, err) = ctl(
        cfg.path(),
        &["login", "--server", &s.url, "--password-stdin"],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit chain OK: 9 rows verified"), "{out}");

    let tamper = match backend() {
        Backend::Sqlite => {
            "DROP TRIGGER audit_log_no_update; \
             UPDATE audit_log SET details = '{\"role\":\"admin\",\"username\":\"t1\"}' WHERE seq = 6"
        }
        Backend::Postgres => {
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update; \
             UPDATE audit_log SET details = '{\"role\":\"admin\",\"username\":\"t1\"}' WHERE seq = 6; \
             ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update"
        }
    };
    s.db.as_ref().unwrap().raw(tamper).await.unwrap();
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN") && out.contains("row 6"), "{out}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_stays_linear_under_a_concurrent_burst_from_two_processes() {
    let db = TestDb::new().await;
    let nats = tessera_testkit::nats_url();
    let one = ServerProcess::spawn(&db.url, "warn", &["--nats-url", &nats]).await;
    let two = ServerProcess::spawn(&db.url, "warn", &["--nats-url", &nats]).await;
    let pw = one
        .bootstrap_password()
        .or_else(|| two.bootstrap_password())
        .expect("one process bootstrapped");
    assert!(one.bootstrap_password().is_none() || two.bootstrap_password().is_none());
    let servers = [one.client(), two.client()];

    let admin_one = servers[0].clone().with_token(
        servers[0]
            .login("admin", SecretString::new(pw.clone()))
            .await
            .unwrap()
            .token,
    );
    admin_one
        .create_user(&tessera_core::api::CreateUserRequest {
            username: "burst".into(),
            role: Role::Viewer,
            password: Some(SecretString::new("burst-password-1")),
        })
        .await
        .unwrap();
    // Sessions to end concurrently, half opened on each process.
    let mut sessions = Vec::new();
    for i in 0..16 {
        let c = &servers[i % 2];
        let token = c
            .login("burst", SecretString::new("burst-password-1"))
            .await
            .unwrap()
            .token;
        sessions.push(c.clone().with_token(token));
    }
    let admins = [
        admin_one.clone(),
        servers[1].clone().with_token(
            servers[1]
                .login("admin", SecretString::new(pw.clone()))
                .await
                .unwrap()
                .token,
        ),
    ];
    let mut tasks = Vec::new();
    for s in sessions {
        tasks.push(tokio::spawn(async move { s.logout().await.map(|_| ()) }));
    }
    for i in 0..16 {
        let a = admins[i % 2].clone();
        let role = if i % 2 == 0 {
            Role::Operator
        } else {
            Role::Viewer
        };
        tasks.push(tokio::spawn(async move {
            a.update_user(
                "burst",
                &UpdateUserRequest {
                    role: Some(role),
                    disabled: None,
                },
            )
            .await
            .map(|_| ())
        }));
    }
    for t in futures_util::future::join_all(tasks).await {
        t.unwrap().unwrap();
    }
    let rows = verify_all(&admin_one).await;
    let role_changes = admin_one
        .audit_page(&AuditQuery {
            action: Some("user_role_changed".into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries
        .len() as u64;
    assert!(role_changes >= 1);
    // bootstrap + create + 18 logins + 16 logouts + the role changes that
    // were real changes; no row lost, none forked off the chain.
    assert_eq!(rows, 1 + 1 + 18 + 16 + role_changes);

    let cfg = tempfile::tempdir().unwrap();
    let (code, out, err) = ctl(
        cfg.path(),
        &["login", "--server", &two.url, "--password-stdin"],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}");
    assert!(one.terminate().await.success());
    assert!(two.terminate().await.success());
}
