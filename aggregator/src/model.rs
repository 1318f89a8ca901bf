//! What the aggregator reads from agents, as plain data: the parts of
//! `/v1/stats`, `/v1/host`, `/v1/containers` and `/v1/events` it uses.
//! Parsing is lenient about fields it does not use (agents may be newer)
//! and strict about the ones it does (a wrong type is garbage).

use policies::Resource;
use serde::{Deserialize, Serialize};

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

/// One resource's reading: measured `usage` and the limit in force
/// (`current`; `None` = unlimited or not measured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    pub usage: Option<u64>,
    pub current: Option<u64>,
}

/// All resources of one entity at one time.
pub type Readings = [Reading; RESOURCES.len()];

#[derive(Debug, Clone, Default, Deserialize)]
struct RawResources {
    cpu: Option<Reading>,
    mem: Option<Reading>,
    disk_read: Option<Reading>,
    disk_write: Option<Reading>,
    net_rx: Option<Reading>,
    net_tx: Option<Reading>,
}

impl RawResources {
    fn readings(&self) -> Readings {
        let mut out = Readings::default();
        for (i, r) in [self.cpu, self.mem, self.disk_read, self.disk_write, self.net_rx, self.net_tx].iter().enumerate()
        {
            out[i] = r.unwrap_or_default();
        }
        out
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawTotals {
    cpu_usec: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawSignals {
    cpu_throttled_usec: Option<u64>,
}

/// A field that may be absent or `null` (the agent sends `null` for what a
/// container in its first interval does not have yet): its default then.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

#[derive(Debug, Clone, Deserialize)]
struct RawContainer {
    name: String,
    #[serde(default, deserialize_with = "null_default")]
    cgroup: String,
    #[serde(default)]
    kind: Option<String>,
    time_ms: Option<u64>,
    #[serde(default, deserialize_with = "null_default")]
    interval_ms: u64,
    #[serde(default, deserialize_with = "null_default")]
    resources: RawResources,
    #[serde(default, deserialize_with = "null_default")]
    totals: RawTotals,
    #[serde(default, deserialize_with = "null_default")]
    signals: RawSignals,
}

#[derive(Debug, Clone, Deserialize)]
struct RawStats {
    #[serde(default)]
    host: Option<String>,
    time_ms: u64,
    containers: Vec<RawContainer>,
}

/// A container as one agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentContainer {
    pub name: String,
    pub cgroup: String,
    pub kind: String,
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

/// `GET /v1/stats`.
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
    let raw: RawStats = serde_json::from_slice(body)?;
    raw.containers.iter().try_for_each(|c| check_name(&c.name))?;
    Ok(Stats {
        host: raw.host,
        time_ms: raw.time_ms,
        containers: raw
            .containers
            .into_iter()
            .map(|c| AgentContainer {
                resources: c.resources.readings(),
                name: c.name,
                cgroup: c.cgroup,
                kind: c.kind.unwrap_or_default(),
                time_ms: c.time_ms,
                interval_ms: c.interval_ms,
                cpu_usec: c.totals.cpu_usec,
                cpu_throttled_usec: c.signals.cpu_throttled_usec,
            })
            .collect(),
    })
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawCaps {
    cpu: Option<u64>,
    mem: Option<u64>,
    disk_read: Option<u64>,
    disk_write: Option<u64>,
    net_rx: Option<u64>,
    net_tx: Option<u64>,
}

impl RawCaps {
    fn array(&self) -> [Option<u64>; AGENT_RESOURCES] {
        [self.cpu, self.mem, self.disk_read, self.disk_write, self.net_rx, self.net_tx]
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct RawModel {
    idle_mw: u64,
    max_mw: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct RawHost {
    #[serde(default)]
    capacity: RawCaps,
    #[serde(default)]
    allocated: RawCaps,
    #[serde(default)]
    usage: RawCaps,
    #[serde(default)]
    rapl_mw: Option<u64>,
    #[serde(default)]
    power_model: Option<RawModel>,
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
    let raw: RawHost = serde_json::from_slice(body)?;
    Ok(HostInfo {
        capacity: raw.capacity.array(),
        allocated: raw.allocated.array(),
        usage_cpu: raw.usage.cpu,
        rapl_mw: raw.rapl_mw,
        power_model: raw.power_model.map(|m| (m.idle_mw, m.max_mw)),
    })
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct RawBounds {
    min: Option<u64>,
    max: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawSubResources {
    cpu: Option<RawBounds>,
    mem: Option<RawBounds>,
    disk_read: Option<RawBounds>,
    disk_write: Option<RawBounds>,
    net_rx: Option<RawBounds>,
    net_tx: Option<RawBounds>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawCeiling {
    cpu: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawSub {
    name: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    resources: RawSubResources,
    #[serde(default)]
    ceiling: Option<RawCeiling>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawSubs {
    containers: Vec<RawSub>,
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

pub fn parse_subscriptions(body: &[u8]) -> Result<Vec<Subscription>, serde_json::Error> {
    let raw: RawSubs = serde_json::from_slice(body)?;
    raw.containers.iter().try_for_each(|c| check_name(&c.name))?;
    Ok(raw
        .containers
        .into_iter()
        .map(|s| {
            let r = &s.resources;
            let b = [r.cpu, r.mem, r.disk_read, r.disk_write, r.net_rx, r.net_tx];
            let mut bounds = [None; AGENT_RESOURCES];
            for (slot, b) in bounds.iter_mut().zip(b) {
                *slot = b.and_then(|b| Some((b.min?, b.max?)));
            }
            Subscription {
                name: s.name,
                status: s.status.unwrap_or_else(|| "active".into()),
                policy: s.policy.unwrap_or_default(),
                bounds,
                ceiling_cpu: s.ceiling.and_then(|c| c.cpu),
            }
        })
        .collect())
}

/// A limit change, from an agent (`/v1/events`) or from the aggregator
/// itself (energy caps).
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

#[derive(Debug, Clone, Deserialize)]
struct RawEvents {
    events: Vec<Event>,
}

pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, serde_json::Error> {
    let events = serde_json::from_slice::<RawEvents>(body)?.events;
    events.iter().try_for_each(|e| check_name(&e.container))?;
    Ok(events)
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
            "resources":{"cpu":{"usage":1,"current":null}},"signals":{"cpu_throttled_usec":null},"totals":{"cpu_usec":null}}]}"#,
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
            parse_events(br#"{"events":[{"time_ms":1,"container":"x y"}]}"#).is_err(),
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
