//! `/v1/hosts`: list, one, register (`PUT`), forget (`DELETE`).

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
};
use serde_json::{Value, json};

use super::{ApiError, name, object, opt_u64};
use crate::{
    Shared,
    client::Target,
    config::check_host,
    now_ms,
    state::{HostRecord, HostState, Source},
    store::{CEILINGS, HOSTS},
    views,
};
use scaler_api::query::Query;

pub fn unknown(host: &str) -> ApiError {
    ApiError::not_found(format!("no host named {host:?} (GET /v1/hosts lists them)"))
}

/// Every host; with replicas, each one as the replica gathering it sees it
/// (`scope=local`: only this replica's part: the hosts it gathers, and on
/// the leader those nobody gathers yet).
pub async fn list(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref(), &["scope"])?;
    let local = super::forward::local_scope(&q)?;
    let now = now_ms();
    let mut hosts: Vec<Value> = {
        let st = s.read();
        st.hosts.values().filter(|h| s.shows(&h.name)).map(|h| views::host_json(h, now, false)).collect()
    };
    if local || s.cluster.is_none() {
        return Ok(Json(json!({ "hosts": hosts })));
    }
    let (theirs, errors) = super::forward::others(&s, "/v1/hosts", "", "hosts").await;
    hosts.extend(theirs);
    // Two replicas whose views of who gathers a host differ for a moment
    // (a claim, a move) both list it: the freshest is kept.
    let fresh = |h: &Value| (h["stale"] == false, h["last_ok_ms"].as_u64());
    hosts.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()).then_with(|| fresh(b).cmp(&fresh(a))));
    hosts.dedup_by(|later, first| later["name"] == first["name"]);
    // Every registered host is listed: one no live replica answered for
    // (its replica died and its lease has not run out, or nobody has
    // claimed it yet) from the shared records, saying so.
    let listed: std::collections::BTreeSet<String> =
        hosts.iter().filter_map(|h| h["name"].as_str().map(str::to_owned)).collect();
    let view = s.cluster.as_ref().map(crate::cluster::Cluster::view).unwrap_or_default();
    let st = s.read();
    for h in st.hosts.values().filter(|h| !listed.contains(&h.name)) {
        let mut v = views::host_json(h, now, false);
        v["status"] = json!("unknown");
        v["stale"] = json!(true);
        v["error"] = json!(match view.owners.get(&h.name) {
            Some(o) if errors.iter().any(|e| e.starts_with(&format!("replica {o}:"))) => {
                format!("gathered by replica {o}, which did not answer")
            }
            Some(o) if !view.replicas.contains_key(o) => format!("gathered by replica {o}, which is gone"),
            Some(o) => format!("moving to or from replica {o}"),
            None => "no replica gathers it yet".to_owned(),
        });
        hosts.push(v);
    }
    drop(st);
    hosts.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({ "hosts": hosts, "incomplete": errors })))
}

pub async fn one(State(s): State<Arc<Shared>>, Path(host): Path<String>) -> Result<Json<Value>, ApiError> {
    let st = s.read();
    let h = st.hosts.get(&host).ok_or_else(|| unknown(&host))?;
    Ok(Json(views::host_json(h, now_ms(), true)))
}

fn parse(body: &Bytes) -> Result<HostRecord, ApiError> {
    let m = object(body, &["url", "token", "idle_mw", "max_mw"])?;
    let url = match m.get("url") {
        Some(Value::String(u)) => u.clone(),
        Some(_) => return Err(ApiError::bad_request("url", "url must be a string")),
        None => return Err(ApiError::bad_request("url", "url is required, e.g. \"http://10.0.0.7:8470\"")),
    };
    let token = match m.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(ApiError::bad_request("token", "token must be a string or null")),
    };
    let (idle_mw, max_mw) = (opt_u64(&m, "idle_mw")?, opt_u64(&m, "max_mw")?);
    check_host(&url, token.as_deref(), idle_mw, max_mw).map_err(|(field, e)| ApiError::bad_request(field, e))?;
    Ok(HostRecord { url, token, idle_mw, max_mw })
}

/// Registers (or re-registers) a host: `{"url": ..., "token": optional}`.
pub async fn put(
    State(s): State<Arc<Shared>>,
    Path(host): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    name("host", &host)?;
    let record = parse(&body)?;
    let (answer, written) = {
        let mut st = s.write();
        let created = match st.hosts.get_mut(&host) {
            Some(h) if h.source == Source::Config => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("host {host:?} is defined in the config file"),
                ));
            }
            Some(h) => {
                if h.record.url != record.url || h.record.token != record.token {
                    // Another agent (or credentials): start from scratch.
                    *h = HostState::new(host.clone(), record.clone(), Source::Api);
                } else {
                    h.record = record.clone();
                    h.target = Target::new(&record.url, record.token.clone());
                }
                false
            }
            None => {
                st.hosts.insert(host.clone(), HostState::new(host.clone(), record.clone(), Source::Api));
                true
            }
        };
        let written = s
            .records
            .put(HOSTS, &host, &record)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let h = st.hosts.get(&host).ok_or_else(|| unknown(&host))?;
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        ((status, Json(views::host_json(h, now_ms(), false))), written)
    };
    super::durable(vec![written]).await?;
    Ok(answer)
}

/// Forgets a host registered through the API (and the ceilings this
/// aggregator set there: the agent keeps them until cleared on it).
pub async fn delete(State(s): State<Arc<Shared>>, Path(host): Path<String>) -> Result<Json<Value>, ApiError> {
    let (gone, written) = {
        let mut st = s.write();
        match st.hosts.get(&host) {
            None => return Err(unknown(&host)),
            Some(h) if h.source == Source::Config => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("host {host:?} is defined in the config file"),
                ));
            }
            Some(_) => {}
        }
        st.hosts.remove(&host);
        let err = |e: crate::store::StoreError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        let mut written = vec![s.records.delete(HOSTS, &host).map_err(err)?];
        let gone: Vec<_> = st.ceilings.keys().filter(|c| c.host == host).cloned().collect();
        for c in &gone {
            st.ceilings.remove(c);
            written.push(s.records.delete(CEILINGS, &c.key()).map_err(err)?);
        }
        (gone.len(), written)
    };
    super::durable(written).await?;
    Ok(Json(json!({"name": host, "deleted": true, "ceilings_forgotten": gone})))
}
