//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use tessera_core::ErrorCode;

use super::error::{ApiError, ErrorBody};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` when healthy.
    status: &'static str,
    version: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// How long `/readyz` waits for the database. Shorter than the pool's
/// acquire timeout and than a load balancer's usual probe timeout, so an
/// unreachable database reads as "not ready", never as a hung probe.
const READY_PROBE: Duration = Duration::from_secs(2);

/// The process can serve: its database answers within two seconds.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "storage_unavailable: the database cannot be reached (with Retry-After)", body = ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match tokio::time::timeout(READY_PROBE, state.db().ping()).await {
        Ok(true) => Ok(Json(Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
        })),
        Ok(false) | Err(_) => Err(ApiError::storage_unavailable()),
    }
}

/// Prometheus metrics in the OpenMetrics text format. On this listener
/// only with the bearer token the server was given (`--metrics-token`);
/// `--metrics-listen` serves them on an address of their own with none.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    security(("metrics_token" = [])),
    responses(
        (status = 200, content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "unauthenticated: the token is missing or wrong", body = ErrorBody),
        (status = 404, description = "not_found: this server serves no metrics here", body = ErrorBody),
    ))]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = &state.config().metrics_token else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "metrics are not served here: start the server with --metrics-token or --metrics-listen",
        )
        .into_response();
    };
    if !metrics_token_ok(&headers, token.expose()) {
        return ApiError::unauthorized(
            ErrorCode::Unauthenticated,
            "metrics need the bearer token the server was started with",
        )
        .into_response();
    }
    render(&state)
}

/// Whether the request carries `Authorization: Bearer <token>`.
fn metrics_token_ok(headers: &HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(token.as_bytes())))
}

/// The router of `--metrics-listen`: `/metrics` and nothing else, no token.
pub fn metrics_only(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(state): State<AppState>| async move { render(&state) }),
        )
        .with_state(state)
}

fn render(state: &AppState) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_metrics_token_is_a_bearer_token_compared_whole() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            h
        };
        assert!(metrics_token_ok(&with("Bearer s3cret"), "s3cret"));
        assert!(!metrics_token_ok(&with("Bearer s3cre"), "s3cret"));
        assert!(!metrics_token_ok(&with("Bearer s3cret2"), "s3cret"));
        assert!(!metrics_token_ok(&with("s3cret"), "s3cret"));
        assert!(!metrics_token_ok(&HeaderMap::new(), "s3cret"));
    }
}
