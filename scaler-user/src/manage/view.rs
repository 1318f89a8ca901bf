//! `GET /v1/containers[/{name}]` and the allocation `GET /v1/host` shows, as
//! the wire types of `scaler_api::wire`.

use std::collections::BTreeMap;

use policies::{Resource, ResourceSpec};
use scaler_api::wire::{ResourceState, Subscription, SubscriptionStatus};

use super::{Managed, Manager};

fn view(m: &Managed) -> Subscription {
    let s = &m.sub;
    let resources = s
        .resources
        .iter()
        .map(|(&r, b)| {
            let current = s.limits.get(&r).copied().flatten();
            let eff_max = s.effective_max(r).unwrap_or(b.max);
            let limits = ResourceSpec::try_new(
                b.min,
                eff_max,
                current.unwrap_or(eff_max).max(b.min).min(eff_max),
                b.boundary,
                b.boundary_type,
            )
            .ok()
            .map(|spec| spec.limits());
            let rv = ResourceState {
                min: b.min,
                max: b.max,
                current,
                usage: m.usage.get(&r).copied(),
                guard: b.guard,
                boundary: b.boundary,
                boundary_type: b.boundary_type,
                upper: limits.map(|l| l.upper),
                lower: limits.map(|l| l.lower),
            };
            (r, rv)
        })
        .collect();
    Subscription {
        name: s.name.clone(),
        cgroup: s.cgroup.clone(),
        policy: s.policy.clone(),
        policy_config: s.policy_config.clone(),
        priority: s.priority,
        status: if m.active { SubscriptionStatus::Active } else { SubscriptionStatus::Missing },
        resources,
        ceiling: s.ceiling.clone(),
        original: s.original.clone(),
        policy_since_ms: m.since_ms,
        cpu_placement: s.cpu_placement,
        cpus: s.cpus.clone(),
    }
}

impl Manager {
    pub fn view(&self, name: &str) -> Option<Subscription> {
        self.subs.get(name).map(view)
    }

    pub fn views(&self) -> Vec<Subscription> {
        self.subs.values().map(view).collect()
    }

    /// Sum of the managed containers' limits per resource.
    pub fn allocated(&self) -> BTreeMap<Resource, u64> {
        let mut out = BTreeMap::new();
        for m in self.subs.values() {
            for (&r, &v) in &m.sub.limits {
                if m.sub.resources.contains_key(&r) {
                    let e = out.entry(r).or_insert(0u64);
                    *e = e.saturating_add(v.unwrap_or(0));
                }
            }
        }
        for limits in self.direct.values() {
            for (&r, &v) in limits {
                let e = out.entry(r).or_insert(0u64);
                *e = e.saturating_add(v);
            }
        }
        out
    }
}

impl Manager {
    /// The limits scaler keeps on each subscribed cgroup (by cgroup): what
    /// the sampler shows as in force where it did not read them this tick
    /// (network: always, the eBPF limiter keeps them, not cgroupfs). Filled
    /// into `out`, reusing its keys and vectors; `fresh` (the subscribed
    /// set changed, `generation` moved) clears it first. The sampling loop
    /// fills it again only when [`Manager::saves`] moved.
    pub fn fill_known_limits(
        &self,
        out: &mut std::collections::HashMap<String, Vec<(Resource, Option<u64>)>>,
        fresh: bool,
    ) {
        if fresh {
            out.clear();
        }
        for m in self.subs.values() {
            let v = match out.get_mut(m.sub.cgroup.as_str()) {
                Some(v) => v,
                None => out.entry(m.sub.cgroup.clone()).or_default(),
            };
            v.clear();
            v.extend(m.sub.resources.keys().map(|&r| (r, m.sub.limits.get(&r).copied().flatten())));
        }
    }

    /// How many times a subscription was saved (failed saves too). Every
    /// change to one is saved, before or as it is made: its limits, its
    /// resources, its policy, the set itself. What is derived from them
    /// (the known limits, the memory-watched cgroups) is the same while
    /// this is.
    pub fn saves(&self) -> u64 {
        self.store.saves()
    }
}
