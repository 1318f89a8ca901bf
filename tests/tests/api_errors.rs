//! Bad input over the real socket, and start-up failures that must be one
//! clear line.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use tests::{Agent, agent::scaler_bin, require_root};

#[test]
fn unknown_container_bad_query_and_unknown_path_are_json_errors() {
    require_root();
    let agent = Agent::start("");
    let (s, v) = agent.get("/v1/stats/no-such-container");
    assert_eq!(s, 404);
    assert!(v["error"].as_str().unwrap().contains("no-such-container"), "{v}");
    let (s, v) = agent.get("/v1/stats/no-such-container/history");
    assert_eq!(s, 404, "{v}");
    let (s, v) = agent.get("/v1/stats?kind=vm");
    assert_eq!((s, v["field"].as_str()), (400, Some("kind")), "{v}");
    let (s, v) = agent.get("/v1/stats?bogus=1");
    assert_eq!((s, v["field"].as_str()), (400, Some("bogus")), "{v}");
    let (s, v) = agent.get("/v1/nothing-here");
    assert_eq!(s, 404);
    assert!(v["error"].is_string());
    let (s, v) = agent.send("DELETE", "/v1/stats", None);
    assert_eq!(s, 405, "{v}");
    let (s, text) = agent.get_text("/metrics");
    assert_eq!(s, 200);
    assert!(text.contains("scaler_agent_ticks_total"), "{text}");
}

fn one_line_failure(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    lines[0].to_owned()
}

#[test]
fn without_root_the_agent_fails_with_one_line() {
    require_root();
    let line = one_line_failure(
        Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(scaler_bin()).args([
            "agent",
            "--listen",
            "127.0.0.1:0",
        ]),
    );
    println!("{line}");
    assert!(line.starts_with("Error: ") && line.contains("root"), "{line}");
}

#[test]
fn without_bpf_support_the_agent_fails_with_one_line() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("a.toml");
    std::fs::write(&cfg, "[agent]\nlisten = \"127.0.0.1:0\"\nbtf_path = \"/nonexistent/vmlinux\"\n").unwrap();
    let line = one_line_failure(Command::new(scaler_bin()).args(["agent", "--config"]).arg(&cfg));
    println!("{line}");
    assert!(line.contains("BTF") && line.contains("/nonexistent/vmlinux"), "{line}");
}

#[test]
fn bad_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("a.toml");
    std::fs::write(&cfg, "[agent]\ntick_ms = 5\n").unwrap();
    let line = one_line_failure(Command::new(scaler_bin()).args(["agent", "--config"]).arg(&cfg));
    assert!(line.contains("agent.tick_ms"), "{line}");
}

/// A state database damaged while the agent was down: the agent refuses to
/// start with one line naming the file, and leaves the file as it found it
/// (a silent fresh start would drop every subscription).
#[test]
fn a_corrupted_state_file_is_refused_with_one_line_and_left_as_found() {
    require_root();
    let cg = tests::TestCgroup::new();
    let mut agent = Agent::start("");
    let body = serde_json::json!({"cgroup": cg.child("x"), "resources": {"cpu": {"min": 100, "max": 500}}});
    let (s, v) = agent.send("PUT", "/v1/containers/x", Some(&body));
    assert!(s == 200 || s == 201, "{v}");
    agent.stop();
    let dir = agent.kill9();
    let state = dir.path().join("state").join("state.redb");
    let good = std::fs::read(&state).unwrap();
    let cfg = dir.path().join("agent.toml");
    type Damage = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let damage: [(&str, Damage); 4] = [
        ("truncated to nothing", Box::new(|_| Vec::new())),
        ("truncated to half", Box::new(|b| b[..b.len() / 2].to_vec())),
        ("header overwritten", Box::new(|b| [vec![0xAB; 512], b[512..].to_vec()].concat())),
        ("not a database", Box::new(|_| b"{\"subscriptions\": []}\n".to_vec())),
    ];
    for (what, f) in damage {
        let bad = f(&good);
        std::fs::write(&state, &bad).unwrap();
        let line = one_line_failure(Command::new(scaler_bin()).args(["agent", "--config"]).arg(&cfg));
        println!("{what}: {line}");
        assert!(line.contains("state.redb"), "{what}: {line}");
        assert_eq!(std::fs::read(&state).unwrap(), bad, "{what}: the file was changed");
    }
    std::fs::write(&state, &good).unwrap();
    let agent = Agent::start_in(dir, "");
    assert_eq!(agent.get("/v1/containers/x").0, 200, "the intact file still loads");
}
