//! A real Prometheus (Debian's `prometheus`) on a free loopback port,
//! scraping every second the targets of a file (file-based service
//! discovery, as `cargo xtask deploy` writes it); its data in a temporary
//! directory, ended by PID when dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::agent::free_port;

pub struct Prometheus {
    pub url: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping the targets listed in `targets` (a
    /// file_sd JSON file) and waits until it is ready.
    pub fn start(targets: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: scaler\n    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
                targets.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting prometheus (cargo xtask setup installs it): {e}"));
        let me = Self { url: format!("http://127.0.0.1:{port}"), child: Some(child), log, _dir: dir };
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let ready = crate::wait_for(Duration::from_secs(30), || {
            http.get(format!("{}/-/ready", me.url)).send().ok().filter(|r| r.status().is_success()).map(drop)
        });
        assert!(ready.is_some(), "prometheus not ready: {}", me.log());
        me
    }

    pub fn log(&self) -> String {
        scaler_testkit::read_log(&self.log)
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            scaler_testkit::stop(&mut c, Duration::from_secs(10));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
