//! The simulator replays the agent: a real agent manages real cgroups under
//! a changing load while `scaler record` writes what it saw, tick by tick;
//! feeding that recording to `policies::planner::replay` (the code the
//! simulator runs) must give the same sequence of limits.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, process::Command};

use policies::{
    BoundaryType, HostCapacity, PolicyConfig, Resource, Trace,
    planner::{Bounds, replay},
};
use serde_json::json;
use tests::{Agent, TestCgroup, agent::scaler_bin, require_root};

const MIB: u64 = 1 << 20;

fn bounds(min: u64, max: u64) -> Bounds {
    // The API's defaults for guard and boundary.
    Bounds { min, max, guard: true, boundary: 25, boundary_type: BoundaryType::PercentOfMax }
}

#[test]
fn a_recorded_agent_run_replays_to_the_same_limits() {
    require_root();
    let mut cg = TestCgroup::new();
    let policies = ["follow", "fast"];
    // Watched before they are subscribed, so the recordings hold every tick
    // the policies see. The host's capacity is set so the two never compete
    // (each recording holds one container: a replay cannot arbitrate).
    let mut config = "[host]\ncpu = 8000\n".to_owned();
    for p in policies {
        config.push_str(&format!("[[containers]]\nname = \"{p}\"\ncgroup = \"{}\"\n", cg.child(p)));
    }
    let agent = Agent::start(&config);
    let (_, host) = agent.get("/v1/host");
    let mut capacity = HostCapacity::new();
    for r in [Resource::Cpu, Resource::Mem] {
        if let Some(c) = host["capacity"][r.to_string()].as_u64() {
            capacity.set(r, c);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut recorders = Vec::new();
    for p in policies {
        let out = dir.path().join(format!("{p}.csv"));
        let child = Command::new(scaler_bin())
            .args(["record", p, "--duration", "16s", "--agent", &agent.url(), "--out"])
            .arg(&out)
            .spawn()
            .unwrap();
        recorders.push((p, out, child));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let mut starts = Vec::new();
    for p in policies {
        let body = json!({"cgroup": cg.rel(p), "policy": p,
                          "resources": {"cpu": {"min": 100, "max": 2000}, "mem": {"min": 32 * MIB, "max": 1024 * MIB}}});
        let (s, v) = agent.send("PUT", &format!("/v1/containers/{p}"), Some(&body));
        assert_eq!(s, 200, "{v}");
        // When the policy began: earlier samples are not its.
        starts.push(v["policy_since_ms"].as_u64().unwrap());
    }
    // Phases: a third of a core, two cores, idle, then 200 MiB at once.
    let script = "stress-ng --cpu 1 --cpu-load 30 --timeout 3s --quiet; stress-ng --cpu 2 --timeout 3s --quiet; \
                  sleep 2; stress-ng --vm 1 --vm-bytes 200M --vm-keep --timeout 5s --quiet";
    for p in policies {
        cg.spawn(p, "sh", &["-c", script]);
    }
    for (p, out, mut child) in recorders {
        assert!(child.wait().unwrap().success(), "scaler record {p} failed");
        let text = std::fs::read_to_string(&out).unwrap();
        let trace = Trace::parse(&text).unwrap();
        let b = BTreeMap::from([(Resource::Cpu, bounds(100, 2000)), (Resource::Mem, bounds(32 * MIB, 1024 * MIB))]);
        let i = policies.iter().position(|x| *x == p).unwrap();
        let r = replay(&trace, p, &PolicyConfig::by_name(p).unwrap(), &b, &capacity, starts[i]).unwrap();
        println!("{p}: {} ticks replayed, {} limit changes, {} mismatches", r.ticks, r.changes, r.mismatches.len());
        assert!(r.ticks >= 50, "{p}: only {} ticks recorded", r.ticks);
        // fast holds 30 s of peaks: it changes little in 16 s; follow a lot.
        let least = if p == "follow" { 5 } else { 1 };
        assert!(r.changes >= least, "{p}: too few changes to compare ({})", r.changes);
        assert!(r.mismatches.is_empty(), "{p}: the planner and the agent disagree: {:?}", r.mismatches);
    }
    cg.kill_all();
}
