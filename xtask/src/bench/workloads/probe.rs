//! The bench's own view of each container: cgroupfs read every 200 ms by a
//! thread of the bench (not by the agent under test), on cgroup v2 or v1.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::super::harness::{v1_root, v2_root};

/// How often the probe reads.
pub const PERIOD: Duration = Duration::from_millis(200);

/// One reading of one container, rates over the interval before `t_ms`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Point {
    /// Since the run started, ms.
    pub t_ms: u64,
    /// CPU used over the interval, millicores.
    pub cpu: u64,
    /// CPU limit in force, millicores (`None` = unlimited).
    pub cpu_limit: Option<u64>,
    /// Time throttled over the interval, µs.
    pub throttled_us: u64,
    /// Working set: charged memory minus inactive file cache, bytes.
    pub ws: u64,
    /// Memory limit in force (`None` = unlimited).
    pub mem_limit: Option<u64>,
    /// OOM kills since the cgroup was created.
    pub oom_kills: u64,
}

/// Where one container's files are.
struct Files {
    v2: PathBuf,
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn single(p: &Path) -> Option<u64> {
    read(p)?.trim().parse().ok()
}

fn keyed(p: &Path, key: &str) -> Option<u64> {
    read(p)?.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Cumulative counters and levels at one instant.
#[derive(Default, Clone, Copy)]
struct Raw {
    cpu_ns: u64,
    throttled_ns: u64,
    cpu_limit: Option<u64>,
    ws: u64,
    mem_limit: Option<u64>,
    oom_kills: u64,
}

/// Limits this large mean "none" (v1 writes 2^63 rounded to a page).
const UNLIMITED: u64 = 1 << 60;

impl Files {
    fn new(rel: &str) -> Self {
        let rel = rel.trim_start_matches('/');
        let v1 = |c: &str| v1_root(c).map(|r| r.join(rel));
        Files {
            v2: v2_root().map(|r| r.join(rel)).unwrap_or_default(),
            cpu: v1("cpu"),
            cpuacct: v1("cpuacct"),
            memory: v1("memory"),
        }
    }

    fn read(&self) -> Raw {
        let mut r = Raw::default();
        let v2 = &self.v2;
        // CPU: v2 cpu.stat when it has a cpu controller, else v1.
        if v2.join("cpu.max").exists() {
            r.cpu_ns = keyed(&v2.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000;
            r.throttled_ns = keyed(&v2.join("cpu.stat"), "throttled_usec").unwrap_or(0) * 1000;
            r.cpu_limit = read(&v2.join("cpu.max")).and_then(|t| {
                let mut f = t.split_whitespace();
                let quota: u64 = f.next()?.parse().ok()?;
                let period: u64 = f.next()?.parse().ok()?;
                Some(quota * 1000 / period.max(1))
            });
        } else {
            if let Some(d) = &self.cpuacct {
                r.cpu_ns = single(&d.join("cpuacct.usage")).unwrap_or(0);
            }
            if let Some(d) = &self.cpu {
                r.throttled_ns = keyed(&d.join("cpu.stat"), "throttled_time").unwrap_or(0);
                let quota = read(&d.join("cpu.cfs_quota_us")).and_then(|t| t.trim().parse::<i64>().ok());
                let period = single(&d.join("cpu.cfs_period_us")).unwrap_or(100_000).max(1);
                r.cpu_limit = quota.filter(|&q| q > 0).map(|q| q as u64 * 1000 / period);
            }
        }
        if v2.join("memory.current").exists() {
            let charged = single(&v2.join("memory.current")).unwrap_or(0);
            r.ws = charged.saturating_sub(keyed(&v2.join("memory.stat"), "inactive_file").unwrap_or(0));
            r.mem_limit = read(&v2.join("memory.max")).and_then(|t| t.trim().parse().ok());
            r.oom_kills = keyed(&v2.join("memory.events"), "oom_kill").unwrap_or(0);
        } else if let Some(d) = &self.memory {
            let charged = single(&d.join("memory.usage_in_bytes")).unwrap_or(0);
            r.ws = charged.saturating_sub(keyed(&d.join("memory.stat"), "total_inactive_file").unwrap_or(0));
            r.mem_limit = single(&d.join("memory.limit_in_bytes"));
            r.oom_kills = keyed(&d.join("memory.oom_control"), "oom_kill").unwrap_or(0);
        }
        r.mem_limit = r.mem_limit.filter(|&l| l < UNLIMITED);
        r
    }
}

/// A thread reading every container's files until stopped.
pub struct Probe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Vec<Point>>>,
}

impl Probe {
    /// Starts reading the cgroups `rels` (paths relative to the hierarchy
    /// roots); time 0 is `start`.
    pub fn start(rels: &[String], start: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let files: Vec<Files> = rels.iter().map(|r| Files::new(r)).collect();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out: Vec<Vec<Point>> = vec![Vec::new(); files.len()];
            let mut prev: Vec<(Instant, Raw)> = files.iter().map(|f| (Instant::now(), f.read())).collect();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                next += PERIOD;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                for (i, f) in files.iter().enumerate() {
                    let (at, raw) = (Instant::now(), f.read());
                    let (p_at, p) = prev[i];
                    let ns = at.duration_since(p_at).as_nanos().max(1) as u64;
                    out[i].push(Point {
                        t_ms: at.duration_since(start).as_millis() as u64,
                        cpu: raw.cpu_ns.saturating_sub(p.cpu_ns).saturating_mul(1000) / ns,
                        cpu_limit: raw.cpu_limit,
                        throttled_us: raw.throttled_ns.saturating_sub(p.throttled_ns) / 1000,
                        ws: raw.ws,
                        mem_limit: raw.mem_limit,
                        oom_kills: raw.oom_kills,
                    });
                    prev[i] = (at, raw);
                }
            }
            out
        });
        Probe { stop, handle }
    }

    /// Stops and returns the points of each cgroup, in the order given.
    pub fn finish(self) -> Vec<Vec<Point>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}
