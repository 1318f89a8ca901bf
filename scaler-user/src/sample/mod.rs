//! What one tick measures for a container, how it is computed from two
//! readings, and the short history kept per container.
pub mod history;
pub mod rates;

use policies::Resource;
use serde::Serialize;

/// One resource: `usage` measured, `current` the limit in force (`None` =
/// unlimited or not available).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Reading {
    pub usage: Option<u64>,
    pub current: Option<u64>,
}

/// The six resources, in base units: `cpu` millicores, `mem` bytes,
/// `disk_*` and `net_*` bytes/s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    pub cpu: Reading,
    pub mem: Reading,
    pub disk_read: Reading,
    pub disk_write: Reading,
    pub net_rx: Reading,
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
    /// per container here).
    pub fn get(&self, resource: Resource) -> Option<Reading> {
        self.iter().find(|(r, _)| *r == resource).map(|(_, x)| x)
    }
}

/// Signals beyond usage: what the policies react to, and the raw sources
/// behind combined numbers (so they can be compared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

/// One tick's result for one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Wall-clock time of the reading (ms since the Unix epoch).
    pub time_ms: u64,
    /// Length of the interval the rates cover (ms).
    pub interval_ms: u64,
    pub resources: Resources,
    pub signals: Signals,
    pub totals: Totals,
}
