//! Issue 5's end-to-end checks of the aggregator: two real agents on this
//! machine, each with its own LXC container under load, one aggregator over
//! real sockets; and agents that are down, slow or answer garbage.
#![allow(clippy::unwrap_used)]

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tests::{Agent, Lxc, aggregator::Aggregator, rel_err, require_root, wait_for};

/// An agent with its own state directory (two agents share this machine).
fn agent(state: &tempfile::TempDir) -> Agent {
    Agent::start(&format!("[agent]\nstate_dir = \"{}\"\n", state.path().display()))
}

fn host_config(name: &str, url: &str) -> String {
    format!("[[hosts]]\nname = \"{name}\"\nurl = \"{url}\"\n")
}

const FAST: &str = "[aggregator]\npoll_ms = 500\ntimeout_ms = 400\n[history]\nflush_ms = 1000\n";

fn app_view(agg: &Aggregator, app: &str) -> Value {
    let (s, v) = agg.get(&format!("/v1/apps/{app}"));
    assert_eq!(s, 200, "{v}");
    v
}

fn host_view(agg: &Aggregator, host: &str) -> Value {
    let (s, v) = agg.get(&format!("/v1/hosts/{host}"));
    assert_eq!(s, 200, "{v}");
    v
}

fn history_times(agg: &Aggregator, path: &str) -> Vec<u64> {
    let (s, v) = agg.get(&format!("{path}/history?resource=cpu&since=10m"));
    assert_eq!(s, 200, "{v}");
    v["points"].as_array().unwrap().iter().map(|p| p["time_ms"].as_u64().unwrap()).collect()
}

#[test]
fn two_agents_one_app_staleness_and_restart() {
    require_root();
    let (mut c1, mut c2) = (Lxc::start(), Lxc::start());
    c1.set_v1("cpu", "cpu.cfs_quota_us", "50000");
    c2.set_v1("cpu", "cpu.cfs_quota_us", "30000");
    c1.spawn(&["timeout", "90", "sh", "-c", "while :; do :; done"]);
    c2.spawn(&["timeout", "90", "sh", "-c", "while :; do :; done"]);
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, mut b) = (agent(&sa), agent(&sb));
    a.wait_container(&c1.name);
    b.wait_container(&c2.name);
    let cfg = format!("{FAST}{}{}", host_config("a", &a.url), host_config("b", &b.url));
    let mut agg = Aggregator::start(&cfg);
    let app = json!({"containers": [{"host": "a", "name": c1.name}, {"host": "b", "name": c2.name}]});
    assert_eq!(agg.send("PUT", "/v1/apps/web", Some(&app)).0, 201);

    // Totals: 500 + 300 millicores of quota, and as much used.
    let v = wait_for(Duration::from_secs(20), || {
        let v = app_view(&agg, "web");
        (v["reporting"] == 2 && v["totals"]["cpu"]["current"] == 800).then_some(v)
    })
    .unwrap_or_else(|| panic!("totals never reached 800: {}\n{}", app_view(&agg, "web"), agg.log()));
    assert_eq!(v["stale"], false);
    std::thread::sleep(Duration::from_secs(2));
    let mut usage = Vec::new();
    for _ in 0..6 {
        let v = app_view(&agg, "web");
        let per: u64 = v["container_views"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["resources"]["cpu"]["usage"].as_u64().unwrap())
            .sum();
        assert_eq!(v["totals"]["cpu"]["usage"].as_u64(), Some(per), "totals are the sum of the containers: {v}");
        usage.push(per as f64);
        std::thread::sleep(Duration::from_millis(500));
    }
    let mean = usage.iter().sum::<f64>() / usage.len() as f64;
    let direct = a.container(&c1.name).unwrap()["resources"]["cpu"]["usage"].as_f64().unwrap()
        + b.container(&c2.name).unwrap()["resources"]["cpu"]["usage"].as_f64().unwrap();
    println!("app cpu usage mean {mean:.0} millicores (agents directly: {direct:.0}) under 800 of quota");
    assert!(rel_err(mean, 800.0) < 0.15, "app usage {mean} not within 15% of 800");
    // Power (the agents' 20-80 W model on 2 cores): the app's is the sum
    // of its containers'.
    let v = app_view(&agg, "web");
    let power: u64 = v["container_views"].as_array().unwrap().iter().map(|c| c["power_mw"].as_u64().unwrap()).sum();
    assert_eq!(v["power_mw"].as_u64(), Some(power));
    assert!(power > 0, "{v}");
    let (_, cs) = agg.get("/v1/containers");
    let hosts: std::collections::BTreeSet<&str> =
        cs["containers"].as_array().unwrap().iter().filter_map(|c| c["host"].as_str()).collect();
    assert_eq!(hosts.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);

    // A cap and an API-registered host, to survive the restart below.
    assert_eq!(agg.send("PUT", "/v1/apps/web/energy-cap", Some(&json!({"watts": 500}))).0, 200);
    assert_eq!(agg.send("PUT", "/v1/hosts/a2", Some(&json!({"url": a.url}))).0, 201);

    // Stop agent b: its host turns stale within a few seconds; a goes on.
    let stopped = Instant::now();
    b.stop();
    let stale = wait_for(Duration::from_secs(5), || {
        let h = host_view(&agg, "b");
        (h["status"] == "stale").then_some(h)
    })
    .unwrap_or_else(|| panic!("host b never stale: {}", host_view(&agg, "b")));
    println!("host b stale {:.1} s after its agent stopped: {}", stopped.elapsed().as_secs_f64(), stale["error"]);
    let a_before = host_view(&agg, "a")["last_ok_ms"].as_u64().unwrap();
    let b_age = host_view(&agg, "b")["age_ms"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (ha, hb) = (host_view(&agg, "a"), host_view(&agg, "b"));
    assert_eq!(ha["status"], "ok");
    assert!(ha["last_ok_ms"].as_u64().unwrap() >= a_before + 1000, "host a stopped updating: {ha}");
    assert!(hb["age_ms"].as_u64().unwrap() >= b_age + 1500, "b's age does not grow: {hb}");
    let v = app_view(&agg, "web");
    assert_eq!((v["reporting"].as_u64(), v["stale"].as_bool()), (Some(1), Some(true)), "{v}");
    assert_eq!(v["missing"][0]["reason"], "host stale");
    assert_eq!(v["totals"]["cpu"]["current"], 500, "{v}");

    // Restart: applications, caps, registered hosts and history are kept.
    let before = history_times(&agg, "/v1/apps/web");
    let restarted = Instant::now();
    agg.restart();
    let v = app_view(&agg, "web");
    assert_eq!(v["containers"], app["containers"]);
    assert_eq!(v["energy_cap"]["cap_mw"], 500_000, "{v}");
    assert_eq!(agg.get("/v1/hosts/a2").0, 200);
    let after = history_times(&agg, "/v1/apps/web");
    let kept = before.iter().filter(|t| after.contains(t)).count();
    println!(
        "history: {} points before the restart, {kept} of them after ({:.1} s)",
        before.len(),
        restarted.elapsed().as_secs_f64()
    );
    assert!(before.len() >= 10, "{before:?}");
    assert!(kept * 10 >= before.len() * 9, "restart lost history: {kept} of {}", before.len());
    let newer = wait_for(Duration::from_secs(5), || {
        let t = history_times(&agg, "/v1/apps/web");
        (t.last() > before.last()).then_some(t)
    });
    assert!(newer.is_some(), "no new points after the restart");
    let (s, m) = agg.get_text("/metrics");
    assert_eq!(s, 200);
    assert!(m.contains("scaler_cluster_host_up{host=\"b\"} 0"), "{m}");
    assert!(m.contains("scaler_cluster_app_power_cap_mw{app=\"web\"} 500000"), "{m}");
    assert_eq!(agg.send("DELETE", "/v1/apps/web", None).0, 200);
}

/// Serves `reply` to every connection after `delay` (forever when `None`).
fn fake(reply: &'static [u8], delay: Option<Duration>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in l.incoming().flatten().take(500) {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = conn.read(&mut buf);
                match delay {
                    None => std::thread::sleep(Duration::from_secs(30)),
                    Some(d) => std::thread::sleep(d),
                }
                let _ = conn.write_all(reply);
            });
        }
    });
    url
}

#[test]
fn agents_that_are_down_slow_or_garbage_are_stale_and_bad_input_is_refused() {
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let slow = fake(b"", None);
    let garbage = fake(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n<html>oops!\n", Some(Duration::ZERO));
    let truncated =
        fake(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{\"time_ms\": 1, \"conta", Some(Duration::ZERO));
    let noise = fake(b"\x00\xff\x13garbage\r\n\r\n", Some(Duration::ZERO));
    let cfg = format!(
        "{FAST}{}{}{}{}{}",
        host_config("down", &down),
        host_config("slow", &slow),
        host_config("garbage", &garbage),
        host_config("truncated", &truncated),
        host_config("noise", &noise)
    );
    let agg = Aggregator::start(&cfg);
    let t = Instant::now();
    let hosts = wait_for(Duration::from_secs(5), || {
        let (_, v) = agg.get("/v1/hosts");
        let hs = v["hosts"].as_array()?.clone();
        hs.iter().all(|h| h["rounds_failed"].as_u64() >= Some(2)).then_some(hs)
    })
    .unwrap_or_else(|| panic!("rounds did not go on: {}", agg.get("/v1/hosts").1));
    for h in &hosts {
        println!("{:>9}: {} ({})", h["name"].as_str().unwrap(), h["status"], h["error"]);
        assert_eq!((h["stale"].as_bool(), h["status"].as_str()), (Some(true), Some("unreachable")), "{h}");
        assert!(h["error"].as_str().is_some_and(|e| !e.is_empty()), "{h}");
    }
    let (_, health) = agg.get("/healthz");
    println!("{} rounds in {:.1} s with every agent bad", health["rounds"], t.elapsed().as_secs_f64());
    assert_eq!(health["status"], "ok");
    assert_eq!(health["stale_hosts"], 5);
    // Unknown application or host: 404 with a JSON error.
    for (m, p) in [
        ("GET", "/v1/apps/nope"),
        ("GET", "/v1/hosts/nope"),
        ("GET", "/v1/hosts/nope/history"),
        ("DELETE", "/v1/hosts/nope"),
    ] {
        let (s, v) = agg.send(m, p, None);
        assert_eq!(s, 404, "{m} {p}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    assert_eq!(agg.send("PUT", "/v1/apps/web", Some(&json!({"containers": [{"host": "slow", "name": "x"}]}))).0, 201);
    for bad in [json!({"watts": -5}), json!({"watts": "many"}), json!({"wats": 5}), json!({"watts": null})] {
        let (s, v) = agg.send("PUT", "/v1/apps/web/energy-cap", Some(&bad));
        assert_eq!(s, 400, "{bad}: {v}");
        let field = if bad.get("wats").is_some() { "wats" } else { "watts" };
        assert_eq!(v["field"], field, "{v}");
    }
    let (s, v) = agg.send("PUT", "/v1/apps/nope/energy-cap", Some(&json!({"watts": 5})));
    assert_eq!(s, 404, "{v}");
    assert_eq!(agg.get("/v1/apps/web").1["missing"][0]["reason"], "host stale");
}
