//! `scaler settings | policy | host-policy | set-limit`: what the operator
//! changes on a running agent.

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Agent, human, units};

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `--set a.b.c=VALUE` flags as one nested object; VALUE is JSON when it
/// parses as JSON (`1000`, `false`, `{"fixed": 1000}`), else a string.
pub fn assignments(flags: &[String]) -> Result<Value, String> {
    let mut root = Value::Object(Map::new());
    for f in flags {
        let (path, raw) =
            f.split_once('=').ok_or_else(|| format!("--set: {f:?} must be PATH=VALUE (e.g. rules.cpu.up.events=3)"))?;
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!("--set: {path:?} is not a dotted path of parameter names"));
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        let mut at = &mut root;
        let keys: Vec<&str> = path.split('.').collect();
        for (i, k) in keys.iter().enumerate() {
            let obj = match at {
                Value::Object(o) => o,
                _ => return Err(format!("--set: {path:?} sets inside a value set by another --set")),
            };
            if i + 1 == keys.len() {
                obj.insert((*k).to_owned(), value.clone());
                break;
            }
            at = obj.entry((*k).to_owned()).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    Ok(root)
}

/// `scaler settings`: shows the agent's timing and active switch, or
/// changes them.
pub fn settings(
    agent: &Agent,
    tick_ms: Option<u64>,
    discovery_interval_ms: Option<u64>,
    active: Option<bool>,
    json: bool,
) -> anyhow::Result<()> {
    let mut body = Map::new();
    for (k, v) in [("tick_ms", tick_ms), ("discovery_interval_ms", discovery_interval_ms)] {
        if let Some(v) = v {
            body.insert(k.into(), v.into());
        }
    }
    if let Some(a) = active {
        body.insert("active".into(), a.into());
    }
    let v = if body.is_empty() {
        agent.call(Method::GET, "/v1/agent", None)?
    } else {
        agent.call(Method::PUT, "/v1/agent", Some(&Value::Object(body)))?
    };
    if json {
        return print_json(&v);
    }
    println!(
        "tick {} ms, discovery every {} ms, {}",
        v["tick_ms"],
        v["discovery_interval_ms"],
        if v["active"] == json!(true) { "active" } else { "inactive (no limit is changed)" }
    );
    Ok(())
}

fn print_policy(v: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    println!("{} (parameters from {}):", v["name"].as_str().unwrap_or("?"), v["source"].as_str().unwrap_or("?"));
    println!("{}", serde_json::to_string_pretty(&v["config"])?);
    Ok(())
}

/// `scaler policy NAME [--use POLICY] [--set PATH=VALUE]...`.
pub fn policy(agent: &Agent, name: &str, use_policy: Option<&str>, set: &[String], json: bool) -> anyhow::Result<()> {
    let mut body = assignments(set).map_err(anyhow::Error::msg)?;
    if let (Some(p), Value::Object(o)) = (use_policy, &mut body) {
        o.insert("name".into(), p.into());
    }
    let path = format!("/v1/containers/{name}/policy");
    let v = if set.is_empty() && use_policy.is_none() {
        agent.call(Method::GET, &path, None)?
    } else {
        agent.call(Method::PUT, &path, Some(&body))?
    };
    print_policy(&v, json)
}

/// `scaler host-policy PRESET [--set PATH=VALUE]... [--reset]`.
pub fn host_policy(agent: &Agent, preset: &str, set: &[String], reset: bool, json: bool) -> anyhow::Result<()> {
    let path = format!("/v1/policies/{preset}");
    let v = if reset {
        agent.call(Method::PUT, &path, Some(&Value::Null))?
    } else if set.is_empty() {
        agent.call(Method::GET, &path, None)?
    } else {
        agent.call(Method::PUT, &path, Some(&assignments(set).map_err(anyhow::Error::msg)?))?
    };
    print_policy(&v, json)
}

/// `scaler set-limit NAME --cpu 500m --mem none ...`: limits without a
/// policy (`none` removes one).
pub fn set_limit(agent: &Agent, name: &str, flags: &[(&str, Option<&str>)], json: bool) -> anyhow::Result<()> {
    let mut body = Map::new();
    for &(r, v) in flags {
        let Some(v) = v else { continue };
        let flag = format!("--{}", r.replace('_', "-"));
        let unit: units::Unit = if r == "cpu" { units::cpu } else { units::bytes };
        let value = if v == "none" { Value::Null } else { unit(&flag, v).map_err(anyhow::Error::msg)?.into() };
        body.insert(r.to_owned(), value);
    }
    if body.is_empty() {
        anyhow::bail!("name at least one limit: --cpu, --mem, --disk-read, --disk-write, --net-rx or --net-tx");
    }
    let v = agent.call(Method::PUT, &format!("/v1/containers/{name}/limits"), Some(&Value::Object(body)))?;
    if json {
        return print_json(&v);
    }
    if let Some(limits) = v["limits"].as_object() {
        for (r, l) in limits {
            println!("{name} {r} {}", if l.is_null() { "unlimited".to_owned() } else { human(r, l.as_u64()) });
        }
    }
    Ok(())
}

/// `scaler topology`: the host's CPUs and the containers placed on each.
pub fn topology(agent: &Agent, json: bool) -> anyhow::Result<()> {
    let v = agent.call(Method::GET, "/v1/host/topology", None)?;
    if json {
        return print_json(&v);
    }
    println!("{:>4} {:>5} {:>7} {:<10} CONTAINERS", "CPU", "CORE", "SOCKET", "SIBLINGS");
    for c in v["cpus"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let list = |k: &str| -> String {
            c[k].as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        };
        println!("{:>4} {:>5} {:>7} {:<10} {}", c["cpu"], c["core"], c["socket"], list("siblings"), list("containers"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn assignments_nest_and_parse_json_values() {
        let v = assignments(&[
            "rules.cpu.up.amount={\"fixed\": 1000}".into(),
            "rules.cpu.up.events=3".into(),
            "rules.cpu.down.active=false".into(),
            "note=text".into(),
        ])
        .unwrap();
        assert_eq!(
            v,
            json!({"rules": {"cpu": {"up": {"amount": {"fixed": 1000}, "events": 3}, "down": {"active": false}}},
                   "note": "text"})
        );
        assert!(assignments(&["rules.cpu".into()]).unwrap_err().contains("PATH=VALUE"));
        assert!(assignments(&["a..b=1".into()]).unwrap_err().contains("dotted path"));
        assert!(assignments(&["a=1".into(), "a.b=2".into()]).unwrap_err().contains("another --set"));
    }
}
