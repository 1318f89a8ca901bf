//! What this host has: CPUs, memory, the disk behind `/`, CPU use of the
//! whole host (`/proc/stat`), and RAPL power where the kernel offers it.
//! Parsers are pure and tested on strings.

use std::path::Path;

use crate::cgroup::writer::Device;

/// Online CPUs x 1000 (millicores).
pub fn cpu_capacity() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000
}

/// `MemTotal` in bytes from `/proc/meminfo` text.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

pub fn mem_capacity() -> Option<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// The whole disk holding `/` (a partition's parent), found through
/// `/sys/dev/block/MAJ:MIN`.
pub fn root_disk() -> Option<Device> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata("/").ok()?.dev();
    // SAFETY: pure arithmetic on a dev_t.
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    let sys = format!("/sys/dev/block/{major}:{minor}");
    if Path::new(&sys).join("partition").exists() {
        let parent = std::fs::read_to_string(Path::new(&sys).join("../dev")).ok()?;
        let (ma, mi) = parent.trim().split_once(':')?;
        return Some(Device { major: ma.parse().ok()?, minor: mi.parse().ok()? });
    }
    Path::new(&sys).exists().then_some(Device { major, minor })
}

/// Busy and total jiffies from the `cpu ` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Host CPU use between two `/proc/stat` readings, in millicores.
pub fn host_cpu_millicores(prev: (u64, u64), cur: (u64, u64), capacity: u64) -> u64 {
    let busy = cur.0.saturating_sub(prev.0);
    let total = cur.1.saturating_sub(prev.1);
    if total == 0 { 0 } else { (u128::from(busy) * u128::from(capacity) / u128::from(total)) as u64 }
}

/// Package energy counters (µJ) of every RAPL zone, if any.
/// The RAPL package zones (`intel-rapl:N`, not their sub-zones), found once.
pub struct Rapl {
    zones: Vec<crate::kfile::Reread>,
}

impl Rapl {
    pub fn find() -> Self {
        let mut zones = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/sys/class/powercap") {
            for z in dir.flatten() {
                let name = z.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("intel-rapl:") && name.matches(':').count() == 1 {
                    zones.push(crate::kfile::Reread::open(z.path().join("energy_uj")));
                }
            }
        }
        Rapl { zones }
    }

    /// Energy of all packages, µJ (`None` without RAPL, or when a zone
    /// cannot be read).
    pub fn energy_uj(&mut self) -> Option<u64> {
        let mut total: Option<u64> = None;
        for z in &mut self.zones {
            let v = z.read()?.trim().parse::<u64>().ok()?;
            total = Some(total.unwrap_or(0).saturating_add(v));
        }
        total
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_stat() {
        assert_eq!(parse_mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), Some(24576000 * 1024));
        assert_eq!(parse_mem_total("nothing"), None);
        let a = parse_proc_stat("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 1 1 1\n").unwrap();
        assert_eq!(a, (200, 1000));
        let b = parse_proc_stat("cpu  200 0 200 900 0 0 0 0 0 0\n").unwrap();
        assert_eq!(host_cpu_millicores(a, b, 2000), 1333);
        assert_eq!(host_cpu_millicores(a, a, 2000), 0);
        assert_eq!(parse_proc_stat("cpu 1 2\n"), None);
    }

    #[test]
    fn this_host() {
        assert!(cpu_capacity() >= 1000);
        assert!(mem_capacity().unwrap() > 0);
    }
}
