//! `GET /metrics` in the Prometheus text exposition format (0.0.4).

use std::{fmt::Write as _, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse};

use crate::published::Shared;

use scaler_api::names::escape_label as escape;

pub fn render(s: &Shared) -> String {
    let g = s.read();
    let mut out = String::with_capacity(256 + g.containers.len() * 1024);
    let _ = writeln!(
        out,
        "# HELP scaler_container_usage Measured usage (cpu millicores, mem bytes, disk/net bytes per second)."
    );
    let _ = writeln!(out, "# TYPE scaler_container_usage gauge");
    let mut limits = String::new();
    let mut extra = String::new();
    for p in g.containers.values() {
        let Some(sample) = p.latest else { continue };
        // The sample's own time: a scraper stores each value at the tick
        // it was measured, the same `time_ms` as `/v1/stats/{name}/history`.
        let t = sample.time_ms;
        let labels = format!(
            "host=\"{}\",container=\"{}\",kind=\"{}\"",
            escape(&s.host),
            escape(&p.info.name),
            serde_json::to_value(p.info.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        );
        for (res, r) in sample.resources.iter() {
            let name = res.name();
            if let Some(u) = r.usage {
                let _ = writeln!(out, "scaler_container_usage{{{labels},resource=\"{name}\"}} {u} {t}");
            }
            if let Some(c) = r.current {
                let _ = writeln!(limits, "scaler_container_limit{{{labels},resource=\"{name}\"}} {c} {t}");
            }
        }
        let sig = sample.signals;
        if let Some(v) = sig.cpu_throttled_usec {
            let _ = writeln!(extra, "scaler_container_cpu_throttled_usec{{{labels}}} {v} {t}");
        }
        if let Some(v) = sig.oom_kills {
            let _ = writeln!(extra, "scaler_container_oom_kills_total{{{labels}}} {v} {t}");
        }
        if let Some(v) = sig.mem_charged {
            let _ = writeln!(extra, "scaler_container_mem_charged_bytes{{{labels}}} {v} {t}");
        }
    }
    let _ = writeln!(out, "# HELP scaler_container_limit Limit in force, same units as usage (absent when unlimited).");
    let _ = writeln!(out, "# TYPE scaler_container_limit gauge");
    out.push_str(&limits);
    let _ = writeln!(out, "# HELP scaler_container_cpu_throttled_usec CPU throttled time during the last tick.");
    let _ = writeln!(out, "# TYPE scaler_container_cpu_throttled_usec gauge");
    let _ = writeln!(out, "# HELP scaler_container_oom_kills_total OOM kills in the container's cgroup.");
    let _ = writeln!(out, "# TYPE scaler_container_oom_kills_total counter");
    let _ = writeln!(out, "# HELP scaler_container_mem_charged_bytes Memory charged including page cache.");
    let _ = writeln!(out, "# TYPE scaler_container_mem_charged_bytes gauge");
    out.push_str(&extra);
    let _ = writeln!(
        out,
        "# HELP scaler_ebpf_program_runs_total Runs of each eBPF program (needs kernel.bpf_stats_enabled)."
    );
    let _ = writeln!(out, "# TYPE scaler_ebpf_program_runs_total counter");
    for p in &g.programs {
        let _ = writeln!(out, "scaler_ebpf_program_runs_total{{program=\"{}\"}} {}", p.name, p.run_count);
    }
    let _ = writeln!(out, "# HELP scaler_ebpf_program_run_seconds_total Time spent in each eBPF program.");
    let _ = writeln!(out, "# TYPE scaler_ebpf_program_run_seconds_total counter");
    for p in &g.programs {
        let _ = writeln!(
            out,
            "scaler_ebpf_program_run_seconds_total{{program=\"{}\"}} {:.9}",
            p.name,
            p.run_time_ns as f64 / 1e9
        );
    }
    if let Some(n) = g.counter_entries {
        let _ = writeln!(
            out,
            "# HELP scaler_ebpf_counter_entries Cgroups in the kernel's counter map (pruned of removed ones)."
        );
        let _ = writeln!(out, "# TYPE scaler_ebpf_counter_entries gauge");
        let _ = writeln!(out, "scaler_ebpf_counter_entries {n}");
    }
    let _ = writeln!(
        out,
        "# HELP scaler_agent_memory_reads_total Memory charged, per reading: from the kernel's one walk of every memory cgroup, or from the container's file."
    );
    let _ = writeln!(out, "# TYPE scaler_agent_memory_reads_total counter");
    let _ = writeln!(out, "scaler_agent_memory_reads_total{{source=\"kernel\"}} {}", g.mem_reads_kernel);
    let _ = writeln!(out, "scaler_agent_memory_reads_total{{source=\"cgroupfs\"}} {}", g.mem_reads_file);
    if let Some(n) = g.memcg_walk_visited {
        let _ = writeln!(
            out,
            "# HELP scaler_memcg_walk_visited Memory cgroups the kernel's last walk visited, dying ones included."
        );
        let _ = writeln!(out, "# TYPE scaler_memcg_walk_visited gauge");
        let _ = writeln!(out, "scaler_memcg_walk_visited {n}");
    }
    if !g.engine_calls.is_empty() {
        let _ =
            writeln!(out, "# HELP scaler_engine_calls_total Limits sent through each engine's API (failed ones too).");
        let _ = writeln!(out, "# TYPE scaler_engine_calls_total counter");
        for (e, c) in &g.engine_calls {
            let _ = writeln!(out, "scaler_engine_calls_total{{engine=\"{}\"}} {}", e.name(), c.calls);
        }
        let _ = writeln!(out, "# HELP scaler_engine_call_failures_total Calls an engine refused or did not answer.");
        let _ = writeln!(out, "# TYPE scaler_engine_call_failures_total counter");
        for (e, c) in &g.engine_calls {
            let _ = writeln!(out, "scaler_engine_call_failures_total{{engine=\"{}\"}} {}", e.name(), c.failures);
        }
        let _ = writeln!(out, "# HELP scaler_engine_call_seconds_total Time spent waiting on each engine's API.");
        let _ = writeln!(out, "# TYPE scaler_engine_call_seconds_total counter");
        for (e, c) in &g.engine_calls {
            let secs = c.total_us as f64 / 1e6;
            let _ = writeln!(out, "scaler_engine_call_seconds_total{{engine=\"{}\"}} {secs:.6}", e.name());
        }
        let _ = writeln!(out, "# HELP scaler_engine_call_max_seconds The longest call to each engine's API.");
        let _ = writeln!(out, "# TYPE scaler_engine_call_max_seconds gauge");
        for (e, c) in &g.engine_calls {
            let _ =
                writeln!(out, "scaler_engine_call_max_seconds{{engine=\"{}\"}} {:.6}", e.name(), c.max_us as f64 / 1e6);
        }
    }
    let _ = writeln!(out, "# HELP scaler_agent_ticks_total Sampling ticks since start.");
    let _ = writeln!(out, "# TYPE scaler_agent_ticks_total counter");
    let _ = writeln!(out, "scaler_agent_ticks_total {}", g.ticks);
    let _ = writeln!(out, "# HELP scaler_agent_tick_seconds Duration of the last tick.");
    let _ = writeln!(out, "# TYPE scaler_agent_tick_seconds gauge");
    let _ = writeln!(out, "scaler_agent_tick_seconds {:.6}", g.last_tick_us as f64 / 1e6);
    let _ = writeln!(out, "# HELP scaler_agent_tick_phase_seconds_total Time spent in each step of the tick.");
    let _ = writeln!(out, "# TYPE scaler_agent_tick_phase_seconds_total counter");
    for (phase, ns) in g.phases.named() {
        let _ = writeln!(out, "scaler_agent_tick_phase_seconds_total{{phase=\"{phase}\"}} {:.9}", ns as f64 / 1e9);
    }
    let _ = writeln!(out, "# HELP scaler_agent_containers Containers watched.");
    let _ = writeln!(out, "# TYPE scaler_agent_containers gauge");
    let _ = writeln!(out, "scaler_agent_containers {}", g.containers.len());
    out
}

pub async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&s))
}
