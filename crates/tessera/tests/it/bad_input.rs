//! Malformed, oversized and wrongly typed input: always a 4xx with a stable
//! code, never a 5xx, never an echo of the input, and nothing changed.

use reqwest::{Method, StatusCode};

use tessera_testkit::TestServer;

struct Case {
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    auth: bool,
    status: u16,
    code: &'static str,
}

fn case(
    method: Method,
    path: &'static str,
    body: &[u8],
    auth: bool,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        method,
        path,
        content_type: Some("application/json"),
        body: body.to_vec(),
        auth,
        status,
        code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_table_never_gives_5xx() {
    let s = TestServer::start().await;
    let token = {
        let pw = s.admin_password.clone().unwrap();
        s.client()
            .login("admin", tessera_core::api::SecretString::new(pw))
            .await
            .unwrap()
            .token
    };
    let huge = format!(
        r#"{{"username":"admin","password":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let mut cases = vec![
        case(
            Method::POST,
            "/api/v1/auth/login",
            b"{not json",
            false,
            400,
            "malformed_json",
        ),
        case(
            Method::POST,
            "/api/v1/auth/login",
            b"",
            false,
            400,
            "malformed_json",
        ),
        case(
            Method::POST,
            "/api/v1/auth/login",
            b"[]",
            false,
            422,
            "invalid_field",
        ),
        case(
            Method::POST,
            "/api/v1/auth/login",
            br#"{"username":"admin"}"#,
            false,
            422,
            "invalid_field",
        ),
        case(
            Method::POST,
            "/api/v1/auth/login",
            br#"{"username":7,"password":"secret-7777"}"#,
            false,
            422,
            "invalid_field",
        ),
        case(
            Method::POST,
            "/api/v1/auth/login",
            br#"{"username":"admin","password":98765432109}"#,
            false,
            422,
            "invalid_field",
        ),
        case(
            Method::POST,
            "/api/v1/auth/login",
            huge.as_bytes(),
            false,
            413,
            "body_too_large",
        ),
        case(
            Method::POST,
            "/api/v1/auth/login",
            "\u{0}\u{ffff}".as_bytes(),
            false,
            400,
            "malformed_json",
        ),
        case(
            Method::POST,
            "/api/v1/users",
            br#"{"username":"x","role":"emperor"}"#,
            true,
            422,
            "invalid_field",
        ),
        case(
            Method::POST,
            "/api/v1/users",
            br#"{"username":"x","role":"viewer","password":"short"}"#,
            true,
            422,
            "weak_password",
        ),
        case(
            Method::PATCH,
            "/api/v1/users/admin",
            br#"{}"#,
            true,
            422,
            "nothing_to_change",
        ),
        case(
            Method::PATCH,
            "/api/v1/users/admin",
            br#"{"disabled":"yes"}"#,
            true,
            422,
            "invalid_field",
        ),
        case(
            Method::PATCH,
            "/api/v1/users/no-such-user",
            br#"{"role":"viewer"}"#,
            true,
            404,
            "not_found",
        ),
        case(
            Method::GET,
            "/api/v1/audit?limit=0",
            b"",
            true,
            400,
            "invalid_query",
        ),
        case(
            Method::GET,
            "/api/v1/audit?limit=abc",
            b"",
            true,
            400,
            "invalid_query",
        ),
        case(
            Method::GET,
            "/api/v1/audit?since=yesterday",
            b"",
            true,
            400,
            "invalid_query",
        ),
        case(
            Method::GET,
            "/api/v1/audit?after=1e99",
            b"",
            true,
            400,
            "invalid_query",
        ),
        case(
            Method::GET,
            "/api/v1/no/such/route",
            b"",
            false,
            404,
            "not_found",
        ),
        case(
            Method::DELETE,
            "/api/v1/auth/login",
            b"",
            false,
            405,
            "method_not_allowed",
        ),
    ];
    cases.push(Case {
        content_type: Some("text/plain"),
        ..case(
            Method::POST,
            "/api/v1/auth/login",
            br#"{"username":"a","password":"b"}"#,
            false,
            415,
            "unsupported_media_type",
        )
    });
    cases.push(Case {
        content_type: None,
        ..case(
            Method::POST,
            "/api/v1/auth/login",
            br#"{"username":"a","password":"b"}"#,
            false,
            415,
            "unsupported_media_type",
        )
    });

    let http = s.http();
    for c in cases {
        let mut req = http
            .request(c.method.clone(), s.api(c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        if c.auth {
            req = req.bearer_auth(token.expose());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            !status.is_server_error(),
            "{} {} → {status}",
            c.method,
            c.path
        );
        assert_eq!(status.as_u16(), c.status, "{} {}: {text}", c.method, c.path);
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON error body: {text}"));
        assert_eq!(body["error"]["code"], c.code, "{} {}", c.method, c.path);
        for echoed in ["98765432109", "secret-7777", "emperor"] {
            assert!(
                !text.contains(echoed),
                "{} {} echoed input: {text}",
                c.method,
                c.path
            );
        }
    }
    // Nothing was created or changed.
    let admin = s.admin().await;
    let users = admin.list_users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].role, tessera_core::roles::Role::Admin);
    assert!(!users[0].disabled);
    let ok = http.get(s.api("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    s.stop().await;
}
