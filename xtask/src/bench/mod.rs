//! `cargo xtask bench NAME`: each benchmark prints a table and writes JSON
//! to `bench-results/NAME.json`.

use anyhow::bail;
use clap::Subcommand;

#[derive(Subcommand, Clone, Copy)]
pub enum Which {
    /// eBPF cost per event, agent CPU and RSS at 10/100/500 cgroups, vs atop.
    Sampling,
    /// Policies over the standard traces (classic, fast, static, VPA-like).
    Policies,
    /// Time from a load step to the new CPU limit in force.
    Reaction,
    /// Aggregator round time, CPU and memory over many simulated hosts.
    Aggregator,
}

pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Sampling | Which::Policies | Which::Reaction | Which::Aggregator => {
            bail!("this benchmark is not built yet")
        }
    }
}

pub fn gen_traces() -> anyhow::Result<()> {
    bail!("not built yet")
}
