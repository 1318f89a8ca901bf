//! Writes limits into cgroupfs through cgroups-rs, on v2 (`cpu.max`,
//! `memory.max`, `io.max`) or v1 (`cpu.cfs_quota_us`, `memory.limit_in_bytes`,
//! `blkio.throttle.*_bps_device`). The controllers are built on paths from
//! the [`Layout`], so the same code writes a fake tree in tests and either
//! layout on real hosts; for each resource the v2 file is used when the
//! cgroup has it (the controller is enabled there), else the v1 one.
//!
//! `None` removes the limit. Network rates are not cgroupfs limits: see
//! `ebpf::loader::NetLimiter`.

use std::path::PathBuf;

use cgroups_rs::fs::{blkio::BlkIoController, cpu::CpuController, memory::MemController};
use policies::Resource;

use super::layout::Layout;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cgroup {cgroup} has no {what} control file in either hierarchy")]
    NoControl { cgroup: String, what: &'static str },
    #[error("writing {resource} limit of {cgroup}: {message}")]
    Write { cgroup: String, resource: Resource, message: String },
    #[error("{resource} limits are not written to cgroupfs")]
    NotCgroupfs { resource: Resource },
}

/// A block device, `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub major: u64,
    pub minor: u64,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// Default CFS period when a cgroup reports none (the kernel's default).
const DEFAULT_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas under 1 ms.
const MIN_QUOTA_US: u64 = 1_000;

/// Quota in µs for `millicores` at `period_us`, at least the kernel minimum.
pub fn quota_us(millicores: u64, period_us: u64) -> u64 {
    (millicores.saturating_mul(period_us) / 1000).max(MIN_QUOTA_US)
}

pub struct Writer<'a> {
    layout: &'a Layout,
    /// The device disk throttles apply to.
    disk: Option<Device>,
    /// Unused CPU quota a container may bank for bursts, % of its quota
    /// (`cpu.cfs_burst_us` / `cpu.max.burst`, where the kernel has them).
    burst_pct: u64,
}

impl<'a> Writer<'a> {
    pub fn new(layout: &'a Layout, disk: Option<Device>) -> Self {
        Self { layout, disk, burst_pct: 0 }
    }

    /// The same writer, letting CPU limits bank `pct` % of their quota.
    pub fn with_burst(mut self, pct: u64) -> Self {
        self.burst_pct = pct.min(100);
        self
    }

    /// The burst file next to a quota and its value, if the kernel has one.
    fn burst_now(dir: &std::path::Path, v2: bool) -> Option<(PathBuf, u64)> {
        let file = dir.join(if v2 { "cpu.max.burst" } else { "cpu.cfs_burst_us" });
        let v = std::fs::read_to_string(&file).ok()?.trim().parse().unwrap_or(0);
        Some((file, v))
    }

    /// Sets the quota (`None`: no limit) and its burst with as few writes as
    /// possible: every write makes the kernel refill the cgroup's runtime,
    /// so needless ones would hand out CPU time beyond the limit. The
    /// kernel refuses a burst above the quota: a burst that shrinks is
    /// written before the quota, one that grows after it.
    fn quota_and_burst(
        &self,
        c: &CpuController,
        dir: &std::path::Path,
        v2: bool,
        quota: Option<u64>,
    ) -> std::io::Result<()> {
        let set_quota =
            || c.set_cfs_quota(quota.map_or(-1, |q| q as i64)).map_err(|e| std::io::Error::other(e.to_string()));
        let Some((file, now)) = Self::burst_now(dir, v2) else { return set_quota() };
        let want = quota.map_or(0, |q| q * self.burst_pct / 100);
        if want < now {
            std::fs::write(&file, want.to_string())?;
        }
        set_quota()?;
        if want > now {
            std::fs::write(&file, want.to_string())?;
        }
        Ok(())
    }

    /// The v2 directory if it has `file`, else the v1 directory of `ctl` if it has `v1_file`.
    fn pick(&self, rel: &str, file: &str, ctl: &str, v1_file: &str) -> Option<(PathBuf, bool)> {
        let v2 = self.layout.v2_dir(rel);
        if v2.join(file).exists() {
            return Some((v2, true));
        }
        self.layout.v1_dir(ctl, rel).filter(|d| d.join(v1_file).exists()).map(|d| (d, false))
    }

    fn err(rel: &str, resource: Resource, e: impl std::fmt::Display) -> WriteError {
        WriteError::Write { cgroup: rel.to_owned(), resource, message: e.to_string() }
    }

    /// The CPU (millicores) or memory (bytes) limit in force on `rel`
    /// (`Some(None)`: unlimited; `None`: unreadable).
    pub fn current(&self, rel: &str, resource: Resource) -> Option<Option<u64>> {
        use super::parse;
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        match resource {
            Resource::Cpu => match self.pick(rel, "cpu.max", "cpu", "cpu.cfs_quota_us")? {
                (d, true) => Some(parse::v2_cpu_max(&read(d.join("cpu.max"))?).map(|q| q.millicores())),
                (d, false) => {
                    let (q, p) = (read(d.join("cpu.cfs_quota_us"))?, read(d.join("cpu.cfs_period_us"))?);
                    Some(parse::v1_cpu_quota(&q, &p).map(|q| q.millicores()))
                }
            },
            Resource::Mem => match self.pick(rel, "memory.max", "memory", "memory.limit_in_bytes")? {
                (d, true) => Some(parse::v2_max_or_value(&read(d.join("memory.max"))?)),
                (d, false) => Some(parse::v1_mem_limit(&read(d.join("memory.limit_in_bytes"))?)),
            },
            _ => None,
        }
    }

    /// Sets (or with `None` removes) the limit of `resource` on cgroup `rel`.
    pub fn apply(&self, rel: &str, resource: Resource, value: Option<u64>) -> Result<(), WriteError> {
        let no = |what| WriteError::NoControl { cgroup: rel.to_owned(), what };
        match resource {
            Resource::Cpu => {
                let (dir, v2) = self.pick(rel, "cpu.max", "cpu", "cpu.cfs_quota_us").ok_or_else(|| no("cpu"))?;
                let c = CpuController::new(dir.clone(), dir.clone(), v2);
                let period = c.cfs_period().ok().filter(|&p| p > 0).unwrap_or(DEFAULT_PERIOD_US);
                let quota = value.map(|m| quota_us(m, period));
                self.quota_and_burst(&c, &dir, v2, quota).map_err(|e| Self::err(rel, resource, e))
            }
            Resource::Mem => {
                let (dir, v2) =
                    self.pick(rel, "memory.max", "memory", "memory.limit_in_bytes").ok_or_else(|| no("memory"))?;
                let memsw = (!v2).then(|| dir.join("memory.memsw.limit_in_bytes")).filter(|p| p.exists());
                let m = MemController::new(dir.clone(), dir, v2);
                let limit = value.map_or(-1, |b| b.min(i64::MAX as u64) as i64);
                match memsw {
                    Some(sw) => set_v1_with_memsw(&m, &sw, limit),
                    None => m.set_limit(limit).map_err(|e| e.to_string()),
                }
                .map_err(|e| Self::err(rel, resource, e))
            }
            Resource::DiskRead | Resource::DiskWrite => {
                let dev = self.disk.ok_or_else(|| no("block device (none found for /)"))?;
                let read = resource == Resource::DiskRead;
                let v1_file = if read { "blkio.throttle.read_bps_device" } else { "blkio.throttle.write_bps_device" };
                let (dir, v2) = self.pick(rel, "io.max", "blkio", v1_file).ok_or_else(|| no("io"))?;
                match (value, v2) {
                    (Some(bps), _) => {
                        let b = BlkIoController::new(dir.clone(), dir, v2);
                        // 0 would mean "no limit" on v1: the smallest real limit is 1.
                        let bps = bps.max(1);
                        if read {
                            b.throttle_read_bps_for_device(dev.major, dev.minor, bps)
                        } else {
                            b.throttle_write_bps_for_device(dev.major, dev.minor, bps)
                        }
                        .map_err(|e| Self::err(rel, resource, e))
                    }
                    // Removing: cgroups-rs cannot write "max" (v2) or 0 (v1).
                    (None, true) => {
                        let key = if read { "rbps" } else { "wbps" };
                        std::fs::write(dir.join("io.max"), format!("{dev} {key}=max"))
                            .map_err(|e| Self::err(rel, resource, e))
                    }
                    (None, false) => {
                        std::fs::write(dir.join(v1_file), format!("{dev} 0")).map_err(|e| Self::err(rel, resource, e))
                    }
                }
            }
            other => Err(WriteError::NotCgroupfs { resource: other }),
        }
    }

    /// Confines `rel`'s tasks to `cpus` (`cpuset.cpus`, v2 or the v1
    /// `cpuset` controller; empty: the parent's, on v2). The kernel moves
    /// its threads' affinity with it.
    pub fn set_cpus(&self, rel: &str, cpus: &str) -> Result<(), WriteError> {
        let (dir, _) = self
            .pick(rel, "cpuset.cpus", "cpuset", "cpuset.cpus")
            .ok_or_else(|| WriteError::NoControl { cgroup: rel.to_owned(), what: "cpuset" })?;
        std::fs::write(dir.join("cpuset.cpus"), format!("{cpus}\n")).map_err(|e| Self::err(rel, Resource::Cpu, e))
    }

    /// What `rel`'s `cpuset.cpus` says now (`None`: no cpuset there).
    pub fn cpus(&self, rel: &str) -> Option<String> {
        let (dir, _) = self.pick(rel, "cpuset.cpus", "cpuset", "cpuset.cpus")?;
        std::fs::read_to_string(dir.join("cpuset.cpus")).ok().map(|s| s.trim().to_owned())
    }

    /// Banks nothing more for CPU bursts (the quota stays as it is).
    pub fn clear_burst(&self, rel: &str) -> Result<(), WriteError> {
        let Some((dir, v2)) = self.pick(rel, "cpu.max", "cpu", "cpu.cfs_quota_us") else { return Ok(()) };
        match Self::burst_now(&dir, v2) {
            Some((file, now)) if now > 0 => std::fs::write(file, "0").map_err(|e| Self::err(rel, Resource::Cpu, e)),
            _ => Ok(()),
        }
    }

    /// Whether tasks that reach the memory limit wait for it to be raised
    /// (`Some(hard_max)`) or are OOM-killed as usual (`None`). v1: the OOM
    /// killer off or on (`memory.oom_control`). v2: the limit moves to
    /// `memory.high` (reclaim and throttling, never a kill) with
    /// `memory.max` at `hard_max`; off, `memory.high` goes back to `max`
    /// (the next [`Self::apply_waiting`] or [`Self::apply`] sets the limit).
    pub fn set_mem_wait(&self, rel: &str, hard_max: Option<u64>) -> Result<(), WriteError> {
        let err = |e: std::io::Error| Self::err(rel, Resource::Mem, e);
        let v2 = self.layout.v2_dir(rel);
        if v2.join("memory.high").exists() {
            match hard_max {
                Some(h) => std::fs::write(v2.join("memory.max"), h.to_string()).map_err(err),
                None => std::fs::write(v2.join("memory.high"), "max").map_err(err),
            }
        } else {
            let dir = self
                .layout
                .v1_dir("memory", rel)
                .filter(|d| d.join("memory.oom_control").exists())
                .ok_or_else(|| WriteError::NoControl { cgroup: rel.to_owned(), what: "memory.oom_control" })?;
            std::fs::write(dir.join("memory.oom_control"), if hard_max.is_some() { "1" } else { "0" }).map_err(err)
        }
    }

    /// Sets the memory limit of a container that waits at it (see
    /// [`Self::set_mem_wait`]): v2 `memory.high`, v1 `limit_in_bytes`.
    pub fn apply_waiting(&self, rel: &str, value: u64) -> Result<(), WriteError> {
        let v2 = self.layout.v2_dir(rel);
        if v2.join("memory.high").exists() {
            std::fs::write(v2.join("memory.high"), value.to_string()).map_err(|e| Self::err(rel, Resource::Mem, e))
        } else {
            self.apply(rel, Resource::Mem, Some(value))
        }
    }
}

/// v1 memory with a memory+swap limit (`memory.memsw.limit_in_bytes`,
/// which the kernel keeps at or above the memory limit): the swap on top
/// is kept as it was. Equal (LXD's no swap, or both unlimited), it follows
/// the memory limit; unlimited above a set memory limit, it stays
/// unlimited; otherwise the same amount of swap on top. Raised first when
/// the memory limit rises, lowered after when it falls.
fn set_v1_with_memsw(m: &MemController, memsw: &std::path::Path, limit: i64) -> Result<(), String> {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    let set = |m: &MemController| m.set_limit(limit).map_err(|e| e.to_string());
    let (Some(sw), Some(old)) = (read(memsw), memsw.parent().and_then(|d| read(&d.join("memory.limit_in_bytes"))))
    else {
        return set(m);
    };
    let unlimited = |v: u64| v >= super::parse::V1_UNLIMITED;
    let new = u64::try_from(limit).ok();
    let new_sw = if unlimited(sw) && unlimited(old) || sw == old {
        new
    } else if unlimited(sw) {
        return set(m);
    } else {
        new.map(|n| n.saturating_add(sw - old.min(sw)))
    };
    let write_sw = |v: Option<u64>| {
        let text = v.filter(|&v| v < i64::MAX as u64).map_or("-1".to_owned(), |v| v.to_string());
        std::fs::write(memsw, text).map_err(|e| format!("{}: {e}", memsw.display()))
    };
    let raising = new.is_none_or(|n| n > old);
    if raising {
        write_sw(new_sw)?;
        if let Err(e) = set(m) {
            // Put memory+swap back as it was.
            let _ = write_sw(Some(sw).filter(|&v| !unlimited(v)));
            return Err(e);
        }
    } else {
        set(m)?;
        write_sw(new_sw)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn quotas() {
        assert_eq!(quota_us(500, 100_000), 50_000);
        assert_eq!(quota_us(2500, 100_000), 250_000);
        assert_eq!(quota_us(1, 100_000), 1_000, "kernel minimum");
    }

    #[test]
    fn writes_v2_files_on_a_fake_pure_v2_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        std::fs::create_dir_all(&dir).unwrap();
        for (f, c) in [("cpu.max", "max 100000\n"), ("memory.max", "max\n"), ("io.max", "")] {
            std::fs::write(dir.join(f), c).unwrap();
        }
        let layout = Layout::pure_v2(tmp.path());
        let w = Writer::new(&layout, Some(Device { major: 254, minor: 0 }));
        w.apply("c", Resource::Cpu, Some(750)).unwrap();
        assert_eq!(read(dir.join("cpu.max")).trim(), "75000 100000");
        w.apply("c", Resource::Mem, Some(256 << 20)).unwrap();
        assert_eq!(read(dir.join("memory.max")), "268435456");
        w.apply("c", Resource::Mem, None).unwrap();
        assert_eq!(read(dir.join("memory.max")), "max");
        w.apply("c", Resource::DiskWrite, Some(10 << 20)).unwrap();
        assert_eq!(read(dir.join("io.max")), "254:0 wbps=10485760");
        w.apply("c", Resource::DiskRead, None).unwrap();
        assert_eq!(read(dir.join("io.max")), "254:0 rbps=max");
        assert!(matches!(w.apply("c", Resource::NetRx, Some(1)), Err(WriteError::NotCgroupfs { .. })));
        assert!(matches!(w.apply("nope", Resource::Cpu, Some(1)), Err(WriteError::NoControl { .. })));
    }

    #[test]
    fn waiting_memory_limits_on_both_layouts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        std::fs::create_dir_all(&dir).unwrap();
        for (f, c) in [("memory.max", "max\n"), ("memory.high", "max\n")] {
            std::fs::write(dir.join(f), c).unwrap();
        }
        let layout = Layout::pure_v2(tmp.path());
        let w = Writer::new(&layout, None);
        w.set_mem_wait("c", Some(4 << 30)).unwrap();
        w.apply_waiting("c", 300 << 20).unwrap();
        assert_eq!(read(dir.join("memory.max")), (4u64 << 30).to_string(), "hard stop at max");
        assert_eq!(read(dir.join("memory.high")), (300u64 << 20).to_string(), "the scaled limit");
        w.set_mem_wait("c", None).unwrap();
        w.apply("c", Resource::Mem, Some(4 << 30)).unwrap();
        assert_eq!(read(dir.join("memory.high")), "max");
        assert_eq!(read(dir.join("memory.max")), (4u64 << 30).to_string());

        // v1: the OOM killer off and on.
        let root = tmp.path().join("v1");
        let mem = root.join("memory/c");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::create_dir_all(root.join("unified/c")).unwrap();
        std::fs::write(mem.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\n").unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let layout = Layout {
            kernfs: false,
            v2: root.join("unified"),
            v1: [("memory".to_string(), root.join("memory"))].into_iter().collect(),
        };
        let w = Writer::new(&layout, None);
        w.set_mem_wait("c", Some(1 << 30)).unwrap();
        assert_eq!(read(mem.join("memory.oom_control")), "1");
        w.apply_waiting("c", 200 << 20).unwrap();
        assert_eq!(read(mem.join("memory.limit_in_bytes")), (200u64 << 20).to_string());
        w.set_mem_wait("c", None).unwrap();
        assert_eq!(read(mem.join("memory.oom_control")), "0");
    }

    #[test]
    fn v1_memory_and_swap_keep_their_relation() {
        const UNLIMITED: &str = "9223372036854771712";
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mem = root.join("memory/c");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::create_dir_all(root.join("unified/c")).unwrap();
        let layout = Layout {
            kernfs: false,
            v2: root.join("unified"),
            v1: [("memory".to_owned(), root.join("memory"))].into_iter().collect(),
        };
        let w = Writer::new(&layout, None);
        let set = |limit: &str, sw: &str| {
            std::fs::write(mem.join("memory.limit_in_bytes"), limit).unwrap();
            std::fs::write(mem.join("memory.memsw.limit_in_bytes"), sw).unwrap();
        };
        let both = || {
            (read(mem.join("memory.limit_in_bytes")).trim().to_owned(), read(mem.join("memory.memsw.limit_in_bytes")))
        };
        // No swap (LXD): follows up and down.
        set("100", "100");
        w.apply("c", Resource::Mem, Some(200)).unwrap();
        assert_eq!(both(), ("200".into(), "200".into()));
        w.apply("c", Resource::Mem, Some(50)).unwrap();
        assert_eq!(both(), ("50".into(), "50".into()));
        // Both unlimited stay tied: a limit later is no swap again.
        set(UNLIMITED, UNLIMITED);
        w.apply("c", Resource::Mem, Some(80)).unwrap();
        assert_eq!(both(), ("80".into(), "80".into()));
        // Some swap on top: kept.
        set("100", "150");
        w.apply("c", Resource::Mem, Some(300)).unwrap();
        assert_eq!(both(), ("300".into(), "350".into()));
        // Unlimited swap above a limit: left alone.
        set("100", UNLIMITED);
        w.apply("c", Resource::Mem, Some(300)).unwrap();
        assert_eq!(both(), ("300".into(), UNLIMITED.into()));
    }

    #[test]
    fn writes_v1_files_on_a_fake_hybrid_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mk = |ctl: &str, files: &[(&str, &str)]| {
            let d = root.join(ctl).join("c");
            std::fs::create_dir_all(&d).unwrap();
            for (f, c) in files {
                std::fs::write(d.join(f), c).unwrap();
            }
            d
        };
        std::fs::create_dir_all(root.join("unified/c")).unwrap();
        let cpu =
            mk("cpu", &[("cpu.cfs_quota_us", "-1\n"), ("cpu.cfs_period_us", "50000\n"), ("cpu.cfs_burst_us", "0\n")]);
        let mem = mk("memory", &[("memory.limit_in_bytes", "9223372036854771712\n")]);
        let blk = mk("blkio", &[("blkio.throttle.read_bps_device", ""), ("blkio.throttle.write_bps_device", "")]);
        let layout = Layout {
            kernfs: false,
            v2: root.join("unified"),
            v1: ["cpu", "memory", "blkio"].iter().map(|c| (c.to_string(), root.join(c))).collect(),
        };
        let w = Writer::new(&layout, Some(Device { major: 8, minor: 0 }));
        w.apply("c", Resource::Cpu, Some(1500)).unwrap();
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "75000", "1.5 cores of a 50 ms period");
        assert_eq!(read(cpu.join("cpu.cfs_burst_us")).trim(), "0", "no burst unless asked");
        let wb = Writer::new(&layout, None).with_burst(100);
        wb.apply("c", Resource::Cpu, Some(500)).unwrap();
        assert_eq!(read(cpu.join("cpu.cfs_burst_us")), "25000", "a whole quota banked");
        wb.apply("c", Resource::Cpu, Some(200)).unwrap();
        assert_eq!(
            (read(cpu.join("cpu.cfs_quota_us")), read(cpu.join("cpu.cfs_burst_us"))),
            ("10000".into(), "10000".into())
        );
        wb.apply("c", Resource::Cpu, None).unwrap();
        assert_eq!((read(cpu.join("cpu.cfs_quota_us")), read(cpu.join("cpu.cfs_burst_us"))), ("-1".into(), "0".into()));
        w.apply("c", Resource::Cpu, None).unwrap();
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "-1");
        w.apply("c", Resource::Mem, Some(1 << 30)).unwrap();
        assert_eq!(read(mem.join("memory.limit_in_bytes")), "1073741824");
        w.apply("c", Resource::DiskRead, Some(20 << 20)).unwrap();
        assert_eq!(read(blk.join("blkio.throttle.read_bps_device")), "8:0 20971520");
        w.apply("c", Resource::DiskRead, None).unwrap();
        assert_eq!(read(blk.join("blkio.throttle.read_bps_device")), "8:0 0");
    }
}
