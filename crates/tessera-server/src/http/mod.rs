//! HTTP transport: the router, built in one place, and the middleware every
//! request passes through (request id, tracing span, metrics, panic guard,
//! body limit).

pub mod audit;
pub mod auth;
pub mod console;
pub mod devices;
pub mod enroll;
pub mod error;
pub mod events;
pub mod extract;
pub mod oauth;
pub mod ops;
pub mod pages;
pub mod pairings;
pub mod policy;
pub mod ratelimit;
pub mod sessions;
pub mod support;
pub mod trust;
pub mod users;
pub mod ws_device;
pub mod ws_upgrade;
pub mod ws_viewer;

use std::time::{Duration, Instant};
use tessera_core::ErrorCode;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use self::error::ApiError;
use crate::AppState;

/// Largest JSON body any API route accepts.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera API",
        description = "Self-hosted broker and relay for secure sessions between people and devices."
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "operator_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "device_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route with its OpenAPI description; the document is derived from
/// the same list that builds the router, so it cannot miss a route.
pub fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::routes())
        .merge(auth::routes(state))
        .merge(users::routes())
        .merge(audit::routes())
        .merge(devices::routes())
        .merge(enroll::routes(state))
        .merge(oauth::routes(state))
        .merge(pairings::routes(state))
        .merge(events::routes())
        .merge(sessions::routes())
        .merge(support::routes(state))
        .merge(policy::routes())
        .merge(trust::routes());
    document_common_refusals(api.get_openapi_mut());
    api
}

/// Adds to every operation the refusals its shape makes possible, unless its
/// own annotation already describes that status: 401 (and 403, for operator
/// and device credentials) where it has a security requirement; 400, 413,
/// 415 and 422 where it takes a JSON body (the `ApiJson` extractor); 400
/// where it takes query parameters (`ApiQuery`); 404 where it has a path
/// parameter (nothing by that id); 503 `storage_unavailable` where it
/// checks a credential or takes a JSON body (both read the database).
/// Derived here, after every route is
/// merged, so a new route cannot forget them; routes that answer 429 say
/// so in their own annotation, since only the router knows its limiters.
fn document_common_refusals(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    let refusal = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    // A metrics token is refused with 401 only; an operator's or a device's
    // credential can also lack the permission or the scope.
    let metrics_only = SecurityRequirement::new("metrics_token", Vec::<String>::new());
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            let mut add = Vec::new();
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add.push((
                    "401",
                    "no valid credential (missing, wrong, expired or revoked)",
                ));
            }
            let credential = op.security.iter().flatten().any(|r| *r != metrics_only);
            if credential {
                add.push((
                    "403",
                    "forbidden: the role or the key's scope does not allow this",
                ));
            }
            let json_body = op
                .request_body
                .as_ref()
                .is_some_and(|b| b.content.contains_key("application/json"));
            // Checking a credential reads the database, and so does
            // acting on a JSON body.
            if credential || json_body {
                add.push((
                    "503",
                    "storage_unavailable: the database cannot be reached (with Retry-After)",
                ));
            }
            if json_body {
                add.push(("400", "malformed_json, unreadable_body"));
                add.push(("413", "body_too_large"));
                add.push((
                    "415",
                    "unsupported_media_type: the body is not application/json",
                ));
                add.push((
                    "422",
                    "invalid_field: a field is missing, of the wrong type or out of range",
                ));
            }
            let params = op.parameters.iter().flatten();
            let (mut query, mut path) = (false, false);
            for p in params {
                query |= matches!(p.parameter_in, ParameterIn::Query);
                path |= matches!(p.parameter_in, ParameterIn::Path);
            }
            if query {
                add.push(("400", "invalid_query"));
            }
            if path {
                add.push(("404", "not_found"));
            }
            for (status, description) in add {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| refusal(description).into());
            }
        }
    }
}

/// No U+0000 anywhere in the string.
const NO_NUL_PATTERN: &str = r"^[^\u0000]*$";

/// The schema of what a request body may carry where its own schema names
/// nothing (unknown fields, free-form objects).
const JSON_WITHOUT_NUL: &str = "JsonWithoutNul";

/// The served OpenAPI document: the routes' own, plus what every request
/// body obeys but no single annotation can say.
///
/// - No string in a request body holds U+0000, in a field or a key, known
///   or not (`parse_json` and the form parsers refuse it: PostgreSQL text
///   cannot hold it). Every string schema reachable from a request body
///   without a pattern or enum of its own gets `^[^\u0000]*$`; every object
///   gets `propertyNames` with that pattern and, unless it says otherwise,
///   `additionalProperties` of `JsonWithoutNul` (any JSON without NUL).
/// - `PATCH /api/v1/users/{user}` changes something: `role` or `disabled`
///   is given and not null, else `nothing_to_change`.
fn document(openapi: &utoipa::openapi::OpenApi) -> serde_json::Value {
    use serde_json::json;

    // The document is maps with string keys, which always serialize; were
    // it ever to fail, the route serves `null` and says why in the log.
    let mut doc = match serde_json::to_value(openapi) {
        Ok(doc) => doc,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize the OpenAPI document");
            return serde_json::Value::Null;
        }
    };
    let mut pending: Vec<String> = Vec::new();
    if let Some(paths) = doc
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
    {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                // `get_mut`, not indexing: indexing a missing key inserts it.
                let Some(content) = op
                    .get_mut("requestBody")
                    .and_then(|body| body.get_mut("content"))
                    .and_then(serde_json::Value::as_object_mut)
                else {
                    continue;
                };
                for media in content.values_mut() {
                    if let Some(schema) = media.get_mut("schema") {
                        forbid_nul(schema, &mut pending);
                    }
                }
            }
        }
    }
    let mut done = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !done.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = doc
            .get_mut("components")
            .and_then(|c| c.get_mut("schemas"))
            .and_then(|s| s.get_mut(&name))
        {
            forbid_nul(schema, &mut pending);
        }
    }
    let reference = format!("#/components/schemas/{JSON_WITHOUT_NUL}");
    if let Some(schemas) = doc
        .get_mut("components")
        .and_then(|c| c.get_mut("schemas"))
        .and_then(serde_json::Value::as_object_mut)
    {
        schemas.insert(
            JSON_WITHOUT_NUL.to_owned(),
            json!({
                "description": "Any JSON value with no U+0000 in a string or a key.",
                "anyOf": [
                    {"type": ["null", "boolean", "number"]},
                    {"type": "string", "pattern": NO_NUL_PATTERN},
                    {"type": "array", "items": {"$ref": reference}},
                    {
                        "type": "object",
                        "propertyNames": {"pattern": NO_NUL_PATTERN},
                        "additionalProperties": {"$ref": reference}
                    }
                ]
            }),
        );
        if let Some(update) = schemas.get_mut("UpdateUserRequest") {
            update["anyOf"] = json!([
                {"required": ["role"], "properties": {"role": {"$ref": "#/components/schemas/Role"}}},
                {"required": ["disabled"], "properties": {"disabled": {"type": "boolean"}}}
            ]);
        }
    }
    doc
}

/// States on `schema` and what it contains that no string holds U+0000;
/// component schemas it refers to are queued in `pending`.
fn forbid_nul(schema: &mut serde_json::Value, pending: &mut Vec<String>) {
    use serde_json::{json, Value};

    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(name) = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        pending.push(name.to_owned());
        return;
    }
    let has_type = |t: &str| match obj.get("type") {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(a)) => a.iter().any(|v| v == t),
        _ => false,
    };
    let (string, object) = (
        has_type("string"),
        has_type("object") || obj.contains_key("properties"),
    );
    if string && !obj.contains_key("pattern") && !obj.contains_key("enum") {
        obj.insert("pattern".into(), json!(NO_NUL_PATTERN));
    }
    if object {
        obj.entry("propertyNames")
            .or_insert_with(|| json!({"pattern": NO_NUL_PATTERN}));
        let open = match obj.get("additionalProperties") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Object(o)) => o.is_empty(),
            Some(_) => false,
        };
        if open {
            obj.insert(
                "additionalProperties".into(),
                json!({"$ref": format!("#/components/schemas/{JSON_WITHOUT_NUL}")}),
            );
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(items)) = obj.get_mut(key) {
            for item in items {
                forbid_nul(item, pending);
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(item) = obj.get_mut(key) {
            forbid_nul(item, pending);
        }
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for prop in props.values_mut() {
            forbid_nul(prop, pending);
        }
    }
}

pub fn router(state: AppState) -> Router {
    let (routes, openapi) = api(&state).split_for_parts();
    let openapi = std::sync::Arc::new(document(&openapi));
    routes
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/ws/device", axum::routing::get(ws_device::upgrade))
        .route("/ws/viewer", axum::routing::get(ws_viewer::upgrade))
        .merge(pages::routes())
        .merge(console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_span)
                        .on_request(())
                        .on_response(on_response),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(on_panic))
                .layer(middleware::from_fn_with_state(state.clone(), observe))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
        .with_state(state)
}

/// One span per request. Fields: request id, method, route template, and the
/// operator once authenticated. Never headers: they carry credentials.
fn make_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    tracing::info_span!(
        "request",
        request_id,
        method = %req.method(),
        route,
        user = tracing::field::Empty,
        device = tracing::field::Empty,
    )
}

fn on_response<B>(resp: &axum::http::Response<B>, latency: Duration, _span: &tracing::Span) {
    tracing::info!(
        status = resp.status().as_u16(),
        latency_us = latency.as_micros() as u64,
        "finished"
    );
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The payload may quote request data; it is not echoed or logged.
    tracing::error!("handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal server error; see the server log",
    )
    .into_response()
}

/// Request counts and latencies by route template (never by raw path, which
/// would let clients mint unbounded label values).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Clients can send any extension method; only the standard ones become
    // label values, so labels stay bounded.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics()
        .request(&method, &route, resp.status().as_u16(), start.elapsed());
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    )
}
