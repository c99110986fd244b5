//! The axum middleware that applies a per-IP [`IpRateLimiter`] to a route:
//! `route_layer(from_fn_with_state((state, limiter), enforce))`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tessera_core::ErrorCode;

use super::error::ApiError;
use super::extract::client_ip_of;
use crate::auth::ratelimit::IpRateLimiter;
use crate::AppState;

/// Answers `429 rate_limited` with `Retry-After` when the client's address
/// is over `limiter`'s quota, and counts the rejection.
pub async fn enforce(
    State((state, limiter)): State<(AppState, Arc<IpRateLimiter>)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let ip = client_ip_of(&parts, state.trusted_proxies());
    if let Err(wait) = limiter.check(ip) {
        state.metrics().rate_limited(limiter.name());
        return ApiError::too_many_requests(
            ErrorCode::RateLimited,
            "too many requests from this address; retry later",
            wait,
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}
