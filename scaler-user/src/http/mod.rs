//! The agent's HTTP API. [`router`] builds it as a plain function so tests
//! call it without a socket; `agent::run` serves it.
pub mod error;
pub mod metrics;
pub mod query;
pub mod stats;

use std::sync::Arc;

use axum::{Router, http::StatusCode, routing::get};

use crate::agent::state::Shared;

use self::error::ApiError;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/stats", get(stats::all))
        .route("/v1/stats/{name}", get(stats::one))
        .route("/v1/stats/{name}/history", get(stats::history))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(stats::healthz))
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .with_state(shared)
}
