//! Management endpoints: subscriptions, ceilings, host capacity, events.

use std::{collections::BTreeMap, convert::Infallible, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use policies::{Resource, energy::PowerModel};
use scaler_api::{now_ms, wire};
use serde_json::{Value, json};

use super::{AppState, error::ApiError, query::Query};
use crate::{
    cgroup::reader::CgroupReader,
    manage::{
        Found, ManageError, Manager,
        events::EventQuery,
        model::{self, FieldError},
    },
};

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::bad_request(&e.field, e.to_string())
    }
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Field(f) => f.into(),
            ManageError::Forbidden { field, message } => {
                ApiError { status: StatusCode::FORBIDDEN, error: format!("{field}: {message}"), field: Some(field) }
            }
            ManageError::NotFound(m) => ApiError::not_found(m),
            ManageError::Conflict { field, message } => {
                ApiError { status: StatusCode::CONFLICT, error: format!("{field}: {message}"), field: Some(field) }
            }
            ManageError::Apply(m) => ApiError::new(StatusCode::CONFLICT, format!("could not apply the limits: {m}")),
            ManageError::Store(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            e @ ManageError::Stored { .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

pub(super) fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("body", format!("malformed JSON: {e}")))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    scaler_api::names::validate(name).map_err(|m| ApiError::bad_request("name", m))
}

/// What the cgroup holds now: the limits in force and memory in use.
pub(super) fn probe(app: &AppState, cgroup: &str) -> Found {
    let mut found = Found::default();
    if let Ok(s) = CgroupReader::new(&app.layout, cgroup).read_stats() {
        found.limits.insert(Resource::Cpu, s.cpu_quota.map(|q| q.millicores()));
        found.limits.insert(Resource::Mem, s.mem_limit);
        found.limits.insert(Resource::DiskRead, s.io_limits.read_bps);
        found.limits.insert(Resource::DiskWrite, s.io_limits.write_bps);
        found.mem_usage = s.mem_working_set();
    }
    // What the sampler last measured of it, if it watches it already.
    let g = app.shared.read();
    if let Some(sample) = g.containers.values().find(|p| p.info.cgroup == cgroup).and_then(|p| p.latest) {
        for r in
            [Resource::Cpu, Resource::Mem, Resource::DiskRead, Resource::DiskWrite, Resource::NetRx, Resource::NetTx]
        {
            if let Some(u) = sample.resources.get(r).and_then(|x| x.usage) {
                found.usage.insert(r, u);
            }
        }
    }
    if let Some(m) = found.mem_usage {
        found.usage.insert(Resource::Mem, m);
    }
    found
}

/// The cgroup a subscription targets: the one given (checked against the
/// roots, existing, its real path inside the hierarchy) or the discovered
/// container of that name.
pub(super) fn resolve_cgroup(app: &AppState, name: &str, given: Option<&str>) -> Result<String, ApiError> {
    let cg = match given {
        Some(path) => app.manager().check_cgroup(path)?,
        None => {
            let known = app.shared.read().containers.get(name).map(|p| p.info.cgroup.clone());
            let known = known.or_else(|| app.manager().get(name).map(|s| s.cgroup.clone()));
            let cg = known.ok_or_else(|| {
                ApiError::not_found(format!(
                    "no container named {name:?} on this host; give \"cgroup\" to subscribe one by path"
                ))
            })?;
            app.manager().check_cgroup(&cg)?
        }
    };
    let mut dirs = vec![(app.layout.v2.clone(), app.layout.v2_dir(&cg))];
    dirs.extend(app.layout.v1.values().map(|root| (root.clone(), crate::cgroup::layout::join_rel(root, &cg))));
    let mut exists = false;
    for (root, dir) in dirs {
        if let Ok(real) = std::fs::canonicalize(&dir) {
            let root = std::fs::canonicalize(&root).unwrap_or(root);
            if !real.starts_with(&root) || real == root {
                return Err(ApiError {
                    status: StatusCode::FORBIDDEN,
                    error: format!("cgroup: {cg} resolves outside the cgroup hierarchy"),
                    field: Some("cgroup".into()),
                });
            }
            exists = true;
        }
    }
    if !exists {
        return Err(ApiError::not_found(format!("cgroup {cg} does not exist on this host")));
    }
    Ok(cg)
}

pub async fn list(State(app): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<wire::Subscriptions>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    Ok(Json(wire::Subscriptions { containers: app.manager().views() }))
}

fn view_of(m: &Manager, name: &str) -> Result<Json<wire::Subscription>, ApiError> {
    m.view(name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("{name:?} is not subscribed (GET /v1/containers lists them)")))
}

pub async fn get(
    State(app): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<wire::Subscription>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    view_of(&app.manager(), &name)
}

pub async fn put(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<wire::Subscription>, ApiError> {
    check_name(&name)?;
    let req = model::parse_subscribe(&json_body(&body)?)?;
    let cgroup = resolve_cgroup(&app, &name, req.cgroup.as_deref())?;
    let found = probe(&app, &cgroup);
    let mut m = app.manager();
    m.subscribe(now_ms(), &name, &cgroup, &req, &found)?;
    view_of(&m, &name)
}

pub async fn delete(
    State(app): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<wire::Unsubscribed>, ApiError> {
    let q = Query::parse(q.as_deref(), &["restore"])?;
    let restore = match q.str("restore") {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(v) => return Err(ApiError::bad_request("restore", format!("must be true or false, got {v:?}"))),
    };
    let restored = app.manager().unsubscribe(now_ms(), &name, restore)?;
    Ok(Json(wire::Unsubscribed { name, restored }))
}

pub async fn put_resource(
    State(app): State<AppState>,
    Path((name, resource)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<wire::Subscription>, ApiError> {
    let r = model::parse_resource("resource", &resource)?;
    let patch = model::parse_patch(&json_body(&body)?, "")?;
    let cgroup = app
        .manager()
        .get(&name)
        .map(|s| s.cgroup.clone())
        .ok_or_else(|| ApiError::not_found(format!("{name:?} is not subscribed")))?;
    let found = probe(&app, &cgroup);
    let mut m = app.manager();
    m.update_resource(now_ms(), &name, r, &patch, &found)?;
    view_of(&m, &name)
}

/// `PUT /v1/containers/{name}/guard`: `{"guard": false}` stops scaling
/// every resource of the container (or those in `"resources"`), `true`
/// resumes it.
pub async fn put_guard(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<wire::Subscription>, ApiError> {
    let (guard, resources) = model::parse_guard(&json_body(&body)?)?;
    let mut m = app.manager();
    m.set_guard(now_ms(), &name, guard, resources.as_deref())?;
    view_of(&m, &name)
}

pub async fn put_ceiling(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<wire::Subscription>, ApiError> {
    let v = json_body(&body)?;
    let obj = v.as_object().ok_or_else(|| ApiError::bad_request("body", "must be an object like {\"cpu\": 1500}"))?;
    let mut ceiling = BTreeMap::new();
    for (k, val) in obj {
        let r = model::parse_resource(k, k)?;
        ceiling.insert(r, model::uint(val, k)?);
    }
    let mut m = app.manager();
    m.set_ceiling(now_ms(), &name, Some(ceiling))?;
    view_of(&m, &name)
}

pub async fn delete_ceiling(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<wire::Subscription>, ApiError> {
    let mut m = app.manager();
    m.set_ceiling(now_ms(), &name, None)?;
    view_of(&m, &name)
}

pub(super) fn host_view(app: &AppState) -> wire::Host {
    let m = app.manager();
    let g = app.shared.read();
    wire::Host {
        host: app.shared.host.clone(),
        capacity: m.capacity().clone(),
        allocated: m.allocated(),
        usage: wire::HostUsage { cpu: g.host_cpu },
        cpus_mc: crate::host::cpu_capacity(),
        rapl_mw: g.rapl_mw,
        power_model: PowerModel::try_new(app.power_model.idle_mw, app.power_model.max_mw).ok(),
    }
}

pub async fn get_host(State(app): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<wire::Host>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    Ok(Json(host_view(&app)))
}

pub async fn put_host(State(app): State<AppState>, body: Bytes) -> Result<Json<wire::Host>, ApiError> {
    let v = json_body(&body)?;
    let obj = v.as_object().ok_or_else(|| ApiError::bad_request("body", "must be an object"))?;
    if let Some(k) = obj.keys().find(|k| *k != "capacity") {
        return Err(ApiError::bad_request(k, "unknown field; allowed: capacity"));
    }
    let cap = obj
        .get("capacity")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::bad_request("capacity", "required, an object like {\"cpu\": 1500}"))?;
    let mut changes = BTreeMap::new();
    for (k, val) in cap {
        let field = format!("capacity.{k}");
        let r = model::parse_resource(&field, k)?;
        let amount = if val.is_null() { None } else { Some(model::uint(val, &field)?) };
        if amount == Some(0) {
            return Err(ApiError::bad_request(&field, "must be greater than 0 (null = not limited)"));
        }
        changes.insert(r, amount);
    }
    app.manager().set_capacity(changes)?;
    Ok(Json(host_view(&app)))
}

pub async fn events(State(app): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<wire::Events>, ApiError> {
    let q = Query::parse(q.as_deref(), &["since_id", "since_ms", "container", "limit"])?;
    let query = EventQuery {
        since_id: q.u64("since_id")?,
        since_ms: q.u64("since_ms")?,
        container: q.str("container").map(str::to_owned),
        limit: events_limit(&q)?,
    };
    Ok(Json(wire::Events { events: app.manager().events.query(&query) }))
}

/// `limit` of an events query: at most the newest N (default 1000).
pub(super) fn events_limit(q: &Query) -> Result<usize, ApiError> {
    Ok(q.u64("limit")?.map_or(1000, |l| usize::try_from(l).unwrap_or(usize::MAX)))
}

pub async fn stream(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Sse<impl futures_core::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let rx = app.manager().events.subscribe();
    let s = async_stream(rx);
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Turns the broadcast receiver into an SSE stream (lagging readers skip
/// what they missed).
fn async_stream(
    rx: tokio::sync::broadcast::Receiver<crate::manage::events::Event>,
) -> impl futures_core::Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let ev = SseEvent::default().id(e.id.to_string()).data(json!(e).to_string());
                    return Some((Ok(ev), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
