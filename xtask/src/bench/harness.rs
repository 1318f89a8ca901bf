//! What the benchmarks use of the shared `scaler-testkit` (the same
//! cgroups, containers and agent processes as the end-to-end tests, named
//! `scaler-test-bench-*` and removed on drop even when a bench fails), with
//! the bench's manners (`anyhow` errors), plus the release build and the
//! Markdown table.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
};

use anyhow::Context as _;
use scaler_testkit::{AgentProcess, Container, OwnCgroup};
pub use scaler_testkit::{
    cgroupfs::{v1_root, v2_root},
    procfs::{cpu_percent, rss_kib},
};

/// What bench resources are called.
const PREFIX: &str = "scaler-test-bench";

/// `scaler-test-bench-<random>` with children, in v2 and the v1 controllers.
pub struct Cgroups(OwnCgroup);

impl Cgroups {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self(OwnCgroup::new(PREFIX)?))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Creates child `rel` (empty) in every hierarchy.
    pub fn mkdir(&self, rel: &str) -> anyhow::Result<()> {
        Ok(self.0.mkdir(rel)?)
    }

    /// Removes child `rel` (killing what runs in it).
    pub fn remove(&mut self, rel: &str) -> anyhow::Result<()> {
        Ok(self.0.remove(rel)?)
    }

    /// Creates child `rel` and starts `cmd` in it (killed on drop).
    pub fn child_with(&mut self, rel: &str, cmd: &[&str]) -> anyhow::Result<()> {
        self.0.mkdir(rel)?;
        let (program, args) = cmd.split_first().context("empty command")?;
        self.0.spawn(rel, program, args)?;
        Ok(())
    }

    /// Starts `cmd` in child `rel` (which must exist), in `cwd`, with its
    /// output in `log`; the caller waits for it.
    pub fn spawn(&self, rel: &str, cmd: &[&str], cwd: &Path, log: std::fs::File) -> anyhow::Result<Child> {
        let (program, args) = cmd.split_first().context("empty command")?;
        self.0
            .command(rel, program, args)
            .current_dir(cwd)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {program} in a bench cgroup"))
    }

    /// Path relative to the hierarchy roots.
    pub fn rel(&self, child: &str) -> String {
        self.0.rel(child)
    }
}

/// A temporary directory removed on drop.
pub fn temp_dir() -> anyhow::Result<scaler_testkit::tempfile::TempDir> {
    Ok(scaler_testkit::tempfile::Builder::new().prefix("scaler-bench-").tempdir()?)
}

/// A `scaler agent` process, stopped on drop.
pub struct Agent(AgentProcess);

impl Agent {
    /// Starts `bin agent` with `config` (TOML, `listen` and `state_dir` added).
    pub fn start(bin: &Path, config: &str) -> anyhow::Result<Self> {
        Ok(Self(AgentProcess::start(bin, temp_dir()?, config, "warn")?))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.0.addr
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Its directory (config, `state/`, log).
    pub fn dir(&self) -> &Path {
        self.0.dir.path()
    }

    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let body = scaler_testkit::http::ok(&self.0.addr, "GET", path, None)?;
        serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON"))
    }

    pub fn put(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let text = scaler_testkit::http::ok(&self.0.addr, "PUT", path, Some(&body.to_string()))?;
        serde_json::from_str(&text).with_context(|| format!("PUT {path}: not JSON"))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        scaler_testkit::http::ok(&self.0.addr, "DELETE", path, None)?;
        Ok(())
    }

    /// The body of a 2xx GET that is not JSON (`/metrics`).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(scaler_testkit::http::ok(&self.0.addr, "GET", path, None)?)
    }
}

/// Builds the release `scaler` binary and returns its path.
pub fn release_binary() -> anyhow::Result<PathBuf> {
    crate::util::run(crate::util::cargo().args(["build", "--release", "-p", "scaler-user", "--bin", "scaler"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    Ok(target.join("release/scaler").canonicalize()?)
}

/// Prints a Markdown table and returns it.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n|{}|\n", head.join(" | "), head.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    print!("{s}");
    s
}

/// A busybox LXC container for a bench, destroyed on drop.
pub struct Lxc(Container);

impl Lxc {
    pub fn start() -> anyhow::Result<Self> {
        Ok(Self(Container::start(PREFIX)?))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Runs a shell command line inside.
    pub fn sh(&self, script: &str) -> anyhow::Result<()> {
        self.0.exec(&["sh", "-c", script])?;
        Ok(())
    }

    /// Starts a shell command line inside, in the background.
    pub fn spawn_sh(&self, script: &str) -> anyhow::Result<Child> {
        self.0.attach(&["sh", "-c", script]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("lxc-attach")
    }
}
