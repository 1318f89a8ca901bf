//! `/v1/users`: users own applications and hold CPU and energy budgets over
//! them; `/v1/apps/{app}/user` gives an application to a user;
//! `/v1/apps/{app}/containers/{host}/{name}` adds, reweights or removes one
//! container of an application at a time.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
};
use scaler_api::query::Query;
use serde_json::{Map, Value, json};

use super::{
    ApiError,
    apps::{store_err, unknown},
    name, object,
};
use crate::{
    Shared, ceilings,
    model::{CPU, ENERGY},
    now_ms,
    records::Pending,
    state::{AppRecord, ContainerRef, State as AggState, UserRecord},
    store::{APPS, USERS},
    totals, views,
};

/// Largest weight of a container.
const MAX_WEIGHT: u64 = 1_000_000;

fn no_user(user: &str) -> ApiError {
    ApiError::not_found(format!("no user named {user:?} (GET /v1/users lists them)"))
}

/// The applications of `user`.
fn apps_of(st: &AggState, user: &str) -> Vec<String> {
    st.apps.iter().filter(|(_, a)| a.record.user.as_deref() == Some(user)).map(|(n, _)| n.clone()).collect()
}

/// CPU (millicores: used, allocated) and power (mW) of the applications
/// `apps`, each container counted once.
fn use_of(st: &AggState, apps: &[String]) -> (Option<u64>, Option<u64>, Option<u64>) {
    let mut seen = std::collections::BTreeSet::new();
    let mut parts = Vec::new();
    for app in apps {
        for c in st.apps.get(app).map(|a| a.record.containers.as_slice()).unwrap_or_default() {
            if seen.insert(c.clone())
                && let Some(p) = st.hosts.get(&c.host).filter(|h| !h.stale).and_then(|h| views::part_of(h, &c.name))
            {
                parts.push(p);
            }
        }
    }
    let t = totals::totals(&parts);
    (t[CPU].usage, t[CPU].current, t[ENERGY].usage)
}

fn user_json(st: &AggState, user: &str, r: &UserRecord) -> Value {
    let apps = apps_of(st, user);
    let (cpu, allocated, power) = use_of(st, &apps);
    json!({
        "name": user,
        "cpu_budget": r.cpu_budget_mc,
        "energy_budget_w": r.energy_budget_mw.map(|m| m as f64 / 1000.0),
        "rebalance_percent": r.rebalance_percent,
        "apps": apps,
        "cpu_used": cpu,
        "cpu_allocated": allocated,
        "power_mw": power,
    })
}

pub async fn list(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let st = s.read();
    let users: Vec<Value> = st.users.iter().map(|(n, r)| user_json(&st, n, r)).collect();
    Ok(Json(json!({ "users": users })))
}

pub async fn one(State(s): State<Arc<Shared>>, Path(user): Path<String>) -> Result<Json<Value>, ApiError> {
    let st = s.read();
    let r = st.users.get(&user).ok_or_else(|| no_user(&user))?;
    Ok(Json(user_json(&st, &user, r)))
}

/// A budget field: millicores, or watts turned into mW; `null` = none.
fn budget(m: &Map<String, Value>, field: &str, watts: bool) -> Result<Option<u64>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().filter(|v| v.is_finite() && *v > 0.0 && *v <= 1e12);
            let v = v.ok_or_else(|| ApiError::bad_request(field, format!("{field} must be a number above 0")))?;
            Ok(Some(if watts { (v * 1000.0).round() as u64 } else { v.round() as u64 }))
        }
        Some(v) => Err(ApiError::bad_request(field, format!("{field} must be a number or null, got {v}"))),
    }
}

/// A 409 naming `field`.
fn conflict(field: &str, what: String) -> ApiError {
    ApiError { status: StatusCode::CONFLICT, error: format!("{field}: {what}"), field: Some(field.into()) }
}

/// The energy caps of `apps`, summed (mW), with `app`'s taken as `cap`.
fn caps_of(st: &AggState, apps: &[String], app: Option<(&str, Option<u64>)>) -> u64 {
    let mut sum = 0u64;
    for n in apps {
        let cap = match app {
            Some((name, cap)) if name == n => cap,
            _ => st.apps.get(n).and_then(|a| a.record.cap_mw),
        };
        sum = sum.saturating_add(cap.unwrap_or(0));
    }
    if let Some((name, Some(cap))) = app
        && !apps.iter().any(|n| n == name)
    {
        sum = sum.saturating_add(cap);
    }
    sum
}

/// An application's energy cap (`cap_mw`) must fit, with the caps of its
/// user's other applications, in the user's energy budget.
pub fn check_cap(st: &AggState, app: &str, cap_mw: u64) -> Result<(), ApiError> {
    let Some(user) = st.apps.get(app).and_then(|a| a.record.user.clone()) else { return Ok(()) };
    let Some(budget) = st.users.get(&user).and_then(|u| u.energy_budget_mw) else { return Ok(()) };
    let sum = caps_of(st, &apps_of(st, &user), Some((app, Some(cap_mw))));
    if sum > budget {
        return Err(conflict(
            "watts",
            format!(
                "the caps of {user:?}'s applications would sum to {} W, above its energy budget of {} W",
                sum as f64 / 1000.0,
                budget as f64 / 1000.0
            ),
        ));
    }
    Ok(())
}

/// A budget below what the user's applications use now is refused, and an
/// energy budget below the sum of their caps.
fn check_budgets(st: &AggState, apps: &[String], r: &UserRecord) -> Result<(), ApiError> {
    if let Some(b) = r.energy_budget_mw {
        let caps = caps_of(st, apps, None);
        if caps > b {
            return Err(conflict(
                "energy_budget_w",
                format!(
                    "{} W is below the sum of its applications' energy caps ({} W)",
                    b as f64 / 1000.0,
                    caps as f64 / 1000.0
                ),
            ));
        }
    }
    let (cpu, _, power) = use_of(st, apps);
    if let (Some(b), Some(u)) = (r.cpu_budget_mc, cpu)
        && b < u
    {
        return Err(conflict("cpu_budget", format!("{b} millicores is below what the applications use now ({u})")));
    }
    if let (Some(b), Some(u)) = (r.energy_budget_mw, power)
        && b < u
    {
        return Err(conflict(
            "energy_budget_w",
            format!("{} W is below what the applications draw now ({} W)", b as f64 / 1000.0, u as f64 / 1000.0),
        ));
    }
    Ok(())
}

/// Creates or replaces a user: `{"cpu_budget": 4000, "energy_budget_w": 60}`.
pub async fn put(
    State(s): State<Arc<Shared>>,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    name("user", &user)?;
    let m = object(&body, &["cpu_budget", "energy_budget_w", "rebalance_percent"])?;
    let rebalance_percent = super::opt_u64(&m, "rebalance_percent")?.unwrap_or(0);
    if rebalance_percent > 100 {
        return Err(ApiError::bad_request("rebalance_percent", "rebalance_percent must be at most 100"));
    }
    let r = UserRecord {
        cpu_budget_mc: budget(&m, "cpu_budget", false)?,
        energy_budget_mw: budget(&m, "energy_budget_w", true)?,
        rebalance_percent,
    };
    let (answer, written) = {
        let mut st = s.write();
        check_budgets(&st, &apps_of(&st, &user), &r)?;
        let written = s.records.put(USERS, &user, &r).map_err(store_err)?;
        let created = st.users.insert(user.clone(), r.clone()).is_none();
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        ((status, Json(user_json(&st, &user, &r))), written)
    };
    super::durable(vec![written]).await?;
    Ok(answer)
}

/// Deletes a user; its applications stay, without an owner.
pub async fn delete(State(s): State<Arc<Shared>>, Path(user): Path<String>) -> Result<Json<Value>, ApiError> {
    let (apps, written) = {
        let mut st = s.write();
        if !st.users.contains_key(&user) {
            return Err(no_user(&user));
        }
        let apps = apps_of(&st, &user);
        let mut written = Vec::new();
        for app in &apps {
            if let Some(a) = st.apps.get(app) {
                let record = AppRecord { user: None, ..a.record.clone() };
                written.push(save_app(&s, &mut st, app, record)?);
            }
        }
        written.push(s.records.delete(USERS, &user).map_err(store_err)?);
        st.users.remove(&user);
        (apps, written)
    };
    super::durable(written).await?;
    Ok(Json(json!({"name": user, "deleted": true, "apps_released": apps})))
}

/// `PUT /v1/apps/{app}/user`: `{"user": "alice"}` gives the application to
/// a user (moving it from another), `{"user": null}` releases it. Refused
/// when the user's budgets could not hold what the application uses.
pub async fn put_app_user(
    State(s): State<Arc<Shared>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let m = object(&body, &["user"])?;
    let user = match m.get("user") {
        Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.clone()),
        _ => return Err(ApiError::bad_request("user", "user must be a user's name or null")),
    };
    let (answer, written) = {
        let mut st = s.write();
        if !st.apps.contains_key(&app) {
            return Err(unknown(&app));
        }
        if let Some(u) = &user {
            let r = st.users.get(u).ok_or_else(|| ApiError { field: Some("user".into()), ..no_user(u) })?.clone();
            let mut apps = apps_of(&st, u);
            if !apps.contains(&app) {
                apps.push(app.clone());
            }
            check_budgets(&st, &apps, &r).map_err(|e| ApiError { field: Some("user".into()), ..e })?;
        }
        let mut record = st.apps.get(&app).ok_or_else(|| unknown(&app))?.record.clone();
        record.user = user;
        let written = save_app(&s, &mut st, &app, record)?;
        (app_view(&st, &app)?, written)
    };
    super::durable(vec![written]).await?;
    Ok(answer)
}

/// Stores `record` as `app`'s and puts it in force.
fn save_app(s: &Shared, st: &mut AggState, app: &str, record: AppRecord) -> Result<Pending, ApiError> {
    let written = s.records.put(APPS, app, &record).map_err(store_err)?;
    st.apps.get_mut(app).ok_or_else(|| unknown(app))?.record = record;
    Ok(written)
}

/// The application as the API answers.
fn app_view(st: &AggState, app: &str) -> Result<Json<Value>, ApiError> {
    let a = st.apps.get(app).ok_or_else(|| unknown(app))?;
    Ok(Json(views::app_json(app, a, st, now_ms(), false)))
}

/// `PUT /v1/apps/{app}/containers/{host}/{name}`: adds one container (or
/// changes its weight: `{"weight": 2}`, default 1).
pub async fn put_member(
    State(s): State<Arc<Shared>>,
    Path((app, host, cname)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    name("host", &host)?;
    name("name", &cname)?;
    let m = if body.is_empty() { Map::new() } else { object(&body, &["weight"])? };
    let weight = match m.get("weight") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(w) if (1..=MAX_WEIGHT).contains(&w) => w as u32,
            _ => {
                return Err(ApiError::bad_request(
                    "weight",
                    format!("weight must be a whole number in 1..={MAX_WEIGHT}, got {v}"),
                ));
            }
        },
    };
    let c = ContainerRef { host, name: cname };
    let (answer, written) = {
        let mut st = s.write();
        let capped_elsewhere = st
            .apps
            .iter()
            .find(|(n, a)| {
                n.as_str() != app
                    && (a.record.cap_mw.is_some() || a.record.scaling.is_some())
                    && a.record.containers.contains(&c)
            })
            .map(|(n, _)| n.clone());
        let a = st.apps.get_mut(&app).ok_or_else(|| unknown(&app))?;
        if let Some(other) = capped_elsewhere.filter(|_| a.record.cap_mw.is_some() || a.record.scaling.is_some()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("{}/{} is also in application {other:?}, which scales or has an energy cap", c.host, c.name),
            ));
        }
        let mut record = a.record.clone();
        if !record.containers.contains(&c) {
            record.containers.push(c.clone());
        }
        if weight == 1 {
            record.weights.remove(&c.key());
        } else {
            record.weights.insert(c.key(), weight);
        }
        let written = save_app(&s, &mut st, &app, record)?;
        (app_view(&st, &app)?, written)
    };
    super::durable(vec![written]).await?;
    Ok(answer)
}

/// `DELETE /v1/apps/{app}/containers/{host}/{name}`: removes one container
/// (a ceiling the application's cap set on it is cleared).
pub async fn delete_member(
    State(s): State<Arc<Shared>>,
    Path((app, host, cname)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let c = ContainerRef { host, name: cname };
    let (answer, written) = {
        let mut st = s.write();
        let a = st.apps.get_mut(&app).ok_or_else(|| unknown(&app))?;
        if !a.record.containers.contains(&c) {
            return Err(ApiError::not_found(format!("{}/{} is not in application {app:?}", c.host, c.name)));
        }
        let mut record = a.record.clone();
        record.containers.retain(|x| x != &c);
        record.weights.remove(&c.key());
        let written = save_app(&s, &mut st, &app, record)?;
        ceilings::clear_app(&s, &mut st, &app);
        (app_view(&st, &app)?, written)
    };
    super::durable(vec![written]).await?;
    Ok(answer)
}
