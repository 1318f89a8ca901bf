//! What the sampler measured over one interval, and what a host has.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resource::Resource;

/// One measurement of one resource of one container, covering the interval
/// `(time_ms - interval_ms, time_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// End of the interval, in ms on the caller's clock.
    pub time_ms: u64,
    /// Length of the interval, ms. Zero means unknown (then rates derived
    /// from the counters below are not used).
    #[serde(default)]
    pub interval_ms: u64,
    /// Usage in the resource's unit (a mean rate over the interval for cpu,
    /// disk and network; the level at the end for memory).
    pub usage: u64,
    /// CPU only: time throttled during the interval, microseconds (cgroup
    /// `cpu.stat` `throttled_usec` delta). Divided by the interval it says how
    /// many more cores the container wanted: `throttled_usec / interval_ms`
    /// is the unmet demand in millicores.
    #[serde(default)]
    pub cpu_throttled_usec: u64,
    /// Memory only: PSI "some" stall time during the interval, microseconds;
    /// 0 if unknown.
    #[serde(default)]
    pub mem_pressure: u64,
    /// Memory only: OOM kills during the interval.
    #[serde(default)]
    pub oom_kills: u64,
    /// Memory only: tasks were waiting at the limit for it to be raised
    /// (the agent keeps the OOM killer off below `max`: cgroup v1
    /// `under_oom`).
    #[serde(default)]
    pub mem_waiting: bool,
    /// Memory only: times the container entered reclaim at its limit
    /// during the interval (it pressed on it).
    #[serde(default)]
    pub mem_reclaims: u64,
    /// Memory only: evicted file cache read back during the interval,
    /// bytes (the limit made the container re-read it).
    #[serde(default)]
    pub mem_refault_bytes: u64,
    /// Memory only: the I/O stall those re-reads caused, µs.
    #[serde(default)]
    pub mem_refault_stall: u64,
}

impl Sample {
    /// A sample with only usage known.
    pub fn new(time_ms: u64, interval_ms: u64, usage: u64) -> Self {
        Sample { time_ms, interval_ms, usage, ..Sample::default() }
    }

    /// The same sample with CPU throttled time.
    pub fn with_throttled(mut self, usec: u64) -> Self {
        self.cpu_throttled_usec = usec;
        self
    }

    /// The same sample with memory pressure stall time.
    pub fn with_pressure(mut self, usec: u64) -> Self {
        self.mem_pressure = usec;
        self
    }

    /// The same sample with OOM kills.
    pub fn with_oom_kills(mut self, kills: u64) -> Self {
        self.oom_kills = kills;
        self
    }

    /// The same sample with memory reclaim entries.
    pub fn with_reclaims(mut self, reclaims: u64) -> Self {
        self.mem_reclaims = reclaims;
        self
    }

    /// The same sample with evicted cache read back (bytes) and the I/O
    /// stall it caused (µs).
    pub fn with_refaults(mut self, bytes: u64, stall_usec: u64) -> Self {
        self.mem_refault_bytes = bytes;
        self.mem_refault_stall = stall_usec;
        self
    }

    /// The same sample with tasks waiting at the memory limit.
    pub fn with_waiting(mut self, waiting: bool) -> Self {
        self.mem_waiting = waiting;
        self
    }

    /// CPU demand that went unmet, millicores: `throttled_usec / interval_ms`.
    pub fn unmet_millicores(&self) -> u64 {
        self.cpu_throttled_usec.checked_div(self.interval_ms).unwrap_or(0)
    }
}

/// What a host has of each resource. A resource absent from the map is not
/// limited by the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostCapacity(BTreeMap<Resource, u64>);

impl HostCapacity {
    /// A host with no declared capacity.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same host with `amount` of `resource`.
    pub fn with(mut self, resource: Resource, amount: u64) -> Self {
        self.0.insert(resource, amount);
        self
    }

    /// Set the capacity of a resource.
    pub fn set(&mut self, resource: Resource, amount: u64) {
        self.0.insert(resource, amount);
    }

    /// The capacity of a resource, `None` when unlimited.
    pub fn get(&self, resource: Resource) -> Option<u64> {
        self.0.get(&resource).copied()
    }

    /// Declared capacities in resource order.
    pub fn iter(&self) -> impl Iterator<Item = (Resource, u64)> + '_ {
        self.0.iter().map(|(r, a)| (*r, *a))
    }

    /// What is left of `resource` once `allocated` is taken; `None` when
    /// unlimited.
    pub fn free(&self, resource: Resource, allocated: u64) -> Option<u64> {
        self.get(resource).map(|c| c.saturating_sub(allocated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_time_gives_unmet_millicores() {
        // 200 ms interval, throttled 100 ms of CPU time: half a core unmet.
        let s = Sample::new(1000, 200, 1000).with_throttled(100_000);
        assert_eq!(s.unmet_millicores(), 500);
        assert_eq!(Sample::new(0, 0, 1).with_throttled(9).unmet_millicores(), 0);
    }

    #[test]
    fn capacity_free() {
        let h = HostCapacity::new().with(Resource::Cpu, 4000);
        assert_eq!(h.free(Resource::Cpu, 3000), Some(1000));
        assert_eq!(h.free(Resource::Cpu, 5000), Some(0));
        assert_eq!(h.free(Resource::Mem, 5000), None);
    }
}
