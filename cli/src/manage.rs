//! `scaler containers | subscribe | set | unsubscribe | events | host`.

use std::io::{BufRead as _, BufReader};

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Map, Value, json};

use scaler_api::wire;

use super::{Agent, human, units};

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_containers(list: &[wire::Subscription]) {
    println!(
        "{:<20} {:<8} {:<8} {:<11} {:>16} {:>16} {:>16}",
        "NAME", "STATUS", "POLICY", "RESOURCE", "MIN..MAX", "CURRENT", "USAGE"
    );
    for c in list {
        for (i, (r, v)) in c.resources.iter().enumerate() {
            let status = c.status.name();
            let (name, status, policy) =
                if i == 0 { (c.name.as_str(), status, c.policy.as_str()) } else { ("", "", "") };
            let r = r.name();
            println!(
                "{name:<20} {status:<8} {policy:<8} {r:<11} {:>16} {:>16} {:>16}",
                format!("{}..{}", human(r, Some(v.min)), human(r, Some(v.max))),
                human(r, v.current),
                human(r, v.usage),
            );
        }
    }
}

pub fn containers(agent: &Agent, name: Option<&str>, json: bool) -> anyhow::Result<()> {
    let list: Vec<wire::Subscription> = match name {
        Some(n) => vec![agent.call_as(Method::GET, &format!("/v1/containers/{n}"), None)?],
        None => agent.call_as::<wire::Subscriptions>(Method::GET, "/v1/containers", None)?.containers,
    };
    if json {
        return match name {
            Some(_) => print_json(&list[0]),
            None => print_json(&wire::Subscriptions { containers: list }),
        };
    }
    print_containers(&list);
    Ok(())
}

/// Per-resource `MIN:MAX` flags of `subscribe`.
#[derive(Debug, Default, clap::Args)]
pub struct Bounds {
    /// CPU bounds, cores or millicores: 100m:2
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory bounds: 64Mi:2Gi
    #[arg(long)]
    pub mem: Option<String>,
    /// Disk read bandwidth bounds (bytes/s): 1Mi:100Mi
    #[arg(long)]
    pub disk_read: Option<String>,
    /// Disk write bandwidth bounds (bytes/s)
    #[arg(long)]
    pub disk_write: Option<String>,
    /// Network receive bandwidth bounds (bytes/s)
    #[arg(long)]
    pub net_rx: Option<String>,
    /// Network transmit bandwidth bounds (bytes/s)
    #[arg(long)]
    pub net_tx: Option<String>,
}

impl Bounds {
    /// `{"cpu": {"min": .., "max": ..}, ...}`.
    pub fn to_json(&self) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        let flags: [(&str, &Option<String>, units::Unit); 6] = [
            ("cpu", &self.cpu, units::cpu),
            ("mem", &self.mem, units::bytes),
            ("disk_read", &self.disk_read, units::bytes),
            ("disk_write", &self.disk_write, units::bytes),
            ("net_rx", &self.net_rx, units::bytes),
            ("net_tx", &self.net_tx, units::bytes),
        ];
        for (r, v, unit) in flags {
            if let Some(v) = v {
                let flag = format!("--{}", r.replace('_', "-"));
                let (min, max) = units::range(&flag, v, unit)?;
                out.insert(r.to_owned(), json!({"min": min, "max": max}));
            }
        }
        if out.is_empty() {
            return Err(
                "name at least one resource to manage: --cpu, --mem, --disk-read, --disk-write, --net-rx or --net-tx"
                    .into(),
            );
        }
        Ok(out)
    }
}

pub struct Subscribe<'a> {
    pub name: &'a str,
    pub cgroup: Option<&'a str>,
    pub policy: Option<&'a str>,
    pub priority: Option<u32>,
    /// Every resource unguarded (observe only).
    pub unguarded: bool,
    pub bounds: &'a Bounds,
}

pub fn subscribe(agent: &Agent, s: &Subscribe, json: bool) -> anyhow::Result<()> {
    let mut body = Map::new();
    body.insert("resources".into(), Value::Object(s.bounds.to_json().map_err(anyhow::Error::msg)?));
    if s.unguarded {
        body.insert("guard".into(), false.into());
    }
    if let Some(c) = s.cgroup {
        body.insert("cgroup".into(), c.into());
    }
    if let Some(p) = s.policy {
        body.insert("policy".into(), p.into());
    }
    if let Some(p) = s.priority {
        body.insert("priority".into(), p.into());
    }
    let v: wire::Subscription =
        agent.call_as(Method::PUT, &format!("/v1/containers/{}", s.name), Some(&Value::Object(body)))?;
    if json {
        return print_json(&v);
    }
    print_containers(&[v]);
    Ok(())
}

pub struct Set<'a> {
    pub min: Option<&'a str>,
    pub max: Option<&'a str>,
    pub guard: Option<bool>,
    pub boundary: Option<u8>,
}

pub fn set(agent: &Agent, name: &str, resource: &str, s: &Set, json: bool) -> anyhow::Result<()> {
    let unit: units::Unit = if resource == "cpu" { units::cpu } else { units::bytes };
    let mut body = Map::new();
    for (flag, key, v) in [("--min", "min", s.min), ("--max", "max", s.max)] {
        if let Some(v) = v {
            body.insert(key.into(), unit(flag, v).map_err(anyhow::Error::msg)?.into());
        }
    }
    if let Some(g) = s.guard {
        body.insert("guard".into(), g.into());
    }
    if let Some(b) = s.boundary {
        body.insert("boundary".into(), b.into());
    }
    let path = format!("/v1/containers/{name}/resources/{resource}");
    let v: wire::Subscription = agent.call_as(Method::PUT, &path, Some(&Value::Object(body)))?;
    if json {
        return print_json(&v);
    }
    print_containers(&[v]);
    Ok(())
}

/// Guards (`true`) or unguards a container's `resources` (all when empty).
pub fn guard(agent: &Agent, name: &str, guard: bool, resources: &[String], json: bool) -> anyhow::Result<()> {
    let mut body = Map::new();
    body.insert("guard".into(), guard.into());
    if !resources.is_empty() {
        body.insert("resources".into(), resources.iter().map(|r| Value::from(r.as_str())).collect());
    }
    let path = format!("/v1/containers/{name}/guard");
    let v: wire::Subscription = agent.call_as(Method::PUT, &path, Some(&Value::Object(body)))?;
    if json {
        return print_json(&v);
    }
    print_containers(&[v]);
    Ok(())
}

pub fn unsubscribe(agent: &Agent, name: &str, restore: bool) -> anyhow::Result<()> {
    let v: wire::Unsubscribed =
        agent.call_as(Method::DELETE, &format!("/v1/containers/{name}?restore={restore}"), None)?;
    println!("unsubscribed {name}{}", if v.restored { " (original limits restored)" } else { "" });
    Ok(())
}

fn print_event(e: &wire::Event, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    let Some(r) = e.resource.map(|r| r.name()) else {
        let who = if e.container.is_empty() { "(agent)" } else { e.container.as_str() };
        println!("{:>14} {:<20} {:<10} {}", e.time_ms, who, "config", e.reason);
        return;
    };
    println!(
        "{:>14} {:<20} {:<10} {:>12} -> {:<12} {}",
        e.time_ms,
        e.container,
        r,
        human(r, e.old),
        human(r, e.new),
        e.reason,
    );
}

pub fn events(agent: &Agent, container: Option<&str>, follow: bool, json: bool) -> anyhow::Result<()> {
    let q = container.map(|c| format!("?container={c}")).unwrap_or_default();
    let v: wire::Events = agent.call_as(Method::GET, &format!("/v1/events{q}"), None)?;
    for e in &v.events {
        print_event(e, json);
    }
    if !follow {
        return Ok(());
    }
    // Server-Sent Events: `data: {...}` lines, one event each.
    let url = format!("{}/v1/events/stream", agent.url.trim_end_matches('/'));
    let tls = crate::client_tls()?;
    let client = reqwest::blocking::Client::builder().use_preconfigured_tls(tls).build()?;
    let resp = client.get(&url).send().with_context(|| format!("GET {url}"))?;
    for line in BufReader::new(resp).lines() {
        let line = line.with_context(|| format!("reading {url}"))?;
        if let Some(data) = line.strip_prefix("data:") {
            let e: wire::Event = serde_json::from_str(data.trim()).with_context(|| format!("bad event from {url}"))?;
            if container.is_none_or(|c| e.container == c) {
                print_event(&e, json);
            }
        }
    }
    Ok(())
}

pub fn host(agent: &Agent, cpu: Option<&str>, mem: Option<&str>, json: bool) -> anyhow::Result<()> {
    let v = if cpu.is_some() || mem.is_some() {
        let mut cap = Map::new();
        if let Some(c) = cpu {
            cap.insert("cpu".into(), units::cpu("--cpu", c).map_err(anyhow::Error::msg)?.into());
        }
        if let Some(m) = mem {
            cap.insert("mem".into(), units::bytes("--mem", m).map_err(anyhow::Error::msg)?.into());
        }
        agent.call_as::<wire::Host>(Method::PUT, "/v1/host", Some(&json!({"capacity": cap})))?
    } else {
        agent.call_as::<wire::Host>(Method::GET, "/v1/host", None)?
    };
    if json {
        return print_json(&v);
    }
    println!("host {}", v.host);
    println!("{:<11} {:>16} {:>16}", "RESOURCE", "CAPACITY", "ALLOCATED");
    for r in policies::Resource::LIMITABLE {
        let n = r.name();
        println!("{n:<11} {:>16} {:>16}", human(n, v.capacity_of(r)), human(n, v.allocated_of(r)));
    }
    println!("host CPU in use: {}", human("cpu", v.usage.cpu));
    Ok(())
}
