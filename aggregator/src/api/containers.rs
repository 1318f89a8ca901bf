//! `/v1/containers`: every container in the cluster, and subscriptions
//! forwarded to the agent of the container's host.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use reqwest::Method;
use serde_json::{Value, json};

use super::{ApiError, hosts::unknown as unknown_host, name};
use crate::{Shared, client, now_ms, state::ContainerRef, views};
use scaler_api::query::Query;

/// Forwarded requests wait this long for the agent.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Every container (of `host`, of `app`); with replicas, each as the
/// replica gathering its host sees it (`scope=local`: this replica's part).
pub async fn list(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref(), &["host", "app", "scope"])?;
    let local = super::forward::local_scope(&q)?;
    let (host, app) = (q.str("host"), q.str("app"));
    let mut out = list_here(&s, host, app)?;
    // A host or an application is answered whole where it is gathered.
    if local || s.cluster.is_none() || host.is_some() || app.is_some() {
        return Ok(Json(json!({ "containers": out })));
    }
    let (theirs, errors) = super::forward::others(&s, "/v1/containers", "", "containers").await;
    out.extend(theirs);
    // A host that just moved may be listed by both replicas for a moment:
    // the fresh copy is kept.
    let key = |c: &Value| (c["host"].to_string(), c["name"].to_string());
    out.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| (a["stale"] != false).cmp(&(b["stale"] != false))));
    out.dedup_by(|later, first| key(later) == key(first));
    Ok(Json(json!({ "containers": out, "incomplete": errors })))
}

/// The containers of the hosts this replica gathers.
fn list_here(s: &Shared, host: Option<&str>, app: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let now = now_ms();
    let st = s.read();
    if let Some(h) = host
        && !st.hosts.contains_key(h)
    {
        return Err(unknown_host(h));
    }
    let members = match app {
        Some(a) => Some(&st.apps.get(a).ok_or_else(|| super::apps::unknown(a))?.record.containers),
        None => None,
    };
    let mut out = Vec::new();
    for h in st.hosts.values().filter(|h| host.is_none_or(|x| x == h.name) && s.owns(&h.name)) {
        for c in h.stats.iter().flat_map(|s| &s.containers) {
            let r = ContainerRef { host: h.name.clone(), name: c.name.clone() };
            if members.is_none_or(|m| m.contains(&r)) {
                out.push(views::container_json(&st, h, c, now));
            }
        }
    }
    Ok(out)
}

pub async fn one(
    State(s): State<Arc<Shared>>,
    Path((host, cname)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let st = s.read();
    let h = st.hosts.get(&host).ok_or_else(|| unknown_host(&host))?;
    let c = h.container(&cname).ok_or_else(|| {
        ApiError::not_found(format!("no container named {cname:?} on host {host:?} (GET /v1/containers lists them)"))
    })?;
    Ok(Json(views::container_json(&st, h, c, now_ms())))
}

/// Sends `method path` with `body` to `host`'s agent and relays its answer;
/// 502 when the agent cannot be reached (the message then says "is
/// unreachable") or answers with something that is not HTTP.
async fn forward(
    s: &Shared,
    host: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Response, ApiError> {
    let target = {
        let st = s.read();
        st.hosts.get(host).ok_or_else(|| unknown_host(host))?.target.clone()
    };
    match client::forward(&s.client, &target, method, path, body, FORWARD_TIMEOUT).await {
        Ok((status, v)) => {
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            Ok((status, Json(v)).into_response())
        }
        Err(e) if e.is_unreachable() => {
            Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("agent of host {host:?} is unreachable: {e}")))
        }
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("agent of host {host:?}: {e}"))),
    }
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("body", format!("body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("body", "body must be a JSON object"));
    }
    Ok(v)
}

/// Subscribes a container: the body is the agent's (docs/api.md).
pub async fn subscribe(
    State(s): State<Arc<Shared>>,
    Path((host, cname)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    name("name", &cname)?;
    let v = json_body(&body)?;
    forward(&s, &host, Method::PUT, &format!("/v1/containers/{cname}"), Some(&v)).await
}

pub async fn unsubscribe(
    State(s): State<Arc<Shared>>,
    Path((host, cname)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    name("name", &cname)?;
    let q = Query::parse(q.as_deref(), &["restore"])?;
    let path = match q.str("restore") {
        Some(r @ ("true" | "false")) => format!("/v1/containers/{cname}?restore={r}"),
        Some(r) => return Err(ApiError::bad_request("restore", format!("restore must be true or false, got {r:?}"))),
        None => format!("/v1/containers/{cname}"),
    };
    forward(&s, &host, Method::DELETE, &path, None).await
}

pub async fn resource(
    State(s): State<Arc<Shared>>,
    Path((host, cname, res)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    name("name", &cname)?;
    if !crate::model::RESOURCES[..crate::model::AGENT_RESOURCES].contains(&res.as_str()) {
        return Err(ApiError::bad_request("resource", format!("unknown resource {res:?}")));
    }
    let v = json_body(&body)?;
    forward(&s, &host, Method::PUT, &format!("/v1/containers/{cname}/resources/{res}"), Some(&v)).await
}
