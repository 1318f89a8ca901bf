//! `GET /v1/stats` and `/v1/stats/{name}`: what each container uses and
//! the limits in force, per tick.

use policies::Resource;
use serde::{Deserialize, Serialize};

use super::null_default;

/// One resource: `usage` measured, `current` the limit in force (`None` =
/// unlimited or not available).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    pub usage: Option<u64>,
    pub current: Option<u64>,
}

/// The six resources, in base units: `cpu` millicores, `mem` bytes,
/// `disk_*` and `net_*` bytes/s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    #[serde(deserialize_with = "null_default")]
    pub cpu: Reading,
    #[serde(deserialize_with = "null_default")]
    pub mem: Reading,
    #[serde(deserialize_with = "null_default")]
    pub disk_read: Reading,
    #[serde(deserialize_with = "null_default")]
    pub disk_write: Reading,
    #[serde(deserialize_with = "null_default")]
    pub net_rx: Reading,
    #[serde(deserialize_with = "null_default")]
    pub net_tx: Reading,
}

impl Resources {
    /// The readings in the order of [`Resource::LIMITABLE`].
    pub fn as_array(&self) -> [Reading; 6] {
        [self.cpu, self.mem, self.disk_read, self.disk_write, self.net_rx, self.net_tx]
    }

    /// With the resource each reading is of.
    pub fn iter(&self) -> impl Iterator<Item = (Resource, Reading)> {
        Resource::LIMITABLE.into_iter().zip(self.as_array())
    }

    /// The reading of `resource` (`None` for energy, which is not measured
    /// per container).
    pub fn get(&self, resource: Resource) -> Option<Reading> {
        self.iter().find(|(r, _)| *r == resource).map(|(_, x)| x)
    }

    /// The reading of `resource`, to change (`None` for energy).
    pub fn get_mut(&mut self, resource: Resource) -> Option<&mut Reading> {
        match resource {
            Resource::Cpu => Some(&mut self.cpu),
            Resource::Mem => Some(&mut self.mem),
            Resource::DiskRead => Some(&mut self.disk_read),
            Resource::DiskWrite => Some(&mut self.disk_write),
            Resource::NetRx => Some(&mut self.net_rx),
            Resource::NetTx => Some(&mut self.net_tx),
            _ => None,
        }
    }
}

/// Signals beyond usage: what the policies react to, and the raw sources
/// behind combined numbers (so they can be compared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Signals {
    /// CPU from cgroupfs accounting over the same interval (millicores).
    pub cpu_cgroupfs: Option<u64>,
    /// Time the cgroup was throttled during the interval (µs).
    pub cpu_throttled_usec: Option<u64>,
    /// Periods throttled during the interval.
    pub cpu_nr_throttled: Option<u64>,
    /// Memory charged including page cache (bytes); `mem.usage` is the working set.
    pub mem_charged: Option<u64>,
    /// Memory-cgroup reclaim entries during the interval (eBPF).
    pub mem_reclaims: u64,
    /// OOM kills in this cgroup since it was created (cgroupfs).
    pub oom_kills: Option<u64>,
    /// Tasks wait at the memory limit for the agent to raise it (v1 with
    /// the OOM killer off below max: `under_oom`).
    pub mem_waiting: Option<bool>,
    /// Memory stall ("some") during the interval (µs, PSI).
    pub mem_stall_usec: Option<u64>,
    /// File cache read back after the memory limit evicted it (bytes over
    /// the interval; cgroupfs `workingset_refault_file`).
    pub mem_refault_bytes: Option<u64>,
    /// The I/O stall those re-reads caused (µs): the interval's I/O stall
    /// (PSI) times the refaulted share of the bytes read.
    pub mem_refault_stall_usec: Option<u64>,
    /// CPU stall ("some") during the interval (µs, PSI).
    pub cpu_stall_usec: Option<u64>,
    /// I/O stall ("some") during the interval (µs, PSI).
    pub io_stall_usec: Option<u64>,
    /// Disk rates from each source (bytes/s); `disk_*` combines them.
    pub disk_read_ebpf: Option<u64>,
    pub disk_write_ebpf: Option<u64>,
    pub disk_read_cgroupfs: Option<u64>,
    pub disk_write_cgroupfs: Option<u64>,
}

/// Cumulative counts since the agent began watching the container (what
/// Prometheus counters and exact comparisons want; rates come from these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// CPU time (eBPF; cgroupfs accounting for a cgroup the kernel side cannot see).
    pub cpu_usec: u64,
    /// CPU time from cgroupfs accounting, for comparison.
    pub cpu_cgroupfs_usec: Option<u64>,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    /// Disk bytes as configured by `disk_source` (default: the larger of the
    /// two cumulative counts below).
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub disk_read_ebpf_bytes: u64,
    pub disk_write_ebpf_bytes: u64,
    pub disk_read_cgroupfs_bytes: Option<u64>,
    pub disk_write_cgroupfs_bytes: Option<u64>,
}

/// What made a cgroup a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Lxc,
    Docker,
    Podman,
    Kubernetes,
    Systemd,
    /// Named in the configuration (an explicit cgroup or a `watch` pattern).
    Configured,
    /// A kind this reader does not know (an agent of a newer version).
    #[default]
    #[serde(other)]
    Other,
}

impl Kind {
    /// The kinds an agent discovers, as `?kind=` takes them.
    pub const KNOWN: [Kind; 6] =
        [Kind::Lxc, Kind::Docker, Kind::Podman, Kind::Kubernetes, Kind::Systemd, Kind::Configured];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Lxc => "lxc",
            Kind::Docker => "docker",
            Kind::Podman => "podman",
            Kind::Kubernetes => "kubernetes",
            Kind::Systemd => "systemd",
            Kind::Configured => "configured",
            Kind::Other => "other",
        }
    }
}

/// A container as its engine knows it: the engine (`docker`, `podman`,
/// `lxd`), its id there (the full hex id; an LXD instance's name) and its
/// labels (LXD: the `user.*` keys, without the prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub engine: String,
    #[serde(default)]
    pub id: String,
    /// The engine's name for it (what `scaler` names it unless two clash).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A container as `/v1/stats` shows it. Before its second tick a container
/// has no rates yet: `time_ms`, `interval_ms`, `signals` and `totals` are
/// `null` and every reading is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub cgroup: String,
    #[serde(default)]
    pub kind: Kind,
    /// The engine that runs it (Docker, Podman, LXD), as that engine
    /// knows it; absent for containers no engine answered for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineInfo>,
    #[serde(default)]
    pub time_ms: Option<u64>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default, deserialize_with = "null_default")]
    pub resources: Resources,
    #[serde(default)]
    pub signals: Option<Signals>,
    #[serde(default)]
    pub totals: Option<Totals>,
}

/// A container as `/v1/stats?fields=brief` shows it: what an aggregator
/// reads every round (40-60 % of the full form's bytes). It parses as a
/// [`Container`] whose other signals and totals are empty, and as itself
/// (what a reader of only these fields parses faster: a [`Container`] is
/// three times its size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BriefContainer {
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub cgroup: String,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default)]
    pub time_ms: Option<u64>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default, deserialize_with = "null_default")]
    pub resources: Resources,
    #[serde(default)]
    pub signals: Option<BriefSignals>,
    #[serde(default)]
    pub totals: Option<BriefTotals>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BriefSignals {
    pub cpu_throttled_usec: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BriefTotals {
    pub cpu_usec: u64,
}

/// `GET /v1/stats?fields=brief`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BriefStats {
    #[serde(default)]
    pub host: String,
    pub time_ms: u64,
    #[serde(default)]
    pub tick_ms: u64,
    pub containers: Vec<BriefContainer>,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    #[serde(default)]
    pub host: String,
    pub time_ms: u64,
    #[serde(default)]
    pub tick_ms: u64,
    pub containers: Vec<Container>,
}

/// The signals the policies act on, per interval (a history point's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PointSignals {
    pub cpu_throttled_usec: Option<u64>,
    pub mem_stall_usec: Option<u64>,
    /// OOM kills since the cgroup was created.
    pub oom_kills: Option<u64>,
    pub mem_waiting: Option<bool>,
    /// Memory-cgroup reclaim entries during the interval (eBPF).
    pub mem_reclaims: u64,
    /// Evicted file cache read back, bytes, and the I/O stall it caused, µs.
    pub mem_refault_bytes: Option<u64>,
    pub mem_refault_stall_usec: Option<u64>,
}

/// One tick of `GET /v1/stats/{name}/history`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub time_ms: u64,
    #[serde(default)]
    pub interval_ms: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub resources: Resources,
    #[serde(default, deserialize_with = "null_default")]
    pub signals: PointSignals,
}

/// `GET /v1/stats/{name}/history` (without `?resource=`, which keeps one
/// resource's readings per point).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub name: String,
    #[serde(default)]
    pub tick_ms: u64,
    pub points: Vec<HistoryPoint>,
}
