//! The JSON the API returns for hosts, containers and applications, built
//! from the state under a read lock.

use serde_json::{Map, Value, json};

use super::{
    model::{AGENT_RESOURCES, AgentContainer, CPU, ENERGY, RESOURCES, Subscription},
    state::{AppState, ContainerRef, HostState, State},
    totals::{self, Part, Total},
};

/// A container's contribution to totals (its power as `energy.usage`).
fn part(h: &HostState, c: &AgentContainer) -> Part {
    part_with(c, h.power_of(&c.name).map(|x| x.1), h.subscription(&c.name))
}

fn part_with(c: &AgentContainer, power_mw: Option<u64>, sub: Option<&Subscription>) -> Part {
    let mut p = Part { readings: Default::default(), bounds: [None; AGENT_RESOURCES] };
    p.readings[..AGENT_RESOURCES].copy_from_slice(&c.resources[..AGENT_RESOURCES]);
    p.readings[ENERGY].usage = power_mw;
    if let Some(s) = sub {
        p.bounds = s.bounds;
    }
    p
}

pub fn part_of(h: &HostState, name: &str) -> Option<Part> {
    Some(part(h, h.container(name)?))
}

/// Every container's part: one walk, the host's power being in the order
/// of its containers and both these and its subscriptions by name.
pub fn parts_of_host(h: &HostState) -> Vec<(&str, Part)> {
    let Some(s) = &h.stats else { return Vec::new() };
    let power = h.power.as_ref().map(|p| &p.containers);
    let mut subs = h.subscriptions.iter().flatten().peekable();
    let parts = s.containers.iter().enumerate().map(|(i, c)| {
        while subs.next_if(|x| x.name < c.name).is_some() {}
        let sub = subs.peek().copied().filter(|x| x.name == c.name);
        (c.name.as_str(), part_with(c, power.and_then(|p| p.get(i)).map(|x| x.1), sub))
    });
    parts.collect()
}

fn totals_json(t: &[Total; RESOURCES.len()]) -> Value {
    let mut m = Map::new();
    for (name, t) in RESOURCES.iter().zip(t) {
        m.insert((*name).to_owned(), json!(t));
    }
    Value::Object(m)
}

fn status(h: &HostState) -> &'static str {
    match (h.stale, h.last_ok_ms) {
        (false, _) => "ok",
        (true, Some(_)) => "stale",
        (true, None) => "unreachable",
    }
}

pub fn host_json(h: &HostState, now: u64, detail: bool) -> Value {
    let parts = parts_of_host(h);
    let info = h.info.as_ref();
    let per = |a: Option<&[Option<u64>; AGENT_RESOURCES]>| {
        let mut m = Map::new();
        for (i, name) in RESOURCES.iter().take(AGENT_RESOURCES).enumerate() {
            m.insert((*name).to_owned(), json!(a.and_then(|a| a[i])));
        }
        Value::Object(m)
    };
    let mut v = json!({
        "name": h.name,
        "url": h.record.url,
        "has_token": h.record.token.is_some(),
        "source": h.source,
        "status": status(h),
        "stale": h.stale,
        "age_ms": h.age_ms(now),
        "last_ok_ms": h.last_ok_ms,
        "error": h.error,
        "rounds_ok": h.rounds_ok,
        "rounds_failed": h.rounds_failed,
        "agent_host": h.stats.as_ref().and_then(|s| s.host.clone()),
        "containers": parts.len(),
        "capacity": per(info.map(|i| &i.capacity)),
        "allocated": per(info.map(|i| &i.allocated)),
        "cpu_used": info.and_then(|i| i.usage_cpu),
        "power": h.power,
        "totals": totals_json(&totals::totals(parts.iter().map(|(_, p)| p))),
    });
    if detail {
        let names: Vec<Value> =
            h.stats.iter().flat_map(|s| &s.containers).map(|c| json!({"name": c.name, "kind": c.kind})).collect();
        v["container_list"] = Value::Array(names);
    }
    v
}

pub fn container_json(st: &State, h: &HostState, c: &AgentContainer, now: u64) -> Value {
    let p = part(h, c);
    let sub = h.subscription(&c.name);
    let mut res = Map::new();
    for (i, name) in RESOURCES.iter().enumerate().take(AGENT_RESOURCES) {
        let b = p.bounds[i];
        res.insert(
            (*name).to_owned(),
            json!({"usage": p.readings[i].usage, "current": p.readings[i].current,
                   "min": b.map(|b| b.0), "max": b.map(|b| b.1)}),
        );
    }
    let r = ContainerRef { host: h.name.clone(), name: c.name.clone() };
    let (cpu_round, power) = h.power_of(&c.name).unzip();
    json!({
        "host": h.name,
        "name": c.name,
        "cgroup": c.cgroup,
        "kind": c.kind,
        "stale": h.stale,
        "age_ms": h.age_ms(now),
        "time_ms": c.time_ms,
        "resources": Value::Object(res),
        "cpu_round": cpu_round,
        "power_mw": power,
        "subscribed": sub.is_some(),
        "status": sub.map(|s| s.status.clone()),
        "policy": sub.map(|s| s.policy.clone()),
        "ceiling": sub.and_then(|s| s.ceiling_cpu).map(|v| json!({"cpu": v})),
        "wanted_ceiling": st.ceilings.get(&r).and_then(|s| s.record.cpu),
        "apps": st.apps_of(&r),
    })
}

pub fn energy_json(a: &AppState, st: &State) -> Value {
    let ceilings: Vec<Value> = a
        .ceilings
        .iter()
        .map(|(c, v)| {
            let s = st.ceilings.get(c);
            json!({"host": c.host, "name": c.name, "cpu": v,
                   "confirmed": s.and_then(|s| s.sent).flatten(), "error": s.and_then(|s| s.error.clone())})
        })
        .collect();
    let cap = a.record.cap_mw;
    let power = a.cap.power_mw;
    json!({
        "watts": cap.map(|c| c as f64 / 1000.0),
        "cap_mw": cap,
        "cap_in_force_mw": a.cap_in_force(),
        "power_mw": power,
        "error_pct": cap.zip(power).map(|(c, p)| (p as f64 - c as f64) / c as f64 * 100.0),
        "set_ms": a.record.cap_set_ms,
        "controller": a.controller.as_ref().and_then(|c| c.lock().ok().map(|c| c.name().to_owned())),
        "status": a.cap,
        "ceilings": ceilings,
    })
}

pub fn app_json(name: &str, a: &AppState, st: &State, now: u64, detail: bool) -> Value {
    let mut parts = Vec::new();
    let mut list = Vec::new();
    let mut missing = Vec::new();
    for c in &a.record.containers {
        let h = st.hosts.get(&c.host);
        let found = h.and_then(|h| h.container(&c.name).map(|x| (h, x)));
        let why = match (h, found) {
            (None, _) => Some("unknown host"),
            (Some(h), _) if h.stale => Some("host stale"),
            (_, None) => Some("not found on host"),
            _ => None,
        };
        if let Some(why) = why {
            missing
                .push(json!({"host": c.host, "name": c.name, "reason": why, "age_ms": h.and_then(|h| h.age_ms(now))}));
        }
        if let Some((h, x)) = found {
            if why.is_none() {
                parts.push(part(h, x));
            }
            if detail {
                list.push(container_json(st, h, x, now));
            }
        } else if detail {
            list.push(json!({"host": c.host, "name": c.name, "stale": true, "missing": true}));
        }
    }
    let t = totals::totals(&parts);
    let mut v = json!({
        "name": name,
        "containers": a.record.containers,
        "user": a.record.user,
        "scaling": a.record.scaling,
        "weights": a.record.containers.iter().map(|c| (c.key(), json!(a.record.weight(c)))).collect::<Map<String, Value>>(),
        "reporting": parts.len(),
        "stale": !missing.is_empty(),
        "missing": missing,
        "totals": totals_json(&t),
        "power_mw": t[ENERGY].usage,
        "cpu_mc": t[CPU].usage,
        "energy_cap": if a.record.cap_mw.is_some() { energy_json(a, st) } else { Value::Null },
        "energy_budgets": a.record.cap_mw.map(|cap| energy_budgets(a, st, cap)),
    });
    if detail {
        v["container_views"] = Value::Array(list);
    }
    v
}

/// Each container's energy budget: its share of the application's cap, by
/// its power x weight (by weight alone while none draws anything), mW.
fn energy_budgets(a: &AppState, st: &State, cap: u64) -> Map<String, Value> {
    let members: Vec<policies::apps::Member> = a
        .record
        .containers
        .iter()
        .map(|c| {
            let power = st.hosts.get(&c.host).filter(|h| !h.stale).and_then(|h| h.power_of(&c.name)).map_or(0, |x| x.1);
            policies::apps::Member { min: 0, max: cap, alloc: 0, usage: power, unmet: 0, weight: a.record.weight(c) }
        })
        .collect();
    let shares = policies::apps::split(cap, &members);
    a.record.containers.iter().zip(shares).map(|(c, v)| (c.key(), json!(v))).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{
        model,
        state::{HostRecord, Source},
    };

    #[test]
    fn a_hosts_parts_in_one_walk_are_each_containers_own() {
        // Sent out of order: kept by name.
        let stats = r#"{"time_ms": 5, "containers": [
            {"name": "d", "resources": {"cpu": {"usage": 4}}}, {"name": "a", "resources": {"cpu": {"usage": 1}}},
            {"name": "c", "resources": {"cpu": {"usage": 3}}}, {"name": "b", "resources": {"cpu": {"usage": 2}}}]}"#;
        let subs = r#"{"containers": [
            {"name": "z", "cgroup": "/z", "policy": "fast", "status": "active",
             "resources": {"cpu": {"min": 9, "max": 99}}},
            {"name": "d", "cgroup": "/d", "policy": "fast", "status": "active",
             "resources": {"cpu": {"min": 4, "max": 40}}},
            {"name": "b", "cgroup": "/b", "policy": "fast", "status": "active",
             "resources": {"cpu": {"min": 2, "max": 20}}}]}"#;
        let record = HostRecord { url: "http://h".into(), token: None, idle_mw: None, max_mw: None };
        let mut h = HostState::new("h".into(), record, Source::Config);
        h.stats = Some(model::parse_stats(stats.as_bytes()).unwrap());
        h.subscriptions = Some(model::parse_subscriptions(subs.as_bytes()).unwrap());
        let model = policies::energy::PowerModel::try_new(20_000, 80_000).unwrap();
        h.power = crate::energy::host_power(model, Some(2000), None, None, &[1, 2, 3, 4]);
        let parts = parts_of_host(&h);
        let names: Vec<&str> = parts.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        for (n, p) in &parts {
            assert_eq!(Some(*p), part_of(&h, n), "{n}");
        }
        let cpu = |n: &str| parts.iter().find(|(x, _)| *x == n).unwrap().1;
        assert_eq!(
            (cpu("b").bounds[CPU], cpu("d").bounds[CPU], cpu("c").bounds[CPU]),
            (Some((2, 20)), Some((4, 40)), None)
        );
        assert_eq!((cpu("c").readings[CPU].usage, h.power_of("c").map(|p| p.0)), (Some(3), Some(3)));
        assert!(cpu("d").readings[ENERGY].usage > cpu("a").readings[ENERGY].usage);
    }
}
