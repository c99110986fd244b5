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

/// The schema a `$ref` names, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Whether a pattern might match U+0000: it does not name it (as in
/// `[^\u0000]`) yet has a negated class, a negated escape or a `.`
/// outside a class.
fn may_admit_nul(pattern: &str) -> bool {
    if pattern.contains(r"\u0000") {
        return false;
    }
    if pattern.contains("[^") || [r"\S", r"\W", r"\D"].iter().any(|e| pattern.contains(e)) {
        return true;
    }
    let (mut in_class, mut escaped) = (false, false);
    for c in pattern.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' => in_class = true,
            ']' => in_class = false,
            '.' if !in_class => return true,
            _ => {}
        }
    }
    false
}

/// Every string schema reachable from `schema` has a pattern or an enum
/// (a NUL-free one: the server refuses U+0000 in any request), and every
/// object names what its keys and unknown fields may be.
fn collect_open_text(
    doc: &Value,
    schema: &Value,
    at: &str,
    seen: &mut Vec<String>,
    open: &mut Vec<String>,
) {
    if let Some(r) = schema["$ref"].as_str() {
        if seen.iter().any(|s| s == r) {
            return;
        }
        seen.push(r.to_owned());
        return collect_open_text(doc, resolve(doc, schema), r, seen, open);
    }
    let has_type = |t: &str| {
        schema["type"] == t
            || schema["type"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == t))
    };
    if has_type("string") && schema.get("pattern").is_none() && schema.get("enum").is_none() {
        open.push(format!("{at}: a string without a pattern"));
    }
    if let Some(p) = schema["pattern"].as_str() {
        if may_admit_nul(p) {
            open.push(format!("{at}: pattern {p} may admit U+0000"));
        }
    }
    // A branch without a type (an `anyOf` that requires a field) only
    // narrows the object it belongs to.
    if has_type("object") {
        if schema["propertyNames"]["pattern"].is_null() {
            open.push(format!("{at}: object without propertyNames"));
        }
        match &schema["additionalProperties"] {
            Value::Bool(false) => {}
            Value::Object(o) if !o.is_empty() => {}
            other => open.push(format!("{at}: additionalProperties {other}")),
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for (i, item) in schema[key].as_array().into_iter().flatten().enumerate() {
            collect_open_text(doc, item, &format!("{at}/{key}/{i}"), seen, open);
        }
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            collect_open_text(doc, &schema[key], &format!("{at}/{key}"), seen, open);
        }
    }
    for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
        collect_open_text(doc, prop, &format!("{at}/{name}"), seen, open);
    }
}

/// The server refuses U+0000 anywhere in a request body, in a known field
/// or not (PostgreSQL text cannot hold it); the document says so on every
/// string and every object of every request body, so input the document
/// allows is never refused for a NUL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_body_schema_admits_a_nul_the_server_refuses() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let mut open = Vec::new();
    for (method, path, op) in operations(&doc) {
        for (media, content) in op["requestBody"]["content"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let mut seen = Vec::new();
            collect_open_text(
                &doc,
                &content["schema"],
                &format!("{method} {path} ({media})"),
                &mut seen,
                &mut open,
            );
        }
    }
    assert!(
        open.is_empty(),
        "request text that may hold U+0000:\n{}",
        open.join("\n")
    );

    // What the document states is what the server does: a NUL in a field
    // the server does not even read is refused.
    let token = admin_token(&s).await;
    let status = s
        .http()
        .post(s.api("/api/v1/sessions"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"device": "nowhere", "extra": {"k\u0000": 1}}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 422);
    s.stop().await;
}

async fn admin_token(s: &TestServer) -> String {
    let password = s.admin_password.clone().unwrap();
    s.client()
        .login("admin", SecretString::new(password))
        .await
        .unwrap()
        .token
        .expose()
        .to_owned()
}

/// Input that matches the document and that the server used to refuse:
/// each is now either stated in the document or accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_the_document_allows_is_accepted_and_what_it_refuses_is_stated() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    let token = admin_token(&s).await;
    let http = s.http();
    let schemas = &doc["components"]["schemas"];

    // JSON Schema's `integer` is a value: 87436.0 is one. A fraction is not.
    for (ttl, ok) in [("87436.0", true), ("8.7436e4", true), ("87436.5", false)] {
        let resp = http
            .post(s.api("/api/v1/enrollment-tokens"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(format!(r#"{{"uses": 920.0, "ttl_seconds": {ttl}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().is_success(),
            ok,
            "ttl_seconds {ttl}: {}",
            resp.status()
        );
    }
    let resp = http
        .post(s.api("/api/v1/support-codes"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"ttl_seconds": 600.0}))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "support code ttl 600.0: {}",
        resp.status()
    );

    // A PATCH must change something; the document says which field.
    let update = &schemas["UpdateUserRequest"];
    let any_of = update["anyOf"]
        .as_array()
        .expect("UpdateUserRequest has anyOf");
    let required: Vec<&Value> = any_of.iter().map(|a| &a["required"][0]).collect();
    assert_eq!(required, [&Value::from("role"), &Value::from("disabled")]);
    let me = s
        .client()
        .with_token(SecretString::new(token.clone()))
        .whoami()
        .await
        .unwrap()
        .user_id;
    for body in [r#"{"role": null, "disabled": null}"#, "{}", r#"{"x": 1}"#] {
        let resp = http
            .patch(s.api(&format!("/api/v1/users/{me}")))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{body}");
        let error: Value = resp.json().await.unwrap();
        assert_eq!(error["error"]["code"], "nothing_to_change", "{body}");
    }

    // Identity documents: 172 base64url characters of version 1.
    for schema in [
        &schemas["EnrollRequest"],
        &schemas["BindSupportCodeRequest"],
        &schemas["DeviceAuthorizationForm"],
    ] {
        let identity = &schema["properties"]["identity"];
        assert_eq!(identity["minLength"], 172);
        assert_eq!(identity["maxLength"], 172);
        assert_eq!(identity["pattern"], r"^A[Q-Za-f][A-Za-z0-9_-]{170}$");
    }
    // The OAuth forms' fixed values.
    let token_form = &schemas["TokenForm"]["properties"];
    assert_eq!(
        token_form["grant_type"]["pattern"],
        "^urn:ietf:params:oauth:grant-type:device_code$"
    );
    assert_eq!(token_form["device_code"]["minLength"], 1);
    for form in [&schemas["TokenForm"], &schemas["DeviceAuthorizationForm"]] {
        assert_eq!(
            form["properties"]["client_id"]["pattern"],
            "^tessera-agent$"
        );
    }

    // Times are RFC 3339 in UTC from 1970 on: the document says so, and
    // an offset or an earlier year is refused.
    let param = |path: &str, name: &str| -> Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no parameter {name}"))["schema"]
            .clone()
    };
    for (path, name) in [
        ("/api/v1/audit", "since"),
        ("/api/v1/audit", "until"),
        ("/api/v1/events", "since"),
    ] {
        let schema = param(path, name);
        let pattern = schema["pattern"].as_str().unwrap_or_default();
        assert!(
            pattern.starts_with("^(19[7-9]") && pattern.ends_with("Z$"),
            "{path} {name}: {schema}"
        );
    }
    for (since, ok) in [
        ("2026-11-26T12:00:00Z", true),
        ("2026-11-26T12:00:00.250Z", true),
        ("2588-01-20T12:36:58-14:58", false),
        ("1938-01-06T02:06:47Z", false),
    ] {
        for path in ["/api/v1/audit", "/api/v1/events"] {
            let status = http
                .get(s.api(path))
                .query(&[("since", since)])
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status.is_success(), ok, "{path} since={since}: {status}");
        }
    }
    // The events cursor and device filter.
    assert_eq!(
        param("/api/v1/events", "after")["pattern"],
        "^-?[0-9]{1,18}:"
    );
    assert!(param("/api/v1/events", "device")["pattern"].is_string());
    for (after, ok) in [
        ("0:", true),
        ("1764158400000:x", true),
        ("", false),
        ("x:1", false),
    ] {
        let status = http
            .get(s.api("/api/v1/events"))
            .query(&[("after", after)])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.is_success(), ok, "events after={after:?}: {status}");
    }
    s.stop().await;
}
