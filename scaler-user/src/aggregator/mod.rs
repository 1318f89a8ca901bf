//! The cluster aggregator: gathers every agent's state, groups containers
//! into applications, keeps history, holds applications under energy caps,
//! and serves the cluster API and dashboard.

use std::{net::SocketAddr, path::Path};

/// Entry point of `scaler aggregator`.
pub fn main(_config: Option<&Path>, _listen: Option<SocketAddr>) -> anyhow::Result<()> {
    anyhow::bail!("the aggregator is not built yet")
}
