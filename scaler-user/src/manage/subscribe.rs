//! Subscribing, replacing, updating and unsubscribing containers, and
//! their external ceilings: each applies its limits before answering and
//! changes nothing on failure.

use std::collections::BTreeMap;

use policies::{
    Resource,
    planner::{StartInput, start_limit},
};

use super::{
    CPU_MIN_LIMIT, Found, MEM_MIN_LIMIT, ManageError, Managed, Manager,
    model::{self, SubscribeRequest, Subscription, field_err},
};

impl Manager {
    /// Subscribes (or replaces the subscription of) `name`. Applies the
    /// starting limits at once; on any error nothing changes (limits already
    /// written are put back).
    pub fn subscribe(
        &mut self,
        now_ms: u64,
        name: &str,
        cgroup: &str,
        req: &SubscribeRequest,
        found: &Found,
    ) -> Result<(), ManageError> {
        if let Some(own) = self.own_cgroups.iter().find(|o| *o == cgroup || o.starts_with(&format!("{cgroup}/"))) {
            return Err(ManageError::Forbidden {
                field: "cgroup".into(),
                message: format!(
                    "the agent itself runs in {own}: limiting {cgroup} would limit the agent (starved, or OOM-killed by its own limit)"
                ),
            });
        }
        if let Some(other) = self.subs.values().find(|m| m.sub.cgroup == cgroup && m.sub.name != name) {
            return Err(ManageError::Conflict {
                field: "cgroup".into(),
                message: format!("{cgroup} is already managed as {:?}; one cgroup has one name", other.sub.name),
            });
        }
        let existing = self.subs.get(name).map(|m| m.sub.clone());
        let policy_name = req.policy.clone().unwrap_or_else(|| self.default_policy.clone());
        let policy_config = if req.policy.is_some() { req.policy_config.clone() } else { None };
        let policy = self.build(&policy_name, policy_config.as_ref())?;
        let cpu_placement = self.placement_wanted(req.cpu_placement, req.resources.contains_key(&Resource::Cpu))?;
        let mut plan: Vec<(Resource, Option<u64>, u64)> = Vec::new();
        for (&r, rr) in &req.resources {
            let b = rr.bounds;
            let field = |k: &str| format!("resources.{r}.{k}");
            if let Some(Some(cap)) = self.capacity.get(&r) {
                // Limits set directly on other cgroups are held out too.
                let others = self.mins_of_others(r, name).saturating_add(self.direct_total(r, cgroup));
                if others.saturating_add(b.min) > *cap {
                    return Err(field_err(
                        field("min"),
                        format!(
                            "the host offers {cap}; other containers' minimums and direct limits already take {others}"
                        ),
                    )
                    .into());
                }
            }
            let in_force =
                if self.act.owns(r) { self.act.own_limit(cgroup, r) } else { found.limits.get(&r).copied().flatten() };
            let ceiling = existing.as_ref().and_then(|e| e.ceiling.get(&r).copied());
            if r == Resource::Cpu && b.min < CPU_MIN_LIMIT {
                return Err(field_err(
                    field("min"),
                    format!(
                        "{} millicores is below the smallest CPU quota the kernel takes (1 ms per 100 ms period): at least {CPU_MIN_LIMIT}",
                        b.min
                    ),
                )
                .into());
            }
            if r == Resource::Mem && b.max < MEM_MIN_LIMIT {
                return Err(field_err(
                    field("max"),
                    format!(
                        "{} bytes is no memory limit a container can run under; at least {MEM_MIN_LIMIT} (4 MiB)",
                        b.max
                    ),
                )
                .into());
            }
            if r == Resource::Mem
                && let Some(u) = found.mem_usage
                && u > b.max
            {
                return Err(field_err(
                    field("max"),
                    format!("{} is below the container's memory in use ({u} bytes)", b.max),
                )
                .into());
            }
            let start = start_limit(&StartInput {
                resource: r,
                bounds: b,
                ceiling,
                requested: rr.current,
                previous: existing.as_ref().and_then(|e| e.limits.get(&r).copied().flatten()),
                policy_start: found.usage.get(&r).and_then(|&u| policy.start(r, u)),
                in_force,
                mem_usage: if r == Resource::Mem { found.mem_usage } else { None },
                free: self.capacity.get(&r).copied().flatten().map(|cap| {
                    cap.saturating_sub(self.limits_of_others(r, name)).saturating_sub(self.direct_total(r, cgroup))
                }),
            });
            plan.push((r, in_force, start));
        }
        // Apply, rolling back on the first failure.
        let mut done: Vec<(Resource, Option<u64>)> = Vec::new();
        for &(r, before, start) in &plan {
            if before == Some(start) {
                continue;
            }
            if let Err(e) = self.act.apply(cgroup, r, Some(start)) {
                for (r, before) in done {
                    let _ = self.act.apply(cgroup, r, before);
                }
                return Err(ManageError::Apply(format!("{r}: {e}")));
            }
            done.push((r, before));
        }
        // What was found is kept across re-subscriptions of the same cgroup
        // (for the resources still managed); a new cgroup starts afresh.
        let same_target = existing.as_ref().is_some_and(|e| e.cgroup == cgroup);
        let mut original: BTreeMap<Resource, Option<u64>> = match &existing {
            Some(e) if same_target => {
                e.original.iter().filter(|(r, _)| req.resources.contains_key(r)).map(|(&r, &v)| (r, v)).collect()
            }
            _ => BTreeMap::new(),
        };
        for &(r, before, _) in &plan {
            original.entry(r).or_insert(before);
        }
        let keep_cpus = same_target && cpu_placement;
        let sub = Subscription {
            name: name.to_owned(),
            cgroup: cgroup.to_owned(),
            policy: policy_name.clone(),
            policy_config: policy_config.clone(),
            priority: req.priority,
            resources: req.resources.iter().map(|(&r, rr)| (r, rr.bounds)).collect(),
            limits: plan.iter().map(|&(r, _, start)| (r, Some(start))).collect(),
            original,
            ceiling: existing.as_ref().map(|e| e.ceiling.clone()).unwrap_or_default(),
            cpu_placement,
            // Placement on the same cgroup goes on from the CPUs it has.
            cpus: existing.as_ref().filter(|_| keep_cpus).map(|e| e.cpus.clone()).unwrap_or_default(),
            original_cpus: existing.as_ref().filter(|_| keep_cpus).and_then(|e| e.original_cpus.clone()),
        };
        if let Err(e) = self.store.save(&[&sub], &[]) {
            for (r, before) in done {
                let _ = self.act.apply(cgroup, r, before);
            }
            return Err(e.into());
        }
        for &(r, before, start) in &plan {
            if before != Some(start) {
                self.events.push(now_ms, name, r, before, Some(start), "subscribed: starting limit".into());
            }
        }
        self.drop_direct(cgroup, req.resources.keys().copied());
        // A subscription's effect on the kernel is one record: limits it set
        // that the new one no longer manages (a resource dropped, or the
        // whole old cgroup) go back to what was found there.
        if let Some(e) = &existing {
            let dropped: Vec<Resource> =
                e.limits.keys().copied().filter(|r| !same_target || !req.resources.contains_key(r)).collect();
            for r in dropped {
                let target = if self.act.owns(r) { None } else { e.original.get(&r).copied().flatten() };
                let old = e.limits.get(&r).copied().flatten();
                let why = if same_target { "no longer managed: restored" } else { "subscription moved: restored" };
                match self.act.apply(&e.cgroup, r, target) {
                    Ok(()) => self.events.push(now_ms, name, r, old, target, why.into()),
                    Err(err) => {
                        tracing::warn!(container = name, cgroup = %e.cgroup, %r, "restoring a limit left behind: {err}");
                    }
                }
            }
            if !same_target
                && self.subs.get(name).is_some_and(|m| m.mem_wait == Some(true))
                && let Err(err) = self.act.set_mem_wait(&e.cgroup, None)
            {
                tracing::warn!(container = name, "memory wait off on the old cgroup: {err}");
            }
        }
        let keep_policy =
            self.subs.get(name).is_some_and(|m| m.sub.policy == policy_name && m.sub.policy_config == policy_config);
        match self.subs.get_mut(name) {
            Some(m) if keep_policy => m.sub = sub,
            _ => {
                self.planner.insert(name, policy);
                self.subs.insert(name.to_owned(), Managed::new(sub, true, now_ms));
            }
        }
        if !same_target {
            self.generation += 1;
            if let Some(m) = self.subs.get_mut(name) {
                m.mem_wait = None;
            }
        }
        self.sync_mem_wait(now_ms, name);
        if let Some(e) = existing.filter(|_| !keep_cpus) {
            self.unplace(now_ms, name, &e);
        }
        self.place(now_ms, name);
        Ok(())
    }

    /// Unsubscribes; with `restore`, writes the original limits back first.
    /// Network limits are always removed (they live in the agent's maps).
    pub fn unsubscribe(&mut self, now_ms: u64, name: &str, restore: bool) -> Result<bool, ManageError> {
        let m = self.subs.get(name).ok_or_else(|| ManageError::NotFound(format!("{name:?} is not subscribed")))?;
        let (sub, waiting) = (m.sub.clone(), m.mem_wait == Some(true));
        self.store.save(&[], &[name])?;
        if waiting && let Err(e) = self.act.set_mem_wait(&sub.cgroup, None) {
            tracing::warn!(container = name, "memory wait off: {e}");
        }
        let mut restored = restore;
        for (&r, &limit) in &sub.limits {
            let owned = self.act.owns(r);
            if !(restore || owned) {
                continue;
            }
            let target = if owned { None } else { sub.original.get(&r).copied().flatten() };
            match self.act.apply(&sub.cgroup, r, target) {
                Ok(()) => self.events.push(now_ms, name, r, limit, target, "unsubscribed: restored".into()),
                Err(e) => {
                    restored = false;
                    tracing::warn!(container = name, %r, "restoring limit: {e}");
                }
            }
        }
        self.unplace(now_ms, name, &sub);
        self.subs.remove(name);
        self.planner.remove(name);
        self.generation += 1;
        Ok(restored)
    }

    /// The container subscribed as `name` was recreated under the same name
    /// at another cgroup (an engine's new container: a new id): the
    /// subscription follows it there, and its limits are written again at
    /// the next tick (as after a restart). Refused outside the roots.
    pub fn follow_recreated(&mut self, now_ms: u64, name: &str, cgroup: &str) -> Result<(), ManageError> {
        let cgroup = self.check_cgroup(cgroup)?;
        let m = self.subs.get_mut(name).ok_or_else(|| ManageError::NotFound(format!("{name:?} is not subscribed")))?;
        if m.sub.cgroup == cgroup {
            return Ok(());
        }
        // Stored first: a failed write changes nothing.
        let mut moved = m.sub.clone();
        moved.cgroup = cgroup.clone();
        moved.cpus.clear();
        self.store.save(&[&moved], &[])?;
        let old = std::mem::replace(&mut m.sub, moved).cgroup;
        // Seen before: written again once its first sample comes.
        m.gone = true;
        m.active = false;
        self.events.push_config(
            now_ms,
            name,
            format!("recreated at {cgroup} (was {old}): the subscription follows it"),
        );
        self.generation += 1;
        Ok(())
    }

    /// Partial update of one resource (adding it when new).
    pub fn update_resource(
        &mut self,
        now_ms: u64,
        name: &str,
        r: Resource,
        patch: &model::ResourcePatch,
        found: &Found,
    ) -> Result<(), ManageError> {
        let m = self.subs.get(name).ok_or_else(|| ManageError::NotFound(format!("{name:?} is not subscribed")))?;
        let old = m.sub.resources.get(&r).copied();
        let bounds = model::patched(old, patch, "")?;
        let mut req = SubscribeRequest {
            cgroup: Some(m.sub.cgroup.clone()),
            policy: Some(m.sub.policy.clone()),
            policy_config: m.sub.policy_config.clone(),
            priority: m.sub.priority,
            resources: m
                .sub
                .resources
                .iter()
                .map(|(&r, &b)| (r, model::ResourceRequest { bounds: b, current: None }))
                .collect(),
            cpu_placement: Some(m.sub.cpu_placement),
        };
        req.resources.insert(r, model::ResourceRequest { bounds, current: patch.current });
        let cgroup = m.sub.cgroup.clone();
        self.subscribe(now_ms, name, &cgroup, &req, found).map_err(|e| match e {
            // Field names from the body are relative to the resource here.
            ManageError::Field(f) => {
                ManageError::Field(field_err(f.field.rsplit('.').next().unwrap_or(&f.field).to_owned(), f.message))
            }
            other => other,
        })
    }

    /// Sets external ceilings (`resource -> value`), or clears them all
    /// with `None`. A limit above its new ceiling is lowered at once.
    pub fn set_ceiling(
        &mut self,
        now_ms: u64,
        name: &str,
        ceiling: Option<BTreeMap<Resource, u64>>,
    ) -> Result<(), ManageError> {
        let m = self.subs.get_mut(name).ok_or_else(|| ManageError::NotFound(format!("{name:?} is not subscribed")))?;
        if let Some(c) = &ceiling
            && let Some(r) = c.keys().find(|r| !m.sub.resources.contains_key(r))
        {
            return Err(field_err(r.to_string(), format!("{r} is not managed for {name}")).into());
        }
        let mut sub = m.sub.clone();
        sub.ceiling = ceiling.unwrap_or_default();
        for (&r, &limit) in &m.sub.limits {
            let Some(eff) = sub.effective_max(r) else { continue };
            if limit.is_none_or(|l| l > eff) && sub.ceiling.contains_key(&r) {
                match self.act.apply(&sub.cgroup, r, Some(eff)) {
                    Ok(()) => {
                        sub.limits.insert(r, Some(eff));
                        self.events.push(now_ms, name, r, limit, Some(eff), "external ceiling".into());
                    }
                    Err(e) => return Err(ManageError::Apply(format!("{r}: {e}"))),
                }
            }
        }
        self.store.save(&[&sub], &[])?;
        let capped = sub.ceiling.contains_key(&Resource::Cpu);
        m.sub = sub;
        self.sync_cpu_burst(name, capped);
        self.place(now_ms, name);
        Ok(())
    }

    /// Guards (`true`: the policy scales them) or unguards (the limits stay
    /// where they are) `resources` of a container, or all of them, in one
    /// change: saved, and logged once per resource whose guard changed.
    /// The policy keeps its state (pending events included).
    pub fn set_guard(
        &mut self,
        now_ms: u64,
        name: &str,
        guard: bool,
        resources: Option<&[Resource]>,
    ) -> Result<(), ManageError> {
        let m = self.subs.get_mut(name).ok_or_else(|| ManageError::NotFound(format!("{name:?} is not subscribed")))?;
        if let Some(r) = resources.and_then(|rs| rs.iter().find(|r| !m.sub.resources.contains_key(r))) {
            return Err(field_err("resources", format!("{r} is not managed for {name}")).into());
        }
        let mut sub = m.sub.clone();
        let mut changed = Vec::new();
        for (r, b) in sub.resources.iter_mut() {
            if resources.is_none_or(|rs| rs.contains(r)) && b.guard != guard {
                b.guard = guard;
                changed.push(*r);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        self.store.save(&[&sub], &[])?;
        let reason = if guard { "guarded: scaled by its policy again" } else { "unguarded: left where it is" };
        for &r in &changed {
            let limit = sub.limits.get(&r).copied().flatten();
            self.events.push(now_ms, name, r, limit, limit, reason.into());
        }
        m.sub = sub;
        Ok(())
    }

    /// No CPU bursts above a CPU ceiling (an energy cap is a cap).
    pub(super) fn sync_cpu_burst(&mut self, name: &str, capped: bool) {
        let Some(m) = self.subs.get(name) else { return };
        if m.sub.resources.contains_key(&Resource::Cpu)
            && let Err(e) = self.act.set_cpu_burst(&m.sub.cgroup, !capped)
        {
            tracing::warn!(container = name, "cpu burst: {e}");
        }
    }
}
