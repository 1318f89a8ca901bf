//! `GET .../history` for hosts, applications and containers, and
//! `GET /v1/events`.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::StatusCode,
};
use serde_json::{Map, Value, json};

use super::{ApiError, apps::unknown as unknown_app, hosts::unknown as unknown_host};
use crate::{Shared, history, model::RESOURCES, now_ms, state::ContainerRef};
use scaler_api::query::Query;

/// Default window of a history query.
const DEFAULT_SINCE_MS: u64 = 15 * 60_000;

/// A time: milliseconds since the epoch, `now`, or a duration ago
/// (`90s`, `15m`, `-15m`, `2h`, `7d`).
pub fn parse_time(v: &str, now: u64) -> Result<u64, String> {
    if v == "now" {
        return Ok(now);
    }
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    let d = v.strip_prefix('-').unwrap_or(v);
    let split = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    let (n, unit) = d.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{v:?} is neither a time in ms nor a duration like 15m"))?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{v:?}: unit must be ms, s, m, h or d")),
    };
    Ok(now.saturating_sub(n.saturating_mul(mult)))
}

/// What Prometheus can answer for (`[history] prometheus`): a container's
/// series, or an application's as its containers' sum; the energy of
/// either from the aggregator's own series.
enum Remote {
    Container(ContainerRef),
    App { name: String, containers: Vec<ContainerRef> },
}

impl Remote {
    fn energy(&self) -> history::prometheus::Energy<'_> {
        use history::prometheus::Energy;
        match self {
            Remote::Container(c) => Energy::Container(c),
            Remote::App { name, .. } => Energy::App(name),
        }
    }
}

async fn query(
    s: &Shared,
    kind: &str,
    name: &str,
    entity: String,
    raw: Option<&str>,
    remote: Option<Remote>,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(raw, &["resource", "since", "until"])?;
    let now = now_ms();
    let resource = match q.str("resource") {
        None => None,
        Some(r) => Some(RESOURCES.iter().position(|x| *x == r).ok_or_else(|| {
            ApiError::bad_request("resource", format!("unknown resource {r:?}; one of {}", RESOURCES.join(", ")))
        })?),
    };
    let since = match q.str("since") {
        Some(v) => parse_time(v, now).map_err(|e| ApiError::bad_request("since", e))?,
        None => now.saturating_sub(DEFAULT_SINCE_MS),
    };
    let until = match q.str("until") {
        Some(v) => parse_time(v, now).map_err(|e| ApiError::bad_request("until", e))?,
        None => now,
    };
    if since > until {
        return Err(ApiError::bad_request("since", "since must not be after until"));
    }
    // Energy is the aggregator's own (agents do not export power): from
    // its replicas' series where Prometheus scrapes them.
    let only_energy = resource == Some(crate::model::ENERGY);
    let asked = match (&s.prometheus, &remote) {
        (Some(p), Some(r)) if only_energy => Some(p.energy(r.energy(), since, until).await),
        (Some(p), Some(Remote::Container(c))) => Some(p.container(c, since, until).await),
        (Some(p), Some(Remote::App { containers, .. })) => Some(p.app(containers, since, until).await),
        _ => None,
    };
    let here = || {
        s.history
            .query(&entity, since, until, now)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    };
    let (mut points, source, remote_error) = match asked {
        Some(Ok(points)) if !points.is_empty() => (points, "prometheus", None),
        // Nothing there (not scraped yet, or not this agent): the
        // embedded tiers, when they have something, saying why.
        Some(Ok(points)) => match here()? {
            mine if mine.is_empty() => (points, "prometheus", None),
            mine => {
                let scraped = if only_energy { "the aggregator" } else { "the agent" };
                let why = format!("Prometheus has no samples of it in this window (is it scraping {scraped}?)");
                (mine, "aggregator", Some(why))
            }
        },
        answer => (here()?, "aggregator", answer.and_then(Result::err)),
    };
    // Every resource from Prometheus: the energy beside the agents' points
    // is the latest before each, from Prometheus where it scrapes the
    // aggregator, else from the embedded tiers.
    if source == "prometheus"
        && resource.is_none()
        && let (Some(p), Some(r)) = (&s.prometheus, &remote)
    {
        let energy = match p.energy(r.energy(), since, until).await {
            Ok(e) if !e.is_empty() => e,
            _ => here()?,
        };
        history::prometheus::fill_energy(&mut points, &energy);
    }
    let points: Vec<Value> = points
        .into_iter()
        .map(|p| match resource {
            Some(i) => json!({"time_ms": p.time_ms, "step_ms": p.step_ms, RESOURCES[i]: p.readings[i]}),
            None => {
                let mut m = Map::new();
                for (n, r) in RESOURCES.iter().zip(p.readings) {
                    m.insert((*n).to_owned(), json!(r));
                }
                json!({"time_ms": p.time_ms, "step_ms": p.step_ms, "resources": m})
            }
        })
        .collect();
    Ok(Json(json!({
        "kind": kind,
        "name": name,
        "resource": resource.map(|i| RESOURCES[i]),
        "since_ms": since,
        "until_ms": until,
        "source": source,
        "prometheus_error": remote_error,
        "points": points,
    })))
}

pub async fn host(
    State(s): State<Arc<Shared>>,
    Path(host): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if !s.read().hosts.contains_key(&host) {
        return Err(unknown_host(&host));
    }
    query(&s, "host", &host, history::host_key(&host), q.as_deref(), None).await
}

pub async fn app(
    State(s): State<Arc<Shared>>,
    Path(app): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let containers = s.read().apps.get(&app).ok_or_else(|| unknown_app(&app))?.record.containers.clone();
    let key = history::app_key(&app);
    query(&s, "app", &app, key, q.as_deref(), Some(Remote::App { name: app.clone(), containers })).await
}

pub async fn container(
    State(s): State<Arc<Shared>>,
    Path((host, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if !s.read().hosts.contains_key(&host) {
        return Err(unknown_host(&host));
    }
    let key = history::container_key(&host, &name);
    let remote = Remote::Container(ContainerRef { host: host.clone(), name: name.clone() });
    let v = query(&s, "container", &format!("{host}/{name}"), key, q.as_deref(), Some(remote)).await?;
    let known = s.read().hosts.get(&host).is_some_and(|h| h.container(&name).is_some());
    if !known && v.0["points"].as_array().is_none_or(Vec::is_empty) {
        return Err(ApiError::not_found(format!("no container named {name:?} on host {host:?}, and no history")));
    }
    Ok(v)
}

/// Recent limit changes across the cluster (agents' and this
/// aggregator's), oldest first; with replicas, every replica's merged
/// (`scope=local`: this replica's hosts only).
pub async fn events(State(s): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(raw.as_deref(), &["host", "app", "container", "since_ms", "limit", "scope"])?;
    let local = super::forward::local_scope(&q)?;
    let limit = q.u64("limit")?.unwrap_or(100);
    let mut out = events_here(&s, &q)?;
    if local || s.cluster.is_none() || q.str("host").is_some() || q.str("app").is_some() {
        return Ok(Json(json!({ "events": out })));
    }
    // Neither host, app nor scope here: the query goes on as received.
    let (theirs, errors) = super::forward::others(&s, "/v1/events", raw.as_deref().unwrap_or(""), "events").await;
    out.extend(theirs);
    // A host that moved between replicas has its older events on both.
    let mut seen = std::collections::HashSet::new();
    out.retain(|e| seen.insert(e.to_string()));
    out.sort_by(|a, b| (a["time_ms"].as_u64(), a["host"].as_str()).cmp(&(b["time_ms"].as_u64(), b["host"].as_str())));
    let skip = out.len().saturating_sub(usize::try_from(limit).unwrap_or(usize::MAX));
    out.drain(..skip);
    Ok(Json(json!({ "events": out, "incomplete": errors })))
}

/// The events this replica keeps (those of the hosts it gathers, and its
/// own), newest `limit` of them, oldest first.
fn events_here(s: &Shared, q: &Query) -> Result<Vec<Value>, ApiError> {
    let since = q.u64("since_ms")?.unwrap_or(0);
    let limit = q.u64("limit")?.unwrap_or(100);
    if limit == 0 {
        return Err(ApiError::bad_request("limit", "limit must be at least 1"));
    }
    let st = s.read();
    let (host, container) = (q.str("host"), q.str("container"));
    if let Some(h) = host
        && !st.hosts.contains_key(h)
    {
        return Err(unknown_host(h));
    }
    let members: Option<Vec<ContainerRef>> = match q.str("app") {
        Some(a) => Some(st.apps.get(a).ok_or_else(|| unknown_app(a))?.record.containers.clone()),
        None => None,
    };
    let mut out: Vec<Value> = st
        .events
        .iter()
        .rev()
        .filter(|e| e.time_ms > since)
        .filter(|e| host.is_none_or(|h| h == e.host) && container.is_none_or(|c| c == e.container))
        .filter(|e| members.as_ref().is_none_or(|m| m.iter().any(|c| c.host == e.host && c.name == e.container)))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|e| json!(e))
        .collect();
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times() {
        use super::parse_time;
        assert_eq!(parse_time("now", 100_000), Ok(100_000));
        assert_eq!(parse_time("1700000000000", 5), Ok(1_700_000_000_000));
        assert_eq!(parse_time("15m", 1_000_000), Ok(100_000));
        assert_eq!(parse_time("-90s", 100_000), Ok(10_000));
        assert_eq!(parse_time("2h", 1), Ok(0));
        assert!(parse_time("5y", 1).is_err());
        assert!(parse_time("m", 1).is_err());
    }
}
