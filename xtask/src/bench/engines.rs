//! `cargo xtask bench engines`: what one limit change costs through each
//! engine's API (Docker, Podman, LXD, each a daemon of the bench's own, as
//! in the end-to-end tests) against a cgroupfs write to the same container:
//! the measurement behind writing cgroupfs on the tick and telling the
//! engine once a value has settled.

use std::{path::Path, time::Instant};

use anyhow::Context as _;
use scaler_testkit::engines::{Engine, EngineContainer, Kind};

/// Changes timed per path.
const N: usize = 60;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The request (method, path, JSON body) that sets a CPU limit.
type Request = Box<dyn Fn(u64) -> (String, String, String)>;

/// The container's cgroup in the v1 `cpu` tree (or v2), and how the
/// engine's API is asked to set `millicores`.
fn target(c: &EngineContainer) -> anyhow::Result<(std::path::PathBuf, Request)> {
    let id = match c.engine.kind {
        Kind::Lxd => c.name.clone(),
        _ => c.client(&["inspect", "-f", "{{.Id}}", &c.name])?.trim().to_owned(),
    };
    let rel = match c.engine.kind {
        Kind::Docker => format!("{}/docker/{id}", c.parent),
        Kind::Podman => format!("{}/libpod-{id}", c.parent),
        Kind::Lxd => format!("{}/lxc.payload.{id}", c.parent),
    };
    let dir = match scaler_testkit::cgroupfs::v1_root("cpu") {
        Some(root) => root.join(rel),
        None => scaler_testkit::cgroupfs::v2_root().context("no cgroup v2 root")?.join(rel),
    };
    let call: Request = match c.engine.kind {
        Kind::Docker => Box::new(move |mc| {
            let body = format!(r#"{{"CpuPeriod":100000,"CpuQuota":{}}}"#, mc * 100);
            ("POST".into(), format!("/containers/{id}/update"), body)
        }),
        Kind::Podman => Box::new(move |mc| {
            let body = format!(r#"{{"cpu":{{"quota":{},"period":100000}}}}"#, mc * 100);
            ("POST".into(), format!("/v4.0.0/libpod/containers/{id}/update"), body)
        }),
        Kind::Lxd => Box::new(move |mc| {
            let body = format!(r#"{{"config":{{"limits.cpu.allowance":"{}ms/100ms"}}}}"#, mc / 10);
            ("PATCH".into(), format!("/1.0/instances/{id}"), body)
        }),
    };
    Ok((dir, call))
}

/// Milliseconds per change: (through the API, through cgroupfs).
fn measure(engine: &Engine) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let c = engine.run("scaler-test-bench-eng", &[])?;
    let (dir, call) = target(&c)?;
    let (quota_file, v2) =
        if dir.join("cpu.max").exists() { (dir.join("cpu.max"), true) } else { (dir.join("cpu.cfs_quota_us"), false) };
    let mut api = Vec::with_capacity(N);
    let mut fs = Vec::with_capacity(N);
    for i in 0..N {
        let mc = if i % 2 == 0 { 300 } else { 400 };
        let (method, path, body) = call(mc);
        let t = Instant::now();
        let (status, text) = scaler_testkit::http::unix_request(&engine.socket, &method, &path, Some(&body))?;
        api.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!((200..300).contains(&status), "{method} {path}: {status} {text}");
        let quota = if v2 { format!("{} 100000", mc * 100) } else { (mc * 100).to_string() };
        let t = Instant::now();
        std::fs::write(&quota_file, &quota).with_context(|| quota_file.display().to_string())?;
        fs.push(t.elapsed().as_secs_f64() * 1e3);
    }
    check_in_force(&quota_file, v2)?;
    Ok((api, fs))
}

/// The last value written is in force (the writes were real).
fn check_in_force(file: &Path, v2: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let quota = if v2 { text.split_whitespace().next().unwrap_or("") } else { text.trim() };
    anyhow::ensure!(quota == "40000", "{}: {text:?}, not the 40000 written last", file.display());
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for kind in [Kind::Docker, Kind::Podman, Kind::Lxd] {
        let name = format!("{kind:?}").to_lowercase();
        eprintln!("bench engines: {name}");
        let engine = Engine::start(kind).with_context(|| format!("starting {name}"))?;
        let (mut api, mut fs) = measure(&engine).with_context(|| format!("{name}: {}", engine.log()))?;
        api.sort_by(f64::total_cmp);
        fs.sort_by(f64::total_cmp);
        let (a50, a95, f50, f95) =
            (percentile(&api, 0.5), percentile(&api, 0.95), percentile(&fs, 0.5), percentile(&fs, 0.95));
        rows.push(vec![
            name.clone(),
            format!("{a50:.2}"),
            format!("{a95:.2}"),
            format!("{:.3}", f50),
            format!("{:.3}", f95),
            format!("{:.0}x", a50 / f50.max(1e-6)),
        ]);
        json.push(serde_json::json!({
            "engine": name, "changes": N,
            "api_ms_p50": a50, "api_ms_p95": a95, "cgroupfs_ms_p50": f50, "cgroupfs_ms_p95": f95,
        }));
    }
    println!(
        "{}",
        super::harness::table(
            &["engine", "API ms p50", "API ms p95", "cgroupfs ms p50", "cgroupfs ms p95", "API / cgroupfs"],
            &rows
        )
    );
    super::write_result("engines", &serde_json::to_string_pretty(&json)?)
}
