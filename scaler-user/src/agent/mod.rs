//! The agent process: the sampler thread and the HTTP server around shared
//! state.
mod build;
mod counters;
mod quiet;
pub mod sampler;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use policies::Resource;

use anyhow::Context as _;
use tracing::{error, info};

use crate::{
    cgroup::layout::Layout,
    config::Config,
    ebpf::{Kernel, loader::LoadOptions, preflight},
    host,
    http::AppState,
    manage::{Manager, actuator::HostActuator, settings::AgentSettings, store::Store},
    published::{KernelFeatures, Shared},
    sample::Sample,
};

use self::sampler::{Managed, Sampler};

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Host capacity per resource: the config's values, else what the host has
/// (CPU and memory), else not limited.
fn capacity(cfg: &Config) -> BTreeMap<Resource, Option<u64>> {
    let h = &cfg.host;
    BTreeMap::from([
        (Resource::Cpu, Some(h.cpu.unwrap_or_else(host::cpu_capacity))),
        (Resource::Mem, h.mem.or_else(host::mem_capacity)),
        (Resource::DiskRead, h.disk_read),
        (Resource::DiskWrite, h.disk_write),
        (Resource::NetRx, h.net_rx),
        (Resource::NetTx, h.net_tx),
    ])
}

/// Starts the agent and serves until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    preflight::check(&cfg.agent.btf_path)?;
    let tls = cfg.agent.tls().load().map_err(anyhow::Error::msg)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let layout = Layout::detect()?;
    scaler_api::process::raise_fd_limit();
    // The state first: a damaged file stops the agent before it attaches
    // anything (one line, the file left as found).
    let store = Store::open(&cfg.agent.state_dir)?;
    let mut kernel = Kernel::load(
        &layout.v2,
        &LoadOptions {
            btf_path: cfg.agent.btf_path.clone(),
            cpu_flush_hz: cfg.agent.cpu_flush_hz,
            floor: cfg.agent.bpf_stats && cfg.agent.bpf_stats_floor,
            memcg_root: cfg.agent.memory_from_kernel.then(|| layout.memory_root()),
            memcg_max_visits: cfg.agent.memory_walk_max_visits,
        },
    )?;
    if cfg.agent.bpf_stats
        && let Err(e) = kernel.enable_stats()
    {
        tracing::warn!("bpf_stats: {e}");
    }
    let engine_sync = crate::engine::sync::EngineSync::new(cfg.engines.clone(), host::mem_capacity().unwrap_or(0));
    let engine_worker = engine_sync.spawn();
    let actuator = HostActuator {
        layout: layout.clone(),
        disk: host::root_disk(),
        net: kernel.take_net_limiter(layout.clone()),
        waiting: Default::default(),
        cpu_burst_pct: cfg.agent.cpu_burst_pct,
        no_burst: Default::default(),
        engines: Some(engine_sync.clone()),
    };
    let manager = Manager::open(
        store,
        Box::new(actuator),
        capacity(&cfg),
        cfg.agent.cgroup_roots.clone(),
        cfg.agent.default_policy.clone(),
    )?
    .with_settings(AgentSettings {
        tick_ms: cfg.agent.tick_ms,
        discovery_interval_ms: cfg.agent.discovery_interval_ms,
        active: true,
    })?
    .with_memory_wait(cfg.agent.memory_wait)
    .with_topology(crate::topology::Topology::host(), cfg.agent.cpu_placement)
    .with_own_cgroups(
        std::fs::read_to_string("/proc/self/cgroup")
            .map(|t| crate::cgroup::parse::proc_cgroup_paths(&t))
            .unwrap_or_default(),
    );
    let restored = manager.tracked().len();
    let manager = Arc::new(Mutex::new(manager));
    let shared = Arc::new(Shared {
        host: cfg.agent.hostname.clone().unwrap_or_else(hostname),
        tick_ms: AtomicU64::new(cfg.agent.tick_ms),
        history_len: cfg.agent.history_len,
        started: Instant::now(),
        layout: if layout.is_hybrid() { "hybrid" } else { "v2" },
        kernel: KernelFeatures {
            cpu: true,
            net: kernel.net_enabled,
            disk: kernel.disk_enabled,
            mem_events: kernel.mem_events_enabled,
            mem_charged: kernel.memory_from_kernel(),
        },
        inner: RwLock::new(Default::default()),
    });

    let listener = tokio::net::TcpListener::bind(cfg.agent.listen)
        .await
        .with_context(|| format!("binding {}", cfg.agent.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, layout = shared.layout, tick_ms = cfg.agent.tick_ms, subscriptions = restored, state_dir = %cfg.agent.state_dir.display(), "scaler agent listening on {scheme}://{addr}");

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (shared, stop, manager) = (shared.clone(), stop.clone(), manager.clone());
        let mut sampler = Sampler::new(layout.clone(), &cfg).with_engine_sync(engine_sync.clone());
        let timing = Timing { batch_from: cfg.agent.counter_batch_from };
        std::thread::Builder::new().name("sampler".into()).spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| {
                sample_loop(&mut sampler, &mut kernel, &manager, &shared, timing, &stop);
            });
            let result = std::panic::catch_unwind(run);
            sampler.release_mirrors();
            if result.is_err() {
                // Never a silent stop: a dead sampler scales nothing.
                error!("the sampler thread panicked (message above); exiting for the supervisor to restart the agent");
                {
                    let mut m = manager.lock().unwrap_or_else(PoisonError::into_inner);
                    m.release_waits();
                    m.flush_events();
                }
                std::process::exit(70);
            }
            drop(kernel); // detaches the programs
        })?
    };

    let app = crate::http::router(AppState {
        shared: shared.clone(),
        manager: manager.clone(),
        layout,
        token: cfg.agent.token.clone(),
        power_model: cfg.energy.clone(),
    });
    let stop_http = stop.clone();
    scaler_api::serve::serve(listener, app, cfg.agent.http_limits(), tls, async move {
        scaler_api::process::shutdown_signal().await;
        stop_http.store(true, Ordering::SeqCst);
    })
    .await?;
    stop.store(true, Ordering::SeqCst);
    if sampler.join().is_err() {
        error!("sampler thread panicked");
    }
    // With the agent gone nothing raises a waiting memory limit: back to
    // OOM kills until it runs again.
    {
        let mut m = manager.lock().unwrap_or_else(PoisonError::into_inner);
        m.release_waits();
        m.flush_events();
    }
    // What the engines have not been told yet goes now, so their view (and
    // their restarts) keep what is in force.
    engine_sync.flush(Duration::from_secs(3));
    engine_sync.stop();
    if let Some(w) = engine_worker {
        let _ = w.join();
    }
    info!("scaler agent stopped");
    Ok(())
}

/// Whole-host CPU (from `/proc/stat`) and RAPL power over the last second
/// (at least one tick): `/proc/stat` counts in 10 ms jiffies, so over a
/// 200 ms tick one jiffy is 50 millicores of noise, and the aggregator's
/// energy attribution, which divides by this figure, would swing with it.
struct HostMeter {
    /// Readings of the last second and one older: (when, busy, total, RAPL µJ).
    readings: std::collections::VecDeque<HostReading>,
    proc_stat: crate::kfile::Reread,
    rapl: host::Rapl,
    /// Online CPUs x 1000, looked up once a minute (not every tick).
    capacity: (Instant, u64),
}

impl Default for HostMeter {
    fn default() -> Self {
        HostMeter {
            readings: Default::default(),
            proc_stat: crate::kfile::Reread::open("/proc/stat"),
            rapl: host::Rapl::find(),
            capacity: (Instant::now(), host::cpu_capacity()),
        }
    }
}

/// When, `/proc/stat` (busy, total) jiffies, RAPL µJ.
type HostReading = (Instant, Option<(u64, u64)>, Option<u64>);

/// How far back the host figures look.
const HOST_WINDOW: Duration = Duration::from_secs(1);

impl HostMeter {
    fn read(&mut self) -> (Option<u64>, Option<u64>) {
        let stat = self.proc_stat.read().and_then(host::parse_proc_stat);
        let energy = self.rapl.energy_uj();
        let now = Instant::now();
        if now.duration_since(self.capacity.0) >= Duration::from_secs(60) {
            self.capacity = (now, host::cpu_capacity());
        }
        self.push(now, stat, energy)
    }

    fn push(&mut self, now: Instant, stat: Option<(u64, u64)>, energy: Option<u64>) -> (Option<u64>, Option<u64>) {
        // Keep one reading at least HOST_WINDOW old, and everything newer.
        while self.readings.len() >= 2 && now.duration_since(self.readings[1].0) >= HOST_WINDOW {
            self.readings.pop_front();
        }
        let (t0, stat0, e0) = self.readings.front().copied().unwrap_or((now, None, None));
        self.readings.push_back((now, stat, energy));
        let cpu = stat0.zip(stat).map(|(p, c)| host::host_cpu_millicores(p, c, self.capacity.1));
        let us = now.duration_since(t0).as_micros() as u64;
        // µJ / µs = W; x1000 = mW. A wrapped counter gives no reading.
        let mw = e0.zip(energy).and_then(|(e0, e1)| (us > 0 && e1 >= e0).then(|| (e1 - e0) * 1000 / us));
        (cpu, mw)
    }
}

/// The sampling loop's fixed settings (the tick is the manager's, changed
/// at run time).
#[derive(Clone, Copy)]
struct Timing {
    /// `agent.counter_batch_from`.
    batch_from: usize,
}

fn sample_loop(
    sampler: &mut Sampler,
    kernel: &mut Kernel,
    manager: &Mutex<Manager>,
    shared: &Shared,
    Timing { batch_from }: Timing,
    stop: &AtomicBool,
) {
    let mut next = Instant::now();
    let mut tick = Duration::ZERO;
    // The (tick, discovery interval) the sampler was last given.
    let mut timing: Option<(u64, u64)> = None;
    let mut managed = Managed::default();
    let mut meter = HostMeter::default();
    let mut ticks: u64 = 0;
    let mut scans = 0;
    // Recreated containers a subscription could not follow (said once).
    let mut refused_moves: std::collections::HashSet<(String, String)> = Default::default();
    // The cgroups whose memory pressure wakes this loop, and the discovery
    // scans when MEM_WATCH was last written (`u64::MAX`: never).
    let mut watched: Vec<String> = Vec::new();
    let mut mem_watch_scans = u64::MAX;
    // The manager's save count when `managed.limits` and `watched` were
    // taken from the subscriptions (`None`: never).
    let mut saves_seen: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        ticks += 1;
        let start = Instant::now();
        {
            let m = manager.lock().unwrap_or_else(PoisonError::into_inner);
            let fresh = m.generation != managed.generation;
            if fresh {
                managed.generation = m.generation;
                managed.subscribed = m.tracked().into_iter().collect();
            }
            // What the sampler takes from the subscriptions, again only
            // when one of them was saved (every change to one is).
            let saves = m.saves();
            if fresh || saves_seen != Some(saves) {
                saves_seen = Some(saves);
                m.fill_known_limits(&mut managed.limits, fresh);
                if m.memory_watched_into(&mut watched) {
                    mem_watch_scans = u64::MAX;
                }
            }
            // Timing changed through `PUT /v1/agent` applies from this tick.
            let set = m.settings();
            if timing != Some((set.tick_ms, set.discovery_interval_ms)) {
                timing = Some((set.tick_ms, set.discovery_interval_ms));
                tick = Duration::from_millis(set.tick_ms);
                sampler.set_timing(set.tick_ms, set.discovery_interval_ms);
                shared.tick_ms.store(set.tick_ms, Ordering::Relaxed);
            }
        }
        let t_maps = Instant::now();
        kernel.refresh_counters(sampler.id_count(), batch_from);
        let maps_ns = crate::published::ns(t_maps.elapsed());
        let t_memcg = Instant::now();
        if sampler.reads_memory_next(&managed) {
            kernel.refresh_memory();
        }
        let memcg_ns = crate::published::ns(t_memcg.elapsed());
        let result = sampler.tick(&*kernel, &managed);
        let mem_reads = result.mem_reads;
        let mut phases = result.phases;
        phases.maps_ns += maps_ns;
        phases.memcg_ns += memcg_ns;
        let t = Instant::now();
        if sampler.scans() != scans {
            scans = sampler.scans();
            let owners = sampler.sock_owners();
            kernel.sync_sock_owners(&owners);
            kernel.prune_counters(owners.keys());
            kernel.sync_memcg_want(&sampler.mem_dirs());
        }
        // The cgroups whose memory pressure should wake this loop at once
        // (the kernel's map written again only when they changed).
        if scans != mem_watch_scans {
            let want: std::collections::HashSet<u64> =
                watched.iter().flat_map(|cg| sampler.ids_of(cg).iter().copied()).collect();
            kernel.sync_mem_watch(&want);
            mem_watch_scans = scans;
        }
        // The manager's step looks up its subscribed containers only, at
        // their own cgroups.
        let subscribed = &managed.subscribed;
        let samples: HashMap<&str, &Sample> = result
            .samples
            .iter()
            .filter(|(d, _)| subscribed.get(d.name.as_str()) == Some(&d.cgroup))
            .filter_map(|(d, s)| Some((d.name.as_str(), s.as_ref()?)))
            .collect();
        // A container of the same engine under a subscribed name at another
        // cgroup: the subscribed one was removed and made again (a new id).
        // (Another engine's container of that name is not it.)
        let recreated: Vec<(String, String)> = result
            .samples
            .iter()
            .filter(|(d, _)| {
                let Some(old) = subscribed.get(d.name.as_str()) else { return false };
                old != &d.cgroup
                    && d.engine.is_some()
                    && d.engine.as_ref().and_then(|e| crate::engine::Engine::named(&e.engine))
                        == crate::cgroup::discover::engine_of_path(old)
            })
            .map(|(d, _)| (d.name.clone(), d.cgroup.clone()))
            .filter(|pair| !refused_moves.contains(pair))
            .collect();
        if !recreated.is_empty() {
            let mut m = manager.lock().unwrap_or_else(PoisonError::into_inner);
            for (name, cgroup) in recreated {
                if let Err(e) = m.follow_recreated(scaler_api::now_ms(), &name, &cgroup) {
                    tracing::warn!(container = %name, %cgroup, "not following the recreated container: {e}");
                    refused_moves.insert((name, cgroup));
                }
            }
        }
        let sampled_ms = result.time_ms;
        let t2 = Instant::now();
        phases.sync_ns = crate::published::ns(t2.duration_since(t));
        // Decisions are made at the time the counters were read, so a
        // recorded run replays exactly (see `policies::planner`).
        manager.lock().unwrap_or_else(PoisonError::into_inner).step(sampled_ms, &samples);
        let t3 = Instant::now();
        phases.manage_ns = crate::published::ns(t3.duration_since(t2));
        let (host_cpu, rapl_mw) = meter.read();
        // `time_ms` is when the counters were read, not when the tick ended
        // (a slow tick, e.g. a durable write, must not skew rates computed
        // by readers across ticks).
        shared.publish(sampled_ms, start.elapsed().as_micros() as u64, result.samples, &result.removed);
        {
            let mut g = shared.write();
            g.host_cpu = host_cpu;
            g.rapl_mw = rapl_mw;
            phases.publish_ns = crate::published::ns(t3.elapsed());
            g.phases.add(&phases);
            g.mem_reads_kernel += mem_reads.0;
            g.mem_reads_file += mem_reads.1;
            g.memcg_walk_visited = kernel.memcg_walk_visited();
        }
        // Program statistics every 25 ticks (5 s at the default tick).
        if ticks.is_multiple_of(25) || ticks == 1 {
            let stats = kernel.program_stats();
            let mut g = shared.write();
            g.programs = stats;
            g.engine_calls = sampler.engine_stats();
            g.counter_entries = kernel.counter_entries();
        }
        next += tick;
        let now = Instant::now();
        if next < now {
            // Fell behind (a slow tick): start again from now rather than
            // running a burst of ticks.
            next = now;
        }
        // Sleep until the next tick, or tick early when a watched container
        // presses on its memory limit (at most every EARLY_TICK): memory
        // that grows faster than a tick gets its raise in milliseconds.
        loop {
            let now = Instant::now();
            let Some(left) = next.checked_duration_since(now).filter(|d| !d.is_zero()) else { break };
            // In slices, so that a stop is heard within one even under a
            // long tick (up to a minute, set at run time).
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if !kernel.wait_mem_events(left.min(STOP_CHECK)).is_empty() {
                let early = (start + EARLY_TICK).max(Instant::now());
                if early < next {
                    std::thread::sleep(early - Instant::now().min(early));
                    next = early;
                }
                break;
            }
        }
    }
}

/// The shortest gap between a tick and an early one (memory pressure).
const EARLY_TICK: Duration = Duration::from_millis(20);

/// The longest the loop sleeps without looking at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_figures_cover_the_last_second_not_the_last_tick() {
        let mut m = HostMeter::default();
        let t = Instant::now();
        let cap = m.capacity.1;
        assert_eq!(m.push(t, Some((0, 0)), Some(0)), (None, None));
        // Ticks of 200 ms: 100 busy of 200 jiffies each, 10 J per tick.
        let mut out = (None, None);
        for i in 1..=10u64 {
            let busy = if i == 10 { 100 * i + 20 } else { 100 * i };
            out = m.push(t + Duration::from_millis(200 * i), Some((busy, 200 * i)), Some(10_000_000 * i));
        }
        // The last tick alone would say 60 % busy; the last second says 52 %.
        assert_eq!(out.0, Some(cap * 520 / 1000));
        assert_eq!(out.1, Some(50_000), "10 J per 200 ms = 50 W");
        assert_eq!(m.readings.len(), 6, "one reading a second old and the five after it");
    }
}
