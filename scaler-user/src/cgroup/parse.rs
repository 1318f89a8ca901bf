//! Pure parsers for cgroupfs file formats (v1 and v2). No I/O here: the
//! reader hands in file contents, tests hand in strings.

/// Value of `key` in a flat-keyed file (`key value` per line: `cpu.stat`,
/// `memory.stat`, `memory.events`, `memory.oom_control`).
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// A single integer (`memory.current`, `cpuacct.usage`, `cpu.cfs_quota_us`).
/// Negative values (v1's `-1` = unlimited) and `max` give `None`.
pub fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v1 memory limits of 2^62 and above mean "no limit" (the kernel reports
/// `PAGE_COUNTER_MAX` rounded to pages, e.g. 9223372036854771712).
pub const V1_UNLIMITED: u64 = 1 << 62;

/// A v1 memory limit (`memory.limit_in_bytes`): `None` when unlimited.
pub fn v1_mem_limit(text: &str) -> Option<u64> {
    single(text).filter(|&v| v < V1_UNLIMITED)
}

/// A v2 single value that may be `max` (`memory.max`, `memory.high`).
pub fn v2_max_or_value(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        v => v.parse().ok(),
    }
}

/// A CPU bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// The limit in millicores (1000 = one core), truncated.
    pub fn millicores(self) -> u64 {
        self.quota_us.saturating_mul(1000).checked_div(self.period_us).unwrap_or(0)
    }
}

/// v2 `cpu.max`: `max 100000` (unlimited) or `50000 100000`.
pub fn v2_cpu_max(text: &str) -> Option<CpuQuota> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period = it.next().map_or(Some(100_000), |p| p.parse().ok())?;
    (quota != "max").then(|| Some(CpuQuota { quota_us: quota.parse().ok()?, period_us: period }))?
}

/// v1 `cpu.cfs_quota_us` (`-1` = unlimited) and `cpu.cfs_period_us`.
pub fn v1_cpu_quota(quota: &str, period: &str) -> Option<CpuQuota> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    (quota > 0).then_some(CpuQuota { quota_us: quota as u64, period_us: period })
}

/// Read and written bytes summed over devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoBytes {
    pub read: u64,
    pub write: u64,
}

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6` per device.
pub fn v2_io_stat(text: &str) -> IoBytes {
    let mut sum = IoBytes::default();
    for line in text.lines() {
        for field in line.split_whitespace().skip(1) {
            match field.split_once('=') {
                Some(("rbytes", v)) => sum.read += v.parse::<u64>().unwrap_or(0),
                Some(("wbytes", v)) => sum.write += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    sum
}

/// v1 `blkio.throttle.io_service_bytes_recursive`: `8:0 Read 123` per
/// device and operation, then a `Total` line (skipped).
pub fn v1_blkio_bytes(text: &str) -> IoBytes {
    let mut sum = IoBytes::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(dev), Some(op), Some(v)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if !dev.contains(':') {
            continue;
        }
        let v: u64 = v.parse().unwrap_or(0);
        match op {
            "Read" => sum.read += v,
            "Write" => sum.write += v,
            _ => {}
        }
    }
    sum
}

/// Bandwidth limits in bytes/s, summed over the devices that have one
/// (`None` = no device is limited in that direction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoLimits {
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
}

fn add_opt(acc: &mut Option<u64>, v: u64) {
    *acc = Some(acc.unwrap_or(0).saturating_add(v));
}

/// v2 `io.max`: `8:0 rbps=1048576 wbps=max riops=max wiops=max` per device.
pub fn v2_io_max(text: &str) -> IoLimits {
    let mut l = IoLimits::default();
    for line in text.lines() {
        for field in line.split_whitespace().skip(1) {
            match field.split_once('=') {
                Some(("rbps", v)) if v != "max" => add_opt(&mut l.read_bps, v.parse().unwrap_or(0)),
                Some(("wbps", v)) if v != "max" => add_opt(&mut l.write_bps, v.parse().unwrap_or(0)),
                _ => {}
            }
        }
    }
    l
}

/// v1 `blkio.throttle.{read,write}_bps_device`: `8:0 1048576` per device.
pub fn v1_bps_device(text: &str) -> Option<u64> {
    let mut total = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(_dev), Some(v)) = (it.next(), it.next())
            && let Ok(v) = v.parse::<u64>()
        {
            add_opt(&mut total, v);
        }
    }
    total
}

/// One line of a PSI file.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PsiLine {
    /// Percentage of the last 10 s with a stall.
    pub avg10: f64,
    /// Total stall time in microseconds since the cgroup was created.
    pub total_us: u64,
}

/// A PSI file (`cpu.pressure`, `memory.pressure`, `io.pressure`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and an optional `full` line.
pub fn psi(text: &str) -> Option<Psi> {
    let mut out: Option<Psi> = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let kind = it.next()?;
        let mut l = PsiLine::default();
        for field in it {
            match field.split_once('=') {
                Some(("avg10", v)) => l.avg10 = v.parse().unwrap_or(0.0),
                Some(("total", v)) => l.total_us = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            "some" => out.get_or_insert_with(Psi::default).some = l,
            "full" => out.get_or_insert_with(Psi::default).full = Some(l),
            _ => {}
        }
    }
    out
}

/// The cgroup paths of a process (`/proc/PID/cgroup`: `id:controllers:path`
/// per hierarchy), without duplicates.
pub fn proc_cgroup_paths(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(path) = line.splitn(3, ':').nth(2).map(str::trim).filter(|p| p.starts_with('/'))
            && !out.iter().any(|o| o == path)
        {
            out.push(path.to_owned());
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_single() {
        let s = "nr_periods 10\nnr_throttled 3\nthrottled_time 123456\n";
        assert_eq!(flat_keyed(s, "nr_throttled"), Some(3));
        assert_eq!(flat_keyed(s, "throttled_time"), Some(123456));
        assert_eq!(flat_keyed(s, "missing"), None);
        assert_eq!(flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"), Some(2));
        assert_eq!(single("42\n"), Some(42));
        assert_eq!(single("-1\n"), None);
        assert_eq!(single(""), None);
    }

    #[test]
    fn memory_limits() {
        assert_eq!(v1_mem_limit("9223372036854771712\n"), None);
        assert_eq!(v1_mem_limit("268435456\n"), Some(268435456));
        assert_eq!(v2_max_or_value("max\n"), None);
        assert_eq!(v2_max_or_value("1073741824\n"), Some(1 << 30));
    }

    #[test]
    fn own_cgroups() {
        let t = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/system.slice/scaler.service\nbad\n";
        assert_eq!(proc_cgroup_paths(t), vec!["/", "/process_api/abc", "/system.slice/scaler.service"]);
    }

    #[test]
    fn cpu_quotas() {
        assert_eq!(v2_cpu_max("max 100000\n"), None);
        let q = v2_cpu_max("50000 100000\n").unwrap();
        assert_eq!(q.millicores(), 500);
        assert_eq!(v2_cpu_max("250000 100000").unwrap().millicores(), 2500);
        assert_eq!(v1_cpu_quota("-1\n", "100000\n"), None);
        assert_eq!(v1_cpu_quota("150000\n", "100000\n").unwrap().millicores(), 1500);
        assert_eq!(v1_cpu_quota("33333\n", "100000\n").unwrap().millicores(), 333);
        assert_eq!(CpuQuota { quota_us: 1, period_us: 0 }.millicores(), 0);
    }

    #[test]
    fn io_stats_and_limits() {
        let v2 = "254:0 rbytes=1000 wbytes=2000 rios=1 wios=2 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=9 dios=1\n";
        assert_eq!(v2_io_stat(v2), IoBytes { read: 1001, write: 2002 });
        let v1 = "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 0\n254:0 Async 12288\n254:0 Discard 999\n254:0 Total 12288\nTotal 12288\n";
        assert_eq!(v1_blkio_bytes(v1), IoBytes { read: 4096, write: 8192 });
        let max = "254:0 rbps=1048576 wbps=max riops=max wiops=max\n8:0 rbps=10 wbps=20 riops=max wiops=max\n";
        assert_eq!(v2_io_max(max), IoLimits { read_bps: Some(1048586), write_bps: Some(20) });
        assert_eq!(v2_io_max(""), IoLimits::default());
        assert_eq!(v1_bps_device("254:0 20971520\n"), Some(20971520));
        assert_eq!(v1_bps_device(""), None);
    }

    #[test]
    fn pressure() {
        let p = psi("some avg10=1.50 avg60=0.24 avg300=0.74 total=7688114\nfull avg10=0.25 avg60=0.22 avg300=0.68 total=7042582\n").unwrap();
        assert_eq!(p.some.total_us, 7688114);
        assert!((p.some.avg10 - 1.5).abs() < 1e-9);
        assert_eq!(p.full.unwrap().total_us, 7042582);
        let cpu_only_some = psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").unwrap();
        assert_eq!(cpu_only_some.full, None);
        assert_eq!(psi(""), None);
    }
}
