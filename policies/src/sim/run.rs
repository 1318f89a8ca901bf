//! The simulation loop.

use std::collections::BTreeMap;

use super::report::{Acc, Report};
use super::{SimConfig, SimError};
use crate::config::PolicyConfig;
use crate::planner::{Bounds, ContainerState, Observation, Planner, ResourceState};
use crate::resource::Resource;
use crate::spec::ResourceSpecs;
use crate::trace::Trace;

struct Series<'a> {
    resource: Resource,
    points: &'a [(u64, u64)],
    idx: usize,
    prev_demand: u64,
    /// An open step: `(start_ms, stepped demand capped at max)`.
    open: Option<(u64, u64)>,
    /// The limit last scheduled (equals the limit in force when nothing is
    /// pending).
    target: u64,
    acc: Acc,
}

impl Series<'_> {
    fn demand(&mut self, t: u64) -> u64 {
        while self.idx < self.points.len() && self.points[self.idx].0 <= t {
            self.idx += 1;
        }
        match self.idx {
            0 => 0,
            i => self.points[i - 1].1,
        }
    }

    /// Track demand steps and how long the limit takes to cover them.
    fn track_step(&mut self, t: u64, d: u64, limit: u64, max: u64, cfg: &SimConfig) {
        let cover = |target: u64| u128::from(limit) * 100 >= u128::from(target) * u128::from(cfg.cover_pct);
        if let Some((start, target)) = self.open {
            if cover(target) {
                self.acc.reactions.push(t - start);
                self.open = None;
            } else if u128::from(d) * 100 < u128::from(target) * 80 {
                self.acc.unresolved += 1;
                self.open = None;
            }
        }
        let rise = u128::from(d) * 100 > u128::from(self.prev_demand) * u128::from(100 + cfg.step_rise_pct);
        if self.open.is_none() && rise && d > limit {
            let target = d.min(max);
            if !cover(target) {
                self.open = Some((t, target));
            }
        }
        self.prev_demand = d;
    }
}

struct Container<'a> {
    name: String,
    specs: ResourceSpecs,
    /// OOM kills so far (the counter the planner differences).
    oom_kills: u64,
    /// Memory first, so that an OOM kill idles the other resources in the
    /// same step.
    series: Vec<Series<'a>>,
    restart_until: u64,
    pending: Vec<(u64, Resource, u64)>,
}

impl Container<'_> {
    fn apply_due(&mut self, t: u64) {
        let mut due = Vec::new();
        self.pending.retain(|&(at, r, v)| {
            if at <= t {
                due.push((r, v));
                false
            } else {
                true
            }
        });
        for (r, v) in due {
            let Some(spec) = self.specs.get_mut(r) else {
                continue;
            };
            if spec.current() != v
                && spec.set_current(v).is_ok()
                && let Some(s) = self.series.iter_mut().find(|s| s.resource == r)
            {
                s.acc.changes += 1;
            }
        }
    }

    /// Serve one step and tell the planner what was measured; returns the
    /// OOM kills it caused.
    fn step(&mut self, t: u64, cfg: &SimConfig, planner: &mut Planner) -> u64 {
        let step = cfg.step_ms;
        let mut restarting = t < self.restart_until;
        // Tasks that reach the memory limit wait for a raise (the agent's
        // `memory_wait`) where the policy raises waiting memory and the
        // limit is below max; the container then serves nothing else.
        let waits = cfg.memory_wait && planner.raises_waiting_memory(&self.name);
        let mut waiting = false;
        let mut kills = 0;
        let mut obs = Observation { time_ms: t + step, interval_ms: step, ..Observation::default() };
        for s in &mut self.series {
            let Some(spec) = self.specs.get(s.resource) else {
                continue;
            };
            let (limit, max) = (spec.current(), spec.max());
            let d = s.demand(t);
            s.track_step(t, d, limit, max, cfg);
            if s.resource == Resource::Mem && !restarting && d > limit {
                if waits && limit < max {
                    waiting = true;
                    obs.mem_waiting = true;
                } else {
                    kills += 1;
                    self.restart_until = t + cfg.oom_restart_ms;
                    restarting = true;
                }
            }
            let used = if restarting || (waiting && s.resource != Resource::Mem) { 0 } else { d.min(limit) };
            obs.usage.insert(s.resource, used);
            if !restarting && !waiting && s.resource == Resource::Cpu {
                // Millicores x ms = CPU-microseconds.
                obs.cpu_throttled_usec = (d - used).saturating_mul(step);
            }
            let ps = u128::from(cfg.pressure_start_pct);
            if !restarting && s.resource == Resource::Mem && u128::from(used) * 100 > u128::from(limit) * ps {
                let over = u128::from(used) * 100 - u128::from(limit) * ps;
                let span = u128::from(limit) * (100 - ps);
                let stall = u128::from(step) * 1000 * over / span / 2;
                obs.mem_stall_usec = u64::try_from(stall).unwrap_or(u64::MAX);
            }
            s.acc.demand += u128::from(d) * u128::from(step);
            s.acc.used += u128::from(used) * u128::from(step);
            s.acc.allocated += u128::from(limit) * u128::from(step);
        }
        self.oom_kills += kills;
        obs.oom_kills = Some(self.oom_kills);
        planner.observe(&self.name, &obs);
        kills
    }
}

/// Replay `trace` (called `trace_name` in the report) through the policy
/// `policy`, one instance per container.
pub fn simulate(policy: &PolicyConfig, trace_name: &str, trace: &Trace, cfg: &SimConfig) -> Result<Report, SimError> {
    cfg.validate()?;
    let timing = policy.timing();
    let tick = cfg.tick_ms.unwrap_or(timing.tick_ms).max(1);
    let delay = cfg.actuation_delay_ms.unwrap_or(timing.actuation_delay_ms);
    let mut containers = Vec::new();
    let mut planner = Planner::new();
    for name in trace.containers() {
        let mut resources = trace.resources(name);
        resources.sort_by_key(|r| (*r != Resource::Mem, *r));
        let mut specs = ResourceSpecs::new();
        let mut series = Vec::new();
        for r in resources {
            let tpl = cfg.templates.get(&r).ok_or(SimError::MissingTemplate(r))?;
            let spec = tpl.spec(r)?;
            specs.insert(r, spec);
            series.push(Series {
                resource: r,
                points: trace.series(name, r).unwrap_or_default(),
                idx: 0,
                prev_demand: 0,
                open: None,
                target: spec.current(),
                acc: Acc::default(),
            });
        }
        planner.insert(name, policy.build()?);
        containers.push(Container {
            name: name.to_owned(),
            specs,
            oom_kills: 0,
            series,
            restart_until: 0,
            pending: Vec::new(),
        });
    }

    let step = cfg.step_ms;
    let mut oom_events = 0;
    // A recorded trace starts at the wall-clock time of its first tick.
    let mut t = trace.start_ms();
    let mut next_tick = t + tick;
    while t < trace.end_ms() {
        let now = t + step;
        for c in &mut containers {
            c.apply_due(t);
            oom_events += c.step(t, cfg, &mut planner);
        }
        if now >= next_tick {
            next_tick = now + tick;
            decide_all(&mut planner, &mut containers, now, now + delay, cfg);
        }
        t = now;
    }

    let mut accs: BTreeMap<Resource, Acc> = BTreeMap::new();
    for c in &mut containers {
        for s in &mut c.series {
            if s.open.take().is_some() {
                s.acc.unresolved += 1;
            }
            accs.entry(s.resource).or_default().merge(&s.acc);
        }
    }
    Ok(Report::build(policy.name(), trace_name, trace.end_ms() - trace.start_ms(), containers.len(), &accs, oom_events))
}

/// Ask the planner (every policy, floors, arbitration: what the agent does)
/// and schedule what changes. The limit "in force" a policy sees is the one
/// last scheduled, so a change on its way is not asked for twice.
fn decide_all(planner: &mut Planner, containers: &mut [Container<'_>], now: u64, apply_at: u64, cfg: &SimConfig) {
    let states: Vec<ContainerState> = containers
        .iter()
        .map(|c| ContainerState {
            name: c.name.clone(),
            priority: 0,
            resources: c
                .series
                .iter()
                .filter_map(|s| {
                    let spec = c.specs.get(s.resource)?;
                    let bounds = Bounds {
                        min: spec.min(),
                        max: spec.max(),
                        guard: spec.guard(),
                        boundary: spec.boundary(),
                        boundary_type: spec.boundary_type(),
                    };
                    Some(ResourceState { resource: s.resource, bounds, ceiling: None, in_force: Some(s.target) })
                })
                .collect(),
        })
        .collect();
    for ch in planner.decide(now, &states, &cfg.host) {
        let Some(c) = containers.iter_mut().find(|c| c.name == ch.container) else { continue };
        let Some(s) = c.series.iter_mut().find(|s| s.resource == ch.resource) else { continue };
        if ch.new != s.target {
            s.target = ch.new;
            c.pending.push((apply_at, ch.resource, ch.new));
        }
    }
}
