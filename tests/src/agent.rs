//! A `scaler agent` process on a free loopback port, with its own config
//! and state directory, stopped (SIGTERM, then SIGKILL) on drop.

use std::{
    io::Read as _,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

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
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Agent {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    log: PathBuf,
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
        let port = free_port();
        let cfg_path = dir.path().join("agent.toml");
        let mut head = format!("[agent]\nlisten = \"127.0.0.1:{port}\"");
        if !config.contains("state_dir") {
            head.push_str(&format!("\nstate_dir = \"{}\"", dir.path().join("state").display()));
        }
        let config =
            if config.contains("[agent]") { config.replacen("[agent]", &head, 1) } else { format!("{head}\n{config}") };
        std::fs::write(&cfg_path, config).unwrap();
        let log = dir.path().join("agent.log");
        let child = Command::new(scaler_bin())
            .args(["agent", "--config"])
            .arg(&cfg_path)
            .env("SCALER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", scaler_bin().display()));
        let mut me = Self {
            child: Some(child),
            dir,
            log,
            api: Api::new(format!("http://127.0.0.1:{port}"), Duration::from_secs(5)),
        };
        let ok = crate::wait_for(Duration::from_secs(20), || {
            if let Some(Ok(Some(status))) = me.child.as_mut().map(|c| c.try_wait()) {
                panic!("agent exited with {status}: {}", me.log());
            }
            me.api.healthy().then_some(())
        });
        assert!(ok.is_some(), "agent did not answer /healthz: {}", me.log());
        me
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
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
        if let Some(mut c) = self.child.take() {
            crate::kill_pid(c.id());
            let _ = c.wait();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// The agent's events (`/v1/events`), oldest first.
    pub fn events(&self, container: &str) -> Vec<Value> {
        let (s, v) = self.get(&format!("/v1/events?container={container}&limit=100000"));
        assert_eq!(s, 200, "{v}");
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// Stops it with SIGTERM, waiting up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signal to a PID we started.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            if crate::wait_for(Duration::from_secs(5), || c.try_wait().ok().flatten()).is_none() {
                crate::kill_pid(c.id());
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests go through the shared [`Api`] client (`get`, `send`, `url`).
impl std::ops::Deref for Agent {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}
