//! The aggregator's HTTP API, built by [`router`] as a plain function so
//! tests call it without a socket. Errors are the agent's JSON
//! ([`ApiError`]: `{"error", "field"}`); bodies are parsed by hand so a
//! mistake is a 400 that names the field.

mod apps;
mod containers;
mod dashboard;
pub mod forward;
mod history;
mod hosts;
mod metrics;
mod scaling;
mod users;

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    middleware,
    routing::{get, put},
};
use serde_json::{Map, Value, json};

use super::{Shared, now_ms};
pub use scaler_api::error::ApiError;

/// Waits until the writes of a change are durable. When the store did not
/// take one: 503 naming it (the change made in memory is undone at the
/// next refresh from the store).
pub(super) async fn durable(writes: Vec<crate::records::Pending>) -> Result<(), ApiError> {
    for w in writes {
        w.done().await.map_err(|e| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the store did not take the change: {e}"))
        })?;
    }
    Ok(())
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/healthz", get(healthz))
        .route("/v1/cluster", get(cluster))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/hosts/{host}", get(hosts::one).put(hosts::put).delete(hosts::delete))
        .route("/v1/hosts/{host}/history", get(history::host))
        .route("/v1/apps", get(apps::list))
        .route("/v1/apps/{app}", get(apps::one).put(apps::put).delete(apps::delete))
        .route("/v1/apps/{app}/history", get(history::app))
        .route("/v1/apps/{app}/energy-cap", get(apps::get_cap).put(apps::put_cap).delete(apps::delete_cap))
        .route("/v1/apps/{app}/user", put(users::put_app_user))
        .route("/v1/apps/{app}/scaling", get(scaling::get).put(scaling::put).delete(scaling::delete))
        .route("/v1/apps/{app}/containers/{host}/{name}", put(users::put_member).delete(users::delete_member))
        .route("/v1/users", get(users::list))
        .route("/v1/users/{user}", get(users::one).put(users::put).delete(users::delete))
        .route("/v1/containers", get(containers::list))
        .route(
            "/v1/containers/{host}/{name}",
            get(containers::one).put(containers::subscribe).delete(containers::unsubscribe),
        )
        .route("/v1/containers/{host}/{name}/resources/{resource}", put(containers::resource))
        .route("/v1/containers/{host}/{name}/history", get(history::container))
        .route("/v1/events", get(history::events))
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/api-aggregator.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        // Reads of another replica's part are answered there.
        .route_layer(middleware::from_fn_with_state(shared.clone(), forward::forward))
        // After routing: an unknown path or method is 404/405 before any 401.
        .route_layer(middleware::from_fn_with_state(
            scaler_api::serve::Bearer::new(shared.cfg.aggregator.token.as_deref(), "aggregator.token"),
            scaler_api::serve::require_bearer,
        ))
        .with_state(shared)
}

/// A JSON object body with only `allowed` fields.
pub fn object(body: &Bytes, allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("body", format!("body is not valid JSON: {e}")))?;
    let Value::Object(m) = v else { return Err(ApiError::bad_request("body", "body must be a JSON object")) };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(k, format!("unknown field {k:?}; allowed: {}", allowed.join(", "))));
    }
    Ok(m)
}

/// An optional non-negative integer field.
pub fn opt_u64(m: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(field, format!("{field} must be a non-negative integer, got {v}"))),
    }
}

/// A path segment naming a host, application or container.
pub fn name(field: &str, v: &str) -> Result<(), ApiError> {
    scaler_api::names::validate(v).map_err(|e| ApiError::bad_request(field, e))
}

/// The replicas sharing the fleet (`[store] etcd`): this one, the leader,
/// every live one and who gathers each host; a lone aggregator is its own
/// leader and gathers everything.
async fn cluster(State(s): State<Arc<Shared>>) -> Json<Value> {
    let gathers: Vec<String> = s.read().hosts.keys().filter(|h| s.owns(h)).cloned().collect();
    match &s.cluster {
        None => Json(
            json!({"replica": null, "leader": null, "leads": true, "replicas": {}, "owners": {}, "gathers": gathers}),
        ),
        Some(c) => {
            let v = c.view();
            Json(json!({"replica": c.me, "url": c.url, "leader": v.leader, "leads": s.leads(),
                        "replicas": v.replicas, "owners": v.owners, "gathers": gathers}))
        }
    }
}

async fn healthz(State(s): State<Arc<Shared>>) -> Json<Value> {
    let now = now_ms();
    let st = s.read();
    // Stale and containers among the hosts this replica shows (all of
    // them without replicas): another replica's hosts are not stale here.
    let here = || st.hosts.values().filter(|h| s.shows(&h.name));
    let stale = here().filter(|h| h.stale).count();
    let containers: usize = here().map(|h| h.stats.as_ref().map_or(0, |s| s.containers.len())).sum();
    let r = &st.rounds;
    let (p50, p99, max) = r.percentiles().unwrap_or_default();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.started.elapsed().as_secs(),
        "poll_ms": s.cfg.aggregator.poll_ms,
        "rounds": r.rounds,
        "last_round_ms": r.last_round_ms,
        "last_round_age_ms": r.last_round_ms.map(|t| now.saturating_sub(t)),
        "round_ms": {"last": r.durations_ms.back(), "p50": p50, "p99": p99, "max": max,
                     "gather": r.last_gather_ms, "record": r.last_record_ms},
        "flush": {"ms": r.last_flush_ms, "rows": r.last_flush_rows},
        "hosts": st.hosts.len(),
        "hosts_here": here().count(),
        "stale_hosts": stale,
        "apps": st.apps.len(),
        "containers": containers,
        "history_entities": s.history.entities(),
        "store_bytes": s.store.file_bytes(),
        "records": s.records.describe(),
        "records_full_reads": s.records.full_reads(),
    }))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod users_tests;
