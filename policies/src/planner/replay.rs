//! Replaying a recorded agent run (`scaler record`) through the planner:
//! the same observations, the same limits in force, and the planner must
//! set the limits the agent set.

use std::collections::BTreeMap;

use super::{Bounds, ContainerState, Observation, Planner, ResourceState};
use crate::config::{ConfigError, PolicyConfig};
use crate::resource::Resource;
use crate::sample::HostCapacity;
use crate::trace::Trace;

/// Why a replay could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The trace is a plain demand trace.
    #[error("the trace was not recorded by `scaler record` (no measurements to replay)")]
    NotRecorded,
    /// The container has no recorded rows for a managed resource.
    #[error("no recorded rows for {container}/{resource}")]
    Missing {
        /// Container.
        container: String,
        /// Resource.
        resource: Resource,
    },
    /// The policy does not build.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// One limit the planner set differently from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The tick the decision was made at, ms.
    pub time_ms: u64,
    /// Which resource.
    pub resource: Resource,
    /// What the agent had in force at the next tick.
    pub recorded: Option<u64>,
    /// What the planner set.
    pub replayed: Option<u64>,
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Ticks replayed.
    pub ticks: usize,
    /// Limits the planner changed.
    pub changes: usize,
    /// Where it disagreed with the recording.
    pub mismatches: Vec<Mismatch>,
}

/// Replays the ticks of `container` recorded from `from_ms` on through a
/// fresh planner running `policy` with `bounds` (the subscription's) on a
/// host with `capacity`, and compares each limit it sets with the limit the
/// recording shows in force at the next tick.
pub fn replay(
    trace: &Trace,
    container: &str,
    policy: &PolicyConfig,
    bounds: &BTreeMap<Resource, Bounds>,
    capacity: &HostCapacity,
    from_ms: u64,
) -> Result<Replay, ReplayError> {
    if !trace.is_recorded() {
        return Err(ReplayError::NotRecorded);
    }
    let mut rows = BTreeMap::new();
    for &r in bounds.keys() {
        let rec = trace
            .recorded(container, r)
            .ok_or_else(|| ReplayError::Missing { container: container.to_owned(), resource: r })?;
        rows.insert(r, rec);
    }
    let mut times: Vec<u64> =
        rows.values().flat_map(|v| v.iter().map(|x| x.time_ms)).filter(|&t| t >= from_ms).collect();
    times.sort_unstable();
    times.dedup();
    let at = |r: Resource, t: u64| rows.get(&r).and_then(|v| v.iter().find(|x| x.time_ms == t));
    let mut planner = Planner::new();
    planner.insert(container, policy.build()?);
    let mut out = Replay::default();
    for (k, &t) in times.iter().enumerate() {
        let mut obs = Observation { time_ms: t, ..Observation::default() };
        for &r in bounds.keys() {
            let Some(x) = at(r, t) else { continue };
            obs.interval_ms = x.interval_ms;
            if let Some(u) = x.usage {
                obs.usage.insert(r, u);
            }
            match r {
                Resource::Cpu => obs.cpu_throttled_usec = x.throttled_us,
                Resource::Mem => {
                    obs.mem_stall_usec = x.stall_us;
                    obs.oom_kills = x.oom_kills;
                    obs.mem_waiting = x.waiting;
                    obs.mem_reclaims = x.reclaims;
                    obs.mem_refault_bytes = x.refault_bytes;
                    obs.mem_refault_stall_usec = x.refault_stall_us;
                }
                _ => {}
            }
        }
        planner.observe(container, &obs);
        let state = ContainerState {
            name: container.to_owned(),
            priority: 0,
            resources: bounds
                .iter()
                .map(|(&r, &b)| ResourceState {
                    resource: r,
                    bounds: b,
                    ceiling: None,
                    in_force: at(r, t).and_then(|x| x.limit),
                })
                .collect(),
        };
        let changes = planner.decide(t, std::slice::from_ref(&state), capacity);
        out.ticks += 1;
        out.changes += changes.len();
        let Some(&next) = times.get(k + 1) else { break };
        for rs in &state.resources {
            let replayed = changes.iter().find(|c| c.resource == rs.resource).map_or(rs.in_force, |c| Some(c.new));
            let recorded = at(rs.resource, next).and_then(|x| x.limit);
            if replayed != recorded {
                out.mismatches.push(Mismatch { time_ms: t, resource: rs.resource, recorded, replayed });
            }
        }
    }
    Ok(out)
}
