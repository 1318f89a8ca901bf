//! Issue 13's end-to-end checks: the operator's controls on a running
//! agent, through its real socket and the real CLI.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use tests::{Agent, TestCgroup, require_root, wait_for};

const WATCH: &str = "[discovery]\nwatch = [\"scaler-test-*/*\"]\n";
const MIB: u64 = 1 << 20;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn a_whole_container_unguarded_through_the_cli_keeps_its_limits_under_load() {
    require_root();
    let mut cg = TestCgroup::new();
    let path = cg.child("g1");
    let agent = Agent::start(WATCH);
    agent.wait_container("g1");
    let scaler = |args: &[&str]| {
        let (ok, out, err) = tests::agent::cli(&agent.url, args);
        assert!(ok, "scaler {args:?}: {err}");
        out
    };
    let body = json!({"cgroup": path, "resources": {
        "cpu": {"min": 100, "max": 2000, "current": 300},
        "mem": {"min": 32 * MIB, "max": 512 * MIB, "current": 256 * MIB}}});
    let (s, v) = agent.send("PUT", "/v1/containers/g1", Some(&body));
    assert_eq!(s, 200, "{v}");
    let out = scaler(&["unguard", "g1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for r in ["cpu", "mem"] {
        assert_eq!(v["resources"][r]["guard"], false, "{v}");
    }
    // A core of load and an idle memory: guarded, both limits would move
    // within a second or two.
    let since = now_ms();
    cg.spawn("g1", "stress-ng", &["--cpu", "1", "--timeout", "8s", "--quiet"]);
    std::thread::sleep(Duration::from_secs(3));
    let (_, ev) = agent.get(&format!("/v1/events?container=g1&since_ms={since}"));
    let changes: Vec<_> = ev["events"].as_array().unwrap().iter().filter(|e| e["old"] != e["new"]).collect();
    assert!(changes.is_empty(), "an unguarded container's limits changed: {changes:?}");
    let quota = std::fs::read_to_string(cg.v1("cpu", "g1").unwrap().join("cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "30000", "300 millicores stay in force under load");
    let (_, all) = agent.get("/v1/events?container=g1");
    let unguarded = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"].as_str().unwrap_or("").starts_with("unguarded"))
        .count();
    assert_eq!(unguarded, 2, "one event per resource: {all}");
    // CPU guarded again: raised under the load; memory stays.
    scaler(&["guard", "g1", "--resource", "cpu"]);
    let raised = wait_for(Duration::from_secs(3), || {
        let c = agent.container("g1")?["resources"]["cpu"]["current"].as_u64()?;
        (c > 300).then_some(c)
    });
    assert!(raised.is_some(), "CPU not raised once guarded again: {}", agent.get("/v1/events?container=g1").1);
    assert_eq!(agent.get("/v1/containers/g1").1["resources"]["mem"]["current"], 256 * MIB);
    // Observe only from the start: subscribed unguarded through the CLI.
    let other = cg.child("g2");
    agent.wait_container("g2");
    let out = scaler(&["subscribe", "g2", "--cgroup", &other, "--unguarded", "--cpu", "100m:1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["resources"]["cpu"]["guard"], false, "{v}");
    let (s, v) =
        agent.send("PUT", "/v1/containers/g1/guard", Some(&json!({"guard": false, "resources": ["disk_read"]})));
    assert_eq!((s, v["field"].as_str()), (400, Some("resources")), "{v}");
    let (s, _) = agent.send("PUT", "/v1/containers/nope/guard", Some(&json!({"guard": false})));
    assert_eq!(s, 404);
    cg.kill_all();
}
