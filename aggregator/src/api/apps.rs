//! `/v1/apps`: applications (groups of containers across hosts) and their
//! energy caps.

use std::{collections::BTreeSet, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
};
use serde_json::{Value, json};

use super::{ApiError, name, object};
use crate::{
    Shared, ceilings, now_ms,
    state::{AppRecord, AppState, CapStatus, ContainerRef, State as AggState},
    store::{APPS, StoreError},
    views,
};
use scaler_api::query::Query;

/// Most containers in one application.
const MAX_CONTAINERS: usize = 10_000;
/// Highest cap accepted, W.
const MAX_WATTS: f64 = 1e7;

pub fn unknown(app: &str) -> ApiError {
    ApiError::not_found(format!("no application named {app:?} (GET /v1/apps lists them)"))
}

pub(super) fn store_err(e: StoreError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

pub async fn list(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let now = now_ms();
    let st = s.read();
    let apps: Vec<Value> = st.apps.iter().map(|(n, a)| views::app_json(n, a, &st, now, false)).collect();
    Ok(Json(json!({ "apps": apps })))
}

pub async fn one(State(s): State<Arc<Shared>>, Path(app): Path<String>) -> Result<Json<Value>, ApiError> {
    let st = s.read();
    let a = st.apps.get(&app).ok_or_else(|| unknown(&app))?;
    Ok(Json(views::app_json(&app, a, &st, now_ms(), true)))
}

fn parse(body: &Bytes) -> Result<Vec<ContainerRef>, ApiError> {
    let m = object(body, &["containers"])?;
    let Some(Value::Array(list)) = m.get("containers") else {
        return Err(ApiError::bad_request(
            "containers",
            "containers must be an array of {\"host\": ..., \"name\": ...}",
        ));
    };
    if list.len() > MAX_CONTAINERS {
        return Err(ApiError::bad_request("containers", format!("at most {MAX_CONTAINERS} containers")));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = |f: &str| format!("containers[{i}].{f}");
        let Value::Object(o) = item else {
            return Err(ApiError::bad_request(&format!("containers[{i}]"), "must be {\"host\": ..., \"name\": ...}"));
        };
        if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "host" | "name")) {
            return Err(ApiError::bad_request(&field(k), format!("unknown field {k:?}; allowed: host, name")));
        }
        let get = |f: &str| match o.get(f) {
            Some(Value::String(v)) => name(&field(f), v).map(|()| v.clone()),
            _ => Err(ApiError::bad_request(&field(f), format!("{} must be a string", field(f)))),
        };
        let c = ContainerRef { host: get("host")?, name: get("name")? };
        if !seen.insert(c.clone()) {
            return Err(ApiError::bad_request(
                &format!("containers[{i}]"),
                format!("{}/{} is listed twice", c.host, c.name),
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// A container of `app` that another capped application also holds: two
/// controllers must not fight over one ceiling.
fn conflict(st: &AggState, app: &str, containers: &[ContainerRef]) -> Result<(), ApiError> {
    for (other, a) in
        st.apps.iter().filter(|(n, a)| n.as_str() != app && (a.record.cap_mw.is_some() || a.record.scaling.is_some()))
    {
        if let Some(c) = containers.iter().find(|c| a.record.containers.contains(c)) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("{}/{} is also in application {other:?}, which scales or has an energy cap", c.host, c.name),
            ));
        }
    }
    Ok(())
}

/// Creates or replaces an application: `{"containers": [{"host", "name"}]}`.
/// A cap in force stays.
pub async fn put(
    State(s): State<Arc<Shared>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    name("app", &app)?;
    let containers = parse(&body)?;
    let (answer, written) = {
        let mut st = s.write();
        let existing = st.apps.get(&app).map(|a| a.record.clone());
        if existing.as_ref().is_some_and(|r| r.cap_mw.is_some() || r.scaling.is_some()) {
            conflict(&st, &app, &containers)?;
        }
        let record = AppRecord { containers, ..existing.clone().unwrap_or_default() };
        let written = s.records.put(APPS, &app, &record).map_err(store_err)?;
        match st.apps.get_mut(&app) {
            Some(a) => a.record = record,
            None => {
                st.apps.insert(app.clone(), AppState::new(record));
            }
        }
        ceilings::clear_app(&s, &mut st, &app);
        let a = st.apps.get(&app).ok_or_else(|| unknown(&app))?;
        let status = if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED };
        ((status, Json(views::app_json(&app, a, &st, now_ms(), false))), written)
    };
    super::durable(vec![written]).await?;
    Ok(answer)
}

/// Deletes an application, clearing the ceilings its cap set.
pub async fn delete(State(s): State<Arc<Shared>>, Path(app): Path<String>) -> Result<Json<Value>, ApiError> {
    let (n, written) = {
        let mut st = s.write();
        let a = st.apps.get_mut(&app).ok_or_else(|| unknown(&app))?;
        a.record.cap_mw = None;
        let n = a.ceilings.len();
        ceilings::clear_app(&s, &mut st, &app);
        st.apps.remove(&app);
        (n, s.records.delete(APPS, &app).map_err(store_err)?)
    };
    super::durable(vec![written]).await?;
    Ok(Json(json!({"name": app, "deleted": true, "ceilings_cleared": n})))
}

pub async fn get_cap(State(s): State<Arc<Shared>>, Path(app): Path<String>) -> Result<Json<Value>, ApiError> {
    let st = s.read();
    let a = st.apps.get(&app).ok_or_else(|| unknown(&app))?;
    Ok(Json(views::energy_json(a, &st)))
}

fn watts(body: &Bytes) -> Result<u64, ApiError> {
    let m = object(body, &["watts"])?;
    let w = match m.get("watts") {
        Some(Value::Number(n)) => n.as_f64(),
        None => return Err(ApiError::bad_request("watts", "watts is required, e.g. {\"watts\": 40}")),
        Some(_) => None,
    };
    match w {
        Some(w) if w.is_finite() && w > 0.0 && w <= MAX_WATTS => Ok((w * 1000.0).round().max(1.0) as u64),
        _ => Err(ApiError::bad_request("watts", format!("watts must be a number above 0 and at most {MAX_WATTS}"))),
    }
}

/// Sets the application's power cap: `{"watts": N}`.
pub async fn put_cap(
    State(s): State<Arc<Shared>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let cap_mw = watts(&body)?;
    let controller =
        s.cfg.energy.controller.build().map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (answer, written) = {
        let mut st = s.write();
        let containers = st.apps.get(&app).ok_or_else(|| unknown(&app))?.record.containers.clone();
        conflict(&st, &app, &containers)?;
        super::users::check_cap(&st, &app, cap_mw)?;
        let a = st.apps.get_mut(&app).ok_or_else(|| unknown(&app))?;
        let mut record = a.record.clone();
        record.cap_mw = Some(cap_mw);
        record.cap_set_ms = Some(now_ms());
        // A new cap starts the user's rebalancing of it afresh.
        a.cap_share = None;
        let written = s.records.put(APPS, &app, &record).map_err(store_err)?;
        a.record = record;
        if a.controller.is_none() {
            a.controller = Some(std::sync::Mutex::new(controller));
        }
        a.cap = CapStatus { state: "starting".into(), ..CapStatus::default() };
        let a = st.apps.get(&app).ok_or_else(|| unknown(&app))?;
        (views::energy_json(a, &st), written)
    };
    super::durable(vec![written]).await?;
    Ok(Json(answer))
}

/// Clears the cap and the ceilings it set (normal scaling resumes).
pub async fn delete_cap(State(s): State<Arc<Shared>>, Path(app): Path<String>) -> Result<Json<Value>, ApiError> {
    let (had, n, written) = {
        let mut st = s.write();
        let a = st.apps.get_mut(&app).ok_or_else(|| unknown(&app))?;
        let had = a.record.cap_mw.is_some();
        let mut record = a.record.clone();
        record.cap_mw = None;
        record.cap_set_ms = None;
        let written = s.records.put(APPS, &app, &record).map_err(store_err)?;
        a.record = record;
        a.controller = None;
        a.cap = CapStatus::default();
        let n = a.ceilings.len();
        ceilings::clear_app(&s, &mut st, &app);
        (had, n, written)
    };
    super::durable(vec![written]).await?;
    Ok(Json(json!({"name": app, "cleared": had, "ceilings_cleared": n})))
}
