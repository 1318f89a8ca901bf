//! The real [`Actuator`]: cgroupfs through the writer, network rates
//! through the eBPF limiter.

use policies::Resource;

use super::{ActuateError, Actuator};
use crate::engine::sync::EngineSync;
use crate::{
    cgroup::{
        layout::Layout,
        writer::{Device, Writer},
    },
    ebpf::netlimit::NetLimiter,
};

pub struct HostActuator {
    pub layout: Layout,
    pub disk: Option<Device>,
    pub net: Option<NetLimiter>,
    /// Containers whose tasks wait at their memory limit (see
    /// [`Writer::set_mem_wait`]).
    pub waiting: std::collections::HashSet<String>,
    /// CPU quota a container may bank for bursts, % of its quota.
    pub cpu_burst_pct: u64,
    /// Containers whose CPU limit banks nothing (under an energy cap).
    pub no_burst: std::collections::HashSet<String>,
    /// The engines' view of their containers' limits, kept equal to
    /// cgroupfs (`None`: cgroupfs only).
    pub engines: Option<EngineSync>,
}

fn is_net(r: Resource) -> bool {
    matches!(r, Resource::NetRx | Resource::NetTx)
}

impl HostActuator {
    /// Writes cgroupfs (what `apply` does before telling the engine).
    fn write(&self, cgroup: &str, resource: Resource, value: Option<u64>) -> Result<(), ActuateError> {
        // No banked burst where an engine owns the limit: the kernel refuses
        // a quota below the burst, so the engine's own updates (`docker
        // update --cpus`) would fail.
        let engine_owned = self.engines.as_ref().is_some_and(|e| e.applies() && e.owner(cgroup).is_some());
        let burst = if self.no_burst.contains(cgroup) || engine_owned { 0 } else { self.cpu_burst_pct };
        let w = Writer::new(&self.layout, self.disk).with_burst(burst);
        match value {
            Some(v) if resource == Resource::Mem && self.waiting.contains(cgroup) => w.apply_waiting(cgroup, v),
            _ => w.apply(cgroup, resource, value),
        }?;
        Ok(())
    }
}

impl Actuator for HostActuator {
    fn apply(&mut self, cgroup: &str, resource: Resource, value: Option<u64>) -> Result<(), ActuateError> {
        if is_net(resource) {
            let net = self.net.as_mut().ok_or(ActuateError::NoNetPrograms)?;
            return Ok(net.set(cgroup, resource == Resource::NetRx, value)?);
        }
        self.write(cgroup, resource, value)?;
        self.in_force(cgroup, resource, value);
        Ok(())
    }

    fn in_force(&mut self, cgroup: &str, resource: Resource, value: Option<u64>) {
        // On v2 a waiting memory limit is `memory.high` under a hard
        // `memory.max`; the engines know only the hard one: not told.
        // (Every managed limit, every tick: the set is looked in last.)
        let Some(e) = &self.engines else { return };
        let v2_waiting = resource == Resource::Mem && !self.layout.is_hybrid() && self.waiting.contains(cgroup);
        if !v2_waiting {
            e.record(cgroup, resource, value);
        }
    }

    fn set_cpu_burst(&mut self, cgroup: &str, allowed: bool) -> Result<(), ActuateError> {
        if allowed {
            self.no_burst.remove(cgroup);
            return Ok(());
        }
        self.no_burst.insert(cgroup.to_owned());
        Ok(Writer::new(&self.layout, self.disk).clear_burst(cgroup)?)
    }

    fn set_cpus(&mut self, cgroup: &str, cpus: &str) -> Result<(), ActuateError> {
        Ok(Writer::new(&self.layout, self.disk).set_cpus(cgroup, cpus)?)
    }

    fn cpus(&self, cgroup: &str) -> Option<String> {
        Writer::new(&self.layout, self.disk).cpus(cgroup)
    }

    fn set_mem_wait(&mut self, cgroup: &str, hard_max: Option<u64>) -> Result<(), ActuateError> {
        Writer::new(&self.layout, self.disk).set_mem_wait(cgroup, hard_max)?;
        if hard_max.is_some() {
            self.waiting.insert(cgroup.to_owned());
        } else {
            self.waiting.remove(cgroup);
        }
        Ok(())
    }

    fn own_limit(&self, cgroup: &str, resource: Resource) -> Option<u64> {
        if !is_net(resource) {
            return None;
        }
        self.net.as_ref()?.get(cgroup, resource == Resource::NetRx)
    }

    fn owns(&self, resource: Resource) -> bool {
        is_net(resource)
    }

    fn refresh(&mut self) {
        if let Some(n) = &mut self.net {
            n.refresh();
        }
        let rewrites = self.engines.as_ref().map(EngineSync::take_rewrites).unwrap_or_default();
        for rw in rewrites {
            let found = Writer::new(&self.layout, self.disk).current(&rw.cgroup, rw.resource);
            // A third value: someone changed it meanwhile (the step adopts it).
            if found.is_some_and(|f| !rw.ours(f)) {
                continue;
            }
            if let Err(e) = self.write(&rw.cgroup, rw.resource, rw.value) {
                tracing::debug!(cgroup = %rw.cgroup, "writing the limit again after the engine's call: {e}");
            }
        }
    }

    fn settling(&self, cgroup: &str) -> bool {
        self.engines.as_ref().is_some_and(|e| e.settling(cgroup))
    }

    fn engine_of(&self, cgroup: &str) -> Option<&'static str> {
        Some(self.engines.as_ref()?.owner(cgroup)?.name())
    }

    fn notes(&mut self) -> Vec<(String, String)> {
        self.engines.as_ref().map(EngineSync::take_notes).unwrap_or_default()
    }
}
