//! The agent's guardian and scaler: subscriptions, a policy per container,
//! arbitration against the host, limits written at once, every change logged
//! and made durable.
//!
//! [`Manager::step`] runs once per tick on the sampler thread, right after
//! sampling; the HTTP handlers call the other methods. Both go through one
//! mutex. Every write to a limit goes through an [`Actuator`], so tests drive
//! the whole manager against a fake cgroup tree.
pub mod actuator;
pub mod direct;
pub mod events;
pub mod model;
mod placement;
pub mod policy;
pub mod settings;
pub mod step;
pub mod store;
mod subscribe;
pub mod view;

pub use policies::planner::mem_floor;

/// The smallest memory `max` a subscription may have: below this no
/// process runs, and a limit of a byte or two would be an instant OOM kill.
pub const MEM_MIN_LIMIT: u64 = 4 << 20;

/// The smallest CPU limit, millicores: the kernel's smallest quota is 1 ms
/// per period, 10 millicores at the 100 ms period. A lower limit would be
/// written as 10 and then read back as a change made outside scaler.
pub const CPU_MIN_LIMIT: u64 = 10;

/// The settings of a manager not given any (tests).
const DEFAULT_SETTINGS: settings::AgentSettings =
    settings::AgentSettings { tick_ms: 200, discovery_interval_ms: 1000, active: true };

/// Events kept in memory and in the state database.
pub const EVENTS_KEPT: usize = 10_000;

use std::collections::{BTreeMap, BTreeSet};

use policies::{Resource, planner::Planner};

use self::{
    events::EventLog,
    model::{FieldError, Subscription, field_err},
    store::{Store, StoreError},
};

/// Why a limit could not be set.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    #[error(transparent)]
    Write(#[from] crate::cgroup::writer::WriteError),
    #[error(transparent)]
    Net(#[from] crate::ebpf::netlimit::NetLimitError),
    #[error("network limits need the eBPF network programs, which are not loaded")]
    NoNetPrograms,
}

/// Writes limits (cgroupfs, eBPF maps) and reports the ones not read back
/// from cgroupfs.
pub trait Actuator: Send {
    /// Sets (or with `None` removes) a limit.
    fn apply(&mut self, cgroup: &str, resource: Resource, value: Option<u64>) -> Result<(), ActuateError>;
    /// A limit this actuator keeps itself (network rates); `None` otherwise.
    fn own_limit(&self, cgroup: &str, resource: Resource) -> Option<u64>;
    /// Whether `resource` is kept by the actuator rather than read back.
    fn owns(&self, resource: Resource) -> bool;
    /// Called once per tick before limits are compared (e.g. to follow a
    /// recreated cgroup, or to write again what an engine call rounded).
    fn refresh(&mut self) {}
    /// Whether a difference between cgroupfs and what was set may be this
    /// actuator's own doing, not yet settled (an engine call under way):
    /// not a change made outside scaler.
    fn settling(&self, _cgroup: &str) -> bool {
        false
    }
    /// What is in force for a managed resource, confirmed every tick (an
    /// engine not told yet, e.g. after the agent started, is told).
    fn in_force(&mut self, _cgroup: &str, _resource: Resource, _value: Option<u64>) {}
    /// The engine that runs the container at `cgroup` (`docker`, ...).
    fn engine_of(&self, _cgroup: &str) -> Option<&'static str> {
        None
    }
    /// What the event log should say since the last call: (cgroup, text).
    fn notes(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Tasks reaching the memory limit wait for it to be raised
    /// (`Some(hard_max)`: the OOM killer off, or on v2 the limit in
    /// `memory.high` under a hard `memory.max`), or are OOM-killed as usual
    /// (`None`).
    fn set_mem_wait(&mut self, _cgroup: &str, _hard_max: Option<u64>) -> Result<(), ActuateError> {
        Ok(())
    }
    /// Whether the CPU limit may bank unused quota for bursts (not under an
    /// energy cap: a cap is a cap).
    fn set_cpu_burst(&mut self, _cgroup: &str, _allowed: bool) -> Result<(), ActuateError> {
        Ok(())
    }
    /// Confines the cgroup's tasks to these CPUs (`0-1,4`; empty: the
    /// parent's, on v2).
    fn set_cpus(&mut self, _cgroup: &str, _cpus: &str) -> Result<(), ActuateError> {
        Ok(())
    }
    /// The CPUs the cgroup is confined to now, as written in `cpuset.cpus`.
    fn cpus(&self, _cgroup: &str) -> Option<String> {
        None
    }
}

/// What a handler found in the container's cgroup before subscribing.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Limits in force (`None` = unlimited), for the resources cgroupfs has.
    pub limits: BTreeMap<Resource, Option<u64>>,
    /// Memory working set now.
    pub mem_usage: Option<u64>,
    /// Usage as last measured, for the resources the sampler knows
    /// (nothing for a container it does not watch yet).
    pub usage: BTreeMap<Resource, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("{field}: {message}")]
    Forbidden { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{field}: {message}")]
    Conflict { field: String, message: String },
    #[error("could not apply the limits: {0}")]
    Apply(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored subscription {name:?} is invalid (state file edited or damaged?)")]
    Stored {
        name: String,
        #[source]
        source: FieldError,
    },
}

pub(crate) struct Managed {
    pub sub: Subscription,
    /// The cgroup was present at the last tick.
    pub active: bool,
    /// Latest usage per managed resource.
    pub usage: step::Usage,
    /// Resources whose last apply failed (logged once until it works again).
    pub failing: BTreeSet<Resource>,
    /// Whether tasks wait at the memory limit (`None`: not set yet).
    pub mem_wait: Option<bool>,
    /// The host's capacity held the memory limit below what was wanted.
    pub mem_limited: bool,
    /// When the policy began (ms): samples read before are not its to see.
    pub since_ms: u64,
    /// The last cpuset write failed (logged once until one works).
    pub placement_failed: bool,
    /// It was present and vanished (a restart, most often): its limits are
    /// written again when it is back.
    pub gone: bool,
}

impl Managed {
    fn new(sub: Subscription, active: bool, since_ms: u64) -> Self {
        Self {
            sub,
            active,
            usage: BTreeMap::new(),
            failing: BTreeSet::new(),
            mem_wait: None,
            mem_limited: false,
            since_ms,
            placement_failed: false,
            gone: false,
        }
    }
}

pub struct Manager {
    pub(crate) subs: BTreeMap<String, Managed>,
    /// Every decision: one policy per subscription, floors, arbitration.
    planner: Planner,
    store: Store,
    pub(crate) act: Box<dyn Actuator>,
    /// What the host offers per resource (`None` = not limited).
    pub(crate) capacity: BTreeMap<Resource, Option<u64>>,
    pub events: EventLog,
    roots: Vec<String>,
    default_policy: String,
    /// Let tasks wait at the memory limit where the policy raises it (see
    /// `agent.memory_wait`).
    memory_wait: bool,
    /// The cgroups the agent itself runs in (one per hierarchy): neither
    /// they nor their ancestors may be managed.
    own_cgroups: Vec<String>,
    /// Bumped whenever the set of (name, cgroup) pairs changes.
    pub generation: u64,
    /// The host's CPUs, for placement (see [`placement`]).
    topology: crate::topology::Topology,
    /// `agent.cpu_placement`: subscriptions managing CPU place it unless
    /// they say otherwise.
    placement_default: bool,
    /// Limits set directly, without a policy (see [`direct`]).
    direct: direct::Direct,
    /// This host's parameters of each preset (see [`policy`]).
    policy_defaults: policy::Defaults,
    /// Timing and the active switch in force (see [`settings`]).
    settings: settings::AgentSettings,
    /// The same from the configuration (what API overrides lie over).
    config_settings: settings::AgentSettings,
}

impl Manager {
    /// Loads the durable state. `capacity` is the host's (config or
    /// detected); overrides stored by `PUT /v1/host` win.
    pub fn open(
        store: Store,
        act: Box<dyn Actuator>,
        mut capacity: BTreeMap<Resource, Option<u64>>,
        roots: Vec<String>,
        default_policy: String,
    ) -> Result<Self, ManageError> {
        if let Some(stored) = store.setting::<BTreeMap<Resource, Option<u64>>>("capacity")? {
            capacity.extend(stored);
        }
        let mut events = EventLog::new(EVENTS_KEPT);
        events.restore(store.load_events()?);
        let mut me = Self {
            subs: BTreeMap::new(),
            planner: Planner::new(),
            store,
            act,
            capacity,
            events,
            roots,
            default_policy,
            memory_wait: true,
            own_cgroups: Vec::new(),
            generation: 1,
            settings: DEFAULT_SETTINGS,
            config_settings: DEFAULT_SETTINGS,
            policy_defaults: Default::default(),
            direct: Default::default(),
            topology: Default::default(),
            placement_default: false,
        };
        me.load_policy_defaults()?;
        me.load_direct()?;
        for sub in me.store.load()? {
            sub.validate(&me.roots).map_err(|e| ManageError::Stored { name: sub.name.clone(), source: e })?;
            let policy = me.build(&sub.policy, sub.policy_config.as_ref())?;
            me.planner.insert(&sub.name, policy);
            me.subs.insert(sub.name.clone(), Managed::new(sub, false, 0));
        }
        // Stored energy caps keep CPU bursts off.
        let capped: Vec<String> = me
            .subs
            .values()
            .filter(|m| m.sub.ceiling.contains_key(&Resource::Cpu))
            .map(|m| m.sub.name.clone())
            .collect();
        for name in capped {
            me.sync_cpu_burst(&name, true);
        }
        Ok(me)
    }

    /// The cgroups the agent runs in (`/proc/self/cgroup`), refused as
    /// subscriptions along with their ancestors.
    pub fn with_own_cgroups(mut self, own: Vec<String>) -> Self {
        self.own_cgroups = own;
        self
    }

    /// Whether tasks may wait at the memory limit (`agent.memory_wait`).
    pub fn with_memory_wait(mut self, on: bool) -> Self {
        self.memory_wait = on;
        self
    }

    /// Lets `name`'s tasks wait at its memory limit when that is wanted: the
    /// agent lets them (`agent.memory_wait`), the policy raises waiting
    /// memory, the limit is below `max` (at max, a container past its
    /// bound is OOM-killed as it would be anyway) and the host did not hold
    /// the limit back (then nothing would raise it). Logged when it changes.
    pub(crate) fn sync_mem_wait(&mut self, now_ms: u64, name: &str) {
        let Some(m) = self.subs.get_mut(name) else { return };
        let bound = m.sub.resources.get(&Resource::Mem).map(|b| b.max);
        if bound.is_none() && m.mem_wait != Some(true) {
            return;
        }
        let limit = m.sub.limits.get(&Resource::Mem).copied().flatten();
        // Inactive, nothing would raise a waiting limit.
        let want = self.memory_wait
            && self.settings.active
            && self.planner.raises_waiting_memory(name)
            && limit.zip(bound).is_some_and(|(l, max)| l < max)
            && !m.mem_limited;
        if m.mem_wait == Some(want) {
            return;
        }
        match self.act.set_mem_wait(&m.sub.cgroup, bound.filter(|_| want)) {
            Ok(()) => {
                if m.mem_wait.is_some() || want {
                    let what = if want {
                        "tasks wait at the memory limit for a raise (no OOM kill below max)"
                    } else {
                        "tasks reaching the memory limit are OOM-killed (at max or held by the host)"
                    };
                    self.events.push(now_ms, name, Resource::Mem, limit, limit, what.into());
                }
                m.mem_wait = Some(want);
            }
            Err(e) => {
                if m.mem_wait.is_none() {
                    tracing::warn!(container = name, "memory wait: {e}");
                }
                m.mem_wait = Some(false);
            }
        }
    }

    /// Puts every container back to OOM kills at the limit (on shutdown:
    /// with the agent gone, nothing would raise a waiting limit).
    pub fn release_waits(&mut self) {
        for m in self.subs.values_mut() {
            if m.mem_wait == Some(true) {
                if let Err(e) = self.act.set_mem_wait(&m.sub.cgroup, None) {
                    tracing::warn!(container = %m.sub.name, "memory wait off: {e}");
                }
                m.mem_wait = None;
            }
        }
    }

    /// Stores the events not stored yet (once a tick, and on shutdown);
    /// on failure they stay pending for the next call.
    pub fn flush_events(&mut self) {
        let pending = self.events.unsaved();
        let Some(last) = pending.last().map(|e| e.id) else { return };
        match self.store.save_events(&pending, self.events.oldest_id()) {
            Ok(()) => self.events.mark_saved(last),
            Err(e) => tracing::error!("saving events: {e}"),
        }
    }

    /// Makes `out` the cgroups whose memory pressure should wake the agent
    /// at once (managed memory under a policy that raises it under
    /// pressure), in name order; returns whether it changed. The sampling
    /// loop calls it only when a subscription was saved (built every tick,
    /// it was 5 % of the agent at 100 managed containers).
    pub fn memory_watched_into(&self, out: &mut Vec<String>) -> bool {
        let now: Vec<&str> = self
            .subs
            .values()
            .filter(|m| m.sub.resources.contains_key(&Resource::Mem) && self.planner.raises_waiting_memory(&m.sub.name))
            .map(|m| m.sub.cgroup.as_str())
            .collect();
        if out.iter().map(String::as_str).eq(now.iter().copied()) {
            return false;
        }
        *out = now.into_iter().map(str::to_owned).collect();
        true
    }

    /// (name, cgroup) of every subscription, for the sampler to track.
    pub fn tracked(&self) -> Vec<(String, String)> {
        self.subs.values().map(|m| (m.sub.name.clone(), m.sub.cgroup.clone())).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Subscription> {
        self.subs.get(name).map(|m| &m.sub)
    }

    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    /// Validates a user-given cgroup path against the roots.
    pub fn check_cgroup(&self, path: &str) -> Result<String, ManageError> {
        model::check_cgroup_path(path, &self.roots)
            .map_err(|e| ManageError::Forbidden { field: e.field, message: e.message })
    }

    /// Sum of `min` of `r` over subscriptions other than `except`.
    fn mins_of_others(&self, r: Resource, except: &str) -> u64 {
        self.subs
            .values()
            .filter(|m| m.sub.name != except)
            .filter_map(|m| m.sub.resources.get(&r))
            .fold(0u64, |a, b| a.saturating_add(b.min))
    }

    /// Sum of limits of `r` over subscriptions other than `except`.
    pub(crate) fn limits_of_others(&self, r: Resource, except: &str) -> u64 {
        self.subs
            .values()
            .filter(|m| m.sub.name != except && m.sub.resources.contains_key(&r))
            .filter_map(|m| m.sub.limits.get(&r).copied().flatten())
            .fold(0u64, u64::saturating_add)
    }

    /// Host capacity per resource.
    pub fn capacity(&self) -> &BTreeMap<Resource, Option<u64>> {
        &self.capacity
    }

    /// Changes host capacity (persisted). Refused when the managed
    /// containers' minimums would no longer fit.
    pub fn set_capacity(&mut self, changes: BTreeMap<Resource, Option<u64>>) -> Result<(), ManageError> {
        for (&r, &cap) in &changes {
            if let Some(cap) = cap {
                let mins = self.mins_of_others(r, "").saturating_add(self.direct_total(r, ""));
                if mins > cap {
                    return Err(field_err(
                        format!("capacity.{r}"),
                        format!("{cap} is below the managed containers' minimums and the direct limits ({mins})"),
                    )
                    .into());
                }
            }
        }
        // Only what was set through the API is stored: resources never
        // overridden keep following the config and the hardware.
        let mut overrides: BTreeMap<Resource, Option<u64>> = self.store.setting("capacity")?.unwrap_or_default();
        overrides.extend(changes.iter().map(|(&r, &v)| (r, v)));
        self.store.set_setting("capacity", &overrides)?;
        self.capacity.extend(changes);
        Ok(())
    }
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod runtime_tests;
#[cfg(test)]
mod tests;
