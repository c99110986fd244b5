//! Hostile input against a live server, from the outside: every JSON write
//! route the OpenAPI document lists gets malformed, mistyped, oversized and
//! odd bodies, authenticated as it expects (the admin operator, or a device
//! key on the device plane); the device and viewer WebSockets get garbage,
//! text, truncated, mistimed and oversized frames. Nothing may give a 5xx or
//! take the server down: malformed input is a 4xx with the JSON error
//! envelope, a bad frame closes its socket with a documented close code, and
//! `/healthz` answers afterwards.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use reqwest::Method;
use serde_json::{json, Value};
use tessera_client::control::{handshake, DeviceHello};
use tessera_core::api::{CreateSessionRequest, SecretString};
use tessera_core::identity::{challenge_body, DeviceKeys, Label};
use tessera_core::Clock as _;
use tessera_proto::v1::{
    AutoJoinAnswer, AutoSessionCreate, ChannelData, ChannelResize, ConsentResponse, E2eData,
    E2eHandshake, Heartbeat, Hello, MemberLeft, RotateKeyConfirm, SessionEnded, Welcome,
};
use tessera_proto::{Body, Envelope, PROTOCOL_VERSION};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use tessera_testkit::{online_device, open_ws_with, TestDevice, TestServer, Ws};

// ---- HTTP bodies ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    None,
    Operator,
    Device,
}

/// A JSON write route from the OpenAPI document.
struct Route {
    method: Method,
    template: String,
    auth: Auth,
    schema: Value,
}

/// Follows `$ref`s to the schema they name.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        s = &doc["components"]["schemas"][name];
    }
    s
}

/// The non-null type a schema declares (`["string", "null"]` is a string).
fn type_of(doc: &Value, schema: &Value) -> String {
    let s = resolve(doc, schema);
    if let Some(variants) = s.get("oneOf").and_then(Value::as_array) {
        if let Some(v) = variants.iter().find(|v| v["type"] != "null") {
            return type_of(doc, v);
        }
    }
    match &s["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string")
            .to_owned(),
        _ if s.get("properties").is_some() => "object".to_owned(),
        _ => "string".to_owned(),
    }
}

/// Real values for the fields the server checks first (devices that exist,
/// this device's own keys, a live enrollment token, the server's time), by
/// dotted path, so that odd values in the other fields get past those checks
/// and reach deeper, down to the database.
#[derive(Default)]
struct Known(std::collections::HashMap<&'static str, Value>);

impl Known {
    async fn gather(
        s: &TestServer,
        admin: &tessera_client::ApiClient,
        device: &TestDevice,
        victim: &TestDevice,
    ) -> Known {
        let me = device.state.identity().unwrap();
        let them = victim.state.identity().unwrap();
        let now = s.clock.now();
        let token = admin
            .create_enrollment_token(&tessera_core::api::CreateEnrollmentTokenRequest {
                uses: 1000,
                ttl_seconds: 30 * 86_400,
                tags: vec![],
            })
            .await
            .unwrap()
            .secret;
        let code = admin
            .create_support_code(&tessera_core::api::CreateSupportCodeRequest {
                access: None,
                ttl_seconds: Some(86_400),
            })
            .await
            .unwrap()
            .code;
        let hex = tessera_core::secret::hex;
        let mut k = std::collections::HashMap::new();
        for (path, v) in [
            ("statement.truster", json!(device.device_id)),
            ("statement.granter", json!(device.device_id)),
            ("statement.issuer", json!(device.device_id)),
            ("statement.device", json!(device.device_id)),
            ("statement.trusted", json!(victim.device_id)),
            ("statement.grantee", json!(victim.device_id)),
            ("peer", json!(victim.device_id)),
            (
                "statement.trusted_ed25519",
                json!(hex(&them.ed25519_public())),
            ),
            (
                "statement.trusted_x25519",
                json!(hex(&them.x25519_public())),
            ),
            ("statement.old_ed25519", json!(hex(&me.ed25519_public()))),
            (
                "statement.grantee_fingerprint",
                json!(tessera_core::trust::fingerprint(&them.ed25519_public())),
            ),
            (
                "statement.new_identity",
                json!(DeviceKeys::generate().document().encode()),
            ),
            ("statement.issued_at", json!(now.as_millis())),
            ("statement.expires_at", json!(now.as_millis() + 86_400_000)),
            ("statement.id", json!(uuid::Uuid::new_v4().to_string())),
            (
                "statement.subject",
                json!(format!("trust:{}", victim.device_id)),
            ),
            ("statement.epoch", json!(1)),
            ("statement.scopes", json!(["files"])),
            ("commitment", json!("ab".repeat(32))),
            ("nonce", json!("cd".repeat(32))),
            ("identity", json!(me.document().encode())),
            ("events.kind", json!("disk.full")),
            ("events.subject", json!("disk full")),
            ("events.occurred_at", json!(now.to_rfc3339())),
            ("events.attributes", json!({"mount": "/"})),
            ("token", json!(token.expose())),
            ("code", json!(code.expose())),
            ("username", json!("someone")),
            ("role", json!("viewer")),
            ("device", json!("victim")),
            ("uses", json!(5)),
            ("ttl_seconds", json!(3600)),
        ] {
            k.insert(path, v);
        }
        Known(k)
    }
}

/// A well-typed value for `schema` at `path`: the base every variant
/// starts from.
fn plausible(doc: &Value, schema: &Value, path: &str, known: &Known) -> Value {
    if let Some(v) = known.0.get(path) {
        return v.clone();
    }
    let s = resolve(doc, schema);
    if let Some(v) = s
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return v.clone();
    }
    if let Some(variants) = s.get("oneOf").and_then(Value::as_array) {
        if let Some(v) = variants.iter().find(|v| v["type"] != "null") {
            return plausible(doc, v, path, known);
        }
    }
    let inner = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match type_of(doc, s).as_str() {
        "object" => Value::Object(
            s["properties"]
                .as_object()
                .map(|props| {
                    props
                        .iter()
                        .map(|(k, v)| (k.clone(), plausible(doc, v, &inner(k), known)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "array" => json!([plausible(doc, &s["items"], path, known)]),
        "integer" => json!(3600),
        "number" => json!(1.5),
        "boolean" => json!(false),
        _ if s["format"] == "password" => json!("correct-horse-battery-staple-9"),
        _ => json!("x"),
    }
}

/// A signed statement's body signed again by `keys` after a field of its
/// statement changed, so the change gets past the signature check.
fn resign(template: &str, body: Vec<u8>, keys: &DeviceKeys) -> Vec<u8> {
    use tessera_core::trust::{
        AutoJoinGrant, KeyRotation, Signed, Statement, TrustAttestation, Withdrawal,
    };
    fn sign<T: Statement + serde::de::DeserializeOwned>(
        statement: &Value,
        keys: &DeviceKeys,
    ) -> Option<String> {
        let t: T = serde_json::from_value(statement.clone()).ok()?;
        Some(Signed::sign(t, keys).signature)
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let statement = &v["statement"];
    let signature = match template {
        "/api/v1/device/trust/attestations" => sign::<TrustAttestation>(statement, keys),
        "/api/v1/device/grants" => sign::<AutoJoinGrant>(statement, keys),
        "/api/v1/device/identity/rotate" => sign::<KeyRotation>(statement, keys),
        "/api/v1/device/trust/withdraw" | "/api/v1/device/grants/withdraw" => {
            sign::<Withdrawal>(statement, keys)
        }
        _ => None,
    };
    match signature {
        Some(sig) => {
            v["signature"] = json!(sig);
            serde_json::to_vec(&v).unwrap()
        }
        None => body,
    }
}

/// Every JSON POST/PUT/PATCH route the document lists.
fn json_routes(doc: &Value) -> Vec<Route> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let method = match method.as_str() {
                "post" => Method::POST,
                "put" => Method::PUT,
                "patch" => Method::PATCH,
                _ => continue,
            };
            let Some(schema) = op["requestBody"]["content"]["application/json"].get("schema")
            else {
                continue;
            };
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .flat_map(|o| o.keys().map(String::as_str))
                .collect();
            let auth = if schemes.contains(&"device_key") {
                Auth::Device
            } else if schemes.contains(&"operator_token") {
                Auth::Operator
            } else {
                Auth::None
            };
            out.push(Route {
                method,
                template: path.clone(),
                auth,
                schema: resolve(doc, schema).clone(),
            });
        }
    }
    out
}

/// The route with plausible path parameters: devices and users that exist
/// (and may be changed), ids that do not.
fn concrete(template: &str, victim_device: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closing brace") + open;
        let name = &rest[open + 1..close];
        let value = match name {
            "id" if template.starts_with("/api/v1/devices/") => victim_device.to_owned(),
            "user" => "victim".to_owned(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

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

// ---- WebSocket frames -------------------------------------------------------------

/// Close codes the server documents: the standard ones it uses and the
/// application codes in `tessera_proto::close` and the viewer plane's.
const DOCUMENTED_CLOSE: &[u16] = &[
    1001, 1003, 1007, 1008, 1009, 4000, 4001, 4003, 4004, 4008, 4009, 4010, 4011,
];

async fn connect(url: String, bearer: &str) -> Ws {
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    open_ws_with(&url, bearer, Some(config))
        .await
        .expect("upgrade")
}

/// What the server said next: an envelope body, or how the socket closed.
#[derive(Debug)]
enum Said {
    Body(Body),
    Closed(u16),
}

async fn next(ws: &mut Ws) -> Said {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the server answers in time")
        {
            Some(Ok(Message::Binary(b))) => {
                let env = Envelope::decode(b.as_ref()).expect("the server sends envelopes");
                return Said::Body(env.body.expect("with a body"));
            }
            Some(Ok(Message::Close(f))) => {
                return Said::Closed(f.map(|f| u16::from(f.code)).unwrap_or(1005))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Said::Closed(1006),
        }
    }
}

/// Reads until the socket closes; returns its code (skipping bodies such
/// as the `Error` that precedes a refusal).
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        if let Said::Closed(code) = next(ws).await {
            return code;
        }
    }
}

fn frame(body: Body) -> Message {
    Message::Binary(Envelope::of(body).encode_to_vec().into())
}

fn hello_body(keys: &DeviceKeys, nonce: &[u8], version: u32) -> Hello {
    let id = keys.device_id();
    Hello {
        protocol_version: version,
        agent_version: "hostile".into(),
        device_id: id.to_string(),
        signature: keys
            .sign(Label::Challenge, &challenge_body(nonce, &id, version))
            .to_vec()
            .into(),
        os: "\u{1b}[31mos".into(),
        hostname: "h".repeat(10_000),
        role: tessera_proto::role::AGENT,
    }
}

/// A device connection that has read its challenge; returns the nonce.
async fn challenged_ws(s: &TestServer, d: &TestDevice) -> (Ws, Vec<u8>) {
    let mut ws = connect(format!("ws://{}/ws/device", s.addr), d.key.expose()).await;
    let Said::Body(Body::Challenge(c)) = next(&mut ws).await else {
        panic!("a challenge first")
    };
    let nonce = c.nonce.to_vec();
    (ws, nonce)
}

/// A device connection before its Hello (challenge read), or after a valid
/// one (with odd but acceptable host details) and the Welcome.
async fn device_ws(s: &TestServer, d: &TestDevice, hello: bool) -> Ws {
    if !hello {
        return challenged_ws(s, d).await.0;
    }
    let mut ws = connect(format!("ws://{}/ws/device", s.addr), d.key.expose()).await;
    let keys = d.state.identity().unwrap();
    let id = keys.device_id();
    let mut hello = DeviceHello::agent(&keys, &id, "hostile");
    hello.os = "\u{1b}[31mos".into();
    hello.hostname = "h".repeat(10_000);
    tokio::time::timeout(Duration::from_secs(10), handshake(&mut ws, &hello))
        .await
        .expect("handshake in time")
        .expect("expected Welcome");
    ws
}

/// Frames that end a connection, with the close code each must get.
fn fatal_frames(before_hello: bool) -> Vec<(&'static str, Message, u16)> {
    let valid = Envelope::of(Body::Heartbeat(Heartbeat { seq: 1 })).encode_to_vec();
    let wrong_type = if before_hello { 4003 } else { 1008 };
    vec![
        ("garbage", Message::Binary(vec![0xff; 64].into()), 1007),
        ("text", Message::Text("{\"hello\": true}".into()), 1003),
        (
            "truncated",
            Message::Binary(valid[..valid.len() - 1].to_vec().into()),
            1007,
        ),
        (
            "server_message",
            frame(Body::Welcome(Welcome {
                protocol_version: 2,
                heartbeat_interval_ms: 1,
                connection_id: "x".into(),
            })),
            wrong_type,
        ),
        (
            "empty_envelope",
            Message::Binary(Vec::new().into()),
            wrong_type,
        ),
        (
            "viewer_message",
            frame(Body::ChannelResize(ChannelResize {
                session_id: "s".into(),
                channel_id: 0,
                cols: u32::MAX,
                rows: 0,
            })),
            wrong_type,
        ),
        (
            "oversized",
            Message::Binary(vec![0u8; tessera_proto::MAX_DEVICE_FRAME + 1].into()),
            1009,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_device_frames_close_with_documented_codes() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let d = TestDevice::enroll(&s, &admin, "hostile").await;

    for before_hello in [true, false] {
        for (name, msg, want) in fatal_frames(before_hello) {
            let mut ws = device_ws(&s, &d, !before_hello).await;
            // The server may close before an oversized frame is all written.
            let _ = ws.send(msg).await;
            let got = close_code(&mut ws).await;
            assert!(DOCUMENTED_CLOSE.contains(&got), "{name}: close {got}");
            assert_eq!(got, want, "{name} (before hello: {before_hello})");
        }
    }

    // Hellos that do not prove anything are refused with a reason.
    let keys = d.state.identity().unwrap();
    let thief = DeviceKeys::generate();
    type Forge = fn(&DeviceKeys, &DeviceKeys, &[u8]) -> Hello;
    // (A Hello for a newer version than the server's is not forged: it is
    // negotiated down, see `control.rs`.)
    let forged: [(&str, Forge, u16); 4] = [
        ("zero_version", |k, _, n| hello_body(k, n, 0), 4004),
        (
            "signed_by_another",
            |k, t, n| Hello {
                device_id: k.device_id().to_string(),
                ..hello_body(t, n, PROTOCOL_VERSION)
            },
            4003,
        ),
        (
            "garbage_signature",
            |k, _, n| Hello {
                signature: vec![7u8; 3].into(),
                ..hello_body(k, n, PROTOCOL_VERSION)
            },
            4003,
        ),
        (
            "garbage_device_id",
            |k, _, n| Hello {
                device_id: "\u{0}../../".into(),
                ..hello_body(k, n, PROTOCOL_VERSION)
            },
            4003,
        ),
    ];
    for (name, forge, want) in forged {
        let (mut ws, nonce) = challenged_ws(&s, &d).await;
        ws.send(frame(Body::Hello(forge(&keys, &thief, &nonce))))
            .await
            .unwrap();
        let got = close_code(&mut ws).await;
        assert_eq!(got, want, "{name}");
    }

    // After the Hello: valid envelopes for sessions that do not exist, or
    // in the wrong state, are ignored or answered; the connection lives on.
    let mut ws = device_ws(&s, &d, true).await;
    let junk = "\u{0}not-a-session";
    let out_of_state = [
        Body::RotateKeyConfirm(RotateKeyConfirm {
            key_id: junk.into(),
        }),
        Body::ConsentResponse(ConsentResponse {
            session_id: junk.into(),
            granted: true,
        }),
        Body::ChannelData(ChannelData {
            session_id: junk.into(),
            channel_id: 9,
            data: vec![1; 1000].into(),
        }),
        Body::AutoJoinAnswer(AutoJoinAnswer {
            session_id: junk.into(),
            accept: true,
            reason: "x".repeat(5000),
            device_id: junk.into(),
        }),
        Body::E2eHandshake(E2eHandshake {
            session_id: junk.into(),
            from: junk.into(),
            to: junk.into(),
            payload: vec![0; 100].into(),
        }),
        Body::E2eData(E2eData {
            session_id: junk.into(),
            epoch: u32::MAX,
            sender: u32::MAX,
            counter: u64::MAX,
            ciphertext: vec![0; 100].into(),
            to: junk.into(),
            tags: vec![],
        }),
        Body::MemberLeft(MemberLeft {
            session_id: junk.into(),
            device_id: junk.into(),
            reason: junk.into(),
        }),
        Body::SessionEnded(SessionEnded {
            session_id: junk.into(),
            code: junk.into(),
            reason: junk.into(),
        }),
        Body::AutoSessionCreate(AutoSessionCreate {
            members: vec![junk.into(); 3],
            scope: "root".into(),
            all_or_nothing: true,
        }),
        Body::AutoSessionCreate(AutoSessionCreate {
            members: (0..300).map(|i| format!("m{i}")).collect(),
            scope: "files".into(),
            all_or_nothing: false,
        }),
        Body::AutoSessionCreate(AutoSessionCreate {
            members: vec![junk.into(), "ABCD".repeat(13)],
            scope: "files".into(),
            all_or_nothing: false,
        }),
    ];
    for body in out_of_state {
        let what = format!("{body:?}");
        ws.send(frame(body)).await.unwrap();
        // Some are answered (an Error, or the outcome of a create); none
        // ends the connection: a heartbeat still gets its ack.
        ws.send(frame(Body::Heartbeat(Heartbeat { seq: 42 })))
            .await
            .unwrap();
        loop {
            match next(&mut ws).await {
                Said::Body(Body::HeartbeatAck(a)) => {
                    assert_eq!(a.seq, 42);
                    break;
                }
                Said::Body(Body::Error(_) | Body::AutoSessionCreated(_)) => {}
                other => panic!("after {what}: {other:?}"),
            }
        }
    }

    // Still up, and a proper device still gets in.
    let ok = s.http().get(s.api("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    let _ = device_ws(&s, &d, true).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_viewer_frames_close_with_documented_codes() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let (_device, _agent) = online_device(&s, &admin, "box").await;
    let session = admin
        .create_session(&CreateSessionRequest {
            device: "box".into(),
            access: None,
        })
        .await
        .unwrap()
        .id;
    let token = admin.viewer_token(&session).await.unwrap().token;
    let url = format!("ws://{}/ws/viewer?session={session}", s.addr);

    // Refused before the upgrade, with the error envelope.
    for (name, bearer, query) in [
        ("garbage_token", "e30.e30.e30", session.as_str()),
        ("operator_token_as_viewer", "otk_abc", session.as_str()),
        ("nul_token", "a\u{1}b", session.as_str()),
        ("another_session", token.expose(), "\u{0}nope"),
    ] {
        let mut req = s
            .http()
            .get(s.api("/ws/viewer"))
            .query(&[("session", query)])
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {bearer}")) {
            req = req.header("authorization", v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        assert!(status.is_client_error(), "{name}: {status}");
        assert!(body["error"]["code"].is_string(), "{name}: {body}");
    }

    let valid = Envelope::of(Body::ChannelResize(ChannelResize {
        session_id: session.clone(),
        channel_id: 0,
        cols: 80,
        rows: 24,
    }))
    .encode_to_vec();
    let fatal: Vec<(&str, Message, u16)> = vec![
        ("garbage", Message::Binary(vec![0xff; 64].into()), 1007),
        ("text", Message::Text("ls\n".into()), 1003),
        (
            "truncated",
            Message::Binary(valid[..valid.len() - 1].to_vec().into()),
            1007,
        ),
        ("device_message", frame(Body::Hello(Hello::default())), 1008),
        ("empty_envelope", Message::Binary(Vec::new().into()), 1008),
        (
            "oversized",
            Message::Binary(vec![0u8; tessera_proto::MAX_VIEWER_FRAME + 1].into()),
            1009,
        ),
    ];
    for (name, msg, want) in fatal {
        let mut ws = connect(url.clone(), token.expose()).await;
        match next(&mut ws).await {
            Said::Body(Body::ViewerReady(_)) => {}
            other => panic!("expected ViewerReady, got {other:?}"),
        }
        let _ = ws.send(msg).await;
        let got = close_code(&mut ws).await;
        assert!(DOCUMENTED_CLOSE.contains(&got), "{name}: close {got}");
        assert_eq!(got, want, "{name}");
    }

    // Odd but well-formed input is clamped and relayed; the session lives.
    let mut ws = connect(url.clone(), token.expose()).await;
    assert!(matches!(
        next(&mut ws).await,
        Said::Body(Body::ViewerReady(_))
    ));
    for body in [
        Body::ChannelResize(ChannelResize {
            session_id: "\u{0}".into(),
            channel_id: u32::MAX,
            cols: 0,
            rows: u32::MAX,
        }),
        Body::ChannelData(ChannelData {
            session_id: "other".into(),
            channel_id: 77,
            data: b"echo still-$((6*7))\n".to_vec().into(),
        }),
    ] {
        ws.send(frame(body)).await.unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut out = String::new();
        loop {
            match next(&mut ws).await {
                Said::Body(Body::ChannelData(d)) => {
                    out.push_str(&String::from_utf8_lossy(&d.data));
                    if out.contains("still-42") {
                        return true;
                    }
                }
                Said::Body(_) => {}
                Said::Closed(_) => return false,
            }
        }
    })
    .await;
    assert!(matches!(seen, Ok(true)), "the session survives odd input");
    let ok = s.http().get(s.api("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    s.stop().await;
}
