//! `cargo xtask deploy` / `undeploy`: the agent (and aggregator) on hosts
//! over SSH.

use anyhow::bail;
use clap::Args;

#[derive(Args)]
pub struct DeployArgs {}

#[derive(Args)]
pub struct UndeployArgs {}

pub fn deploy(_args: DeployArgs) -> anyhow::Result<()> {
    bail!("deploy is not built yet")
}

pub fn undeploy(_args: UndeployArgs) -> anyhow::Result<()> {
    bail!("undeploy is not built yet")
}
