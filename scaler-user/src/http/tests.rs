//! The router called in-process, without a socket (the end-to-end tests in
//! `tests/` cover the real socket).
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt as _;
use policies::Resource;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{AppState, router};
use crate::{
    cgroup::layout::Layout,
    manage::{Actuator, Manager, store::Store},
    published::{KernelFeatures, Shared},
};

struct Nothing;
impl Actuator for Nothing {
    fn apply(&mut self, _: &str, _: Resource, _: Option<u64>) -> Result<(), crate::manage::ActuateError> {
        Ok(())
    }
    fn own_limit(&self, _: &str, _: Resource) -> Option<u64> {
        None
    }
    fn owns(&self, _: Resource) -> bool {
        false
    }
}

fn app(dir: &std::path::Path, token: Option<&str>) -> axum::Router {
    app_started(dir, token, Instant::now())
}

/// As [`app`], with the agent started at `started` (and no tick since).
fn app_started(dir: &std::path::Path, token: Option<&str>, started: Instant) -> axum::Router {
    app_shared(dir, token, started).0
}

/// As [`app_started`], with what the sampler publishes into.
fn app_shared(dir: &std::path::Path, token: Option<&str>, started: Instant) -> (axum::Router, Arc<Shared>) {
    std::fs::create_dir_all(dir.join("cg/lxc.payload.web")).unwrap();
    let manager = Manager::open(
        Store::open(&dir.join("state")).unwrap(),
        Box::new(Nothing),
        BTreeMap::from([(Resource::Cpu, Some(2000))]),
        vec!["/".into()],
        "fast".into(),
    )
    .unwrap();
    let shared = Arc::new(Shared {
        host: "test".into(),
        tick_ms: 200.into(),
        history_len: 10,
        started,
        layout: "v2",
        kernel: KernelFeatures::default(),
        inner: RwLock::new(Default::default()),
    });
    let app = router(AppState {
        shared: shared.clone(),
        manager: Arc::new(Mutex::new(manager)),
        layout: Layout::pure_v2(dir.join("cg")),
        token: token.map(str::to_owned),
        power_model: Default::default(),
    });
    (app, shared)
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Option<Value>, auth: Option<&str>) -> (u16, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = auth {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(body.map_or(Body::empty(), |b| Body::from(b.to_string()))).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path(), None);
    let (s, v) = call(&app, "GET", "/v1/stats", None, None).await;
    assert_eq!((s, v["host"].as_str()), (200, Some("test")));
    let (s, v) = call(&app, "GET", "/v1/stats/ghost", None, None).await;
    assert_eq!(s, 404);
    assert!(v["error"].as_str().unwrap().contains("ghost"));
    let (s, v) = call(&app, "GET", "/v1/stats/ghost/history?limit=x", None, None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("limit")));
    let (s, v) = call(&app, "GET", "/v1/events?since_id=-1", None, None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("since_id")));
    let (s, _) = call(&app, "POST", "/v1/stats", None, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED.as_u16());
    let (s, v) = call(&app, "GET", "/nope", None, None).await;
    assert!(s == 404 && v["error"].is_string());
    // axum's own rejections come back as JSON too.
    let (s, v) = call(&app, "GET", "/v1/stats/%FF", None, None).await;
    assert!(s == 400 && v["error"].is_string(), "{s} {v}");
    let big = json!({"resources": {"cpu": {"min": 1, "max": 2}}, "pad": "x".repeat(3 << 20)});
    let (s, v) = call(&app, "PUT", "/v1/containers/web", Some(big), None).await;
    assert!(s == 413 && v["error"].is_string(), "{s} {v}");
    let (s, v) = call(&app, "GET", "/v1/host?x=1", None, None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("x")));
}

#[tokio::test]
async fn healthz_is_503_when_the_sampler_has_stopped_ticking() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, v) = call(&app(tmp.path(), None), "GET", "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")), "just started: {v}");
    let long_ago = Instant::now() - std::time::Duration::from_secs(60);
    let (s, v) = call(&app_started(tmp.path(), None, long_ago), "GET", "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (503, Some("stale")), "{v}");
    assert!(v["last_tick_age_ms"].as_u64().unwrap() >= 60_000);
}

#[tokio::test]
async fn subscribe_by_path_list_and_unsubscribe() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path(), None);
    let body = json!({"cgroup": "/lxc.payload.web", "resources": {"cpu": {"min": 100, "max": 1000}}});
    let (s, v) = call(&app, "PUT", "/v1/containers/web", Some(body), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["resources"]["cpu"]["current"], 1000);
    let (s, v) = call(&app, "GET", "/v1/containers", None, None).await;
    assert_eq!((s, v["containers"].as_array().unwrap().len()), (200, 1));
    let (s, v) = call(&app, "PUT", "/v1/containers/web/ceiling", Some(json!({"cpu": 400})), None).await;
    assert_eq!((s, v["resources"]["cpu"]["current"].as_u64()), (200, Some(400)));
    let (s, v) = call(&app, "PUT", "/v1/host", Some(json!({"capacity": {"cpu": 0}})), None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("capacity.cpu")));
    let missing = json!({"cgroup": "/nowhere", "resources": {"cpu": {"min": 1, "max": 2}}});
    let (s, _) = call(&app, "PUT", "/v1/containers/x", Some(missing), None).await;
    assert_eq!(s, 404);
    let (s, v) = call(&app, "DELETE", "/v1/containers/web?restore=maybe", None, None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("restore")));
    let (s, _) = call(&app, "DELETE", "/v1/containers/web", None, None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_token_guards_changes_but_not_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path(), Some("s3cret"));
    let body = json!({"cgroup": "/lxc.payload.web", "resources": {"cpu": {"min": 100, "max": 1000}}});
    let (s, _) = call(&app, "PUT", "/v1/containers/web", Some(body.clone()), None).await;
    assert_eq!(s, 401);
    let (s, _) = call(&app, "PUT", "/v1/containers/web", Some(body.clone()), Some("wrong")).await;
    assert_eq!(s, 401);
    let (s, _) = call(&app, "PUT", "/v1/containers/web", Some(body), Some("s3cret")).await;
    assert_eq!(s, 200);
    let (s, _) = call(&app, "GET", "/v1/containers", None, None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&app, "POST", "/v1/stats", None, None).await;
    assert_eq!(s, 405, "a wrong method is 405 before any 401");
}

#[tokio::test]
async fn one_cgroup_has_one_name_and_amounts_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path(), None);
    let body = json!({"cgroup": "/lxc.payload.web", "resources": {"cpu": {"min": 100, "max": 1000}}});
    let (s, _) = call(&app, "PUT", "/v1/containers/a", Some(body.clone()), None).await;
    assert_eq!(s, 200);
    let (s, v) = call(&app, "PUT", "/v1/containers/b", Some(body), None).await;
    assert_eq!((s, v["field"].as_str()), (409, Some("cgroup")), "{v}");
    let huge = json!({"cgroup": "/lxc.payload.web", "resources": {"mem": {"min": 1, "max": u64::MAX}}});
    let (s, v) = call(&app, "PUT", "/v1/containers/a", Some(huge), None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("resources.mem.max")), "{v}");
    let (s, v) = call(&app, "PUT", "/v1/containers/a/resources/cpu", Some(json!({"min": 10, "max": 5})), None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("min")), "{v}");
    let (s, v) = call(&app, "PUT", "/v1/containers/a/resources/cpu", Some(json!({"min": -1})), None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("min")), "{v}");
    let (s, _) = call(&app, "GET", "/v1/host", None, None).await;
    assert_eq!(s, 200);
}

/// The contract between the agent and the aggregator: what this router
/// serves, the aggregator's own parsers read back exactly, for every shape
/// the agent emits (a container in its first interval with no sample yet,
/// one with every reading and signal, a subscription, its events, the host).
#[tokio::test]
async fn the_aggregator_parses_every_shape_the_agent_serves() {
    use crate::{
        cgroup::discover::{Discovered, Kind},
        sample::{Reading, Resources, Sample, Signals, Totals},
    };
    use scaler_aggregator::model;

    let tmp = tempfile::tempdir().unwrap();
    let (app, shared) = app_shared(tmp.path(), None, Instant::now());
    let found = |name: &str, cgroup: &str| Discovered {
        name: name.into(),
        cgroup: cgroup.into(),
        kind: Kind::Lxc,
        in_v2: true,
        in_v1: false,
        engine: None,
    };
    let r = |u: u64, c: Option<u64>| Reading { usage: Some(u), current: c };
    let full = Sample {
        time_ms: 1_800_000_000_200,
        interval_ms: 200,
        resources: Resources {
            cpu: r(750, Some(1000)),
            mem: r(300 << 20, Some(512 << 20)),
            disk_read: r(1 << 20, None),
            disk_write: r(2 << 20, Some(50 << 20)),
            net_rx: r(3000, None),
            net_tx: Reading::default(),
        },
        signals: Signals {
            cpu_throttled_usec: Some(12_000),
            mem_refault_bytes: Some(4096),
            mem_reclaims: 3,
            ..Signals::default()
        },
        totals: Totals { cpu_usec: 9_000_000, ..Totals::default() },
    };
    shared.publish(1_800_000_000_200, 500, vec![(found("new", "/lxc.payload.new").into(), None)], &[]);
    shared.publish(
        1_800_000_000_400,
        500,
        vec![(found("new", "/lxc.payload.new").into(), None), (found("web", "/lxc.payload.web").into(), Some(full))],
        &[],
    );

    let bytes = |v: &Value| serde_json::to_vec(v).unwrap();
    let (_, v) = call(&app, "GET", "/v1/stats", None, None).await;
    let stats = model::parse_stats(&bytes(&v)).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!((stats.host.as_deref(), stats.time_ms), (Some("test"), 1_800_000_000_400));
    let by = |n: &str| stats.containers.iter().find(|c| c.name == n).unwrap().clone();
    let new = by("new");
    assert_eq!((new.cgroup.as_str(), new.kind, new.time_ms, new.cpu_usec), ("/lxc.payload.new", "lxc", None, None));
    assert!(new.resources.iter().all(|x| *x == model::Reading::default()), "{new:?}");
    let web = by("web");
    assert_eq!(
        (web.time_ms, web.interval_ms, web.cpu_usec, web.cpu_throttled_usec),
        (Some(1_800_000_000_200), 200, Some(9_000_000), Some(12_000))
    );
    for (i, (res, reading)) in full.resources.iter().enumerate() {
        let got = web.resources[i];
        assert_eq!((got.usage, got.current), (reading.usage, reading.current), "{res}");
        assert_eq!(model::RESOURCES[i], res.name());
    }

    // The brief form reads as the same containers, in fewer bytes (here
    // 871 against 1,421); an unknown form is refused naming the parameter.
    let (s, brief) = call(&app, "GET", "/v1/stats?fields=brief", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(model::parse_stats(&bytes(&brief)).unwrap(), stats);
    assert_eq!(brief["containers"][1]["signals"], json!({"cpu_throttled_usec": 12_000}), "{brief}");
    assert!(bytes(&brief).len() * 3 < bytes(&v).len() * 2, "{} vs {}", bytes(&brief).len(), bytes(&v).len());
    let (s, e) = call(&app, "GET", "/v1/stats?fields=some", None, None).await;
    assert_eq!((s, e["field"].as_str()), (400, Some("fields")));

    // A name a tick no longer publishes (its cgroup goes by another name
    // now) is gone from the next answer; the one seen twice counts once.
    let names = |v: &Value| -> Vec<String> {
        v["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
    };
    shared.publish(
        1_800_000_000_600,
        500,
        vec![
            (found("web", "/lxc.payload.web").into(), Some(full)),
            (found("web", "/lxc.payload.web").into(), Some(full)),
            (found("renamed", "/lxc.payload.new").into(), None),
        ],
        &[],
    );
    let (_, v) = call(&app, "GET", "/v1/stats", None, None).await;
    assert_eq!(names(&v), ["renamed", "web"], "{v}");
    shared.publish(1_800_000_000_800, 500, vec![(found("web", "/lxc.payload.web").into(), Some(full))], &[]);
    let (_, v) = call(&app, "GET", "/v1/stats", None, None).await;
    assert_eq!(names(&v), ["web"], "{v}");

    // A subscription, its events and the host, as the aggregator reads them.
    let body = json!({"cgroup": "/lxc.payload.web", "resources": {"cpu": {"min": 100, "max": 1000}, "mem": {"min": 64 << 20, "max": 1 << 30}}});
    let (s, v) = call(&app, "PUT", "/v1/containers/web", Some(body), None).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = call(&app, "GET", "/v1/containers", None, None).await;
    let subs = model::parse_subscriptions(&bytes(&v)).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(subs.len(), 1);
    assert_eq!(
        (subs[0].name.as_str(), subs[0].bounds[0], subs[0].bounds[1]),
        ("web", Some((100, 1000)), Some((64 << 20, 1 << 30)))
    );
    assert!(subs[0].bounds[2..].iter().all(Option::is_none));
    let (_, v) = call(&app, "GET", "/v1/events", None, None).await;
    let events = model::parse_events(&bytes(&v)).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert!(!events.is_empty() && events.iter().all(|e| e.container == "web"), "{v}");
    let (_, v) = call(&app, "GET", "/v1/host", None, None).await;
    let host = model::parse_host(&bytes(&v)).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(host.capacity[0], Some(2000));
    assert_eq!(host.allocated[0], Some(1000), "{v}");

    // All of it in one answer, as each endpoint gives it; the
    // subscriptions only when asked for; mistakes named.
    let (s, v) = call(&app, "GET", "/v1/round?limit=100", None, None).await;
    assert_eq!(s, 200, "{v}");
    let r = model::parse_round(&bytes(&v)).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!((&r.stats, &r.host, &r.events, &r.subscriptions), (&stats_now(&app).await, &host, &events, &None));
    let last = events.last().unwrap().time_ms;
    let (_, v) = call(&app, "GET", &format!("/v1/round?since_ms={last}&containers=true"), None, None).await;
    let r = model::parse_round(&bytes(&v)).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!((r.events.len(), r.subscriptions), (0, Some(subs)), "{v}");
    for (q, field) in [("containers=maybe", "containers"), ("limit=x", "limit"), ("since_id=1", "since_id")] {
        let (s, e) = call(&app, "GET", &format!("/v1/round?{q}"), None, None).await;
        assert_eq!((s, e["field"].as_str()), (400, Some(field)), "{q}: {e}");
    }
}

/// `/v1/stats?fields=brief` as the aggregator reads it.
async fn stats_now(app: &axum::Router) -> scaler_aggregator::model::Stats {
    let (_, v) = call(app, "GET", "/v1/stats?fields=brief", None, None).await;
    scaler_aggregator::model::parse_stats(&serde_json::to_vec(&v).unwrap()).unwrap()
}

#[tokio::test]
async fn run_time_controls_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let (app, shared) = app_shared(tmp.path(), Some("t"), Instant::now());
    let (s, v) = call(&app, "GET", "/v1/agent", None, None).await;
    assert_eq!((s, v["tick_ms"].as_u64(), v["active"].as_bool()), (200, Some(200), Some(true)));
    let (s, _) = call(&app, "PUT", "/v1/agent", Some(json!({"tick_ms": 100})), None).await;
    assert_eq!(s, 401, "changes need the token");
    let (s, v) = call(&app, "PUT", "/v1/agent", Some(json!({"tick_ms": 100})), Some("t")).await;
    assert_eq!((s, v["tick_ms"].as_u64()), (200, Some(100)));
    let (s, v) = call(&app, "PUT", "/v1/agent", Some(json!({"tick_ms": 1})), Some("t")).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("tick_ms")));
    // The sampler takes the tick on its next round (not run here).
    assert_eq!(shared.tick_ms(), 200);

    let sub =
        json!({"cgroup": "/lxc.payload.web", "policy": "classic", "resources": {"cpu": {"min": 100, "max": 1000}}});
    let (s, _) = call(&app, "PUT", "/v1/containers/web", Some(sub), Some("t")).await;
    assert_eq!(s, 200);
    let (s, v) = call(&app, "GET", "/v1/containers/web/policy", None, None).await;
    assert_eq!((s, v["name"].as_str(), v["source"].as_str()), (200, Some("classic"), Some("preset")));
    let body = json!({"rules": {"cpu": {"up": {"events": 0}}}});
    let (s, v) = call(&app, "PUT", "/v1/containers/web/policy", Some(body), Some("t")).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("rules.cpu.up.events")), "{v}");
    let body = json!({"rules": {"cpu": {"up": {"events": 4}}}});
    let (s, v) = call(&app, "PUT", "/v1/containers/web/policy", Some(body), Some("t")).await;
    assert_eq!((s, &v["config"]["rules"]["cpu"]["up"]["events"]), (200, &json!(4)));
    let (s, _) = call(&app, "GET", "/v1/containers/ghost/policy", None, None).await;
    assert_eq!(s, 404);
    let (s, v) = call(&app, "GET", "/v1/policies", None, None).await;
    assert_eq!((s, v["policies"].as_array().map(Vec::len)), (200, Some(policies::POLICY_NAMES.len())));
    let (s, _) = call(&app, "PUT", "/v1/policies/nope", Some(json!({})), Some("t")).await;
    assert_eq!(s, 404);
    let (s, v) = call(&app, "PUT", "/v1/policies/follow", Some(json!({"slowdown_permille": 50})), Some("t")).await;
    assert_eq!((s, &v["config"]["slowdown_permille"], v["source"].as_str()), (200, &json!(50), Some("host")));
    let (s, v) = call(&app, "GET", "/v1/policies/follow", None, None).await;
    assert_eq!((s, &v["config"]["slowdown_permille"]), (200, &json!(50)));

    // Direct limits: memory is not managed, so it may be set; CPU is the
    // policy's.
    let (s, v) = call(&app, "PUT", "/v1/containers/web/limits", Some(json!({"mem": 64 << 20})), Some("t")).await;
    assert_eq!((s, &v["limits"]["mem"]), (200, &json!(64 << 20)), "{v}");
    let (s, v) = call(&app, "PUT", "/v1/containers/web/limits", Some(json!({"cpu": 500})), Some("t")).await;
    assert_eq!((s, v["field"].as_str()), (409, Some("cpu")), "{v}");
    let (s, v) = call(&app, "PUT", "/v1/containers/web/limits", Some(json!({"gpu": 1})), Some("t")).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("gpu")));
    let (s, _) = call(&app, "PUT", "/v1/containers/ghost/limits", Some(json!({"cpu": 500})), Some("t")).await;
    assert_eq!(s, 404);
    let (s, v) = call(&app, "GET", "/v1/containers/web/limits", None, None).await;
    assert_eq!((s, &v["limits"]), (200, &json!({"mem": 64 << 20})));
    let (s, v) = call(&app, "GET", "/v1/host", None, None).await;
    assert_eq!((s, &v["allocated"]["mem"]), (200, &json!(64 << 20)), "direct limits count as allocated");

    // Every change is in the log; configuration ones without a resource.
    let (_, v) = call(&app, "GET", "/v1/events", None, None).await;
    let ev = v["events"].as_array().unwrap();
    assert!(ev.iter().any(|e| e["resource"].is_null() && e["reason"].as_str().unwrap().contains("tick 200 -> 100")));
    assert!(ev.iter().any(|e| e["container"] == "web" && e["resource"].is_null()));
    assert!(ev.iter().any(|e| e["resource"] == "mem" && e["reason"] == "set directly (no policy)"));
}
