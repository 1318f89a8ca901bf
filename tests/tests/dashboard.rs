//! The aggregator's dashboard in real headless Chromium (Debian's, driven by
//! playwright-core from tests/dashboard): the page loads, the application's
//! plot shows real points from a real agent and LXC container, and it
//! updates as new rounds arrive. The screenshot is left in
//! target/test-artifacts/dashboard.png.
#![allow(clippy::unwrap_used)]

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::{Value, json};
use tests::{Agent, Lxc, aggregator::Aggregator, require_root, wait_for};

fn dashboard_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboard")
}

#[test]
fn dashboard_shows_live_plots_in_headless_chromium() {
    require_root();
    assert!(PathBuf::from("/usr/bin/chromium").exists(), "no /usr/bin/chromium: run `cargo xtask setup`");
    assert!(
        dashboard_dir().join("node_modules/playwright-core").exists(),
        "tests/dashboard/node_modules is missing: run `cargo xtask setup` (npm ci there)"
    );
    let mut c = Lxc::start();
    c.set_v1("cpu", "cpu.cfs_quota_us", "40000");
    c.spawn(&["timeout", "60", "sh", "-c", "while :; do :; done"]);
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(&format!("[agent]\nstate_dir = \"{}\"\n", state.path().display()));
    agent.wait_container(&c.name);
    let agg = Aggregator::start(&format!(
        "[aggregator]\npoll_ms = 500\ntimeout_ms = 400\n[[hosts]]\nname = \"node1\"\nurl = \"{}\"\n",
        agent.url
    ));
    let app = json!({"containers": [{"host": "node1", "name": c.name}]});
    assert_eq!(agg.send("PUT", "/v1/apps/web", Some(&app)).0, 201);
    let enough = wait_for(Duration::from_secs(15), || {
        let (_, v) = agg.get("/v1/apps/web/history?resource=cpu&since=5m");
        (v["points"].as_array()?.len() >= 6).then_some(())
    });
    assert!(enough.is_some(), "no history: {}", agg.log());

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("timeout")
        .args(["90", "node", "check.mjs", &format!("{}/#app/web", agg.url)])
        .arg(&shot)
        .current_dir(dashboard_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check.mjs failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    println!("dashboard: {seen}");
    assert_eq!(seen["title"], "app web");
    assert!(seen["first"]["points"].as_u64().unwrap() >= 5, "{seen}");
    assert!(seen["first"]["paths"].as_u64().unwrap() >= 2, "used and allocated lines: {seen}");
    assert!(seen["later"]["last"].as_u64() > seen["first"]["last"].as_u64(), "the plot did not update: {seen}");
    assert!(seen["later"]["points"].as_u64() >= seen["first"]["points"].as_u64(), "{seen}");
    assert!(seen["energy"]["paths"].as_u64().is_some(), "{seen}");
    assert_eq!(seen["errors"], json!([]), "script errors on the page");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    println!("screenshot {} ({size} bytes)", shot.display());
    assert!(size > 10_000, "screenshot too small: {size} bytes");
}

#[test]
fn dashboard_edits_reach_the_api_in_headless_chromium() {
    require_root();
    assert!(PathBuf::from("/usr/bin/chromium").exists(), "no /usr/bin/chromium: run `cargo xtask setup`");
    let c = Lxc::start();
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(&format!("[agent]\nstate_dir = \"{}\"\n", state.path().display()));
    agent.wait_container(&c.name);
    let agg = Aggregator::start(&format!(
        "[aggregator]\npoll_ms = 500\ntimeout_ms = 400\n[[hosts]]\nname = \"node1\"\nurl = \"{}\"\n",
        agent.url
    ));
    let sub = json!({"resources": {"cpu": {"min": 100, "max": 2000}}});
    let (s, v) = agg.send("PUT", &format!("/v1/containers/node1/{}", c.name), Some(&sub));
    assert_eq!(s, 200, "{v}");
    let seen = wait_for(Duration::from_secs(10), || {
        let (_, v) = agg.get("/v1/containers");
        v["containers"].as_array()?.iter().any(|x| x["name"] == c.name.as_str()).then_some(())
    });
    assert!(seen.is_some(), "the aggregator never saw the container");
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let key = format!("node1/{}", c.name);
    let out = Command::new("timeout")
        .args(["120", "node", "edit.mjs", &agg.url(), &key])
        .arg(&shots)
        .current_dir(dashboard_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "edit.mjs failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    println!("dashboard edits: {seen}");
    assert!(seen.get("failed").is_none(), "{seen}");
    assert_eq!(seen["steps"].as_array().map(Vec::len), Some(9), "{seen}");
    assert_eq!(seen["errors"], json!([]), "script errors on the page");
    // Each edit as the API sees it.
    let (_, u) = agg.get("/v1/users/ana");
    assert_eq!((u["cpu_budget"].as_u64(), u["energy_budget_w"].as_f64()), (Some(4000), Some(60.0)), "{u}");
    let (_, shop) = agg.get("/v1/apps/shop");
    assert_eq!((shop["user"].as_str(), shop["containers"].as_array().map(Vec::len)), (Some("ana"), Some(0)), "{shop}");
    let (_, other) = agg.get("/v1/apps/other");
    assert_eq!(other["containers"], json!([{"host": "node1", "name": c.name}]), "the container moved: {other}");
    assert_eq!(other["weights"][&key], 2, "its weight moved with it: {other}");
    assert_eq!((other["scaling"]["cpu_min"].as_u64(), other["scaling"]["cpu_max"].as_u64()), (Some(300), Some(2000)));
    assert_eq!(other["energy_cap"]["cap_mw"].as_u64(), Some(30_000), "{other}");
    let (_, sub) = agent.get(&format!("/v1/containers/{}", c.name));
    let cpu = &sub["resources"]["cpu"];
    assert_eq!((cpu["min"].as_u64(), cpu["max"].as_u64()), (Some(200), Some(1500)), "bounds reached the agent: {sub}");
    assert_eq!(seen["user_title"], "user ana");
    for n in 1..=9 {
        let size = std::fs::metadata(shots.join(format!("dashboard-edit-{n}.png"))).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "screenshot {n} too small: {size} bytes");
    }
}
