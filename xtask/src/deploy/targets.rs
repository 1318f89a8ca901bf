//! Prometheus scrape targets of the deployed agents and aggregator, for
//! Prometheus' file-based service discovery (`file_sd_configs`):
//! `prometheus-targets.json` beside the hosts file.
//!
//! - One entry per agent: its address, its name as the `host` label (the
//!   aggregator's name for it, which its history queries use) and
//!   `__scheme__` (https with `[tls]`).
//! - The aggregator's entry, when deploy installs it: its address, `job`
//!   [`AGGREGATOR_JOB`] (its series are told apart from the agents' by
//!   job) and `__scheme__`. Its `/metrics` carries the energy history the
//!   aggregator's queries read from Prometheus. It has no `host` label:
//!   its own series carry one each.
//!
//! A deploy adds or replaces its entries and keeps the others (`--only`);
//! undeploy removes its own.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

pub const FILE: &str = "prometheus-targets.json";
/// The `job` label of the aggregator's entry.
pub const AGGREGATOR_JOB: &str = "scaler-aggregator";

/// Whose entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// An agent, by its host's name.
    Agent(String),
    Aggregator,
}

impl Owner {
    fn of(e: &Value) -> Option<Owner> {
        let labels = &e["labels"];
        match (labels["host"].as_str(), labels["job"].as_str()) {
            (Some(h), _) => Some(Owner::Agent(h.to_owned())),
            (None, Some(AGGREGATOR_JOB)) => Some(Owner::Aggregator),
            // Someone else's (added by hand).
            _ => None,
        }
    }

    fn sort_key(e: &Value) -> (u8, String) {
        match Owner::of(e) {
            None => (0, String::new()),
            Some(Owner::Aggregator) => (1, String::new()),
            Some(Owner::Agent(h)) => (2, h),
        }
    }
}

/// `existing` with the entries of `deployed` (owner, URL) put in and
/// those of `removed` taken out: hand-added entries first, then the
/// aggregator's, then the agents' by host.
fn merge(existing: &Value, deployed: &[(Owner, String)], removed: &[Owner]) -> anyhow::Result<Value> {
    let mut out: Vec<Value> = existing
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| Owner::of(e).is_none_or(|o| !removed.contains(&o) && !deployed.iter().any(|(d, _)| *d == o)))
        .cloned()
        .collect();
    for (owner, url) in deployed {
        // Deploy's own URLs: SCHEME://ADDRESS:PORT.
        let (scheme, addr) = url.split_once("://").with_context(|| format!("{owner:?}: URL {url:?}"))?;
        let addr = addr.trim_end_matches('/');
        let labels = match owner {
            Owner::Agent(host) => json!({"host": host, "__scheme__": scheme}),
            Owner::Aggregator => json!({"job": AGGREGATOR_JOB, "__scheme__": scheme}),
        };
        out.push(json!({"targets": [addr], "labels": labels}));
    }
    out.sort_by_key(Owner::sort_key);
    Ok(Value::Array(out))
}

/// Whether an agent URL is on its host's loopback (reachable by a
/// Prometheus on that host only).
pub fn on_loopback(url: &str) -> bool {
    let addr = url.split_once("://").map_or(url, |(_, a)| a).trim_end_matches('/');
    let host = match addr.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
        None => addr.rsplit_once(':').map_or(addr, |(h, _)| h),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Updates the file at `path` (created when absent).
pub fn update(path: &Path, deployed: &[(Owner, String)], removed: &[Owner]) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("{} is not JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Array(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let v = merge(&existing, deployed, removed)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    // Renamed into place: Prometheus never reads half a file.
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deploys_add_and_replace_their_hosts_and_undeploy_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let d = |n: &str, u: &str| (Owner::Agent(n.to_owned()), u.to_owned());
        let gone = |n: &str| Owner::Agent(n.to_owned());
        update(&path, &[d("node2", "https://10.0.0.2:8470"), d("node1", "http://10.0.0.1:9000")], &[]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            json!([{"targets": ["10.0.0.1:9000"], "labels": {"host": "node1", "__scheme__": "http"}},
                   {"targets": ["10.0.0.2:8470"], "labels": {"host": "node2", "__scheme__": "https"}}])
        );
        // --only node1, moved; then node2 undeployed.
        update(&path, &[d("node1", "http://10.0.0.9:8470")], &[]).unwrap();
        update(&path, &[], &[gone("node2")]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v, json!([{"targets": ["10.0.0.9:8470"], "labels": {"host": "node1", "__scheme__": "http"}}]));
        // Hand-added entries (no host label) stay.
        let mine = json!({"targets": ["10.9.9.9:9100"], "labels": {"job": "node"}});
        std::fs::write(&path, json!([mine.clone()]).to_string()).unwrap();
        update(&path, &[d("node1", "http://10.0.0.1:8470")], &[gone("node2")]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(v.as_array().unwrap().contains(&mine) && v.as_array().unwrap().len() == 2, "{v}");
        // The aggregator's entry: its own job, no host label; replaced by
        // the next deploy of it, kept by one of agents only, removed by
        // its undeploy.
        let agg = |u: &str| (Owner::Aggregator, u.to_owned());
        update(&path, &[agg("https://10.0.0.1:8471"), d("node2", "https://10.0.0.2:8470")], &[]).unwrap();
        update(&path, &[agg("https://10.0.0.5:8471")], &[]).unwrap();
        update(&path, &[d("node2", "https://10.0.0.3:8470")], &[]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            json!([mine,
                   {"targets": ["10.0.0.5:8471"], "labels": {"job": "scaler-aggregator", "__scheme__": "https"}},
                   {"targets": ["10.0.0.1:8470"], "labels": {"host": "node1", "__scheme__": "http"}},
                   {"targets": ["10.0.0.3:8470"], "labels": {"host": "node2", "__scheme__": "https"}}])
        );
        update(&path, &[], &[Owner::Aggregator, gone("node1"), gone("node2")]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v, json!([mine]));
        for (u, l) in [
            ("http://127.0.0.1:8470", true),
            ("https://[::1]:8470", true),
            ("http://[::1]", true),
            ("http://localhost:1", true),
            ("http://10.0.0.1:8470", false),
            ("http://node1.example:8470", false),
        ] {
            assert_eq!(on_loopback(u), l, "{u}");
        }
        std::fs::write(&path, "not json").unwrap();
        assert!(update(&path, &[], &[]).unwrap_err().to_string().contains(FILE));
    }
}
