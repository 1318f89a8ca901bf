//! Issue 12's end-to-end check: an application of three real LXC
//! containers across two agents, guarded at its own level by the
//! aggregator: its allocation follows its total need, split by weight into
//! CPU ceilings the agents hold, and a user's CPU budget holds it.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Agent, Lxc, aggregator::Aggregator, require_root, wait_for};

const FAST: &str = "[aggregator]\npoll_ms = 500\ntimeout_ms = 400\n[history]\nflush_ms = 1000\n";

fn agent(state: &tempfile::TempDir) -> Agent {
    Agent::start(&format!("[agent]\nstate_dir = \"{}\"\n", state.path().display()))
}

fn scaling_of(agg: &Aggregator, app: &str) -> Value {
    let (s, v) = agg.get(&format!("/v1/apps/{app}/scaling"));
    assert_eq!(s, 200, "{v}");
    v
}

fn scaling(agg: &Aggregator) -> Value {
    scaling_of(agg, "shop")
}

fn ceiling(v: &Value, host: &str, c: &Lxc) -> u64 {
    v["ceilings"][format!("{host}/{}", c.name)].as_u64().unwrap_or(0)
}

#[test]
fn an_app_guarded_at_its_level_follows_its_need_by_weight_within_its_users_budget() {
    require_root();
    let (mut c1, c2, mut c3, mut c4) = (Lxc::start(), Lxc::start(), Lxc::start(), Lxc::start());
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (agent(&sa), agent(&sb));
    for c in [&c1, &c2, &c3] {
        a.wait_container(&c.name);
    }
    b.wait_container(&c3.name);
    b.wait_container(&c4.name);
    let mut agg = Aggregator::start(&format!(
        "{FAST}[[hosts]]\nname = \"a\"\nurl = \"{}\"\n[[hosts]]\nname = \"b\"\nurl = \"{}\"\n",
        a.url, b.url
    ));
    // Each container managed on one agent only: c1 and c2 on a, c3 on b.
    let sub = json!({"resources": {"cpu": {"min": 100, "max": 2000}}});
    for (host, c) in [("a", &c1), ("a", &c2), ("b", &c3), ("b", &c4)] {
        let (s, v) = agg.send("PUT", &format!("/v1/containers/{host}/{}", c.name), Some(&sub));
        assert_eq!(s, 200, "subscribing {host}/{}: {v}", c.name);
    }
    // Built through the CLI, one container at a time.
    let agg_url = agg.url();
    let scaler = |args: &[&str]| {
        let out = std::process::Command::new(tests::agent::scaler_bin())
            .args(args)
            .args(["--aggregator", &agg_url])
            .output()
            .unwrap();
        assert!(out.status.success(), "scaler {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    scaler(&["app", "create", "shop"]);
    for (host, c, w) in [("a", &c1, "1"), ("a", &c2, "1"), ("b", &c3, "2")] {
        scaler(&["app", "add", "shop", &format!("{host}/{}", c.name), "--weight", w]);
    }
    let v: Value =
        serde_json::from_str(&scaler(&["app", "scale", "shop", "--cpu", "300m:4", "--headroom", "10"])).unwrap();
    assert_eq!(
        (v["scaling"]["cpu"]["min"].as_u64(), v["scaling"]["cpu"]["max"].as_u64()),
        (Some(300), Some(4000)),
        "{v}"
    );
    assert!(scaler(&["app", "list"]).contains("shop"));

    // Idle: the application sits at its minimum.
    let idle = wait_for(Duration::from_secs(15), || {
        let v = scaling(&agg);
        (v["status"]["state"] == "controlling" && v["status"]["allocation"].as_u64()? <= 400).then_some(v)
    })
    .unwrap_or_else(|| panic!("never controlling at its minimum: {}\n{}", scaling(&agg), agg.log()));
    let idle_alloc = idle["status"]["allocation"].as_u64().unwrap();
    // A core of load in c1 and in c3: the allocation follows the need up,
    // and c3 (weight 2) gets more than c1 (weight 1) for the same load.
    let start = Instant::now();
    c1.spawn(&["timeout", "60", "stress-ng", "--cpu", "1", "--timeout", "50s", "--quiet"]);
    c3.spawn(&["timeout", "60", "stress-ng", "--cpu", "1", "--timeout", "50s", "--quiet"]);
    let risen = wait_for(Duration::from_secs(20), || {
        let v = scaling(&agg);
        let alloc = v["status"]["allocation"].as_u64()?;
        (alloc >= 1000 && ceiling(&v, "b", &c3) > ceiling(&v, "a", &c1)).then_some(v)
    })
    .unwrap_or_else(|| panic!("allocation never followed the load: {}", scaling(&agg)));
    let rose_after = start.elapsed();
    let v = &risen;
    println!(
        "idle {idle_alloc} mc; loaded: allocation {} mc after {:.1} s; ceilings c1 {} c2 {} c3 {}",
        v["status"]["allocation"],
        rose_after.as_secs_f64(),
        ceiling(v, "a", &c1),
        ceiling(v, "a", &c2),
        ceiling(v, "b", &c3)
    );
    assert!(ceiling(v, "a", &c2) <= ceiling(v, "a", &c1), "the idle container gets least: {v}");
    // The ceilings are in force on the agents: each container's limit is
    // at or below its share.
    let held = wait_for(Duration::from_secs(5), || {
        let v = scaling(&agg);
        let ok = [(&a, "a", &c1), (&a, "a", &c2), (&b, "b", &c3)].iter().all(|(ag, h, c)| {
            let (_, sub) = ag.get(&format!("/v1/containers/{}", c.name));
            let ceil = sub["ceiling"]["cpu"].as_u64();
            let cur = sub["resources"]["cpu"]["current"].as_u64().unwrap_or(u64::MAX);
            ceil.is_some() && ceil == Some(ceiling(&v, h, c)) && cur <= ceil.unwrap()
        });
        ok.then_some(())
    });
    assert!(held.is_some(), "ceilings not in force on the agents: {}", scaling(&agg));

    // A user whose CPU budget is below what the application asks: the
    // allocation comes down to the budget and stays there.
    let used = agg.get("/v1/apps/shop").1["cpu_mc"].as_u64().unwrap_or(0);
    let budget = used.max(900) + 100;
    scaler(&["user", "set", "ana", "--cpu-budget", &format!("{budget}m")]);
    scaler(&["app", "owner", "shop", "ana"]);
    assert!(scaler(&["user", "list"]).contains("shop"), "the user lists its application");
    let capped = wait_for(Duration::from_secs(10), || {
        let v = scaling(&agg);
        let (alloc, target) = (v["status"]["allocation"].as_u64()?, v["status"]["target"].as_u64()?);
        (alloc <= budget && target > budget).then_some((alloc, target))
    });
    println!("budget {budget} mc: allocation and target {capped:?}");
    assert!(capped.is_some(), "the user's budget did not hold the application: {}", scaling(&agg));
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        let alloc = scaling(&agg)["status"]["allocation"].as_u64().unwrap();
        assert!(alloc <= budget, "allocation {alloc} above the budget {budget}");
    }
    // A second application of the same user competes for the budget: it
    // is set to 1400, or just above what the user's applications use now
    // when that is more (a budget below their use is refused with a 409),
    // retried while the use moves. Neither application goes below its
    // minimum, and together they stay within the budget.
    let shared_budget = (0..10)
        .find_map(|_| {
            let used = agg.get("/v1/apps/shop").1["cpu_mc"].as_u64().unwrap_or(0);
            let b = used.saturating_add(100).max(1400);
            let out = std::process::Command::new(tests::agent::scaler_bin())
                .args(["user", "set", "ana", "--cpu-budget", &format!("{b}m"), "--aggregator", &agg_url])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() || err.contains("409"), "setting the budget to {b}: {err}");
            if !out.status.success() {
                std::thread::sleep(Duration::from_millis(500));
            }
            out.status.success().then_some(b)
        })
        .expect("the budget never fit what the applications use");
    scaler(&["app", "create", "batch"]);
    scaler(&["app", "add", "batch", &format!("b/{}", c4.name)]);
    scaler(&["app", "scale", "batch", "--cpu", "200m:4"]);
    scaler(&["app", "owner", "batch", "ana"]);
    c4.spawn(&["timeout", "60", "stress-ng", "--cpu", "1", "--timeout", "50s", "--quiet"]);
    let alloc = |app: &str| scaling_of(&agg, app)["status"]["allocation"].as_u64().unwrap_or(0);
    let target = |app: &str| scaling_of(&agg, app)["status"]["target"].as_u64().unwrap_or(0);
    let shared = wait_for(Duration::from_secs(15), || {
        let (s1, s2) = (alloc("shop"), alloc("batch"));
        (s1 >= 300 && s2 > 200 && s1 + s2 <= shared_budget && target("shop") + target("batch") > shared_budget)
            .then_some((s1, s2))
    });
    println!(
        "two applications, budget {shared_budget}: allocations {shared:?}, targets {} + {}",
        target("shop"),
        target("batch")
    );
    assert!(shared.is_some(), "shop {} batch {}", scaling_of(&agg, "shop"), scaling_of(&agg, "batch"));
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        let sum = alloc("shop") + alloc("batch");
        assert!(sum <= shared_budget, "the two applications hold {sum}, above the budget {shared_budget}");
    }
    // The aggregator stops: the agents go on ticking with the ceilings
    // last sent; restarted, it resumes from its store.
    agg.stop();
    let ticks = a.get("/healthz").1["ticks"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(a.get("/healthz").1["ticks"].as_u64().unwrap_or(0) > ticks, "the agent stopped with the aggregator");
    let (_, sub) = a.get(&format!("/v1/containers/{}", c1.name));
    assert!(sub["ceiling"]["cpu"].as_u64().is_some(), "the ceiling went with the aggregator: {sub}");
    agg.restart();
    let resumed = wait_for(Duration::from_secs(15), || {
        let (s1, s2) = (scaling_of(&agg, "shop"), scaling_of(&agg, "batch"));
        let ok = s1["status"]["state"] == "controlling" && s2["status"]["state"] == "controlling";
        let sum = s1["status"]["allocation"].as_u64()? + s2["status"]["allocation"].as_u64()?;
        (ok && sum <= shared_budget).then_some(sum)
    });
    assert!(resumed.is_some(), "not resumed after a restart: {}\n{}", scaling_of(&agg, "shop"), agg.log());
    assert_eq!(
        agg.get("/v1/users/ana").1["cpu_budget"].as_u64(),
        Some(shared_budget),
        "the user came back from the store"
    );
    scaler(&["app", "scale", "batch", "--off"]);
    // Stopped: the ceilings are cleared on the agents.
    scaler(&["app", "scale", "shop", "--off"]);
    let cleared = wait_for(Duration::from_secs(10), || {
        [(&a, &c1), (&a, &c2), (&b, &c3)]
            .iter()
            .all(|(ag, c)| ag.get(&format!("/v1/containers/{}", c.name)).1["ceiling"].get("cpu").is_none())
            .then_some(())
    });
    assert!(cleared.is_some(), "ceilings left on the agents");
}

#[test]
fn slack_moves_from_an_idle_container_to_a_throttled_one_within_seconds() {
    require_root();
    let (c1, mut c2) = (Lxc::start(), Lxc::start());
    let state = tempfile::tempdir().unwrap();
    let a = agent(&state);
    a.wait_container(&c1.name);
    a.wait_container(&c2.name);
    let agg = Aggregator::start(&format!("{FAST}[[hosts]]\nname = \"a\"\nurl = \"{}\"\n", a.url));
    // Two containers holding 1000 millicores each: one idles at it (its
    // limit left where it is: observed, not scaled by its agent), the other
    // runs two cores of load against a ceiling of 1000 (as an operator or
    // an earlier cap would have set).
    let idle = json!({"resources": {"cpu": {"min": 100, "max": 2000, "current": 1000, "guard": false}}});
    let busy = json!({"resources": {"cpu": {"min": 100, "max": 2000, "current": 1000}}});
    for (c, sub) in [(&c1, idle), (&c2, busy)] {
        let (s, v) = agg.send("PUT", &format!("/v1/containers/a/{}", c.name), Some(&sub));
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = a.send("PUT", &format!("/v1/containers/{}/ceiling", c2.name), Some(&json!({"cpu": 1000})));
    assert_eq!(s, 200, "{v}");
    c2.spawn(&["timeout", "60", "stress-ng", "--cpu", "2", "--timeout", "50s", "--quiet"]);
    let throttled = wait_for(Duration::from_secs(10), || {
        let v = agg.get(&format!("/v1/containers/a/{}", c2.name)).1;
        let pressed =
            v["resources"]["cpu"]["current"].as_u64()? == 1000 && v["resources"]["cpu"]["usage"].as_u64()? > 800;
        (pressed && v["ceiling"]["cpu"].as_u64()? == 1000).then_some(())
    });
    assert!(throttled.is_some(), "c2 never pressed on its 1000: {:?}", a.container(&c2.name));
    let body = json!({"containers": [{"host": "a", "name": c1.name}, {"host": "a", "name": c2.name}]});
    assert_eq!(agg.send("PUT", "/v1/apps/pool", Some(&body)).0, 201);
    // Unguarded, half the slack per period moves to the short container.
    let start = Instant::now();
    let body = json!({"cpu": {"min": 200, "max": 4000}, "guard": false, "rebalance_percent": 50});
    let (s, v) = agg.send("PUT", "/v1/apps/pool/scaling", Some(&body));
    assert_eq!(s, 200, "{v}");
    let moved = wait_for(Duration::from_secs(15), || {
        let v = a.container(&c2.name)?;
        let (cur, usage) = (v["resources"]["cpu"]["current"].as_u64()?, v["resources"]["cpu"]["usage"].as_u64()?);
        (cur >= 1500 && usage >= 1200).then_some((cur, usage))
    });
    let took = start.elapsed();
    let v = scaling_of(&agg, "pool");
    let (x1, x2) = (ceiling(&v, "a", &c1), ceiling(&v, "a", &c2));
    println!(
        "rebalanced in {:.1} s: c2 limit and usage {moved:?}; ceilings idle {x1}, throttled {x2}",
        took.as_secs_f64()
    );
    assert!(moved.is_some(), "slack never reached the throttled container: {v}");
    assert!(x1 < 1000 && x2 > 1000 && x1 + x2 <= 2000, "what one gave the other got: {v}");
}
