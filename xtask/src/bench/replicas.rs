//! `cargo xtask bench aggregator`'s replicated mode
//! (`SCALER_BENCH_REPLICATED=HOSTS[,HOSTS...]`, `SCALER_BENCH_REPLICAS`,
//! default 3):
//! one etcd member and that many aggregator replicas on it, the hosts
//! registered through the API and divided among the replicas by their
//! leases; then every replica's rounds, CPU and memory, and etcd's.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::aggregator::{Stop, get, usage};

/// PUT `body` (JSON) at `path` on 127.0.0.1:`port`: the status.
fn put(port: u16, path: &str, body: &Value) -> anyhow::Result<u16> {
    let addr = format!("127.0.0.1:{port}");
    Ok(scaler_testkit::http::request(&addr, "PUT", path, Some(&body.to_string()))?.0)
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Stop> {
    let child = Command::new(bin)
        .args(args)
        .env("SCALER_LOG", "error")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Stop(child))
}

/// Round time percentiles of the samples.
fn percentiles(mut d: Vec<f64>) -> Value {
    d.sort_by(f64::total_cmp);
    let pct = |q: f64| d.get(((d.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(f64::NAN);
    json!({"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0), "rounds": d.len()})
}

/// `replicas` aggregators over the first `hosts` of the fleet.
pub fn measure(bin: &Path, ports: &[u16], hosts: usize, n: u64, secs: u64, replicas: usize) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("scaler-bench-replicas-{}-{hosts}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (client, peer) = (scaler_testkit::free_port()?, scaler_testkit::free_port()?);
    let etcd = spawn(
        Path::new("etcd"),
        &[
            "--name=bench".into(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=bench=http://127.0.0.1:{peer}"),
        ],
        &dir.join("etcd.log"),
    )?;
    let mut aggs = Vec::new();
    for r in 0..replicas {
        let port = scaler_testkit::free_port()?;
        let cfg = dir.join(format!("r{r}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[aggregator]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n\
                 [store]\netcd = [\"http://127.0.0.1:{client}\"]\nreplica = \"r{r}\"\n",
                dir.join(format!("r{r}")).display()
            ),
        )?;
        let started = Instant::now();
        let agg = loop {
            // etcd may still be starting: the aggregator then stops at once.
            let a = spawn(
                bin,
                &["aggregator".into(), "--config".into(), cfg.display().to_string()],
                &dir.join(format!("r{r}.log")),
            )?;
            std::thread::sleep(Duration::from_millis(500));
            if get(port, "/healthz").is_ok() {
                break a;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("replica r{r} did not start; log in {}", dir.display());
            }
        };
        aggs.push((port, agg));
    }
    let t = Instant::now();
    let mut retried = 0;
    for (h, p) in ports.iter().take(hosts).enumerate() {
        let body = json!({"url": format!("http://127.0.0.1:{p}")});
        // 503: etcd did not answer in time on this saturated machine; a
        // client tries again.
        let mut s = put(aggs[0].0, &format!("/v1/hosts/sim{h}"), &body)?;
        for _ in 0..5 {
            if s != 503 {
                break;
            }
            retried += 1;
            std::thread::sleep(Duration::from_secs(1));
            s = put(aggs[0].0, &format!("/v1/hosts/sim{h}"), &body)?;
        }
        if s != 200 && s != 201 {
            bail!("registering sim{h}: HTTP {s}");
        }
    }
    let registered_s = t.elapsed().as_secs_f64();
    // Every host owned, and ten rounds on every replica.
    let warm = Instant::now();
    loop {
        let c = get(aggs[0].0, "/v1/cluster")?;
        let owned = c["owners"].as_object().map_or(0, serde_json::Map::len);
        let rounds = aggs.iter().filter_map(|(p, _)| get(*p, "/healthz").ok()?["rounds"].as_u64()).min().unwrap_or(0);
        if owned == hosts && rounds >= 10 {
            break;
        }
        if warm.elapsed() > Duration::from_secs(180) {
            bail!("{owned} of {hosts} hosts owned, {rounds} rounds after 180 s; logs in {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let pids: Vec<u32> = aggs.iter().map(|(_, a)| a.0.id()).chain([etcd.0.id()]).collect();
    let cpu0: Vec<f64> = pids.iter().map(|p| usage(*p).map_or(0.0, |u| u.0)).collect();
    let t0 = Instant::now();
    let mut samples: Vec<Vec<(u64, f64)>> = vec![Vec::new(); replicas];
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(250));
        for (i, (port, _)) in aggs.iter().enumerate() {
            let Ok(h) = get(*port, "/healthz") else { continue };
            let r = h["rounds"].as_u64().unwrap_or(0);
            if samples[i].last().is_none_or(|l| l.0 < r) {
                samples[i].push((r, h["round_ms"]["last"].as_f64().unwrap_or(f64::NAN)));
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut per = Vec::new();
    for (i, (port, _)) in aggs.iter().enumerate() {
        let (cpu1, rss, hwm) = usage(pids[i])?;
        let gathers = get(*port, "/v1/cluster")?["gathers"].as_array().map_or(0, Vec::len);
        per.push(json!({
            "replica": format!("r{i}"), "hosts_gathered": gathers,
            "round_ms": percentiles(samples[i].iter().map(|s| s.1).collect()),
            "cpu_percent_of_one_core": (cpu1 - cpu0[i]) / wall * 100.0, "rss_mib": rss, "peak_rss_mib": hwm,
        }));
    }
    let (ecpu, erss, _) = usage(etcd.0.id())?;
    drop(aggs);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "replicated": true, "replicas": per, "hosts": hosts, "containers_per_host": n, "containers": hosts as u64 * n,
        "seconds": wall, "registered_s": registered_s, "registrations_retried": retried, "etcd": {"cpu_percent_of_one_core": (ecpu - cpu0[replicas]) / wall * 100.0, "rss_mib": erss},
    }))
}

/// The table of a replicated run.
pub fn print(r: &Value) {
    println!();
    println!(
        "replicated: {} hosts x {} containers over {} replicas on one etcd member",
        r["hosts"],
        r["containers_per_host"],
        r["replicas"].as_array().map_or(0, Vec::len)
    );
    println!(
        "hosts registered through one replica in {:.1} s ({} retried after a 503)",
        r["registered_s"].as_f64().unwrap_or(0.0),
        r["registrations_retried"]
    );
    println!("| replica | hosts gathered | round p50 / p99 ms | CPU % of a core | RSS MiB |");
    println!("|---|---|---|---|---|");
    for p in r["replicas"].as_array().into_iter().flatten() {
        println!(
            "| {} | {} | {:.0} / {:.0} | {:.0} | {:.0} |",
            p["replica"].as_str().unwrap_or(""),
            p["hosts_gathered"],
            p["round_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            p["round_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            p["cpu_percent_of_one_core"].as_f64().unwrap_or(0.0),
            p["rss_mib"].as_f64().unwrap_or(0.0),
        );
    }
    println!(
        "| etcd | | | {:.0} | {:.0} |",
        r["etcd"]["cpu_percent_of_one_core"].as_f64().unwrap_or(0.0),
        r["etcd"]["rss_mib"].as_f64().unwrap_or(0.0)
    );
}

/// Fleet sizes of the replicated mode and the replicas, from the
/// environment (none: the mode is off).
pub fn wanted() -> (Vec<usize>, usize) {
    let sizes = std::env::var("SCALER_BENCH_REPLICATED").unwrap_or_default();
    let replicas = std::env::var("SCALER_BENCH_REPLICAS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    (sizes.split(',').filter_map(|s| s.trim().parse().ok()).collect(), replicas)
}
