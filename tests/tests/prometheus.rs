//! Issue 15, history part: a real Prometheus scrapes a real agent (targets
//! in a file_sd file, as `cargo xtask deploy` writes them), and the
//! aggregator's history of a container comes from Prometheus with the same
//! values at the same times as the agent's own `/history`; an application's
//! is its containers' sum; energy comes from the aggregator's own series,
//! which Prometheus scrapes off it too; with Prometheus gone, the embedded
//! history answers and says why.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use tests::{Agent, Lxc, aggregator::Aggregator, prometheus::Prometheus, require_root, wait_for};

#[test]
fn a_containers_history_from_prometheus_is_the_agents_own() {
    require_root();
    let mut c = Lxc::start();
    let mut d = Lxc::start();
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(&format!("[agent]\nstate_dir = \"{}\"\n", state.path().display()));
    agent.wait_container(&c.name);
    agent.wait_container(&d.name);
    // Longer than the wait for points below and the 20 s window after it.
    c.spawn(&["timeout", "90", "stress-ng", "--cpu", "1", "--cpu-load", "40", "--timeout", "85s", "--quiet"]);
    d.spawn(&["timeout", "90", "stress-ng", "--cpu", "1", "--cpu-load", "30", "--timeout", "85s", "--quiet"]);

    // Scrape targets as deploy writes them: the aggregator's name for the
    // host as the `host` label.
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.json");
    let addr = agent.url().trim_start_matches("http://").to_owned();
    std::fs::write(&targets, json!([{"targets": [addr], "labels": {"host": "a"}}]).to_string()).unwrap();
    let mut prom = Prometheus::start(&targets);
    let agg = Aggregator::start(&format!(
        "[aggregator]\npoll_ms = 500\ntimeout_ms = 400\n[history]\nflush_ms = 1000\nprometheus = \"{}\"\n\
         [[hosts]]\nname = \"a\"\nurl = \"{}\"\n[[hosts]]\nname = \"unscraped\"\nurl = \"{}\"\n",
        prom.url,
        agent.url(),
        agent.url()
    ));
    // The aggregator scraped too, for energy (its own figure).
    let agg_addr = agg.url().trim_start_matches("http://").to_owned();
    let both_targets = json!([{"targets": [addr], "labels": {"host": "a"}}, {"targets": [agg_addr]}]);
    // Renamed into place, as deploy does: Prometheus never reads half a file.
    std::fs::write(targets.with_extension("tmp"), both_targets.to_string()).unwrap();
    std::fs::rename(targets.with_extension("tmp"), &targets).unwrap();
    let both = json!({"containers": [{"host": "a", "name": c.name}, {"host": "a", "name": d.name}]});
    let (s, v) = agg.send("PUT", "/v1/apps/web", Some(&both));
    assert_eq!(s, 201, "{v}");

    let path = format!("/v1/containers/a/{}/history?since=30s&resource=cpu", c.name);
    let history = wait_for(Duration::from_secs(30), || {
        let (s, v) = agg.get(&path);
        (s == 200 && v["source"] == "prometheus" && v["points"].as_array().is_some_and(|p| p.len() >= 8)).then_some(v)
    })
    .unwrap_or_else(|| panic!("no history from prometheus: {}\n{}", agg.get(&path).1, prom.log()));
    // The agent's own points, by time.
    let (_, own) = agent.get(&format!("/v1/stats/{}/history?resource=cpu", c.name));
    let own: BTreeMap<u64, (u64, Option<u64>)> = own["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p["time_ms"].as_u64()?, (p["cpu"]["usage"].as_u64()?, p["cpu"]["current"].as_u64()))))
        .collect();
    let (mut matched, mut differ) = (0, Vec::new());
    for p in history["points"].as_array().unwrap() {
        let t = p["time_ms"].as_u64().unwrap();
        let Some(&(usage, current)) = own.get(&t) else { continue };
        let got = (p["cpu"]["usage"].as_u64().unwrap_or(u64::MAX), p["cpu"]["current"].as_u64());
        if got == (usage, current) {
            matched += 1;
        } else {
            differ.push((t, got, (usage, current)));
        }
    }
    let n = history["points"].as_array().unwrap().len();
    println!("prometheus: {n} points of the container's cpu; {matched} found in the agent's history, all equal");
    assert!(differ.is_empty(), "prometheus and the agent differ at (time, prometheus, agent): {differ:?}");
    assert!(matched >= 8, "only {matched} of {n} points found in the agent's history: {history}");
    assert!(
        history["points"].as_array().unwrap().iter().any(|p| p["cpu"]["usage"].as_u64().unwrap_or(0) > 100),
        "the load is in the history: {history}"
    );

    // The application: its two containers' sum over steps, above what
    // either uses alone.
    let (s, app) = agg.get("/v1/apps/web/history?since=20s&resource=cpu");
    assert_eq!((s, app["source"].as_str()), (200, Some("prometheus")), "{app}");
    let pts = app["points"].as_array().unwrap();
    let median = |v: &serde_json::Value| {
        let mut u: Vec<u64> = v["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["cpu"]["usage"].as_u64())
            .filter(|u| *u > 0)
            .collect();
        u.sort_unstable();
        u.get(u.len() / 2).copied().unwrap_or(0)
    };
    let each: Vec<u64> = [&c.name, &d.name]
        .iter()
        .map(|n| median(&agg.get(&format!("/v1/containers/a/{n}/history?since=20s&resource=cpu")).1))
        .collect();
    println!("application cpu median {} m, its containers' {each:?}", median(&app));
    assert!(pts.len() >= 5, "{app}");
    assert!(median(&app) * 10 > (each[0] + each[1]) * 8 && median(&app) > each[0].max(each[1]), "{app}");
    // Energy: the aggregator's own figure, as Prometheus scraped it off
    // the aggregator; beside the agents' points in the whole history.
    let energy_path = "/v1/apps/web/history?since=20s&resource=energy";
    let energy = wait_for(Duration::from_secs(20), || {
        let (s, v) = agg.get(energy_path);
        let powered =
            v["points"].as_array().map_or(0, |p| p.iter().filter(|p| p["energy"]["usage"].as_u64() > Some(0)).count());
        (s == 200 && v["source"] == "prometheus" && powered >= 5).then_some(v)
    })
    .unwrap_or_else(|| panic!("no energy from prometheus: {}\n{}", agg.get(energy_path).1, prom.log()));
    let energy_median = |v: &serde_json::Value| {
        let mut u: Vec<u64> =
            v["points"].as_array().unwrap().iter().filter_map(|p| p["energy"]["usage"].as_u64()).collect();
        u.sort_unstable();
        u.get(u.len() / 2).copied().unwrap_or(0)
    };
    let from_prometheus = energy_median(&energy);
    let (_, whole) = agg.get("/v1/apps/web/history?since=20s");
    assert_eq!(whole["source"], "prometheus", "{whole}");
    let with_energy = whole["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["resources"]["energy"]["usage"].as_u64() > Some(0))
        .count();
    assert!(with_energy * 2 >= whole["points"].as_array().unwrap().len(), "energy beside most points: {whole}");
    let (_, ce) = agg.get(&format!("/v1/containers/a/{}/history?since=20s&resource=energy", c.name));
    assert_eq!(ce["source"], "prometheus", "{ce}");
    assert!(energy_median(&ce) > 0 && energy_median(&ce) < from_prometheus, "a container's share of the app's: {ce}");

    // A host Prometheus does not scrape: the embedded history answers.
    let (s, v) = agg.get(&format!("/v1/containers/unscraped/{}/history?since=30s&resource=cpu", c.name));
    assert_eq!((s, v["source"].as_str()), (200, Some("aggregator")), "{v}");
    assert!(v["prometheus_error"].as_str().unwrap_or("").contains("no samples"), "{v}");

    // Prometheus gone: the embedded history answers, and says why.
    prom.stop();
    let (s, v) = agg.get(&path);
    assert_eq!((s, v["source"].as_str()), (200, Some("aggregator")), "{v}");
    assert!(v["prometheus_error"].as_str().unwrap_or("").contains("prometheus"), "{v}");
    assert!(!v["points"].as_array().unwrap().is_empty(), "{v}");
    // The same energy from the embedded tiers as from Prometheus.
    let (s, mine) = agg.get(energy_path);
    assert_eq!((s, mine["source"].as_str()), (200, Some("aggregator")), "{mine}");
    let embedded = energy_median(&mine);
    println!("application energy median: {from_prometheus} mW from prometheus, {embedded} mW embedded");
    assert!(from_prometheus.abs_diff(embedded) * 4 <= embedded, "{energy}\n{mine}");
}
