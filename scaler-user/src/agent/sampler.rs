//! One tick of sampling: discovery when due, then for every container the
//! eBPF counters of its cgroup subtree and its cgroupfs files, differenced
//! against the previous tick into a [`Sample`].

use std::sync::Arc;
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use scaler_common::CgroupCounters;
use tracing::{debug, info, warn};

pub use super::build::{SampleInput, build_sample};
pub use super::counters::Counters;
use crate::{
    cgroup::{
        discover::{self, Discovered, DiscoveryOptions},
        layout::Layout,
        mirror,
        reader::{CgroupReader, CgroupStats, Depth},
    },
    config::{Config, DiskSource},
    ebpf::loader::CgroupEvents,
    sample::{Sample, Totals, rates::subtree_delta},
};

/// What management tells each tick of sampling (passed in, never pushed:
/// the sampler holds no copy).
#[derive(Debug, Clone, Default)]
pub struct Managed {
    /// Subscribed containers, cgroup by name: tracked whatever discovery
    /// finds, read in full every tick.
    pub subscribed: std::collections::BTreeMap<String, String>,
    /// Changes whenever `subscribed` does (then discovery rescans).
    pub generation: u64,
    /// The limits scaler keeps on each subscribed cgroup, shown as
    /// `current` where the sampler did not read them this tick (managed
    /// containers read limits once per `agent.managed_full_read_ms`), and
    /// always for the network (the eBPF limiter keeps it, not cgroupfs).
    pub limits: HashMap<String, Vec<(policies::Resource, Option<u64>)>>,
}

/// Ticks a failed mirror removal is retried (10 s at the default tick).
const STALE_MIRROR_TRIES: u32 = 50;

struct Previous {
    at: Instant,
    /// (cgroup id, counters) of the container's subtree, in `ids` order.
    counters: Vec<(u64, CgroupCounters)>,
    stats: CgroupStats,
}

struct Tracked {
    /// Shared with what is published each tick (no copy per tick).
    info: Arc<Discovered>,
    reader: CgroupReader,
    /// v2 ids of the container's directory and all below it.
    ids: Vec<u64>,
    prev: Option<Previous>,
    /// The vector of the reading before `prev`, filled again at the next
    /// tick (no allocation per container per tick).
    spare: Vec<(u64, CgroupCounters)>,
    totals: Totals,
    mirrored: bool,
    /// Managed: read every tick until this tick (see [`super::quiet`]).
    hot_until: u64,
    /// Managed: its last sample showed pressure.
    pressed: bool,
    /// When its reader last forgot which files were missing.
    absent_since: Instant,
}

/// What a tick produced.
pub struct TickResult {
    /// Wall-clock time the counters were read (ms since the epoch).
    pub time_ms: u64,
    pub samples: Vec<(Arc<Discovered>, Option<Sample>)>,
    pub removed: Vec<String>,
    /// Time in discovery, cgroupfs, maps and computing (the rest is 0).
    pub phases: crate::published::TickPhases,
    /// Memory charged read alone this tick: (from the kernel, from files).
    pub mem_reads: (u64, u64),
}

/// Microseconds since `t`.
fn ns_since(t: Instant) -> u64 {
    crate::published::ns(t.elapsed())
}

pub struct Sampler {
    layout: Layout,
    discovery: DiscoveryOptions,
    /// From the config file.
    configured: Vec<(String, String)>,
    /// The generation of the subscribed set last seen (a new one rescans).
    generation: u64,
    /// The subscribed cgroups of that generation.
    subscribed: std::collections::HashSet<String>,
    disk_source: DiskSource,
    mirror_v1_only: bool,
    discovery_interval: Duration,
    rescan_interval: Duration,
    /// Watched (not managed) containers get a full cgroupfs reading once
    /// per this many ticks.
    full_every: u64,
    /// ...and their memory usage every this many.
    mem_every: u64,
    /// Managed containers read their limits every this many ticks.
    managed_full_every: u64,
    /// The read periods (ms) the three counts above come from.
    read_ms: [u64; 3],
    last_scan: Option<Instant>,
    /// Cgroup event counts when the last scan began.
    seen_events: Option<CgroupEvents>,
    /// Mirrors whose v1 original is gone but whose removal failed (their
    /// last processes still exiting): retried each tick, a bounded number of
    /// times, and never adopted as containers meanwhile.
    stale_mirrors: Vec<(String, u32)>,
    tracked: BTreeMap<String, Tracked>,
    ticks: u64,
    /// Discovery scans done so far.
    scans: u64,
    /// What the engines call their containers.
    engines: crate::engine::Directory,
    /// Told which containers engines run, after each scan.
    engine_sync: Option<crate::engine::sync::EngineSync>,
}

impl Sampler {
    pub fn new(layout: Layout, cfg: &Config) -> Self {
        let mut me = Self {
            layout,
            discovery: cfg.discovery.clone(),
            configured: cfg.configured_containers(),
            generation: 0,
            subscribed: Default::default(),
            disk_source: cfg.agent.disk_source,
            mirror_v1_only: cfg.agent.mirror_v1_only,
            discovery_interval: Duration::from_millis(cfg.agent.discovery_interval_ms),
            rescan_interval: Duration::from_millis(cfg.agent.rescan_interval_ms),
            full_every: 1,
            mem_every: 1,
            managed_full_every: 1,
            read_ms: [cfg.agent.watched_full_read_ms, cfg.agent.watched_memory_read_ms, cfg.agent.managed_full_read_ms],
            last_scan: None,
            seen_events: None,
            stale_mirrors: Vec::new(),
            tracked: BTreeMap::new(),
            ticks: 0,
            scans: 0,
            engines: crate::engine::Directory::new(cfg.engines.clone()),
            engine_sync: None,
        };
        me.set_timing(cfg.agent.tick_ms, cfg.agent.discovery_interval_ms);
        me
    }

    /// Calls made to each engine's API so far.
    pub fn engine_stats(&self) -> std::collections::BTreeMap<crate::engine::Engine, crate::engine::sync::CallStats> {
        self.engine_sync.as_ref().map(|s| s.stats()).unwrap_or_default()
    }

    /// Tells `sync` which containers engines run, after every scan.
    pub fn with_engine_sync(mut self, sync: crate::engine::sync::EngineSync) -> Self {
        self.engine_sync = Some(sync);
        self
    }

    /// Takes a new tick and discovery interval (`PUT /v1/agent`): the read
    /// periods stay in ms, so they are counted in the new ticks.
    pub fn set_timing(&mut self, tick_ms: u64, discovery_interval_ms: u64) {
        let every = |ms: u64| (ms / tick_ms.max(1)).max(1);
        self.full_every = every(self.read_ms[0]);
        self.mem_every = every(self.read_ms[1]);
        self.managed_full_every = every(self.read_ms[2]);
        self.discovery_interval = Duration::from_millis(discovery_interval_ms);
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Forces a discovery scan on the next tick.
    pub fn rescan_soon(&mut self) {
        self.last_scan = None;
    }

    /// The v2 ids of tracked cgroup `cgroup` and everything below it (empty
    /// when not tracked).
    pub fn ids_of(&self, cgroup: &str) -> &[u64] {
        self.tracked.get(cgroup).map_or(&[], |t| t.ids.as_slice())
    }

    /// In ticks: watched memory, watched full and managed full readings.
    pub fn read_periods(&self) -> (u64, u64, u64) {
        (self.mem_every, self.full_every, self.managed_full_every)
    }

    /// Cgroup ids whose counters a tick reads.
    pub fn id_count(&self) -> usize {
        self.tracked.values().map(|t| t.ids.len()).sum()
    }

    /// Discovery scans done so far (what [`Self::sock_owners`] says changes
    /// only when this does).
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Every cgroup v2 id inside a tracked container -> the v2 id of that
    /// container; a cgroup inside nested containers belongs to the innermost.
    pub fn sock_owners(&self) -> HashMap<u64, u64> {
        let mut by_depth: Vec<&Tracked> = self.tracked.values().filter(|t| !t.ids.is_empty()).collect();
        by_depth.sort_by_key(|t| crate::ebpf::netlimit::level_of(&t.info.cgroup));
        let mut owners = HashMap::new();
        for t in by_depth {
            let container = t.ids[0];
            owners.extend(t.ids.iter().map(|&id| (id, container)));
        }
        owners
    }

    /// A scan is due when the kernel says cgroups were made or removed (or,
    /// where v1-only cgroups are mirrored, tasks moved), and otherwise every
    /// rescan interval; without kernel events, every discovery interval.
    fn scan_due(&self, now: Instant, events: Option<CgroupEvents>) -> bool {
        let Some(last) = self.last_scan else { return true };
        // An engine answered about its containers: their names are in.
        if self.engines.take_news() {
            return true;
        }
        let age = now.duration_since(last);
        match (events, self.seen_events) {
            (Some(e), Some(seen)) => {
                e.tree != seen.tree
                    || (e.attach != seen.attach && self.mirror_v1_only && self.layout.is_hybrid())
                    || age >= self.rescan_interval
            }
            _ => age >= self.discovery_interval,
        }
    }

    fn scan(
        &mut self,
        now: Instant,
        subscribed: &std::collections::BTreeMap<String, String>,
        removed: &mut Vec<String>,
    ) {
        self.last_scan = Some(now);
        self.scans += 1;
        let mut wanted = self.configured.clone();
        wanted.extend(subscribed.iter().map(|(n, c)| (n.clone(), c.clone())));
        let engines = &self.engines;
        let found = discover::scan(&self.layout, &self.discovery, &wanted, &mut |e, key| engines.lookup(e, key));
        let mut keep = std::collections::HashSet::new();
        for d in found {
            let stale = self.stale_mirrors.iter().any(|(c, _)| *c == d.cgroup);
            if stale || (!d.in_v1 && self.tracked.get(&d.cgroup).is_some_and(|t| t.mirrored)) {
                // The v1 original of a mirror is gone: so is the container
                // (dropped below, its mirror removed), even if the scan came
                // before a read noticed.
                continue;
            }
            keep.insert(d.cgroup.clone());
            let mut mirrored = false;
            if self.layout.is_hybrid()
                && d.in_v1
                && self.mirror_v1_only
                && (!d.in_v2 || self.tracked.get(&d.cgroup).is_some_and(|t| t.mirrored))
            {
                match mirror::sync(&self.layout, &d.cgroup) {
                    Ok(n) => {
                        mirrored = true;
                        if n > 0 {
                            info!(cgroup = %d.cgroup, moved = n, "mirrored v1-only cgroup into the v2 tree");
                        }
                    }
                    Err(e) => warn!("{e}"),
                }
            }
            let ids = discover::subtree_ids(&self.layout.v2_dir(&d.cgroup));
            match self.tracked.get_mut(&d.cgroup) {
                Some(t) => {
                    t.ids = ids;
                    if t.info.name != d.name || t.info.engine != d.engine {
                        let info = Arc::make_mut(&mut t.info);
                        info.name = d.name.clone();
                        info.engine = d.engine.clone();
                    }
                    // Files that were missing are looked for again at most
                    // once per rescan interval (a controller enabled since),
                    // not at every scan a cgroup event starts: on a hybrid
                    // host that is 8 failed opens per container and scan.
                    if now.duration_since(t.absent_since) >= self.rescan_interval {
                        t.reader.forget_absent();
                        t.absent_since = now;
                    }
                    t.mirrored |= mirrored;
                }
                None => {
                    debug!(name = %d.name, cgroup = %d.cgroup, "container discovered");
                    let reader = CgroupReader::new(&self.layout, &d.cgroup);
                    self.tracked.insert(
                        d.cgroup.clone(),
                        Tracked {
                            info: Arc::new(d),
                            reader,
                            ids,
                            prev: None,
                            spare: Vec::new(),
                            totals: Totals::default(),
                            mirrored,
                            hot_until: 0,
                            pressed: false,
                            absent_since: now,
                        },
                    );
                }
            }
        }
        let gone: Vec<String> = self.tracked.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for cg in gone {
            if let Some(t) = self.tracked.remove(&cg) {
                self.drop_tracked(t, removed);
            }
        }
        if let Some(sync) = &self.engine_sync {
            let owned = self.tracked.iter().filter_map(|(cg, t)| {
                let e = t.info.engine.as_ref()?;
                Some((cg.clone(), (crate::engine::Engine::named(&e.engine)?, e.id.clone())))
            });
            sync.set_owned(owned.collect());
        }
    }

    /// On shutdown: the v2 directories this sampler made for v1-only
    /// cgroups go (their processes back to the v2 root's parent), so a
    /// clean exit leaves no cgroup behind.
    pub fn release_mirrors(&mut self) {
        let mirrored: Vec<Tracked> = {
            let keys: Vec<String> = self.tracked.iter().filter(|(_, t)| t.mirrored).map(|(k, _)| k.clone()).collect();
            keys.iter().filter_map(|k| self.tracked.remove(k)).collect()
        };
        let mut removed = Vec::new();
        for t in mirrored {
            self.drop_tracked(t, &mut removed);
        }
    }

    fn drop_tracked(&mut self, t: Tracked, removed: &mut Vec<String>) {
        debug!(name = %t.info.name, "container gone");
        if t.mirrored && !mirror::remove(&self.layout, &t.info.cgroup) {
            debug!(cgroup = %t.info.cgroup, "mirror not removable yet (tasks still exiting): retried");
            self.stale_mirrors.push((t.info.cgroup.clone(), 0));
        }
        removed.push(t.info.name.clone());
    }

    /// Tries again to remove mirrors whose removal failed, for at most
    /// `STALE_MIRROR_TRIES` ticks each.
    fn retry_stale_mirrors(&mut self) {
        let layout = &self.layout;
        self.stale_mirrors.retain_mut(|(cgroup, tries)| {
            *tries += 1;
            let gone = mirror::remove(layout, cgroup) || !layout.v2_dir(cgroup).exists();
            if gone {
                debug!(%cgroup, tries, "stale mirror removed");
            }
            !gone && *tries < STALE_MIRROR_TRIES
        });
    }

    /// The memory cgroup directories (inode -> path) of every tracked
    /// container: what the kernel's walk reads the charge of.
    pub fn mem_dirs(&mut self) -> HashMap<u64, std::path::PathBuf> {
        self.tracked.values_mut().filter_map(|t| Some((t.reader.mem_ino()?, t.reader.mem_dir()))).collect()
    }

    /// The next tick reads some container's memory charge (what the
    /// kernel's one read of every memory cgroup serves): managed ones every
    /// tick, watched ones once per `agent.watched_memory_read_ms` and at
    /// their full readings.
    pub fn reads_memory_next(&self, managed: &Managed) -> bool {
        let next = self.ticks + 1;
        !managed.subscribed.is_empty() || next.is_multiple_of(self.mem_every) || next.is_multiple_of(self.full_every)
    }

    /// Runs one tick, told by management what it manages.
    pub fn tick(&mut self, counters: &dyn Counters, managed: &Managed) -> TickResult {
        let now = Instant::now();
        let mut removed = Vec::new();
        let mut phases = crate::published::TickPhases::default();
        if !self.stale_mirrors.is_empty() {
            self.retry_stale_mirrors();
        }
        if managed.generation != self.generation {
            // Subscribed containers are tracked whatever discovery finds.
            self.generation = managed.generation;
            self.subscribed = managed.subscribed.values().cloned().collect();
            self.last_scan = None;
        }
        let events = counters.cgroup_events();
        if self.scan_due(now, events) {
            self.seen_events = events;
            self.scan(now, &managed.subscribed, &mut removed);
            phases.discover_ns = ns_since(now);
        }
        let time_ms = scaler_api::now_ms();
        let mut samples = Vec::with_capacity(self.tracked.len());
        let mut vanished = Vec::new();
        self.ticks += 1;
        // Managed containers in play read what their policy decides from
        // every tick and their limits once per `agent.managed_full_read_ms`
        // (1 s; in between, the limits scaler keeps are shown); quiet ones
        // their memory charged every tick and the rest as watched ones
        // (see `quiet`); watched ones read
        // memory once per `agent.watched_memory_read_ms` (1 s) and the rest
        // once per `agent.watched_full_read_ms` (5 s); CPU, network and
        // disk come from the eBPF counters.
        let mut mem_reads = (0, 0);
        let kinds = super::quiet::TickKinds {
            full: self.ticks.is_multiple_of(self.full_every),
            mem: self.ticks.is_multiple_of(self.mem_every),
            managed_full: self.ticks.is_multiple_of(self.managed_full_every),
        };
        let mut laps = crate::published::Laps(Instant::now());
        for (cg, t) in &mut self.tracked {
            let t_maps = laps.0;
            let mut cur = std::mem::take(&mut t.spare);
            cur.clear();
            cur.extend(t.ids.iter().map(|&id| (id, counters.read(id))));
            let at = counters.taken_at().unwrap_or(t_maps);
            let delta = t.prev.as_ref().map(|p| (subtree_delta(&p.counters, &cur), at.duration_since(p.at)));
            laps.lap(&mut phases.maps_ns);
            let kernel_sees = t.info.in_v2 || t.mirrored;
            let hot = self.subscribed.contains(cg.as_str()).then(|| {
                let in_play = delta.as_ref().is_none_or(|(d, i)| {
                    super::quiet::in_play(&super::quiet::Signs {
                        kernel_sees,
                        delta: d,
                        interval_ns: crate::published::ns(*i),
                        last: t.prev.as_ref().map(|p| &p.stats),
                        pressed: t.pressed,
                        limits: managed.limits.get(cg).map_or(&[][..], Vec::as_slice),
                    })
                });
                if in_play {
                    t.hot_until = self.ticks + super::quiet::HOT_TICKS;
                }
                self.ticks < t.hot_until
            });
            let depth = super::quiet::depth(hot, &kinds);
            // Memory charged from the kernel's one read of every memory
            // cgroup this tick, where it was walked (else from the file).
            let charged = match depth {
                Depth::Carry => None,
                _ => t.reader.mem_ino().and_then(|ino| counters.memory_charged(ino)),
            };
            match (depth, charged) {
                (Depth::Carry, _) => {}
                (_, Some(_)) => mem_reads.0 += 1,
                (_, None) => mem_reads.1 += 1,
            }
            let read = t.reader.read_with(depth, charged);
            laps.lap(&mut phases.cgroupfs_ns);
            let stats = match read {
                Ok(s) => s,
                Err(_) => {
                    vanished.push(cg.clone());
                    continue;
                }
            };
            let sample = t.prev.as_ref().zip(delta).map(|(p, (kernel, interval))| {
                let input = SampleInput {
                    time_ms,
                    interval,
                    kernel,
                    prev: &p.stats,
                    cur: &stats,
                    kernel_sees,
                    disk_source: self.disk_source,
                };
                build_sample(&input, &t.totals)
            });
            let mut sample = sample;
            if let Some(s) = &mut sample {
                t.totals = s.totals;
                t.pressed = super::quiet::pressed(s);
                for &(r, limit) in managed.limits.get(cg).map_or(&[][..], Vec::as_slice) {
                    use policies::Resource;
                    let net = matches!(r, Resource::NetRx | Resource::NetTx);
                    if let Some(reading) = s.resources.get_mut(r)
                        && (net || !stats.full)
                    {
                        reading.current = limit;
                    }
                }
            }
            if let Some(old) = t.prev.replace(Previous { at, counters: cur, stats }) {
                t.spare = old.counters;
            }
            samples.push((Arc::clone(&t.info), sample));
            laps.lap(&mut phases.compute_ns);
        }
        for cg in vanished {
            if let Some(t) = self.tracked.remove(&cg) {
                self.drop_tracked(t, &mut removed);
            }
        }
        TickResult { time_ms, samples, removed, phases, mem_reads }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cgroup::parse::{CpuQuota, IoBytes};
    use crate::sample::{
        Reading,
        rates::{page_bytes, refault_stall},
    };
    use std::{cell::RefCell, os::unix::fs::MetadataExt as _, path::Path};

    #[derive(Default)]
    struct FakeKernel(RefCell<HashMap<u64, CgroupCounters>>);
    impl Counters for FakeKernel {
        fn read(&self, id: u64) -> CgroupCounters {
            self.0.borrow().get(&id).copied().unwrap_or_default()
        }
    }

    #[test]
    fn sample_from_two_readings() {
        let prev = CgroupStats { cpu_usage_ns: Some(0), io: Some(IoBytes { read: 0, write: 0 }), ..Default::default() };
        let cur = CgroupStats {
            cpu_usage_ns: Some(100_000_000),
            cpu_quota: Some(CpuQuota { quota_us: 50_000, period_us: 100_000 }),
            mem_charged: Some(1000),
            mem_inactive_file: Some(100),
            io: Some(IoBytes { read: 0, write: 2_000_000 }),
            ..Default::default()
        };
        let kernel =
            CgroupCounters { cpu_ns: 98_000_000, disk_write_bytes: 1_000_000, net_tx_bytes: 200, ..Default::default() };
        let input = |kernel_sees, disk_source| SampleInput {
            time_ms: 5,
            interval: Duration::from_millis(200),
            kernel,
            prev: &prev,
            cur: &cur,
            kernel_sees,
            disk_source,
        };
        let zero = Totals::default();
        let s = build_sample(&input(true, DiskSource::Auto), &zero);
        assert_eq!(s.resources.cpu, Reading { usage: Some(490), current: Some(500) });
        assert_eq!(s.signals.cpu_cgroupfs, Some(500));
        assert_eq!(s.resources.mem.usage, Some(900));
        assert_eq!(s.resources.disk_write.usage, Some(10_000_000), "auto takes the larger (cgroupfs saw writeback)");
        assert_eq!(s.resources.net_tx.usage, Some(1000));
        assert_eq!((s.totals.cpu_usec, s.totals.disk_write_bytes, s.totals.net_tx_bytes), (98_000, 2_000_000, 200));
        let e = build_sample(&input(true, DiskSource::Ebpf), &zero);
        assert_eq!(e.resources.disk_write.usage, Some(5_000_000));
        let v1_only = build_sample(&input(false, DiskSource::Auto), &zero);
        assert_eq!(v1_only.resources.cpu.usage, Some(500), "not in v2: cgroupfs CPU");
        assert_eq!(v1_only.resources.net_tx.usage, None);
    }

    #[test]
    fn counters_read_after_a_gap_are_spread_over_it() {
        let t0 = Instant::now();
        let prev = CgroupStats {
            cpu_throttled_ns: Some(0),
            cpu_nr_throttled: Some(0),
            signals_at: Some(t0),
            ..Default::default()
        };
        // A quiet container read again a second later: 100 ms throttled in
        // 10 periods over that second, not in the last 200 ms tick.
        let cur = CgroupStats {
            cpu_throttled_ns: Some(100_000_000),
            cpu_nr_throttled: Some(10),
            signals_at: Some(t0 + Duration::from_secs(1)),
            ..Default::default()
        };
        let input = SampleInput {
            time_ms: 0,
            interval: Duration::from_millis(200),
            kernel: CgroupCounters::default(),
            prev: &prev,
            cur: &cur,
            kernel_sees: true,
            disk_source: DiskSource::Auto,
        };
        let s = build_sample(&input, &Totals::default());
        assert_eq!((s.signals.cpu_throttled_usec, s.signals.cpu_nr_throttled), (Some(20_000), Some(2)));
        // Read every tick: all of it is this tick's.
        let cur = CgroupStats { signals_at: Some(t0 + Duration::from_millis(200)), ..cur };
        let s = build_sample(&SampleInput { cur: &cur, ..input }, &Totals::default());
        assert_eq!((s.signals.cpu_throttled_usec, s.signals.cpu_nr_throttled), (Some(100_000), Some(10)));
    }

    #[test]
    fn refaults_take_their_share_of_the_io_stall() {
        let psi = |us: u64| {
            let mut p = crate::cgroup::parse::Psi::default();
            p.some.total_us = us;
            p
        };
        let prev = CgroupStats {
            io: Some(IoBytes { read: 0, write: 0 }),
            mem_refault_file: Some(100),
            psi_io: Some(psi(1_000)),
            ..Default::default()
        };
        // 250 pages refaulted out of 1,000 pages read; 80 ms of I/O stall.
        let cur = CgroupStats {
            io: Some(IoBytes { read: 1000 * page_bytes(), write: 0 }),
            mem_refault_file: Some(350),
            psi_io: Some(psi(81_000)),
            ..Default::default()
        };
        let input = SampleInput {
            time_ms: 5,
            interval: Duration::from_millis(1000),
            kernel: CgroupCounters::default(),
            prev: &prev,
            cur: &cur,
            kernel_sees: true,
            disk_source: DiskSource::Auto,
        };
        let s = build_sample(&input, &Totals::default()).signals;
        assert_eq!(
            (s.mem_refault_bytes, s.io_stall_usec, s.mem_refault_stall_usec),
            (Some(250 * page_bytes()), Some(80_000), Some(20_000))
        );
        assert_eq!(refault_stall(0, Some(5), 9), 0, "no refaults, no share");
        assert_eq!(refault_stall(10, None, 9), 9, "reads not counted: all of it");
        assert_eq!(refault_stall(10, Some(4), 9), 9, "at most all of it");
        let unknown = CgroupStats { mem_refault_file: None, ..cur.clone() };
        let s = build_sample(&SampleInput { cur: &unknown, ..input }, &Totals::default()).signals;
        assert_eq!((s.mem_refault_bytes, s.mem_refault_stall_usec), (None, None));
    }

    #[test]
    fn disk_sources_combine_on_totals_without_double_counting() {
        // The same 1 MB seen by eBPF in one tick and by cgroupfs in the next.
        let s0 = CgroupStats { io: Some(IoBytes::default()), ..Default::default() };
        let s1 = CgroupStats { io: Some(IoBytes { read: 0, write: 1_000_000 }), ..Default::default() };
        let input = |kernel: CgroupCounters, prev, cur| SampleInput {
            time_ms: 0,
            interval: Duration::from_secs(1),
            kernel,
            prev,
            cur,
            kernel_sees: true,
            disk_source: DiskSource::Auto,
        };
        let mb = CgroupCounters { disk_write_bytes: 1_000_000, ..Default::default() };
        let a = build_sample(&input(mb, &s0, &s0), &Totals::default());
        let b = build_sample(&input(CgroupCounters::default(), &s0, &s1), &a.totals);
        assert_eq!(a.resources.disk_write.usage, Some(1_000_000));
        assert_eq!(b.resources.disk_write.usage, Some(0));
        assert_eq!(b.totals.disk_write_bytes, 1_000_000);
    }

    #[test]
    fn fake_tree_discovered_sampled_and_dropped_when_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lxc.payload.a");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 0\n").unwrap();
        let mut cfg = Config::default();
        // Memory read every tick, so the removal is seen at the next one
        // (by default a watched container's files are read once a second,
        // and on a real host the kernel's cgroup_rmdir starts a rescan).
        cfg.agent.watched_memory_read_ms = cfg.agent.tick_ms;
        let mut s = Sampler::new(Layout::pure_v2(tmp.path()), &cfg);
        let k = FakeKernel::default();
        let r = s.tick(&k, &Managed::default());
        assert_eq!(r.samples.len(), 1);
        assert!(r.samples[0].1.is_none(), "first tick is a baseline");
        let ids = discover::subtree_ids(&dir);
        assert_eq!(ids.len(), 2);
        k.0.borrow_mut().insert(ids[1], CgroupCounters { cpu_ns: 50_000_000, ..Default::default() });
        std::thread::sleep(Duration::from_millis(20));
        let r = s.tick(&k, &Managed::default());
        let sample = r.samples[0].1.unwrap();
        assert!(sample.resources.cpu.usage.unwrap() > 0);
        std::fs::remove_dir_all(&dir).unwrap();
        let r = s.tick(&k, &Managed::default());
        assert!(r.samples.is_empty());
        assert_eq!(r.removed, vec!["a".to_string()]);
    }

    #[test]
    fn managed_containers_show_kept_limits_between_full_readings() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lxc.payload.a");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 0\n").unwrap();
        std::fs::write(dir.join("cpu.max"), "50000 100000\n").unwrap();
        let mut cfg = Config::default();
        cfg.agent.managed_full_read_ms = 3 * cfg.agent.tick_ms;
        let mut s = Sampler::new(Layout::pure_v2(tmp.path()), &cfg);
        let managed = Managed {
            subscribed: [("a".into(), "/lxc.payload.a".into())].into(),
            generation: 1,
            limits: HashMap::from([("/lxc.payload.a".to_string(), vec![(policies::Resource::Cpu, Some(300))])]),
        };
        let k = FakeKernel::default();
        let cpu_current = |r: &TickResult| r.samples[0].1.unwrap().resources.cpu.current;
        assert!(s.tick(&k, &managed).samples[0].1.is_none(), "a baseline");
        // Tick 2 reads signals only: the limit shown is the one scaler keeps.
        assert_eq!(cpu_current(&s.tick(&k, &managed)), Some(300));
        // Tick 3 reads everything: what is in force (here set by someone else).
        assert_eq!(cpu_current(&s.tick(&k, &managed)), Some(500));
    }

    #[test]
    fn read_periods_under_a_slow_tick_are_every_tick() {
        let mut c = Config::default();
        c.agent.tick_ms = 5_000;
        c.agent.discovery_interval_ms = 5_000;
        c.validate().unwrap();
        let s = Sampler::new(Layout::pure_v2("/nonexistent"), &c);
        assert_eq!(s.read_periods(), (1, 1, 1), "watched memory, watched full, managed full: every tick");
        let s = Sampler::new(Layout::pure_v2("/nonexistent"), &Config::default());
        assert_eq!(s.read_periods(), (5, 25, 5), "at 200 ms: 1 s, 5 s, 1 s");
    }

    /// A kernel double that also counts cgroup events.
    struct EventKernel(std::cell::Cell<CgroupEvents>);
    impl Counters for EventKernel {
        fn read(&self, _: u64) -> CgroupCounters {
            CgroupCounters::default()
        }
        fn cgroup_events(&self) -> Option<CgroupEvents> {
            Some(self.0.get())
        }
    }

    #[test]
    fn with_kernel_cgroup_events_discovery_walks_the_trees_only_when_they_change() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("lxc.payload.a")).unwrap();
        let cfg = Config::default();
        let mut s = Sampler::new(Layout::pure_v2(tmp.path()), &cfg);
        let k = EventKernel(std::cell::Cell::new(CgroupEvents { tree: 7, attach: 0 }));
        assert_eq!(s.tick(&k, &Managed::default()).samples.len(), 1);
        assert_eq!(s.scans(), 1);
        // Past the discovery interval, nothing changed: no walk; a new
        // container the kernel did not report is not seen yet.
        std::fs::create_dir_all(tmp.path().join("lxc.payload.b")).unwrap();
        s.last_scan = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(s.tick(&k, &Managed::default()).samples.len(), 1);
        assert_eq!(s.scans(), 1);
        // Tasks moving do not matter on a pure v2 host.
        k.0.set(CgroupEvents { tree: 7, attach: 3 });
        s.tick(&k, &Managed::default());
        assert_eq!(s.scans(), 1);
        // A mkdir reported: walked at the next tick.
        k.0.set(CgroupEvents { tree: 8, attach: 3 });
        assert_eq!(s.tick(&k, &Managed::default()).samples.len(), 2);
        assert_eq!(s.scans(), 2);
        // And at least every rescan interval.
        s.last_scan = Some(Instant::now() - Duration::from_millis(cfg.agent.rescan_interval_ms));
        s.tick(&k, &Managed::default());
        assert_eq!(s.scans(), 3);
        // Without kernel events, every discovery interval as before.
        s.last_scan = Some(Instant::now() - Duration::from_secs(2));
        s.tick(&FakeKernel::default(), &Managed::default());
        assert_eq!(s.scans(), 4);
    }

    #[test]
    fn sock_owners_map_every_cgroup_to_its_innermost_container() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("lxc.payload.a");
        let b = tmp.path().join("lxc.payload.b");
        for d in [a.join("init.scope"), a.join("inner/x"), b.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut s = Sampler::new(Layout::pure_v2(tmp.path()), &Config::default());
        // A container nested in another (discovery stops at the outer one;
        // a subscription names the inner one).
        let managed = Managed {
            subscribed: [("inner".into(), "/lxc.payload.a/inner".into())].into(),
            generation: 1,
            ..Managed::default()
        };
        let k = FakeKernel::default();
        assert_eq!(s.scans(), 0);
        s.tick(&k, &managed);
        assert_eq!(s.scans(), 1);
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let owners = s.sock_owners();
        assert_eq!(owners.len(), 5, "{owners:?}");
        assert_eq!(owners[&ino(&a)], ino(&a));
        assert_eq!(owners[&ino(&a.join("init.scope"))], ino(&a));
        // Nested: the inner container owns its subtree.
        assert_eq!(owners[&ino(&a.join("inner"))], ino(&a.join("inner")));
        assert_eq!(owners[&ino(&a.join("inner/x"))], ino(&a.join("inner")));
        assert_eq!(owners[&ino(&b)], ino(&b));
        let b_id = ino(&b);
        std::fs::remove_dir_all(&b).unwrap();
        s.rescan_soon();
        s.tick(&k, &managed);
        assert_eq!(s.scans(), 2);
        assert!(!s.sock_owners().values().any(|&c| c == b_id), "a removed container owns nothing");
    }
}
