//! Signed checkpoints of the audit chain (issue 12, finding 5): a log
//! rewritten the way the outside review did it — triggers dropped, rows
//! deleted, the rest re-chained, triggers restored — fails `verify` against
//! the checkpoints the node signed, and against the head a verifier
//! remembered even when the checkpoints were deleted too; an export
//! verifies offline, and a tampered export does not.

use std::collections::HashMap;
use std::time::Duration;

use tessera_client::{ApiClient, AuditQuery};
use tessera_core::api::AuditEntryView;
use tessera_core::audit::{
    chain_hash, AuditContent, ChainVerifier, Checkpoint, LogVerifier, GENESIS,
};
use tessera_core::roles::Role;
use tessera_core::secret::hex;
use tessera_testkit::{backend, ctl, ctl_admin, eventually, Backend, Options, TestServer};

fn unhex<const N: usize>(h: &str) -> [u8; N] {
    data_encoding::HEXLOWER
        .decode(h.as_bytes())
        .unwrap()
        .try_into()
        .unwrap()
}

async fn all_rows(admin: &ApiClient) -> Vec<AuditEntryView> {
    admin
        .audit_page(&AuditQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries
}

/// The rows without those in `drop`, renumbered from 1 and re-chained: a
/// chain that links and hashes correctly, as the reviewer made it.
fn rechained(rows: &[AuditEntryView], drop: &[i64]) -> Vec<(AuditContent, [u8; 32], [u8; 32])> {
    let mut prev = GENESIS;
    rows.iter()
        .filter(|r| !drop.contains(&r.seq))
        .enumerate()
        .map(|(i, r)| {
            let mut c = r.content().unwrap();
            c.seq = i as i64 + 1;
            let h = chain_hash(&prev, &c);
            let out = (c, prev, h);
            prev = h;
            out
        })
        .collect()
}

fn sql_text(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("'{}'", s.replace('\'', "''")),
        None => "NULL".to_owned(),
    }
}

fn sql_bytes(b: &[u8]) -> String {
    match backend() {
        Backend::Sqlite => format!("X'{}'", hex(b)),
        Backend::Postgres => format!("decode('{}', 'hex')", hex(b)),
    }
}

/// Rewrites the log behind the server's back: drop the triggers, delete
/// rows `drop`, write the rest re-chained, move the head, restore the
/// triggers — and, with `and_checkpoints`, delete every checkpoint too.
async fn rewrite_log(s: &TestServer, admin: &ApiClient, drop: &[i64], and_checkpoints: bool) {
    let rows = rechained(&all_rows(admin).await, drop);
    let (c_last, _, h_last) = rows.last().unwrap();
    let mut sql = String::new();
    match backend() {
        Backend::Sqlite => sql.push_str(
            "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; \
             DROP TRIGGER audit_checkpoints_no_delete; ",
        ),
        Backend::Postgres => sql.push_str(
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update; \
             ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_no_update; ",
        ),
    }
    sql.push_str("DELETE FROM audit_log; ");
    for (c, prev, h) in &rows {
        sql.push_str(&format!(
            "INSERT INTO audit_log (seq, occurred_at, tenant_id, actor, action, target, \
             source_ip, details, prev_hash, hash) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}); ",
            c.seq,
            c.occurred_at.as_millis(),
            sql_text(Some(&c.tenant_id)),
            sql_text(Some(&c.actor)),
            sql_text(Some(&c.action)),
            sql_text(c.target.as_deref()),
            sql_text(c.source_ip.as_deref()),
            sql_text(Some(&c.details)),
            sql_bytes(prev),
            sql_bytes(h),
        ));
    }
    sql.push_str(&format!(
        "UPDATE audit_head SET seq = {}, hash = {} WHERE id = 1; ",
        c_last.seq,
        sql_bytes(h_last)
    ));
    if and_checkpoints {
        sql.push_str("DELETE FROM audit_checkpoints; ");
    }
    match backend() {
        Backend::Sqlite => sql.push_str(
            "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END; \
             CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END; \
             CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints \
             BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;",
        ),
        Backend::Postgres => sql.push_str(
            "ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update; \
             ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_no_update;",
        ),
    }
    s.db.as_ref().unwrap().raw(&sql).await.unwrap();
}

/// The chain alone, as `verify` checked it before checkpoints.
async fn chain_links(admin: &ApiClient) -> bool {
    let mut v = ChainVerifier::default();
    all_rows(admin).await.iter().all(|e| {
        let (prev, hash) = e.hashes().unwrap();
        v.push(&e.content().unwrap(), &prev, &hash).is_ok()
    })
}

async fn some_history(s: &TestServer, admin: &ApiClient, prefix: &str, n: usize) {
    for i in 0..n {
        s.user(admin, &format!("{prefix}{i}"), Role::Viewer).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rechained_log_fails_verify_against_the_signed_checkpoints() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    some_history(&s, &admin, "a", 3).await;
    let signed = admin.audit_checkpoint_now().await.unwrap().unwrap();
    some_history(&s, &admin, "b", 2).await;
    let cfg = ctl_admin(&s).await;
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("audit chain OK"), "{out}");
    assert!(out.contains("signed checkpoints"), "{out}");
    assert!(admin.audit_verify().await.unwrap().ok);

    // Two rows before the checkpoint go; the rest is re-chained.
    rewrite_log(&s, &admin, &[3, 4], false).await;
    assert!(
        chain_links(&admin).await,
        "the rewritten chain links: a chain-only verify passes it"
    );

    // A verifier that remembers nothing still finds it: the signed row
    // no longer has the signed hash.
    let fresh = ctl_admin(&s).await;
    let (code, out, _) = ctl(fresh.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "the log was rewritten: row {} no longer has the hash {} signed",
            signed.seq, signed.kid
        )),
        "{out}"
    );
    let report = admin.audit_verify().await.unwrap();
    assert!(!report.ok);
    assert!(
        report.problem.unwrap().contains("the log was rewritten"),
        "the server's own verify agrees"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_that_deletes_the_checkpoints_too_fails_against_the_remembered_head() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    some_history(&s, &admin, "a", 3).await;
    let cfg = ctl_admin(&s).await;
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}");
    let rows = all_rows(&admin).await;
    let seen = rows.last().unwrap().clone();

    rewrite_log(&s, &admin, &[2, 5], true).await;
    // The server goes on appending on top of the forgery, so the
    // remembered row exists again, with another hash (the server itself
    // refuses to sign it: see the refusal tests below).
    some_history(&s, &admin, "c", 2).await;
    let refused = admin.audit_checkpoint_now().await.unwrap_err();
    assert_eq!(refused.code(), Some("audit_log_rewritten"), "{refused}");
    assert!(chain_links(&admin).await);

    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "the log was rewritten: row {} no longer has hash {} seen on",
            seen.seq, seen.hash
        )),
        "{out}"
    );

    // Cut below the remembered row instead: it is gone.
    rewrite_log(&s, &admin, &[3, 4, 6, 7, 8, 9, 10, 11], true).await;
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "the log was rewritten: row {} (hash {}",
            seen.seq, seen.hash
        )) && out.contains("is gone"),
        "{out}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_every_n_rows_after_an_interval_and_at_shutdown() {
    let opts = Options {
        configure: Some(Box::new(|c| {
            c.heartbeat_interval = Duration::from_millis(100);
            c.audit_checkpoint_rows = 5;
            c.audit_checkpoint_interval = Duration::from_secs(300);
        })),
        ..Options::default()
    };
    let s = TestServer::start_with(opts).await;
    let admin = s.admin().await;
    let kid = s.state.node_key().kid().to_owned();
    let latest = async |admin: &ApiClient| {
        let page = admin.audit_checkpoints(0).await.unwrap();
        page.checkpoints.last().map(|c| c.seq).unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(10), async || latest(&admin).await >= 1).await,
        "the start-up checkpoint signs what is there"
    );
    let start = latest(&admin).await;
    some_history(&s, &admin, "n", 3).await; // six rows
    assert!(
        eventually(Duration::from_secs(10), async || latest(&admin).await
            >= start + 5)
        .await,
        "five rows past the last checkpoint, one is written"
    );
    // One row, not five: signed only once the interval has passed.
    s.user(&admin, "one", Role::Viewer).await;
    let head = all_rows(&admin).await.last().unwrap().seq;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(latest(&admin).await < head, "not due yet");
    s.clock.advance(Duration::from_secs(301));
    assert!(
        eventually(Duration::from_secs(10), async || latest(&admin).await
            == head)
        .await,
        "after the interval the head is signed"
    );

    // Every checkpoint verifies against the published key.
    let keys: HashMap<String, [u8; 32]> = admin
        .audit_node_keys()
        .await
        .unwrap()
        .iter()
        .map(|k| (k.kid.clone(), unhex(&k.public_key)))
        .collect();
    let cps: Vec<Checkpoint> = admin
        .audit_checkpoints(0)
        .await
        .unwrap()
        .checkpoints
        .iter()
        .map(|c| c.checkpoint().unwrap())
        .collect();
    assert!(cps.iter().all(|c| c.kid == kid));
    let mut v = LogVerifier::new(&keys, cps).unwrap();
    for e in all_rows(&admin).await {
        let (prev, hash) = e.hashes().unwrap();
        v.push(&e.content().unwrap(), &prev, &hash).unwrap();
    }
    assert!(v.finish().unwrap().checkpoints >= 3);

    // A row, then a graceful stop: the last row of the run is signed.
    s.user(&admin, "last", Role::Viewer).await;
    let head = all_rows(&admin).await.last().unwrap().seq;
    let pw = s.admin_password.clone().unwrap();
    let url = s.database_url.clone();
    let mut s = s;
    let db = s.db.take();
    s.stop().await;
    let again = TestServer::start_with(Options {
        database_url: Some(url),
        ..Options::default()
    })
    .await;
    let admin = again.login("admin", &pw).await;
    let signed: Vec<(i64, String)> = admin
        .audit_checkpoints(0)
        .await
        .unwrap()
        .checkpoints
        .iter()
        .map(|c| (c.seq, c.kid.clone()))
        .collect();
    assert!(
        signed.contains(&(head, kid)),
        "the first node signed row {head} on its way down: {signed:?}"
    );
    again.stop().await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_routes_refuse_bad_queries_and_operators_without_audit_read() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let viewer = s.user(&admin, "vera", Role::Viewer).await;
    let signed = async || {
        !admin
            .audit_checkpoints(0)
            .await
            .unwrap()
            .checkpoints
            .is_empty()
    };
    assert!(eventually(Duration::from_secs(10), signed).await);
    let before = admin.audit_checkpoints(0).await.unwrap().checkpoints;
    let token = s
        .client()
        .login(
            "admin",
            tessera_core::api::SecretString::new(s.admin_password.clone().unwrap()),
        )
        .await
        .unwrap()
        .token;
    for (path, word) in [
        (
            "/api/v1/audit?order=sideways",
            "`order` must be `oldest` or `newest`",
        ),
        ("/api/v1/audit?before=x", "query parameters are invalid"),
        (
            "/api/v1/audit/checkpoints?limit=0",
            "`limit` must be between 1 and 1000",
        ),
        (
            "/api/v1/audit/checkpoints?after=soon",
            "query parameters are invalid",
        ),
    ] {
        let resp = s
            .http()
            .get(s.api(path))
            .bearer_auth(token.expose())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{path}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(word),
            "{path}: {body}"
        );
    }
    // A viewer may not read the log, its checkpoints or keys, nor sign.
    let err = viewer.audit_checkpoint_now().await.unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");
    assert!(viewer.audit_verify().await.is_err());
    assert!(viewer.audit_node_keys().await.is_err());
    assert!(viewer.audit_checkpoints(0).await.is_err());
    assert_eq!(
        admin.audit_checkpoints(0).await.unwrap().checkpoints,
        before
    );
    s.stop().await;
}

/// Deletes every checkpoint behind the server's back (triggers dropped
/// and restored), leaving the rows alone.
async fn delete_checkpoints(s: &TestServer) {
    s.db.as_ref()
        .unwrap()
        .raw(delete_checkpoints_sql())
        .await
        .unwrap();
}

/// See [`delete_checkpoints`].
fn delete_checkpoints_sql() -> &'static str {
    match backend() {
        Backend::Sqlite => {
            "DROP TRIGGER audit_checkpoints_no_delete; DELETE FROM audit_checkpoints; \
             CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints \
             BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;"
        }
        Backend::Postgres => {
            "ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_no_update; \
             DELETE FROM audit_checkpoints; \
             ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_no_update;"
        }
    }
}

fn fast_sweep() -> Options {
    Options {
        configure: Some(Box::new(|c| {
            c.heartbeat_interval = Duration::from_millis(100);
            c.audit_checkpoint_interval = Duration::from_secs(300);
        })),
        ..Options::default()
    }
}

/// The reviewer's attack (audit2 finding A): drop the triggers, delete
/// rows and every checkpoint, re-chain the rest — and wait for the sweep.
/// The node remembers the head it signed, so it refuses to sign the
/// rewritten head, and every verify fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_sign_a_log_rewritten_behind_it() {
    let s = TestServer::start_with(fast_sweep()).await;
    let admin = s.admin().await;
    some_history(&s, &admin, "a", 3).await;
    let signed = admin.audit_checkpoint_now().await.unwrap().unwrap();

    rewrite_log(&s, &admin, &[2, 3], true).await;
    assert!(chain_links(&admin).await);
    // Due by time, several heartbeats: before, the sweep signed the forgery.
    s.clock.advance(Duration::from_secs(301));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let page = admin.audit_checkpoints(0).await.unwrap();
    assert!(
        page.checkpoints.is_empty(),
        "nothing signed the rewritten head: {:?}",
        page.checkpoints
    );
    let refused = admin.audit_checkpoint_now().await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert_eq!(refused.code(), Some("audit_log_rewritten"), "{refused}");
    assert!(
        refused.to_string().contains(&format!("row {}", signed.seq)),
        "{refused}"
    );

    let report = admin.audit_verify().await.unwrap();
    assert!(!report.ok);
    let problem = report.problem.unwrap();
    assert!(problem.contains("the log was rewritten"), "{problem}");
    assert!(problem.contains("will not sign"), "{problem}");
    let cfg = ctl_admin(&s).await;
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the log was rewritten"), "{out}");

    // The alarm: one audit row, and a metric counting every refusal.
    let alarms: Vec<_> = all_rows(&admin)
        .await
        .into_iter()
        .filter(|r| r.action == "audit_checkpoint_refused")
        .collect();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].details["signed_seq"], signed.seq);
    let metrics = s.state.metrics().render();
    assert!(
        metrics.contains("tessera_audit_checkpoint_refusals_total")
            && !metrics.contains("tessera_audit_checkpoint_refusals_total 0"),
        "{metrics}"
    );
    s.stop().await;
}

/// A deletion that lands while the node is signing (checked, then
/// signed) is refused, not signed over: the check, the reads and the
/// checkpoint's row are one transaction that holds writers off. Before,
/// the node checked, the deletion committed, and it signed the new head,
/// which hid the deleted checkpoints from every later check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_deleted_while_the_node_signs_are_refused_not_signed_over() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    some_history(&s, &admin, "a", 2).await;
    let signed = admin.audit_checkpoint_now().await.unwrap().unwrap();
    some_history(&s, &admin, "b", 1).await;
    let deleting =
        s.db.as_ref()
            .unwrap()
            .raw_uncommitted(delete_checkpoints_sql())
            .await
            .unwrap();
    let signing = tokio::spawn({
        let admin = admin.clone();
        async move { admin.audit_checkpoint_now().await }
    });
    // The node has read the log (still intact, for it) and waits to sign.
    tokio::time::sleep(Duration::from_millis(500)).await;
    deleting.commit().await.unwrap();
    let refused = signing.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Some("audit_log_rewritten"), "{refused}");
    assert!(
        refused.to_string().contains(&format!("row {}", signed.seq)),
        "{refused}"
    );
    let page = admin.audit_checkpoints(0).await.unwrap();
    assert!(page.checkpoints.is_empty(), "{:?}", page.checkpoints);
    s.stop().await;
}

/// Only the checkpoints deleted, rows intact: the node's own checkpoint
/// of the head it remembers is gone, so it signs nothing new (before, it
/// signed the same head again and verify passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_checkpoints_stops_the_node_signing_and_fails_verify() {
    let s = TestServer::start_with(fast_sweep()).await;
    let admin = s.admin().await;
    some_history(&s, &admin, "a", 2).await;
    let signed = admin.audit_checkpoint_now().await.unwrap().unwrap();
    delete_checkpoints(&s).await;
    some_history(&s, &admin, "b", 1).await;
    let refused = admin.audit_checkpoint_now().await.unwrap_err();
    assert_eq!(refused.code(), Some("audit_log_rewritten"), "{refused}");
    let report = admin.audit_verify().await.unwrap();
    assert!(!report.ok);
    let problem = report.problem.unwrap();
    assert!(
        problem.contains(&format!(
            "signed checkpoints were deleted: this node's checkpoint of row {} is gone",
            signed.seq
        )),
        "{problem}"
    );
    s.stop().await;
}

/// A junk checkpoint row far past the head (seq = i64::MAX, no valid
/// signature) is not taken as covering the head: the node still signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_checkpoint_row_does_not_stop_signing() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let kid = s.state.node_key().kid().to_owned();
    s.db.as_ref()
        .unwrap()
        .raw(&format!(
            "INSERT INTO audit_checkpoints (seq, hash, signed_at, kid, signature) \
             VALUES ({}, {}, 0, '{kid}', {})",
            i64::MAX,
            sql_bytes(&[0u8; 32]),
            sql_bytes(&[0u8; 64]),
        ))
        .await
        .unwrap();
    some_history(&s, &admin, "j", 2).await;
    let head = all_rows(&admin).await.last().unwrap().seq;
    let c = admin.audit_checkpoint_now().await.unwrap().unwrap();
    assert_eq!(c.seq, head, "the head is signed, not the junk row returned");
    assert_eq!(c.kid, kid);
    // Verify still names the junk row as forged.
    let report = admin.audit_verify().await.unwrap();
    assert!(!report.ok);
    assert!(
        report.problem.unwrap().contains("forged checkpoint"),
        "the junk row is reported"
    );
    s.stop().await;
}

/// Two nodes' checkpoints of one row across a page end: paging by
/// `(after, after_kid)` returns both (before, the second was skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_pages_keep_a_second_nodes_checkpoint_of_the_same_row() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    some_history(&s, &admin, "p", 2).await;
    let mine = admin.audit_checkpoint_now().await.unwrap().unwrap();
    // A second node, published like any other, signs the same row.
    let other = tessera_server::node_key::NodeKey::generate();
    let hash: [u8; 32] = unhex(&mine.hash);
    let at = tessera_core::Clock::now(&s.clock);
    let sig = other.sign(&Checkpoint::message(mine.seq, &hash, at, other.kid()));
    s.db.as_ref()
        .unwrap()
        .raw(&format!(
            "INSERT INTO node_keys (kid, public_key, created_at) VALUES ('{}', {}, {}); \
             INSERT INTO audit_checkpoints (seq, hash, signed_at, kid, signature) \
             VALUES ({}, {}, {}, '{}', {});",
            other.kid(),
            sql_bytes(&other.public_key()),
            at.as_millis(),
            mine.seq,
            sql_bytes(&hash),
            at.as_millis(),
            other.kid(),
            sql_bytes(&sig),
        ))
        .await
        .unwrap();
    let all = admin.audit_checkpoints(0).await.unwrap().checkpoints;
    let at_row: Vec<_> = all.iter().filter(|c| c.seq == mine.seq).collect();
    assert_eq!(at_row.len(), 2, "{all:?}");
    // A page ends right after the first of the two.
    let split = all.iter().position(|c| c.seq == mine.seq).unwrap() + 1;
    let first = admin
        .audit_checkpoints_page(0, None, split as i64)
        .await
        .unwrap();
    assert_eq!(first.next_after, Some(mine.seq));
    let mut paged = first.checkpoints;
    let (mut after, mut after_kid) = (first.next_after, first.next_after_kid);
    while let Some(n) = after {
        let page = admin
            .audit_checkpoints_page(n, after_kid.as_deref(), split as i64)
            .await
            .unwrap();
        paged.extend(page.checkpoints);
        (after, after_kid) = (page.next_after, page.next_after_kid);
    }
    assert_eq!(paged, all);
    // Both verify, by the server and by ctl.
    assert!(admin.audit_verify().await.unwrap().ok);
    let cfg = ctl_admin(&s).await;
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}");
    s.stop().await;
}
