//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The process can serve: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.db().ping().await {
        Ok(Json(Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
        }))
    } else {
        Err(ApiError::unavailable("the database is not reachable"))
    }
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
}
