//! `/v1/apps/{app}/scaling`: an application scaled at its own level
//! (guarded: its allocation follows its need within its bounds and its
//! user's budget, split among its containers by weight) or rebalanced
//! (slack moved to the containers that are short).

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
};
use serde_json::{Map, Value, json};

use super::{
    ApiError,
    apps::{store_err, unknown},
    object, opt_u64,
};
use crate::{
    Shared, ceilings,
    state::{AppScaling, ScalingStatus, State as AggState},
    store::APPS,
};

pub fn scaling_json(st: &AggState, app: &str) -> Option<Value> {
    let a = st.apps.get(app)?;
    let ceilings: Map<String, Value> = a.scaled.iter().map(|(c, v)| (c.key(), json!(v))).collect();
    Some(json!({
        "name": app,
        "scaling": a.record.scaling.map(|s| json!({
            "cpu": {"min": s.cpu_min, "max": s.cpu_max},
            "guard": s.guard,
            "headroom_percent": s.headroom_percent,
            "rebalance_percent": s.rebalance_percent,
        })),
        "status": a.scaling,
        "ceilings": ceilings,
    }))
}

pub async fn get(State(s): State<Arc<Shared>>, Path(app): Path<String>) -> Result<Json<Value>, ApiError> {
    let st = s.read();
    scaling_json(&st, &app).map(Json).ok_or_else(|| unknown(&app))
}

/// `{"cpu": {"min": 300, "max": 6000}, "guard": true, "headroom_percent":
/// 10, "rebalance_percent": 50}`; fields left out keep their value (or
/// defaults: guard true, headroom 10 %, no rebalancing).
fn parse(body: &Bytes, old: Option<AppScaling>) -> Result<AppScaling, ApiError> {
    let m = object(body, &["cpu", "guard", "headroom_percent", "rebalance_percent"])?;
    let mut s =
        old.unwrap_or(AppScaling { cpu_min: 0, cpu_max: 0, guard: true, headroom_percent: 10, rebalance_percent: 0 });
    match m.get("cpu") {
        Some(Value::Object(c)) => {
            if let Some(k) = c.keys().find(|k| !matches!(k.as_str(), "min" | "max")) {
                return Err(ApiError::bad_request(
                    &format!("cpu.{k}"),
                    format!("unknown field {k:?}; allowed: min, max"),
                ));
            }
            let field = |k: &str| format!("cpu.{k}");
            let get = |k: &str| opt_u64(c, k).map_err(|e| ApiError { field: Some(field(k)), ..e });
            s.cpu_min = get("min")?.unwrap_or(s.cpu_min);
            s.cpu_max = get("max")?.unwrap_or(s.cpu_max);
        }
        None if old.is_some() => {}
        _ => return Err(ApiError::bad_request("cpu", "cpu is required: {\"min\": millicores, \"max\": millicores}")),
    }
    if s.cpu_max == 0 || s.cpu_max > 1 << 40 {
        return Err(ApiError::bad_request("cpu.max", "cpu.max must be between 1 and 2^40 millicores"));
    }
    if s.cpu_min > s.cpu_max {
        return Err(ApiError::bad_request(
            "cpu.min",
            format!("cpu.min ({}) is above cpu.max ({})", s.cpu_min, s.cpu_max),
        ));
    }
    match m.get("guard") {
        None => {}
        Some(Value::Bool(g)) => s.guard = *g,
        Some(_) => return Err(ApiError::bad_request("guard", "guard must be true or false")),
    }
    for (k, slot, max) in
        [("headroom_percent", &mut s.headroom_percent, 1000), ("rebalance_percent", &mut s.rebalance_percent, 100)]
    {
        if let Some(v) = opt_u64(&m, k)? {
            if v > max {
                return Err(ApiError::bad_request(k, format!("{k} must be at most {max}")));
            }
            *slot = v;
        }
    }
    Ok(s)
}

pub async fn put(State(s): State<Arc<Shared>>, Path(app): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let (answer, written) = {
        let mut st = s.write();
        let a = st.apps.get(&app).ok_or_else(|| unknown(&app))?;
        let scaling = parse(&body, a.record.scaling)?;
        // One controller per ceiling: a container also in another application
        // that scales or is capped would be pulled two ways.
        for c in &a.record.containers {
            if let Some((other, _)) = st.apps.iter().find(|(n, o)| {
                n.as_str() != app
                    && (o.record.scaling.is_some() || o.record.cap_mw.is_some())
                    && o.record.containers.contains(c)
            }) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("{}/{} is also in application {other:?}, which scales or is capped", c.host, c.name),
                ));
            }
        }
        let mut record = a.record.clone();
        record.scaling = Some(scaling);
        let written = s.records.put(APPS, &app, &record).map_err(store_err)?;
        let a = st.apps.get_mut(&app).ok_or_else(|| unknown(&app))?;
        a.record = record;
        a.scaling = ScalingStatus { state: "starting".into(), ..ScalingStatus::default() };
        (scaling_json(&st, &app).ok_or_else(|| unknown(&app))?, written)
    };
    super::durable(vec![written]).await?;
    Ok(Json(answer))
}

/// Stops scaling the application at its level and clears the ceilings it
/// set (an energy cap's stay).
pub async fn delete(State(s): State<Arc<Shared>>, Path(app): Path<String>) -> Result<Json<Value>, ApiError> {
    let (had, written) = {
        let mut st = s.write();
        let a = st.apps.get_mut(&app).ok_or_else(|| unknown(&app))?;
        let had = a.record.scaling.is_some();
        let mut record = a.record.clone();
        record.scaling = None;
        let written = s.records.put(APPS, &app, &record).map_err(store_err)?;
        a.record = record;
        a.scaled.clear();
        a.scaling = ScalingStatus::default();
        ceilings::clear_app(&s, &mut st, &app);
        (had, written)
    };
    super::durable(vec![written]).await?;
    Ok(Json(json!({"name": app, "cleared": had})))
}
