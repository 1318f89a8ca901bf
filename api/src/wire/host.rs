//! `GET /v1/host` (and the answer to `PUT /v1/host`): what the host has,
//! what the agent has allocated of it, and its power.

use std::collections::BTreeMap;

use policies::{Resource, energy::PowerModel};
use serde::{Deserialize, Serialize};

/// The whole host's use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostUsage {
    /// CPU of the whole host, millicores.
    pub cpu: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Host {
    pub host: String,
    /// What the managed containers may share in total (`None` = not limited).
    pub capacity: BTreeMap<Resource, Option<u64>>,
    /// The sum of the managed containers' limits.
    pub allocated: BTreeMap<Resource, u64>,
    pub usage: HostUsage,
    /// The host's CPUs, millicores.
    pub cpus_mc: u64,
    /// Power measured by RAPL, when the host has it.
    pub rapl_mw: Option<u64>,
    /// The model power is estimated with.
    pub power_model: Option<PowerModel>,
}

impl Host {
    /// The capacity of `r` (`None` = not limited).
    pub fn capacity_of(&self, r: Resource) -> Option<u64> {
        self.capacity.get(&r).copied().flatten()
    }

    /// The allocation of `r` (`None` when nothing of it is managed).
    pub fn allocated_of(&self, r: Resource) -> Option<u64> {
        self.allocated.get(&r).copied()
    }
}
