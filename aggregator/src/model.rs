//! What the aggregator keeps of what it reads from agents, as plain data
//! indexed by resource. The agent's JSON is parsed as the agent's own wire
//! types (`scaler_api::wire`: one definition for both sides), then reduced
//! to the parts the aggregator uses.

use policies::Resource;
use scaler_api::wire;
use serde::{Deserialize, Serialize};

/// One resource's reading: measured `usage` and the limit in force.
pub use scaler_api::wire::Reading;

/// The six resources an agent measures, in the agent's order, plus the
/// aggregator's `energy` (power in mW; `current` is the cap, if any): the
/// names of [`Resource::ALL`].
pub const RESOURCES: [&str; 7] = Resource::NAMES;
/// How many of [`RESOURCES`] come from agents.
pub const AGENT_RESOURCES: usize = Resource::LIMITABLE.len();
/// Index of `cpu` and `energy` in [`RESOURCES`].
pub const CPU: usize = Resource::Cpu as usize;
pub const ENERGY: usize = Resource::Energy as usize;
const _: () = assert!(Resource::ALL[CPU] as usize == CPU && Resource::ALL[ENERGY] as usize == ENERGY);

/// Index of a resource name.
pub fn resource_index(name: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| *r == name)
}

/// All resources of one entity at one time.
pub type Readings = [Reading; RESOURCES.len()];

/// A container as one agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentContainer {
    pub name: String,
    pub cgroup: String,
    pub kind: &'static str,
    /// Time of the agent's latest sample (`None` before the first).
    pub time_ms: Option<u64>,
    pub interval_ms: u64,
    /// The six agent resources (`energy` is left empty here).
    pub resources: Readings,
    /// Cumulative CPU time, for CPU over a whole round.
    pub cpu_usec: Option<u64>,
    /// Throttled time during the agent's last interval.
    pub cpu_throttled_usec: Option<u64>,
}

impl From<wire::Container> for AgentContainer {
    /// Of the full form, what the brief one has.
    fn from(c: wire::Container) -> Self {
        AgentContainer::from(wire::BriefContainer {
            name: c.name,
            cgroup: c.cgroup,
            kind: c.kind,
            time_ms: c.time_ms,
            interval_ms: c.interval_ms,
            resources: c.resources,
            signals: c.signals.map(|s| wire::BriefSignals { cpu_throttled_usec: s.cpu_throttled_usec }),
            totals: c.totals.map(|t| wire::BriefTotals { cpu_usec: t.cpu_usec }),
        })
    }
}

impl From<wire::BriefContainer> for AgentContainer {
    fn from(c: wire::BriefContainer) -> Self {
        let mut resources = Readings::default();
        resources[..AGENT_RESOURCES].copy_from_slice(&c.resources.as_array());
        AgentContainer {
            resources,
            kind: c.kind.name(),
            time_ms: c.time_ms,
            interval_ms: c.interval_ms.unwrap_or(0),
            cpu_usec: c.totals.map(|t| t.cpu_usec),
            cpu_throttled_usec: c.signals.and_then(|s| s.cpu_throttled_usec),
            name: c.name,
            cgroup: c.cgroup,
        }
    }
}

/// `GET /v1/stats`, its containers by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub host: Option<String>,
    pub time_ms: u64,
    pub containers: Vec<AgentContainer>,
}

/// A container name from an agent, held to the agent's own rules (it goes
/// into the aggregator's URLs, store keys and metric labels).
fn check_name(name: &str) -> Result<(), serde_json::Error> {
    scaler_api::names::validate(name)
        .map_err(|e| <serde_json::Error as serde::de::Error>::custom(format!("container {e}")))
}

/// Parses `/v1/stats`.
pub fn parse_stats(body: &[u8]) -> Result<Stats, serde_json::Error> {
    stats_from(serde_json::from_slice(body)?)
}

fn stats_from(raw: wire::Stats) -> Result<Stats, serde_json::Error> {
    stats_of(raw.host, raw.time_ms, raw.containers)
}

fn stats_of<C>(host: String, time_ms: u64, containers: Vec<C>) -> Result<Stats, serde_json::Error>
where
    AgentContainer: From<C>,
{
    // Into a vector of its own size: collected in place, the smaller
    // containers would keep the wire vector's allocation (twice as large
    // or more) for as long as the host's data is held.
    let mut v = Vec::with_capacity(containers.len());
    v.extend(containers.into_iter().map(AgentContainer::from));
    v.iter().try_for_each(|c| check_name(&c.name))?;
    // By name (as agents send them): found by binary search.
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Stats { host: Some(host).filter(|h| !h.is_empty()), time_ms, containers: v })
}

/// `GET /v1/host`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub capacity: [Option<u64>; AGENT_RESOURCES],
    pub allocated: [Option<u64>; AGENT_RESOURCES],
    /// The whole host's CPU use, millicores.
    pub usage_cpu: Option<u64>,
    pub rapl_mw: Option<u64>,
    /// The agent's power model `(idle_mw, max_mw)`.
    pub power_model: Option<(u64, u64)>,
}

pub fn parse_host(body: &[u8]) -> Result<HostInfo, serde_json::Error> {
    Ok(host_from(&serde_json::from_slice(body)?))
}

fn host_from(h: &wire::Host) -> HostInfo {
    HostInfo {
        capacity: Resource::LIMITABLE.map(|r| h.capacity_of(r)),
        allocated: Resource::LIMITABLE.map(|r| h.allocated_of(r)),
        usage_cpu: h.usage.cpu,
        rapl_mw: h.rapl_mw,
        power_model: h.power_model.map(|m| (m.idle_mw(), m.max_mw())),
    }
}

/// A subscription (`GET /v1/containers`): the bounds the agent keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub name: String,
    pub status: String,
    pub policy: String,
    /// `(min, max)` per agent resource, where managed.
    pub bounds: [Option<(u64, u64)>; AGENT_RESOURCES],
    /// External CPU ceiling in force (set by an energy cap).
    pub ceiling_cpu: Option<u64>,
}

impl From<wire::Subscription> for Subscription {
    fn from(s: wire::Subscription) -> Self {
        Subscription {
            status: s.status.name().to_owned(),
            bounds: Resource::LIMITABLE.map(|r| s.resources.get(&r).map(|b| (b.min, b.max))),
            ceiling_cpu: s.ceiling.get(&Resource::Cpu).copied(),
            name: s.name,
            policy: s.policy,
        }
    }
}

pub fn parse_subscriptions(body: &[u8]) -> Result<Vec<Subscription>, serde_json::Error> {
    subscriptions_from(serde_json::from_slice::<wire::Subscriptions>(body)?.containers)
}

fn subscriptions_from(raw: Vec<wire::Subscription>) -> Result<Vec<Subscription>, serde_json::Error> {
    raw.iter().try_for_each(|c| check_name(&c.name))?;
    let mut v: Vec<Subscription> = raw.into_iter().map(Subscription::from).collect();
    // By name (as agents send them): found by binary search.
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

/// A limit change as the aggregator serves it (`GET /v1/events` of its own
/// API): an agent's event with the host it came from, or one of the
/// aggregator's own (energy caps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub id: u64,
    pub time_ms: u64,
    #[serde(default)]
    pub host: String,
    pub container: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub old: Option<u64>,
    #[serde(default)]
    pub new: Option<u64>,
    #[serde(default)]
    pub reason: String,
    /// `agent` or `aggregator`.
    #[serde(default)]
    pub source: String,
}

impl From<wire::Event> for Event {
    fn from(e: wire::Event) -> Self {
        Event {
            id: e.id,
            time_ms: e.time_ms,
            host: String::new(),
            container: e.container,
            resource: e.resource.map_or_else(String::new, |r| r.name().to_owned()),
            old: e.old,
            new: e.new,
            reason: e.reason,
            source: "agent".into(),
        }
    }
}

/// Parses an agent's `/v1/events` (host left empty: the caller knows it).
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, serde_json::Error> {
    events_from(serde_json::from_slice::<wire::Events>(body)?.events)
}

fn events_from(events: Vec<wire::Event>) -> Result<Vec<Event>, serde_json::Error> {
    events.iter().try_for_each(|e| check_name(&e.container))?;
    Ok(events.into_iter().map(Event::from).collect())
}

/// An agent's `/v1/round`: its parts as their own endpoints give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub stats: Stats,
    pub host: HostInfo,
    pub events: Vec<Event>,
    /// When asked for.
    pub subscriptions: Option<Vec<Subscription>>,
}

pub fn parse_round(body: &[u8]) -> Result<Round, serde_json::Error> {
    let r: wire::Round = serde_json::from_slice(body)?;
    Ok(Round {
        host: host_from(&r.host),
        stats: stats_of(r.stats.host, r.stats.time_ms, r.stats.containers)?,
        events: events_from(r.events)?,
        subscriptions: r.containers.map(subscriptions_from).transpose()?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_stats() {
        let s = parse_stats(
            br#"{"host":"node1","time_ms":5,"tick_ms":200,"containers":[{"name":"web1","cgroup":"/lxc.payload.web1",
            "kind":"lxc","time_ms":5,"interval_ms":200,"resources":{"cpu":{"usage":504,"current":500},
            "mem":{"usage":262144,"current":null}},"signals":{"cpu_throttled_usec":7},"totals":{"cpu_usec":99},
            "extra":1}]}"#,
        )
        .unwrap();
        let c = &s.containers[0];
        assert_eq!(c.resources[CPU], Reading { usage: Some(504), current: Some(500) });
        assert_eq!(c.resources[1].current, None);
        assert_eq!((c.cpu_usec, c.cpu_throttled_usec), (Some(99), Some(7)));
        assert!(parse_stats(b"<html>").is_err());
        assert!(parse_stats(br#"{"time_ms":"x","containers":[]}"#).is_err());
    }

    #[test]
    fn a_container_in_its_first_interval_is_not_garbage() {
        // As the agent sends it before a container's second tick (docs/api.md).
        let s = parse_stats(
            br#"{"host":"n","time_ms":5,"tick_ms":200,"containers":[{"name":"new","cgroup":"/new","kind":"lxc",
            "time_ms":null,"interval_ms":null,"resources":null,"signals":null,"totals":null},
            {"name":"old","cgroup":null,"kind":"lxc","time_ms":5,"interval_ms":200,
            "resources":{"cpu":{"usage":1,"current":null}},"signals":{"cpu_throttled_usec":null},"totals":null}]}"#,
        )
        .unwrap();
        assert_eq!(s.containers.len(), 2);
        assert_eq!((s.containers[0].time_ms, s.containers[0].interval_ms), (None, 0));
        assert_eq!(s.containers[0].resources, Readings::default());
        assert_eq!(s.containers[1].resources[CPU].usage, Some(1));
        assert!(
            parse_stats(br#"{"time_ms":5,"containers":[{"name":"x","interval_ms":"soon"}]}"#).is_err(),
            "wrong types still are"
        );
        let bad = parse_stats(br#"{"time_ms":5,"containers":[{"name":"a/../b"}]}"#).unwrap_err().to_string();
        assert!(bad.contains("a/../b"), "{bad}");
        assert!(
            parse_events(br#"{"events":[{"id":1,"time_ms":1,"container":"x y","resource":"cpu","old":null,"new":1,"reason":"r"}]}"#).is_err(),
            "names are checked in events too"
        );
    }

    #[test]
    fn parses_host_subscriptions_and_events() {
        let h = parse_host(
            br#"{"host":"n","capacity":{"cpu":2000},"allocated":{"cpu":1250},"usage":{"cpu":830},"rapl_mw":null,
            "power_model":{"idle_mw":1,"max_mw":2}}"#,
        )
        .unwrap();
        assert_eq!((h.capacity[0], h.usage_cpu, h.power_model), (Some(2000), Some(830), Some((1, 2))));
        let s = parse_subscriptions(
            br#"{"containers":[{"name":"web1","status":"active","resources":{"cpu":{"min":100,"max":2000,"current":750}},
            "ceiling":{"cpu":1500}}]}"#,
        )
        .unwrap();
        assert_eq!((s[0].bounds[0], s[0].ceiling_cpu), (Some((100, 2000)), Some(1500)));
        let e = parse_events(br#"{"events":[{"id":17,"time_ms":1,"container":"web1","resource":"cpu","old":500,"new":750,"reason":"r"}]}"#)
            .unwrap();
        assert_eq!((e[0].id, e[0].new), (17, Some(750)));
        assert_eq!(resource_index("energy"), Some(ENERGY));
    }
}
