//! A `scaler aggregator` process on a free loopback port with its own config
//! and state directory. The state directory outlives [`Aggregator::restart`]
//! (that is what restarts test); the process is stopped (SIGTERM, then
//! SIGKILL) on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::api::Api;

use crate::agent::{free_port, scaler_bin};

pub struct Aggregator {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    cfg_path: PathBuf,
    log: PathBuf,
    api: Api,
}

impl Aggregator {
    /// Starts an aggregator with `config` (TOML; `listen` and `state_dir`
    /// are added to its `[aggregator]` table) and waits for `/healthz`.
    pub fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let state = dir.path().join("state");
        let head = format!("[aggregator]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"", state.display());
        let config = if config.contains("[aggregator]") {
            config.replacen("[aggregator]", &head, 1)
        } else {
            format!("{head}\n{config}")
        };
        let cfg_path = dir.path().join("aggregator.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let mut me = Self {
            child: None,
            log: dir.path().join("aggregator.log"),
            dir,
            cfg_path,
            api: Api::new(format!("http://127.0.0.1:{port}"), Duration::from_secs(10)),
        };
        me.spawn();
        me
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(scaler_bin())
            .args(["aggregator", "--config"])
            .arg(&self.cfg_path)
            .env("SCALER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", scaler_bin().display()));
        self.child = Some(child);
        let ok = crate::wait_for(Duration::from_secs(20), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("aggregator exited with {status}: {}", self.log());
            }
            self.api.healthy().then_some(())
        });
        assert!(ok.is_some(), "aggregator did not answer /healthz: {}", self.log());
    }

    /// Base URL of its API.
    pub fn url(&self) -> String {
        self.api.url.clone()
    }

    /// Stops it (SIGTERM: it flushes history) and starts it again on the
    /// same port, config and state directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log(&self) -> String {
        scaler_testkit::read_log(&self.log)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills it with SIGKILL (no flush, no goodbye).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::kill_pid(c.id());
            let _ = c.wait();
        }
    }

    /// Starts it again after [`Aggregator::kill`] or [`Aggregator::stop`].
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Stops it with SIGTERM, waiting up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            scaler_testkit::stop(&mut c, Duration::from_secs(10));
        }
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests go through the shared [`Api`] client (`get`, `send`, `url`).
impl std::ops::Deref for Aggregator {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}
