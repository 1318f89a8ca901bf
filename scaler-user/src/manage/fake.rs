//! The test double of the actuator and the helpers the manager's tests
//! share.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use policies::Resource;

use super::{ActuateError, Actuator, Manager, model::parse_subscribe, store::Store};
use crate::{
    cgroup::writer::WriteError,
    sample::{Reading, Sample},
};

type Written = HashMap<(String, Resource), Option<u64>>;

/// Records every write; optionally fails one resource.
#[derive(Clone, Default)]
pub(super) struct Fake {
    pub(super) limits: Arc<Mutex<Written>>,
    /// Memory wait per cgroup: the hard max, or `None` (OOM kills).
    pub(super) waits: Arc<Mutex<HashMap<String, Option<u64>>>>,
    /// `cpuset.cpus` per cgroup.
    pub(super) cpus: Arc<Mutex<HashMap<String, String>>>,
    pub(super) fail: Option<Resource>,
}

impl Actuator for Fake {
    fn apply(&mut self, cgroup: &str, r: Resource, v: Option<u64>) -> Result<(), ActuateError> {
        if self.fail == Some(r) {
            return Err(ActuateError::Write(WriteError::Write {
                cgroup: cgroup.to_owned(),
                resource: r,
                message: "refused".into(),
            }));
        }
        self.limits.lock().unwrap().insert((cgroup.to_owned(), r), v);
        Ok(())
    }
    fn own_limit(&self, cgroup: &str, r: Resource) -> Option<u64> {
        self.limits.lock().unwrap().get(&(cgroup.to_owned(), r)).copied().flatten()
    }
    fn owns(&self, r: Resource) -> bool {
        matches!(r, Resource::NetRx | Resource::NetTx)
    }
    fn set_cpus(&mut self, cgroup: &str, cpus: &str) -> Result<(), ActuateError> {
        self.cpus.lock().unwrap().insert(cgroup.to_owned(), cpus.to_owned());
        Ok(())
    }
    fn cpus(&self, cgroup: &str) -> Option<String> {
        Some(self.cpus.lock().unwrap().get(cgroup).cloned().unwrap_or_else(|| "0-3".into()))
    }
    fn set_mem_wait(&mut self, cgroup: &str, hard_max: Option<u64>) -> Result<(), ActuateError> {
        self.waits.lock().unwrap().insert(cgroup.to_owned(), hard_max);
        Ok(())
    }
}

impl Fake {
    pub(super) fn get(&self, cg: &str, r: Resource) -> Option<u64> {
        self.limits.lock().unwrap().get(&(cg.to_owned(), r)).copied().flatten()
    }
}

pub(super) const GIB: u64 = 1 << 30;

pub(super) fn manager(dir: &std::path::Path, fake: &Fake, cpu_cap: u64) -> Manager {
    let cap = BTreeMap::from([(Resource::Cpu, Some(cpu_cap)), (Resource::Mem, Some(8 * GIB))]);
    Manager::open(Store::open(dir).unwrap(), Box::new(fake.clone()), cap, vec!["/".into()], "fast".into()).unwrap()
}

pub(super) fn all_events(m: &Manager) -> Vec<super::events::Event> {
    m.events.query(&super::events::EventQuery { limit: usize::MAX, ..Default::default() })
}

pub(super) fn req(v: serde_json::Value) -> super::model::SubscribeRequest {
    parse_subscribe(&v).unwrap()
}

/// A sample where the limits in force are what the fake holds.
pub(super) fn sample(fake: &Fake, cg: &str, t: u64, cpu: u64, throttled_usec: u64, mem: u64) -> Sample {
    let mut s = Sample { time_ms: t, interval_ms: 200, ..Default::default() };
    s.resources.cpu = Reading { usage: Some(cpu), current: fake.get(cg, Resource::Cpu) };
    s.resources.mem = Reading { usage: Some(mem), current: fake.get(cg, Resource::Mem) };
    s.signals.cpu_throttled_usec = Some(throttled_usec);
    s.signals.oom_kills = Some(0);
    s
}
