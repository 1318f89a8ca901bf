//! `GET /v1/stats`, `/v1/stats/{name}`, `/v1/stats/{name}/history`, `/healthz`.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    response::{IntoResponse as _, Response},
};
use policies::Resource;
use serde_json::{Value, json};

use super::{error::ApiError, query::Query};
use scaler_api::wire;

use crate::published::Shared;

/// `GET /v1/stats[?kind=K][&fields=brief]`: `brief` keeps what an
/// aggregator reads every round (resources, throttled time, CPU time).
pub async fn all(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref(), &["kind", "fields"])?;
    let kind = match q.str("kind") {
        None => None,
        Some(k) => Some(wire::Kind::KNOWN.into_iter().find(|x| x.name() == k).ok_or_else(|| {
            let names: Vec<&str> = wire::Kind::KNOWN.iter().map(|x| x.name()).collect();
            ApiError::bad_request("kind", format!("unknown kind {k:?}; one of {}", names.join(", ")))
        })?),
    };
    let brief = match q.str("fields") {
        None | Some("all") => false,
        Some("brief") => true,
        Some(f) => return Err(ApiError::bad_request("fields", format!("unknown fields {f:?}; one of all, brief"))),
    };
    if brief {
        return Ok(Json(brief_stats(&s, kind)).into_response());
    }
    let g = s.read();
    let shown = g.containers.values().filter(|p| kind.is_none_or(|k| p.info.kind == k));
    let (host, time_ms, tick_ms) = (s.host.clone(), g.time_ms, s.tick_ms());
    Ok(Json(wire::Stats { host, time_ms, tick_ms, containers: shown.map(|p| p.view()).collect() }).into_response())
}

/// The containers (of `kind`, when given) in brief form.
pub(super) fn brief_stats(s: &Shared, kind: Option<wire::Kind>) -> wire::BriefStats {
    let g = s.read();
    let containers =
        g.containers.values().filter(|p| kind.is_none_or(|k| p.info.kind == k)).map(|p| p.brief()).collect();
    wire::BriefStats { host: s.host.clone(), time_ms: g.time_ms, tick_ms: s.tick_ms(), containers }
}

fn unknown(name: &str) -> ApiError {
    ApiError::not_found(format!("no container named {name:?} on this host (GET /v1/stats lists them)"))
}

pub async fn one(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<wire::Container>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let g = s.read();
    g.containers.get(&name).map(|p| Json(p.view())).ok_or_else(|| unknown(&name))
}

pub async fn history(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref(), &["since_ms", "limit", "resource"])?;
    let since = q.u64("since_ms")?.unwrap_or(0);
    let limit = q.u64("limit")?.unwrap_or(u64::MAX);
    if limit == 0 {
        return Err(ApiError::bad_request("limit", "limit must be at least 1"));
    }
    let resource = match q.str("resource") {
        None => None,
        Some(r) => Some(r.parse::<Resource>().ok().filter(|x| Resource::LIMITABLE.contains(x)).ok_or_else(|| {
            let names = Resource::LIMITABLE_NAMES.join(", ");
            ApiError::bad_request("resource", format!("unknown resource {r:?}; one of {names}"))
        })?),
    };
    let points = {
        let g = s.read();
        let p = g.containers.get(&name).ok_or_else(|| unknown(&name))?;
        p.history.since(since, usize::try_from(limit).unwrap_or(usize::MAX))
    };
    let points: Vec<Value> = match resource {
        None => return Ok(Json(json!(wire::History { name, tick_ms: s.tick_ms(), points }))),
        Some(r) => points
            .into_iter()
            .map(|p| {
                let reading = p.resources.get(r).unwrap_or_default();
                json!({"time_ms": p.time_ms, r.name(): reading})
            })
            .collect(),
    };
    Ok(Json(json!({"name": name, "tick_ms": s.tick_ms, "points": points})))
}

/// `/healthz`: 200 while the sampler ticks; 503 (with the same body) when
/// its last tick is stale, so a supervisor or a load balancer sees a stopped
/// sampler.
pub async fn healthz(
    State(s): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let (age, stale) = s.tick_age();
    let g = s.read();
    let status = if stale { axum::http::StatusCode::SERVICE_UNAVAILABLE } else { axum::http::StatusCode::OK };
    Ok((
        status,
        Json(json!({
            "status": if stale { "stale" } else { "ok" },
            "last_tick_age_ms": age.as_millis() as u64,
            "host": s.host,
            "uptime_s": s.started.elapsed().as_secs(),
            "ticks": g.ticks,
            "last_tick_us": g.last_tick_us,
            "containers": g.containers.len(),
            "cgroup_layout": s.layout,
            "kernel": s.kernel,
            "version": env!("CARGO_PKG_VERSION"),
        })),
    ))
}
