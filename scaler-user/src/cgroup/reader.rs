//! Reads one container's cgroupfs files each tick, on v2 and on v1.
//!
//! Files stay open and are re-read with `pread` at offset 0 (kernfs
//! regenerates the content), so a tick costs one syscall per file instead of
//! three. A file that does not exist is remembered as absent until
//! [`CgroupReader::forget_absent`] (called on each discovery scan). For each
//! value the v2 file is tried first, then the v1 one: on a hybrid host the v2
//! directory has only `cpu.stat` usage and PSI, the rest comes from v1.

use std::{fs::File, path::PathBuf};

use super::{
    layout::Layout,
    parse::{self, CpuQuota, IoBytes, IoLimits, Psi},
};

/// What the cgroupfs says about one cgroup at one instant. `None` where the
/// layout has no such file (no memory controller on the v2 side of a hybrid
/// host, PSI on old kernels).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    /// CPU time used, from cgroupfs accounting (v2 `cpu.stat` usage_usec, v1 `cpuacct.usage`).
    pub cpu_usage_ns: Option<u64>,
    pub cpu_quota: Option<CpuQuota>,
    pub cpu_nr_periods: Option<u64>,
    pub cpu_nr_throttled: Option<u64>,
    pub cpu_throttled_ns: Option<u64>,
    /// Memory charged to the cgroup (page cache included).
    pub mem_charged: Option<u64>,
    /// Reclaimable file cache inside `mem_charged`.
    pub mem_inactive_file: Option<u64>,
    /// File pages read back after the cgroup's reclaim evicted them
    /// (`workingset_refault_file`, a counter of pages).
    pub mem_refault_file: Option<u64>,
    /// The memory limit in force: v2 the lower of `memory.high` (where the
    /// agent keeps a waiting limit) and `memory.max`; v1 `limit_in_bytes`.
    pub mem_limit: Option<u64>,
    pub oom_kills: Option<u64>,
    /// v1 with the OOM killer off: tasks wait at the limit (`under_oom`).
    pub mem_waiting: Option<bool>,
    pub io: Option<IoBytes>,
    pub io_limits: IoLimits,
    pub psi_cpu: Option<Psi>,
    pub psi_mem: Option<Psi>,
    pub psi_io: Option<Psi>,
    /// Every file was read this time (limits included); false when some
    /// values are carried from an earlier reading.
    pub full: bool,
    /// When the counters a policy decides from (CPU, memory details, OOM,
    /// PSI) were read: a reading that carries them keeps the older time.
    pub signals_at: Option<std::time::Instant>,
}

impl CgroupStats {
    /// The working set: charged memory minus inactive file cache (what the
    /// container cannot give back without swapping; what kubelet calls the
    /// working set). Falls back to the charged total.
    pub fn mem_working_set(&self) -> Option<u64> {
        self.mem_charged.map(|c| c.saturating_sub(self.mem_inactive_file.unwrap_or(0)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Hier {
    V2,
    V1(&'static str),
}

/// The container's directory is gone (stopped, removed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cgroup {0} vanished")]
pub struct Vanished(pub String);

/// How much of a cgroup to read this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every file: limits, throttling, memory details, I/O, PSI.
    Full,
    /// What a policy decides from each tick: CPU usage and throttling,
    /// memory charged, its statistics (working set, refaults) and OOM
    /// state, memory and I/O pressure. Limits, I/O bytes and limits and CPU
    /// pressure keep their last full reading (`CgroupStats::full` is then
    /// false).
    Signals,
    /// Memory usage only; everything else keeps its last full reading.
    /// (CPU, network and disk usage come from the eBPF counters anyway.)
    Usage,
    /// No file: the last reading again (a removed cgroup is noticed at the
    /// next read that is not `Carry`, or by discovery).
    Carry,
}

pub struct CgroupReader {
    rel: String,
    /// The last full reading, carried into `Depth::Usage` ticks.
    last: Option<CgroupStats>,
    v2_dir: PathBuf,
    v1_dirs: Vec<(&'static str, PathBuf)>,
    /// Open handles, or `None` when the file does not exist in this layout.
    /// A short list searched linearly: a dozen entries, no hashing per read.
    files: Vec<(Hier, &'static str, Option<File>)>,
    /// Read buffer, grown as needed and never cleared (only `len` bytes of
    /// it are valid after a read).
    buf: Vec<u8>,
    /// Real cgroupfs: reads of a removed cgroup fail, so no directory check
    /// is needed on quick ticks.
    kernfs: bool,
    vanished: bool,
    /// Inode of the directory holding the memory files (in the memory
    /// controller's hierarchy), once found: the key of the kernel's
    /// reading of every memory cgroup's charge.
    /// (`Some(None)`: looked for and not found, until
    /// [`Self::forget_absent`].)
    mem_ino: Option<Option<u64>>,
}

impl CgroupReader {
    pub fn new(layout: &Layout, rel: &str) -> Self {
        let v1_dirs = ["cpu", "cpuacct", "memory", "blkio"]
            .into_iter()
            .filter_map(|ctl| layout.v1_dir(ctl, rel).map(|d| (ctl, d)))
            .collect();
        Self {
            rel: rel.to_owned(),
            v2_dir: layout.v2_dir(rel),
            v1_dirs,
            files: Vec::new(),
            buf: vec![0; 4096],
            kernfs: layout.kernfs,
            vanished: false,
            last: None,
            mem_ino: None,
        }
    }

    /// Forget which files were missing, so they are looked for again.
    pub fn forget_absent(&mut self) {
        self.files.retain(|(_, _, f)| f.is_some());
        if self.mem_ino == Some(None) {
            self.mem_ino = None;
        }
    }

    fn dir(&self, h: Hier) -> Option<PathBuf> {
        match h {
            Hier::V2 => Some(self.v2_dir.clone()),
            Hier::V1(ctl) => self.v1_dirs.iter().find(|(c, _)| *c == ctl).map(|(_, d)| d.clone()),
        }
    }

    /// Where `name` sits in the open files (opened, or found missing, once).
    fn slot(&mut self, h: Hier, name: &'static str) -> usize {
        match self.files.iter().position(|(fh, fname, _)| *fh == h && std::ptr::eq(*fname, name)) {
            Some(i) => i,
            None => {
                let file = self.dir(h).and_then(|d| File::open(d.join(name)).ok());
                self.files.push((h, name, file));
                self.files.len() - 1
            }
        }
    }

    /// Whether the cgroup has the file (without reading it).
    fn has_file(&mut self, h: Hier, name: &'static str) -> bool {
        let i = self.slot(h, name);
        self.files[i].2.is_some()
    }

    /// Content of a file, or `None` if this layout does not have it.
    fn read_file(&mut self, h: Hier, name: &'static str) -> Option<&str> {
        let i = self.slot(h, name);
        let file = self.files[i].2.as_ref()?;
        match crate::kfile::reread(file, &mut self.buf) {
            Ok(len) => std::str::from_utf8(&self.buf[..len]).ok(),
            Err(_) => {
                // ENODEV and friends: the cgroup was removed under us.
                self.files.remove(i);
                self.vanished = true;
                None
            }
        }
    }

    /// Inode of the directory whose memory files [`Self::mem_charged`]
    /// reads (looked up once; `None` while it cannot be found).
    pub fn mem_ino(&mut self) -> Option<u64> {
        if let Some(ino) = self.mem_ino {
            return ino;
        }
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(self.mem_dir()).ok().map(|m| m.ino());
        self.mem_ino = Some(ino);
        ino
    }

    /// The directory whose memory files [`Self::mem_charged`] reads.
    pub fn mem_dir(&self) -> PathBuf {
        self.dir(Hier::V1("memory")).unwrap_or_else(|| self.v2_dir.clone())
    }

    /// Memory charged now (v2 `memory.current`, else v1 `memory.usage_in_bytes`).
    fn mem_charged(&mut self) -> Option<u64> {
        self.read_file(Hier::V2, "memory.current")
            .and_then(parse::single)
            .or_else(|| self.read_file(Hier::V1("memory"), "memory.usage_in_bytes").and_then(parse::single))
    }

    /// Reads this tick, to `depth` (the first reading is always full).
    pub fn read(&mut self, depth: Depth) -> Result<CgroupStats, Vanished> {
        self.read_with(depth, None)
    }

    /// As [`Self::read`], with the memory charged already known (read from
    /// the kernel for every cgroup at once): a `Usage` reading then reads
    /// no file.
    pub fn read_with(&mut self, depth: Depth, charged: Option<u64>) -> Result<CgroupStats, Vanished> {
        if depth == Depth::Carry
            && let Some(last) = &self.last
        {
            return Ok(CgroupStats { full: false, ..last.clone() });
        }
        if depth == Depth::Signals
            && let Some(last) = &self.last
        {
            let mut s = last.clone();
            self.vanished = false;
            self.read_signals(&mut s, charged);
            if self.vanished || (!self.kernfs && !self.exists()) {
                return Err(Vanished(self.rel.clone()));
            }
            s.full = false;
            self.last = Some(s.clone());
            return Ok(s);
        }
        if depth != Depth::Full
            && let Some(last) = &self.last
        {
            self.vanished = false;
            let mut s = last.clone();
            s.full = false;
            s.mem_charged = charged.or_else(|| self.mem_charged());
            if let Some(l) = &mut self.last {
                l.mem_charged = s.mem_charged;
            }
            // kernfs fails reads of a removed cgroup; other trees (tests)
            // keep serving open files, so look at the directory too.
            if self.vanished || (!self.kernfs && !self.exists()) {
                return Err(Vanished(self.rel.clone()));
            }
            return Ok(s);
        }
        let s = self.read_stats_with(charged)?;
        self.last = Some(s.clone());
        Ok(s)
    }

    /// Reads every file.
    pub fn read_stats(&mut self) -> Result<CgroupStats, Vanished> {
        self.read_stats_with(None)
    }

    /// As [`Self::read_stats`], with the memory charged already known.
    fn read_stats_with(&mut self, charged: Option<u64>) -> Result<CgroupStats, Vanished> {
        self.vanished = false;
        let mut s = CgroupStats { full: true, ..Default::default() };
        self.read_signals(&mut s, charged);
        self.read_limits(&mut s);
        if let Some(io) = self.read_file(Hier::V2, "io.stat").map(parse::v2_io_stat) {
            s.io = Some(io);
            s.io_limits = self.read_file(Hier::V2, "io.max").map(parse::v2_io_max).unwrap_or_default();
        } else {
            let b = Hier::V1("blkio");
            s.io = self.read_file(b, "blkio.throttle.io_service_bytes_recursive").map(parse::v1_blkio_bytes);
            s.io_limits = IoLimits {
                read_bps: self.read_file(b, "blkio.throttle.read_bps_device").and_then(parse::v1_bps_device),
                write_bps: self.read_file(b, "blkio.throttle.write_bps_device").and_then(parse::v1_bps_device),
            };
        }
        s.psi_cpu = self.read_file(Hier::V2, "cpu.pressure").and_then(parse::psi);

        // kernfs fails reads of a removed cgroup, so once files are open a
        // failed read says it; the first reading (and other trees) look at
        // the directory.
        if self.vanished || ((!self.kernfs || self.last.is_none()) && !self.exists()) {
            return Err(Vanished(self.rel.clone()));
        }
        Ok(s)
    }

    /// What `Depth::Signals` reads, into `s`.
    fn read_signals(&mut self, s: &mut CgroupStats, charged: Option<u64>) {
        s.signals_at = Some(std::time::Instant::now());
        // One read of v2 `cpu.stat` for usage and, where the cpu controller
        // is on, throttling; else v1 `cpuacct.usage` and `cpu.stat`.
        let usage = |t: &str| parse::flat_keyed(t, "usage_usec").map(|us| us * 1000);
        let throttle = |t: &str| {
            let ns = parse::flat_keyed(t, "throttled_usec")
                .map(|us| us * 1000)
                .or_else(|| parse::flat_keyed(t, "throttled_time"))?;
            Some((parse::flat_keyed(t, "nr_periods")?, parse::flat_keyed(t, "nr_throttled")?, ns))
        };
        let v2 = self.read_file(Hier::V2, "cpu.stat").map(|t| (usage(t), throttle(t)));
        let (v2_usage, v2_throttle) = v2.unwrap_or((None, None));
        s.cpu_usage_ns =
            v2_usage.or_else(|| self.read_file(Hier::V1("cpuacct"), "cpuacct.usage").and_then(parse::single));
        let throttled = v2_throttle.or_else(|| self.read_file(Hier::V1("cpu"), "cpu.stat").and_then(throttle));
        (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_ns) = match throttled {
            Some((p, t, ns)) => (Some(p), Some(t), Some(ns)),
            None => (None, None, None),
        };

        // The memory charged, unless the kernel's walk gave it this tick.
        s.mem_charged = charged.or_else(|| self.mem_charged());
        if self.has_file(Hier::V2, "memory.current") {
            if let Some(t) = self.read_file(Hier::V2, "memory.stat") {
                s.mem_inactive_file = parse::flat_keyed(t, "inactive_file");
                s.mem_refault_file = parse::flat_keyed(t, "workingset_refault_file");
            }
            s.oom_kills = self.read_file(Hier::V2, "memory.events").and_then(|t| parse::flat_keyed(t, "oom_kill"));
        } else {
            let m = Hier::V1("memory");
            if let Some(t) = self.read_file(m, "memory.stat") {
                s.mem_inactive_file = parse::flat_keyed(t, "total_inactive_file");
                s.mem_refault_file = parse::flat_keyed(t, "total_workingset_refault_file");
            }
            if let Some(t) = self.read_file(m, "memory.oom_control") {
                s.oom_kills = parse::flat_keyed(t, "oom_kill");
                s.mem_waiting = parse::flat_keyed(t, "under_oom").map(|v| v > 0);
            }
        }
        s.psi_mem = self.read_file(Hier::V2, "memory.pressure").and_then(parse::psi);
        s.psi_io = self.read_file(Hier::V2, "io.pressure").and_then(parse::psi);
    }

    /// The CPU and memory limits in force, into `s`.
    fn read_limits(&mut self, s: &mut CgroupStats) {
        s.cpu_quota = match self.read_file(Hier::V2, "cpu.max").map(parse::v2_cpu_max) {
            Some(q) => q,
            None => {
                let quota = self.read_file(Hier::V1("cpu"), "cpu.cfs_quota_us").map(str::to_owned);
                let period = self.read_file(Hier::V1("cpu"), "cpu.cfs_period_us");
                quota.zip(period).and_then(|(q, p)| parse::v1_cpu_quota(&q, p))
            }
        };
        s.mem_limit = match self.read_file(Hier::V2, "memory.max").map(parse::v2_max_or_value) {
            Some(max) => {
                let high = self.read_file(Hier::V2, "memory.high").and_then(parse::v2_max_or_value);
                match (high, max) {
                    (Some(h), Some(m)) => Some(h.min(m)),
                    (h, m) => h.or(m),
                }
            }
            None => self.read_file(Hier::V1("memory"), "memory.limit_in_bytes").and_then(parse::v1_mem_limit),
        };
    }

    /// The container still has a directory in some hierarchy.
    pub fn exists(&self) -> bool {
        self.v2_dir.is_dir() || self.v1_dirs.iter().any(|(_, d)| d.is_dir())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (n, c) in files {
            std::fs::write(dir.join(n), c).unwrap();
        }
    }

    #[test]
    fn pure_v2_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lxc.payload.a");
        write(
            &dir,
            &[
                (
                    "cpu.stat",
                    "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 40\nnr_throttled 7\nthrottled_usec 350\n",
                ),
                ("cpu.max", "50000 100000\n"),
                ("memory.current", "104857600\n"),
                ("memory.max", "268435456\n"),
                ("memory.stat", "anon 90000000\nfile 14857600\ninactive_file 4857600\nworkingset_refault_file 42\n"),
                ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
                ("io.stat", "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"),
                ("io.max", "254:0 rbps=max wbps=1048576 riops=max wiops=max\n"),
                (
                    "cpu.pressure",
                    "some avg10=12.50 avg60=0 avg300=0 total=900\nfull avg10=0 avg60=0 avg300=0 total=100\n",
                ),
                (
                    "memory.pressure",
                    "some avg10=0.00 avg60=0 avg300=0 total=5\nfull avg10=0 avg60=0 avg300=0 total=1\n",
                ),
            ],
        );
        let mut r = CgroupReader::new(&Layout::pure_v2(tmp.path()), "/lxc.payload.a");
        let s = r.read_stats().unwrap();
        assert_eq!(s.cpu_usage_ns, Some(2_000_000));
        assert_eq!(s.cpu_quota.unwrap().millicores(), 500);
        assert_eq!((s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_ns), (Some(40), Some(7), Some(350_000)));
        assert_eq!(s.mem_charged, Some(104857600));
        assert_eq!(s.mem_working_set(), Some(100000000));
        assert_eq!(s.mem_refault_file, Some(42));
        assert_eq!(s.mem_limit, Some(268435456));
        assert_eq!(s.oom_kills, Some(1));
        assert_eq!(s.io, Some(IoBytes { read: 4096, write: 8192 }));
        assert_eq!(s.io_limits, IoLimits { read_bps: None, write_bps: Some(1048576) });
        assert_eq!(s.psi_cpu.unwrap().some.total_us, 900);
        assert_eq!(s.psi_io, None);

        // Values change between ticks and are re-read through the same handles.
        std::fs::write(dir.join("memory.current"), "209715200\n").unwrap();
        std::fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
        let s = r.read_stats().unwrap();
        assert_eq!(s.mem_charged, Some(209715200));
        assert_eq!(s.cpu_quota, None);
    }

    #[test]
    fn hybrid_tree_takes_usage_and_psi_from_v2_and_the_rest_from_v1() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let rel = "lxc.payload.b";
        write(
            &root.join("unified").join(rel),
            &[
                ("cpu.stat", "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\n"),
                (
                    "memory.pressure",
                    "some avg10=0.00 avg60=0 avg300=0 total=77\nfull avg10=0 avg60=0 avg300=0 total=1\n",
                ),
            ],
        );
        write(
            &root.join("cpu").join(rel),
            &[
                ("cpu.cfs_quota_us", "150000\n"),
                ("cpu.cfs_period_us", "100000\n"),
                ("cpu.stat", "nr_periods 10\nnr_throttled 2\nthrottled_time 123000\n"),
            ],
        );
        write(
            &root.join("memory").join(rel),
            &[
                ("memory.usage_in_bytes", "50000000\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                (
                    "memory.stat",
                    "cache 100\ninactive_file 7\nworkingset_refault_file 1\ntotal_inactive_file 1000000\ntotal_workingset_refault_file 9\n",
                ),
                ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"),
            ],
        );
        write(
            &root.join("blkio").join(rel),
            &[
                (
                    "blkio.throttle.io_service_bytes_recursive",
                    "254:0 Read 100\n254:0 Write 200\n254:0 Total 300\nTotal 300\n",
                ),
                ("blkio.throttle.read_bps_device", "254:0 20971520\n"),
                ("blkio.throttle.write_bps_device", ""),
            ],
        );
        let layout = Layout {
            kernfs: false,
            v2: root.join("unified"),
            v1: ["cpu", "memory", "blkio"].iter().map(|c| (c.to_string(), root.join(c))).collect(),
        };
        let mut r = CgroupReader::new(&layout, rel);
        let s = r.read_stats().unwrap();
        assert_eq!(s.cpu_usage_ns, Some(5_000_000));
        assert_eq!(s.cpu_quota.unwrap().millicores(), 1500);
        assert_eq!(s.cpu_throttled_ns, Some(123000));
        assert_eq!(s.mem_charged, Some(50000000));
        assert_eq!(s.mem_limit, None);
        assert_eq!(s.mem_working_set(), Some(49000000));
        assert_eq!(s.mem_refault_file, Some(9), "v1: the hierarchical count");
        assert_eq!(s.oom_kills, Some(4));
        assert_eq!(s.io, Some(IoBytes { read: 100, write: 200 }));
        assert_eq!(s.io_limits, IoLimits { read_bps: Some(20971520), write_bps: None });
        assert_eq!(s.psi_mem.unwrap().some.total_us, 77);
    }

    #[test]
    fn usage_ticks_reread_memory_and_carry_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        write(&dir, &[("memory.current", "100\n"), ("memory.max", "1000\n"), ("cpu.max", "50000 100000\n")]);
        let mut r = CgroupReader::new(&Layout::pure_v2(tmp.path()), "c");
        let first = r.read(Depth::Usage).unwrap();
        assert_eq!((first.mem_charged, first.mem_limit), (Some(100), Some(1000)), "the first reading is full");
        std::fs::write(dir.join("memory.current"), "200\n").unwrap();
        std::fs::write(dir.join("memory.max"), "2000\n").unwrap();
        let quick = r.read(Depth::Usage).unwrap();
        assert_eq!((quick.mem_charged, quick.mem_limit), (Some(200), Some(1000)), "limit carried");
        std::fs::write(dir.join("memory.current"), "300\n").unwrap();
        let carried = r.read(Depth::Carry).unwrap();
        assert_eq!(carried.mem_charged, Some(200), "carry reads no file and keeps the last memory reading");
        let full = r.read(Depth::Full).unwrap();
        assert_eq!((full.mem_charged, full.mem_limit), (Some(300), Some(2000)));
        assert!(full.full && !carried.full && !quick.full);
        // With the charge known from the kernel: no file at all.
        std::fs::write(dir.join("memory.current"), "400\n").unwrap();
        let known = r.read_with(Depth::Usage, Some(500)).unwrap();
        assert_eq!((known.mem_charged, known.mem_limit), (Some(500), Some(2000)));
    }

    #[test]
    fn signal_ticks_reread_what_policies_decide_from_and_carry_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        write(
            &dir,
            &[
                ("cpu.stat", "usage_usec 10\nnr_periods 1\nnr_throttled 0\nthrottled_usec 0\n"),
                ("cpu.max", "50000 100000\n"),
                ("memory.current", "100\n"),
                ("memory.max", "1000\n"),
                ("memory.stat", "inactive_file 10\nworkingset_refault_file 1\n"),
            ],
        );
        let mut r = CgroupReader::new(&Layout::pure_v2(tmp.path()), "c");
        assert!(r.read(Depth::Full).unwrap().full);
        std::fs::write(dir.join("cpu.stat"), "usage_usec 20\nnr_periods 2\nnr_throttled 1\nthrottled_usec 7\n")
            .unwrap();
        std::fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "300\n").unwrap();
        std::fs::write(dir.join("memory.max"), "2000\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "inactive_file 50\nworkingset_refault_file 9\n").unwrap();
        let s = r.read(Depth::Signals).unwrap();
        assert!(!s.full);
        assert_eq!((s.cpu_usage_ns, s.cpu_throttled_ns, s.cpu_nr_throttled), (Some(20_000), Some(7_000), Some(1)));
        assert_eq!((s.mem_charged, s.mem_inactive_file, s.mem_refault_file), (Some(300), Some(50), Some(9)));
        assert_eq!(s.mem_limit, Some(1000), "limits carried");
        assert_eq!(s.cpu_quota.map(|q| q.quota_us), Some(50_000));
        let f = r.read(Depth::Full).unwrap();
        assert!(f.full);
        assert_eq!((f.mem_limit, f.cpu_quota), (Some(2000), None));
    }

    #[test]
    fn the_first_reading_is_full_whatever_the_depth() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("c"), &[("memory.current", "100\n"), ("memory.max", "1000\n")]);
        let mut r = CgroupReader::new(&Layout::pure_v2(tmp.path()), "c");
        let first = r.read(Depth::Carry).unwrap();
        assert_eq!((first.mem_charged, first.mem_limit), (Some(100), Some(1000)));
    }

    #[test]
    fn a_removed_cgroup_is_reported_vanished() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("gone");
        write(&dir, &[("cpu.stat", "usage_usec 1\n")]);
        let mut r = CgroupReader::new(&Layout::pure_v2(tmp.path()), "gone");
        assert!(r.read_stats().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(r.read_stats(), Err(Vanished("gone".into())));
    }
}
