//! A small etcd v3 client over etcd's own JSON gateway (`POST /v3/kv/range`,
//! `/v3/kv/put`, `/v3/kv/deleterange`, `/v3/kv/txn`, `/v3/lease/*`), on the
//! HTTP client the aggregator already has: no gRPC stack. Keys and values
//! travel base64-encoded, 64-bit integers as JSON strings.
//!
//! Every call goes to the member that answered last; a member that is down,
//! times out or says it has no leader is skipped for the next, round the
//! list, until `timeout` has passed: a cluster that loses a member (its
//! leader included) is used through the others. One attempt gets a quarter
//! of `timeout`: a follower without a leader holds a request until its
//! own timeout, and the election that ends it takes about a second.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd: no member answered within {timeout_ms} ms (last: {last})")]
    Unavailable { timeout_ms: u64, last: String },
    #[error("etcd {endpoint}{path}: {status}: {body}")]
    Refused { endpoint: String, path: &'static str, status: u16, body: String },
    #[error("etcd {path}: unexpected answer: {why}")]
    Garbage { path: &'static str, why: String },
}

/// A key and its value.
pub type Kv = (String, Vec<u8>);

/// A key as [`Etcd::range_changed`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedKv {
    pub key: String,
    pub value: Vec<u8>,
    /// Revisions of its creation and of its last change.
    pub created: i64,
    pub modified: i64,
}

/// What [`Etcd::range_changed`] read: at which revision, the keys, and
/// how many keys the prefix holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    pub revision: i64,
    pub kvs: Vec<ChangedKv>,
    pub count: i64,
}

pub struct Etcd {
    endpoints: Vec<String>,
    http: reqwest::Client,
    timeout: Duration,
    /// Index of the member that answered last.
    current: AtomicUsize,
}

/// An etcd integer (a JSON string, or absent for 0).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

impl Etcd {
    /// A client of the cluster at `endpoints` (`http://HOST:PORT`, or
    /// `https://` with `tls`).
    pub fn new(endpoints: Vec<String>, timeout: Duration, tls: Option<rustls::ClientConfig>) -> Result<Self, String> {
        if endpoints.is_empty() {
            return Err("give at least one etcd endpoint".into());
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_millis(500)))
            .pool_max_idle_per_host(2);
        if let Some(tls) = tls {
            b = b.use_preconfigured_tls(tls);
        }
        let http = b.build().map_err(|e| format!("building the etcd client: {e}"))?;
        Ok(Self { endpoints, http, timeout, current: AtomicUsize::new(0) })
    }

    /// A client of the cluster `[store]` names, with its timeout and TLS.
    pub fn from_config(store: &super::config::StoreConfig) -> Result<Self, String> {
        Self::new(store.endpoints(), Duration::from_millis(store.timeout_ms), store.client_tls()?)
    }

    /// One gateway call, to the member that answered last, then the others.
    async fn call(&self, path: &'static str, body: Value) -> Result<Value, EtcdError> {
        let start = Instant::now();
        let n = self.endpoints.len();
        let mut i = self.current.load(Ordering::Relaxed) % n;
        let mut last;
        let mut pause = Duration::from_millis(20);
        loop {
            let endpoint = &self.endpoints[i];
            let left = self.timeout.saturating_sub(start.elapsed());
            let attempt = (self.timeout / 4).max(Duration::from_millis(100)).min(left);
            match self.http.post(format!("{endpoint}{path}")).timeout(attempt).json(&body).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    if status < 300 {
                        self.current.store(i, Ordering::Relaxed);
                        return serde_json::from_str(&text)
                            .map_err(|e| EtcdError::Garbage { path, why: format!("{e}: {text}") });
                    }
                    // Unavailable (no leader, leader changed, stopping):
                    // another member may do. Anything else is our request.
                    if status < 500 && !text.contains("leader") {
                        return Err(EtcdError::Refused { endpoint: endpoint.clone(), path, status, body: text });
                    }
                    last = format!("{endpoint}: {status} {text}");
                }
                Err(e) => last = format!("{endpoint}: {e}"),
            }
            if start.elapsed() >= self.timeout {
                return Err(EtcdError::Unavailable { timeout_ms: self.timeout.as_millis() as u64, last });
            }
            i = (i + 1) % n;
            if i == self.current.load(Ordering::Relaxed) % n {
                // Every member tried: give an election time to finish.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(300));
            }
        }
    }

    /// Every key under `prefix` with its value, the store's revision and
    /// the newest key's modification revision.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<Kv>, i64), EtcdError> {
        let r = self.range_changed(prefix, 0).await?;
        let newest = r.kvs.iter().map(|k| k.modified).max().unwrap_or(0);
        Ok((r.revision, r.kvs.into_iter().map(|k| (k.key, k.value)).collect(), newest))
    }

    /// The keys under `prefix` modified at revision `since` or later (all
    /// with 0), with how many keys the prefix holds in all.
    pub async fn range_changed(&self, prefix: &str, since: i64) -> Result<Changed, EtcdError> {
        let mut body = json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))});
        if since > 0 {
            body["min_mod_revision"] = json!(since.to_string());
        }
        let v = self.call("/v3/kv/range", body).await?;
        let decode = |s: &Value| {
            B64.decode(s.as_str().unwrap_or_default())
                .map_err(|e| EtcdError::Garbage { path: "/v3/kv/range", why: e.to_string() })
        };
        let mut kvs = Vec::new();
        for kv in v["kvs"].as_array().into_iter().flatten() {
            kvs.push(ChangedKv {
                key: String::from_utf8_lossy(&decode(&kv["key"])?).into_owned(),
                value: decode(&kv["value"])?,
                created: int(&kv["create_revision"]),
                modified: int(&kv["mod_revision"]),
            });
        }
        // `count` is the prefix's, whatever the revision filter.
        Ok(Changed { revision: int(&v["header"]["revision"]), kvs, count: int(&v["count"]) })
    }

    /// What changes whenever a key under `prefix` is created, changed or
    /// removed: the newest key's modification revision and how many keys
    /// there are (one key's name read, no value).
    pub async fn version(&self, prefix: &str) -> Result<(i64, i64), EtcdError> {
        let body = json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)), "limit": "1",
                          "sort_order": "DESCEND", "sort_target": "MOD", "keys_only": true});
        let v = self.call("/v3/kv/range", body).await?;
        Ok((v["kvs"].get(0).map_or(0, |kv| int(&kv["mod_revision"])), int(&v["count"])))
    }

    /// Whether a key under `prefix` was last modified between revisions
    /// `from` and `to` (inclusive, `from <= to`), and how many keys there
    /// are. One key's name at most comes back; etcd scans the prefix's
    /// keys (not their values) for it.
    pub async fn changed_between(&self, prefix: &str, from: i64, to: i64) -> Result<(bool, i64), EtcdError> {
        // etcd filters by revision after the limit is lifted; `count` is
        // the prefix's, unfiltered (checked against etcd 3.4 and by the
        // e2e test of a registration burst).
        let body = json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)), "limit": "1",
                          "keys_only": true, "min_mod_revision": from.to_string(), "max_mod_revision": to.to_string()});
        let v = self.call("/v3/kv/range", body).await?;
        Ok((v["kvs"].as_array().is_some_and(|k| !k.is_empty()), int(&v["count"])))
    }

    /// Sets `key`, attached to `lease` if given; the revision it made.
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64, EtcdError> {
        let mut body = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        if let Some(l) = lease {
            body["lease"] = json!(l.to_string());
        }
        let v = self.call("/v3/kv/put", body).await?;
        Ok(int(&v["header"]["revision"]))
    }

    /// Sets `key` (no lease): the revision it made and whether the key is
    /// new.
    pub async fn put_counting(&self, key: &str, value: &[u8]) -> Result<(i64, bool), EtcdError> {
        let body = json!({"key": b64(key.as_bytes()), "value": b64(value), "prev_kv": true});
        let v = self.call("/v3/kv/put", body).await?;
        Ok((int(&v["header"]["revision"]), v["prev_kv"].is_null()))
    }

    /// Removes `key`; the revision and whether it was there.
    pub async fn delete(&self, key: &str) -> Result<(i64, bool), EtcdError> {
        let v = self.call("/v3/kv/deleterange", json!({"key": b64(key.as_bytes())})).await?;
        Ok((int(&v["header"]["revision"]), int(&v["deleted"]) > 0))
    }

    /// Creates `key` only if it does not exist (attached to `lease`):
    /// whether it was created.
    pub async fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<bool, EtcdError> {
        let k = b64(key.as_bytes());
        let mut put = json!({"key": k, "value": b64(value)});
        if let Some(l) = lease {
            put["lease"] = json!(l.to_string());
        }
        let body = json!({
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": put}],
        });
        let v = self.call("/v3/kv/txn", body).await?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// Removes `key` only if its value is `value`: whether it did.
    pub async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, EtcdError> {
        let k = b64(key.as_bytes());
        let body = json!({
            "compare": [{"key": k, "target": "VALUE", "result": "EQUAL", "value": b64(value)}],
            "success": [{"request_delete_range": {"key": k}}],
        });
        let v = self.call("/v3/kv/txn", body).await?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// A new lease of `ttl_s` seconds: its id.
    pub async fn grant(&self, ttl_s: u64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/grant", json!({"TTL": ttl_s.to_string()})).await?;
        match int(&v["ID"]) {
            0 => Err(EtcdError::Garbage { path: "/v3/lease/grant", why: format!("no lease id: {v}") }),
            id => Ok(id),
        }
    }

    /// Renews `lease`: the seconds it has left (0: it had expired, and
    /// every key attached to it is gone).
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/keepalive", json!({"ID": lease.to_string()})).await?;
        Ok(int(&v["result"]["TTL"]))
    }

    /// Ends `lease` now, removing the keys attached to it.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({"ID": lease.to_string()})).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_end("/scaler/"), b"/scaler0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
    }
}
