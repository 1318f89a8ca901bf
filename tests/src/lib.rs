//! Harness for the privileged end-to-end tests: the shared
//! `scaler-testkit` (also used by the benches) with a test's manners (a
//! failure panics with what went wrong). Every resource a test makes is
//! named `scaler-test-<random>` and owned by an RAII guard that removes it
//! even when the test panics: [`TestCgroup`] (cgroups in every hierarchy,
//! processes started in them), [`Lxc`] (a busybox container whose cgroups
//! sit under a `scaler-test-*` parent), [`Agent`] (a `scaler agent` process
//! on a free loopback port). Processes are ended by PID, never by name.
#![allow(clippy::unwrap_used)]

pub mod agent;
pub mod aggregator;
pub mod api;
pub mod cgroup;
pub mod etcd;
pub mod lxc;
pub mod netns;
pub mod prometheus;
pub mod tls;

pub use agent::Agent;
pub use cgroup::TestCgroup;
pub use lxc::Lxc;

/// Fails the test with a clear message unless running as root.
pub fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "end-to-end tests need root (real cgroups, eBPF, LXC): run `cargo xtask test` as root");
}

pub use scaler_testkit::{kill_pid, wait_for, wait_listening};

/// `scaler-test-` and 8 random hex digits.
pub fn unique_name() -> String {
    scaler_testkit::unique(scaler_testkit::PREFIX)
}

/// Relative difference `|a - b| / b`.
pub fn rel_err(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}
