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
    pub info: std::sync::Arc<Discovered>,
    pub latest: Option<Sample>,
    pub history: History,
    /// The tick that last published it.
    seen_tick: u64,
}

/// Which kernel-side counters are live on this host.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KernelFeatures {
    pub cpu: bool,
    pub net: bool,
    pub disk: bool,
    pub mem_events: bool,
    /// Memory charged read for every cgroup in one read (a cgroup
    /// iterator), not from a file per container.
    pub mem_charged: bool,
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
    /// Cgroups in the kernel's counter map at the last batch read (`None`
    /// when batch reads are off).
    pub counter_entries: Option<usize>,
    /// Memory charged taken from the kernel's walk / read from a file, so
    /// far (readings that needed nothing else of cgroupfs).
    pub mem_reads_kernel: u64,
    pub mem_reads_file: u64,
    /// Memory cgroups the kernel's last walk visited (dying ones too).
    pub memcg_walk_visited: Option<u64>,
    /// Time spent in each step of the tick since start.
    pub phases: TickPhases,
    /// Calls to each engine's API (limits sent to Docker, Podman, LXD).
    pub engine_calls: std::collections::BTreeMap<crate::engine::Engine, crate::engine::sync::CallStats>,
}

/// Cumulative time per step of the tick, ns: where the agent's CPU goes
/// (`/metrics`: `scaler_agent_tick_phase_seconds_total`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickPhases {
    /// Discovery scans (walking the cgroup tree, subtree ids, mirroring).
    pub discover_ns: u64,
    /// cgroupfs files of every container.
    pub cgroupfs_ns: u64,
    /// eBPF map lookups of every container's cgroups.
    pub maps_ns: u64,
    /// The kernel's one read of every memory cgroup's charge (the cgroup
    /// iterator, `agent.memory_from_kernel`).
    pub memcg_ns: u64,
    /// Rates from counters (pure).
    pub compute_ns: u64,
    /// Socket owners and memory-watch maps kept in sync with the tracked set.
    pub sync_ns: u64,
    /// The manager's step: policies, limit writes, durable state.
    pub manage_ns: u64,
    /// Publishing for the API, host CPU and power.
    pub publish_ns: u64,
}

/// A duration in nanoseconds (saturating): the tick's steps are summed in
/// ns, since per-container steps take about a microsecond each and would
/// round away in µs.
pub fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A running clock for the steps of a tick: each lap reads the clock once
/// and ends one step where the next begins (per container, three reads
/// instead of a start and an end per step: six were 3 % of the agent at
/// 100 managed containers).
pub struct Laps(pub Instant);

impl Laps {
    /// Adds the time since the last lap to `step` (ns).
    pub fn lap(&mut self, step: &mut u64) {
        let now = Instant::now();
        *step += ns(now.duration_since(self.0));
        self.0 = now;
    }
}

impl TickPhases {
    pub fn add(&mut self, o: &TickPhases) {
        self.discover_ns += o.discover_ns;
        self.cgroupfs_ns += o.cgroupfs_ns;
        self.maps_ns += o.maps_ns;
        self.memcg_ns += o.memcg_ns;
        self.compute_ns += o.compute_ns;
        self.sync_ns += o.sync_ns;
        self.manage_ns += o.manage_ns;
        self.publish_ns += o.publish_ns;
    }

    /// (name, ns) of every phase.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("discover", self.discover_ns),
            ("cgroupfs", self.cgroupfs_ns),
            ("maps", self.maps_ns),
            ("memcg", self.memcg_ns),
            ("compute", self.compute_ns),
            ("sync", self.sync_ns),
            ("manage", self.manage_ns),
            ("publish", self.publish_ns),
        ]
    }
}

pub struct Shared {
    pub host: String,
    /// The tick in force (changed at run time by `PUT /v1/agent`).
    pub tick_ms: std::sync::atomic::AtomicU64,
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
            engine: self.info.engine.clone(),
            time_ms: self.latest.map(|s| s.time_ms),
            interval_ms: self.latest.map(|s| s.interval_ms),
            resources: self.latest.map(|s| s.resources).unwrap_or_default(),
            signals: self.latest.map(|s| s.signals),
            totals: self.latest.map(|s| s.totals),
        }
    }

    /// The container as `/v1/stats?fields=brief` serves it.
    pub fn brief(&self) -> scaler_api::wire::BriefContainer {
        use scaler_api::wire::{BriefSignals, BriefTotals};
        scaler_api::wire::BriefContainer {
            name: self.info.name.clone(),
            cgroup: self.info.cgroup.clone(),
            kind: self.info.kind,
            time_ms: self.latest.map(|s| s.time_ms),
            interval_ms: self.latest.map(|s| s.interval_ms),
            resources: self.latest.map(|s| s.resources).unwrap_or_default(),
            signals: self.latest.map(|s| BriefSignals { cpu_throttled_usec: s.signals.cpu_throttled_usec }),
            totals: self.latest.map(|s| BriefTotals { cpu_usec: s.totals.cpu_usec }),
        }
    }
}

impl Shared {
    /// How old the last tick is, and whether that is too old: more than
    /// five ticks (at least 5 s) since the last one, or none 10 s after
    /// start. A sampler that stopped is not a healthy agent.
    pub fn tick_age(&self) -> (std::time::Duration, bool) {
        let since = self.read().last_tick_at.unwrap_or(self.started).elapsed();
        let limit = std::time::Duration::from_millis((self.tick_ms() * 5).max(5_000));
        let first = self.read().last_tick_at.is_none();
        (since, if first { since > limit * 2 } else { since > limit })
    }

    /// The tick in force, ms.
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms.load(std::sync::atomic::Ordering::Relaxed)
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
        samples: Vec<(std::sync::Arc<Discovered>, Option<crate::sample::Sample>)>,
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
        let (tick, before) = (g.ticks, g.containers.len());
        let mut matched = 0;
        for (info, sample) in samples {
            let p = match g.containers.get_mut(&info.name) {
                Some(p) => {
                    // (A name met twice in one tick counts once.)
                    matched += usize::from(p.seen_tick != tick);
                    if !std::sync::Arc::ptr_eq(&p.info, &info) {
                        p.info = info;
                    }
                    p
                }
                None => g.containers.entry(info.name.clone()).or_insert_with(|| Published {
                    info,
                    latest: None,
                    history: History::new(self.history_len),
                    seen_tick: tick,
                }),
            };
            p.seen_tick = tick;
            if let Some(s) = sample {
                p.history.push(&s);
                p.latest = Some(s);
            }
        }
        // Every tracked container is in `samples` each tick: a name that is
        // not (its cgroup now goes by another name) is gone. (Checked only
        // when some name published before was not met again.)
        if matched < before {
            g.containers.retain(|_, p| p.seen_tick == tick);
        }
    }
}
