//! The agent's HTTP API. [`router`] builds it as a plain function so tests
//! call it without a socket; `agent::run` serves it.
pub use scaler_api::error;
pub mod manage;
pub mod metrics;
pub use scaler_api::query;
pub mod round;
pub mod runtime;
pub mod stats;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::{
    Router,
    extract::FromRef,
    http::{StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, put},
};

use crate::{cgroup::layout::Layout, config::EnergyConfig, manage::Manager, published::Shared};

use self::error::ApiError;

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub manager: Arc<Mutex<Manager>>,
    pub layout: Layout,
    /// Bearer token required on mutating requests, when set.
    pub token: Option<String>,
    pub power_model: EnergyConfig,
}

impl AppState {
    pub fn manager(&self) -> MutexGuard<'_, Manager> {
        self.manager.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FromRef<AppState> for Arc<Shared> {
    fn from_ref(app: &AppState) -> Self {
        app.shared.clone()
    }
}

/// Mutating requests need `Authorization: Bearer <token>` when a token is
/// configured (it must be when the agent listens off loopback).
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    ApiError::new(status, message).into_response()
}

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/v1/stats", get(stats::all))
        .route("/v1/stats/{name}", get(stats::one))
        .route("/v1/stats/{name}/history", get(stats::history))
        .route("/v1/containers", get(manage::list))
        .route("/v1/containers/{name}", get(manage::get).put(manage::put).delete(manage::delete))
        .route("/v1/containers/{name}/resources/{resource}", put(manage::put_resource))
        .route("/v1/containers/{name}/ceiling", put(manage::put_ceiling).delete(manage::delete_ceiling))
        .route("/v1/containers/{name}/guard", put(manage::put_guard))
        .route("/v1/containers/{name}/policy", get(runtime::get_policy).put(runtime::put_policy))
        .route("/v1/containers/{name}/limits", get(runtime::get_limits).put(runtime::put_limits))
        .route("/v1/host", get(manage::get_host).put(manage::put_host))
        .route("/v1/host/topology", get(runtime::topology))
        .route("/v1/agent", get(runtime::get_agent).put(runtime::put_agent))
        .route("/v1/policies", get(runtime::list_presets))
        .route("/v1/policies/{name}", get(runtime::get_preset).put(runtime::put_preset))
        .route("/v1/events", get(manage::events))
        .route("/v1/events/stream", get(manage::stream))
        .route("/v1/round", get(round::round))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(stats::healthz))
        // After routing: an unknown path or method is 404/405 before any 401.
        .route_layer(middleware::from_fn_with_state(
            scaler_api::serve::Bearer::new(app.token.as_deref(), "agent.token"),
            scaler_api::serve::require_bearer,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(middleware::map_response(json_errors))
        .with_state(app)
}

#[cfg(test)]
mod tests;
