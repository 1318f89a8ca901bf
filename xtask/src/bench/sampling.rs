//! `cargo xtask bench sampling`: what in-kernel sampling costs.
//!
//! 1. eBPF cost per event (`kernel.bpf_stats_enabled`, read back through the
//!    agent's `/metrics`) under a mixed load: CPU with sleeps, a context
//!    switch storm, direct I/O and a loopback transfer.
//! 2. The agent's CPU and RSS with 10, 100, 500 and 1,000 cgroups (each
//!    with a process), watched and then managed (subscribed under the
//!    default policy), at the default tick.
//! 3. atop, the monitor the original system used, sampling the same 500
//!    cgroups' processes at its 1 s interval, in the same run.
//!
//! With `--baseline BIN` (an earlier `scaler`), step 2 measures that
//! binary too, right before this one at each size: a before/after in one
//! run, on the same machine state. `--repeat N` measures each N times,
//! taking turns, and keeps the median.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::harness::{Agent, Cgroups, cpu_percent, release_binary, rss_kib, table, temp_dir};

const MEASURE_S: u64 = 15;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// An earlier `scaler` binary measured beside this one (step 2).
    #[arg(long, value_name = "BIN")]
    pub baseline: Option<std::path::PathBuf>,
    /// Cgroup counts of step 2.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 500, 1000])]
    pub sizes: Vec<usize>,
    /// Step 2 only, managed containers only (a quick before/after of the
    /// management loop; no eBPF table, no atop).
    #[arg(long)]
    pub managed_only: bool,
    /// `[agent]` settings for the baseline agent only (e.g.
    /// `memory_from_kernel = false`); without `--baseline`, this
    /// binary runs as the baseline with them: one setting's before/after.
    #[arg(long, value_name = "TOML")]
    pub baseline_config: Option<String>,
    /// Record the agent under `perf record --call-graph dwarf` during each measurement of
    /// step 2, into this directory (`perf-<n>-<managed|watched>.data`; the
    /// recording costs CPU of its own: profile with it, measure without).
    #[arg(long, value_name = "DIR")]
    pub perf: Option<std::path::PathBuf>,
    /// Step 2 measures each agent this many times, the baseline and this
    /// one taking turns (which goes first alternates), and reports the run
    /// with the median CPU and the spread: this shared VM's CPU figures
    /// move by 20-30 % from minute to minute.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
}

/// The run with the median CPU, with every run's CPU beside it.
fn median_run(mut runs: Vec<Value>) -> Value {
    let cpu = |r: &Value| r["cpu_percent_of_one_core"].as_f64().unwrap_or(0.0);
    let all: Vec<f64> = runs.iter().map(cpu).collect();
    runs.sort_by(|a, b| cpu(a).total_cmp(&cpu(b)));
    let mut m = runs.swap_remove(runs.len() / 2);
    if all.len() > 1 {
        m["cpu_percent_runs"] = json!(all);
    }
    m
}

/// `(runs, seconds)` per program from the agent's `/metrics`.
fn program_stats(agent: &Agent) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let text = agent.get_text("/metrics")?;
    let mut out: Vec<(String, f64, f64)> = Vec::new();
    for line in text.lines() {
        let (metric, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        for (prefix, runs) in [
            ("scaler_ebpf_program_runs_total{program=\"", true),
            ("scaler_ebpf_program_run_seconds_total{program=\"", false),
        ] {
            if let Some(name) = metric.strip_prefix(prefix).and_then(|r| r.strip_suffix("\"}")) {
                let i = match out.iter().position(|(n, _, _)| n == name) {
                    Some(i) => i,
                    None => {
                        out.push((name.to_owned(), 0.0, 0.0));
                        out.len() - 1
                    }
                };
                if runs { out[i].1 = value } else { out[i].2 = value }
            }
        }
    }
    Ok(out)
}

fn ebpf_cost(bin: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let mut cg = Cgroups::new()?;
    let secs = format!("{}s", MEASURE_S + 15);
    cg.child_with("cpu", &["stress-ng", "--cpu", "1", "--cpu-load", "60", "--timeout", &secs, "--quiet"])?;
    cg.child_with("switch", &["stress-ng", "--switch", "1", "--timeout", &secs, "--quiet"])?;
    let tmp = temp_dir()?;
    let file = tmp.path().join("fio.dat");
    cg.child_with(
        "io",
        &[
            "fio",
            "--name=b",
            &format!("--filename={}", file.display()),
            "--rw=randrw",
            "--bs=64k",
            "--size=128M",
            "--direct=1",
            "--time_based",
            &format!("--runtime={}", MEASURE_S + 15),
        ],
    )?;
    // The transfer's cgroups exist before the agent starts and its sockets
    // open after the agent has discovered them, so they are marked for
    // pacing and `tcp_pacing` runs on every round trip, as it does for any
    // container the agent tracks.
    cg.mkdir("netd")?;
    cg.mkdir("net")?;
    let agent = Agent::start(
        bin,
        &format!(
            "bpf_stats = true\nbpf_stats_floor = true\n[discovery]\nsystemd_services = false\nwatch = [\"{}/*\"]\n",
            cg.name()
        ),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port().to_string();
    cg.child_with("netd", &["iperf3", "-s", "-p", &port])?;
    std::thread::sleep(Duration::from_millis(500));
    cg.child_with(
        "net",
        &["iperf3", "-c", "127.0.0.1", "-p", &port, "-t", &(MEASURE_S + 12).to_string(), "-b", "200M"],
    )?;
    // Statistics refresh every 25 ticks (5 s): wait for one, measure across two.
    std::thread::sleep(Duration::from_secs(6));
    let a = program_stats(&agent)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(MEASURE_S));
    let b = program_stats(&agent)?;
    let dt = t0.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for (name, runs, secs) in &b {
        let (r0, s0) = a.iter().find(|(n, _, _)| n == name).map_or((0.0, 0.0), |(_, r, s)| (*r, *s));
        let (dr, ds) = (runs - r0, secs - s0);
        rows.push(json!({
            "program": name,
            "events_per_s": (dr / dt).round(),
            "ns_per_event": if dr > 0.0 { (ds * 1e9 / dr).round() } else { 0.0 },
            "cpu_percent_of_one_core": (ds / dt * 100.0 * 1000.0).round() / 1000.0,
        }));
    }
    Ok(rows)
}

/// The host's CPUs in millicores.
fn cpu_capacity_mc() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000
}

/// The agent's CPU and RSS with `n` cgroups (one sleeping process each),
/// watched, or `managed` (each subscribed under the default policy).
fn agent_overhead(
    bin: &std::path::Path,
    n: usize,
    managed: bool,
    extra: &str,
    perf: Option<&std::path::Path>,
) -> anyhow::Result<Value> {
    let mut cg = Cgroups::new()?;
    for i in 0..n {
        cg.child_with(&format!("c{i}"), &["sleep", "600"])?;
    }
    let agent =
        Agent::start(bin, &format!("{extra}\n[discovery]\nsystemd_services = false\nwatch = [\"{}/*\"]\n", cg.name()))?;
    // Discovery and a first scan of everything.
    let end = Instant::now() + Duration::from_secs(30);
    while agent.get("/v1/stats")?["containers"].as_array().map_or(0, Vec::len) < n {
        anyhow::ensure!(Instant::now() < end, "agent never saw all {n} cgroups");
        std::thread::sleep(Duration::from_millis(200));
    }
    if managed {
        // Memory for every container; CPU too for as many as the host's
        // cores admit at the smallest CPU limit (10 millicores each: 200
        // on two cores).
        let cpu_slots = (cpu_capacity_mc() / 10) as usize;
        for i in 0..n {
            let mut resources = json!({"mem": {"min": 16 << 20, "max": 256 << 20}});
            if i < cpu_slots {
                resources["cpu"] = json!({"min": 10, "max": 1000});
            }
            agent
                .put(&format!("/v1/containers/c{i}"), &json!({ "resources": resources }))
                .with_context(|| format!("subscribing c{i}"))?;
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let (phases0, ticks0) = phases(&agent)?;
    let recording = match perf {
        Some(dir) => {
            let out = dir.join(format!("perf-{n}-{}.data", if managed { "managed" } else { "watched" }));
            let child = std::process::Command::new("perf")
                .args(["record", "-q", "-F", "4999", "--call-graph", "dwarf,16384", "-o"])
                .arg(&out)
                .args(["-p", &agent.pid().to_string(), "--", "sleep", &MEASURE_S.to_string()])
                .spawn()
                .context("starting perf record (is perf installed?)")?;
            Some((child, out))
        }
        None => None,
    };
    let cpu = cpu_percent(agent.pid(), MEASURE_S)?;
    if let Some((mut child, out)) = recording {
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "perf record: {status}");
        eprintln!("perf profile: {}", out.display());
    }
    let (phases1, ticks1) = phases(&agent)?;
    let rss = rss_kib(agent.pid())?;
    // Where a tick's time goes, µs per tick per container.
    let per = (ticks1.saturating_sub(ticks0)).max(1) as f64 * n.max(1) as f64;
    let breakdown: serde_json::Map<String, Value> = phases1
        .iter()
        .map(|(k, v)| {
            (k.clone(), json!(((v - phases0.get(k).copied().unwrap_or(0.0)) * 1e6 / per * 100.0).round() / 100.0))
        })
        .collect();
    let mut ticks = Vec::new();
    for _ in 0..10 {
        ticks.push(agent.get("/healthz")?["last_tick_us"].as_u64().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(230));
    }
    let tick_us = ticks.iter().sum::<u64>() / ticks.len() as u64;
    Ok(
        json!({"cgroups": n, "managed": managed, "tick_ms": 200, "cpu_percent_of_one_core": (cpu * 100.0).round() / 100.0,
              "rss_mib": (rss as f64 / 1024.0 * 10.0).round() / 10.0, "tick_us": tick_us,
              "us_per_container_tick": breakdown}),
    )
}

/// The agent's cumulative tick phases (seconds, from `/metrics`) and ticks.
fn phases(agent: &Agent) -> anyhow::Result<(std::collections::BTreeMap<String, f64>, u64)> {
    let text = agent.get_text("/metrics")?;
    let mut out = std::collections::BTreeMap::new();
    let mut ticks = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("scaler_agent_tick_phase_seconds_total{phase=\"")
            && let Some((phase, v)) = rest.split_once("\"} ")
        {
            out.insert(phase.to_owned(), v.trim().parse().unwrap_or(0.0));
        }
        if let Some(v) = line.strip_prefix("scaler_agent_ticks_total ") {
            ticks = v.trim().parse().unwrap_or(0);
        }
    }
    Ok((out, ticks))
}

fn atop_overhead() -> anyhow::Result<Value> {
    let mut cg = Cgroups::new()?;
    for i in 0..500 {
        cg.child_with(&format!("c{i}"), &["sleep", "300"])?;
    }
    let tmp = temp_dir()?;
    let mut atop = std::process::Command::new("atop")
        .args(["-w"])
        .arg(tmp.path().join("atop.raw"))
        .arg("1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting atop (cargo xtask setup installs it)")?;
    std::thread::sleep(Duration::from_secs(3));
    let result = (|| -> anyhow::Result<Value> {
        let cpu = cpu_percent(atop.id(), MEASURE_S)?;
        let rss = rss_kib(atop.id())?;
        Ok(
            json!({"interval_ms": 1000, "processes_in_cgroups": 500, "cpu_percent_of_one_core": (cpu * 100.0).round() / 100.0,
                  "rss_mib": (rss as f64 / 1024.0 * 10.0).round() / 10.0}),
        )
    })();
    let _ = atop.kill();
    let _ = atop.wait();
    result
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let bin = release_binary()?;
    let baseline = match &args.baseline {
        Some(b) => Some(b.canonicalize().with_context(|| format!("--baseline {}", b.display()))?),
        None if args.baseline_config.is_some() => Some(bin.clone()),
        None => None,
    };
    // Keys of the [agent] table, as TOML lines (`\n` between them).
    let baseline_extra = args.baseline_config.as_deref().unwrap_or("").replace("\\n", "\n");
    let ebpf = match args.managed_only {
        true => Vec::new(),
        false => {
            eprintln!("==> eBPF cost per event under a mixed load ({MEASURE_S} s)");
            ebpf_cost(&bin)?
        }
    };
    if let Some(dir) = &args.perf {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut agent = Vec::new();
    let modes: &[bool] = if args.managed_only { &[true] } else { &[false, true] };
    for &managed in modes {
        for &n in &args.sizes {
            let how = if managed { "managing" } else { "watching" };
            let (mut base_runs, mut runs) = (Vec::new(), Vec::new());
            for round in 0..args.repeat.max(1) {
                let of = |n_: usize| {
                    if args.repeat > 1 { format!(", run {}/{}", n_ + 1, args.repeat) } else { String::new() }
                };
                // The baseline first in even rounds, second in odd ones.
                let order = if round % 2 == 0 { [true, false] } else { [false, true] };
                for is_baseline in order {
                    match (&baseline, is_baseline) {
                        (Some(b), true) => {
                            eprintln!("==> baseline agent {how} {n} cgroups ({MEASURE_S} s{})", of(round));
                            let mut r = agent_overhead(b, n, managed, &baseline_extra, None)?;
                            r["baseline"] = true.into();
                            if let Some(c) = &args.baseline_config {
                                r["baseline_config"] = c.clone().into();
                            }
                            base_runs.push(r);
                        }
                        (_, false) => {
                            eprintln!("==> agent {how} {n} cgroups ({MEASURE_S} s{})", of(round));
                            runs.push(agent_overhead(&bin, n, managed, "", args.perf.as_deref())?);
                        }
                        (None, true) => {}
                    }
                }
            }
            if !base_runs.is_empty() {
                agent.push(median_run(base_runs));
            }
            agent.push(median_run(runs));
        }
    }
    let atop = match args.managed_only {
        true => Value::Null,
        false => {
            eprintln!("==> atop -w at 1 s with 500 cgroups' processes ({MEASURE_S} s)");
            atop_overhead()?
        }
    };

    println!("\neBPF programs (kernel.bpf_stats_enabled), mixed load:\n");
    let rows: Vec<Vec<String>> = ebpf
        .iter()
        .map(|r| {
            vec![
                r["program"].as_str().unwrap_or("?").to_owned(),
                r["events_per_s"].to_string(),
                r["ns_per_event"].to_string(),
                r["cpu_percent_of_one_core"].to_string(),
            ]
        })
        .collect();
    let t1 = table(&["program", "events/s", "ns/event", "CPU % of one core"], &rows);
    println!("\nMonitoring overhead:\n");
    let mut rows: Vec<Vec<String>> = agent
        .iter()
        .map(|r| {
            vec![
                format!(
                    "{}scaler agent, {}",
                    if r["baseline"] == true { "baseline " } else { "" },
                    if r["managed"] == true { "managed" } else { "watched" }
                ),
                r["cgroups"].to_string(),
                "200 ms".to_owned(),
                match r["cpu_percent_runs"].as_array() {
                    Some(all) => {
                        let v: Vec<f64> = all.iter().filter_map(Value::as_f64).collect();
                        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
                        format!("{} (median of {}: {lo}-{hi})", r["cpu_percent_of_one_core"], v.len())
                    }
                    None => r["cpu_percent_of_one_core"].to_string(),
                },
                r["rss_mib"].to_string(),
                format!("{} us", r["tick_us"]),
                r["us_per_container_tick"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(_, v)| v.as_f64() > Some(0.0))
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect();
    if !atop.is_null() {
        rows.push(vec![
            "atop -w (the original's monitor)".to_owned(),
            "500 (processes)".to_owned(),
            "1 s".to_owned(),
            atop["cpu_percent_of_one_core"].to_string(),
            atop["rss_mib"].to_string(),
            "-".to_owned(),
            "-".to_owned(),
        ]);
    }
    let t2 = table(
        &["monitor", "cgroups", "interval", "CPU % of one core", "RSS MiB", "tick time", "µs per container per tick"],
        &rows,
    );
    let result = json!({"ebpf": ebpf, "agent": agent, "atop": atop, "markdown": format!("{t1}\n{t2}")});
    // A partial run does not replace the full one, nor a profiled run
    // (perf's own cost is in its figures) a measured one.
    let name = match (args.perf.is_some(), args.managed_only) {
        (true, _) => "sampling-profiled",
        (false, true) => "sampling-managed",
        (false, false) => "sampling",
    };
    super::write_result(name, &serde_json::to_string_pretty(&result)?)?;
    eprintln!("wrote bench-results/{name}.json");
    Ok(())
}
