//! The container engines users run (Docker, Podman, LXD), through their own
//! APIs on their Unix sockets: what they call each container (name, id,
//! labels) for discovery, and their view of its limits kept equal to what
//! the agent has in force ([`sync`]).
//!
//! Limits are written to cgroupfs first, on the tick (tens of µs); the
//! engine's API (about 10 ms a call, measured) follows once the value has
//! settled, so a busy host never waits on its engine.

pub mod api;
mod directory;
pub mod http;
pub mod sync;

pub use directory::Directory;

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub use scaler_api::wire::EngineInfo;

/// An engine scaler talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Docker,
    Podman,
    Lxd,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Docker, Engine::Podman, Engine::Lxd];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Lxd => "lxd",
        }
    }

    /// The engine called `name` (as an [`EngineInfo`] says).
    pub fn named(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// How limits reach an engine's containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyPath {
    /// cgroupfs on the tick, then the engine's API once the value settled
    /// (the engine's view and its restarts keep what is in force).
    #[default]
    Engine,
    /// cgroupfs only: the engine is asked for names, never told limits.
    Cgroupfs,
}

/// `[engines]` in the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The Docker Engine API socket (empty: Docker is not asked).
    pub docker_socket: PathBuf,
    /// Podman's API socket (`podman system service`; empty: not asked).
    pub podman_socket: PathBuf,
    /// LXD's socket (the Debian package's; the snap's is
    /// `/var/snap/lxd/common/lxd/unix.socket`; empty: not asked).
    pub lxd_socket: PathBuf,
    pub apply: ApplyPath,
    /// A limit is sent to the engine once unchanged for this long...
    pub sync_settle_ms: u64,
    /// ...or at the latest this long after it first changed.
    pub sync_max_delay_ms: u64,
    /// Names and labels are asked again this often (renames, new labels).
    pub refresh_ms: u64,
    /// The longest one call to an engine may take.
    pub timeout_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            docker_socket: "/var/run/docker.sock".into(),
            podman_socket: "/run/podman/podman.sock".into(),
            lxd_socket: "/var/lib/lxd/unix.socket".into(),
            apply: ApplyPath::Engine,
            sync_settle_ms: 1000,
            sync_max_delay_ms: 5000,
            refresh_ms: 10_000,
            timeout_ms: 2000,
        }
    }
}

impl EngineConfig {
    /// The socket of `engine`, unless it is switched off.
    pub fn socket(&self, engine: Engine) -> Option<&std::path::Path> {
        let p = match engine {
            Engine::Docker => &self.docker_socket,
            Engine::Podman => &self.podman_socket,
            Engine::Lxd => &self.lxd_socket,
        };
        (!p.as_os_str().is_empty()).then_some(p.as_path())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// What is wrong with these settings, naming the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let range = |field: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((format!("engines.{field}"), format!("{v} is outside {lo}..={hi}")))
            }
        };
        range("sync_settle_ms", self.sync_settle_ms, 0, 600_000)?;
        range("sync_max_delay_ms", self.sync_max_delay_ms, self.sync_settle_ms, 600_000)?;
        range("refresh_ms", self.refresh_ms, 1000, 3_600_000)?;
        range("timeout_ms", self.timeout_ms, 10, 60_000)
    }
}
