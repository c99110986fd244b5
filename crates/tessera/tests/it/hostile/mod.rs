//! Hostile input against a live server, from the outside: every JSON write
//! route the OpenAPI document lists gets malformed, mistyped, oversized and
//! odd bodies, authenticated as it expects (the admin operator, or a device
//! key on the device plane); the device and viewer WebSockets get garbage,
//! text, truncated, mistimed and oversized frames. Nothing may give a 5xx or
//! take the server down: malformed input is a 4xx with the JSON error
//! envelope, a bad frame closes its socket with a documented close code, and
//! `/healthz` answers afterwards.
//!
//! Here: the write routes the OpenAPI document lists and plausible values
//! for their fields; the probes are in `http`, the form routes (`/oauth/*`
//! and the `/device` page) in `forms`, the frames in `frames`.

mod bounds;
mod forms;
mod frames;
mod http;

use reqwest::Method;
use serde_json::{json, Value};
use tessera_core::identity::DeviceKeys;
use tessera_core::Clock as _;

use tessera_testkit::{TestDevice, TestServer};

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
                channel: None,
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
