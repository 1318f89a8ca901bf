//! Users, their budgets and applications, and membership one container at
//! a time, through the router against fake agents.
#![allow(clippy::unwrap_used)]

use axum::http::StatusCode;
use serde_json::json;

use super::tests::{Fake, call, shared};
use crate::gather;

#[tokio::test]
async fn users_own_apps_within_their_budgets_and_members_come_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let url = Fake::new(&[("a", 500), ("b", 250), ("c", 100)]).serve().await;
    let s = shared(dir.path(), &[("h1", &url)]);
    gather::round(&s).await;
    gather::round(&s).await;
    let (st, _) = call(&s, "PUT", "/v1/apps/web", Some(json!({"containers": [{"host": "h1", "name": "a"}]}))).await;
    assert_eq!(st, StatusCode::CREATED);
    // Members one at a time, with weights.
    let (st, v) = call(&s, "PUT", "/v1/apps/web/containers/h1/b", Some(json!({"weight": 3}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["containers"].as_array().unwrap().len(), 2);
    assert_eq!((v["weights"]["h1/a"].as_u64(), v["weights"]["h1/b"].as_u64()), (Some(1), Some(3)));
    let (st, v) = call(&s, "PUT", "/v1/apps/web/containers/h1/c", None).await;
    assert_eq!((st, v["weights"]["h1/c"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    for (body, field) in [(json!({"weight": 0}), "weight"), (json!({"weight": "x"}), "weight"), (json!({"w": 1}), "w")]
    {
        let (st, v) = call(&s, "PUT", "/v1/apps/web/containers/h1/c", Some(body.clone())).await;
        assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
    }
    assert_eq!(call(&s, "PUT", "/v1/apps/nope/containers/h1/c", None).await.0, StatusCode::NOT_FOUND);
    let (st, v) = call(&s, "DELETE", "/v1/apps/web/containers/h1/c", None).await;
    assert_eq!((st, v["containers"].as_array().unwrap().len()), (StatusCode::OK, 2));
    assert_eq!(call(&s, "DELETE", "/v1/apps/web/containers/h1/c", None).await.0, StatusCode::NOT_FOUND);

    // A user with budgets; its application's use (750 millicores) must fit.
    let (st, v) = call(&s, "PUT", "/v1/users/alice", Some(json!({"cpu_budget": 4000, "energy_budget_w": 60}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(&s, "PUT", "/v1/apps/web/user", Some(json!({"user": "alice"}))).await;
    assert_eq!((st, v["user"].as_str()), (StatusCode::OK, Some("alice")), "{v}");
    let (st, v) = call(&s, "GET", "/v1/users/alice", None).await;
    assert_eq!((st, v["apps"].clone(), v["cpu_used"].as_u64()), (StatusCode::OK, json!(["web"]), Some(750)), "{v}");
    // A budget below what the applications use now is refused, naming it.
    let (st, v) = call(&s, "PUT", "/v1/users/alice", Some(json!({"cpu_budget": 500}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::CONFLICT, Some("cpu_budget")), "{v}");
    call(&s, "PUT", "/v1/users/bob", Some(json!({"cpu_budget": 300}))).await;
    let (st, v) = call(&s, "PUT", "/v1/apps/web/user", Some(json!({"user": "bob"}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::CONFLICT, Some("user")), "bob's budget cannot hold web: {v}");
    let (st, v) = call(&s, "PUT", "/v1/apps/web/user", Some(json!({"user": "carol"}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::NOT_FOUND, Some("user")), "{v}");
    for (body, field) in [
        (json!({"cpu_budget": -1}), "cpu_budget"),
        (json!({"cpu_budget": 0}), "cpu_budget"),
        (json!({"energy_budget_w": "x"}), "energy_budget_w"),
        (json!({"x": 1}), "x"),
    ] {
        let (st, v) = call(&s, "PUT", "/v1/users/dave", Some(body.clone())).await;
        assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
    }
    assert_eq!(call(&s, "GET", "/v1/users/dave", None).await.0, StatusCode::NOT_FOUND, "nothing was made");
    // Kept across a restart.
    drop(s);
    let s = shared(dir.path(), &[("h1", &url)]);
    let (_, v) = call(&s, "GET", "/v1/users", None).await;
    assert_eq!(v["users"].as_array().unwrap().len(), 2, "{v}");
    let (_, v) = call(&s, "GET", "/v1/apps/web", None).await;
    assert_eq!((v["user"].as_str(), v["weights"]["h1/b"].as_u64()), (Some("alice"), Some(3)), "{v}");
    // Deleting a user releases its applications.
    let (st, v) = call(&s, "DELETE", "/v1/users/alice", None).await;
    assert_eq!((st, v["apps_released"].clone()), (StatusCode::OK, json!(["web"])));
    assert!(call(&s, "GET", "/v1/apps/web", None).await.1["user"].is_null());
}

#[tokio::test]
async fn a_guarded_app_follows_its_need_by_weight_within_its_users_budget() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(&[("a", 500), ("b", 250), ("c", 100)]);
    let url = fake.clone().serve().await;
    let s = shared(dir.path(), &[("h1", &url)]);
    let refs =
        json!({"containers": [{"host": "h1", "name": "a"}, {"host": "h1", "name": "b"}, {"host": "h1", "name": "c"}]});
    call(&s, "PUT", "/v1/apps/web", Some(refs)).await;
    for (body, field) in [
        (json!({"guard": true}), "cpu"),
        (json!({"cpu": {"min": 5, "max": 1}}), "cpu.min"),
        (json!({"cpu": {"min": 1, "max": 0}}), "cpu.max"),
        (json!({"cpu": {"min": 1, "max": 9, "x": 1}}), "cpu.x"),
        (json!({"cpu": {"min": 1, "max": 9}, "rebalance_percent": 101}), "rebalance_percent"),
        (json!({"cpu": {"min": 1, "max": 9}, "guard": 1}), "guard"),
    ] {
        let (st, v) = call(&s, "PUT", "/v1/apps/web/scaling", Some(body.clone())).await;
        assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {v}");
    }
    let (st, v) = call(&s, "PUT", "/v1/apps/web/scaling", Some(json!({"cpu": {"min": 300, "max": 6000}}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // One controller per ceiling: a container of a scaling application
    // cannot join another that scales.
    call(&s, "PUT", "/v1/apps/two", Some(json!({"containers": []}))).await;
    call(&s, "PUT", "/v1/apps/two/scaling", Some(json!({"cpu": {"min": 100, "max": 900}}))).await;
    let (st, v) = call(&s, "PUT", "/v1/apps/two/containers/h1/a", None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    call(&s, "DELETE", "/v1/apps/two", None).await;
    for _ in 0..3 {
        gather::round(&s).await;
    }
    // Need 850 millicores, plus 10 %: 935, split by need (a : b : c =
    // 500 : 250 : 100).
    let (_, v) = call(&s, "GET", "/v1/apps/web/scaling", None).await;
    assert_eq!(v["status"]["allocation"].as_u64(), Some(935), "{v}");
    let (a, b, c) = (
        v["ceilings"]["h1/a"].as_u64().unwrap(),
        v["ceilings"]["h1/b"].as_u64().unwrap(),
        v["ceilings"]["h1/c"].as_u64().unwrap(),
    );
    assert!(a > b && b > c && a + b + c == 935, "{v}");
    let sent = fake.ceilings.lock().unwrap().clone();
    assert!(sent.contains(&("a".to_owned(), Some(a))), "the agent got the ceiling: {sent:?}");
    // Weight 3 on c: its share grows.
    call(&s, "PUT", "/v1/apps/web/containers/h1/c", Some(json!({"weight": 3}))).await;
    gather::round(&s).await;
    let (_, v) = call(&s, "GET", "/v1/apps/web/scaling", None).await;
    assert!(v["ceilings"]["h1/c"].as_u64().unwrap() > c, "{v}");
    // The user's budget holds the application: 900 < 935.
    call(&s, "PUT", "/v1/users/alice", Some(json!({"cpu_budget": 900}))).await;
    call(&s, "PUT", "/v1/apps/web/user", Some(json!({"user": "alice"}))).await;
    gather::round(&s).await;
    let (_, v) = call(&s, "GET", "/v1/apps/web/scaling", None).await;
    assert_eq!((v["status"]["allocation"].as_u64(), v["status"]["target"].as_u64()), (Some(900), Some(935)), "{v}");
    // Stopped: the ceilings it set are cleared on the agent.
    let (st, _) = call(&s, "DELETE", "/v1/apps/web/scaling", None).await;
    assert_eq!(st, StatusCode::OK);
    gather::round(&s).await;
    let sent = fake.ceilings.lock().unwrap().clone();
    assert!(sent.iter().rev().take(3).all(|(_, v)| v.is_none()), "{sent:?}");
}

#[tokio::test]
async fn energy_caps_of_a_users_applications_stay_within_its_energy_budget() {
    let dir = tempfile::tempdir().unwrap();
    let url = Fake::new(&[("a", 100), ("b", 100)]).serve().await;
    let s = shared(dir.path(), &[("h1", &url)]);
    gather::round(&s).await;
    for (app, c) in [("web", "a"), ("db", "b")] {
        call(&s, "PUT", &format!("/v1/apps/{app}"), Some(json!({"containers": [{"host": "h1", "name": c}]}))).await;
    }
    call(&s, "PUT", "/v1/users/eve", Some(json!({"energy_budget_w": 50}))).await;
    assert_eq!(call(&s, "PUT", "/v1/apps/web/user", Some(json!({"user": "eve"}))).await.0, StatusCode::OK);
    assert_eq!(call(&s, "PUT", "/v1/apps/web/energy-cap", Some(json!({"watts": 40}))).await.0, StatusCode::OK);
    // Each application's energy: its containers' shares of its cap.
    let (_, v) = call(&s, "GET", "/v1/apps/web", None).await;
    assert_eq!(v["energy_budgets"]["h1/a"].as_u64(), Some(40_000), "{v}");
    let (st, v) = call(&s, "PUT", "/v1/apps/web/energy-cap", Some(json!({"watts": 60}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::CONFLICT, Some("watts")), "{v}");
    call(&s, "PUT", "/v1/apps/db/energy-cap", Some(json!({"watts": 20}))).await;
    let (st, v) = call(&s, "PUT", "/v1/apps/db/user", Some(json!({"user": "eve"}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::CONFLICT, Some("user")), "40 + 20 W > 50 W: {v}");
    let (st, v) = call(&s, "PUT", "/v1/users/eve", Some(json!({"energy_budget_w": 30}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::CONFLICT, Some("energy_budget_w")), "{v}");
    let (_, v) = call(&s, "GET", "/v1/users/eve", None).await;
    assert_eq!(v["energy_budget_w"].as_f64(), Some(50.0), "a refused change changes nothing");
}

#[tokio::test]
async fn a_users_energy_moves_from_an_idle_application_to_one_pressing_on_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let url = Fake::new(&[("busy", 1500), ("idle", 10)]).serve().await;
    let s = shared(dir.path(), &[("h1", &url)]);
    for (app, c) in [("web", "busy"), ("db", "idle")] {
        call(&s, "PUT", &format!("/v1/apps/{app}"), Some(json!({"containers": [{"host": "h1", "name": c}]}))).await;
    }
    call(&s, "PUT", "/v1/users/eve", Some(json!({"energy_budget_w": 40, "rebalance_percent": 50}))).await;
    for app in ["web", "db"] {
        assert_eq!(
            call(&s, "PUT", &format!("/v1/apps/{app}/user"), Some(json!({"user": "eve"}))).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(&s, "PUT", &format!("/v1/apps/{app}/energy-cap"), Some(json!({"watts": 20}))).await.0,
            StatusCode::OK
        );
    }
    for _ in 0..4 {
        gather::round(&s).await;
    }
    let cap = |v: &serde_json::Value| v["cap_in_force_mw"].as_u64().unwrap();
    let (web, db) = (
        call(&s, "GET", "/v1/apps/web/energy-cap", None).await.1,
        call(&s, "GET", "/v1/apps/db/energy-cap", None).await.1,
    );
    assert!(cap(&web) > 20_000 && cap(&db) < 20_000, "web {web}\ndb {db}");
    assert_eq!(cap(&web) + cap(&db), 40_000, "what one gave the other got");
    assert!(cap(&db) >= 1_000, "the idle one keeps at least 1 W");
    // A cap set again starts the user's shares afresh: they add up to the
    // caps as set, never above the budget.
    call(&s, "PUT", "/v1/apps/db/energy-cap", Some(json!({"watts": 20}))).await;
    gather::round(&s).await;
    let (web, db) = (
        call(&s, "GET", "/v1/apps/web/energy-cap", None).await.1,
        call(&s, "GET", "/v1/apps/db/energy-cap", None).await.1,
    );
    assert_eq!(cap(&web) + cap(&db), 40_000, "web {web}\ndb {db}");
    let (st, v) = call(&s, "PUT", "/v1/users/eve", Some(json!({"rebalance_percent": 101}))).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("rebalance_percent")));
    // Off: the caps as set hold again (the budget stays above what the
    // fake agent's container, which ignores ceilings, draws: 45 W).
    let (st, v) = call(&s, "PUT", "/v1/users/eve", Some(json!({"energy_budget_w": 60}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    gather::round(&s).await;
    let web = call(&s, "GET", "/v1/apps/web/energy-cap", None).await.1;
    assert_eq!(cap(&web), 20_000, "{web}");
}
