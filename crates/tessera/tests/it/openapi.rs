//! The OpenAPI document against the server that serves it: every refusal a
//! route can give is documented, and the constraints the server enforces
//! are in the schemas (scripts/schemathesis.sh fuzzes the rest).

use serde_json::Value;
use tessera_core::api::SecretString;
use tessera_testkit::TestServer;

async fn document(s: &TestServer) -> Value {
    s.http()
        .get(s.api("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every operation as (METHOD, path, operation object).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                ops.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

fn documents(op: &Value, status: &str) -> bool {
    op["responses"].get(status).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_the_refusals_it_can_give() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let mut missing = Vec::new();
    for (method, path, op) in operations(&doc) {
        let secured = op["security"].as_array().is_some_and(|a| !a.is_empty());
        if secured && !documents(&op, "401") {
            missing.push(format!(
                "{method} {path}: 401 (it has a security requirement)"
            ));
        }
        if let Some(content) = op["requestBody"]["content"].as_object() {
            let wanted: &[&str] = if content.contains_key("application/json") {
                &["400", "413", "415", "422"]
            } else {
                &["400", "413"]
            };
            for status in wanted {
                if !documents(&op, status) {
                    missing.push(format!("{method} {path}: {status} (it takes a body)"));
                }
            }
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        if params.iter().any(|p| p["in"] == "query") && !documents(&op, "400") {
            missing.push(format!("{method} {path}: 400 (it takes query parameters)"));
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented refusals:\n{}",
        missing.join("\n")
    );
    s.stop().await;
}

/// Which routes are rate limited is found by asking each one, not from a
/// list: anonymous, bodyless requests (refused before any work) are sent to
/// every operation until it answers 429 or clearly never will. Every route
/// that answers 429 must document it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rate_limited_route_documents_429() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let http = s.http();
    // Above the largest burst any limiter allows (enroll: 50).
    const TRIES: usize = 60;
    let mut limited = Vec::new();
    let mut missing = Vec::new();
    for (method, path, op) in operations(&doc) {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let url = s.api(&concrete);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for _ in 0..TRIES {
            let status = http.request(m.clone(), &url).send().await.unwrap().status();
            if status == 429 {
                limited.push(format!("{method} {path}"));
                if !documents(&op, "429") {
                    missing.push(format!("{method} {path}"));
                }
                break;
            }
        }
    }
    // The walk found the limiters it should (guards the probe itself).
    for route in [
        "POST /api/v1/auth/login",
        "POST /api/v1/enroll",
        "POST /oauth/device_authorization",
        "POST /api/v1/support-codes/bind",
    ] {
        assert!(
            limited.iter().any(|l| l == route),
            "{route} was not found rate limited"
        );
    }
    assert!(
        missing.is_empty(),
        "answer 429 but do not document it:\n{}",
        missing.join("\n")
    );
    s.stop().await;
}

/// The constraints the server enforces are stated in the schemas, so a
/// client generated from the document does not send what is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_states_the_enforced_constraints() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let schemas = &doc["components"]["schemas"];
    let param = |path: &str, name: &str| -> Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no parameter {name}"))
            .clone()
    };
    for path in [
        "/api/v1/audit",
        "/api/v1/audit/checkpoints",
        "/api/v1/events",
        "/api/v1/devices",
    ] {
        let limit = param(path, "limit");
        assert_eq!(limit["schema"]["minimum"], 1, "{path} limit");
        assert_eq!(limit["schema"]["maximum"], 1000, "{path} limit");
    }
    let offset = param("/api/v1/devices", "offset");
    assert_eq!(offset["schema"]["minimum"], 0);
    assert_eq!(offset["schema"]["maximum"], 100000);
    assert_eq!(param("/api/v1/devices", "q")["schema"]["maxLength"], 200);
    assert!(param("/api/v1/devices", "sort")["schema"]["pattern"].is_string());
    let tokens = &schemas["CreateEnrollmentTokenRequest"]["properties"];
    assert_eq!(tokens["uses"]["minimum"], 1);
    assert_eq!(tokens["uses"]["maximum"], 10000);
    assert_eq!(tokens["ttl_seconds"]["minimum"], 60);

    let user = &schemas["CreateUserRequest"]["properties"];
    assert_eq!(user["username"]["maxLength"], 64);
    assert!(user["username"]["pattern"].is_string());
    assert_eq!(
        schemas["ChangePasswordRequest"]["properties"]["new_password"]["minLength"],
        12
    );
    assert!(schemas["Tag"]["pattern"].is_string());
    for req in ["EnrollRequest", "BindSupportCodeRequest"] {
        assert_eq!(
            schemas[req]["properties"]["name"]["maxLength"], 128,
            "{req}"
        );
        assert!(
            schemas[req]["properties"]["name"]["pattern"].is_string(),
            "{req}"
        );
    }
    let access =
        serde_json::to_string(&schemas["CreateSessionRequest"]["properties"]["access"]).unwrap();
    assert!(
        access.contains("SessionAccess"),
        "access is an enum: {access}"
    );
    let access = &schemas["SessionAccess"]["enum"];
    assert_eq!(access, &serde_json::json!(["view", "control"]));
    let form = &schemas["DeviceAuthorizationForm"];
    for field in ["issued_at", "proof", "audience"] {
        assert!(
            form["properties"].get(field).is_some(),
            "form lists {field}"
        );
        assert!(
            form["required"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == field),
            "form requires {field}"
        );
    }
    s.stop().await;
}

/// The bounds the document states are the server's: one past each is
/// refused, the bound itself accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_bounds_are_the_enforced_ones() {
    let s = TestServer::start().await;
    let password = s.admin_password.clone().unwrap();
    let token = s
        .client()
        .login("admin", SecretString::new(password))
        .await
        .unwrap()
        .token
        .expose()
        .to_owned();
    let http = s.http();
    for (limit, ok) in [(0, false), (1, true), (1000, true), (1001, false)] {
        let status = http
            .get(s.api(&format!("/api/v1/audit?limit={limit}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.is_success(), ok, "limit={limit}: {status}");
    }
    let devices = [
        ("limit", 0, false),
        ("limit", 1, true),
        ("limit", 1000, true),
        ("limit", 1001, false),
        ("offset", -1, false),
        ("offset", 0, true),
        ("offset", 100000, true),
        ("offset", 100001, false),
    ];
    for (name, value, ok) in devices {
        let status = http
            .get(s.api(&format!("/api/v1/devices?{name}={value}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.is_success(), ok, "devices {name}={value}: {status}");
    }
    for (sort, ok) in [("-seen", true), ("", true), ("size", false)] {
        let status = http
            .get(s.api("/api/v1/devices"))
            .query(&[("sort", sort)])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.is_success(), ok, "devices sort={sort}: {status}");
    }
    let long = "x".repeat(201);
    for (q, ok) in [("x".repeat(200), true), (long, false)] {
        let status = http
            .get(s.api("/api/v1/devices"))
            .query(&[("q", q.as_str())])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            status.is_success(),
            ok,
            "devices q of {}: {status}",
            q.len()
        );
    }
    for (uses, ok) in [(0, false), (1, true), (10000, true), (10001, false)] {
        let status = http
            .post(s.api("/api/v1/enrollment-tokens"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"uses": uses, "ttl_seconds": 60}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.is_success(), ok, "uses={uses}: {status}");
    }
    s.stop().await;
}
