//! One tick of the guardian and scaler: observe, let the planner decide
//! (policies, memory floor, arbitration, page alignment: all in
//! `policies::planner`), then apply, log and save.

use std::collections::{BTreeMap, HashMap};

use policies::{
    HostCapacity, Resource,
    planner::{ContainerState, Observation, ResourceState},
};

use super::Manager;
use crate::sample::Sample;

/// What the planner is told about one container's tick.
pub(crate) fn observation(s: &Sample, managed: impl Iterator<Item = Resource>) -> Observation {
    Observation {
        time_ms: s.time_ms,
        interval_ms: s.interval_ms,
        usage: managed.filter_map(|r| Some((r, s.resources.get(r)?.usage?))).collect(),
        cpu_throttled_usec: s.signals.cpu_throttled_usec.unwrap_or(0),
        mem_stall_usec: s.signals.mem_stall_usec.unwrap_or(0),
        oom_kills: s.signals.oom_kills,
        mem_waiting: s.signals.mem_waiting.unwrap_or(false),
        mem_reclaims: s.signals.mem_reclaims,
        mem_refault_bytes: s.signals.mem_refault_bytes.unwrap_or(0),
        mem_refault_stall_usec: s.signals.mem_refault_stall_usec.unwrap_or(0),
    }
}

impl Manager {
    /// The host's capacity as the planner takes it.
    pub(crate) fn host_capacity(&self) -> HostCapacity {
        let mut h = HostCapacity::new();
        for (&r, &c) in &self.capacity {
            if let Some(c) = c {
                // What is set directly is not the policies' to share.
                h.set(r, c.saturating_sub(self.direct_total(r, "")));
            }
        }
        h
    }

    /// Runs the loop for every subscribed container with a sample this tick
    /// (`samples` keyed by container name), deciding at `now_ms`.
    pub fn step(&mut self, now_ms: u64, samples: &HashMap<&str, &Sample>) {
        self.act.refresh();
        for (cgroup, text) in self.act.notes() {
            if let Some(name) = self.subs.iter().find(|(_, m)| m.sub.cgroup == cgroup).map(|(n, _)| n.clone()) {
                self.events.push_config(now_ms, &name, text);
            }
        }
        let mut dirty: Vec<String> = Vec::new();
        let mut adopted: Vec<String> = Vec::new();
        let mut states = Vec::new();
        let mut placed: Vec<String> = Vec::new();
        for (name, m) in &mut self.subs {
            let Some(&s) = samples.get(name.as_str()) else {
                // Gone after it was seen (a subscription whose cgroup is not
                // read yet has seen nothing).
                m.gone |= m.active && !m.usage.is_empty();
                m.active = false;
                continue;
            };
            m.active = true;
            if std::mem::take(&mut m.gone) {
                // Back (a restart: a new cgroup at the same path, with
                // whatever limits its engine starts it with): the
                // subscription's limits are written again, not adopted.
                for &r in m.sub.resources.keys() {
                    let known = m.sub.limits.get(&r).copied().flatten();
                    match self.act.apply(&m.sub.cgroup, r, known) {
                        Ok(()) => {
                            let why = "back after a restart: its limit written again".to_owned();
                            self.events.push(now_ms, name, r, known, known, why);
                        }
                        Err(e) => tracing::warn!(container = %name, "writing {r} again after a restart: {e}"),
                    }
                }
                m.mem_wait = None;
                if m.sub.cpu_placement {
                    placed.push(name.clone());
                }
                // The readings were taken before: not compared this tick.
                continue;
            }
            if s.time_ms < m.since_ms {
                // Read before the subscription (or its new policy) began.
                continue;
            }
            let obs = observation(s, m.sub.resources.keys().copied());
            m.usage.extend(obs.usage.iter().map(|(&r, &u)| (r, u)));
            self.planner.observe(name, &obs);
            let mut resources = Vec::new();
            let settling = self.act.settling(&m.sub.cgroup);
            for (&r, &bounds) in &m.sub.resources {
                let known = m.sub.limits.get(&r).copied().flatten();
                let in_force = if self.act.owns(r) {
                    self.act.own_limit(&m.sub.cgroup, r)
                } else if settling {
                    // An engine call under way may have put an older value
                    // there for a moment: it is written again.
                    known
                } else {
                    s.resources.get(r).unwrap_or_default().current
                };
                if in_force != known {
                    let reason = match self.act.engine_of(&m.sub.cgroup) {
                        Some(e) => format!("changed outside scaler (by {e}, or the container restarted): adopted"),
                        None => "changed outside scaler: adopted".into(),
                    };
                    self.events.push(now_ms, name, r, known, in_force, reason);
                    m.sub.limits.insert(r, in_force);
                    dirty.push(name.clone());
                    if r == Resource::Cpu && m.sub.cpu_placement {
                        adopted.push(name.clone());
                    }
                }
                self.act.in_force(&m.sub.cgroup, r, in_force);
                resources.push(ResourceState {
                    resource: r,
                    bounds,
                    ceiling: m.sub.ceiling.get(&r).copied(),
                    in_force,
                });
            }
            states.push(ContainerState { name: name.clone(), priority: m.sub.priority, resources });
        }
        // Inactive: the policies saw the samples (their events stay
        // pending) but nothing is decided.
        placed.extend(adopted);
        let changes =
            if self.settings.active { self.planner.decide(now_ms, &states, &self.host_capacity()) } else { Vec::new() };
        for c in changes {
            let Some(m) = self.subs.get_mut(&c.container) else { continue };
            if c.resource == Resource::Mem {
                m.mem_limited = c.limited;
            }
            match self.act.apply(&m.sub.cgroup, c.resource, Some(c.new)) {
                Ok(()) => {
                    m.failing.remove(&c.resource);
                    m.sub.limits.insert(c.resource, Some(c.new));
                    dirty.push(c.container.clone());
                    if c.resource == Resource::Cpu && m.sub.cpu_placement {
                        placed.push(c.container.clone());
                    }
                    self.events.push(now_ms, &c.container, c.resource, c.old, Some(c.new), c.reason);
                }
                Err(e) => {
                    if m.failing.insert(c.resource) {
                        self.events.push(now_ms, &c.container, c.resource, c.old, c.old, format!("apply failed: {e}"));
                    }
                }
            }
        }

        // Core sets follow the CPU limits just written.
        for name in placed {
            self.place(now_ms, &name);
        }
        let names: Vec<String> = states.into_iter().map(|c| c.name).collect();
        for name in names {
            self.sync_mem_wait(now_ms, &name);
        }
        dirty.sort();
        dirty.dedup();
        if !dirty.is_empty() {
            let subs: Vec<&_> = dirty.iter().filter_map(|n| self.subs.get(n)).map(|m| &m.sub).collect();
            if let Err(e) = self.store.save(&subs, &[]) {
                tracing::error!("saving state: {e}");
            }
        }
        self.flush_events();
    }
}

/// Usage per resource, kept for the views.
pub(crate) type Usage = BTreeMap<Resource, u64>;
