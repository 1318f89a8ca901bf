//! The simulation loop.

use std::collections::BTreeMap;

use super::report::{Acc, Report};
use super::{SimConfig, SimError};
use crate::arbitrate::{Request, arbitrate};
use crate::config::PolicyConfig;
use crate::policy::Policy;
use crate::resource::Resource;
use crate::sample::Sample;
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
    policy: Box<dyn Policy>,
    specs: ResourceSpecs,
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

    /// Serve one step; returns the OOM kills it caused.
    fn step(&mut self, t: u64, cfg: &SimConfig) -> u64 {
        let step = cfg.step_ms;
        let mut restarting = t < self.restart_until;
        let mut kills = 0;
        for s in &mut self.series {
            let Some(spec) = self.specs.get(s.resource) else {
                continue;
            };
            let (limit, max) = (spec.current(), spec.max());
            let d = s.demand(t);
            s.track_step(t, d, limit, max, cfg);
            let mut sample = Sample::new(t + step, step, 0);
            if s.resource == Resource::Mem && !restarting && d > limit {
                kills += 1;
                self.restart_until = t + cfg.oom_restart_ms;
                restarting = true;
                sample.oom_kills = 1;
            }
            let used = if restarting { 0 } else { d.min(limit) };
            sample.usage = used;
            if !restarting && s.resource == Resource::Cpu {
                // Millicores x ms = CPU-microseconds.
                sample.cpu_throttled_usec = (d - used).saturating_mul(step);
            }
            let ps = u128::from(cfg.pressure_start_pct);
            if !restarting && s.resource == Resource::Mem && u128::from(used) * 100 > u128::from(limit) * ps {
                let over = u128::from(used) * 100 - u128::from(limit) * ps;
                let span = u128::from(limit) * (100 - ps);
                let stall = u128::from(step) * 1000 * over / span / 2;
                sample.mem_pressure = u64::try_from(stall).unwrap_or(u64::MAX);
            }
            self.policy.observe(s.resource, &sample);
            s.acc.demand += u128::from(d) * u128::from(step);
            s.acc.used += u128::from(used) * u128::from(step);
            s.acc.allocated += u128::from(limit) * u128::from(step);
        }
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
        containers.push(Container { policy: policy.build()?, specs, series, restart_until: 0, pending: Vec::new() });
    }

    let step = cfg.step_ms;
    let mut oom_events = 0;
    let mut next_tick = tick;
    let mut t = 0;
    while t < trace.end_ms() {
        let now = t + step;
        for c in &mut containers {
            c.apply_due(t);
            oom_events += c.step(t, cfg);
        }
        if now >= next_tick {
            next_tick = now + tick;
            decide_all(&mut containers, now, now + delay, cfg);
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
    Ok(Report::build(policy.name(), trace_name, trace.end_ms(), containers.len(), &accs, oom_events))
}

/// Ask every policy, arbitrate per resource, schedule what changes.
fn decide_all(containers: &mut [Container<'_>], now: u64, apply_at: u64, cfg: &SimConfig) {
    let mut wants: Vec<BTreeMap<Resource, u64>> = Vec::with_capacity(containers.len());
    for c in containers.iter_mut() {
        let mut w: BTreeMap<Resource, u64> = c.series.iter().map(|s| (s.resource, s.target)).collect();
        for d in c.policy.decide(now, &c.specs) {
            w.insert(d.resource, d.new);
        }
        wants.push(w);
    }
    for r in Resource::LIMITABLE {
        let members: Vec<usize> = (0..containers.len()).filter(|&i| wants[i].contains_key(&r)).collect();
        let grants: Vec<u64> = match cfg.host.get(r) {
            Some(capacity) => {
                let requests: Vec<Request> = members
                    .iter()
                    .map(|&i| Request {
                        min: containers[i].specs.get(r).map_or(0, |s| s.min()),
                        want: wants[i][&r],
                        priority: 0,
                    })
                    .collect();
                arbitrate(&requests, capacity).iter().map(|g| g.amount).collect()
            }
            None => members.iter().map(|&i| wants[i][&r]).collect(),
        };
        for (k, &i) in members.iter().enumerate() {
            let c = &mut containers[i];
            let Some(s) = c.series.iter_mut().find(|s| s.resource == r) else {
                continue;
            };
            let Some(spec) = c.specs.get(r) else { continue };
            let grant = spec.clamp(grants[k]);
            if grant != s.target {
                s.target = grant;
                c.pending.push((apply_at, r, grant));
            }
        }
    }
}
