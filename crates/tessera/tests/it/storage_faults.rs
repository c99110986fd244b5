//! Storage faults produced for real (issue 15, fault behaviour): the
//! PostgreSQL server stopped under a running Tessera server (a private
//! cluster of the test's own, never the shared one), and a server process
//! killed with SIGKILL while devices push events and operators write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_client::{ApiClient, ClientError, TlsTrust};
use tessera_core::api::{CreateEnrollmentTokenRequest, EventBatch, EventIn, SecretString};
use tessera_core::Timestamp;
use tessera_testkit::{
    backend, ctl, eventually, fast_heartbeat, online_device, read_until, shell_session, watch,
    Backend, PrivatePostgres, ServerProcess, TestDb, TestDevice, TestServer,
};

/// Events per batch in these tests.
const EVENTS: usize = 20;

/// Batch `n`: [`EVENTS`] events whose subjects name the batch, so each
/// batch's events are told apart from every other's.
fn batch(n: u64, at: Timestamp) -> EventBatch {
    EventBatch {
        events: (0..EVENTS)
            .map(|i| EventIn {
                kind: "fault.probe".into(),
                subject: format!("batch-{n} event-{i}"),
                occurred_at: at.to_rfc3339(),
                attributes: serde_json::json!({"batch": n, "event": i}),
            })
            .collect(),
    }
}

/// The batch number in a stored event's subject.
fn batch_of(subject: &str) -> u64 {
    subject
        .strip_prefix("batch-")
        .and_then(|r| r.split_once(' '))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a probe subject: {subject}"))
}

fn token_request() -> CreateEnrollmentTokenRequest {
    CreateEnrollmentTokenRequest {
        uses: 1,
        ttl_seconds: 3600,
        tags: vec![],
    }
}

/// Asserts `e` is the storage outage answer: 503 `storage_unavailable`
/// with `Retry-After`, and no word of the driver's.
fn assert_storage_unavailable(e: &ClientError, what: &str) {
    match e {
        ClientError::Api {
            status,
            code,
            message,
            retry_after,
        } => {
            assert_eq!(
                (*status, code.as_str()),
                (503, "storage_unavailable"),
                "{what}: {e}"
            );
            assert_eq!(*retry_after, Some(5), "{what}: Retry-After");
            for leak in [
                "refused",
                "os error",
                "127.0.0.1",
                "pool",
                "sqlx",
                "postgres",
            ] {
                assert!(!message.to_lowercase().contains(leak), "{what}: {message}");
            }
        }
        other => panic!("{what}: expected 503 storage_unavailable, got {other}"),
    }
}

/// Sends `echo <tag>-$((6*7))` into the shell and waits for `<tag>-42`:
/// the terminal's echo of the input never matches, only the shell's
/// output does.
async fn shell_answers(
    tx: &mut tessera_client::viewer::ViewerSender,
    rx: &mut tessera_client::viewer::ViewerReceiver,
    tag: &str,
) {
    tx.input(format!("echo {tag}-$((6*7))\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{tag}: send input: {e}"));
    read_until(rx, &format!("{tag}-42"), Duration::from_secs(30)).await;
}

/// `/readyz`'s status and error code (none when ready).
async fn readiness(s: &TestServer) -> (u16, Option<String>, Option<String>) {
    let r = s
        .http()
        .get(s.api("/readyz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("/readyz answers");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let code = body["error"]["code"].as_str().map(str::to_owned);
    (status, code, retry_after)
}

/// PostgreSQL stopped under a running server (`pg_ctl stop -m immediate`,
/// which breaks every open connection) and started again: `/readyz` turns
/// 503 `storage_unavailable`, the shell session between a connected agent
/// and a viewer goes on through several failed sweeps, device and operator
/// writes fail with 503 `storage_unavailable` and `Retry-After` (not a 500
/// with the driver's words), what was acknowledged before is all there
/// after, and the pool reconnects by itself.
///
/// Runs when the backend under test is PostgreSQL, against a private
/// cluster (`initdb` + `pg_ctl` on a free loopback port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_fails_writes_clearly_keeps_live_shells_and_comes_back() {
    if backend() != Backend::Postgres {
        eprintln!("skipped: a PostgreSQL fault (runs with TESSERA_TEST_BACKEND=postgres)");
        return;
    }
    if PrivatePostgres::bin_dir().is_none() {
        eprintln!("skipped: no initdb (PostgreSQL's server binaries) on this machine");
        return;
    }
    let pg = PrivatePostgres::start()
        .await
        .expect("a private PostgreSQL");
    let mut opts = fast_heartbeat(200);
    opts.database_url = Some(pg.url());
    let s = TestServer::start_with(opts).await;
    let admin = s.admin().await;
    let (device, _agent) = online_device(&s, &admin, "box").await;
    let pusher = device.client(&s);
    let at = Timestamp::from_millis(s.clock.now_ms());

    // Acknowledged before the outage: a batch of events and a token.
    let first = pusher.push_events(&batch(1, at)).await.unwrap();
    assert_eq!(first.accepted, EVENTS as u64);
    let token_before = admin
        .create_enrollment_token(&token_request())
        .await
        .unwrap();
    let session = shell_session(&admin, "box").await;
    let (mut tx, mut rx, _) = watch(&admin, &session).await;
    shell_answers(&mut tx, &mut rx, "before").await;
    assert_eq!(readiness(&s).await.0, 200);

    pg.stop_immediately().await.expect("stop PostgreSQL");

    let probed = std::time::Instant::now();
    let (status, code, retry_after) = readiness(&s).await;
    let probe_took = probed.elapsed();
    assert_eq!(
        (status, code.as_deref()),
        (503, Some("storage_unavailable")),
        "/readyz while PostgreSQL is down"
    );
    assert_eq!(retry_after.as_deref(), Some("5"));
    shell_answers(&mut tx, &mut rx, "during").await;

    // Writes fail clearly; each waits out the pool's acquire timeout, so
    // the presence and session sweeps fail many times meanwhile.
    let pushed = std::time::Instant::now();
    let refused = pusher.push_events(&batch(2, at)).await.unwrap_err();
    let refusal_took = pushed.elapsed();
    assert_storage_unavailable(&refused, "events pushed during the outage");
    let refused = admin
        .create_enrollment_token(&token_request())
        .await
        .unwrap_err();
    assert_storage_unavailable(&refused, "an operator's write during the outage");
    shell_answers(&mut tx, &mut rx, "still").await;
    assert!(s.state.registry().is_connected(&device.device_id));

    pg.start_again().await.expect("start PostgreSQL again");
    let back = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(60), || async {
            readiness(&s).await.0 == 200
        })
        .await,
        "/readyz passes again once PostgreSQL is back"
    );
    eprintln!(
        "outage: /readyz answered 503 in {probe_took:?}, a write 503 in {refusal_took:?}; \
         ready {:?} after PostgreSQL accepted connections again",
        back.elapsed()
    );
    shell_answers(&mut tx, &mut rx, "after").await;

    // The refused batch was not stored; sent again it is, once. The batch
    // acknowledged before is all there.
    let retried = pusher.push_events(&batch(2, at)).await.unwrap();
    assert_eq!((retried.accepted, retried.duplicates), (EVENTS as u64, 0));
    let again = pusher.push_events(&batch(1, at)).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, EVENTS as u64));
    let page = admin
        .events(&[
            ("kind", "fault.probe".to_owned()),
            ("limit", "1000".to_owned()),
        ])
        .await
        .unwrap();
    assert_eq!(page.events.len(), 2 * EVENTS);
    let tokens = admin.enrollment_tokens().await.unwrap();
    assert!(tokens.iter().any(|t| t.id == token_before.token.id));
    admin
        .create_enrollment_token(&token_request())
        .await
        .unwrap();
    let report = admin.audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    s.stop().await;
}

/// What a pusher learned of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered 2xx: the server promised it is stored.
    Acknowledged,
    /// No answer (the server died): stored or not, the device cannot know.
    Unknown,
}

/// A device pushes batches from three loops and an operator creates
/// tokens (each audited) from a fourth while the server process is killed
/// with SIGKILL; restarted on the same database and data directory, every
/// acknowledged batch is stored, every batch is all there or not at all,
/// each batch sent again is stored once (the events' content-derived ids
/// make a retry idempotent), every token has its audit row, and the audit
/// chain verifies. Both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_ingestion_keeps_each_acknowledged_batch_once_and_a_sound_chain() {
    let db = TestDb::new().await;
    let mut server = ServerProcess::spawn(&db.url, "warn", &[]).await;
    let password = server.bootstrap_password().expect("bootstrap password");
    let login = server
        .client()
        .login("admin", SecretString::new(password.clone()))
        .await
        .unwrap()
        .token;
    let admin = server.client().with_token(login.clone());
    let token = admin
        .create_enrollment_token(&token_request())
        .await
        .unwrap();
    let at = Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let device = TestDevice::enroll_at(&server.url, token.secret, "pusher", at.as_millis()).await;
    let pusher = ApiClient::new(&server.url, &TlsTrust::PublicRoots)
        .unwrap()
        .with_token(device.key.clone());

    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let outcomes = Arc::new(Mutex::new(BTreeMap::<u64, Outcome>::new()));
    let mut loops = Vec::new();
    for _ in 0..3 {
        let (pusher, next, outcomes) = (pusher.clone(), next.clone(), outcomes.clone());
        loops.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = pusher.push_events(&batch(n, at)).await;
                let outcome = match answer {
                    Ok(r) => {
                        assert_eq!(r.accepted, EVENTS as u64, "batch {n}: {r:?}");
                        Outcome::Acknowledged
                    }
                    Err(ClientError::Transport(_)) => Outcome::Unknown,
                    Err(e) => panic!("batch {n}: {e}"),
                };
                outcomes.lock().unwrap().insert(n, outcome);
                if outcome == Outcome::Unknown {
                    return;
                }
            }
        }));
    }
    let tokens_acknowledged = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let writer = {
        let (admin, acked) = (admin.clone(), tokens_acknowledged.clone());
        tokio::spawn(async move {
            while admin
                .create_enrollment_token(&token_request())
                .await
                .is_ok()
            {
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let acknowledged = |outcomes: &Mutex<BTreeMap<u64, Outcome>>| {
        outcomes
            .lock()
            .unwrap()
            .values()
            .filter(|o| **o == Outcome::Acknowledged)
            .count()
    };
    assert!(
        eventually(Duration::from_secs(120), || {
            let outcomes = outcomes.clone();
            async move { acknowledged(&outcomes) >= 30 }
        })
        .await,
        "30 batches acknowledged; stderr: {}",
        server.stderr()
    );
    let status = server.kill().await;
    assert!(!status.success(), "killed, not exited: {status}");
    for l in loops {
        tokio::time::timeout(Duration::from_secs(60), l)
            .await
            .expect("each pusher stops once the server is gone")
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer stops once the server is gone")
        .unwrap();
    let outcomes = outcomes.lock().unwrap().clone();
    let unknown: Vec<u64> = outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::Unknown)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(unknown.len(), 3, "each loop's last batch went unanswered");

    server
        .restart()
        .await
        .expect("the server starts again on its data");
    let stored = stored_per_batch(&db).await;
    for (n, outcome) in &outcomes {
        let count = stored.get(n).copied().unwrap_or(0);
        match outcome {
            Outcome::Acknowledged => assert_eq!(count, EVENTS, "acknowledged batch {n}"),
            Outcome::Unknown => assert!(
                count == 0 || count == EVENTS,
                "batch {n} half stored: {count} of {EVENTS}"
            ),
        }
    }

    eprintln!(
        "{} batches acknowledged; unanswered {unknown:?}, of which stored before the retry: {:?}",
        outcomes.len() - unknown.len(),
        unknown
            .iter()
            .filter(|n| stored.contains_key(n))
            .collect::<Vec<_>>()
    );

    // The device sends the unanswered batches again, and one answered one.
    let pusher = ApiClient::new(&server.url, &TlsTrust::PublicRoots)
        .unwrap()
        .with_token(device.key.clone());
    for n in &unknown {
        let r = pusher.push_events(&batch(*n, at)).await.unwrap();
        assert_eq!(r.accepted + r.duplicates, EVENTS as u64, "batch {n}: {r:?}");
    }
    let acked = outcomes
        .iter()
        .find(|(_, o)| **o == Outcome::Acknowledged)
        .map(|(n, _)| *n)
        .unwrap();
    let r = pusher.push_events(&batch(acked, at)).await.unwrap();
    assert_eq!((r.accepted, r.duplicates), (0, EVENTS as u64));
    let stored = stored_per_batch(&db).await;
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        outcomes.keys().copied().collect::<Vec<_>>(),
        "every batch sent is stored, and nothing else"
    );
    assert!(
        stored.values().all(|c| *c == EVENTS),
        "each event once: {stored:?}"
    );

    // Every token has its audit row (they commit together), at least every
    // acknowledged one is there, and the chain verifies, by the server and
    // by `tessera ctl` walking it itself.
    let (tokens, created) = tokens_and_their_audit_rows(&db).await;
    assert_eq!(tokens, created, "each token with its audit row");
    assert!(tokens >= tokens_acknowledged.load(std::sync::atomic::Ordering::SeqCst) as i64);
    let admin = ApiClient::new(&server.url, &TlsTrust::PublicRoots)
        .unwrap()
        .with_token(login);
    let report = admin.audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    let cfg = tempfile::tempdir().unwrap();
    let (code, out, err) = ctl(
        cfg.path(),
        &["login", "--server", &server.url, "--password-stdin"],
        Some(&format!("{password}\n")),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain OK"), "{out}");
    server.terminate().await;
}

/// How many probe events each batch has in the database.
async fn stored_per_batch(db: &TestDb) -> BTreeMap<u64, usize> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let subjects: Vec<String> =
        sqlx::query_scalar("SELECT subject FROM events WHERE kind = 'fault.probe'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut per_batch = BTreeMap::new();
    for s in &subjects {
        *per_batch.entry(batch_of(s)).or_insert(0) += 1;
    }
    per_batch
}

/// (enrollment tokens, `enrollment_token_created` audit rows).
async fn tokens_and_their_audit_rows(db: &TestDb) -> (i64, i64) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM enrollment_tokens")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'enrollment_token_created'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    (tokens, rows)
}
