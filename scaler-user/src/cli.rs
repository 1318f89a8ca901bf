//! Command-line interface. `run` parses arguments and dispatches; each
//! command returns `anyhow::Result` and `main` prints `Error: ...` once.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(name = "scaler", version, about = "Container limits that follow usage, in real time")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the per-host agent (needs root and a kernel with BTF).
    Agent {
        /// TOML configuration file (every field has a default).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, e.g. 127.0.0.1:8470.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Sampling period in milliseconds.
        #[arg(long)]
        tick_ms: Option<u64>,
    },
    /// Run the cluster aggregator (applications, history, energy caps, dashboard).
    Aggregator {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, e.g. 127.0.0.1:8471.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Show what an agent measures, as a table (or JSON).
    Stats {
        /// One container (default: all).
        name: Option<String>,
        #[arg(long, default_value = "http://127.0.0.1:8470", env = "SCALER_AGENT")]
        agent: String,
        #[arg(long)]
        json: bool,
    },
    /// Replay a usage trace (CSV: time_s,container,resource,demand) through
    /// a policy and report allocation, unmet demand, OOMs and reaction time.
    Simulate {
        /// follow, fast, classic, classic-defaults, static, vpa.
        #[arg(long, default_value = "follow")]
        policy: String,
        #[arg(long)]
        trace: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List managed containers with bounds, limits and usage.
    Containers {
        name: Option<String>,
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// Manage a container: its limits will follow its usage within bounds.
    Subscribe {
        name: String,
        /// cgroup path (default: the discovered container of that name).
        #[arg(long)]
        cgroup: Option<String>,
        /// follow (default), fast, classic, classic-defaults, static, vpa.
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        priority: Option<u32>,
        /// Observe only: every resource unguarded, its limit left where it
        /// starts (`scaler guard NAME` later lets the policy scale it).
        #[arg(long)]
        unguarded: bool,
        #[command(flatten)]
        bounds: scaler_cli::manage::Bounds,
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// Change one resource of a managed container.
    Set {
        name: String,
        /// cpu, mem, disk_read, disk_write, net_rx, net_tx.
        resource: String,
        #[arg(long)]
        min: Option<String>,
        #[arg(long)]
        max: Option<String>,
        #[arg(long)]
        guard: Option<bool>,
        #[arg(long)]
        boundary: Option<u8>,
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// Let the policy scale a container's limits again (all its
    /// resources, or those given with --resource).
    Guard(GuardArgs),
    /// Leave a container's limits where they are (all its resources, or
    /// those given with --resource): it stays subscribed and observed.
    Unguard(GuardArgs),
    /// Show or change a managed container's policy while it runs:
    /// `--set rules.cpu.up.amount='{"fixed": 1000}'` keeps its state
    /// (pending events), `--use fast` starts another policy.
    Policy {
        name: String,
        /// Another policy (follow, fast, classic, ...), starting afresh.
        #[arg(long = "use")]
        use_policy: Option<String>,
        /// PATH=VALUE (JSON or text); repeat for several.
        #[arg(long)]
        set: Vec<String>,
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show or change this host's parameters of a policy preset: its
    /// subscriptions without parameters of their own follow.
    HostPolicy {
        preset: String,
        /// PATH=VALUE (JSON or text); repeat for several.
        #[arg(long)]
        set: Vec<String>,
        /// Back to the preset's own parameters.
        #[arg(long, conflicts_with = "set")]
        reset: bool,
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show or change the agent's tick, discovery interval and active
    /// switch (inactive: nothing is scaled), from the next tick on.
    Settings {
        #[arg(long)]
        tick_ms: Option<u64>,
        #[arg(long)]
        discovery_interval_ms: Option<u64>,
        #[arg(long)]
        active: Option<bool>,
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// The host's CPUs (core, socket, SMT siblings) and the containers
    /// placed on each (`cpu_placement`).
    Topology {
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// Set a container's limits directly, without a policy (`none`
    /// removes one): --cpu 500m --mem 256Mi.
    SetLimit {
        name: String,
        #[arg(long)]
        cpu: Option<String>,
        #[arg(long)]
        mem: Option<String>,
        #[arg(long)]
        disk_read: Option<String>,
        #[arg(long)]
        disk_write: Option<String>,
        #[arg(long)]
        net_rx: Option<String>,
        #[arg(long)]
        net_tx: Option<String>,
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// Applications on the aggregator: membership, weights, scaling at
    /// their level, owner.
    App {
        #[command(subcommand)]
        cmd: scaler_cli::cluster::AppCommand,
        #[command(flatten)]
        agg: scaler_cli::cluster::AggregatorArgs,
    },
    /// Users on the aggregator: budgets over their applications.
    User {
        #[command(subcommand)]
        cmd: scaler_cli::cluster::UserCommand,
        #[command(flatten)]
        agg: scaler_cli::cluster::AggregatorArgs,
    },
    /// Stop managing a container.
    Unsubscribe {
        name: String,
        /// Put back the limits found when it was subscribed.
        #[arg(long)]
        restore: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// The decisions log; --follow streams new decisions as they happen.
    Events {
        #[arg(long)]
        container: Option<String>,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// Host capacity and allocation; --cpu/--mem change the capacity.
    Host {
        #[arg(long)]
        cpu: Option<String>,
        #[arg(long)]
        mem: Option<String>,
        #[command(flatten)]
        agent: AgentArgs,
        #[arg(long)]
        json: bool,
    },
    /// Record a container's usage, limits and signals from a running agent,
    /// tick by tick, as a trace for `scaler simulate` (and for replaying the
    /// agent's decisions).
    Record {
        name: String,
        /// How long: 90s, 10m, 1h.
        #[arg(long, default_value = "10m")]
        duration: String,
        /// The CSV file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Validate a configuration file without starting anything (exit 1 and
    /// one line naming the field when it is wrong).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
        /// The file is an aggregator configuration.
        #[arg(long)]
        aggregator: bool,
    },
    /// Print the default configuration as TOML.
    DefaultConfig,
    /// Copy the aggregator's records (hosts, users, applications, ceilings)
    /// from its local file to etcd, or back, with the aggregators stopped.
    /// The configuration names both ends: `aggregator.state_dir` and
    /// `[store] etcd`/`prefix`. The source is left as it was; everything
    /// written is read back and compared.
    MoveRecords {
        /// Aggregator configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// `etcd` (from the local file) or `local` (from etcd).
        #[arg(long)]
        to: scaler_aggregator::migrate::To,
        /// Also when the destination holds records: it then holds exactly
        /// the source's (those only it held are deleted).
        #[arg(long)]
        replace: bool,
    },
}

/// Where the agent is.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    #[arg(long, default_value = "http://127.0.0.1:8470", env = "SCALER_AGENT")]
    pub agent: String,
    /// Bearer token for changes (the agent's `agent.token`).
    #[arg(long, env = "SCALER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl AgentArgs {
    fn client(&self) -> scaler_cli::Agent {
        scaler_cli::Agent { url: self.agent.clone(), token: self.token.clone() }
    }
}

/// `scaler guard` and `scaler unguard`.
#[derive(clap::Args, Debug)]
pub struct GuardArgs {
    name: String,
    /// A resource (cpu, mem, disk_read, ...); repeat for several.
    #[arg(long = "resource")]
    resources: Vec<String>,
    #[command(flatten)]
    agent: AgentArgs,
    #[arg(long)]
    json: bool,
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Agent { config, listen, tick_ms } => {
            init_tracing();
            let mut cfg = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            cfg.apply_env(|k| std::env::var(k).ok())?;
            if let Some(l) = listen {
                cfg.agent.listen = l;
            }
            if let Some(t) = tick_ms {
                cfg.agent.tick_ms = t;
            }
            cfg.validate()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(crate::agent::run(cfg))
        }
        Command::Aggregator { config, listen } => {
            init_tracing();
            scaler_aggregator::main(config.as_deref(), listen)
        }
        Command::Stats { name, agent, json } => scaler_cli::stats(&agent, name.as_deref(), json),
        Command::Simulate { policy, trace, json } => {
            let csv = std::fs::read_to_string(&trace).with_context(|| format!("reading {}", trace.display()))?;
            let name = trace.file_stem().and_then(|s| s.to_str()).unwrap_or("trace");
            let report = policies::simulate_named(&policy, name, &csv)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        Command::Containers { name, agent, json } => {
            scaler_cli::manage::containers(&agent.client(), name.as_deref(), json)
        }
        Command::Subscribe { name, cgroup, policy, priority, unguarded, bounds, agent, json } => {
            let s = scaler_cli::manage::Subscribe {
                name: &name,
                cgroup: cgroup.as_deref(),
                policy: policy.as_deref(),
                priority,
                unguarded,
                bounds: &bounds,
            };
            scaler_cli::manage::subscribe(&agent.client(), &s, json)
        }
        Command::Set { name, resource, min, max, guard, boundary, agent, json } => {
            let s = scaler_cli::manage::Set { min: min.as_deref(), max: max.as_deref(), guard, boundary };
            scaler_cli::manage::set(&agent.client(), &name, &resource, &s, json)
        }
        Command::Guard(g) => scaler_cli::manage::guard(&g.agent.client(), &g.name, true, &g.resources, g.json),
        Command::Unguard(g) => scaler_cli::manage::guard(&g.agent.client(), &g.name, false, &g.resources, g.json),
        Command::Policy { name, use_policy, set, agent, json } => {
            scaler_cli::runtime::policy(&agent.client(), &name, use_policy.as_deref(), &set, json)
        }
        Command::HostPolicy { preset, set, reset, agent, json } => {
            scaler_cli::runtime::host_policy(&agent.client(), &preset, &set, reset, json)
        }
        Command::Settings { tick_ms, discovery_interval_ms, active, agent, json } => {
            scaler_cli::runtime::settings(&agent.client(), tick_ms, discovery_interval_ms, active, json)
        }
        Command::Topology { agent, json } => scaler_cli::runtime::topology(&agent.client(), json),
        Command::SetLimit { name, cpu, mem, disk_read, disk_write, net_rx, net_tx, agent, json } => {
            let flags = [
                ("cpu", cpu.as_deref()),
                ("mem", mem.as_deref()),
                ("disk_read", disk_read.as_deref()),
                ("disk_write", disk_write.as_deref()),
                ("net_rx", net_rx.as_deref()),
                ("net_tx", net_tx.as_deref()),
            ];
            scaler_cli::runtime::set_limit(&agent.client(), &name, &flags, json)
        }
        Command::App { cmd, agg } => scaler_cli::cluster::app(&agg, &cmd),
        Command::User { cmd, agg } => scaler_cli::cluster::user(&agg, &cmd),
        Command::Unsubscribe { name, restore, agent } => {
            scaler_cli::manage::unsubscribe(&agent.client(), &name, restore)
        }
        Command::Events { container, follow, agent, json } => {
            scaler_cli::manage::events(&agent.client(), container.as_deref(), follow, json)
        }
        Command::Host { cpu, mem, agent, json } => {
            scaler_cli::manage::host(&agent.client(), cpu.as_deref(), mem.as_deref(), json)
        }
        Command::Record { name, duration, out, agent } => {
            let duration = scaler_cli::units::duration("--duration", &duration).map_err(anyhow::Error::msg)?;
            scaler_cli::record::record(&agent.client(), &name, duration, &out, std::time::Duration::from_secs(2))
        }
        Command::MoveRecords { config, to, replace } => scaler_aggregator::migrate::main(&config, to, replace),
        Command::CheckConfig { config, aggregator } => {
            if aggregator {
                scaler_aggregator::config::AggConfig::load(&config)?;
            } else {
                Config::load(&config)?;
            }
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::DefaultConfig => {
            print!("{}", toml::to_string_pretty(&Config::default())?);
            Ok(())
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SCALER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
