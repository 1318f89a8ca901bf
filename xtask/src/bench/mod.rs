//! `cargo xtask bench NAME`: each benchmark prints a table and writes JSON
//! to `bench-results/NAME.json`.

mod aggregator;
mod engines;
mod harness;
mod policies;
mod reaction;
mod replicas;
mod sampling;
mod soak;
mod workloads;

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Subcommand, Clone)]
pub enum Which {
    /// eBPF cost per event, agent CPU and RSS at 10/100/500/1,000 cgroups,
    /// vs atop (and an earlier binary with `--baseline`).
    Sampling(sampling::Args),
    /// Policies over the standard traces (classic, fast, static, VPA-like).
    Policies,
    /// Time from a load step to the new CPU limit in force.
    Reaction,
    /// Aggregator round time, CPU and memory over many simulated hosts.
    Aggregator,
    /// Real programs (a kernel build, a sort pipeline, an analytics job,
    /// PostgreSQL under pgbench, all four at once) unlimited, static,
    /// classic and under the default policy: allocation against use.
    Workloads(workloads::Args),
    /// Containers coming and going under one agent and an aggregator for a
    /// long time: memory and stores level off.
    Soak(soak::Args),
    /// One CPU limit change through Docker's, Podman's and LXD's APIs
    /// against a cgroupfs write (each engine a daemon of the bench's own).
    Engines,
}

pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Policies => policies::run(),
        Which::Aggregator => aggregator::run(),
        Which::Sampling(args) => sampling::run(&args),
        Which::Reaction => reaction::run(),
        Which::Workloads(args) => workloads::run(&args),
        Which::Soak(args) => soak::run(&args),
        Which::Engines => engines::run(),
    }
}

/// Writes `bench-results/NAME.json`.
pub fn write_result(name: &str, json: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all("bench-results").context("creating bench-results/")?;
    let path = format!("bench-results/{name}.json");
    std::fs::write(&path, json).with_context(|| format!("writing {path}"))
}

/// `cargo xtask gen-traces`: the standard traces into `traces/`.
pub fn gen_traces() -> anyhow::Result<()> {
    std::fs::create_dir_all("traces")?;
    for (name, csv) in ::policies::traces::standard() {
        let path = format!("traces/{name}.csv");
        std::fs::write(&path, csv).with_context(|| format!("writing {path}"))?;
        println!("wrote {path}");
    }
    Ok(())
}
