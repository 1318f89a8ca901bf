//! The agent's API as data: every JSON shape an agent serves that another
//! part of scaler reads, defined once. The agent serializes these types;
//! the aggregator and the CLI deserialize the same types. Readers are
//! lenient where agents of another version may differ (absent fields take
//! their defaults, unknown fields are ignored) and strict about types.

mod containers;
mod events;
mod host;
mod round;
mod stats;

pub use containers::{ResourceState, Subscription, SubscriptionStatus, Subscriptions, Unsubscribed};
pub use events::{Event, Events};
pub use host::{Host, HostUsage};
pub use round::Round;
pub use stats::{
    BriefContainer, BriefSignals, BriefStats, BriefTotals, Container, EngineInfo, History, HistoryPoint, Kind,
    PointSignals, Reading, Resources, Signals, Stats, Totals,
};

/// A field that may be absent or `null`: its default then.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Option::unwrap_or_default)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use policies::Resource;

    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
        let text = serde_json::to_string(v).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), v, "{text}");
    }

    #[test]
    fn what_the_agent_writes_its_readers_read_back() {
        let busy = Container {
            name: "web".into(),
            cgroup: "/lxc.payload.web".into(),
            kind: Kind::Lxc,
            engine: None,
            time_ms: Some(5),
            interval_ms: Some(200),
            resources: Resources { cpu: Reading { usage: Some(504), current: Some(500) }, ..Resources::default() },
            signals: Some(Signals { mem_reclaims: 3, cpu_throttled_usec: Some(7), ..Signals::default() }),
            totals: Some(Totals { cpu_usec: 99, ..Totals::default() }),
        };
        let new = Container {
            name: "new".into(),
            cgroup: "/new".into(),
            kind: Kind::Docker,
            engine: Some(EngineInfo {
                engine: "docker".into(),
                id: "0dd02f0c1387".into(),
                name: "new".into(),
                labels: [("app".to_owned(), "shop".to_owned())].into(),
            }),
            time_ms: None,
            interval_ms: None,
            resources: Resources::default(),
            signals: None,
            totals: None,
        };
        round_trip(&Stats { host: "n".into(), time_ms: 5, tick_ms: 200, containers: vec![busy, new] });
        let mut sub = Subscription {
            name: "web".into(),
            cgroup: "/web".into(),
            policy: "follow".into(),
            policy_config: None,
            priority: 0,
            status: SubscriptionStatus::Missing,
            resources: Default::default(),
            ceiling: [(Resource::Cpu, 1500)].into(),
            original: [(Resource::Mem, None)].into(),
            policy_since_ms: 1,
            cpu_placement: true,
            cpus: vec![0, 2],
        };
        sub.resources
            .insert(Resource::Cpu, ResourceState { min: 100, max: 2000, current: Some(750), ..Default::default() });
        round_trip(&Subscriptions { containers: vec![sub] });
        let host = Host {
            host: "n".into(),
            capacity: [(Resource::Cpu, Some(2000)), (Resource::Mem, None)].into(),
            allocated: [(Resource::Cpu, 1250)].into(),
            usage: HostUsage { cpu: Some(830) },
            cpus_mc: 2000,
            rapl_mw: None,
            power_model: Some(policies::energy::PowerModel::try_new(1, 2).unwrap()),
        };
        round_trip(&host);
        assert_eq!((host.capacity_of(Resource::Mem), host.allocated_of(Resource::Mem)), (None, None));
        let e = Event {
            id: 1,
            time_ms: 2,
            container: "web".into(),
            resource: Some(Resource::Cpu),
            old: None,
            new: Some(3),
            reason: "r".into(),
        };
        round_trip(&Events { events: vec![e.clone()] });
        let brief = BriefContainer {
            name: "web".into(),
            cgroup: "/web".into(),
            kind: Kind::Lxc,
            time_ms: Some(4),
            interval_ms: Some(200),
            resources: Resources::default(),
            signals: Some(BriefSignals { cpu_throttled_usec: Some(7) }),
            totals: Some(BriefTotals { cpu_usec: 9 }),
        };
        let stats = BriefStats { host: "n".into(), time_ms: 5, tick_ms: 200, containers: vec![brief] };
        round_trip(&Round { stats, host: host.clone(), events: vec![e], containers: Some(Vec::new()) });
        round_trip(&Unsubscribed { name: "web".into(), restored: true });
    }

    #[test]
    fn readers_are_lenient_about_versions_and_strict_about_types() {
        // An agent of another version: an unknown kind, a field more, some
        // fields absent or null.
        let c: Container = serde_json::from_str(
            r#"{"name":"x","kind":"firecracker","extra":1,"resources":null,"signals":{"new_signal":2},"totals":null}"#,
        )
        .unwrap();
        assert_eq!((c.kind, c.resources, c.signals.unwrap().mem_reclaims), (Kind::Other, Resources::default(), 0));
        assert!(serde_json::from_str::<Container>(r#"{"name":"x","interval_ms":"soon"}"#).is_err());
        assert!(serde_json::from_str::<Stats>(r#"{"time_ms":"x","containers":[]}"#).is_err());
        assert!(serde_json::from_str::<Event>(r#"{"id":1,"time_ms":1,"container":"x","resource":"gpu"}"#).is_err());
        assert_eq!(Kind::KNOWN.map(Kind::name).join(","), "lxc,docker,podman,kubernetes,systemd,configured");
        // The names the code prints are the names on the wire.
        for k in Kind::KNOWN.into_iter().chain([Kind::Other]) {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
        for s in [SubscriptionStatus::Active, SubscriptionStatus::Missing] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }
}
