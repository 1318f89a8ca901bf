//! Prometheus scrape targets of the deployed agents, for Prometheus'
//! file-based service discovery (`file_sd_configs`): `prometheus-targets.json`
//! beside the hosts file, one entry per agent with its address, its name as
//! the `host` label (the aggregator's name for it, which its history queries
//! use) and `__scheme__` (https with `[tls]`). A deploy adds or replaces
//! its hosts' entries and keeps the others (`--only`); undeploy removes its
//! hosts'.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

pub const FILE: &str = "prometheus-targets.json";

/// `existing` with the entries of `deployed` (name, agent URL) put in and
/// those of `removed` taken out, sorted by host.
fn merge(existing: &Value, deployed: &[(String, String)], removed: &[String]) -> anyhow::Result<Value> {
    let name = |e: &Value| e["labels"]["host"].as_str().map(str::to_owned);
    let mut out: Vec<Value> = existing
        .as_array()
        .into_iter()
        .flatten()
        // Entries without a host label are someone else's: kept.
        .filter(|e| name(e).is_none_or(|n| !removed.contains(&n) && !deployed.iter().any(|(d, _)| *d == n)))
        .cloned()
        .collect();
    for (host, url) in deployed {
        // Deploy's own URLs: SCHEME://ADDRESS:PORT.
        let (scheme, addr) = url.split_once("://").with_context(|| format!("host {host}: agent URL {url:?}"))?;
        let addr = addr.trim_end_matches('/');
        out.push(json!({"targets": [addr], "labels": {"host": host, "__scheme__": scheme}}));
    }
    out.sort_by_key(|e| name(e).unwrap_or_default());
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
pub fn update(path: &Path, deployed: &[(String, String)], removed: &[String]) -> anyhow::Result<()> {
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
        let d = |n: &str, u: &str| (n.to_owned(), u.to_owned());
        update(&path, &[d("node2", "https://10.0.0.2:8470"), d("node1", "http://10.0.0.1:9000")], &[]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            json!([{"targets": ["10.0.0.1:9000"], "labels": {"host": "node1", "__scheme__": "http"}},
                   {"targets": ["10.0.0.2:8470"], "labels": {"host": "node2", "__scheme__": "https"}}])
        );
        // --only node1, moved; then node2 undeployed.
        update(&path, &[d("node1", "http://10.0.0.9:8470")], &[]).unwrap();
        update(&path, &[], &["node2".to_owned()]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v, json!([{"targets": ["10.0.0.9:8470"], "labels": {"host": "node1", "__scheme__": "http"}}]));
        // Hand-added entries (no host label) stay.
        let mine = json!({"targets": ["10.9.9.9:9100"], "labels": {"job": "node"}});
        std::fs::write(&path, json!([mine.clone()]).to_string()).unwrap();
        update(&path, &[d("node1", "http://10.0.0.1:8470")], &["node2".to_owned()]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(v.as_array().unwrap().contains(&mine) && v.as_array().unwrap().len() == 2, "{v}");
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
