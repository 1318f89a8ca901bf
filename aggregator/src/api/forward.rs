//! Replicas (`[store] etcd`): any replica answers for the whole fleet.
//! A read of one host's data (`/v1/hosts/{h}...`, `/v1/containers/{h}/...`)
//! goes to the replica gathering that host; a read of applications and
//! users to the leader, which gathers their hosts; the lists of hosts and
//! containers are every replica's own part, merged. Changes are made where
//! they arrive: the records are shared. A forwarded request is marked and
//! never forwarded again.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::Value;

use super::ApiError;
use crate::Shared;

/// Marks a request one replica sent to another.
pub const FORWARDED: &str = "x-scaler-forwarded";
/// Largest answer taken from another replica.
const MAX_BODY: usize = 64 << 20;

/// Where a request should be answered, when that is another replica, and
/// whether this one may answer from the shared records when that replica
/// does not (reads of applications and users: their records are here,
/// only the leader's live figures are missing).
fn replica_for(s: &Shared, method: &Method, path: &str, query: &str) -> Option<(String, bool)> {
    let c = s.cluster.as_ref()?;
    if method != Method::GET {
        return None;
    }
    let param = |k: &str| query.split('&').find_map(|p| p.strip_prefix(k)?.strip_prefix('='));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "hosts", h, ..] | ["v1", "containers", h, _, ..] => c.owner_url(h).map(|u| (u, false)),
        ["v1", "apps", ..] | ["v1", "users", ..] => c.leader_url().map(|u| (u, true)),
        ["v1", "containers" | "events"] if param("app").is_some() => c.leader_url().map(|u| (u, true)),
        ["v1", "containers" | "events"] => param("host").and_then(|h| c.owner_url(h)).map(|u| (u, false)),
        _ => None,
    }
}

/// Whether `req` came from another replica.
pub fn forwarded(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// GET `path_and_query` on the replica at `base`: status and body.
pub async fn get(
    s: &Shared,
    base: &str,
    path_and_query: &str,
) -> Result<(StatusCode, Vec<u8>, Option<HeaderValue>), String> {
    // A history asked of another replica may wait on Prometheus there.
    let history =
        s.cfg.history.prometheus.is_some() && path_and_query.split('?').next().is_some_and(|p| p.ends_with("/history"));
    let mut ms = s.cfg.aggregator.timeout_ms.max(2000);
    if history {
        ms = ms.max(s.cfg.history.prometheus_timeout_ms + 1000);
    }
    let r = s
        .client
        .get(format!("{base}{path_and_query}"))
        .header(FORWARDED, "1")
        .timeout(std::time::Duration::from_millis(ms))
        .send()
        .await
        .map_err(|e| format!("replica at {base}: {e}"))?;
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let kind = r.headers().get(header::CONTENT_TYPE).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let too_big = || format!("replica at {base}: answer over {MAX_BODY} bytes");
    if r.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_big());
    }
    // Read in chunks, so that an answer over the cap stops at the cap.
    let mut body = Vec::new();
    let mut r = r;
    while let Some(chunk) = r.chunk().await.map_err(|e| format!("replica at {base}: {e}"))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body, kind))
}

/// The middleware: answers here, or asks the replica that should. A change
/// first takes in what other replicas changed (one read of etcd's revision
/// when nothing did), so it applies to the records as they are: a change
/// made through one replica is there for the next change through another.
pub async fn forward(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if s.cluster.is_some()
        && req.method() != Method::GET
        && let Err(e) = s.refresh().await
    {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store did not answer, nothing was changed: reading the records: {e}"),
        )
        .into_response();
    }
    if forwarded(req.headers()) {
        return next.run(req).await;
    }
    let Some((base, records_here)) = replica_for(&s, req.method(), req.uri().path(), req.uri().query().unwrap_or(""))
    else {
        return next.run(req).await;
    };
    let pq = req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    match get(&s, &base, &pq).await {
        Ok((status, body, kind)) => {
            let mut r = (status, Body::from(body)).into_response();
            if let Some(k) = kind {
                r.headers_mut().insert(header::CONTENT_TYPE, k);
            }
            r
        }
        Err(e) if records_here => {
            // The leader died and its lease has not run out yet: the
            // records as this replica holds them, saying what is missing.
            let r = next.run(req).await;
            mark_incomplete(r, format!("the leader did not answer, its live figures are missing: {e}")).await
        }
        Err(e) => ApiError::new(StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

/// Adds `why` to a JSON object answer's `incomplete` list.
async fn mark_incomplete(r: Response, why: String) -> Response {
    let (mut parts, body) = r.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, why).into_response();
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut m)) => {
            match m.get_mut("incomplete") {
                Some(Value::Array(list)) => list.push(Value::String(why)),
                _ => {
                    m.insert("incomplete".to_owned(), Value::Array(vec![Value::String(why)]));
                }
            }
            let out = serde_json::to_vec(&m).unwrap_or_default();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(out))
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// Whether a list asks for this replica's part only (`scope=local`).
pub fn local_scope(q: &scaler_api::query::Query) -> Result<bool, ApiError> {
    match q.str("scope") {
        None => Ok(false),
        Some("local") => Ok(true),
        Some(v) => Err(ApiError::bad_request("scope", format!("scope must be \"local\", got {v:?}"))),
    }
}

/// The other live replicas' parts of a list (`key` of their
/// `GET path?scope=local&extra`, `extra` a query as received or empty),
/// asked at once; a replica that does not answer is named in the
/// returned errors.
pub async fn others(s: &Arc<Shared>, path: &str, extra: &str, key: &str) -> (Vec<Value>, Vec<String>) {
    let Some(c) = s.cluster.as_ref() else { return (Vec::new(), Vec::new()) };
    let mut set = tokio::task::JoinSet::new();
    for (name, url) in c.view().replicas.into_iter().filter(|(n, _)| *n != c.me) {
        let sep = if extra.is_empty() { "" } else { "&" };
        let (s, ask) = (s.clone(), format!("{path}?scope=local{sep}{extra}"));
        set.spawn(async move {
            let r = get(&s, &url, &ask).await.and_then(|(status, body, _)| match status.is_success() {
                true => serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string()),
                false => Err(format!("{status}")),
            });
            (name, r)
        });
    }
    let (mut items, mut errors) = (Vec::new(), Vec::new());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(v))) => items.extend(v[key].as_array().cloned().unwrap_or_default()),
            Ok((name, Err(e))) => errors.push(format!("replica {name}: {e}")),
            Err(e) => errors.push(format!("a replica's request failed: {e}")),
        }
    }
    (items, errors)
}
