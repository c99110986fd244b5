//! The console's long lists (devices, sessions, audit) searched, sorted
//! and paged by the database, over HTTP on the real server: page
//! boundaries, a page past the end, and query parameters that are refused
//! in words or matched literally (a `%` or `_` in a search is a character,
//! not a wildcard). Rows are seeded straight into the server's database;
//! every read goes through the pages.

use reqwest::header::COOKIE;
use reqwest::StatusCode;
use tessera_core::api::SecretString;
use tessera_core::identity::{DeviceId, DeviceKeys};
use tessera_server::store::audit::{Action, Actor, AuditEvent};
use tessera_server::tenancy::BOOTSTRAP_TENANT;
use tessera_testkit::{TestDevice, TestServer};

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn sign_in(s: &TestServer) -> String {
    let pw = s.admin_password.clone().unwrap();
    let resp = http()
        .post(format!("{}/login", s.url))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "admin"), ("password", &pw), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    set.split(';').next().unwrap().to_owned()
}

/// GETs a console page; its status and HTML.
async fn get(s: &TestServer, cookie: &str, path: &str) -> (StatusCode, String) {
    let resp = http()
        .get(format!("{}{path}", s.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

/// The device names a devices page lists, in order.
fn names(html: &str) -> Vec<String> {
    html.split("<a href=\"/devices/")
        .skip(1)
        .filter_map(|rest| {
            let text = rest.split_once("\">")?.1;
            Some(text.split_once("</a>")?.0.to_owned())
        })
        .filter(|n| !n.contains("Revoke"))
        .collect()
}

async fn admin_id(s: &TestServer) -> String {
    sqlx::query_scalar("SELECT id FROM users WHERE username = 'admin'")
        .fetch_one(s.state.db().pool())
        .await
        .unwrap()
}

/// Inserts `n` devices `box-000`…: every 10th tagged `lab0` (a `0` is not
/// base32, so the word cannot also match the start of a random id), last seen
/// `i` minutes after the epoch of the test clock's start (none for 0).
async fn seed_devices(s: &TestServer, n: usize) -> Vec<String> {
    let owner = admin_id(s).await;
    let base = s.clock.now_ms() - 10_000_000;
    let mut ids = Vec::new();
    for i in 0..n {
        let keys = DeviceKeys::generate();
        let id = keys.device_id().as_str().to_owned();
        let tags = if i % 10 == 0 { r#"["lab0"]"# } else { "[]" };
        // Upper case now and then: the list sorts case-insensitively.
        let name = if i % 7 == 0 {
            format!("BOX-{i:03}")
        } else {
            format!("box-{i:03}")
        };
        sqlx::query(
            "INSERT INTO devices (id, tenant_id, ed25519_public, x25519_public, identity_signature, \
             name, hostname, os, tags, enrolled_via, enrolled_by, owner_user_id, created_at, \
             last_seen_at, ephemeral) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'linux', $8, 'pairing', $9, $9, $10, $11, 0)",
        )
        .bind(&id)
        .bind(BOOTSTRAP_TENANT)
        .bind(keys.ed25519_public().to_vec())
        .bind(keys.x25519_public().to_vec())
        .bind(vec![0u8; 64])
        .bind(&name)
        .bind(format!("host{i:03}.lan"))
        .bind(tags)
        .bind(&owner)
        .bind(base)
        .bind((i > 0).then(|| base + i as i64 * 60_000))
        .execute(s.state.db().pool())
        .await
        .unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_list_searches_sorts_and_pages_in_the_database() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let keyed = TestDevice::enroll(&s, &admin, "zz-keyed").await;
    seed_devices(&s, 120).await;
    // box-100 is connected and seen now: online.
    sqlx::query("UPDATE devices SET connected_at = $1, last_seen_at = $1 WHERE name = 'box-100'")
        .bind(s.clock.now_ms())
        .execute(s.state.db().pool())
        .await
        .unwrap();
    let cookie = sign_in(&s).await;

    // 121 devices: pages of 50, 50 and 21, by name whatever the case.
    let (st, first) = get(&s, &cookie, "/devices").await;
    assert_eq!(st, StatusCode::OK);
    let first_names = names(&first);
    assert_eq!(first_names.len(), 50);
    assert_eq!(first_names[..2], ["BOX-000", "box-001"]);
    assert!(first.contains("121 of 121 devices"));
    assert!(first.contains("Page 1 of 3"));
    assert!(first.contains("rel=\"next\" href=\"/devices?q=&amp;sort=name&amp;page=2\""));
    assert!(!first.contains("rel=\"prev\""));
    let (_, second) = get(&s, &cookie, "/devices?page=2").await;
    assert_eq!(names(&second)[0], "box-050");
    assert!(second.contains("rel=\"prev\" href=\"/devices?q=&amp;sort=name&amp;page=1\""));
    let (_, last) = get(&s, &cookie, "/devices?page=3").await;
    let last_names = names(&last);
    assert_eq!(last_names.len(), 21);
    assert_eq!(last_names.last().unwrap(), "zz-keyed");
    assert!(!last.contains("rel=\"next\""));
    // Past the end: an empty state that says so and leads back.
    let (st, beyond) = get(&s, &cookie, "/devices?page=4").await;
    assert_eq!(st, StatusCode::OK);
    assert!(beyond.contains("There is no page 4: the list has 3 pages."));
    assert!(beyond.contains("page=3\">Go to the last page"));

    // Sorts.
    let (_, desc) = get(&s, &cookie, "/devices?sort=-name").await;
    assert_eq!(names(&desc)[..3], ["zz-keyed", "BOX-119", "box-118"]);
    let (_, seen) = get(&s, &cookie, "/devices?sort=seen").await;
    assert_eq!(names(&seen)[0], "box-100", "seen just now");
    assert_eq!(names(&seen)[1], "BOX-119");
    let (_, oldest) = get(&s, &cookie, "/devices?sort=-seen").await;
    assert_eq!(
        names(&oldest)[..2],
        ["BOX-000", "zz-keyed"],
        "never seen first"
    );
    let (_, online) = get(&s, &cookie, "/devices?sort=online").await;
    assert_eq!(names(&online)[..2], ["box-100", "BOX-000"]);

    // Search: by name (case-insensitive), tag, hostname, key and id prefix.
    let (_, found) = get(&s, &cookie, "/devices?q=Box-11").await;
    assert_eq!(names(&found).len(), 10);
    assert!(found.contains("10 of 121 devices"));
    let (_, lab) = get(&s, &cookie, "/devices?q=lab0").await;
    assert_eq!(names(&lab).len(), 12);
    let (_, both) = get(&s, &cookie, "/devices?q=lab0+host11").await;
    assert_eq!(names(&both), ["box-110"]);
    let prefix = keyed.key.expose()[..12].to_owned();
    let (_, by_key) = get(&s, &cookie, &format!("/devices?q={prefix}")).await;
    assert_eq!(names(&by_key), ["zz-keyed"]);
    let grouped = DeviceId::parse(&keyed.device_id).unwrap().grouped()[..9].to_lowercase();
    let (_, by_id) = get(&s, &cookie, &format!("/devices?q={grouped}")).await;
    assert_eq!(names(&by_id), ["zz-keyed"]);
    // LIKE wildcards are characters: `%` and `_` match nothing here (as
    // wildcards they would match every device), `\` neither.
    let (_, underscore) = get(&s, &cookie, "/devices?q=_").await;
    assert!(!underscore.contains("121 of 121 devices"), "not a wildcard");
    for q in ["%25", "%5C", "box%25", "b_x", "box-1_0"] {
        let (st, none) = get(&s, &cookie, &format!("/devices?q={q}")).await;
        assert_eq!(st, StatusCode::OK, "{q}");
        assert!(none.contains("No device matches this search."), "{q}");
    }
    let (_, quoted) = get(&s, &cookie, "/devices?q=%27%3B+DROP+TABLE+devices%3B+--").await;
    assert!(quoted.contains("No device matches this search."));
    let (_, again) = get(&s, &cookie, "/devices").await;
    assert!(again.contains("121 of 121 devices"), "nothing changed");

    // Search and paging together keep each other in the links.
    let (_, paged) = get(&s, &cookie, "/devices?q=box&sort=-name&page=2").await;
    assert_eq!(names(&paged)[0], "box-069");
    assert!(paged.contains("href=\"/devices?q=box&amp;sort=-name&amp;page=3\""));

    // Bad parameters: refused in words, nothing read.
    for (q, says) in [
        ("sort=name%3B+DROP", "unknown sort"),
        ("page=0", "page must be a number from 1 to 2000"),
        ("page=-3", "page must be a number"),
        ("page=two", "page must be a number"),
        ("page=99999999999999999999", "page must be a number"),
        ("page=2001", "page must be a number"),
        ("q=a+b+c+d+e+f+g+h+i", "more than 8 words"),
    ] {
        let (st, html) = get(&s, &cookie, &format!("/devices?{q}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}");
        assert!(html.contains(says), "{q}: {html}");
    }
    let long = "x".repeat(201);
    let (st, _) = get(&s, &cookie, &format!("/devices?q={long}")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_api_pages_with_the_same_query() {
    let s = TestServer::start().await;
    seed_devices(&s, 30).await;
    let admin = s.admin().await;
    // The unpaged list (what `tessera ctl` reads) is still every device.
    assert_eq!(admin.list_devices().await.unwrap().len(), 30);
    let pw = s.admin_password.clone().unwrap();
    let login = s
        .client()
        .login("admin", SecretString::new(pw))
        .await
        .unwrap();
    let token = login.token.expose().to_owned();
    let api = |q: &str| {
        http()
            .get(s.api(&format!("/api/v1/devices?{q}")))
            .bearer_auth(&token)
            .send()
    };
    let resp = api("q=box&sort=-name&limit=5&offset=10").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-total-count"], "30");
    let page: serde_json::Value = resp.json().await.unwrap();
    let got: Vec<_> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ["box-019", "box-018", "box-017", "box-016", "box-015"]);
    let lab = api("q=lab0").await.unwrap();
    assert_eq!(lab.headers()["x-total-count"], "3");
    let wild = api("q=%25").await.unwrap();
    assert_eq!(wild.headers()["x-total-count"], "0");
    for q in ["limit=0", "limit=1001", "offset=-1", "sort=size", "limit=x"] {
        let resp = api(q).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{q}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_page_pages_ended_sessions() {
    let s = TestServer::start().await;
    let ids = seed_devices(&s, 3).await;
    let owner = admin_id(&s).await;
    let now = s.clock.now_ms();
    for i in 0..60i64 {
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, origin, device_id, created_by, access, consent, \
             state, created_at, started_at, ended_at, end_code, end_reason) \
             VALUES ($1, $2, 'managed', $3, $4, 'control', 'not_required', 'ended', $5, $5, $6, \
             'ended_by_operator', $7)",
        )
        .bind(uuid_like(i))
        .bind(BOOTSTRAP_TENANT)
        .bind(&ids[0])
        .bind(&owner)
        .bind(now - 100_000 + i)
        .bind(now - 50_000 + i * 10)
        .bind(format!("reason-{i:02}"))
        .execute(s.state.db().pool())
        .await
        .unwrap();
    }
    let cookie = sign_in(&s).await;
    let (st, first) = get(&s, &cookie, "/sessions").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(first.matches("reason-").count(), 50);
    assert!(first.contains("reason-59"), "most recently ended first");
    assert!(!first.contains("reason-09"));
    assert!(first.contains("rel=\"next\" href=\"/sessions?live=1&amp;ended=2\""));
    let (_, second) = get(&s, &cookie, "/sessions?ended=2").await;
    assert_eq!(second.matches("reason-").count(), 10);
    assert!(second.contains("reason-00"));
    assert!(!second.contains("Ended earlier"));
    assert!(second.contains("rel=\"prev\" href=\"/sessions?live=1&amp;ended=1\""));
    let (st, beyond) = get(&s, &cookie, "/sessions?ended=3").await;
    assert_eq!(st, StatusCode::OK);
    assert!(beyond.contains("No ended sessions on this page."));
    for q in ["ended=0", "ended=x", "live=-1", "live=2001"] {
        let (st, html) = get(&s, &cookie, &format!("/sessions?{q}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}");
        assert!(html.contains("must be a page number from 1 to 2000"), "{q}");
    }
}

/// A distinct UUID-shaped id per `i`.
fn uuid_like(i: i64) -> String {
    format!("00000000-0000-7000-8000-{i:012}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_filters_and_pages_by_cursor() {
    let s = TestServer::start().await;
    for i in 0..130 {
        let action = if i % 10 == 0 {
            Action::DeviceRevoked
        } else {
            Action::DeviceTagged
        };
        let event = AuditEvent::new(BOOTSTRAP_TENANT, Actor::User(format!("u{}", i % 3)), action)
            .target(format!("device:d{i:03}"));
        s.state.db().audit(event).await.unwrap();
    }
    let cookie = sign_in(&s).await;
    let (st, first) = get(&s, &cookie, "/audit?action=device_tagged").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(first.matches("<code>device_tagged</code>").count(), 50);
    assert!(!first.contains("← Newer rows"));
    let older = link(&first, "next");
    let (_, second) = get(&s, &cookie, &older).await;
    assert_eq!(second.matches("<code>device_tagged</code>").count(), 50);
    let newer = link(&second, "prev");
    assert!(newer.contains("after="), "{newer}");
    let (_, back) = get(&s, &cookie, &newer).await;
    assert_eq!(rows(&back), rows(&first), "back to the same first page");
    let (_, third) = get(&s, &cookie, &link(&second, "next")).await;
    assert_eq!(third.matches("<code>device_tagged</code>").count(), 17);
    assert!(!third.contains("Older rows"));
    // Past the oldest row: says so, and leads back.
    let (_, beyond) = get(&s, &cookie, "/audit?action=device_tagged&before=1").await;
    assert!(beyond.contains("No more rows this way."));

    let (_, revoked) = get(&s, &cookie, "/audit?action=device_revoked").await;
    assert_eq!(revoked.matches("<code>device_revoked</code>").count(), 13);
    let (_, actor) = get(&s, &cookie, "/audit?actor=user%3Au1&target=device%3Ad004").await;
    assert_eq!(rows(&actor).len(), 1);
    // Filters compare whole values: a wildcard is a character.
    let (_, wild) = get(&s, &cookie, "/audit?action=device_%25").await;
    assert!(wild.contains("No audit rows match."));

    for (q, says) in [
        ("before=abc", "before must be a row number"),
        ("after=-5", "after must be a row number"),
        ("before=5&after=3", "either before or after"),
        ("since=yesterday", "since must be a date"),
        ("until=2026-13-45", "until must be a date"),
    ] {
        let (st, html) = get(&s, &cookie, &format!("/audit?{q}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}");
        assert!(html.contains(says), "{q}: {html}");
    }
}

/// The `rel` pager link of a page, unescaped.
fn link(html: &str, rel: &str) -> String {
    let at = html
        .find(&format!("rel=\"{rel}\" href=\""))
        .unwrap_or_else(|| panic!("no {rel} link"));
    let rest = &html[at + rel.len() + 13..];
    rest[..rest.find('"').unwrap()].replace("&amp;", "&")
}

/// The sequence numbers an audit page shows.
fn rows(html: &str) -> Vec<i64> {
    html.split("<tr><td>")
        .skip(1)
        .filter_map(|r| r.split_once("</td>")?.0.parse().ok())
        .collect()
}
