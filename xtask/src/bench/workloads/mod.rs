//! `cargo xtask bench workloads`: real programs in real cgroups, each run
//! under several modes in one invocation (no limit, a static limit at max,
//! `classic` with the original's timing, the default policy, or any other
//! policy by name), with the bench's own probe reading cgroupfs every
//! 200 ms. Prints a table, writes `bench-results/NAME.json`, draws
//! allocated against used over time for every run in
//! `bench-results/NAME/*.svg`, and keeps what the agent saw of each
//! container (`scaler record`) in `bench-results/NAME/<workload>-<mode>-<container>.csv`.

mod jobs;
mod plot;
mod probe;
mod report;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use self::{
    jobs::{Ctx, Job, Outcome},
    probe::{Point, Probe},
};
use super::harness::{Agent, Cgroups, release_binary, temp_dir};

/// Bounds of every container: 0.1 to 2 cores (all of this host), 64 MiB to
/// 4 GiB.
pub const CPU_BOUNDS: (u64, u64) = (100, 2000);
pub const MEM_BOUNDS: (u64, u64) = (64 << 20, 4 << 30);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Workloads, comma-separated (default: all): build, pipeline,
    /// analytics, service, mix.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Modes, separated by commas or semicolons (default:
    /// unlimited,static,classic,default). Any other name runs that policy
    /// at the agent's default tick, with parameters after a colon
    /// (`"unlimited;follow:slowdown_permille=50"`).
    #[arg(long, value_delimiter = ';')]
    pub modes: Vec<String>,
    /// Results go to bench-results/NAME.json and bench-results/NAME/.
    #[arg(long, default_value = "workloads")]
    pub out: String,
    /// Extra `[agent]` settings for every run (TOML lines, e.g.
    /// "cpu_burst_pct = 0").
    #[arg(long, default_value = "")]
    pub agent_config: String,
    /// Runs of each workload under each mode, interleaved (mode A, B, ...,
    /// A, B, ...); the table gives medians and the spread. This machine's
    /// latency varies by tens of percent between identical runs.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
}

/// A workload: one or more jobs, each in its own container, started after
/// a delay (seconds).
pub struct Workload {
    pub name: &'static str,
    pub parts: &'static [(Job, u64)],
}

pub const WORKLOADS: &[Workload] = &[
    Workload { name: "build", parts: &[(Job::Build, 0)] },
    Workload { name: "pipeline", parts: &[(Job::Pipeline, 0)] },
    Workload { name: "analytics", parts: &[(Job::Analytics, 0)] },
    Workload { name: "service", parts: &[(Job::Service, 0)] },
    // The seed's picture: several jobs sharing one host, staggered.
    Workload {
        name: "mix",
        parts: &[(Job::Service, 0), (Job::Pipeline, 10), (Job::Analytics, 30), (Job::Pipeline, 50)],
    },
];

/// How the containers of a run are limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// No limit at all (the reference for runtime and latency).
    Unlimited,
    /// Limits at max, never changed (`static`).
    Static,
    /// `classic` (the original's rules, deployed preset) with the original's
    /// timing: the agent samples every 5 s.
    Classic,
    /// The agent's default policy at its default tick.
    Default,
    /// Another policy by name, at the default tick.
    Policy(String),
}

impl Mode {
    pub fn parse(s: &str) -> Mode {
        match s {
            "unlimited" => Mode::Unlimited,
            "static" => Mode::Static,
            "classic" => Mode::Classic,
            "default" => Mode::Default,
            other => Mode::Policy(other.to_owned()),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Mode::Unlimited => "unlimited".into(),
            Mode::Static => "static".into(),
            Mode::Classic => "classic".into(),
            Mode::Default => "default".into(),
            Mode::Policy(p) => p.clone(),
        }
    }

    /// The agent's configuration: `containers` as `(name, cgroup)` are
    /// watched in every mode (so `scaler record` sees them unlimited too).
    fn agent_config(&self, containers: &[(String, String)], extra: &str) -> String {
        let mut timing =
            if *self == Mode::Classic { "tick_ms = 5000\ndiscovery_interval_ms = 5000\n" } else { "" }.to_owned();
        if !extra.is_empty() {
            timing.push_str(extra);
            timing.push('\n');
        }
        // CPU limits may add up to more than the host (they are ceilings,
        // not reservations): every container may have its max, as a static
        // allocation would.
        let mut cfg = format!(
            "{timing}history_len = 3000\n[discovery]\nsystemd_services = false\n[host]\ncpu = {}\n",
            CPU_BOUNDS.1 * containers.len() as u64
        );
        for (name, cgroup) in containers {
            cfg.push_str(&format!("[[containers]]\nname = \"{name}\"\ncgroup = \"{cgroup}\"\n"));
        }
        cfg
    }

    /// A policy mode may carry parameters: `follow:slowdown_permille=50`
    /// runs `{"name": "follow", "slowdown_permille": 50}`.
    fn policy_value(p: &str) -> Value {
        let Some((name, params)) = p.split_once(':') else { return json!(p) };
        let mut v = json!({"name": name});
        for kv in params.split(',') {
            if let Some((k, x)) = kv.split_once('=') {
                v[k] = x.parse::<u64>().map_or_else(|_| json!(x), |n| json!(n));
            }
        }
        v
    }

    fn subscription(&self, cgroup: &str) -> Option<Value> {
        let resources = json!({
            "cpu": {"min": CPU_BOUNDS.0, "max": CPU_BOUNDS.1},
            "mem": {"min": MEM_BOUNDS.0, "max": MEM_BOUNDS.1},
        });
        let policy = match self {
            Mode::Unlimited => return None,
            Mode::Static => Some("static"),
            Mode::Classic => Some("classic"),
            Mode::Default => None,
            Mode::Policy(p) => Some(p.as_str()),
        };
        let mut v = json!({"cgroup": cgroup, "resources": resources});
        if let Some(p) = policy {
            v["policy"] = Self::policy_value(p);
        }
        Some(v)
    }
}

/// One container of one run.
pub struct ContainerRun {
    pub name: String,
    pub job: Job,
    /// When the job started and ended, seconds since the run started.
    pub start_s: f64,
    pub end_s: f64,
    pub outcome: Outcome,
    pub points: Vec<Point>,
    /// Limit changes the agent made (its event log), starting limits aside.
    pub changes: u64,
}

/// One workload under one mode.
pub struct RunResult {
    pub workload: &'static str,
    pub mode: String,
    /// Which repetition (0-based).
    pub rep: usize,
    pub containers: Vec<ContainerRun>,
}

fn container_names(w: &Workload) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (job, _) in w.parts {
        let base = job.name();
        let n = names.iter().filter(|x| x.split('-').next() == Some(base)).count();
        names.push(if n == 0 { base.to_owned() } else { format!("{base}-{}", n + 1) });
    }
    names
}

fn changes(agent: &Agent, name: &str) -> u64 {
    agent
        .get(&format!("/v1/events?container={name}"))
        .ok()
        .and_then(|v| v["events"].as_array().cloned())
        .map_or(0, |ev| {
            ev.iter().filter(|e| !e["reason"].as_str().unwrap_or("").starts_with("subscribed")).count() as u64
        })
}

/// `scaler record` of one container into `out`, stopped on drop.
struct Recorder(std::process::Child);

impl Recorder {
    fn start(bin: &std::path::Path, agent: &Agent, name: &str, out: &std::path::Path) -> anyhow::Result<Self> {
        let end = Instant::now() + Duration::from_secs(15);
        while agent.get(&format!("/v1/stats/{name}")).map(|v| v["time_ms"].is_null()).unwrap_or(true) {
            anyhow::ensure!(Instant::now() < end, "the agent never sampled {name}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let child = std::process::Command::new(bin)
            .args(["record", name, "--duration", "2h", "--agent", &format!("http://{}", agent.addr()), "--out"])
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting scaler record")?;
        Ok(Recorder(child))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Rows are flushed as they come: the file is whole at any moment.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One recorded trace per run: the containers' recordings
/// (`<workload>-<mode>-<container>.csv`) into `<workload>-<mode>.csv`.
fn merge_recordings(dir: &std::path::Path, workload: &str, mode: &str, names: &[String]) -> anyhow::Result<()> {
    let mut out = format!("# {workload} under {mode}: scaler record of each container, cargo xtask bench workloads\n");
    out.push_str(::policies::trace::RECORDED_HEADER);
    out.push('\n');
    for name in names {
        let part = dir.join(format!("{workload}-{mode}-{name}.csv"));
        let text = std::fs::read_to_string(&part).with_context(|| format!("reading {}", part.display()))?;
        for line in text.lines() {
            if line.starts_with('#') || line.starts_with("time_s") || line.is_empty() {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        std::fs::remove_file(&part)?;
    }
    std::fs::write(dir.join(format!("{workload}-{mode}.csv")), out)?;
    Ok(())
}

fn run_one(
    bin: &std::path::Path,
    w: &Workload,
    mode: &Mode,
    rep: usize,
    out_dir: &std::path::Path,
    extra: &str,
) -> anyhow::Result<RunResult> {
    let names = container_names(w);
    let cg = Cgroups::new()?;
    let watched: Vec<(String, String)> = names.iter().map(|n| (n.clone(), cg.rel(n))).collect();
    let agent = Agent::start(bin, &mode.agent_config(&watched, extra))?;
    let work = temp_dir()?;
    let mut ctxs = Vec::new();
    for (name, (job, _)) in names.iter().zip(w.parts) {
        cg.mkdir(name)?;
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let ctx = Ctx { cg: &cg, child: name.clone(), dir };
        jobs::before(*job, &ctx).with_context(|| format!("preparing {name}"))?;
        if let Some(body) = mode.subscription(&cg.rel(name)) {
            agent.put(&format!("/v1/containers/{name}"), &body).with_context(|| format!("subscribing {name}"))?;
        }
        ctxs.push(ctx);
    }
    // What the agent saw, tick by tick (first run of each mode only).
    let mut recorders = Vec::new();
    if rep == 0 {
        for name in &names {
            let out = out_dir.join(format!("{}-{}-{name}.csv", w.name, mode.label()));
            recorders.push(Recorder::start(bin, &agent, name, &out)?);
        }
    }
    let start = Instant::now();
    let rels: Vec<String> = names.iter().map(|n| cg.rel(n)).collect();
    let probe = Probe::start(&rels, start);
    let outcomes: Vec<anyhow::Result<(f64, f64, Outcome)>> = std::thread::scope(|s| {
        let handles: Vec<_> = ctxs
            .iter()
            .zip(w.parts)
            .map(|(ctx, &(job, delay))| {
                s.spawn(move || {
                    std::thread::sleep(Duration::from_secs(delay));
                    let t0 = start.elapsed().as_secs_f64();
                    let out = jobs::run(job, ctx)?;
                    Ok((t0, start.elapsed().as_secs_f64(), out))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("job thread panicked")))).collect()
    });
    std::thread::sleep(Duration::from_secs(3));
    drop(recorders);
    if rep == 0 {
        merge_recordings(out_dir, w.name, &mode.label(), &names)?;
    }
    let points = probe.finish();
    let mut containers = Vec::new();
    for (((name, (job, _)), out), points) in names.iter().zip(w.parts).zip(outcomes).zip(points) {
        let (start_s, end_s, outcome) = out.with_context(|| format!("{} under {}: {name}", w.name, mode.label()))?;
        if !outcome.ok {
            eprintln!("    {name}: the job failed (see the OOM kills column)");
        }
        containers.push(ContainerRun {
            name: name.clone(),
            job: *job,
            start_s,
            end_s,
            outcome,
            points,
            changes: changes(&agent, name),
        });
    }
    Ok(RunResult { workload: w.name, mode: mode.label(), rep, containers })
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let workloads: Vec<&Workload> = if args.only.is_empty() {
        WORKLOADS.iter().collect()
    } else {
        args.only
            .iter()
            .map(|n| {
                WORKLOADS.iter().find(|w| w.name == n).with_context(|| {
                    let all: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
                    format!("--only: unknown workload {n:?}; one of {}", all.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let modes: Vec<Mode> = if args.modes.is_empty() {
        ["unlimited", "static", "classic", "default"].iter().map(|m| Mode::parse(m)).collect()
    } else {
        // `a,b;c:x=1,y=2`: commas separate modes unless parameters follow.
        args.modes
            .iter()
            .flat_map(|m| if m.contains(':') { vec![m.as_str()] } else { m.split(',').collect() })
            .map(Mode::parse)
            .collect()
    };
    for m in &modes {
        if let Mode::Policy(p) = m {
            let name = p.split(':').next().unwrap_or(p);
            ::policies::PolicyConfig::by_name(name).with_context(|| format!("--modes: {p:?}"))?;
        }
    }
    crate::setup::run()?;
    let bin = release_binary()?;
    let mut all_jobs: Vec<Job> = workloads.iter().flat_map(|w| w.parts.iter().map(|p| p.0)).collect();
    all_jobs.dedup();
    jobs::prepare(&all_jobs)?;
    let out_dir = std::path::PathBuf::from("bench-results").join(&args.out);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut results = Vec::new();
    let repeat = args.repeat.max(1);
    for w in &workloads {
        for rep in 0..repeat {
            for mode in &modes {
                eprintln!("==> {} under {} (run {} of {repeat})", w.name, mode.label(), rep + 1);
                let t0 = Instant::now();
                let r = run_one(&bin, w, mode, rep, &out_dir, &args.agent_config.replace(';', "\n"))?;
                eprintln!("    {:.0} s", t0.elapsed().as_secs_f64());
                if rep == 0 {
                    report::write_run(&out_dir, &r)?;
                }
                results.push(r);
            }
        }
        report::write_overview(&out_dir, w.name, &results)?;
    }
    println!();
    let (md, json) = report::summarise(&results);
    let doc = json!({
        "machine": report::machine(),
        "bounds": {"cpu": CPU_BOUNDS, "mem": MEM_BOUNDS},
        "repeat": repeat,
        "agent_config": args.agent_config,
        "service_steps": jobs::SERVICE_STEPS,
        "runs": json,
        "markdown": md,
    });
    super::write_result(&args.out, &serde_json::to_string_pretty(&doc)?)?;
    eprintln!("wrote bench-results/{}.json and {}/", args.out, out_dir.display());
    Ok(())
}
