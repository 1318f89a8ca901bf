//! What the privileged end-to-end tests (`tests/`) and the benches
//! (`xtask bench`) share. Every resource made here is named
//! `scaler-test-*` and owned by a guard that removes it on drop, even when
//! the caller panics: [`OwnCgroup`] (a cgroup parent in every hierarchy and
//! the processes started in it), [`Container`] (a busybox LXC container
//! whose cgroups sit under a `scaler-test-*` parent), [`AgentProcess`] (a
//! `scaler agent` on a free loopback port). Processes are ended by PID,
//! never by name. Errors are `std::io::Error`s that say what failed; the
//! tests turn them into panics, the benches into their own errors.

pub mod agent;
pub mod cgroupfs;
pub mod engines;
pub mod fleet;
pub mod http;
pub mod lxc;
pub mod own;
pub mod procfs;

pub use tempfile;

use std::time::{Duration, Instant};

pub use agent::AgentProcess;
pub use lxc::Container;
pub use own::OwnCgroup;

/// The prefix of everything the tests and benches create.
pub const PREFIX: &str = "scaler-test";

/// `prefix` (which must start with [`PREFIX`]), a dash and 8 random hex digits.
pub fn unique(prefix: &str) -> String {
    assert!(prefix.starts_with(PREFIX), "test resources are named {PREFIX}-*, not {prefix}");
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut b);
    }
    format!("{prefix}-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
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

/// Sends `sig` to `pid` (a process the caller started).
pub fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 0 {
        return;
    }
    // SAFETY: plain syscall; the PID is positive (never a process group).
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGKILL to `pid`; reaps nothing (the caller owns the `Child`).
pub fn kill_pid(pid: u32) {
    signal(pid, libc::SIGKILL);
}

/// Stops a child the caller started: SIGTERM, up to `grace` to exit,
/// then SIGKILL; reaped.
pub fn stop(child: &mut std::process::Child, grace: Duration) {
    signal(child.id(), libc::SIGTERM);
    if wait_for(grace, || child.try_wait().ok().flatten()).is_none() {
        kill_pid(child.id());
    }
    let _ = child.wait();
}

/// A log file's text so far (empty when unreadable).
pub fn read_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A free TCP port on loopback (free when asked; bind it soon).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits (up to 10 s) until something listens on TCP `port`, IPv4 or IPv6.
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

/// An `io::Error` with `msg`.
pub(crate) fn error(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_carry_the_prefix_and_eight_hex_digits() {
        let n = super::unique("scaler-test-bench");
        let hex = n.strip_prefix("scaler-test-bench-").unwrap_or_default();
        assert_eq!(hex.len(), 8, "{n}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{n}");
        assert_ne!(super::unique("scaler-test"), super::unique("scaler-test"));
    }

    #[test]
    #[should_panic(expected = "test resources are named")]
    fn other_names_are_refused() {
        super::unique("web");
    }
}
