//! The host-level planner: every decision the agent makes about the limits
//! of the containers it manages, in one place, so that the simulator and a
//! replay of a recorded run make exactly the decisions the agent made.
//!
//! Each tick the agent (or the simulator) [`Planner::observe`]s what it
//! measured per container, then asks [`Planner::decide`] for the new limits,
//! given the limits in force and the host's capacity. The planner:
//!
//! 1. feeds the samples to each container's [`Policy`] and asks it to decide;
//! 2. brings every limit within `[min, max]` (`max` lowered by an external
//!    ceiling, e.g. an energy cap);
//! 3. keeps memory above what is in use ([`mem_floor`]);
//! 4. arbitrates each resource against the host's capacity ([`arbitrate`]),
//!    never taking memory in use away;
//! 5. aligns memory limits to whole pages ([`page_align`]), as the kernel
//!    keeps them;
//! 6. returns the limits that change, with why.
//!
//! Starting limits for a new subscription come from [`start_limit`].
//! [`replay`] feeds a recorded agent run back through a planner and checks
//! that it sets the same limits.

mod replay;
mod start;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use replay::{Mismatch, Replay, ReplayError, replay};
pub use start::{StartInput, start_limit};

use crate::arbitrate::{Request, arbitrate};
use crate::policy::Policy;
use crate::resource::Resource;
use crate::sample::{HostCapacity, Sample};
use crate::spec::{BoundaryType, ResourceSpec, ResourceSpecs};

/// What the user allows for one resource of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// Lowest limit.
    pub min: u64,
    /// Highest limit.
    pub max: u64,
    /// Scale this resource (else the limit stays where it is, within bounds).
    pub guard: bool,
    /// `classic`'s boundary percentage.
    pub boundary: u8,
    /// What `boundary` is a percentage of.
    pub boundary_type: BoundaryType,
}

impl Bounds {
    /// `max` lowered by an external ceiling, never below `min` (nor, for
    /// bounds that are not valid, above `max`: no panic on bad input).
    pub fn effective_max(&self, ceiling: Option<u64>) -> u64 {
        ceiling.map_or(self.max, |c| c.max(self.min).min(self.max))
    }
}

/// Memory never goes below usage plus this share of it...
pub const MEM_HEADROOM_PERCENT: u64 = 10;
/// ...and at least this much.
pub const MEM_HEADROOM_MIN: u64 = 16 << 20;

/// The lowest memory limit allowed for a working set of `usage` bytes.
pub fn mem_floor(usage: u64) -> u64 {
    usage.saturating_add((usage / 100 * MEM_HEADROOM_PERCENT).max(MEM_HEADROOM_MIN))
}

/// The kernel keeps memory limits in whole pages: align down (staying
/// within max), but never below `min`.
pub fn page_align(value: u64, min: u64) -> u64 {
    const PAGE: u64 = 4096;
    let down = value / PAGE * PAGE;
    if down >= min { down } else { min.div_ceil(PAGE).saturating_mul(PAGE) }
}

/// What was measured for one container over one tick.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// End of the interval (ms).
    pub time_ms: u64,
    /// Length of the interval (ms).
    pub interval_ms: u64,
    /// Usage per managed resource (resources the host cannot measure for
    /// this container are absent).
    pub usage: BTreeMap<Resource, u64>,
    /// CPU time throttled during the interval, µs.
    pub cpu_throttled_usec: u64,
    /// Memory PSI "some" stall during the interval, µs.
    pub mem_stall_usec: u64,
    /// OOM kills in the container since it was created (a counter; the
    /// planner takes differences).
    pub oom_kills: Option<u64>,
    /// Tasks wait at the memory limit for it to be raised.
    #[serde(default)]
    pub mem_waiting: bool,
    /// Times the container entered reclaim at its memory limit during the
    /// interval.
    #[serde(default)]
    pub mem_reclaims: u64,
    /// Evicted file cache read back during the interval, bytes.
    #[serde(default)]
    pub mem_refault_bytes: u64,
    /// The I/O stall those re-reads caused, µs.
    #[serde(default)]
    pub mem_refault_stall_usec: u64,
}

/// One managed resource of a container as it stands when deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceState {
    /// Which resource.
    pub resource: Resource,
    /// The user's bounds.
    pub bounds: Bounds,
    /// An external ceiling (energy cap), if any.
    pub ceiling: Option<u64>,
    /// The limit in force (`None` = unlimited).
    pub in_force: Option<u64>,
}

/// A container as it stands when deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// Its name (as given to [`Planner::insert`]).
    pub name: String,
    /// Arbitration priority (higher first).
    pub priority: u32,
    /// Its managed resources.
    pub resources: Vec<ResourceState>,
}

/// A limit to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Container name.
    pub container: String,
    /// Which resource.
    pub resource: Resource,
    /// The limit in force before (`None` = unlimited).
    pub old: Option<u64>,
    /// The limit to write.
    pub new: u64,
    /// Why, in words.
    pub reason: String,
    /// The host's capacity held the limit below what was wanted.
    pub limited: bool,
}

struct Member {
    policy: Box<dyn Policy>,
    last_oom: Option<u64>,
    mem_usage: Option<u64>,
}

/// The planner of one host: one policy per managed container.
#[derive(Default)]
pub struct Planner {
    members: BTreeMap<String, Member>,
}

/// One resource of one container between deciding and arbitrating.
struct Want {
    container: usize,
    resource: Resource,
    in_force: Option<u64>,
    want: u64,
    /// Memory: never below this (usage plus headroom, capped at max).
    floor: u64,
    min: u64,
    priority: u32,
    reason: String,
}

impl Planner {
    /// An empty planner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Manages `name` with `policy` (replacing any policy it had, and its
    /// history).
    pub fn insert(&mut self, name: &str, policy: Box<dyn Policy>) {
        self.members.insert(name.to_owned(), Member { policy, last_oom: None, mem_usage: None });
    }

    /// Gives `name`'s policy new parameters: in place when the policy can
    /// take them (its state, pending events included, stays; returns
    /// `true`), else a fresh policy built from `cfg` (`false`).
    pub fn reconfigure(&mut self, name: &str, cfg: &crate::PolicyConfig) -> Result<bool, crate::ConfigError> {
        cfg.validate()?;
        let Some(m) = self.members.get_mut(name) else { return Ok(false) };
        if m.policy.reconfigure(cfg) {
            return Ok(true);
        }
        m.policy = cfg.build()?;
        Ok(false)
    }

    /// Stops managing `name`.
    pub fn remove(&mut self, name: &str) {
        self.members.remove(name);
    }

    /// Whether `name` is managed.
    pub fn contains(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// The policy's name for `name`.
    pub fn policy_name(&self, name: &str) -> Option<&str> {
        self.members.get(name).map(|m| m.policy.name())
    }

    /// Whether `name`'s policy raises memory when tasks wait at the limit
    /// (see [`Policy::raises_waiting_memory`]).
    pub fn raises_waiting_memory(&self, name: &str) -> bool {
        self.members.get(name).is_some_and(|m| m.policy.raises_waiting_memory())
    }

    /// Records what was measured for `name` (ignored when not managed).
    pub fn observe(&mut self, name: &str, obs: &Observation) {
        let Some(m) = self.members.get_mut(name) else { return };
        let oom_delta = match (m.last_oom, obs.oom_kills) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        if obs.oom_kills.is_some() {
            m.last_oom = obs.oom_kills;
        }
        for (&r, &usage) in &obs.usage {
            let mut s = Sample::new(obs.time_ms, obs.interval_ms.max(1), usage);
            match r {
                // Throttled time summed over CPUs per interval is the CPU
                // demand the quota refused: `throttled_usec / interval_ms`
                // millicores.
                Resource::Cpu => s = s.with_throttled(obs.cpu_throttled_usec),
                Resource::Mem => {
                    s = s
                        .with_pressure(obs.mem_stall_usec)
                        .with_oom_kills(oom_delta)
                        .with_waiting(obs.mem_waiting)
                        .with_reclaims(obs.mem_reclaims)
                        .with_refaults(obs.mem_refault_bytes, obs.mem_refault_stall_usec);
                    m.mem_usage = Some(usage);
                }
                _ => {}
            }
            m.policy.observe(r, &s);
        }
    }

    /// Decides the limits of every container in `containers` (those not
    /// managed are skipped) at `now_ms`, against the host's `capacity`.
    /// Returns only the limits that change.
    pub fn decide(&mut self, now_ms: u64, containers: &[ContainerState], capacity: &HostCapacity) -> Vec<Change> {
        let mut wants: Vec<Want> = Vec::new();
        for (ci, c) in containers.iter().enumerate() {
            let Some(m) = self.members.get_mut(&c.name) else { continue };
            let mut specs = ResourceSpecs::new();
            for rs in &c.resources {
                let b = rs.bounds;
                let eff_max = b.effective_max(rs.ceiling);
                // Bounds the user could not have given (min above max) are
                // left alone, never a panic.
                let cur = rs.in_force.unwrap_or(b.max).max(b.min).min(eff_max);
                if let Ok(spec) = ResourceSpec::try_new(b.min, eff_max, cur, b.boundary, b.boundary_type) {
                    specs.insert(rs.resource, spec.with_guard(b.guard));
                }
            }
            let decisions = m.policy.decide(now_ms, &specs);
            for rs in &c.resources {
                let r = rs.resource;
                let Some(spec) = specs.get(r) else { continue };
                let decided = decisions.iter().find(|d| d.resource == r);
                let mut want = decided.map_or(spec.current(), |d| d.new);
                let mut reason = decided.map_or_else(String::new, |d| d.reason.to_string());
                if decided.is_none() && rs.in_force != Some(want) {
                    reason = if rs.in_force.is_some_and(|v| v > spec.max()) {
                        "above the ceiling or max".into()
                    } else {
                        "brought within [min, max]".into()
                    };
                }
                // Capped at the user's max, not at a ceiling: a ceiling
                // cannot take memory in use away.
                let headroom = m.policy.mem_headroom();
                let floor = match (r, m.mem_usage) {
                    (Resource::Mem, Some(u)) if headroom => mem_floor(u).min(rs.bounds.max),
                    // Whole pages, so that aligning never goes below usage.
                    (Resource::Mem, Some(u)) => u.div_ceil(4096).saturating_mul(4096).min(rs.bounds.max),
                    _ => 0,
                };
                if want < floor {
                    want = floor;
                    let what = if headroom { "usage plus headroom" } else { "usage" };
                    reason = format!("memory floor: {what} ({reason})");
                }
                wants.push(Want {
                    container: ci,
                    resource: r,
                    in_force: rs.in_force,
                    want,
                    floor,
                    min: spec.min(),
                    priority: c.priority,
                    reason,
                });
            }
        }

        // Arbitration, per resource with a capacity.
        let mut finals: Vec<(u64, bool)> = wants.iter().map(|w| (w.want, false)).collect();
        let mut by_resource: BTreeMap<Resource, Vec<usize>> = BTreeMap::new();
        for (i, w) in wants.iter().enumerate() {
            by_resource.entry(w.resource).or_default().push(i);
        }
        for (r, idx) in by_resource {
            let Some(cap) = capacity.get(r) else { continue };
            // Memory in use counts as a minimum, so that the floors are
            // served before anything above them.
            let requests: Vec<Request> = idx
                .iter()
                .map(|&i| Request {
                    min: wants[i].min.max(wants[i].floor),
                    want: wants[i].want,
                    priority: wants[i].priority,
                })
                .collect();
            for (k, g) in arbitrate(&requests, cap).into_iter().enumerate() {
                let i = idx[k];
                // Memory in use is never taken away, whatever the grant.
                finals[i] = (g.amount.max(wants[i].floor), g.limited);
            }
        }

        wants
            .iter()
            .zip(finals)
            .filter_map(|(w, (value, limited))| {
                let value = if w.resource == Resource::Mem { page_align(value, w.min) } else { value };
                (w.in_force != Some(value)).then(|| Change {
                    container: containers[w.container].name.clone(),
                    resource: w.resource,
                    old: w.in_force,
                    new: value,
                    reason: if limited { format!("{} (limited by host capacity)", w.reason) } else { w.reason.clone() },
                    limited,
                })
            })
            .collect()
    }
}
