//! The interface every per-container policy implements.

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, Reason};
use crate::resource::Resource;
use crate::sample::Sample;
use crate::spec::{ResourceSpec, ResourceSpecs};

/// A stateful per-container policy. The caller feeds it samples with
/// [`Policy::observe`] and asks it for decisions with [`Policy::decide`];
/// time is always an argument, so a run can be replayed exactly.
///
/// Every decision it returns changes the limit (`new != old`) and lies
/// within `[min, max]` of the spec it was given. The caller applies it after
/// host arbitration ([`crate::arbitrate`]) and passes the limit really in
/// force in the next call's `specs`.
pub trait Policy: Send {
    /// The policy's name (as in [`crate::PolicyConfig::name`]).
    fn name(&self) -> &str;

    /// Record a sample of `resource`. Samples of one resource arrive in time
    /// order.
    fn observe(&mut self, resource: Resource, sample: &Sample);

    /// Decide at `now_ms`, given the specs (with the limits in force) of the
    /// container. Resources with `guard == false` are left alone.
    fn decide(&mut self, now_ms: u64, specs: &ResourceSpecs) -> Vec<Decision>;

    /// How often the policy wants to be called and how long its decisions
    /// take to apply; used by the simulator.
    fn timing(&self) -> Timing;

    /// Where the policy would start a limit given the usage measured now
    /// (`None`: no opinion; the planner starts from what is in force, or
    /// `max`).
    fn start(&self, _resource: Resource, _usage: u64) -> Option<u64> {
        None
    }

    /// Takes new parameters of the same policy while running, keeping what
    /// it has learnt (samples, pending events): the operator changes a
    /// rule without losing the events it counts. `false` when `cfg` is of
    /// another policy or this one cannot (the caller then builds afresh).
    /// `cfg` is validated by the caller.
    fn reconfigure(&mut self, _cfg: &crate::PolicyConfig) -> bool {
        false
    }

    /// Whether the agent keeps memory at usage plus headroom
    /// ([`crate::planner::mem_floor`]) under this policy; `false`: at usage
    /// itself, no headroom (never below what the container uses), so a
    /// reproduction of another system's arithmetic is not bent by it.
    fn mem_headroom(&self) -> bool {
        true
    }

    /// Whether the policy raises memory at once when tasks wait at the
    /// limit ([`Sample::mem_waiting`]). Then the agent lets tasks that reach
    /// the limit below `max` wait for it instead of being OOM-killed.
    fn raises_waiting_memory(&self) -> bool {
        false
    }
}

/// When a policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Interval between [`Policy::decide`] calls, ms.
    pub tick_ms: u64,
    /// Delay between a decision and the limit being in force, ms (the
    /// original's Scaler polled for requests every 5 s; the agent applies at
    /// once).
    pub actuation_delay_ms: u64,
}

/// Turn a proposed limit into a decision: clamp it into `[min, max]`; for
/// memory, never below `mem_floor` (the latest usage, itself capped at
/// `max`); `None` when nothing changes.
pub(crate) fn propose(
    resource: Resource,
    spec: &ResourceSpec,
    proposed: u64,
    mem_floor: Option<u64>,
    reason: Reason,
) -> Option<Decision> {
    let mut new = spec.clamp(proposed);
    if resource == Resource::Mem
        && let Some(usage) = mem_floor
    {
        new = new.max(spec.clamp(usage));
    }
    (new != spec.current()).then_some(Decision { resource, old: spec.current(), new, reason })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spec::BoundaryType;

    #[test]
    fn propose_clamps_and_floors_memory() {
        let spec = ResourceSpec::try_new(100, 1000, 500, 10, BoundaryType::PercentOfMax).unwrap();
        let d = propose(Resource::Cpu, &spec, 5000, None, Reason::Static).unwrap();
        assert_eq!(d.new, 1000);
        let d = propose(Resource::Cpu, &spec, 1, None, Reason::Static).unwrap();
        assert_eq!(d.new, 100);
        assert!(propose(Resource::Cpu, &spec, 500, None, Reason::Static).is_none());
        let d = propose(Resource::Mem, &spec, 200, Some(300), Reason::Static).unwrap();
        assert_eq!(d.new, 300);
        // The floor is itself capped at max.
        let d = propose(Resource::Mem, &spec, 200, Some(3000), Reason::Static).unwrap();
        assert_eq!(d.new, 1000);
    }
}
