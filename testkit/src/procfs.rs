//! A process's CPU time and memory from `/proc`.

use std::{
    io,
    time::{Duration, Instant},
};

/// `/proc` counts CPU time in USER_HZ ticks (100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) of process `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').ok_or_else(|| crate::error("malformed /proc/PID/stat"))?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    field(11).zip(field(12)).map(|(u, s)| u + s).ok_or_else(|| crate::error("no utime/stime in /proc/PID/stat"))
}

/// Resident memory of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| crate::error("no VmRSS in /proc/PID/status"))
}

/// CPU time of process `pid` in nanoseconds: the sum over its threads of
/// `/proc/PID/task/TID/schedstat`'s time on a CPU (`None` without
/// schedstat). Threads that exit in between take their time with them.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let mut sum = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        sum += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// CPU use of `pid` over the next `secs` seconds, % of one core: from
/// schedstat's nanoseconds where the kernel has them (the 10 ms ticks of
/// `/proc/PID/stat` hold only about 9 in 15 s at 0.6 %), else from ticks.
pub fn cpu_percent(pid: u32, secs: u64) -> io::Result<f64> {
    let (t0, n0, c0) = (Instant::now(), cpu_ns(pid), cpu_ticks(pid)?);
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, n1, c1) = (Instant::now(), cpu_ns(pid), cpu_ticks(pid)?);
    let wall = (t1 - t0).as_secs_f64();
    Ok(match n0.zip(n1) {
        Some((n0, n1)) => n1.saturating_sub(n0) as f64 / 1e9 / wall * 100.0,
        None => c1.saturating_sub(c0) as f64 / USER_HZ / wall * 100.0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_counts_a_busy_threads_time_in_nanoseconds() {
        let me = std::process::id();
        let Some(before) = cpu_ns(me) else {
            return; // no schedstat on this kernel: cpu_percent uses ticks
        };
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = cpu_ns(me).unwrap() - before;
        assert!((40_000_000..2_000_000_000).contains(&spent), "{spent} ns for 60 ms of spinning");
    }
}
