//! Harness for the privileged end-to-end tests. Every resource a test makes
//! is named `scaler-test-<random>` and owned by an RAII guard that removes it
//! even when the test panics: [`TestCgroup`] (cgroups in every hierarchy,
//! processes started in them), [`Lxc`] (a busybox container whose cgroups
//! sit under a `scaler-test-*` parent), [`Agent`] (a `scaler agent` process
//! on a free loopback port). Processes are ended by PID, never by name.
#![allow(clippy::unwrap_used)]

pub mod agent;
pub mod aggregator;
pub mod api;
pub mod cgroup;
pub mod lxc;
pub mod netns;

use std::time::{Duration, Instant};

pub use agent::Agent;
pub use cgroup::TestCgroup;
pub use lxc::Lxc;

/// Fails the test with a clear message unless running as root.
pub fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "end-to-end tests need root (real cgroups, eBPF, LXC): run `cargo xtask test` as root");
}

/// `scaler-test-` and 8 random hex digits.
pub fn unique_name() -> String {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut b);
    }
    format!("scaler-test-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Relative difference `|a - b| / b`.
pub fn rel_err(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

/// Sends SIGKILL to `pid` and reaps nothing (the caller owns the `Child`).
pub fn kill_pid(pid: u32) {
    // SAFETY: plain syscall on a PID this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// Waits until something listens on TCP `port` (IPv4 or IPv6, any address).
pub fn wait_listening(port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    wait_for(Duration::from_secs(10), || {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .any(|t| t.lines().any(|l| l.contains(&hex) && l.split_whitespace().nth(3) == Some("0A")))
            .then_some(())
    })
    .is_some()
}
