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
