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

/// CPU use of `pid` over the next `secs` seconds, % of one core.
pub fn cpu_percent(pid: u32, secs: u64) -> io::Result<f64> {
    let (t0, c0) = (Instant::now(), cpu_ticks(pid)?);
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, c1) = (Instant::now(), cpu_ticks(pid)?);
    Ok(c1.saturating_sub(c0) as f64 / USER_HZ / (t1 - t0).as_secs_f64() * 100.0)
}
