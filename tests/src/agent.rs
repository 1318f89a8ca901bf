//! A `scaler agent` process ([`scaler_testkit::AgentProcess`]: a free
//! loopback port, its own config and state directory, stopped on drop) and
//! a JSON client for its API.

use std::{path::PathBuf, time::Duration};

use scaler_testkit::AgentProcess;
use serde_json::Value;

use crate::api::Api;

/// Path to the `scaler` binary: `SCALER_BIN` (set by `cargo xtask test`) or
/// the workspace's debug build.
pub fn scaler_bin() -> PathBuf {
    std::env::var_os("SCALER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/scaler"))
}

pub fn free_port() -> u16 {
    scaler_testkit::free_port().unwrap()
}

/// A `scaler agent` ([`AgentProcess`]) and a client for its API.
pub struct Agent {
    proc: AgentProcess,
    api: Api,
}

impl Agent {
    /// Starts an agent with `config` (TOML; `listen` and `state_dir` are
    /// added) and waits for `/healthz`.
    pub fn start(config: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config)
    }

    /// Starts an agent whose state lives in `dir` (to restart one on the
    /// same state after a crash).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Self {
        let proc = AgentProcess::start(&scaler_bin(), dir, config, "info").unwrap_or_else(|e| panic!("{e}"));
        let api = Api::new(format!("http://{}", proc.addr), Duration::from_secs(5));
        Self { proc, api }
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Base URL of its API (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.api.url.clone()
    }

    /// The container named `name` from `/v1/stats`, once it has a sample.
    pub fn container(&self, name: &str) -> Option<Value> {
        let (s, v) = self.get(&format!("/v1/stats/{name}"));
        (s == 200 && !v["time_ms"].is_null()).then_some(v)
    }

    /// Waits until `name` appears with a sample.
    pub fn wait_container(&self, name: &str) -> Value {
        crate::wait_for(Duration::from_secs(15), || self.container(name))
            .unwrap_or_else(|| panic!("container {name} never appeared: {}", self.log()))
    }

    /// A cumulative total of container `name` (e.g. "net_tx_bytes").
    pub fn total(&self, name: &str, field: &str) -> u64 {
        self.wait_container(name)["totals"][field].as_u64().unwrap_or_else(|| panic!("no totals.{field} for {name}"))
    }

    /// Sends SIGKILL (a crash) and hands back the state directory.
    pub fn kill9(mut self) -> tempfile::TempDir {
        self.proc.kill9();
        std::mem::replace(&mut self.proc.dir, tempfile::tempdir().unwrap())
    }

    /// The agent's events (`/v1/events`), oldest first.
    pub fn events(&self, container: &str) -> Vec<Value> {
        let (s, v) = self.get(&format!("/v1/events?container={container}&limit=100000"));
        assert_eq!(s, 200, "{v}");
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// Stops it with SIGTERM, waiting up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        self.proc.stop();
    }
}

/// Requests go through the shared [`Api`] client (`get`, `send`, `url`).
impl std::ops::Deref for Agent {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Runs the `scaler` CLI against the agent at `url`: (success, stdout, stderr).
pub fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(scaler_bin()).args(args).args(["--agent", url]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
