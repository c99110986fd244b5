//! Hostile bodies on every JSON write route: malformed, mistyped, oversized
//! and odd values, each answered with a 4xx JSON error envelope (or, for
//! well-formed odd values, anything but a 5xx).

use std::time::Duration;

use serde_json::{json, Value};
use tessera_core::api::SecretString;
use tessera_core::identity::DeviceKeys;

use tessera_testkit::{TestDevice, TestServer};

use super::*;

/// A body to send, and whether only a 4xx will do (`strict`) or any
/// non-5xx answer is acceptable (well-formed requests with odd values,
/// which the server may legitimately accept).
struct Probe {
    name: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    strict: bool,
}

fn probe(name: impl Into<String>, body: impl Into<Vec<u8>>) -> Probe {
    Probe {
        name: name.into(),
        content_type: Some("application/json"),
        body: body.into(),
        strict: true,
    }
}

/// Values of the wrong JSON type for a field of type `ty`.
fn wrong_types(ty: &str) -> Vec<Value> {
    match ty {
        "string" => vec![json!(42), json!(true), json!({"s": "x"}), json!(["x"])],
        "integer" => vec![json!("12"), json!(1.5), json!(true), json!({}), json!([1])],
        "number" => vec![json!("1"), json!(false), json!([])],
        "boolean" => vec![json!("true"), json!(1), json!([])],
        "array" => vec![json!("x"), json!(7), json!({"0": "x"})],
        // A JSON object field takes any JSON; the handler checks the shape.
        _ => vec![json!("not an object"), json!([1, 2])],
    }
}

/// Well-typed but hostile values for a field of type `ty`.
fn odd_values(ty: &str) -> Vec<Value> {
    match ty {
        "string" => vec![
            json!("a\u{0}b"),
            json!("\u{1b}[2J\u{1b}[31mred\u{7}"),
            json!("\u{202e}gnp.exe"),
            json!("A".repeat(60 * 1024)),
            json!("😀".repeat(200)),
            json!(""),
            json!("../../etc/passwd"),
            json!("' OR 1=1 --"),
            json!("%s%n%x"),
        ],
        "integer" => vec![
            json!(-1),
            json!(0),
            json!(2_147_483_648u64),
            json!(4_294_967_296u64),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1e308),
        ],
        "array" => vec![json!(vec!["x"; 5000]), json!([]), json!([null])],
        "object" => vec![
            json!({"k": "a\u{0}b", "\u{0}": [1e308, -0.0, u64::MAX, i64::MIN]}),
            json!({"deep": {"er": {"still": {"deeper": [[[[["x"]]]]]}}}}),
            json!({}),
        ],
        _ => vec![],
    }
}

/// Routes behind a per-address rate limiter.
const RATE_LIMITED: &[&str] = &[
    "/api/v1/auth/login",
    "/api/v1/auth/password",
    "/api/v1/enroll",
    "/api/v1/support-codes/bind",
];

/// The most a route reads of a body.
fn body_limit(template: &str) -> usize {
    if template == "/api/v1/events" {
        tessera_server::http::events::MAX_BATCH_BYTES
    } else {
        tessera_server::http::BODY_LIMIT
    }
}

/// Every probe for one route.
fn probes(doc: &Value, route: &Route, known: &Known, keys: &DeviceKeys) -> Vec<Probe> {
    let base = plausible(doc, &route.schema, "", known);
    let text = serde_json::to_vec(&base).unwrap();
    let props: Vec<(String, Value)> = route.schema["properties"]
        .as_object()
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    // A real field, so no variant is an ignored unknown one (an object of
    // optional fields with only unknown ones would be a valid request).
    let field = props.first().map(|(k, _)| k.clone()).unwrap_or("x".into());
    let with_field = |raw: &str| format!(r#"{{"{field}": {raw}}}"#).into_bytes();

    let mut out = vec![
        probe("empty", b"".to_vec()),
        probe("truncated_half", text[..text.len() / 2].to_vec()),
        probe("truncated_last_byte", text[..text.len() - 1].to_vec()),
        probe("open_brace", b"{".to_vec()),
        probe("dangling_key", with_field("")),
        probe("not_json", b"{not json".to_vec()),
        probe("single_quotes", format!("{{'{field}': 'x'}}")),
        probe("trailing_comma", with_field("\"x\",")),
        probe("trailing_garbage", [text.as_slice(), b" x"].concat()),
        probe("two_documents", [text.as_slice(), text.as_slice()].concat()),
        probe("top_level_string", b"\"hello\"".to_vec()),
        probe("top_level_number", b"42".to_vec()),
        probe("top_level_true", b"true".to_vec()),
        probe("top_level_null", b"null".to_vec()),
        probe("mixed_array", br#"[1, "x", {}, [], null, 7]"#.to_vec()),
        probe(
            "invalid_utf8",
            with_field("\"\u{0}\"")
                .iter()
                .map(|b| if *b == 0 { 0xff } else { *b })
                .collect::<Vec<u8>>(),
        ),
        probe("invalid_utf8_top", b"\xff\xfe\xfd".to_vec()),
        probe("raw_nul_in_string", with_field("\"a\u{0}b\"")),
        probe("raw_nul", b"\x00\x00\x00\x00".to_vec()),
        probe(
            "bom",
            [b"\xef\xbb\xbf".as_slice(), text.as_slice()].concat(),
        ),
        probe("lone_surrogate", with_field(r#""\ud800""#)),
        probe("bad_escape", with_field(r#""\q""#)),
        probe("huge_exponent", with_field("1e999999")),
        probe(
            "deep_array",
            with_field(&format!("{}{}", "[".repeat(3000), "]".repeat(3000))),
        ),
        probe(
            "deep_object",
            format!(
                "{}1{}",
                format!(r#"{{"{field}":"#).repeat(3000),
                "}".repeat(3000)
            ),
        ),
        probe(
            "duplicate_field",
            format!(
                r#"{{"{field}": {v}, "{field}": {v}}}"#,
                v = base.get(&field).cloned().unwrap_or(json!("x"))
            ),
        ),
        // Just over the route's limit: the server reads up to the limit and
        // refuses, and the client still gets to read the refusal.
        probe(
            "oversized",
            with_field(&format!(
                "\"{}\"",
                "A".repeat(body_limit(&route.template) + 8 * 1024)
            )),
        ),
    ];
    for (ct, name) in [
        (Some("text/plain"), "text_plain"),
        (Some("application/xml"), "xml"),
        (Some("application/x-www-form-urlencoded"), "form"),
        (Some("application/jsonx"), "json_lookalike"),
        (None, "no_content_type"),
    ] {
        out.push(Probe {
            content_type: ct,
            ..probe(format!("content_type_{name}"), text.clone())
        });
    }

    // Field by field: missing, mistyped, and (leniently) odd values; one
    // level down too, for signed statements and event batches.
    let mut fields: Vec<(Vec<String>, Value)> = props
        .iter()
        .map(|(k, v)| (vec![k.clone()], v.clone()))
        .collect();
    for (k, v) in &props {
        let inner = resolve(doc, v);
        let inner = if type_of(doc, inner) == "array" {
            resolve(doc, &inner["items"])
        } else {
            inner
        };
        if let Some(nested) = inner["properties"].as_object() {
            for (nk, nv) in nested {
                fields.push((vec![k.clone(), nk.clone()], nv.clone()));
            }
        }
    }
    let required: Vec<&str> = route.schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for r in &required {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(*r);
        out.push(probe(
            format!("missing_{r}"),
            serde_json::to_vec(&b).unwrap(),
        ));
    }
    for (path, schema) in &fields {
        let ty = type_of(doc, schema);
        let at = path.join(".");
        for (i, v) in wrong_types(&ty).into_iter().enumerate() {
            out.push(probe(format!("wrong_type_{at}_{i}"), set(&base, path, v)));
        }
        for (i, v) in odd_values(&ty).into_iter().enumerate() {
            let mut body = set(&base, path, v);
            if path[0] == "statement" {
                body = resign(&route.template, body, keys);
            }
            out.push(Probe {
                strict: false,
                ..probe(format!("odd_value_{at}_{i}"), body)
            });
        }
    }
    out
}

/// `base` with the field at `path` (into arrays' first element) set to `v`.
fn set(base: &Value, path: &[String], v: Value) -> Vec<u8> {
    let mut b = base.clone();
    let mut at = &mut b;
    for (i, key) in path.iter().enumerate() {
        if let Value::Array(items) = at {
            at = &mut items[0];
        }
        if i + 1 == path.len() {
            at[key.as_str()] = v;
            break;
        }
        at = &mut at[key.as_str()];
    }
    serde_json::to_vec(&b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_on_every_json_route_get_a_4xx_envelope() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let operator = s
        .client()
        .login(
            "admin",
            SecretString::new(s.admin_password.clone().unwrap()),
        )
        .await
        .unwrap()
        .token;
    let device = TestDevice::enroll(&s, &admin, "hostile").await;
    let victim = TestDevice::enroll(&s, &admin, "victim").await;
    admin
        .create_user(&tessera_core::api::CreateUserRequest {
            username: "victim".into(),
            role: tessera_core::roles::Role::Viewer,
            password: None,
        })
        .await
        .unwrap();
    let http = s.http();
    let doc: Value = http
        .get(s.api("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let known = Known::gather(&s, &admin, &device, &victim).await;
    let keys = device.state.identity().unwrap();
    let routes = json_routes(&doc);
    assert!(routes.len() >= 15, "only {} JSON routes", routes.len());
    // The device plane first: an operator probe may revoke the victim, never
    // the device whose key these requests carry.
    let mut routes = routes;
    routes.sort_by_key(|r| r.auth != Auth::Device);

    let mut failures = Vec::new();
    let mut sent = 0;
    let mut statuses = std::collections::BTreeMap::new();
    let mut unread = 0;
    for route in &routes {
        for p in probes(&doc, route, &known, &keys) {
            let url = s.api(&concrete(&route.template, &victim.device_id));
            let mut req = http.request(route.method.clone(), url).body(p.body.clone());
            if let Some(ct) = p.content_type {
                req = req.header("content-type", ct);
            }
            req = match route.auth {
                Auth::Operator => req.bearer_auth(operator.expose()),
                Auth::Device => req.bearer_auth(device.key.expose()),
                Auth::None => req,
            };
            // Rate-limited routes get their allowance back on the server's
            // (manual) clock, so every probe reaches the handler.
            if RATE_LIMITED.contains(&route.template.as_str()) {
                s.clock.advance(Duration::from_secs(6));
            }
            sent += 1;
            let resp = match req.send().await {
                Ok(resp) => resp,
                // A server may refuse a large body (a 413, or a 429 from a
                // limiter) before reading it all and close the connection
                // while the client is still writing; then the client never
                // sees the answer. Only large bodies may end that way.
                Err(e) if p.body.len() > 16 * 1024 && e.is_request() => {
                    unread += 1;
                    continue;
                }
                Err(e) => {
                    failures.push(format!(
                        "{} {} [{}]: {e}",
                        route.method, route.template, p.name
                    ));
                    continue;
                }
            };
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let what = format!("{} {} [{}]", route.method, route.template, p.name);
            *statuses.entry(status.as_u16()).or_insert(0usize) += 1;
            if std::env::var_os("HOSTILE_VERBOSE").is_some() && !p.strict {
                eprintln!("{what} → {status} {}", &text[..text.len().min(120)]);
            }
            if status.is_server_error() {
                failures.push(format!("{what} → {status}: {text}"));
                continue;
            }
            if p.strict && !status.is_client_error() {
                failures.push(format!("{what} → {status}, expected a 4xx: {text}"));
                continue;
            }
            if status.is_client_error() {
                let code = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|b| b["error"]["code"].as_str().map(str::to_owned));
                if code.is_none_or(|c| c.is_empty()) {
                    failures.push(format!(
                        "{what} → {status} without the error envelope: {text}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} probes failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(sent > 500, "only {sent} probes");
    assert!(unread < 20, "{unread} large bodies went unanswered");
    eprintln!("{sent} probes ({unread} large ones cut off); answers by status: {statuses:?}");
    let ok = http.get(s.api("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    s.stop().await;
}
