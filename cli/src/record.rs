//! `scaler record NAME`: a container's usage, limits and signals from a
//! running agent, tick by tick, as a recorded trace (`policies::trace`):
//! its demand columns feed `scaler simulate` and `cargo xtask bench
//! policies`; the rest lets `policies::planner::replay` check that the
//! planner makes the agent's decisions.

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use policies::{
    Resource,
    trace::{RECORDED_HEADER, Recorded},
};
use scaler_api::wire::{Container, History, HistoryPoint, Subscription};

use super::Agent;

/// The rows of one history point (`GET /v1/stats/{name}/history`).
pub fn rows(name: &str, point: &HistoryPoint) -> Vec<String> {
    let (time_ms, interval_ms, sig) = (point.time_ms, point.interval_ms, point.signals);
    let mut out = Vec::new();
    for (r, reading) in point.resources.iter() {
        let (usage, limit) = (reading.usage, reading.current);
        if usage.is_none() && limit.is_none() {
            continue;
        }
        let mut rec = Recorded { time_ms, interval_ms, usage, limit, ..Recorded::default() };
        let mut demand = usage.unwrap_or(0);
        match r {
            Resource::Cpu => {
                rec.throttled_us = sig.cpu_throttled_usec.unwrap_or(0);
                // What the quota held back is demand too.
                demand += rec.throttled_us.checked_div(interval_ms).unwrap_or(0);
            }
            Resource::Mem => {
                rec.stall_us = sig.mem_stall_usec.unwrap_or(0);
                rec.oom_kills = sig.oom_kills;
                rec.waiting = sig.mem_waiting.unwrap_or(false);
                rec.reclaims = sig.mem_reclaims;
                rec.refault_bytes = sig.mem_refault_bytes.unwrap_or(0);
                rec.refault_stall_us = sig.mem_refault_stall_usec.unwrap_or(0);
            }
            _ => {}
        }
        out.push(rec.row(name, r, demand));
    }
    out
}

/// Records `name` for `duration` into `out`, polling the agent's history
/// every `poll` (well inside the history it keeps). Rows are flushed as
/// they come, so an interrupted recording is still a valid trace.
pub fn record(agent: &Agent, name: &str, duration: Duration, out: &Path, poll: Duration) -> anyhow::Result<()> {
    // A container just created or subscribed may not be sampled yet.
    let wait = Instant::now() + Duration::from_secs(10);
    let first = loop {
        match agent.call_as::<Container>(reqwest::Method::GET, &format!("/v1/stats/{name}"), None) {
            Ok(v) => break v,
            Err(e) if Instant::now() > wait => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let sub: Option<Subscription> = agent.call_as(reqwest::Method::GET, &format!("/v1/containers/{name}"), None).ok();
    let mut f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    writeln!(f, "# scaler record {name} from {}: cgroup {}", agent.url, first.cgroup)?;
    if let Some(s) = &sub {
        writeln!(f, "# subscription: {}", serde_json::to_string(s)?)?;
    }
    writeln!(f, "{RECORDED_HEADER}")?;
    let start = Instant::now();
    // Only ticks from now on.
    let mut since = first.time_ms.unwrap_or(0);
    let (mut ticks, mut gaps) = (0usize, 0usize);
    loop {
        std::thread::sleep(poll.min(duration.saturating_sub(start.elapsed())).max(Duration::from_millis(10)));
        let h: History = agent
            .call_as(reqwest::Method::GET, &format!("/v1/stats/{name}/history?since_ms={since}"), None)
            .with_context(|| format!("reading {name}'s history (did the container stop?)"))?;
        if let Some(p) = h.points.first() {
            // The oldest point is far past the last one read: history rolled over.
            if ticks > 0 && p.time_ms > since + 3 * h.tick_ms.max(1) + 1000 {
                gaps += 1;
            }
        }
        for p in &h.points {
            for row in rows(name, p) {
                writeln!(f, "{row}")?;
            }
            since = since.max(p.time_ms);
            ticks += 1;
        }
        f.flush()?;
        if start.elapsed() >= duration {
            break;
        }
    }
    eprintln!("recorded {ticks} ticks of {name} into {}", out.display());
    if gaps > 0 {
        eprintln!("warning: {gaps} gap(s): the agent's history rolled over between polls");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_history_point_becomes_recorded_rows() {
        let p = json!({
            "time_ms": 1_700_000_000_200u64, "interval_ms": 200,
            "resources": {"cpu": {"usage": 800, "current": 1000}, "mem": {"usage": 1048576, "current": null},
                          "disk_read": {"usage": null, "current": null}},
            "signals": {"cpu_throttled_usec": 40000, "mem_stall_usec": 5, "oom_kills": 0, "mem_waiting": false,
                        "mem_refault_bytes": 8192, "mem_refault_stall_usec": 3},
        });
        let p: HistoryPoint = serde_json::from_value(p).unwrap();
        let text = format!("{RECORDED_HEADER}\n{}\n", rows("a", &p).join("\n"));
        let t = policies::Trace::parse(&text).unwrap();
        assert_eq!(t.resources("a"), vec![Resource::Cpu, Resource::Mem], "nothing for unmeasured resources");
        assert_eq!(t.demand_at("a", Resource::Cpu, 1_700_000_000_200), 1000, "usage + throttled / interval");
        let cpu = t.recorded("a", Resource::Cpu).unwrap()[0];
        assert_eq!((cpu.usage, cpu.limit, cpu.throttled_us), (Some(800), Some(1000), 40_000));
        let mem = t.recorded("a", Resource::Mem).unwrap()[0];
        assert_eq!((mem.limit, mem.stall_us, mem.oom_kills), (None, 5, Some(0)));
        assert_eq!((mem.refault_bytes, mem.refault_stall_us), (8192, 3));
    }
}
