//! What the sampler publishes and the HTTP handlers read. The sampler takes
//! the write lock once per tick to swap results in; handlers take the read
//! lock only to copy out what they serve.

use std::{collections::BTreeMap, sync::RwLock, time::Instant};

use serde::Serialize;

use crate::{
    cgroup::discover::Discovered,
    sample::{Sample, history::History},
};

#[derive(Debug, Clone)]
pub struct Published {
    pub info: Discovered,
    pub latest: Option<Sample>,
    pub history: History,
}

/// Which kernel-side counters are live on this host.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KernelFeatures {
    pub cpu: bool,
    pub net: bool,
    pub disk: bool,
    pub mem_events: bool,
}

#[derive(Debug, Default)]
pub struct Inner {
    pub time_ms: u64,
    /// CPU used by the whole host over the last second (millicores).
    pub host_cpu: Option<u64>,
    /// Package power from RAPL over the last second, where the host has it.
    pub rapl_mw: Option<u64>,
    pub ticks: u64,
    pub last_tick_us: u64,
    /// When the last tick was published (`None` before the first).
    pub last_tick_at: Option<Instant>,
    /// By container name.
    pub containers: BTreeMap<String, Published>,
    /// eBPF program run statistics (zero unless `kernel.bpf_stats_enabled`).
    pub programs: Vec<crate::ebpf::ProgramStat>,
    /// Time spent in each step of the tick since start.
    pub phases: TickPhases,
}

/// Cumulative time per step of the tick, µs: where the agent's CPU goes
/// (`/metrics`: `scaler_agent_tick_phase_seconds_total`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickPhases {
    /// Discovery scans (walking the cgroup tree, subtree ids, mirroring).
    pub discover_us: u64,
    /// cgroupfs files of every container.
    pub cgroupfs_us: u64,
    /// eBPF map lookups of every container's cgroups.
    pub maps_us: u64,
    /// Rates from counters (pure).
    pub compute_us: u64,
    /// Socket owners and memory-watch maps kept in sync with the tracked set.
    pub sync_us: u64,
    /// The manager's step: policies, limit writes, durable state.
    pub manage_us: u64,
    /// Publishing for the API, host CPU and power.
    pub publish_us: u64,
}

impl TickPhases {
    pub fn add(&mut self, o: &TickPhases) {
        self.discover_us += o.discover_us;
        self.cgroupfs_us += o.cgroupfs_us;
        self.maps_us += o.maps_us;
        self.compute_us += o.compute_us;
        self.sync_us += o.sync_us;
        self.manage_us += o.manage_us;
        self.publish_us += o.publish_us;
    }

    /// (name, µs) of every phase.
    pub fn named(&self) -> [(&'static str, u64); 7] {
        [
            ("discover", self.discover_us),
            ("cgroupfs", self.cgroupfs_us),
            ("maps", self.maps_us),
            ("compute", self.compute_us),
            ("sync", self.sync_us),
            ("manage", self.manage_us),
            ("publish", self.publish_us),
        ]
    }
}

pub struct Shared {
    pub host: String,
    pub tick_ms: u64,
    pub history_len: usize,
    pub started: Instant,
    pub layout: &'static str,
    pub kernel: KernelFeatures,
    pub inner: RwLock<Inner>,
}

impl Published {
    /// The container as `/v1/stats` serves it.
    pub fn view(&self) -> scaler_api::wire::Container {
        scaler_api::wire::Container {
            name: self.info.name.clone(),
            cgroup: self.info.cgroup.clone(),
            kind: self.info.kind,
            time_ms: self.latest.map(|s| s.time_ms),
            interval_ms: self.latest.map(|s| s.interval_ms),
            resources: self.latest.map(|s| s.resources).unwrap_or_default(),
            signals: self.latest.map(|s| s.signals),
            totals: self.latest.map(|s| s.totals),
        }
    }
}

impl Shared {
    /// How old the last tick is, and whether that is too old: more than
    /// five ticks (at least 5 s) since the last one, or none 10 s after
    /// start. A sampler that stopped is not a healthy agent.
    pub fn tick_age(&self) -> (std::time::Duration, bool) {
        let since = self.read().last_tick_at.unwrap_or(self.started).elapsed();
        let limit = std::time::Duration::from_millis((self.tick_ms * 5).max(5_000));
        let first = self.read().last_tick_at.is_none();
        (since, if first { since > limit * 2 } else { since > limit })
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a tick's results: the sample (if any) of every container
    /// tracked, and the names of those gone.
    pub fn publish(
        &self,
        time_ms: u64,
        tick_us: u64,
        samples: Vec<(crate::cgroup::discover::Discovered, Option<crate::sample::Sample>)>,
        removed: &[String],
    ) {
        let mut g = self.write();
        g.time_ms = time_ms;
        g.ticks += 1;
        g.last_tick_at = Some(Instant::now());
        g.last_tick_us = tick_us;
        for name in removed {
            g.containers.remove(name);
        }
        // Every tracked container is in `samples` each tick: a name that is
        // not (its cgroup now goes by another name) is gone.
        let live: std::collections::HashSet<&str> = samples.iter().map(|(d, _)| d.name.as_str()).collect();
        g.containers.retain(|name, _| live.contains(name.as_str()));
        for (info, sample) in samples {
            let history_len = self.history_len;
            let p = g.containers.entry(info.name.clone()).or_insert_with(|| Published {
                info: info.clone(),
                latest: None,
                history: History::new(history_len),
            });
            p.info = info;
            if let Some(s) = sample {
                p.history.push(&s);
                p.latest = Some(s);
            }
        }
    }
}
