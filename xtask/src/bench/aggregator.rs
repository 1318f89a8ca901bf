//! `cargo xtask bench aggregator`: one release `scaler aggregator` gathering
//! a fleet of simulated agents, each serving real HTTP on its own loopback
//! port (1,000 hosts x 50 containers by default; `SCALER_BENCH_HOSTS`,
//! `SCALER_BENCH_CONTAINERS`, `SCALER_BENCH_SECONDS` change that). The fleet
//! runs in this process (a thread per port and per connection) and answers
//! `/v1/stats`, `/v1/host`, `/v1/containers` and `/v1/events` with the
//! agent's full JSON shapes and values that change every second. Reports
//! round time (from the aggregator's `/healthz`, every round of the
//! measurement), the aggregator's CPU (from /proc) and memory (RSS). The
//! largest fleet is measured a second time over TLS (rustls on both
//! sides, a CA of the bench's own, keep-alive connections reused), so the
//! cost of TLS shows beside plain HTTP in one run (`SCALER_BENCH_TLS=0`
//! skips it). `SCALER_BENCH_BASELINE=BIN` measures the largest fleet with
//! an earlier `scaler` binary too, just before this one, in the same run.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use scaler_testkit::fleet as sim;

use crate::util;

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A CA of the bench's own and a server certificate for 127.0.0.1 it
/// signed: the fleet's TLS configuration and the CA's PEM (for
/// `agents_ca`).
fn test_tls() -> anyhow::Result<(Arc<rustls::ServerConfig>, String)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = p.signed_by(&key, &ca, &ca_key)?;
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)?;
    Ok((Arc::new(cfg), ca.pem()))
}

/// Starts `hosts` simulated agents (over TLS with `tls`); returns their
/// ports.
fn fleet(hosts: u64, n: u64, tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<Vec<u16>> {
    let ports = sim::start(hosts, n, move |conn, h, fixed| match &tls {
        None => sim::serve(conn, h, n, &fixed),
        Some(cfg) => {
            if let Ok(c) = rustls::ServerConnection::new(cfg.clone()) {
                sim::serve(rustls::StreamOwned::new(c, conn), h, n, &fixed);
            }
        }
    });
    ports.context("starting the simulated agents")
}

/// GET `path` on 127.0.0.1:`port` as JSON (plain std: xtask has no HTTP client).
pub(super) fn get(port: u16, path: &str) -> anyhow::Result<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).context("no HTTP body")?;
    Ok(serde_json::from_str(body)?)
}

/// `(utime + stime)` in seconds and `(VmRSS, VmHWM)` in MiB of `pid`.
pub(super) fn usage(pid: u32) -> anyhow::Result<(f64, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|x| x.1).context("bad /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f
        .get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    Ok((ticks / 100.0, kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0))
}

fn raise_nofile() {
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    unsafe extern "C" {
        fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut r = Rlimit { cur: 0, max: 0 };
    // SAFETY: plain syscalls with a valid pointer.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut r) == 0 {
            r.cur = r.max;
            setrlimit(RLIMIT_NOFILE, &r);
        }
    }
}

pub(super) struct Stop(pub(super) Child);

impl Drop for Stop {
    fn drop(&mut self) {
        // SIGTERM by PID (it flushes history), then reap; SIGKILL after
        // 30 s (a wedged aggregator does not hang the bench).
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        for _ in 0..300 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One aggregator over the first `hosts` of the fleet: warm up, measure.
/// `ca`: the fleet serves TLS, signed by this CA (PEM).
fn measure(bin: &PathBuf, ports: &[u16], hosts: usize, n: u64, secs: u64, ca: Option<&str>) -> anyhow::Result<Value> {
    let tag = if ca.is_some() { "-tls" } else { "" };
    let dir = std::env::temp_dir().join(format!("scaler-bench-aggregator-{}-{hosts}{tag}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut cfg =
        format!("[aggregator]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n", dir.join("state").display());
    if let Some(pem) = ca {
        std::fs::write(dir.join("ca.pem"), pem)?;
        let _ = writeln!(cfg, "agents_ca = \"{}\"", dir.join("ca.pem").display());
    }
    let scheme = if ca.is_some() { "https" } else { "http" };
    for (h, p) in ports.iter().take(hosts).enumerate() {
        let _ = write!(cfg, "[[hosts]]\nname = \"sim{h}\"\nurl = \"{scheme}://127.0.0.1:{p}\"\n");
    }
    std::fs::write(dir.join("aggregator.toml"), cfg)?;
    let log = std::fs::File::create(dir.join("aggregator.log"))?;
    let child = Command::new(bin)
        .args(["aggregator", "--config"])
        .arg(dir.join("aggregator.toml"))
        .env("SCALER_LOG", "error")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let agg = Stop(child);
    let pid = agg.0.id();
    let warm = Instant::now();
    // Ten rounds (the first reads every host's stored history blocks).
    while get(port, "/healthz").ok().and_then(|h| h["rounds"].as_u64()).unwrap_or(0) < 10 {
        if warm.elapsed() > Duration::from_secs(120) {
            bail!("fewer than 10 rounds in 120 s; log in {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (cpu0, _, _) = usage(pid)?;
    let t0 = Instant::now();
    let mut rounds: Vec<(u64, f64, f64, f64)> = Vec::new();
    let (mut stale_max, mut stale_sum, mut samples) = (0, 0, 0);
    let mut last = Value::Null;
    // RSS every 30 s: memory that grows as history blocks fill shows.
    let mut rss_every_30s = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(250));
        if t0.elapsed() >= Duration::from_secs(30 * (rss_every_30s.len() as u64 + 1)) {
            rss_every_30s.push(usage(pid)?.1.round());
        }
        let h = get(port, "/healthz")?;
        let stale = h["stale_hosts"].as_u64().unwrap_or(0);
        (stale_max, stale_sum, samples) = (stale_max.max(stale), stale_sum + stale, samples + 1);
        let r = h["rounds"].as_u64().unwrap_or(0);
        if rounds.last().is_none_or(|l| l.0 < r) {
            let ms = |k: &str| h["round_ms"][k].as_f64().unwrap_or(f64::NAN);
            rounds.push((r, ms("last"), ms("gather"), ms("record")));
        }
        last = h;
    }
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, rss, hwm) = usage(pid)?;
    drop(agg);
    let _ = std::fs::remove_dir_all(&dir);
    let mut d: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    d.sort_by(f64::total_cmp);
    let pct = |q: f64| d.get(((d.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(f64::NAN);
    let mean = |i: usize| rounds.iter().map(|r| [r.1, r.2, r.3][i]).sum::<f64>() / rounds.len().max(1) as f64;
    Ok(json!({
        "tls": ca.is_some(), "hosts": hosts, "containers_per_host": n, "containers": hosts as u64 * n, "poll_ms": 1000, "seconds": wall,
        "rounds": rounds.len(),
        "round_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0), "mean": mean(0)},
        "gather_ms_mean": mean(1), "record_ms_mean": mean(2),
        "cpu_percent_of_one_core": (cpu1 - cpu0) / wall * 100.0, "rss_mib": rss, "peak_rss_mib": hwm, "rss_mib_every_30s": rss_every_30s,
        "stale_hosts_mean": stale_sum as f64 / f64::from(samples.max(1)), "stale_hosts_max": stale_max,
        "history_flush": last["flush"], "history_entities": last["history_entities"], "store_bytes": last["store_bytes"],
        "loadavg_before": load0.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "loadavg_after": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    }))
}

pub fn run() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("SCALER_BENCH_HOSTS")
        .unwrap_or_else(|_| "100,250,500,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let (n, secs) = (env_or("SCALER_BENCH_CONTAINERS", 50), env_or("SCALER_BENCH_SECONDS", 30));
    let (replicated, replicas) = super::replicas::wanted();
    let largest = sizes.iter().copied().max().context("SCALER_BENCH_HOSTS names no size")?;
    let most = replicated.iter().copied().fold(largest, usize::max);
    raise_nofile();
    util::step("cargo build --release (scaler)");
    util::run(util::cargo().args(["build", "--release", "-p", "scaler-user", "--bin", "scaler"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let bin = target.join("release/scaler");
    util::step(&format!("{most} simulated agents x {n} containers on loopback"));
    let ports = fleet(most as u64, n, None)?;
    let mut results = Vec::new();
    if let Some(base) = std::env::var_os("SCALER_BENCH_BASELINE").map(PathBuf::from) {
        util::step(&format!(
            "baseline {} over {largest} hosts: 10 rounds to warm up, {secs} s measured",
            base.display()
        ));
        let mut r = measure(&base, &ports, largest, n, secs, None)?;
        r["binary"] = json!(format!("baseline ({})", base.display()));
        println!("  {r}");
        results.push(r);
    }
    for &hosts in &sizes {
        util::step(&format!("aggregator over {hosts} hosts: 10 rounds to warm up, {secs} s measured"));
        let r = measure(&bin, &ports, hosts, n, secs, None)?;
        println!("  {r}");
        results.push(r);
    }
    for &hosts in &replicated {
        util::step(&format!(
            "{replicas} replicas on etcd over {hosts} hosts: 10 rounds each to warm up, {secs} s measured"
        ));
        let r = super::replicas::measure(&bin, &ports, hosts, n, secs, replicas)?;
        super::replicas::print(&r);
        results.push(r);
    }
    if env_or("SCALER_BENCH_TLS", 1) != 0 {
        let (tls, ca) = test_tls()?;
        util::step(&format!("{largest} simulated agents over TLS"));
        let tls_ports = fleet(largest as u64, n, Some(tls))?;
        util::step(&format!("aggregator over {largest} TLS hosts: 10 rounds to warm up, {secs} s measured"));
        let r = measure(&bin, &tls_ports, largest, n, secs, Some(&ca))?;
        println!("  {r}");
        results.push(r);
    }
    println!();
    println!(
        "aggregator, {n} containers per host, one round a second (fleet on the same machine: {} CPUs)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "| hosts | TLS | containers | round p50 / p99 ms | gather ms | CPU % of a core | RSS MiB | stale hosts (mean) | load | binary |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in results.iter().filter(|r| r["replicated"] != true) {
        println!(
            "| {} | {} | {} | {:.0} / {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {} |",
            r["hosts"],
            if r["tls"] == true { "yes" } else { "no" },
            r["containers"],
            r["round_ms"]["p50"].as_f64().unwrap_or(0.0),
            r["round_ms"]["p99"].as_f64().unwrap_or(0.0),
            r["gather_ms_mean"].as_f64().unwrap_or(0.0),
            r["cpu_percent_of_one_core"].as_f64().unwrap_or(0.0),
            r["rss_mib"].as_f64().unwrap_or(0.0),
            r["stale_hosts_mean"].as_f64().unwrap_or(0.0),
            r["loadavg_after"].as_str().unwrap_or(""),
            r["binary"].as_str().unwrap_or("this"),
        );
    }
    let out = json!({
        "benchmark": "aggregator",
        "note": "simulated agents (full agent JSON) in the bench process on the same machine; they compete with the aggregator for CPU",
        "machine_cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "results": results,
    });
    super::write_result("aggregator", &serde_json::to_string_pretty(&out)?)?;
    println!("wrote bench-results/aggregator.json");
    Ok(())
}
