//! Reads one container's cgroupfs files each tick, on v2 and on v1.
//!
//! Files stay open and are re-read with `pread` at offset 0 (kernfs
//! regenerates the content), so a tick costs one syscall per file instead of
//! three. A file that does not exist is remembered as absent until
//! [`CgroupReader::forget_absent`] (called on each discovery scan). For each
//! value the v2 file is tried first, then the v1 one: on a hybrid host the v2
//! directory has only `cpu.stat` usage and PSI, the rest comes from v1.

use std::{collections::HashMap, fs::File, os::unix::fs::FileExt, path::PathBuf};

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
    pub mem_limit: Option<u64>,
    pub oom_kills: Option<u64>,
    pub io: Option<IoBytes>,
    pub io_limits: IoLimits,
    pub psi_cpu: Option<Psi>,
    pub psi_mem: Option<Psi>,
    pub psi_io: Option<Psi>,
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

pub struct CgroupReader {
    rel: String,
    v2_dir: PathBuf,
    v1_dirs: Vec<(&'static str, PathBuf)>,
    files: HashMap<(Hier, &'static str), Option<File>>,
    buf: Vec<u8>,
    vanished: bool,
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
            files: HashMap::new(),
            buf: Vec::with_capacity(4096),
            vanished: false,
        }
    }

    /// Forget which files were missing, so they are looked for again.
    pub fn forget_absent(&mut self) {
        self.files.retain(|_, f| f.is_some());
    }

    fn dir(&self, h: Hier) -> Option<PathBuf> {
        match h {
            Hier::V2 => Some(self.v2_dir.clone()),
            Hier::V1(ctl) => self.v1_dirs.iter().find(|(c, _)| *c == ctl).map(|(_, d)| d.clone()),
        }
    }

    /// Content of a file, or `None` if this layout does not have it.
    fn read(&mut self, h: Hier, name: &'static str) -> Option<&str> {
        let key = (h, name);
        if !self.files.contains_key(&key) {
            let file = self.dir(h).and_then(|d| File::open(d.join(name)).ok());
            self.files.insert(key, file);
        }
        let file = self.files.get(&key)?.as_ref()?;
        self.buf.clear();
        self.buf.resize(self.buf.capacity().max(4096), 0);
        let mut len = 0;
        loop {
            match file.read_at(&mut self.buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len == self.buf.len() {
                        self.buf.resize(len * 2, 0);
                    }
                }
                Err(_) => {
                    // ENODEV and friends: the cgroup was removed under us.
                    self.files.remove(&key);
                    self.vanished = true;
                    return None;
                }
            }
        }
        self.buf.truncate(len);
        std::str::from_utf8(&self.buf).ok()
    }

    fn v2_then_v1<T>(
        &mut self,
        v2: &'static str,
        v1: (&'static str, &'static str),
        f: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        if let Some(v) = self.read(Hier::V2, v2).and_then(&f) {
            return Some(v);
        }
        self.read(Hier::V1(v1.0), v1.1).and_then(f)
    }

    /// Reads everything for this tick.
    pub fn read_stats(&mut self) -> Result<CgroupStats, Vanished> {
        self.vanished = false;
        let mut s = CgroupStats {
            cpu_usage_ns: self.v2_then_v1("cpu.stat", ("cpuacct", "cpuacct.usage"), |t| {
                parse::flat_keyed(t, "usage_usec").map(|us| us * 1000).or_else(|| parse::single(t))
            }),
            ..Default::default()
        };
        // v2 keeps throttling in cpu.stat only when the cpu controller is on.
        let throttle = |t: &str| {
            let ns = parse::flat_keyed(t, "throttled_usec")
                .map(|us| us * 1000)
                .or_else(|| parse::flat_keyed(t, "throttled_time"))?;
            Some((parse::flat_keyed(t, "nr_periods")?, parse::flat_keyed(t, "nr_throttled")?, ns))
        };
        if let Some((periods, throttled, ns)) = self.v2_then_v1("cpu.stat", ("cpu", "cpu.stat"), throttle) {
            (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_ns) = (Some(periods), Some(throttled), Some(ns));
        }
        s.cpu_quota = match self.read(Hier::V2, "cpu.max").map(parse::v2_cpu_max) {
            Some(q) => q,
            None => {
                let quota = self.read(Hier::V1("cpu"), "cpu.cfs_quota_us").map(str::to_owned);
                let period = self.read(Hier::V1("cpu"), "cpu.cfs_period_us");
                quota.zip(period).and_then(|(q, p)| parse::v1_cpu_quota(&q, p))
            }
        };

        let v2_mem = self.read(Hier::V2, "memory.current").and_then(parse::single);
        if v2_mem.is_some() {
            s.mem_charged = v2_mem;
            s.mem_limit = self.read(Hier::V2, "memory.max").and_then(parse::v2_max_or_value);
            s.mem_inactive_file =
                self.read(Hier::V2, "memory.stat").and_then(|t| parse::flat_keyed(t, "inactive_file"));
            s.oom_kills = self.read(Hier::V2, "memory.events").and_then(|t| parse::flat_keyed(t, "oom_kill"));
        } else {
            let m = Hier::V1("memory");
            s.mem_charged = self.read(m, "memory.usage_in_bytes").and_then(parse::single);
            s.mem_limit = self.read(m, "memory.limit_in_bytes").and_then(parse::v1_mem_limit);
            s.mem_inactive_file = self.read(m, "memory.stat").and_then(|t| parse::flat_keyed(t, "total_inactive_file"));
            s.oom_kills = self.read(m, "memory.oom_control").and_then(|t| parse::flat_keyed(t, "oom_kill"));
        }

        if let Some(io) = self.read(Hier::V2, "io.stat").map(parse::v2_io_stat) {
            s.io = Some(io);
            s.io_limits = self.read(Hier::V2, "io.max").map(parse::v2_io_max).unwrap_or_default();
        } else {
            let b = Hier::V1("blkio");
            s.io = self.read(b, "blkio.throttle.io_service_bytes_recursive").map(parse::v1_blkio_bytes);
            s.io_limits = IoLimits {
                read_bps: self.read(b, "blkio.throttle.read_bps_device").and_then(parse::v1_bps_device),
                write_bps: self.read(b, "blkio.throttle.write_bps_device").and_then(parse::v1_bps_device),
            };
        }

        s.psi_cpu = self.read(Hier::V2, "cpu.pressure").and_then(parse::psi);
        s.psi_mem = self.read(Hier::V2, "memory.pressure").and_then(parse::psi);
        s.psi_io = self.read(Hier::V2, "io.pressure").and_then(parse::psi);

        if self.vanished || !self.exists() {
            return Err(Vanished(self.rel.clone()));
        }
        Ok(s)
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
                ("memory.stat", "anon 90000000\nfile 14857600\ninactive_file 4857600\n"),
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
                ("memory.stat", "cache 100\ninactive_file 7\ntotal_inactive_file 1000000\n"),
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
        assert_eq!(s.oom_kills, Some(4));
        assert_eq!(s.io, Some(IoBytes { read: 100, write: 200 }));
        assert_eq!(s.io_limits, IoLimits { read_bps: Some(20971520), write_bps: None });
        assert_eq!(s.psi_mem.unwrap().some.total_us, 77);
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
