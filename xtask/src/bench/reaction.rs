//! `cargo xtask bench reaction`: time from a load step in an LXC container
//! until the raised CPU limit is in force, for the default policy (`follow`,
//! 200 ms tick) and for `classic` with the original's timing (5 s polling,
//! 10 s window, its deployed monitoring delay and event timeout), in the
//! same run. (The agent's cost with managed containers is in `bench
//! sampling`.)

use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{Agent, Lxc, release_binary, table};

const STEPS: usize = 20;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Reaction times (ms) of `STEPS` idle-to-one-core steps under `policy`.
fn steps(bin: &std::path::Path, policy: &str, tick_ms: u64, timeout: Duration) -> anyhow::Result<Vec<f64>> {
    let c = Lxc::start()?;
    let agent = Agent::start(bin, &format!("tick_ms = {tick_ms}\ndiscovery_interval_ms = {}\n", tick_ms.max(1000)))?;
    let end = Instant::now() + Duration::from_secs(20);
    while agent.get(&format!("/v1/stats/{}", c.name())).is_err() {
        anyhow::ensure!(Instant::now() < end, "agent never saw container {}", c.name());
        std::thread::sleep(Duration::from_millis(200));
    }
    let path = format!("/v1/containers/{}", c.name());
    agent.put(&path, &json!({"policy": policy, "resources": {"cpu": {"min": 100, "max": 2000, "current": 200}}}))?;
    let mut times = Vec::new();
    for step in 0..STEPS {
        // Every step starts idle at 200 millicores. Idle first: a sample
        // whose interval still holds the last step's load would raise the
        // limit before this step begins (and the step would see no raise).
        let end = Instant::now() + Duration::from_secs(10);
        while agent.get(&format!("/v1/stats/{}", c.name()))?["resources"]["cpu"]["usage"].as_u64().unwrap_or(0) > 50 {
            anyhow::ensure!(Instant::now() < end, "container {} never went idle", c.name());
            std::thread::sleep(Duration::from_millis(tick_ms));
        }
        std::thread::sleep(Duration::from_millis(2 * tick_ms));
        agent.put(&format!("{path}/resources/cpu"), &json!({"current": 200}))?;
        std::thread::sleep(Duration::from_millis(tick_ms.max(1000)));
        let cur = agent.get(&format!("/v1/containers/{}", c.name()))?["resources"]["cpu"]["current"].as_u64();
        anyhow::ensure!(cur == Some(200), "step {}: limit {cur:?} before the load, not 200", step + 1);
        let t0 = now_ms();
        let mut load = c.spawn_sh("echo $$ > /tmp/load.pid; exec stress-ng --cpu 1 --timeout 300s --quiet")?;
        let deadline = Instant::now() + timeout;
        let reaction = loop {
            let ev = agent.get(&format!("/v1/events?container={}&since_ms={}", c.name(), t0.saturating_sub(1)))?;
            let raise = ev["events"].as_array().into_iter().flatten().find(|e| {
                e["resource"] == "cpu" && e["new"].as_u64() > e["old"].as_u64() && e["time_ms"].as_u64() >= Some(t0)
            });
            if let Some(e) = raise {
                break Some(e["time_ms"].as_u64().unwrap_or(t0) - t0);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = c.sh("kill $(cat /tmp/load.pid)");
        let _ = load.wait();
        match reaction {
            Some(ms) => {
                eprintln!("    {policy} step {}: {ms} ms", step + 1);
                times.push(ms as f64);
            }
            None => eprintln!("    {policy} step {}: no raise within {timeout:?}", step + 1),
        }
    }
    Ok(times)
}

pub fn run() -> anyhow::Result<()> {
    let bin = release_binary()?;
    eprintln!("==> follow (the default), 200 ms tick: {STEPS} steps");
    let mut follow = steps(&bin, "follow", 200, Duration::from_secs(10))?;
    eprintln!("==> classic, original timing (5 s polling, 10 s window): {STEPS} steps");
    let mut classic = steps(&bin, "classic", 5000, Duration::from_secs(150))?;
    for v in [&mut follow, &mut classic] {
        v.sort_by(f64::total_cmp);
    }
    let row = |name: &str, v: &[f64]| {
        vec![
            name.to_owned(),
            format!("{}/{STEPS}", v.len()),
            format!("{:.0}", percentile(v, 50.0)),
            format!("{:.0}", percentile(v, 99.0)),
        ]
    };
    println!();
    let mut md = table(
        &["policy", "steps raised", "p50 ms", "p99 ms"],
        &[
            row("follow (default), 200 ms tick", &follow),
            row("classic, original timing (5 s poll, 10 s window)", &classic),
        ],
    );
    let ratio50 = percentile(&classic, 50.0) / percentile(&follow, 50.0);
    let ratio99 = percentile(&classic, 99.0) / percentile(&follow, 99.0);
    let line = format!("\nclassic / follow: p50 {ratio50:.0}x, p99 {ratio99:.0}x\n");
    print!("{line}");
    md.push_str(&line);
    let result = json!({
        "steps": STEPS,
        "follow_ms": follow, "classic_ms": classic,
        "follow_p50_ms": percentile(&follow, 50.0), "follow_p99_ms": percentile(&follow, 99.0),
        "classic_p50_ms": percentile(&classic, 50.0), "classic_p99_ms": percentile(&classic, 99.0),
        "ratio_p50": ratio50, "ratio_p99": ratio99,
        "markdown": md,
    });
    super::write_result("reaction", &serde_json::to_string_pretty(&result)?)?;
    eprintln!("wrote bench-results/reaction.json");
    Ok(())
}
