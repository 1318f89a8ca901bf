//! Numbers, tables and pictures from the runs.

use std::path::Path;

use serde_json::{Value, json};

use super::{
    ContainerRun, RunResult,
    plot::{self, ALLOCATED, Line, Panel, USED},
};
use crate::bench::harness::table;

/// What a container's run comes to.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Time-integrated CPU used / CPU allocated (`None`: no limit).
    pub cpu_used_of_alloc: Option<f64>,
    /// Time-integrated memory limit / working set (`None`: no limit).
    pub mem_alloc_over_ws: Option<f64>,
    pub core_s_used: f64,
    pub core_s_alloc: Option<f64>,
    pub gib_s_ws: f64,
    pub gib_s_alloc: Option<f64>,
    pub throttled_s: f64,
    pub oom_kills: u64,
    pub changes: u64,
    pub seconds: f64,
    pub ok: bool,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0)
}

const GIB: f64 = (1u64 << 30) as f64;

pub fn metrics(c: &ContainerRun) -> Metrics {
    let (from, to) = ((c.start_s * 1000.0) as u64, (c.end_s * 1000.0) as u64);
    let mut m = Metrics { changes: c.changes, seconds: c.outcome.seconds, ok: c.outcome.ok, ..Metrics::default() };
    let (mut cpu_alloc, mut mem_alloc) = (0.0, 0.0);
    let (mut cpu_used_limited, mut ws_limited) = (0.0, 0.0);
    let (mut n, mut n_cpu, mut n_mem) = (0, 0, 0);
    let mut prev_t = None;
    let mut first_oom = None;
    for p in &c.points {
        let dt = (p.t_ms - prev_t.unwrap_or(p.t_ms.saturating_sub(200))) as f64 / 1000.0;
        prev_t = Some(p.t_ms);
        if p.t_ms < from || p.t_ms > to + 200 {
            continue;
        }
        n += 1;
        first_oom.get_or_insert(p.oom_kills);
        m.oom_kills = p.oom_kills - first_oom.unwrap_or(0);
        let cores = p.cpu as f64 / 1000.0;
        let gib = p.ws as f64 / GIB;
        m.core_s_used += cores * dt;
        m.gib_s_ws += gib * dt;
        m.throttled_s += p.throttled_us as f64 / 1e6;
        if let Some(l) = p.cpu_limit {
            n_cpu += 1;
            cpu_alloc += l as f64 / 1000.0 * dt;
            cpu_used_limited += cores * dt;
        }
        if let Some(l) = p.mem_limit {
            n_mem += 1;
            mem_alloc += l as f64 / GIB * dt;
            ws_limited += gib * dt;
        }
    }
    // A mode "has" a limit when it held for most of the run.
    if n_cpu * 2 > n {
        m.core_s_alloc = Some(cpu_alloc);
        m.cpu_used_of_alloc = Some(cpu_used_limited / cpu_alloc.max(1e-9));
    }
    if n_mem * 2 > n {
        m.gib_s_alloc = Some(mem_alloc);
        m.mem_alloc_over_ws = Some(mem_alloc / ws_limited.max(1e-9));
    }
    if c.job.is_service() {
        let mut l = c.outcome.latencies_us.clone();
        l.sort_unstable();
        m.p50_ms = percentile(&l, 50.0);
        m.p99_ms = percentile(&l, 99.0);
    }
    m
}

fn f(v: Option<f64>, prec: usize, suffix: &str) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}{suffix}"))
}

/// `+4.2 %` of `v` against `base`.
fn vs(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:+.1} %", (v / b - 1.0) * 100.0),
        _ => "-".into(),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// The median of each number over repeated runs.
fn medians(ms: &[Metrics]) -> Metrics {
    let med = |f: &dyn Fn(&Metrics) -> Option<f64>| median(ms.iter().filter_map(f).collect());
    Metrics {
        cpu_used_of_alloc: med(&|m| m.cpu_used_of_alloc),
        mem_alloc_over_ws: med(&|m| m.mem_alloc_over_ws),
        core_s_used: med(&|m| Some(m.core_s_used)).unwrap_or(0.0),
        core_s_alloc: med(&|m| m.core_s_alloc),
        gib_s_ws: med(&|m| Some(m.gib_s_ws)).unwrap_or(0.0),
        gib_s_alloc: med(&|m| m.gib_s_alloc),
        throttled_s: med(&|m| Some(m.throttled_s)).unwrap_or(0.0),
        // Kills and failures add up: one is one too many.
        oom_kills: ms.iter().map(|m| m.oom_kills).sum(),
        changes: med(&|m| Some(m.changes as f64)).unwrap_or(0.0) as u64,
        seconds: med(&|m| Some(m.seconds)).unwrap_or(0.0),
        ok: ms.iter().all(|m| m.ok),
        p50_ms: med(&|m| m.p50_ms),
        p99_ms: med(&|m| m.p99_ms),
    }
}

/// `min-max` of a number over repeated runs, when there are several.
fn spread(ms: &[Metrics], f: &dyn Fn(&Metrics) -> Option<f64>, prec: usize) -> String {
    let v: Vec<f64> = ms.iter().filter_map(f).collect();
    if v.len() < 2 {
        return String::new();
    }
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    format!(" ({lo:.prec$}-{hi:.prec$})")
}

/// The Markdown table (medians over repetitions, spreads in brackets) and
/// the JSON of every run.
pub fn summarise(results: &[RunResult]) -> (String, Value) {
    // Groups of (workload, mode, container), in the order first run.
    let mut groups: Vec<(&str, &str, &str, &ContainerRun, Vec<Metrics>)> = Vec::new();
    for r in results {
        for c in &r.containers {
            let m = metrics(c);
            match groups.iter_mut().find(|g| g.0 == r.workload && g.1 == r.mode && g.2 == c.name) {
                Some(g) => g.4.push(m),
                None => groups.push((r.workload, &r.mode, &c.name, c, vec![m])),
            }
        }
    }
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for (workload, mode, name, c, ms) in &groups {
        let m = medians(ms);
        let base =
            groups.iter().find(|g| g.0 == *workload && g.1 == "unlimited" && g.2 == *name).map(|g| medians(&g.4));
        let (time, time_vs) = if c.job.is_service() {
            (
                format!("{} / {}{}", f(m.p50_ms, 2, ""), f(m.p99_ms, 2, ""), spread(ms, &|m| m.p99_ms, 2)),
                format!(
                    "{} / {}",
                    vs(m.p50_ms, base.as_ref().and_then(|b| b.p50_ms)),
                    vs(m.p99_ms, base.as_ref().and_then(|b| b.p99_ms))
                ),
            )
        } else {
            let sp = spread(ms, &|m| Some(m.seconds), 1);
            (
                if m.ok { format!("{:.1} s{sp}", m.seconds) } else { format!("failed, {:.1} s{sp}", m.seconds) },
                vs(Some(m.seconds), base.as_ref().map(|b| b.seconds)),
            )
        };
        rows.push(vec![
            workload.to_string(),
            name.to_string(),
            mode.to_string(),
            f(m.cpu_used_of_alloc.map(|x| x * 100.0), 1, " %"),
            f(m.mem_alloc_over_ws, 2, "x"),
            time,
            time_vs,
            format!("{:.1}", m.throttled_s),
            m.oom_kills.to_string(),
            m.changes.to_string(),
        ]);
        let one = |m: &Metrics| {
            json!({
                "ok": m.ok, "seconds": m.seconds,
                "cpu_used_of_alloc": m.cpu_used_of_alloc, "mem_alloc_over_ws": m.mem_alloc_over_ws,
                "core_s_used": m.core_s_used, "core_s_alloc": m.core_s_alloc,
                "gib_s_ws": m.gib_s_ws, "gib_s_alloc": m.gib_s_alloc,
                "throttled_s": m.throttled_s, "oom_kills": m.oom_kills, "limit_changes": m.changes,
                "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
            })
        };
        json_rows.push(json!({
            "workload": workload, "mode": mode, "container": name, "job": c.job.name(),
            "median": one(&m),
            "runtime_vs_unlimited": base.as_ref().filter(|_| !c.job.is_service()).map(|b| m.seconds / b.seconds - 1.0),
            "p99_vs_unlimited": base.as_ref().and_then(|b| Some(m.p99_ms? / b.p99_ms? - 1.0)),
            "runs": ms.iter().map(one).collect::<Vec<_>>(),
        }));
    }
    let md = table(
        &[
            "workload",
            "container",
            "mode",
            "CPU used / allocated",
            "mem limit / working set",
            "runtime, or p50 / p99 ms",
            "vs unlimited",
            "throttled s",
            "OOM kills",
            "limit changes",
        ],
        &rows,
    );
    (md, Value::Array(json_rows))
}

/// The two panels (CPU, memory) of one container.
fn panels(c: &ContainerRun, label: &str) -> Vec<Panel> {
    let t = |p: &super::Point| p.t_ms as f64 / 1000.0;
    let mut prev_oom = c.points.first().map_or(0, |p| p.oom_kills);
    let mut marks = Vec::new();
    for p in &c.points {
        if p.oom_kills > prev_oom {
            marks.push(t(p));
        }
        prev_oom = p.oom_kills;
    }
    let lines = |used_label: &'static str,
                 used: &dyn Fn(&super::Point) -> f64,
                 alloc: &dyn Fn(&super::Point) -> Option<f64>| {
        vec![
            Line {
                label: used_label,
                color: USED,
                step: false,
                points: c.points.iter().map(|p| (t(p), Some(used(p)))).collect(),
            },
            Line {
                label: "allocated",
                color: ALLOCATED,
                step: true,
                points: c.points.iter().map(|p| (t(p), alloc(p))).collect(),
            },
        ]
    };
    let cores = |v: u64| v as f64 / 1000.0;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let cpu = Panel {
        title: format!("{label}: CPU"),
        unit: "cores",
        lines: lines("used", &|p| cores(p.cpu), &|p| p.cpu_limit.map(cores)),
        marks: Vec::new(),
    };
    let mem = Panel {
        title: format!("{label}: memory"),
        unit: "MiB",
        lines: lines("working set", &|p| mib(p.ws), &|p| p.mem_limit.map(mib)),
        marks,
    };
    vec![cpu, mem]
}

fn t_max(r: &RunResult) -> f64 {
    r.containers.iter().flat_map(|c| c.points.last()).map(|p| p.t_ms as f64 / 1000.0).fold(1.0, f64::max)
}

/// `NAME/<workload>-<mode>.svg`.
pub fn write_run(dir: &Path, r: &RunResult) -> anyhow::Result<()> {
    let rows: Vec<Vec<Panel>> = r.containers.iter().map(|c| panels(c, &c.name)).collect();
    let title = format!("{} under {}: allocated (blue) and used (orange)", r.workload, r.mode);
    std::fs::write(dir.join(format!("{}-{}.svg", r.workload, r.mode)), plot::svg(&title, &rows, t_max(r)))?;
    Ok(())
}

/// `NAME/<workload>.svg`: every mode of the workload, one above the other.
pub fn write_overview(dir: &Path, workload: &str, results: &[RunResult]) -> anyhow::Result<()> {
    let runs: Vec<&RunResult> = results.iter().filter(|r| r.workload == workload && r.rep == 0).collect();
    let rows: Vec<Vec<Panel>> = runs
        .iter()
        .flat_map(|r| {
            r.containers.iter().map(|c| {
                let label = if r.containers.len() > 1 { format!("{} ({})", r.mode, c.name) } else { r.mode.clone() };
                panels(c, &label)
            })
        })
        .collect();
    let t = runs.iter().map(|r| t_max(r)).fold(1.0, f64::max);
    let title = format!("{workload}: allocated (blue) and used (orange) under each mode");
    std::fs::write(dir.join(format!("{workload}.svg")), plot::svg(&title, &rows, t))?;
    Ok(())
}

/// What the numbers were measured on.
pub fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(0);
    json!({"cpus": cpus, "kernel": kernel.trim(), "mem_gib": mem_kib / (1 << 20)})
}
