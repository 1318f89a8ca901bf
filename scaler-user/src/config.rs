//! The agent's configuration: TOML into `#[serde(default)]` structs whose
//! defaults are written out below, validated once at load. Environment
//! overrides (`SCALER_*`) are read in [`Config::apply_env`] and nowhere else.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::cgroup::discover::DiscoveryOptions;

pub use scaler_api::config::{ConfigError, invalid, load_toml, parse_error};

/// Where disk bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskSource {
    /// eBPF `block_bio_queue` only: exact for direct and synchronous I/O,
    /// misses buffered writeback (flushed by kernel threads).
    Ebpf,
    /// cgroupfs I/O statistics only (`io.stat`, `blkio.throttle.*`).
    Cgroupfs,
    /// The larger of the two each tick: neither over-counts, each misses
    /// different I/O. See docs/architecture.md.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// HTTP listen address. Loopback by default: the API can change limits.
    pub listen: SocketAddr,
    /// Sampling (and, later, decision) period in milliseconds.
    pub tick_ms: u64,
    /// Samples kept per container for `/v1/stats/{name}/history`.
    pub history_len: usize,
    /// How often discovery rescans the cgroup trees (ms) when the kernel
    /// side cannot report cgroups made and removed.
    pub discovery_interval_ms: u64,
    /// With cgroup events from the kernel, discovery rescans when a cgroup
    /// is made or removed, and at least this often anyway (ms).
    pub rescan_interval_ms: u64,
    /// Watched (not managed) containers: CPU, network and disk come from
    /// the eBPF counters every tick; their memory usage from cgroupfs this
    /// often (ms)...
    pub watched_memory_read_ms: u64,
    /// ...and the rest of their cgroupfs files (limits, throttling, PSI,
    /// memory and I/O statistics) this often (ms).
    pub watched_full_read_ms: u64,
    /// Managed containers in play read what their policy decides from
    /// every tick (throttling, memory and its statistics, OOM state, memory
    /// and I/O pressure), and their limits, I/O and CPU pressure this often
    /// (ms); quiet ones (far below their limits, no pressure) their memory
    /// and limits this often and the rest as watched ones. A limit changed
    /// outside scaler is adopted at that reading.
    pub managed_full_read_ms: u64,
    /// Read the kernel's counter map whole (a batch walk of all its
    /// buckets, about 90 µs) when a tick reads this many cgroups' counters
    /// or more; below, one lookup each (1.5-2 µs). 0 = always whole.
    pub counter_batch_from: usize,
    /// CPU-clock flushes per second per CPU of the running task's CPU time,
    /// bounding how late CPU time shows up (4 ms at 250 Hz). 0 = only at
    /// context switches.
    pub cpu_flush_hz: u64,
    /// Source of disk bytes.
    pub disk_source: DiskSource,
    /// On hybrid hosts, create v2 twins of containers that exist only in v1
    /// and move their processes there, so eBPF sees them.
    pub mirror_v1_only: bool,
    /// Kernel BTF (struct offsets for the disk program, BTF tracepoints).
    pub btf_path: PathBuf,
    /// Host name reported by the API (default: the system's).
    pub hostname: Option<String>,
    /// Keep `kernel.bpf_stats_enabled` on (per-program run time in /metrics;
    /// costs a clock read per event).
    pub bpf_stats: bool,
    /// With `bpf_stats`: also attach an empty program to `sched_switch`, so
    /// that /metrics shows the floor any program there costs on this host
    /// beside `sched_switch`'s own (`cargo xtask bench sampling`).
    pub bpf_stats_floor: bool,
    /// Read memory charged from the kernel, every memory cgroup in one read
    /// per tick (a cgroup iterator), instead of a cgroupfs file per
    /// container; falls back to the files where the kernel cannot.
    pub memory_from_kernel: bool,
    /// The kernel's walk visits every memory cgroup below the containers'
    /// common parent, dying ones too: it is used while it visits at most
    /// this many per container it serves, its own cost counted as 30
    /// visits more (a visit costs a third to a fifth of a file read), else
    /// the files are read and the walk is tried again 50 ticks later.
    pub memory_walk_max_visits: u64,
    /// Durable state (subscriptions, bounds, limits set) lives here.
    pub state_dir: PathBuf,
    /// Bearer token for mutating requests. Required when `listen` is not a
    /// loopback address.
    pub token: Option<String>,
    /// Subscribed cgroups must lie below one of these paths (relative to the
    /// hierarchy roots).
    pub cgroup_roots: Vec<String>,
    /// Policy of a subscription that names none.
    pub default_policy: String,
    /// Below `max`, tasks of a managed container that reach its memory limit
    /// wait for the agent to raise it instead of being OOM-killed (v1: the
    /// OOM killer off; v2: the limit in `memory.high`), for policies that
    /// react to it (`follow`).
    pub memory_wait: bool,
    /// Subscriptions that manage CPU also get it as a core set (whole CPUs
    /// enough for the limit, physical cores before SMT siblings), unless
    /// they say `"cpu_placement": false`. Off by default.
    pub cpu_placement: bool,
    /// Unused CPU quota a managed container may bank for short bursts, in
    /// % of its quota (`cpu.cfs_burst_us` / `cpu.max.burst`; 0 = none).
    /// Over any second the container still averages within about a tenth
    /// of its limit, but a request burst inside one 100 ms period is not
    /// stopped by the quota.
    pub cpu_burst_pct: u64,
    /// Time a client has to send a request's headers, and the longest an
    /// idle keep-alive connection is kept, ms.
    pub http_header_timeout_ms: u64,
    /// Open API connections at once (more are closed at once).
    pub http_max_connections: usize,
    /// API requests handled at once (more wait).
    pub http_max_in_flight: usize,
    /// TLS: the server's certificate chain and its key (PEM). Both or
    /// neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP off loopback anyway (refused without it).
    pub insecure: bool,
    /// TLS: clients are verified against this CA (PEM) ...
    pub tls_client_ca: Option<PathBuf>,
    /// ...for requests that change something (`mutating`), or for every
    /// connection (`all`).
    pub tls_client_auth: scaler_api::tls::ClientAuth,
}

impl AgentConfig {
    /// The API server's limits.
    pub fn http_limits(&self) -> scaler_api::serve::Limits {
        scaler_api::serve::Limits {
            header_read_timeout: std::time::Duration::from_millis(self.http_header_timeout_ms),
            max_connections: self.http_max_connections,
            max_in_flight: self.http_max_in_flight,
        }
    }

    /// The TLS settings, as `scaler_api::tls` checks and loads them.
    pub fn tls(&self) -> scaler_api::tls::Settings<'_> {
        scaler_api::tls::Settings {
            section: "agent",
            listen: self.listen,
            cert: self.tls_cert.as_deref(),
            key: self.tls_key.as_deref(),
            client_ca: self.tls_client_ca.as_deref(),
            client_auth: self.tls_client_auth,
            insecure: self.insecure,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            // Five decisions a second: a step in load is seen within 200 ms.
            tick_ms: 200,
            // One minute at the default tick.
            history_len: 300,
            // New containers show up within a second.
            discovery_interval_ms: 1000,
            rescan_interval_ms: 10_000,
            // Memory of a watched container once a second (as `docker
            // stats`); its CPU, network and disk every tick.
            watched_memory_read_ms: 1_000,
            watched_full_read_ms: 5_000,
            managed_full_read_ms: 1_000,
            counter_batch_from: 50,
            cpu_flush_hz: 250,
            disk_source: DiskSource::Auto,
            mirror_v1_only: true,
            btf_path: PathBuf::from("/sys/kernel/btf/vmlinux"),
            hostname: None,
            bpf_stats: false,
            bpf_stats_floor: false,
            memory_from_kernel: true,
            memory_walk_max_visits: 4,
            state_dir: PathBuf::from("/var/lib/scaler"),
            token: None,
            // Anything on the host may be subscribed; narrow this on shared hosts.
            cgroup_roots: vec!["/".to_owned()],
            default_policy: "follow".to_owned(),
            // A tick's wait instead of an OOM kill.
            memory_wait: true,
            cpu_placement: false,
            // A whole quota banked: bursty services keep their latency.
            cpu_burst_pct: 100,
            // See serve::Limits::default.
            http_header_timeout_ms: 10_000,
            http_max_connections: 512,
            http_max_in_flight: 64,
            tls_cert: None,
            tls_key: None,
            insecure: false,
            tls_client_ca: None,
            tls_client_auth: scaler_api::tls::ClientAuth::Mutating,
        }
    }
}

/// What the host offers to its managed containers. `None` = what the host
/// has (CPU: online cores x 1000; memory: `MemTotal`) or, for bandwidths,
/// not limited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    pub cpu: Option<u64>,
    pub mem: Option<u64>,
    pub disk_read: Option<u64>,
    pub disk_write: Option<u64>,
    pub net_rx: Option<u64>,
    pub net_tx: Option<u64>,
}

/// This host's power model (used where there is no RAPL): power = idle +
/// (max - idle) x CPU utilisation. Reported by `GET /v1/host` so the
/// aggregator can use each host's own coefficients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnergyConfig {
    pub idle_mw: u64,
    pub max_mw: u64,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        // A typical two-socket server class figure scaled to a small VM:
        // 20 W idle, 80 W flat out. Set per host from its data sheet or a
        // wattmeter.
        Self { idle_mw: 20_000, max_mw: 80_000 }
    }
}

/// A cgroup to watch under a chosen name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    pub name: String,
    /// Path relative to the cgroup hierarchy roots, e.g. `/machine/web`.
    pub cgroup: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub agent: AgentConfig,
    pub discovery: DiscoveryOptions,
    pub engines: crate::engine::EngineConfig,
    pub host: HostConfig,
    pub energy: EnergyConfig,
    pub containers: Vec<ContainerConfig>,
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
        let cfg: Self = toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies `SCALER_LISTEN`, `SCALER_TICK_MS` and `SCALER_HOSTNAME` from
    /// `env` (a lookup function, so tests need no process environment).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("SCALER_LISTEN") {
            self.agent.listen = v.parse().map_err(|e| invalid("SCALER_LISTEN", format!("{v:?}: {e}")))?;
        }
        if let Some(v) = env("SCALER_TICK_MS") {
            self.agent.tick_ms = v.parse().map_err(|e| invalid("SCALER_TICK_MS", format!("{v:?}: {e}")))?;
        }
        if let Some(v) = env("SCALER_HOSTNAME") {
            self.agent.hostname = Some(v);
        }
        if let Some(v) = env("SCALER_TOKEN") {
            self.agent.token = Some(v);
        }
        if let Some(v) = env("SCALER_STATE_DIR") {
            self.agent.state_dir = PathBuf::from(v);
        }
        self.validate()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engines.validate().map_err(|(field, why)| invalid(&field, why))?;
        let a = &self.agent;
        if !(10..=60_000).contains(&a.tick_ms) {
            return Err(invalid("agent.tick_ms", format!("{} is outside 10..=60000", a.tick_ms)));
        }
        if a.history_len == 0 || a.history_len > 100_000 {
            return Err(invalid("agent.history_len", format!("{} is outside 1..=100000", a.history_len)));
        }
        if a.discovery_interval_ms < a.tick_ms {
            return Err(invalid("agent.discovery_interval_ms", "must be at least agent.tick_ms"));
        }
        if a.rescan_interval_ms < a.tick_ms || a.rescan_interval_ms > 3_600_000 {
            return Err(invalid("agent.rescan_interval_ms", "must be between agent.tick_ms and 3600000"));
        }
        // The read periods are rounded to whole ticks, at least one: below
        // `agent.tick_ms` (as the defaults are under a slow tick) they mean
        // every tick.
        if a.watched_full_read_ms > 600_000 {
            return Err(invalid("agent.watched_full_read_ms", "must be at most 600000"));
        }
        if a.managed_full_read_ms > 600_000 {
            return Err(invalid("agent.managed_full_read_ms", "must be at most 600000"));
        }
        if a.memory_walk_max_visits == 0 {
            return Err(invalid(
                "agent.memory_walk_max_visits",
                "must be at least 1 (memory_from_kernel = false turns the walk off)",
            ));
        }
        if a.watched_memory_read_ms > a.watched_full_read_ms {
            return Err(invalid("agent.watched_memory_read_ms", "must be at most agent.watched_full_read_ms"));
        }
        // A pattern must name a subtree: one whose first segment is only
        // wildcards reaches every cgroup of the host (system services and
        // all), which the agent would then watch and mirror.
        for p in &self.discovery.watch {
            let first = p.trim_matches('/').split('/').next().unwrap_or("");
            if first.is_empty() || first.bytes().all(|b| b == b'*' || b == b'?') {
                return Err(invalid(
                    "discovery.watch",
                    format!("{p:?} would match every cgroup of the host: start it with a name (e.g. \"machines/*\")"),
                ));
            }
        }
        if !(100..=600_000).contains(&a.http_header_timeout_ms) {
            return Err(invalid(
                "agent.http_header_timeout_ms",
                format!("{} is outside 100..=600000", a.http_header_timeout_ms),
            ));
        }
        if !(1..=65_536).contains(&a.http_max_connections) {
            return Err(invalid(
                "agent.http_max_connections",
                format!("{} is outside 1..=65536", a.http_max_connections),
            ));
        }
        if !(1..=4_096).contains(&a.http_max_in_flight) {
            return Err(invalid("agent.http_max_in_flight", format!("{} is outside 1..=4096", a.http_max_in_flight)));
        }
        if a.cpu_burst_pct > 100 {
            return Err(invalid(
                "agent.cpu_burst_pct",
                format!("{} is not a percentage of the quota (0..=100)", a.cpu_burst_pct),
            ));
        }
        if a.cpu_flush_hz > 10_000 {
            return Err(invalid("agent.cpu_flush_hz", format!("{} is above 10000", a.cpu_flush_hz)));
        }
        if !a.listen.ip().is_loopback() && a.token.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "agent.token",
                format!("required when agent.listen ({}) is not a loopback address", a.listen),
            ));
        }
        if let Some(why) = a.token.as_deref().filter(|t| !t.is_empty()).and_then(scaler_api::serve::token_problem) {
            return Err(invalid("agent.token", why));
        }
        a.tls().check().map_err(|(field, why)| invalid(field, why))?;
        if a.cgroup_roots.is_empty() {
            return Err(invalid("agent.cgroup_roots", "must name at least one root (\"/\" = everything)"));
        }
        for r in &a.cgroup_roots {
            if !r.starts_with('/') || r.split('/').any(|s| s == "..") {
                return Err(invalid("agent.cgroup_roots", format!("{r:?} must be an absolute cgroup path without ..")));
            }
        }
        if policies::PolicyConfig::by_name(&a.default_policy).is_err() {
            return Err(invalid(
                "agent.default_policy",
                format!("unknown policy {:?}; one of {}", a.default_policy, policies::POLICY_NAMES.join(", ")),
            ));
        }
        // The model `GET /v1/host` reports: the rules of `PowerModel` itself.
        policies::energy::PowerModel::try_new(self.energy.idle_mw, self.energy.max_mw)
            .map_err(|e| invalid("energy.max_mw", e.to_string()))?;
        if !(1..=16).contains(&self.discovery.max_depth) {
            return Err(invalid("discovery.max_depth", "must be within 1..=16"));
        }
        // The same rules as `PUT /v1/host` and `PUT /v1/containers`.
        let h = &self.host;
        for (field, v) in [
            ("host.cpu", h.cpu),
            ("host.mem", h.mem),
            ("host.disk_read", h.disk_read),
            ("host.disk_write", h.disk_write),
            ("host.net_rx", h.net_rx),
            ("host.net_tx", h.net_tx),
        ] {
            if let Some(v) = v
                && !(1..=policies::resource::MAX_AMOUNT).contains(&v)
            {
                return Err(invalid(field, format!("{v} is not in 1..=2^52 (leave it out = what the host has)")));
            }
        }
        if self.agent.state_dir.as_os_str().is_empty() {
            return Err(invalid("agent.state_dir", "must not be empty"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.containers {
            scaler_api::names::validate(&c.name).map_err(|reason| invalid("containers.name", reason))?;
            if !seen.insert(c.name.as_str()) {
                return Err(invalid("containers.name", format!("{:?} is named twice", c.name)));
            }
            if !c.cgroup.starts_with('/')
                || c.cgroup.split('/').any(|s| s == "..")
                || c.cgroup.trim_matches('/').is_empty()
            {
                return Err(invalid(
                    "containers.cgroup",
                    format!("{:?} must be an absolute path below the root (\"/lxc/web\") without ..", c.cgroup),
                ));
            }
        }
        Ok(())
    }

    pub fn configured_containers(&self) -> Vec<(String, String)> {
        self.containers.iter().map(|c| (c.name.clone(), c.cgroup.clone())).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.agent.listen.to_string(), "127.0.0.1:8470");
        assert_eq!(c.agent.tick_ms, 200);
    }

    #[test]
    fn parses_partial_toml_and_rejects_unknown_fields() {
        let c: Config = toml::from_str(
            "[agent]\ntick_ms = 100\n[discovery]\nwatch = [\"x/*\"]\n[[containers]]\nname = \"web\"\ncgroup = \"/a/b\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!((c.agent.tick_ms, c.agent.history_len), (100, 300));
        assert_eq!(c.configured_containers(), vec![("web".into(), "/a/b".into())]);
        let err = toml::from_str::<Config>("[agent]\ntick = 1\n").unwrap_err().to_string();
        assert!(err.contains("tick"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let mut c = Config::default();
        c.agent.tick_ms = 1;
        assert!(c.validate().unwrap_err().to_string().contains("agent.tick_ms"));
        let mut c = Config::default();
        c.containers.push(ContainerConfig { name: "x".into(), cgroup: "/a/../b".into() });
        assert!(c.validate().unwrap_err().to_string().contains("containers.cgroup"));
        let mut c = Config::default();
        let err = c.apply_env(|k| (k == "SCALER_LISTEN").then(|| "nope".to_string())).unwrap_err();
        assert!(err.to_string().contains("SCALER_LISTEN"));
        c.apply_env(|k| (k == "SCALER_TICK_MS").then(|| "50".to_string())).unwrap();
        assert_eq!(c.agent.tick_ms, 50);
        let mut c = Config::default();
        c.agent.listen = "0.0.0.0:8470".parse().unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("agent.token"));
        c.agent.token = Some("s3cret".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("agent.insecure") && err.contains("agent.tls_cert"), "plain HTTP off loopback: {err}");
        c.agent.tls_cert = Some("/etc/scaler/agent.pem".into());
        assert!(c.validate().unwrap_err().to_string().contains("agent.tls_key"), "both or neither");
        c.agent.tls_key = Some("/etc/scaler/agent.key".into());
        c.validate().unwrap();
        (c.agent.tls_cert, c.agent.tls_key, c.agent.insecure) = (None, None, true);
        c.validate().unwrap();
        c.agent.token = Some("s3 cret".into());
        assert!(c.validate().unwrap_err().to_string().contains("agent.token"), "a token must fit in a header");
        c.agent.token = Some("s3cret".into());
        c.energy.max_mw = 1 << 60;
        assert!(c.validate().unwrap_err().to_string().contains("energy.max_mw"), "what /v1/host could not report");
        c.energy.max_mw = 80_000;
        c.agent.default_policy = "nope".into();
        assert!(c.validate().unwrap_err().to_string().contains("agent.default_policy"));
        let mut c = Config::default();
        c.discovery.watch = vec!["**".into()];
        assert!(c.validate().unwrap_err().to_string().contains("discovery.watch"));
        c.discovery.watch = vec!["/*/x".into()];
        assert!(c.validate().is_err());
        c.discovery.watch = vec!["machines/*".into()];
        assert!(c.validate().is_ok());
        let mut c = Config::default();
        c.agent.watched_memory_read_ms = c.agent.watched_full_read_ms + 1;
        assert!(c.validate().unwrap_err().to_string().contains("agent.watched_memory_read_ms"));
        // A slow tick with the default read periods (then: every tick,
        // `agent::sampler` tests).
        let mut c = Config::default();
        c.agent.tick_ms = 5_000;
        c.agent.discovery_interval_ms = 5_000;
        c.validate().unwrap();
    }

    #[test]
    fn a_toml_error_is_one_line_with_its_place() {
        let text = "[agent]\ntick_ms = 200\ntick = 1\n";
        let e = toml::from_str::<Config>(text).unwrap_err();
        let msg = parse_error(Path::new("/etc/scaler/agent.toml"), text, &e).to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.starts_with("config /etc/scaler/agent.toml, line 3, column 1: "), "{msg}");
        assert!(msg.contains("tick"), "{msg}");
        assert_eq!(msg.matches("unknown field").count(), 1, "{msg}");
    }

    #[test]
    fn config_refuses_what_the_api_refuses() {
        let err = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().map(|_| String::new()).unwrap_or_else(|e| e.to_string())
        };
        assert!(err(&|c| c.host.cpu = Some(0)).contains("host.cpu"));
        assert!(err(&|c| c.host.mem = Some(1 << 60)).contains("host.mem"));
        assert_eq!(err(&|c| c.host.mem = Some(1 << 30)), "");
        assert!(err(&|c| c.agent.state_dir = PathBuf::new()).contains("agent.state_dir"));
        let two = |c: &mut Config| {
            c.containers.push(ContainerConfig { name: "x".into(), cgroup: "/a".into() });
            c.containers.push(ContainerConfig { name: "x".into(), cgroup: "/b".into() });
        };
        assert!(err(&two).contains("named twice"));
        let relative = |c: &mut Config| c.containers.push(ContainerConfig { name: "x".into(), cgroup: "lxc/x".into() });
        assert!(err(&relative).contains("containers.cgroup"));
    }
}
