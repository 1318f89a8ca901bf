//! CPU limits enforced as a core set as well as a quota: a subscription
//! with `cpu_placement` gets whole CPUs enough for its CPU limit, chosen by
//! [`crate::topology::Topology::choose`] (physical cores before SMT
//! siblings, containers spread), written to its `cpuset.cpus` whenever the
//! number it needs changes, and the cpuset found before is put back when
//! placement ends. The map of CPUs to containers is the subscriptions'
//! `cpus`, kept with them.

use std::collections::BTreeMap;

use policies::Resource;

use super::{
    Manager,
    model::{FieldError, Subscription, field_err},
};
use crate::topology::{Topology, cpus_for, format_list};

impl Manager {
    /// The host's CPUs, for placement (`agent::run` reads sysfs; tests give
    /// fake ones). Without them placement is refused.
    pub fn with_topology(mut self, topology: Topology, default_on: bool) -> Self {
        self.topology = topology;
        self.placement_default = default_on;
        self
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Which CPUs serve whom: container -> CPUs.
    pub fn assigned(&self) -> BTreeMap<String, Vec<u32>> {
        self.subs
            .values()
            .filter(|m| !m.sub.cpus.is_empty())
            .map(|m| (m.sub.name.clone(), m.sub.cpus.clone()))
            .collect()
    }

    /// Whether a new subscription places its CPU: as asked, else the host's
    /// default when it manages CPU. Refused without a topology.
    pub(super) fn placement_wanted(&self, asked: Option<bool>, manages_cpu: bool) -> Result<bool, FieldError> {
        let on = asked.unwrap_or(self.placement_default && manages_cpu);
        if on && self.topology.cpus.is_empty() {
            return Err(field_err(
                "cpu_placement",
                "this host's CPU topology could not be read (/sys/devices/system/cpu)",
            ));
        }
        Ok(on)
    }

    /// Brings `name`'s core set in line with its CPU limit (no-op when
    /// placement is off or the count is right). A failed write is logged
    /// once until it works.
    pub(super) fn place(&mut self, now_ms: u64, name: &str) {
        let Some(m) = self.subs.get(name) else { return };
        // Without a topology (sysfs unreadable) nothing is chosen: an empty
        // list would hand the cgroup every CPU of its parent.
        if !m.sub.cpu_placement || self.topology.cpus.is_empty() {
            return;
        }
        let limit = m.sub.limits.get(&Resource::Cpu).copied().flatten();
        let want = limit.map_or(usize::MAX, cpus_for).min(self.topology.cpus.len().max(1));
        // The right count, and the cgroup still confined to it (a container
        // restarted in a new cgroup, or a cpuset written by someone else,
        // is placed again).
        if m.sub.cpus.len() == want
            && self.act.cpus(&m.sub.cgroup).as_deref() == Some(format_list(&m.sub.cpus).as_str())
        {
            return;
        }
        let cpus = self.topology.choose(&self.assigned(), name, want);
        let cgroup = m.sub.cgroup.clone();
        let found = if m.sub.original_cpus.is_none() { self.act.cpus(&cgroup) } else { None };
        let list = format_list(&cpus);
        let result = self.act.set_cpus(&cgroup, &list);
        let Some(m) = self.subs.get_mut(name) else { return };
        match result {
            Ok(()) => {
                m.placement_failed = false;
                let old = if m.sub.cpus.is_empty() { "unplaced".to_owned() } else { format_list(&m.sub.cpus) };
                let mut sub = m.sub.clone();
                sub.cpus = cpus;
                if sub.original_cpus.is_none() {
                    sub.original_cpus = Some(found.unwrap_or_default());
                }
                let limit = limit.map_or("unlimited".into(), |l| format!("{l} millicores"));
                let reason = format!("cpuset {old} -> {list} ({want} CPUs for {limit})");
                if let Err(e) = self.store.save(&[&sub], &[]) {
                    tracing::error!("saving state: {e}");
                }
                m.sub = sub;
                self.events.push_config(now_ms, name, reason);
            }
            Err(e) => {
                if !m.placement_failed {
                    m.placement_failed = true;
                    self.events.push_config(now_ms, name, format!("cpuset {list} could not be set: {e}"));
                }
            }
        }
    }

    /// Puts back the cpuset found before placement (placement ended: the
    /// subscription went, moved, or turned it off).
    pub(super) fn unplace(&mut self, now_ms: u64, name: &str, old: &Subscription) {
        if old.cpus.is_empty() {
            return;
        }
        let back = old.original_cpus.clone().unwrap_or_default();
        match self.act.set_cpus(&old.cgroup, &back) {
            Ok(()) => {
                let shown = if back.is_empty() { "inherited".to_owned() } else { back };
                self.events.push_config(
                    now_ms,
                    name,
                    format!("cpuset {} -> {shown} (placement ended)", format_list(&old.cpus)),
                );
            }
            Err(e) => tracing::warn!(container = name, "putting the cpuset back: {e}"),
        }
    }
}
