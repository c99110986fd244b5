//! Viewer tokens against an attacker who holds a copy of the database
//! (project issue 12): nothing in it signs a token, a token the deployment
//! never minted is refused even when the node key signed it, and one minted
//! token opens one viewer.

use std::os::unix::fs::MetadataExt;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sqlx::{Connection, Row};
use tessera_client::ApiClient;
use tessera_core::api::{CreateSessionRequest, SecretString};
use tessera_core::roles::Role;
use tessera_server::auth::viewer::{ViewerClaims, ViewerKeys, PURPOSE};
use tessera_server::node_key::NodeKey;
use tessera_testkit::{backend, online_device, shell_session, Backend, Options, TestServer};

/// Every row of every table, as text (binary columns in hex), the way an
/// attacker with a copy of the database would read it.
async fn dump(url: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match backend() {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            let tables: Vec<String> =
                sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
            for t in tables {
                let cols: Vec<String> =
                    sqlx::query(&format!("SELECT name FROM pragma_table_info('{t}')"))
                        .fetch_all(&mut c)
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                let exprs: Vec<String> = cols
                    .iter()
                    .map(|c| {
                        format!("coalesce(quote(\"{c}\"), '') || ' ' || coalesce(hex(\"{c}\"), '')")
                    })
                    .collect();
                let sql = format!("SELECT {} FROM \"{t}\"", exprs.join(" || ' | ' || "));
                for r in sqlx::query(&sql).fetch_all(&mut c).await.unwrap() {
                    out.push((t.clone(), r.get::<String, _>(0).to_ascii_lowercase()));
                }
            }
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let tables: Vec<String> = sqlx::query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
            for t in tables {
                let sql = format!("SELECT row_to_json(x)::text FROM \"{t}\" x");
                for r in sqlx::query(&sql).fetch_all(&mut c).await.unwrap() {
                    out.push((t.clone(), r.get::<String, _>(0).to_ascii_lowercase()));
                }
            }
        }
    }
    out
}

/// Every binary value in the database: what an attacker with a copy would
/// try as a signing secret.
async fn binary_values(url: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    match backend() {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            let cols: Vec<(String, String)> = sqlx::query(
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
            for (t, col) in cols {
                let sql = format!("SELECT \"{col}\" FROM \"{t}\" WHERE typeof(\"{col}\") = 'blob'");
                for r in sqlx::query(&sql).fetch_all(&mut c).await.unwrap() {
                    out.push(r.get::<Vec<u8>, _>(0));
                }
            }
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let cols: Vec<(String, String)> = sqlx::query(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = 'public' AND data_type = 'bytea'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
            for (t, col) in cols {
                let sql = format!("SELECT \"{col}\" FROM \"{t}\" WHERE \"{col}\" IS NOT NULL");
                for r in sqlx::query(&sql).fetch_all(&mut c).await.unwrap() {
                    out.push(r.get::<Vec<u8>, _>(0));
                }
            }
        }
    }
    out
}

/// What the database says about the node keys: (kid, public key).
async fn node_keys(s: &TestServer) -> Vec<(String, Vec<u8>)> {
    let pool = s.state.db().pool();
    sqlx::query("SELECT kid, public_key FROM node_keys")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("kid"), r.get("public_key")))
        .collect()
}

/// The admin's live login, as the database has it: (login id, user id, tenant).
async fn admin_login(s: &TestServer) -> (String, String, String) {
    let r = sqlx::query(
        "SELECT s.id, s.user_id, s.tenant_id FROM operator_sessions s \
         JOIN users u ON u.id = s.user_id \
         WHERE u.username = 'admin' AND s.revoked_at IS NULL ORDER BY s.created_at DESC",
    )
    .fetch_one(s.state.db().pool())
    .await
    .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn claims(s: &TestServer, login: &(String, String, String), sid: &str, jti: &str) -> ViewerClaims {
    let iat = s.state.now().as_millis() / 1000;
    ViewerClaims {
        sub: login.1.clone(),
        sid: sid.to_owned(),
        tid: login.2.clone(),
        access: "control".into(),
        purpose: PURPOSE.into(),
        lid: login.0.clone(),
        iat,
        exp: iat + 120,
        jti: jti.to_owned(),
    }
}

/// Opens `/ws/viewer` with `token`: Ok, or the refusal's (status, code, message).
async fn open(
    client: &ApiClient,
    sid: &str,
    token: &str,
) -> Result<(), (Option<u16>, Option<String>, String)> {
    match tessera_client::viewer::connect(client, sid, &SecretString::new(token.to_owned())).await {
        Ok(_) => Ok(()),
        Err(e) => Err((e.status(), e.code().map(str::to_owned), e.to_string())),
    }
}

fn jti_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let json = data_encoding::BASE64URL_NOPAD
        .decode(payload.as_bytes())
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v["jti"].as_str().unwrap().to_owned()
}

async fn used(s: &TestServer) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM viewer_tokens WHERE used_at IS NOT NULL")
        .fetch_one(s.state.db().pool())
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_copy_holds_no_signing_key_and_cannot_forge_a_viewer_token() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let sid = shell_session(&admin, "box").await;
    // A real token minted too, so its row is in the copy.
    let _real = admin.viewer_token(&sid).await.unwrap();

    let rows = dump(&s.database_url).await;
    assert!(
        rows.iter().all(|(t, _)| t != "server_keys"),
        "the shared secret's table is gone"
    );
    let keys = node_keys(&s).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].1.len(), 32, "only a public key");
    // The private seed (from the key file, which the copy does not hold)
    // appears nowhere in the database, in hex or in base64.
    let file = std::fs::read_to_string(s.data_dir().join("node.key")).unwrap();
    let seed_b64 = file.lines().nth(1).unwrap().trim().to_owned();
    let seed = data_encoding::BASE64URL_NOPAD
        .decode(seed_b64.as_bytes())
        .unwrap();
    let seed_hex = data_encoding::HEXLOWER.encode(&seed);
    for (table, row) in &rows {
        assert!(
            !row.contains(&seed_hex) && !row.contains(&seed_b64.to_ascii_lowercase()),
            "{table} holds the node's private key"
        );
    }

    let login = admin_login(&s).await;
    let kid = keys[0].0.clone();
    // A fresh Ed25519 key claiming the real kid.
    let forger = NodeKey::generate();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.clone());
    let forged = encode(
        &header,
        &claims(&s, &login, &sid, "forged-1"),
        &EncodingKey::from_ed_der(&forger.pkcs8_der().unwrap()),
    )
    .unwrap();
    let (status, code, _) = open(&admin, &sid, &forged).await.unwrap_err();
    assert_eq!(
        (status, code.as_deref()),
        (Some(401), Some("invalid_token"))
    );
    // HS256 under the real kid, signed with every binary value the copy
    // holds (where the old shared secret lived) and a guess.
    let mut secrets = binary_values(&s.database_url).await;
    assert!(
        secrets.len() >= 3,
        "the copy has binary values: {}",
        secrets.len()
    );
    secrets.push(vec![0u8; 32]);
    for secret in secrets {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let hs = encode(
            &header,
            &claims(&s, &login, &sid, "forged-2"),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        let (status, code, _) = open(&admin, &sid, &hs).await.unwrap_err();
        assert_eq!(
            (status, code.as_deref()),
            (Some(401), Some("invalid_token"))
        );
    }
    // The session is untouched: still active, nobody watching, no token spent.
    assert_eq!(admin.session(&sid).await.unwrap().state, "active");
    assert_eq!(s.state.hub().get(&sid).unwrap().viewer_count(), 0);
    assert_eq!(used(&s).await, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_the_node_key_but_never_minted_is_refused() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let watcher = s.user(&admin, "watcher", Role::Viewer).await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let sid = shell_session(&admin, "box").await;
    // More than a database copy: the node key file itself.
    let node = NodeKey::load_or_create(&s.data_dir().join("node.key")).unwrap();
    let keys = ViewerKeys::new(&node).unwrap();
    let login = admin_login(&s).await;

    let made_up = keys.mint(&claims(&s, &login, &sid, &uuid_like())).unwrap();
    let (status, code, message) = open(&admin, &sid, &made_up).await.unwrap_err();
    assert_eq!(
        (status, code.as_deref()),
        (Some(401), Some("invalid_token"))
    );
    assert!(
        message.contains("not issued by this deployment"),
        "{message}"
    );

    // A real view_only token's jti, re-signed as `control`: refused too.
    let real = watcher.viewer_token(&sid).await.unwrap();
    assert_eq!(real.access, "view_only");
    let mut c = claims_of(real.token.expose());
    c.access = "control".into();
    let upgraded = keys.mint(&c).unwrap();
    // The watcher's role allows no control, which admission checks (403)
    // before the jti, which was minted view_only.
    let (status, code, _) = open(&watcher, &sid, &upgraded).await.unwrap_err();
    assert_eq!((status, code.as_deref()), (Some(403), Some("forbidden")));
    // An operator whose role allows control, in a view-only session: the
    // signature and the role pass, and only the jti, recorded view_only,
    // refuses the upgrade.
    let view_sid = admin
        .create_session(&CreateSessionRequest {
            device: "box".to_owned(),
            access: Some("view".to_owned()),
            channel: None,
        })
        .await
        .unwrap()
        .id;
    let admins = admin.viewer_token(&view_sid).await.unwrap();
    assert_eq!(admins.access, "view_only");
    let mut c = claims_of(admins.token.expose());
    c.access = "control".into();
    let (status, code, message) = open(&admin, &view_sid, &keys.mint(&c).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        (status, code.as_deref()),
        (Some(401), Some("invalid_token")),
        "{message}"
    );
    // The real one still opens its one viewer.
    open(&watcher, &sid, real.token.expose()).await.unwrap();
    assert_eq!(used(&s).await, 1);
    s.stop().await;
}

/// The claims of a token, read without checking its signature.
fn claims_of(token: &str) -> ViewerClaims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .unwrap(),
    )
    .unwrap()
}

fn uuid_like() -> String {
    data_encoding::HEXLOWER.encode(&tessera_core::secret::random_bytes::<16>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_opens_one_viewer_and_every_minting_is_audited() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let sid = shell_session(&admin, "box").await;

    let mut jtis = Vec::new();
    for _ in 0..3 {
        let t = admin.viewer_token(&sid).await.unwrap();
        jtis.push(jti_of(t.token.expose()));
        if jtis.len() == 1 {
            open(&admin, &sid, t.token.expose()).await.unwrap();
            let (status, code, _) = open(&admin, &sid, t.token.expose()).await.unwrap_err();
            assert_eq!((status, code.as_deref()), (Some(401), Some("token_used")));
        }
    }
    let page = admin
        .audit_page(&tessera_client::AuditQuery {
            action: Some("viewer_token_minted".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    for jti in &jtis {
        let e = page
            .entries
            .iter()
            .find(|e| e.details["token_id"] == jti.as_str())
            .unwrap_or_else(|| panic!("no viewer_token_minted for {jti}: {page:?}"));
        assert_eq!(e.target.as_deref(), Some(format!("session:{sid}").as_str()));
        assert_eq!(e.details["access"], "control");
    }
    // And each is recorded with who minted it, for which session and access.
    let rows = sqlx::query("SELECT jti, session_id, user_id, access FROM viewer_tokens")
        .fetch_all(s.state.db().pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let login = admin_login(&s).await;
    for r in rows {
        assert!(jtis.contains(&r.get::<String, _>(0)));
        assert_eq!(r.get::<String, _>(1), sid);
        assert_eq!(r.get::<String, _>(2), login.1);
        assert_eq!(r.get::<String, _>(3), "control");
    }
    assert_eq!(used(&s).await, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_key_file_is_private_and_a_restart_keeps_its_kid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("elsewhere.key");
    let configure = |path: std::path::PathBuf| -> tessera_testkit::Configure {
        Box::new(move |c| c.node_key = Some(path))
    };
    let mut s = TestServer::start_with(Options {
        configure: Some(configure(path.clone())),
        ..Default::default()
    })
    .await;
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert!(
        !s.data_dir().join("node.key").exists(),
        "the path given is used"
    );
    let first = node_keys(&s).await;
    assert_eq!(first.len(), 1);
    let db = s.db.take();
    let url = s.database_url.clone();
    s.stop().await;

    let s = TestServer::start_with(Options {
        database_url: Some(url),
        configure: Some(configure(path.clone())),
        ..Default::default()
    })
    .await;
    assert_eq!(node_keys(&s).await, first, "the same key, the same kid");
    assert_eq!(
        s.state.viewer_keys().kid(),
        first[0].0,
        "the node signs under the kid it published"
    );
    s.stop().await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_node_key_lives_in_the_data_dir_with_mode_0600() {
    let s = TestServer::start().await;
    let path = s.data_dir().join("node.key");
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    let node = NodeKey::load_or_create(&path).unwrap();
    assert_eq!(
        node_keys(&s).await,
        vec![(node.kid().to_owned(), node.public_key().to_vec())]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_viewer_tokens_are_forgotten_by_the_sweep() {
    let s = TestServer::start_with(tessera_testkit::fast_heartbeat(200)).await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let sid = shell_session(&admin, "box").await;
    admin.viewer_token(&sid).await.unwrap();
    let count = || async {
        sqlx::query("SELECT COUNT(*) FROM viewer_tokens")
            .fetch_one(s.state.db().pool())
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    assert_eq!(count().await, 1);
    // Within the hour after expiry the row stays; past it, the sweep drops it.
    s.clock.advance(std::time::Duration::from_secs(30 * 60));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(count().await, 1);
    s.clock.advance(std::time::Duration::from_secs(40 * 60));
    assert!(
        tessera_testkit::eventually(std::time::Duration::from_secs(10), || async {
            count().await == 0
        })
        .await
    );
    s.stop().await;
}
