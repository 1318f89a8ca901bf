//! The container engines users run (Docker, Podman, LXD), through their own
//! APIs on their Unix sockets: what they call each container (name, id,
//! labels) for discovery, and their view of its limits kept equal to what
//! the agent has in force ([`sync`]).
//!
//! Limits are written to cgroupfs first, on the tick (tens of µs); the
//! engine's API (about 10 ms a call, measured) follows once the value has
//! settled, so a busy host never waits on its engine.

pub mod api;
pub mod http;
pub mod sync;

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

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

/// What an engine said about its containers, and when.
struct Listing {
    at: Instant,
    /// By id (Docker, Podman: the full hex id; LXD: the instance name).
    by_key: HashMap<String, EngineInfo>,
}

/// Names and labels of the engines' containers, asked of each engine when
/// discovery meets a container it does not know (at most once per
/// `RELIST_MIN` per engine), and every `refresh_ms` otherwise.
pub struct Directory {
    cfg: EngineConfig,
    listings: HashMap<Engine, Listing>,
    /// Engines whose last call failed, and when (logged once per outage).
    down: HashMap<Engine, Instant>,
    /// Keys a fresh listing did not have (a plain LXC container is no LXD
    /// instance): not asked again until the next refresh.
    misses: HashMap<(Engine, String), Instant>,
}

/// The shortest gap between two listings of one engine on a miss.
const RELIST_MIN: Duration = Duration::from_millis(250);

impl Directory {
    pub fn new(cfg: EngineConfig) -> Self {
        Self { cfg, listings: HashMap::new(), down: HashMap::new(), misses: HashMap::new() }
    }

    /// What `engine` calls the container with `key`, asking it again when
    /// the listing is old or does not have it.
    pub fn lookup(&mut self, engine: Engine, key: &str) -> Option<EngineInfo> {
        let socket = self.cfg.socket(engine)?.to_path_buf();
        let now = Instant::now();
        let fresh = |l: &Listing, within: Duration| now.duration_since(l.at) < within;
        let refresh = Duration::from_millis(self.cfg.refresh_ms);
        let missed = self.misses.get(&(engine, key.to_owned())).is_some_and(|&t| now.duration_since(t) < refresh);
        let relist = match self.listings.get(&engine) {
            None => true,
            Some(l) if !fresh(l, refresh) => true,
            Some(l) => !missed && !l.by_key.contains_key(key) && !fresh(l, RELIST_MIN),
        };
        if relist && self.down.get(&engine).is_none_or(|&t| now.duration_since(t) >= RELIST_MIN) {
            match api::list(engine, &socket, self.cfg.timeout()) {
                Ok(all) => {
                    if self.down.remove(&engine).is_some() {
                        tracing::info!(engine = engine.name(), "engine answers again");
                    }
                    let by_key = all.into_iter().map(|i| (i.id.clone(), i)).collect();
                    self.listings.insert(engine, Listing { at: now, by_key });
                    self.misses.retain(|_, t| now.duration_since(*t) < refresh);
                }
                Err(e) => {
                    if self.down.insert(engine, now).is_none() && socket.exists() {
                        tracing::warn!(engine = engine.name(), "listing containers: {e}");
                    }
                    self.listings.remove(&engine);
                }
            }
        }
        let found = self.listings.get(&engine)?.by_key.get(key).cloned();
        if found.is_none() {
            self.misses.entry((engine, key.to_owned())).or_insert(now);
        }
        found
    }

    /// The engine named `name` in an [`EngineInfo`].
    pub fn engine_named(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }
}
