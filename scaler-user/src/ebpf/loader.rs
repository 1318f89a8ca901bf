//! Loads `scaler-ebpf`, attaches its programs and reads the counter map.

use std::{os::fd::OwnedFd, path::Path};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{MapData, PerCpuHashMap},
};
use scaler_common::{
    CGROUP_EVENT_ATTACH, CGROUP_EVENT_TREE, CgroupCounters, GLOBAL_BIO_OFFSETS, GLOBAL_MEMCG_OFFSETS,
    MAP_CGROUP_EVENTS, MAP_COUNTERS, MAP_MEM_EVENTS, MAP_MEM_WATCH, MAP_NET_LEVELS, MAP_NET_LIMITS, MAP_SOCK_OWNERS,
    MEM_WATCH_MAX_ENTRIES, SOCK_OWNERS_MAX_ENTRIES,
};
use tracing::{debug, info, warn};

pub use super::attach::chain;
use super::attach::{attach_all, attach_btf_tp, attach_cpu_clock, attach_net, offsets};

/// The compiled programs, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scaler"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {0} missing from the object")]
    NoMap(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("reading kernel BTF: {0}")]
    Btf(#[source] aya::BtfError),
    #[error("opening cgroup v2 root {path}: {source}")]
    CgroupRoot {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listing online CPUs: {0}")]
    Cpus(#[source] std::io::Error),
}

/// Options for [`Kernel::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Path to the kernel's BTF.
    pub btf_path: std::path::PathBuf,
    /// CPU-clock flushes of the running slice per second per CPU (0 = only
    /// at context switches).
    pub cpu_flush_hz: u64,
    /// Also attach `sched_switch_floor`, an empty program on the same
    /// tracepoint, to measure the floor under `sched_switch`'s cost.
    pub floor: bool,
    /// Root of the hierarchy holding the memory controller: memory charge
    /// then comes from a cgroup iterator in one read per tick (`None`:
    /// from each container's cgroupfs file).
    pub memcg_root: Option<std::path::PathBuf>,
    /// Most cgroups the walk may visit per container it serves.
    pub memcg_max_visits: u64,
}

/// Counts of cgroup lifecycle events (see [`Kernel::cgroup_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupEvents {
    /// Directories made or removed, in any hierarchy.
    pub tree: u64,
    /// Tasks moved between cgroups.
    pub attach: u64,
}

/// Run statistics of one program (`kernel.bpf_stats_enabled`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramStat {
    pub name: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// The loaded, attached programs and the counter map.
pub struct Kernel {
    bpf: Ebpf,
    counters: PerCpuHashMap<MapData, u64, CgroupCounters>,
    /// The counter map read whole at the start of a tick when that is
    /// cheaper than a lookup per cgroup ([`Kernel::refresh_counters`]).
    snapshot: super::batch::CounterSnapshot,
    /// Which counters are live: a program that failed to attach leaves its
    /// counters at zero and user space falls back to cgroupfs.
    pub disk_enabled: bool,
    pub net_enabled: bool,
    pub mem_events_enabled: bool,
    stats_fd: Option<OwnedFd>,
    /// Which container each tracked cgroup belongs to, for TCP pacing
    /// (`None` when network accounting is off), and what was written to it.
    sock_owners: Option<aya::maps::HashMap<MapData, u64, u64>>,
    sock_owners_written: std::collections::HashMap<u64, u64>,
    /// Cgroups whose memory pressure wakes the agent, and the ring buffer
    /// the kernel sends their ids on (`None` when memory events are off).
    mem_watch: Option<(aya::maps::HashMap<MapData, u64, u64>, aya::maps::RingBuf<MapData>)>,
    mem_watch_written: std::collections::HashSet<u64>,
    /// Counts of cgroup directories made or removed and of tasks moved
    /// (`None` when the lifecycle tracepoints could not be attached).
    cgroup_events: Option<aya::maps::Array<MapData, u64>>,
    /// Every memory cgroup's charge in one read (`None`: read from
    /// cgroupfs), and whether it was read this tick.
    memcg: Option<super::memiter::MemcgIter>,
    memcg_fresh: bool,
}

const PROGRAMS: [&str; 13] = [
    "sched_switch",
    "sched_switch_floor",
    "cpu_clock",
    "net_ingress",
    "net_egress",
    "tcp_pacing",
    "block_bio_queue",
    "memcg_reclaim",
    "mark_victim",
    "cgroup_mkdir",
    "cgroup_rmdir",
    "cgroup_attach_task",
    "memcg_usage",
];

impl Kernel {
    /// Loads every program and attaches it. CPU accounting is required;
    /// disk, network and memory events degrade to cgroupfs with a warning.
    pub fn load(cgroup_v2_root: &Path, opts: &LoadOptions) -> Result<Self, LoadError> {
        let (offsets, memcg_offsets) = offsets(&opts.btf_path);
        let mut bpf = EbpfLoader::new()
            .override_global(GLOBAL_BIO_OFFSETS, &offsets, true)
            .override_global(GLOBAL_MEMCG_OFFSETS, &memcg_offsets, true)
            .load(OBJECT)
            .map_err(LoadError::Object)?;
        let btf = aya::Btf::parse_file(&opts.btf_path, aya::Endianness::default()).map_err(LoadError::Btf)?;

        attach_btf_tp(&mut bpf, &btf, "sched_switch", "sched_switch")?;
        if opts.floor
            && let Err(e) = attach_btf_tp(&mut bpf, &btf, "sched_switch_floor", "sched_switch")
        {
            warn!("the empty sched_switch program (bpf_stats_floor) was not attached: {}", chain(&e));
        }
        if opts.cpu_flush_hz > 0 {
            attach_cpu_clock(&mut bpf, opts.cpu_flush_hz)?;
        }
        let net_enabled = match attach_net(&mut bpf, cgroup_v2_root) {
            Ok(()) => true,
            Err(e) => {
                warn!("network accounting disabled: {}", chain(&e));
                false
            }
        };
        let disk_enabled = if offsets.valid == 1 {
            attach_btf_tp(&mut bpf, &btf, "block_bio_queue", "block_bio_queue")
                .map_err(|e| warn!("eBPF disk accounting disabled: {}", chain(&e)))
                .is_ok()
        } else {
            warn!("struct bio offsets not found in BTF: eBPF disk accounting disabled, cgroupfs I/O stats only");
            false
        };
        let mem_events_enabled = attach_all(
            &mut bpf,
            &btf,
            &[("memcg_reclaim", "mm_vmscan_memcg_reclaim_begin"), ("mark_victim", "mark_victim")],
            "memory events",
        );

        let lifecycle = attach_all(
            &mut bpf,
            &btf,
            &[
                ("cgroup_mkdir", "cgroup_mkdir"),
                ("cgroup_rmdir", "cgroup_rmdir"),
                ("cgroup_attach_task", "cgroup_attach_task"),
            ],
            "cgroup events (discovery rescans every interval)",
        );
        let cgroup_events = if lifecycle {
            let map = bpf.take_map(MAP_CGROUP_EVENTS).ok_or(LoadError::NoMap(MAP_CGROUP_EVENTS))?;
            Some(aya::maps::Array::try_from(map).map_err(|source| LoadError::Map { name: MAP_CGROUP_EVENTS, source })?)
        } else {
            None
        };
        let map = bpf.take_map(MAP_COUNTERS).ok_or(LoadError::NoMap(MAP_COUNTERS))?;
        let counters = PerCpuHashMap::try_from(map).map_err(|source| LoadError::Map { name: MAP_COUNTERS, source })?;
        let sock_owners = if net_enabled {
            let map = bpf.take_map(MAP_SOCK_OWNERS).ok_or(LoadError::NoMap(MAP_SOCK_OWNERS))?;
            Some(aya::maps::HashMap::try_from(map).map_err(|source| LoadError::Map { name: MAP_SOCK_OWNERS, source })?)
        } else {
            None
        };
        let mem_watch = if mem_events_enabled {
            let watch = bpf.take_map(MAP_MEM_WATCH).ok_or(LoadError::NoMap(MAP_MEM_WATCH))?;
            let watch =
                aya::maps::HashMap::try_from(watch).map_err(|source| LoadError::Map { name: MAP_MEM_WATCH, source })?;
            let ring = bpf.take_map(MAP_MEM_EVENTS).ok_or(LoadError::NoMap(MAP_MEM_EVENTS))?;
            let ring =
                aya::maps::RingBuf::try_from(ring).map_err(|source| LoadError::Map { name: MAP_MEM_EVENTS, source })?;
            Some((watch, ring))
        } else {
            None
        };
        let memcg = match &opts.memcg_root {
            Some(root) if memcg_offsets.valid == 1 => {
                super::memiter::MemcgIter::attach(&mut bpf, &btf, root, opts.memcg_max_visits)
                    .map_err(|e| warn!("memory charge from the kernel disabled, read from cgroupfs: {e}"))
                    .ok()
            }
            Some(_) => {
                warn!("memory cgroup offsets not found in BTF: memory charge read from cgroupfs");
                None
            }
            None => None,
        };
        info!(
            net_enabled,
            disk_enabled,
            mem_events_enabled,
            cgroup_events = lifecycle,
            memory_from_kernel = memcg.is_some(),
            "eBPF programs attached"
        );
        Ok(Self {
            bpf,
            counters,
            snapshot: super::batch::CounterSnapshot::new(aya::util::nr_cpus().ok()),
            disk_enabled,
            net_enabled,
            mem_events_enabled,
            stats_fd: None,
            sock_owners,
            sock_owners_written: std::collections::HashMap::new(),
            mem_watch,
            mem_watch_written: std::collections::HashSet::new(),
            cgroup_events,
            memcg,
            memcg_fresh: false,
        })
    }

    /// How many cgroup directories were made or removed and how many tasks
    /// moved between cgroups since the programs were attached (`None` when
    /// the kernel side cannot tell).
    pub fn cgroup_events(&self) -> Option<CgroupEvents> {
        let map = self.cgroup_events.as_ref()?;
        Some(CgroupEvents {
            tree: map.get(&CGROUP_EVENT_TREE, 0).ok()?,
            attach: map.get(&CGROUP_EVENT_ATTACH, 0).ok()?,
        })
    }

    /// Makes `MEM_WATCH` hold exactly `want` (cgroup v2 ids), writing only
    /// what changed.
    pub fn sync_mem_watch(&mut self, want: &std::collections::HashSet<u64>) {
        let Some((map, _)) = self.mem_watch.as_mut() else { return };
        let gone: Vec<u64> = self.mem_watch_written.difference(want).copied().collect();
        for k in gone {
            let _ = map.remove(&k);
            self.mem_watch_written.remove(&k);
        }
        for &k in want {
            if self.mem_watch_written.len() >= MEM_WATCH_MAX_ENTRIES as usize {
                warn!("MEM_WATCH is full ({MEM_WATCH_MAX_ENTRIES} cgroups): some containers' memory waits a tick");
                break;
            }
            if !self.mem_watch_written.contains(&k) && map.insert(k, 0, 0).is_ok() {
                self.mem_watch_written.insert(k);
            }
        }
    }

    /// Waits at most `timeout` for watched cgroups to press on their memory
    /// limit; returns their ids (empty on timeout, or at once when memory
    /// events are off: then it just sleeps).
    pub fn wait_mem_events(&mut self, timeout: std::time::Duration) -> Vec<u64> {
        let Some((_, ring)) = self.mem_watch.as_mut() else {
            std::thread::sleep(timeout);
            return Vec::new();
        };
        fn drain(ring: &mut aya::maps::RingBuf<MapData>, ids: &mut Vec<u64>) {
            while let Some(item) = ring.next() {
                if let Ok(b) = <[u8; 8]>::try_from(&item[..]) {
                    ids.push(u64::from_ne_bytes(b));
                }
            }
        }
        let mut ids = Vec::new();
        drain(ring, &mut ids);
        if ids.is_empty() {
            use std::os::fd::AsRawFd as _;
            let mut pfd = libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // To the nanosecond: a timeout in whole milliseconds rounds the
            // last one down to zero, and the caller's loop would spin
            // through it (measured: 0.4 % of a core for an idle agent).
            let ts = libc::timespec {
                tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
            };
            // SAFETY: one valid pollfd for the ring buffer we own, a valid
            // timespec, no signal mask.
            let _ = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            drain(ring, &mut ids);
        }
        ids
    }

    /// Reads every cgroup's counters at once (a few syscalls for the whole
    /// map) when this tick reads `batch_from` ids or more (`ids_wanted`);
    /// [`Kernel::read`] then answers from this reading.
    pub fn refresh_counters(&mut self, ids_wanted: usize, batch_from: usize) {
        let fd = std::os::fd::AsFd::as_fd(aya::maps::IterableMap::map(&self.counters).fd());
        self.snapshot.refresh(fd, ids_wanted, batch_from);
        self.memcg_fresh = false;
    }

    /// Reads every memory cgroup's charge now, for this tick's
    /// [`Kernel::memory_charged`] (until the next
    /// [`Kernel::refresh_counters`]). False when that is off or failed.
    pub fn refresh_memory(&mut self) -> bool {
        let Some(memcg) = self.memcg.as_mut() else { return false };
        self.memcg_fresh = memcg.refresh().unwrap_or_else(|e| {
            debug!("reading the memory cgroup iterator: {e}");
            false
        });
        self.memcg_fresh
    }

    /// Makes the cgroup iterator write the charge of exactly the memory
    /// cgroups in `want` (directory inode -> path).
    pub fn sync_memcg_want(&mut self, want: &std::collections::HashMap<u64, std::path::PathBuf>) {
        if let Some(m) = self.memcg.as_mut() {
            m.sync_want(want);
        }
    }

    /// Memory cgroups the iterator's last walk visited.
    pub fn memcg_walk_visited(&self) -> Option<u64> {
        self.memcg.as_ref().map(|m| m.visited)
    }

    /// Memory charged comes from the cgroup iterator.
    pub fn memory_from_kernel(&self) -> bool {
        self.memcg.is_some()
    }

    /// Bytes charged to the memory cgroup whose directory (in the memory
    /// controller's hierarchy) has inode `ino`, as this tick's
    /// [`Kernel::refresh_memory`] read it; `None` when it did not, or the
    /// cgroup was not there (then the caller reads cgroupfs).
    pub fn memory_charged(&self, ino: u64) -> Option<u64> {
        self.memcg.as_ref().filter(|_| self.memcg_fresh)?.charged(ino)
    }

    /// Deletes the counters of cgroups no tracked container has held for
    /// the last two prunings (at least 9 s apart, after rescans): the kernel side counts
    /// every cgroup, and removed ones would otherwise stay until the map
    /// (16,384 entries) evicts them. A cgroup that runs again is counted
    /// again from zero. `tracked`: every cgroup id of every tracked
    /// container.
    pub fn prune_counters<'a>(&mut self, tracked: impl Iterator<Item = &'a u64>) {
        let tracked: std::collections::HashSet<u64> = tracked.copied().collect();
        let fd = std::os::fd::AsFd::as_fd(aya::maps::IterableMap::map(&self.counters).fd());
        for id in self.snapshot.prune(fd, &tracked) {
            let _ = self.counters.remove(&id);
        }
    }

    /// Cgroups in the counter map at the last whole read.
    pub fn counter_entries(&self) -> Option<usize> {
        self.snapshot.entries()
    }

    /// When the counters [`Kernel::read`] returns were read (`None`: at the
    /// call itself).
    pub fn counters_at(&self) -> Option<std::time::Instant> {
        self.snapshot.taken_at()
    }

    /// Counters of one cgroup id summed over CPUs; zero if the kernel has
    /// seen nothing for it yet.
    pub fn read(&self, cgroup_id: u64) -> CgroupCounters {
        if let Some(c) = self.snapshot.get(cgroup_id) {
            return c;
        }
        let mut sum = CgroupCounters::default();
        if let Ok(values) = self.counters.get(&cgroup_id, 0) {
            for v in values.iter() {
                sum = sum.wrapping_add(*v);
            }
        }
        sum
    }

    /// Makes `SOCK_OWNERS` say `want` (cgroup v2 id -> container v2 id),
    /// writing only what changed. Entries beyond the map's capacity are left
    /// out (their sockets are then only policed).
    pub fn sync_sock_owners(&mut self, want: &std::collections::HashMap<u64, u64>) {
        let Some(map) = self.sock_owners.as_mut() else { return };
        let gone: Vec<u64> = self.sock_owners_written.keys().filter(|k| !want.contains_key(k)).copied().collect();
        for k in gone {
            let _ = map.remove(&k);
            self.sock_owners_written.remove(&k);
        }
        for (&cgroup, &container) in want {
            if self.sock_owners_written.get(&cgroup) == Some(&container) {
                continue;
            }
            if self.sock_owners_written.len() >= SOCK_OWNERS_MAX_ENTRIES as usize
                && !self.sock_owners_written.contains_key(&cgroup)
            {
                warn!(
                    "SOCK_OWNERS is full ({SOCK_OWNERS_MAX_ENTRIES} cgroups): some containers' sockets are policed, not paced"
                );
                break;
            }
            match map.insert(cgroup, container, 0) {
                Ok(()) => {
                    self.sock_owners_written.insert(cgroup, container);
                }
                Err(e) => {
                    warn!("updating SOCK_OWNERS: {e}");
                    break;
                }
            }
        }
    }

    /// Takes the rate-limiter maps out (once). `None` if network accounting
    /// is off or they were taken already.
    pub fn take_net_limiter(&mut self, layout: crate::cgroup::layout::Layout) -> Option<super::netlimit::NetLimiter> {
        if !self.net_enabled {
            return None;
        }
        let limits = aya::maps::HashMap::try_from(self.bpf.take_map(MAP_NET_LIMITS)?).ok()?;
        let levels = aya::maps::Array::try_from(self.bpf.take_map(MAP_NET_LEVELS)?).ok()?;
        Some(super::netlimit::NetLimiter::new(limits, levels, layout))
    }

    /// Turns on run-time statistics (`run_cnt`, `run_time_ns`) for as long
    /// as this `Kernel` lives (they cost a clock read per event).
    pub fn enable_stats(&mut self) -> Result<(), std::io::Error> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.stats_fd = Some(fd);
        Ok(())
    }

    /// Run statistics of every loaded program.
    pub fn program_stats(&self) -> Vec<ProgramStat> {
        PROGRAMS
            .iter()
            .filter_map(|name| {
                let info = self.bpf.program(name)?.info().ok()?;
                Some(ProgramStat {
                    name: (*name).to_owned(),
                    run_count: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                })
            })
            .collect()
    }
}

const _: fn() = || {
    fn pod<T: Pod>() {}
    pod::<CgroupCounters>();
};
