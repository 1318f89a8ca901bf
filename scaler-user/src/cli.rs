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
        /// fast, classic, classic-defaults, static, vpa.
        #[arg(long, default_value = "fast")]
        policy: String,
        #[arg(long)]
        trace: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the default configuration as TOML.
    DefaultConfig,
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
            crate::aggregator::main(config.as_deref(), listen)
        }
        Command::Stats { name, agent, json } => crate::client::stats(&agent, name.as_deref(), json),
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
