//! The API through the router without a socket, and rounds against fake
//! agents on loopback sockets (good, garbage, slow, down).
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Body,
    extract::Path,
    http::{Request, StatusCode},
    routing::{get, put},
};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::{
    Shared,
    config::{AggConfig, HostEntry},
    gather,
};

/// Ceilings received: container, value (`None` = cleared).
type Sent = Vec<(String, Option<u64>)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Garbage,
    Slow,
    /// An agent older than `?fields=brief`: refuses the parameter (400)
    /// and has no `/v1/round` (404).
    Old,
}

/// A fake agent: `/v1/stats` with containers at the given CPU, `/v1/host`
/// with a 2-core capacity and a 20-80 W model, and a ceiling API that
/// records what it is sent. CPU time grows at the usage rate.
#[derive(Clone)]
pub(super) struct Fake {
    cpu: Arc<Mutex<Vec<(String, u64)>>>,
    mode: Arc<Mutex<Mode>>,
    pub(super) ceilings: Arc<Mutex<Sent>>,
    /// Requests for the brief form, and for `/v1/round`.
    briefs: Arc<std::sync::atomic::AtomicUsize>,
    rounds: Arc<std::sync::atomic::AtomicUsize>,
}

impl Fake {
    pub(super) fn new(containers: &[(&str, u64)]) -> Self {
        Self {
            cpu: Arc::new(Mutex::new(containers.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect())),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            ceilings: Arc::new(Mutex::new(Vec::new())),
            briefs: Arc::default(),
            rounds: Arc::default(),
        }
    }

    fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    /// `/v1/stats`' answer.
    fn stats(&self) -> Value {
        let now = crate::now_ms();
        let cs: Vec<Value> = self
            .cpu
            .lock()
            .unwrap()
            .iter()
            .map(|(n, c)| {
                json!({"name": n, "cgroup": format!("/{n}"), "kind": "lxc", "time_ms": now, "interval_ms": 200,
                   "resources": {"cpu": {"usage": c, "current": 2000}, "mem": {"usage": 1000, "current": null}},
                   "signals": {"cpu_throttled_usec": 0}, "totals": {"cpu_usec": c * now}})
            })
            .collect();
        json!({"host": "fake", "time_ms": now, "containers": cs})
    }

    /// `/v1/host`'s answer.
    fn host(&self) -> Value {
        let used: u64 = self.cpu.lock().unwrap().iter().map(|(_, c)| c).sum();
        json!({"capacity": {"cpu": 2000}, "allocated": {"cpu": 0}, "usage": {"cpu": used},
               "rapl_mw": null, "power_model": {"idle_mw": 20000, "max_mw": 80000}})
    }

    pub(super) async fn serve(self) -> String {
        use axum::response::IntoResponse as _;
        let f = self.clone();
        let stats = move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
            let f = f.clone();
            async move {
                let mode = *f.mode.lock().unwrap();
                if q.is_some() {
                    f.briefs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                match mode {
                    Mode::Garbage => return "<html>oops".into_response(),
                    Mode::Slow => tokio::time::sleep(Duration::from_secs(5)).await,
                    Mode::Old if q.is_some() => {
                        let e = json!({"error": "unknown query parameter \"fields\"", "field": "fields"});
                        return (StatusCode::BAD_REQUEST, Json(e)).into_response();
                    }
                    Mode::Ok | Mode::Old => {}
                }
                Json(f.stats()).into_response()
            }
        };
        let f2 = self.clone();
        let host = move || {
            let f = f2.clone();
            async move { Json(f.host()) }
        };
        // All in one; an agent older than `?fields=brief` is older than
        // this too (404).
        let f5 = self.clone();
        let round = move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
            let f = f5.clone();
            async move {
                f.rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mode = *f.mode.lock().unwrap();
                match mode {
                    Mode::Garbage => return "<html>oops".into_response(),
                    Mode::Slow => tokio::time::sleep(Duration::from_secs(5)).await,
                    Mode::Old => {
                        return (StatusCode::NOT_FOUND, Json(json!({"error": "no such endpoint"}))).into_response();
                    }
                    Mode::Ok => {}
                }
                let mut r = json!({"stats": f.stats(), "host": f.host(), "events": []});
                if q.is_some_and(|q| q.contains("containers=true")) {
                    r["containers"] = json!([]);
                }
                Json(r).into_response()
            }
        };
        let (f3, f4) = (self.clone(), self.clone());
        let app = Router::new()
            .route("/v1/stats", get(stats))
            .route("/v1/host", get(host))
            .route("/v1/containers", get(|| async { Json(json!({"containers": []})) }))
            .route("/v1/events", get(|| async { Json(json!({"events": []})) }))
            .route("/v1/round", get(round))
            .route(
                "/v1/containers/{name}/ceiling",
                put(move |Path(n): Path<String>, Json(v): Json<Value>| {
                    let f = f3.clone();
                    async move {
                        f.ceilings.lock().unwrap().push((n, v["cpu"].as_u64()));
                        Json(json!({}))
                    }
                })
                .delete(move |Path(n): Path<String>| {
                    let f = f4.clone();
                    async move {
                        f.ceilings.lock().unwrap().push((n, None));
                        Json(json!({}))
                    }
                }),
            )
            .route("/v1/containers/{name}", put(|Json(v): Json<Value>| async move { (StatusCode::OK, Json(v)) }));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }
}

pub(super) fn shared(dir: &std::path::Path, hosts: &[(&str, &str)]) -> Arc<Shared> {
    let mut cfg = AggConfig::default();
    cfg.aggregator.state_dir = dir.to_path_buf();
    cfg.aggregator.timeout_ms = 300;
    cfg.hosts = hosts
        .iter()
        .map(|(n, u)| HostEntry { name: (*n).into(), url: (*u).into(), token: None, idle_mw: None, max_mw: None })
        .collect();
    cfg.validate().unwrap();
    Arc::new(Shared::open(cfg).unwrap())
}

pub(super) async fn call(s: &Arc<Shared>, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = super::router(s.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn hosts_register_and_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = shared(dir.path(), &[("cfg1", "http://127.0.0.1:1")]);
    let (st, v) = call(&s, "PUT", "/v1/hosts/n2", Some(json!({"url": "http://127.0.0.1:2", "token": "t"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!((v["has_token"].as_bool(), v["source"].as_str()), (Some(true), Some("api")));
    assert!(v.get("token").is_none(), "tokens are never shown");
    let (st, v) = call(&s, "GET", "/v1/hosts", None).await;
    assert_eq!((st, v["hosts"].as_array().unwrap().len()), (StatusCode::OK, 2));
    let (st, v) = call(&s, "PUT", "/v1/hosts/n3", Some(json!({"url": "ftp://x"}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("url")));
    let (st, v) = call(&s, "PUT", "/v1/hosts/n3", Some(json!({"url": "https://0.com/?q"}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("url")), "a query: {v}");
    // Found by schemathesis in CI: a token that cannot go in a header was
    // accepted, and every request forwarded to that host then failed (502).
    for bad in ["\u{80}\u{fc}", "a b", "t\n", ""] {
        let (st, v) = call(&s, "PUT", "/v1/hosts/n3", Some(json!({"url": "http://x:1", "token": bad}))).await;
        assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("token")), "{bad:?}: {v}");
    }
    // Nothing listens on port 1: forwarding says so, as a 502.
    let (st, v) = call(&s, "DELETE", "/v1/containers/cfg1/c1", None).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("is unreachable"), "{v}");
    let (st, v) = call(&s, "PUT", "/v1/hosts/n3", Some(json!({"url": "http://x:1", "colour": 1}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("colour")));
    let (st, v) = call(&s, "PUT", "/v1/hosts/bad%2Fname", Some(json!({"url": "http://x:1"}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("host")));
    let (st, _) = call(&s, "PUT", "/v1/hosts/cfg1", Some(json!({"url": "http://x:1"}))).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, v) = call(&s, "GET", "/v1/hosts/nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("nope"));
    assert_eq!(call(&s, "DELETE", "/v1/hosts/n2", None).await.0, StatusCode::OK);
    assert_eq!(call(&s, "DELETE", "/v1/hosts/n2", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&s, "GET", "/v1/nothing", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&s, "POST", "/v1/hosts", None).await.0, StatusCode::METHOD_NOT_ALLOWED);
    // Registered hosts survive a restart.
    call(&s, "PUT", "/v1/hosts/n4", Some(json!({"url": "http://127.0.0.1:4"}))).await;
    // A host stored before tokens were checked (or a damaged record) is
    // held to the API's rules on load, not gathered with a token that
    // cannot be sent.
    let bad = crate::state::HostRecord {
        url: "http://127.0.0.1:5".into(),
        token: Some("a b".into()),
        idle_mw: None,
        max_mw: None,
    };
    s.store.put(crate::store::HOSTS, "n5", &bad).unwrap();
    drop(s);
    let s = shared(dir.path(), &[("cfg1", "http://127.0.0.1:1")]);
    assert_eq!(call(&s, "GET", "/v1/hosts/n4", None).await.0, StatusCode::OK);
    assert_eq!(call(&s, "GET", "/v1/hosts/n5", None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn apps_and_caps_validate_and_404() {
    let dir = tempfile::tempdir().unwrap();
    let s = shared(dir.path(), &[]);
    let good = json!({"containers": [{"host": "h1", "name": "a"}, {"host": "h2", "name": "b"}]});
    assert_eq!(call(&s, "PUT", "/v1/apps/web", Some(good.clone())).await.0, StatusCode::CREATED);
    assert_eq!(call(&s, "PUT", "/v1/apps/web", Some(good)).await.0, StatusCode::OK);
    let cases = [
        (json!({"containers": "x"}), "containers"),
        (json!({"containers": [{"host": "h1"}]}), "containers[0].name"),
        (json!({"containers": [{"host": "h1", "name": "a/b"}]}), "containers[0].name"),
        (json!({"containers": [{"host": "h", "name": "a", "x": 1}]}), "containers[0].x"),
        (json!({"containers": [{"host": "h", "name": "a"}, {"host": "h", "name": "a"}]}), "containers[1]"),
        (json!({"apps": []}), "apps"),
    ];
    for (body, field) in cases {
        let (st, v) = call(&s, "PUT", "/v1/apps/web2", Some(body.clone())).await;
        assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}");
    }
    for bad in [json!({"watts": -1}), json!({"watts": 0}), json!({"watts": "10"}), json!({}), json!({"watts": 1e9})] {
        let (st, v) = call(&s, "PUT", "/v1/apps/web/energy-cap", Some(bad.clone())).await;
        assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("watts")), "{bad}");
    }
    let (st, v) = call(&s, "PUT", "/v1/apps/web/energy-cap", Some(json!({"watts": 12.5}))).await;
    assert_eq!((st, v["cap_mw"].as_u64()), (StatusCode::OK, Some(12_500)), "{v}");
    // A container in two capped applications would have two controllers.
    call(&s, "PUT", "/v1/apps/other", Some(json!({"containers": [{"host": "h1", "name": "a"}]}))).await;
    assert_eq!(call(&s, "PUT", "/v1/apps/other/energy-cap", Some(json!({"watts": 5}))).await.0, StatusCode::CONFLICT);
    for (m, uri) in [
        ("GET", "/v1/apps/nope"),
        ("DELETE", "/v1/apps/nope"),
        ("GET", "/v1/apps/nope/history"),
        ("DELETE", "/v1/apps/nope/energy-cap"),
    ] {
        let (st, v) = call(&s, m, uri, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{m} {uri}");
        assert!(v["error"].is_string());
    }
    let (st, v) = call(&s, "PUT", "/v1/apps/nope/energy-cap", Some(json!({"watts": 5}))).await;
    assert_eq!((st, v["error"].is_string()), (StatusCode::NOT_FOUND, true));
    let (st, v) = call(&s, "GET", "/v1/apps/web/history?resource=gpu", None).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("resource")));
    let (st, v) = call(&s, "GET", "/v1/apps/web/history?since=yesterday", None).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("since")));
    // Applications and caps survive a restart.
    drop(s);
    let s = shared(dir.path(), &[]);
    let (_, v) = call(&s, "GET", "/v1/apps/web", None).await;
    assert_eq!(v["energy_cap"]["cap_mw"].as_u64(), Some(12_500), "{v}");
    assert_eq!(call(&s, "DELETE", "/v1/apps/web", None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_marks_bad_agents_stale_and_keeps_the_rest() {
    let good1 = Fake::new(&[("a", 500), ("x", 100)]);
    let good2 = Fake::new(&[("b", 250)]);
    let (garbage, slow) = (Fake::new(&[("g", 1)]), Fake::new(&[("s", 1)]));
    garbage.set_mode(Mode::Garbage);
    slow.set_mode(Mode::Slow);
    // h2 refuses the brief form: read in full, it counts like the others.
    good2.set_mode(Mode::Old);
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (u1, u2, ug, us) =
        (good1.clone().serve().await, good2.clone().serve().await, garbage.serve().await, slow.serve().await);
    let dir = tempfile::tempdir().unwrap();
    let s = shared(dir.path(), &[("h1", &u1), ("h2", &u2), ("hg", &ug), ("hs", &us), ("hd", &down)]);
    let body = json!({"containers": [{"host": "h1", "name": "a"}, {"host": "h2", "name": "b"}]});
    call(&s, "PUT", "/v1/apps/web", Some(body)).await;
    let t = Instant::now();
    gather::round(&s).await;
    gather::round(&s).await;
    assert!(t.elapsed() < Duration::from_secs(3), "a slow agent held the round: {:?}", t.elapsed());
    // Refused once, the one-request form and the brief form are not asked
    // again every round; h1 is read in one request a round.
    let count = |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((count(&good2.rounds), count(&good2.briefs)), (1, 1));
    assert_eq!((count(&good1.rounds), count(&good1.briefs)), (2, 0));
    // Five minutes on, both are asked for again (the agent may have been
    // upgraded).
    for h in s.write().hosts.get_mut("h2").into_iter() {
        let long_ago = crate::now_ms() - crate::state::BRIEF_RETRY_MS;
        (h.round_refused_ms, h.brief_refused_ms) = (Some(long_ago), Some(long_ago));
    }
    gather::round(&s).await;
    assert_eq!((count(&good2.rounds), count(&good2.briefs)), (2, 2));
    let (_, v) = call(&s, "GET", "/v1/hosts", None).await;
    let status = |n: &str| {
        let h = v["hosts"].as_array().unwrap().iter().find(|h| h["name"] == n).unwrap().clone();
        (h["status"].as_str().unwrap().to_owned(), h["error"].clone())
    };
    assert_eq!(status("h1").0, "ok");
    for n in ["hg", "hs", "hd"] {
        let (st, err) = status(n);
        assert_eq!(st, "unreachable", "{n}");
        assert!(err.is_string(), "{n}: {err}");
    }
    assert!(status("hg").1.as_str().unwrap().contains("JSON"));
    assert!(status("hs").1.as_str().unwrap().contains("300 ms"));
    let (_, app) = call(&s, "GET", "/v1/apps/web", None).await;
    assert_eq!(app["totals"]["cpu"]["current"].as_u64(), Some(4000), "{app}");
    assert_eq!(app["reporting"].as_u64(), Some(2));
    // CPU over the round from cumulative time (the fakes' counters grow at
    // their usage rate).
    assert_eq!(app["cpu_mc"].as_u64(), Some(750), "{app}");
    assert!(app["power_mw"].as_u64().unwrap() > 0);
    // h1 turns to garbage: stale with the age of its last data; h2 goes on.
    good1.set_mode(Mode::Garbage);
    tokio::time::sleep(Duration::from_millis(50)).await;
    gather::round(&s).await;
    let (_, h) = call(&s, "GET", "/v1/hosts/h1", None).await;
    assert_eq!(h["status"], "stale", "{h}");
    assert!(h["age_ms"].as_u64().unwrap() >= 50);
    let (_, app) = call(&s, "GET", "/v1/apps/web", None).await;
    assert_eq!((app["reporting"].as_u64(), app["stale"].as_bool()), (Some(1), Some(true)));
    assert_eq!(app["missing"][0]["reason"], "host stale");
    let (_, cs) = call(&s, "GET", "/v1/containers", None).await;
    assert_eq!(cs["containers"].as_array().unwrap().len(), 3, "stale hosts keep their last data");
    let (_, hist) = call(&s, "GET", "/v1/apps/web/history?resource=cpu&since=5m", None).await;
    assert_eq!(hist["points"].as_array().unwrap().len(), 4, "one a round: {hist}");
    let (st, m) = (call(&s, "GET", "/metrics", None).await.0, super::metrics::render(&s));
    assert_eq!(st, StatusCode::OK);
    assert!(m.contains("scaler_cluster_host_up{host=\"h2\"} 1") && m.contains("scaler_cluster_host_up{host=\"h1\"} 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_becomes_ceilings_and_clearing_removes_them() {
    let agent = Fake::new(&[("burn", 2000)]);
    let url = agent.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let s = shared(dir.path(), &[("h", &url)]);
    call(&s, "PUT", "/v1/apps/hot", Some(json!({"containers": [{"host": "h", "name": "burn"}]}))).await;
    gather::round(&s).await;
    // 2000 millicores of 2000 on a 20-80 W host: 60 W active; a 15 W cap
    // is a quarter of it.
    let (st, _) = call(&s, "PUT", "/v1/apps/hot/energy-cap", Some(json!({"watts": 15}))).await;
    assert_eq!(st, StatusCode::OK);
    gather::round(&s).await;
    let sent = agent.ceilings.lock().unwrap().clone();
    assert_eq!(sent, vec![("burn".to_owned(), Some(500))]);
    let (_, e) = call(&s, "GET", "/v1/apps/hot/energy-cap", None).await;
    assert_eq!(e["ceilings"][0]["confirmed"].as_u64(), Some(500), "{e}");
    let (_, ev) = call(&s, "GET", "/v1/events?app=hot", None).await;
    assert_eq!(ev["events"][0]["source"], "aggregator", "{ev}");
    call(&s, "DELETE", "/v1/apps/hot/energy-cap", None).await;
    gather::round(&s).await;
    assert_eq!(agent.ceilings.lock().unwrap().last(), Some(&("burn".to_owned(), None)));
    assert!(s.read().ceilings.is_empty());
    // Forwarded subscription.
    let (st, v) =
        call(&s, "PUT", "/v1/containers/h/burn", Some(json!({"resources": {"cpu": {"min": 1, "max": 2}}}))).await;
    assert_eq!((st, v["resources"]["cpu"]["max"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(call(&s, "PUT", "/v1/containers/nohost/burn", Some(json!({}))).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&s, "GET", "/v1/containers/h/nothere", None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_token_guards_changes_and_unknown_paths_are_404_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AggConfig::default();
    cfg.aggregator.state_dir = dir.path().to_path_buf();
    cfg.aggregator.token = Some("s3cret".into());
    let s = Arc::new(Shared::open(cfg).unwrap());
    let (st, v) = call(&s, "PUT", "/v1/apps/web", Some(json!({"containers": []}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("aggregator.token"), "{v}");
    // The same rule as the agent's: routing first, then the token.
    assert_eq!(call(&s, "PUT", "/v1/nothing", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&s, "GET", "/v1/apps", None).await.0, StatusCode::OK);
}
