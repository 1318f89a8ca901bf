//! The aggregator's state in memory: hosts with their latest data,
//! applications with their caps, the ceilings it wants in force, recent
//! events and round statistics. Durable parts are mirrored in the store by
//! whoever changes them.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Mutex,
};

use policies::energy::EnergyCapController;
use serde::{Deserialize, Serialize};

use super::{
    client::Target,
    energy::HostPower,
    model::{AgentContainer, Event, HostInfo, Stats, Subscription},
};

/// Recent events kept for the API and dashboard.
pub const EVENTS_KEPT: usize = 2000;
/// Round durations kept for statistics.
pub const ROUNDS_KEPT: usize = 120;

/// Where a host came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Config,
    Api,
}

/// A host as configured or registered (what the store keeps for API hosts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub url: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub idle_mw: Option<u64>,
    #[serde(default)]
    pub max_mw: Option<u64>,
}

/// A container of an application.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerRef {
    pub host: String,
    pub name: String,
}

/// An application as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub containers: Vec<ContainerRef>,
    /// Energy (power) cap, mW.
    #[serde(default)]
    pub cap_mw: Option<u64>,
    /// When the cap was set, ms since the epoch.
    #[serde(default)]
    pub cap_set_ms: Option<u64>,
    /// The user that owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Scaling at the application's level (guard, bounds, rebalancing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<AppScaling>,
    /// Weights of its containers (`host/name` -> weight; 1 when absent):
    /// each container's share of the application's allocation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u32>,
}

impl AppRecord {
    /// The weight of `c` in this application.
    pub fn weight(&self, c: &ContainerRef) -> u32 {
        self.weights.get(&c.key()).copied().unwrap_or(1)
    }
}

impl ContainerRef {
    /// `host/name`, the key of stored maps.
    pub fn key(&self) -> String {
        format!("{}/{}", self.host, self.name)
    }
}

/// How an application scales at its own level (CPU, millicores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppScaling {
    /// The application's bounds (the sum of its containers' ceilings).
    pub cpu_min: u64,
    pub cpu_max: u64,
    /// Guarded: its allocation follows its total need (plus headroom) and
    /// is split among its containers by weight.
    pub guard: bool,
    /// Over the need, percent.
    pub headroom_percent: u64,
    /// Unguarded: share of the slack of containers that do not use their
    /// allocation moved each period to those that are short (0 = off).
    pub rebalance_percent: u64,
}

/// What the scaling control did in its latest period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScalingStatus {
    pub state: String,
    /// The application's allocation (its ceilings' sum), millicores.
    pub allocation: Option<u64>,
    /// What its need asked (guarded), before the user's budget.
    pub target: Option<u64>,
    pub periods: u64,
}

/// A user: owns applications, whose sum stays within its budgets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// CPU budget, millicores.
    #[serde(default)]
    pub cpu_budget_mc: Option<u64>,
    /// Energy (power) budget, mW.
    #[serde(default)]
    pub energy_budget_mw: Option<u64>,
    /// Share of the slack of its capped applications' caps moved each
    /// period to those pressing on theirs, percent (0 = off).
    #[serde(default)]
    pub rebalance_percent: u64,
}

/// A ceiling this aggregator set (stored, so it can be cleared after a
/// restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeilingRecord {
    pub app: String,
    /// Wanted CPU ceiling; `None`: to be cleared.
    pub cpu: Option<u64>,
}

/// A host's latest data and how fresh it is.
pub struct HostState {
    pub name: String,
    pub record: HostRecord,
    pub source: Source,
    pub target: Target,
    pub stats: Option<Stats>,
    pub info: Option<HostInfo>,
    /// `None`: the agent has no subscriptions endpoint.
    pub subscriptions: Option<Vec<Subscription>>,
    /// Round time of the last successful gather.
    pub last_ok_ms: Option<u64>,
    pub last_attempt_ms: Option<u64>,
    /// The latest round failed (or none has succeeded yet).
    pub stale: bool,
    pub error: Option<String>,
    pub rounds_ok: u64,
    pub rounds_failed: u64,
    /// Time and id of the newest agent event seen.
    pub events_since: Option<(u64, u64)>,
    /// Cumulative CPU time and sample time per container at the last round.
    pub prev_cpu: HashMap<String, (u64, u64)>,
    /// Power of the host and its containers, from the latest good round.
    pub power: Option<HostPower>,
    /// When the agent last refused the brief stats form (an older agent):
    /// it is read in full, and asked for the brief form again after
    /// [`BRIEF_RETRY_MS`] (it may have been upgraded).
    pub brief_refused_ms: Option<u64>,
    /// When the agent last answered 404 to `/v1/round` (an older agent):
    /// it is read endpoint by endpoint, and asked again after
    /// [`BRIEF_RETRY_MS`].
    pub round_refused_ms: Option<u64>,
}

/// How long an agent that refused the brief stats form, or had no
/// `/v1/round`, is read the older way before it is asked again.
pub const BRIEF_RETRY_MS: u64 = 300_000;

impl HostState {
    pub fn new(name: String, record: HostRecord, source: Source) -> Self {
        Self {
            target: Target::new(&record.url, record.token.clone()),
            name,
            record,
            source,
            stats: None,
            info: None,
            subscriptions: None,
            last_ok_ms: None,
            last_attempt_ms: None,
            stale: true,
            error: None,
            rounds_ok: 0,
            rounds_failed: 0,
            events_since: None,
            prev_cpu: HashMap::new(),
            power: None,
            brief_refused_ms: None,
            round_refused_ms: None,
        }
    }

    /// Age of the latest good data at `now_ms`.
    pub fn age_ms(&self, now_ms: u64) -> Option<u64> {
        self.last_ok_ms.map(|t| now_ms.saturating_sub(t))
    }

    pub fn subscription(&self, name: &str) -> Option<&Subscription> {
        let subs = self.subscriptions.as_ref()?;
        subs.binary_search_by(|s| s.name.as_str().cmp(name)).ok().map(|i| &subs[i])
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.stats.as_ref()?.containers.binary_search_by(|c| c.name.as_str().cmp(name)).ok()
    }

    /// A container as the host's latest stats give it.
    pub fn container(&self, name: &str) -> Option<&AgentContainer> {
        self.stats.as_ref()?.containers.get(self.index_of(name)?)
    }

    /// A container's CPU over the last round and its power (mW).
    pub fn power_of(&self, name: &str) -> Option<(u64, u64)> {
        self.power.as_ref()?.containers.get(self.index_of(name)?).copied()
    }
}

/// An energy cap's live status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CapStatus {
    /// `controlling`, or `holding: <why>` when a period was skipped.
    pub state: String,
    /// Application power in the latest period, mW.
    pub power_mw: Option<u64>,
    /// Since when power has stayed within the tolerance of the cap.
    pub within_since_ms: Option<u64>,
    /// Time from setting the cap until power first stayed within the
    /// tolerance for five periods.
    pub settled_after_ms: Option<u64>,
    /// Consecutive periods within the tolerance.
    pub within_periods: u64,
    pub periods: u64,
}

pub struct AppState {
    pub record: AppRecord,
    /// The cap controller (a `Mutex` only to make the state `Sync`; it is
    /// used under the state's write lock).
    pub controller: Option<Mutex<Box<dyn EnergyCapController>>>,
    /// The ceilings the controller chose in its latest period.
    pub ceilings: BTreeMap<ContainerRef, u64>,
    pub cap: CapStatus,
    /// The ceilings the scaling control chose in its latest period.
    pub scaled: BTreeMap<ContainerRef, u64>,
    pub scaling: ScalingStatus,
    /// The cap in force after its user's energy rebalancing (mW; `None`:
    /// the cap as set).
    pub cap_share: Option<u64>,
}

impl AppState {
    /// The energy cap the controller holds: the cap as set, or its share
    /// after the user's rebalancing.
    pub fn cap_in_force(&self) -> Option<u64> {
        self.record.cap_mw.map(|c| self.cap_share.unwrap_or(c))
    }
}

impl AppState {
    pub fn new(record: AppRecord) -> Self {
        Self {
            record,
            controller: None,
            ceilings: BTreeMap::new(),
            cap: CapStatus::default(),
            scaled: BTreeMap::new(),
            scaling: ScalingStatus::default(),
            cap_share: None,
        }
    }
}

/// A wanted ceiling and what was last sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeilingState {
    pub record: CeilingRecord,
    /// Value last sent successfully (`Some(None)`: a clear was sent).
    pub sent: Option<Option<u64>>,
    /// When the last attempt was made, ms.
    pub attempt_ms: u64,
    pub error: Option<String>,
}

/// Timing of the latest rounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundStats {
    pub rounds: u64,
    /// Durations of the latest rounds, ms (gather, merge, control, record).
    pub durations_ms: VecDeque<f64>,
    pub last_gather_ms: f64,
    pub last_record_ms: f64,
    pub last_flush_ms: f64,
    pub last_flush_rows: usize,
    pub last_round_ms: Option<u64>,
}

impl RoundStats {
    pub fn push(&mut self, ms: f64) {
        self.rounds += 1;
        if self.durations_ms.len() == ROUNDS_KEPT {
            self.durations_ms.pop_front();
        }
        self.durations_ms.push_back(ms);
    }

    /// `(p50, p99, max)` of the kept durations.
    pub fn percentiles(&self) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self.durations_ms.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99), v[v.len() - 1]))
    }
}

#[derive(Default)]
pub struct State {
    pub hosts: BTreeMap<String, HostState>,
    pub apps: BTreeMap<String, AppState>,
    pub users: BTreeMap<String, UserRecord>,
    pub ceilings: BTreeMap<ContainerRef, CeilingState>,
    pub events: VecDeque<Event>,
    pub rounds: RoundStats,
}

impl State {
    pub fn push_event(&mut self, e: Event) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Applications that contain `c`.
    pub fn apps_of(&self, c: &ContainerRef) -> Vec<String> {
        self.apps.iter().filter(|(_, a)| a.record.containers.contains(c)).map(|(n, _)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_percentiles_and_event_ring() {
        let mut r = RoundStats::default();
        assert!(r.percentiles().is_none());
        for i in 1..=200 {
            r.push(f64::from(i));
        }
        assert_eq!(r.rounds, 200);
        let (p50, _, max) = r.percentiles().unwrap_or_default();
        assert_eq!((p50, max), (141.0, 200.0));
        let mut s = State::default();
        for i in 0..(EVENTS_KEPT as u64 + 5) {
            s.push_event(Event {
                id: i,
                time_ms: i,
                host: "h".into(),
                container: "c".into(),
                resource: "cpu".into(),
                old: None,
                new: None,
                reason: String::new(),
                source: "agent".into(),
            });
        }
        assert_eq!((s.events.len(), s.events[0].id), (EVENTS_KEPT, 5));
    }
}
