//! What the operator changes while the agent runs: its timing and active
//! switch (`/v1/agent`), a subscription's policy parameters and rules
//! (`/v1/containers/{name}/policy`), this host's parameters of each preset
//! (`/v1/policies`).

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
};
use scaler_api::now_ms;
use serde_json::{Value, json};

use super::{AppState, error::ApiError, manage::json_body, query::Query};
use crate::manage::{
    direct::{self, DirectView},
    policy::PolicyView,
    settings::AgentSettings,
};

pub async fn get_agent(State(app): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<AgentSettings>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    Ok(Json(app.manager().settings()))
}

pub async fn put_agent(State(app): State<AppState>, body: Bytes) -> Result<Json<AgentSettings>, ApiError> {
    let v = json_body(&body)?;
    Ok(Json(app.manager().set_settings(now_ms(), &v)?))
}

pub async fn get_policy(
    State(app): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<PolicyView>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    Ok(Json(app.manager().policy_of(&name)?))
}

pub async fn put_policy(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PolicyView>, ApiError> {
    let v = json_body(&body)?;
    Ok(Json(app.manager().set_policy(now_ms(), &name, &v)?))
}

pub async fn list_presets(State(app): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    Ok(Json(json!({"policies": app.manager().policy_defaults()?})))
}

pub async fn get_preset(
    State(app): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<PolicyView>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let all = app.manager().policy_defaults()?;
    all.into_iter()
        .find(|p| p.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no policy {name:?}; one of {}", policies::POLICY_NAMES.join(", "))))
}

pub async fn put_preset(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PolicyView>, ApiError> {
    let v = json_body(&body)?;
    Ok(Json(app.manager().set_policy_default(now_ms(), &name, &v)?))
}

/// `PUT /v1/containers/{name}/limits`: `{"cpu": 500, "mem": null}` sets
/// (or with `null` removes) limits without a policy.
pub async fn put_limits(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<DirectView>, ApiError> {
    scaler_api::names::validate(&name).map_err(|m| ApiError::bad_request("name", m))?;
    let want = direct::parse(&json_body(&body)?)?;
    let cgroup = super::manage::resolve_cgroup(&app, &name, None)?;
    let found = super::manage::probe(&app, &cgroup);
    Ok(Json(app.manager().set_direct(now_ms(), &name, &cgroup, &want, &found)?))
}

/// `GET /v1/containers/{name}/limits`: the limits set directly.
pub async fn get_limits(
    State(app): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<DirectView>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let cgroup = super::manage::resolve_cgroup(&app, &name, None)?;
    let limits = app.manager().direct_of(&cgroup).into_iter().map(|(r, v)| (r, Some(v))).collect();
    Ok(Json(DirectView { name, cgroup, limits }))
}

/// `GET /v1/host/topology`: the host's CPUs (core, socket, SMT siblings)
/// and which containers placement put on each.
pub async fn topology(State(app): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let m = app.manager();
    let (topo, assigned) = (m.topology(), m.assigned());
    let cpus: Vec<Value> = topo
        .cpus
        .iter()
        .map(|c| {
            let on: Vec<&String> = assigned.iter().filter(|(_, v)| v.contains(&c.cpu)).map(|(n, _)| n).collect();
            json!({"cpu": c.cpu, "core": c.core, "socket": c.socket, "siblings": topo.siblings(c.cpu), "containers": on})
        })
        .collect();
    Ok(Json(json!({"smt": topo.smt(), "cpus": cpus, "containers": assigned})))
}
