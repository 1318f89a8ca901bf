//! The trace simulator: replays demand through a policy and measures.
//!
//! Each container of the trace gets its own policy object. Time advances in
//! steps of `step_ms`; in each step every series serves `min(demand, limit)`.
//! CPU demand above the limit is throttled and reported to the policy as
//! throttled time (`(demand - limit) x step` CPU-microseconds per ms);
//! disk and network demand above the limit is throttled silently; memory
//! demand above the limit is an OOM kill: the container serves nothing for
//! `oom_restart_ms` and then starts again. Memory use above
//! `pressure_start_pct` of the limit shows as PSI stall, rising linearly to
//! half the interval at the limit. The policy decides every tick (its own
//! [`Timing`](crate::Timing) unless overridden); decisions go through host
//! arbitration and apply after the actuation delay.

mod report;
mod run;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use report::{Report, ResourceReport, fmt_reaction};
pub use run::simulate;

use crate::config::{ConfigError, PolicyConfig};
use crate::resource::{GIB, MB, MIB, Resource};
use crate::sample::HostCapacity;
use crate::spec::{BoundaryType, ResourceSpec, SpecError};
use crate::trace::{Trace, TraceError};

/// Error from a simulation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The trace did not parse.
    #[error("trace {name}")]
    Trace {
        /// Trace name.
        name: String,
        /// Why.
        #[source]
        source: TraceError,
    },
    /// The policy configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A resource template is invalid.
    #[error("simulation spec for {resource}")]
    Spec {
        /// Which resource.
        resource: Resource,
        /// Why.
        #[source]
        source: SpecError,
    },
    /// The trace needs a resource the configuration has no template for.
    #[error("no spec template for resource {0} in the simulation config")]
    MissingTemplate(Resource),
    /// A simulation parameter is out of range.
    #[error("simulation parameter `{field}` = {value} is invalid: {expected}")]
    Invalid {
        /// Which parameter.
        field: &'static str,
        /// The value.
        value: u64,
        /// What would be valid.
        expected: &'static str,
    },
}

/// Bounds and starting limit of one resource of every simulated container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecTemplate {
    /// Lower bound.
    pub min: u64,
    /// Upper bound.
    pub max: u64,
    /// Limit at the start.
    pub initial: u64,
    /// Boundary percentage (classic's margin).
    pub boundary: u8,
    /// What the boundary is a percentage of.
    pub boundary_type: BoundaryType,
}

impl SpecTemplate {
    /// The spec a container starts with.
    pub fn spec(&self, resource: Resource) -> Result<ResourceSpec, SimError> {
        ResourceSpec::try_new(self.min, self.max, self.initial, self.boundary, self.boundary_type)
            .map_err(|source| SimError::Spec { resource, source })
    }
}

/// Simulation parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Simulation step (sampling interval), ms.
    pub step_ms: u64,
    /// Decision interval; `None`: the policy's own.
    pub tick_ms: Option<u64>,
    /// Actuation delay; `None`: the policy's own.
    pub actuation_delay_ms: Option<u64>,
    /// Bounds and starting limits per resource.
    pub templates: BTreeMap<Resource, SpecTemplate>,
    /// What the host has (arbitration).
    pub host: HostCapacity,
    /// After an OOM kill the container serves nothing for this long, ms.
    pub oom_restart_ms: u64,
    /// A demand rise of more than this percentage within one step, above
    /// the limit, is a step whose reaction time is measured.
    pub step_rise_pct: u32,
    /// A step is covered once the limit reaches this percentage of the
    /// stepped demand (capped at max). If demand falls below 80 % of the
    /// stepped demand first, the step was never covered.
    pub cover_pct: u32,
    /// Memory use above this percentage of the limit stalls (PSI).
    pub pressure_start_pct: u32,
    /// As the agent's `memory_wait`: below max, memory demand above the
    /// limit of a container whose policy raises waiting memory waits (the
    /// container serves nothing that step) instead of being OOM-killed.
    pub memory_wait: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        let t = |min, max, boundary| SpecTemplate {
            min,
            max,
            // Containers start at their max, as a static allocation would.
            initial: max,
            boundary,
            boundary_type: BoundaryType::PercentOfMax,
        };
        let templates = BTreeMap::from([
            // 0.1 to 4 cores; margin 10 % of max = 400 millicores.
            (Resource::Cpu, t(100, 4_000, 10)),
            // 256 MiB to 8 GiB; margin 819 MiB.
            (Resource::Mem, t(256 * MIB, 8 * GIB, 10)),
            // 1 to 200 MB/s of disk each way.
            (Resource::DiskRead, t(MB, 200 * MB, 10)),
            (Resource::DiskWrite, t(MB, 200 * MB, 10)),
            // 1 to 125 MB/s (1 Gbit/s) of network each way.
            (Resource::NetRx, t(MB, 125 * MB, 10)),
            (Resource::NetTx, t(MB, 125 * MB, 10)),
        ]);
        SimConfig {
            // 100 ms samples: finer than any policy's tick.
            step_ms: 100,
            tick_ms: None,
            actuation_delay_ms: None,
            templates,
            // A 16-core, 64 GiB host with 2 GB/s of disk and 10 Gbit/s.
            host: HostCapacity::new()
                .with(Resource::Cpu, 16_000)
                .with(Resource::Mem, 64 * GIB)
                .with(Resource::DiskRead, 2_000 * MB)
                .with(Resource::DiskWrite, 2_000 * MB)
                .with(Resource::NetRx, 1_250 * MB)
                .with(Resource::NetTx, 1_250 * MB),
            // Two seconds to restart after an OOM kill.
            oom_restart_ms: 2_000,
            // A >20 % jump is a step.
            step_rise_pct: 20,
            // Covered at 95 % of the stepped demand.
            cover_pct: 95,
            // Reclaim stalls start at 97 % of the limit (with no page cache
            // modelled, reclaim only stalls a container right at its limit).
            pressure_start_pct: 97,
            // As the agent.
            memory_wait: true,
        }
    }
}

impl SimConfig {
    /// Check the parameters.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |field, value, expected| Err(SimError::Invalid { field, value, expected });
        if !(1..=60_000).contains(&self.step_ms) {
            return bad("step_ms", self.step_ms, "1..=60000");
        }
        if let Some(t) = self.tick_ms
            && !(1..=3_600_000).contains(&t)
        {
            return bad("tick_ms", t, "1..=3600000");
        }
        if !(1..=100).contains(&self.cover_pct) {
            return bad("cover_pct", self.cover_pct.into(), "1..=100");
        }
        if !(1..=99).contains(&self.pressure_start_pct) {
            return bad("pressure_start_pct", self.pressure_start_pct.into(), "1..=99");
        }
        for (r, t) in &self.templates {
            t.spec(*r)?;
        }
        Ok(())
    }
}

/// The one-liner for `scaler simulate --policy NAME --trace FILE.csv`: parse
/// `csv` (named `trace_name` in errors and the report), build the policy
/// called `policy`, and simulate with the default [`SimConfig`].
pub fn simulate_named(policy: &str, trace_name: &str, csv: &str) -> Result<Report, SimError> {
    let cfg = PolicyConfig::by_name(policy)?;
    let trace = Trace::parse(csv).map_err(|source| SimError::Trace { name: trace_name.to_owned(), source })?;
    simulate(&cfg, trace_name, &trace, &SimConfig::default())
}
