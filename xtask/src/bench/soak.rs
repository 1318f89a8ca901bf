//! `cargo xtask bench soak`: one release agent watching containers that
//! come and go, and an aggregator in front of it, for a long time (30
//! minutes by default). Every second `churn` containers are removed (their
//! subscriptions deleted first, as an orchestrator would) and as many new
//! ones created; one in ten runs a process and is subscribed. Sampled at
//! regular intervals: the agent's RSS and state file, the aggregator's RSS,
//! store and history entities. The claim it checks: they level off.

use std::{
    fmt::Write as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::harness::{Agent, Cgroups, release_binary, rss_kib, table, temp_dir};
use crate::util;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// How long, minutes.
    #[arg(long, default_value_t = 30)]
    pub minutes: u64,
    /// Containers alive at any time.
    #[arg(long, default_value_t = 500)]
    pub containers: usize,
    /// Containers replaced per second.
    #[arg(long, default_value_t = 5)]
    pub churn: usize,
    /// Samples over the run.
    #[arg(long, default_value_t = 20)]
    pub samples: u64,
    /// The aggregator's history retention, seconds, for the full tier (the
    /// minute tier keeps twice, the quarter tier three times that): short
    /// retentions show within one run whether the store levels off once
    /// every tier is full. Default: the aggregator's own (1 h, 2 d, 30 d).
    #[arg(long)]
    pub retention_s: Option<u64>,
}

/// An aggregator process over one host, stopped (SIGTERM) on drop.
struct Aggregator {
    child: Child,
    port: u16,
}

impl Aggregator {
    fn start(
        bin: &std::path::Path,
        dir: &std::path::Path,
        agent: &str,
        retention_s: Option<u64>,
    ) -> anyhow::Result<Self> {
        let port = scaler_testkit::free_port()?;
        let mut cfg =
            format!("[aggregator]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n", dir.join("state").display());
        if let Some(r) = retention_s {
            let _ = write!(
                cfg,
                "[history]\nfull_retention_s = {r}\nminute_retention_s = {}\nquarter_retention_s = {}\n",
                2 * r,
                3 * r
            );
        }
        let _ = write!(cfg, "[[hosts]]\nname = \"a\"\nurl = \"http://{agent}\"\n");
        std::fs::write(dir.join("aggregator.toml"), cfg)?;
        let child = Command::new(bin)
            .args(["aggregator", "--config"])
            .arg(dir.join("aggregator.toml"))
            .env("SCALER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("aggregator.log"))?)
            .spawn()
            .context("starting the aggregator")?;
        let me = Self { child, port };
        let up = scaler_testkit::wait_for(Duration::from_secs(20), || me.health().ok());
        up.context("the aggregator did not answer /healthz")?;
        Ok(me)
    }

    fn health(&self) -> anyhow::Result<Value> {
        let body = scaler_testkit::http::ok(&format!("127.0.0.1:{}", self.port), "GET", "/healthz", None)?;
        Ok(serde_json::from_str(&body)?)
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        scaler_testkit::stop(&mut self.child, Duration::from_secs(10));
    }
}

/// Directory size in bytes (files below it).
fn du(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => du(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.containers == 0 || args.churn == 0 || args.samples < 2 {
        bail!("--containers and --churn must be positive, --samples at least 2");
    }
    let bin = release_binary()?;
    let mut cg = Cgroups::new()?;
    let name = |i: usize| format!("s{i}");
    let busy = |i: usize| i.is_multiple_of(10);
    let start_one = |cg: &mut Cgroups, i: usize| -> anyhow::Result<()> {
        if busy(i) { cg.child_with(&name(i), &["sleep", "100000"]) } else { cg.mkdir(&name(i)) }
    };
    util::step(&format!("{} containers, {} replaced a second, for {} min", args.containers, args.churn, args.minutes));
    for i in 0..args.containers {
        start_one(&mut cg, i)?;
    }
    let agent = Agent::start(&bin, &format!("[discovery]\nsystemd_services = false\nwatch = [\"{}/*\"]\n", cg.name()))?;
    let agg_dir = temp_dir()?;
    let agg = Aggregator::start(&bin, agg_dir.path(), agent.addr(), args.retention_s)?;
    let subscribe = |cg: &Cgroups, i: usize| -> anyhow::Result<()> {
        let body = json!({"cgroup": cg.rel(&name(i)),
                          "resources": {"cpu": {"min": 10, "max": 1000}, "mem": {"min": 8 << 20, "max": 256 << 20}}});
        agent.put(&format!("/v1/containers/{}", name(i)), &body).map(|_| ())
    };
    // Wait until the agent sees them all, then subscribe the busy ones.
    let end = Instant::now() + Duration::from_secs(60);
    while agent.get("/v1/stats")?["containers"].as_array().map_or(0, Vec::len) < args.containers {
        anyhow::ensure!(Instant::now() < end, "the agent never saw all {} containers", args.containers);
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in (0..args.containers).filter(|i| busy(*i)) {
        subscribe(&cg, i)?;
    }
    let total = Duration::from_secs(args.minutes * 60);
    let every = total / u32::try_from(args.samples - 1).unwrap_or(1);
    let t0 = Instant::now();
    let (mut oldest, mut next) = (0usize, args.containers);
    let mut rows = Vec::new();
    let mut samples = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut churn_errors = 0u64;
    loop {
        let now = t0.elapsed();
        if now >= next_sample {
            let h = agg.health()?;
            let a = agent.get("/healthz")?;
            let s = json!({
                "minute": now.as_secs_f64() / 60.0,
                "created": next,
                "agent_containers": a["containers"],
                "agent_rss_mib": rss_kib(agent.pid())? as f64 / 1024.0,
                "agent_state_kib": du(&agent.dir().join("state")) as f64 / 1024.0,
                "aggregator_rss_mib": rss_kib(agg.child.id())? as f64 / 1024.0,
                "aggregator_store_mib": h["store_bytes"].as_f64().unwrap_or(f64::NAN) / 1048576.0,
                "history_entities": h["history_entities"],
                "rounds": h["rounds"],
                "stale_hosts": h["stale_hosts"],
            });
            let f = |k: &str| s[k].as_f64().map_or("-".into(), |v| format!("{v:.1}"));
            rows.push(vec![
                f("minute"),
                s["created"].to_string(),
                s["agent_containers"].to_string(),
                f("agent_rss_mib"),
                f("agent_state_kib"),
                f("aggregator_rss_mib"),
                f("aggregator_store_mib"),
                s["history_entities"].to_string(),
            ]);
            println!("{}", rows.last().map(|r| r.join(" | ")).unwrap_or_default());
            samples.push(s);
            if now >= total {
                break;
            }
            next_sample += every;
        }
        // Replace `churn` containers: the oldest go, new ones come.
        let tick = Instant::now();
        for _ in 0..args.churn {
            if busy(oldest) && agent.delete(&format!("/v1/containers/{}", name(oldest))).is_err() {
                churn_errors += 1;
            }
            if cg.remove(&name(oldest)).is_err() {
                churn_errors += 1;
            }
            oldest += 1;
            start_one(&mut cg, next)?;
            if busy(next) && subscribe(&cg, next).is_err() {
                churn_errors += 1;
            }
            next += 1;
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let out = table(
        &[
            "minute",
            "created",
            "agent sees",
            "agent RSS MiB",
            "agent state KiB",
            "aggregator RSS MiB",
            "store MiB",
            "history entities",
        ],
        &rows,
    );
    // Level: the last third's growth against the middle third's.
    let at = |k: &str, frac: f64| {
        let i = ((samples.len() - 1) as f64 * frac).round() as usize;
        samples[i][k].as_f64().unwrap_or(f64::NAN)
    };
    let growth = |k: &str| json!({"one_third": at(k, 1.0 / 3.0), "two_thirds": at(k, 2.0 / 3.0), "end": at(k, 1.0)});
    let result = json!({
        "benchmark": "soak",
        "minutes": args.minutes, "containers": args.containers, "churn_per_s": args.churn, "retention_s": args.retention_s,
        "created": next, "churn_errors": churn_errors,
        "levels": {
            "agent_rss_mib": growth("agent_rss_mib"), "agent_state_kib": growth("agent_state_kib"),
            "aggregator_rss_mib": growth("aggregator_rss_mib"), "aggregator_store_mib": growth("aggregator_store_mib"),
        },
        "samples": samples,
        "table": out,
    });
    super::write_result("soak", &serde_json::to_string_pretty(&result)?)?;
    println!("churn errors: {churn_errors}");
    Ok(())
}
