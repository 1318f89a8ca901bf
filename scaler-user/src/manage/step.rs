//! One tick of the guardian and scaler: observe, decide, keep memory above
//! usage, arbitrate against the host, apply, log, save.

use std::collections::{BTreeMap, HashMap};

use policies::{Request, Resource, ResourceSpec, ResourceSpecs, arbitrate};

use super::{Manager, mem_floor};
use crate::sample::Sample;

/// One resource of one container after deciding, before arbitration.
struct Want {
    name: String,
    resource: Resource,
    in_force: Option<u64>,
    want: u64,
    /// Memory: never below this (usage plus headroom, capped at max).
    floor: u64,
    min: u64,
    priority: u32,
    reason: String,
}

/// The kernel keeps memory limits in whole pages: align down (staying
/// within max), but never below `min`.
pub(crate) fn page_align(value: u64, min: u64) -> u64 {
    const PAGE: u64 = 4096;
    let down = value / PAGE * PAGE;
    if down >= min { down } else { min.div_ceil(PAGE).saturating_mul(PAGE) }
}

fn policy_sample(s: &Sample, r: Resource, usage: u64, oom_delta: u64) -> policies::Sample {
    let mut p = policies::Sample::new(s.time_ms, s.interval_ms.max(1), usage);
    match r {
        // Throttled time summed over CPUs per interval is the CPU demand the
        // quota refused: `throttled_usec / interval_ms` millicores.
        Resource::Cpu => p = p.with_throttled(s.signals.cpu_throttled_usec.unwrap_or(0)),
        Resource::Mem => {
            p = p.with_pressure(s.signals.mem_stall_usec.unwrap_or(0)).with_oom_kills(oom_delta);
        }
        _ => {}
    }
    p
}

impl Manager {
    /// Runs the loop for every subscribed container with a sample this tick.
    /// `samples` is keyed by container name.
    pub fn step(&mut self, now_ms: u64, samples: &HashMap<String, Sample>) {
        self.act.refresh();
        let mut wants: Vec<Want> = Vec::new();
        let mut dirty: Vec<String> = Vec::new();
        for (name, m) in &mut self.subs {
            let Some(s) = samples.get(name) else {
                m.active = false;
                continue;
            };
            m.active = true;
            let oom_total = s.signals.oom_kills;
            let oom_delta = match (m.last_oom, oom_total) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => 0,
            };
            m.last_oom = oom_total;
            let mut specs = ResourceSpecs::new();
            let mut in_force_of = BTreeMap::new();
            for (&r, b) in &m.sub.resources {
                let reading = s.resources.get(&r.to_string()).unwrap_or_default();
                let in_force = if self.act.owns(r) { self.act.own_limit(&m.sub.cgroup, r) } else { reading.current };
                let known = m.sub.limits.get(&r).copied().flatten();
                if in_force != known {
                    self.events.push(now_ms, name, r, known, in_force, "changed outside scaler: adopted".into());
                    m.sub.limits.insert(r, in_force);
                    dirty.push(name.clone());
                }
                in_force_of.insert(r, in_force);
                if let Some(u) = reading.usage {
                    m.usage.insert(r, u);
                    m.policy.observe(r, &policy_sample(s, r, u, oom_delta));
                }
                let eff_max = m.sub.effective_max(r).unwrap_or(b.max);
                let cur = in_force.unwrap_or(b.max).clamp(b.min, eff_max);
                if let Ok(spec) = ResourceSpec::try_new(b.min, eff_max, cur, b.boundary, b.boundary_type) {
                    specs.insert(r, spec.with_guard(b.guard));
                }
            }
            let decisions = m.policy.decide(now_ms, &specs);
            for (r, spec) in specs.iter() {
                let in_force = in_force_of.get(&r).copied().flatten();
                let decided = decisions.iter().find(|d| d.resource == r);
                let mut want = decided.map_or(spec.current(), |d| d.new);
                let mut reason = decided.map_or_else(String::new, |d| d.reason.to_string());
                if decided.is_none() && in_force != Some(want) {
                    reason = if in_force.is_some_and(|v| v > spec.max()) {
                        "above the ceiling or max".into()
                    } else {
                        "brought within [min, max]".into()
                    };
                }
                let floor = match (r, m.usage.get(&Resource::Mem)) {
                    (Resource::Mem, Some(&u)) => mem_floor(u).min(spec.max()),
                    _ => 0,
                };
                if want < floor {
                    want = floor;
                    reason = format!("memory floor: usage plus headroom ({reason})");
                }
                wants.push(Want {
                    name: name.clone(),
                    resource: r,
                    in_force,
                    want,
                    floor,
                    min: spec.min(),
                    priority: m.sub.priority,
                    reason,
                });
            }
        }

        // Arbitration, per resource with a capacity.
        let mut finals: Vec<(usize, u64, bool)> = wants.iter().enumerate().map(|(i, w)| (i, w.want, false)).collect();
        let mut by_resource: BTreeMap<Resource, Vec<usize>> = BTreeMap::new();
        for (i, w) in wants.iter().enumerate() {
            by_resource.entry(w.resource).or_default().push(i);
        }
        for (r, idx) in by_resource {
            let Some(Some(cap)) = self.capacity.get(&r).copied() else { continue };
            let requests: Vec<Request> = idx
                .iter()
                .map(|&i| Request { min: wants[i].min, want: wants[i].want, priority: wants[i].priority })
                .collect();
            for (k, g) in arbitrate(&requests, cap).into_iter().enumerate() {
                let i = idx[k];
                // Memory in use is never taken away, whatever the grant.
                finals[i] = (i, g.amount.max(wants[i].floor), g.limited);
            }
        }

        // Apply.
        for (i, value, limited) in finals {
            let w = &wants[i];
            let value = if w.resource == Resource::Mem { page_align(value, w.min) } else { value };
            if w.in_force == Some(value) {
                continue;
            }
            let Some(m) = self.subs.get_mut(&w.name) else { continue };
            let reason = if limited { format!("{} (limited by host capacity)", w.reason) } else { w.reason.clone() };
            match self.act.apply(&m.sub.cgroup, w.resource, Some(value)) {
                Ok(()) => {
                    m.failing.remove(&w.resource);
                    m.sub.limits.insert(w.resource, Some(value));
                    dirty.push(w.name.clone());
                    self.events.push(now_ms, &w.name, w.resource, w.in_force, Some(value), reason);
                }
                Err(e) => {
                    if m.failing.insert(w.resource) {
                        self.events.push(
                            now_ms,
                            &w.name,
                            w.resource,
                            w.in_force,
                            w.in_force,
                            format!("apply failed: {e}"),
                        );
                    }
                }
            }
        }

        dirty.sort();
        dirty.dedup();
        if !dirty.is_empty() {
            let subs: Vec<&_> = dirty.iter().filter_map(|n| self.subs.get(n)).map(|m| &m.sub).collect();
            if let Err(e) = self.store.save(&subs, &[]) {
                tracing::error!("saving state: {e}");
            }
        }
    }
}
