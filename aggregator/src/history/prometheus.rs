//! History read from Prometheus (`[history] prometheus = URL`): what it
//! scraped off the agents' `/metrics` (`scaler_container_usage` and
//! `scaler_container_limit`, each value stamped with the agent's own sample
//! time), read back through its HTTP API.
//!
//! - A container over a window of up to [`RAW_MAX_MS`]: the raw samples
//!   (a range selector), so each point is one the agent measured, at the
//!   time it measured it: the agent's `/v1/stats/{name}/history` has the
//!   same values at the same `time_ms`.
//! - Longer windows, and applications (sums across hosts whose ticks do not
//!   line up): `query_range` with about [`POINTS`] steps; a container's
//!   point is the mean over its step, an application's the sum of its
//!   containers' latest values at each step.
//! - Energy (power, mW) is the aggregator's own: what Prometheus scraped
//!   off the replicas' `/metrics` (`scaler_cluster_container_usage` and
//!   `scaler_cluster_app_usage` with `resource="energy"`, an application's
//!   cap as `scaler_cluster_app_power_cap_mw`), at each step its latest
//!   value (the largest, where two replicas exported it while a host or
//!   the lead moved between them).

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use super::QueryPoint;
use crate::{
    model::{AGENT_RESOURCES, ENERGY, Readings, resource_index},
    state::ContainerRef,
};

/// Raw samples up to an hour (3,600 points at a one-second scrape).
pub const RAW_MAX_MS: u64 = 3_600_000;
/// Steps of a `query_range`.
pub const POINTS: u64 = 720;

pub struct Prometheus {
    url: String,
    http: reqwest::Client,
}

/// A label value inside a PromQL string literal.
fn quote(v: &str) -> String {
    format!("\"{}\"", scaler_api::names::escape_label(v))
}

/// The series of `containers` (one `host`/`container` pair each), each
/// as `func(SERIES[range])` when given.
fn selectors(metric: &str, containers: &[ContainerRef], over: Option<(&str, u64)>) -> String {
    let parts: Vec<String> = containers
        .iter()
        .map(|c| {
            let series = format!("{metric}{{host={},container={}}}", quote(&c.host), quote(&c.name));
            match over {
                Some((func, ms)) => format!("{func}({series}[{ms}ms])"),
                None => series,
            }
        })
        .collect();
    parts.join(" or ")
}

/// Prometheus' time (float seconds) in ms.
fn ms(v: &Value) -> Option<u64> {
    v.as_f64().filter(|t| *t >= 0.0).map(|t| (t * 1000.0).round() as u64)
}

/// Whose energy: a container's or an application's.
pub enum Energy<'a> {
    Container(&'a ContainerRef),
    App(&'a str),
}

/// The step of a `query_range` over `[since, until]`: about [`POINTS`]
/// of them, at least a second.
fn step_of(since: u64, until: u64) -> u64 {
    (until.saturating_sub(since) / POINTS).max(1000)
}

/// `[[time, "value"], ...]` of one agent series into `points`, as usage or
/// limit of its `resource` label.
fn fold(points: &mut BTreeMap<u64, Readings>, series: &Value, limit: bool) {
    let Some(i) = series["metric"]["resource"].as_str().and_then(resource_index).filter(|i| *i < AGENT_RESOURCES)
    else {
        return;
    };
    fold_as(points, series, i, limit);
}

/// `[[time, "value"], ...]` of one series into `points`, as usage or limit
/// of resource `i`.
fn fold_as(points: &mut BTreeMap<u64, Readings>, series: &Value, i: usize, limit: bool) {
    for pair in series["values"].as_array().into_iter().flatten() {
        let (Some(t), Some(v)) = (ms(&pair[0]), pair[1].as_str().and_then(|v| v.parse::<f64>().ok())) else {
            continue;
        };
        if !v.is_finite() || v < 0.0 {
            continue;
        }
        let r = &mut points.entry(t).or_default()[i];
        let v = Some(v.round() as u64);
        if limit { r.current = v } else { r.usage = v }
    }
}

/// Points in time order; each one's step is the gap to the next (the last
/// takes the one before it).
fn finish(points: BTreeMap<u64, Readings>, step: Option<u64>) -> Vec<QueryPoint> {
    let times: Vec<u64> = points.keys().copied().collect();
    points
        .into_iter()
        .enumerate()
        .map(|(k, (time_ms, readings))| {
            let gap = match (times.get(k + 1), k.checked_sub(1).and_then(|p| times.get(p))) {
                (Some(next), _) => next - time_ms,
                (None, Some(prev)) => time_ms - prev,
                (None, None) => 0,
            };
            QueryPoint { time_ms, step_ms: step.unwrap_or(gap), readings }
        })
        .collect()
}

impl Prometheus {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Self { url: url.trim_end_matches('/').to_owned(), http })
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .await
            .map_err(|e| format!("prometheus {}: {e}", self.url))?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| format!("prometheus {}: {status}: {e}", self.url))?;
        if v["status"] != "success" {
            return Err(format!("prometheus {}: {status}: {}", self.url, v["error"].as_str().unwrap_or("no data")));
        }
        Ok(v["data"]["result"].clone())
    }

    /// One container's history over `[since, until]` (ms).
    pub async fn container(&self, c: &ContainerRef, since: u64, until: u64) -> Result<Vec<QueryPoint>, String> {
        let window = until.saturating_sub(since);
        if window > RAW_MAX_MS {
            return self.ranged(std::slice::from_ref(c), since, until, false).await;
        }
        let mut points = BTreeMap::new();
        for (metric, limit) in [("scaler_container_usage", false), ("scaler_container_limit", true)] {
            let q = format!("{}[{}ms]", selectors(metric, std::slice::from_ref(c), None), window.max(1));
            let result =
                self.get("/api/v1/query", &[("query", q), ("time", format!("{:.3}", until as f64 / 1e3))]).await?;
            for s in result.as_array().into_iter().flatten() {
                fold(&mut points, s, limit);
            }
        }
        points.retain(|t, _| *t >= since);
        Ok(finish(points, None))
    }

    /// An application's history: its containers' sum at each step.
    pub async fn app(&self, containers: &[ContainerRef], since: u64, until: u64) -> Result<Vec<QueryPoint>, String> {
        if containers.is_empty() {
            return Ok(Vec::new());
        }
        self.ranged(containers, since, until, true).await
    }

    /// `query_range` over about [`POINTS`] steps (at least a second):
    /// summed across `containers` when `sum`, else each step's mean.
    async fn ranged(
        &self,
        containers: &[ContainerRef],
        since: u64,
        until: u64,
        sum: bool,
    ) -> Result<Vec<QueryPoint>, String> {
        let step = step_of(since, until);
        let mut points = BTreeMap::new();
        for (metric, limit) in [("scaler_container_usage", false), ("scaler_container_limit", true)] {
            let q = match sum {
                true => {
                    format!("sum by (resource) ({})", selectors(metric, containers, Some(("last_over_time", step))))
                }
                false => selectors(metric, containers, Some(("avg_over_time", step))),
            };
            for s in self.range(q, since, until, step).await?.as_array().into_iter().flatten() {
                fold(&mut points, s, limit);
            }
        }
        Ok(finish(points, Some(step)))
    }

    /// `query_range` of `q` over `[since, until]` by `step` (ms).
    async fn range(&self, q: String, since: u64, until: u64, step: u64) -> Result<Value, String> {
        let params = [
            ("query", q),
            ("start", format!("{:.3}", since as f64 / 1e3)),
            ("end", format!("{:.3}", until as f64 / 1e3)),
            ("step", format!("{:.3}", step as f64 / 1e3)),
        ];
        self.get("/api/v1/query_range", &params).await
    }

    /// Energy over `[since, until]`: the aggregator's own series, as
    /// Prometheus scraped them off the replicas (empty when it does not
    /// scrape them).
    pub async fn energy(&self, of: Energy<'_>, since: u64, until: u64) -> Result<Vec<QueryPoint>, String> {
        let step = step_of(since, until);
        let (usage, cap) = match of {
            Energy::Container(c) => (
                format!(
                    "scaler_cluster_container_usage{{host={},container={},resource=\"energy\"}}",
                    quote(&c.host),
                    quote(&c.name)
                ),
                None,
            ),
            Energy::App(a) => (
                format!("scaler_cluster_app_usage{{app={},resource=\"energy\"}}", quote(a)),
                Some(format!("scaler_cluster_app_power_cap_mw{{app={}}}", quote(a))),
            ),
        };
        let mut points = BTreeMap::new();
        for (series, limit) in [(Some(usage), false), (cap, true)] {
            let Some(series) = series else { continue };
            let q = format!("max(last_over_time({series}[{step}ms]))");
            for s in self.range(q, since, until, step).await?.as_array().into_iter().flatten() {
                fold_as(&mut points, s, ENERGY, limit);
            }
        }
        Ok(finish(points, Some(step)))
    }
}

/// Gives each of `points` the energy of the latest of `energy` (time
/// order) at or before it, unless that one is older than two of its steps
/// (at least 2 s): the agents' points and the aggregator's energy are
/// stamped at different times.
pub fn fill_energy(points: &mut [QueryPoint], energy: &[QueryPoint]) {
    let mut at = 0;
    for p in points.iter_mut() {
        while energy.get(at + 1).is_some_and(|e| e.time_ms <= p.time_ms) {
            at += 1;
        }
        let Some(e) = energy.get(at).filter(|e| e.time_ms <= p.time_ms) else { continue };
        if p.time_ms - e.time_ms <= e.step_ms.max(1000) * 2 {
            p.readings[ENERGY] = e.readings[ENERGY];
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn series_become_points_at_their_own_times() {
        let c = [ContainerRef { host: "a".into(), name: "we\"b".into() }];
        assert_eq!(selectors("m", &c, None), "m{host=\"a\",container=\"we\\\"b\"}");
        assert_eq!(selectors("m", &c[..0], None), "");
        let two = [c[0].clone(), ContainerRef { host: "b".into(), name: "x".into() }];
        assert_eq!(
            selectors("m", &two, Some(("f", 5))),
            "f(m{host=\"a\",container=\"we\\\"b\"}[5ms]) or f(m{host=\"b\",container=\"x\"}[5ms])"
        );
        let mut points = BTreeMap::new();
        let usage = json!({"metric": {"resource": "cpu"}, "values": [[1700000000.2, "504"], [1700000001.2, "498"]]});
        let limit = json!({"metric": {"resource": "cpu"}, "values": [[1700000000.2, "500"]]});
        let energy = json!({"metric": {"resource": "energy"}, "values": [[1700000000.2, "9"]]});
        let bad = json!({"metric": {"resource": "mem"}, "values": [[1700000000.2, "NaN"], ["x", "1"]]});
        for (s, l) in [(&usage, false), (&limit, true), (&energy, false), (&bad, true)] {
            fold(&mut points, s, l);
        }
        let p = finish(points, None);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].time_ms, p[0].step_ms), (1_700_000_000_200, 1000));
        assert_eq!((p[0].readings[0].usage, p[0].readings[0].current), (Some(504), Some(500)));
        assert_eq!((p[1].readings[0].usage, p[1].readings[0].current), (Some(498), None));
        assert_eq!(p[1].step_ms, 1000);
        assert!(p.iter().all(|p| p.readings[1..].iter().all(|r| r.usage.is_none() && r.current.is_none())));
    }

    #[test]
    fn energy_fills_the_agents_points_from_the_latest_before_each() {
        let at = |t: u64, step: u64, e: Option<u64>| {
            let mut readings = Readings::default();
            readings[ENERGY].usage = e;
            QueryPoint { time_ms: t, step_ms: step, readings }
        };
        let mut points: Vec<QueryPoint> = [500, 1_200, 2_100, 2_900, 9_000].iter().map(|&t| at(t, 200, None)).collect();
        let energy = [at(1_000, 1000, Some(10)), at(2_000, 1000, Some(20)), at(3_000, 1000, Some(30))];
        fill_energy(&mut points, &energy);
        let got: Vec<Option<u64>> = points.iter().map(|p| p.readings[ENERGY].usage).collect();
        // Before the first: none; 9,000 is 6 s after the last (steps of 1 s).
        assert_eq!(got, [None, Some(10), Some(20), Some(20), None]);
        fill_energy(&mut points, &[]);
        assert_eq!(points[1].readings[ENERGY].usage, Some(10), "nothing to fill from: left as it was");
    }
}
