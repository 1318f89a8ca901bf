//! Issue 14's end-to-end checks: a real Docker container, a real Podman
//! container and a real LXD instance, each discovered by its engine's name
//! with its labels, subscribed by that name, CPU raised under load and
//! lowered after, memory raised before an OOM, the engine's own view of
//! the limits kept true through its API, and the subscription kept over a
//! restart of the container.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use scaler_testkit::engines::{Engine, EngineContainer, Kind};
use serde_json::Value;
use tests::{Agent, require_root, wait_for};

const MIB: u64 = 1 << 20;

fn engine_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Docker => "docker",
        Kind::Podman => "podman",
        Kind::Lxd => "lxd",
    }
}

/// An agent that asks only this test's daemon, and sends settled limits
/// to it after 300 ms.
fn agent_for(engine: &Engine) -> Agent {
    let sock = |k: Kind| if engine.kind == k { engine.socket.display().to_string() } else { String::new() };
    Agent::start(&format!(
        "[engines]\ndocker_socket = \"{}\"\npodman_socket = \"{}\"\nlxd_socket = \"{}\"\nsync_settle_ms = 300\n\
         sync_max_delay_ms = 2000\n",
        sock(Kind::Docker),
        sock(Kind::Podman),
        sock(Kind::Lxd)
    ))
}

/// CPU and memory limits: (millicores, bytes).
type Limits = (Option<u64>, Option<u64>);

/// The engine's own view of the container's limits.
fn engine_view(c: &EngineContainer) -> Limits {
    let num = |s: &str| s.trim().trim_matches('"').parse::<i64>().ok().filter(|&v| v > 0).map(|v| v as u64);
    match c.engine.kind {
        Kind::Docker | Kind::Podman => {
            let format = "{{.HostConfig.CpuQuota}} {{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}";
            let out = c.client(&["inspect", "-f", format, &c.name]).unwrap();
            let mut it = out.split_whitespace();
            let (quota, nano, mem) = (it.next().and_then(num), it.next().and_then(num), it.next().and_then(num));
            (quota.map(|q| q / 100).or(nano.map(|n| n / 1_000_000)), mem)
        }
        Kind::Lxd => {
            let allowance = c.client(&["config", "get", &c.name, "limits.cpu.allowance"]).unwrap();
            let cpu = allowance.trim().strip_suffix("ms/100ms").and_then(num).map(|ms| ms * 10);
            (cpu, num(&c.client(&["config", "get", &c.name, "limits.memory"]).unwrap()))
        }
    }
}

/// The agent's limits in force for `name`: (millicores, bytes).
fn in_force(agent: &Agent, name: &str) -> Limits {
    let (_, v) = agent.get(&format!("/v1/containers/{name}"));
    (v["resources"]["cpu"]["current"].as_u64(), v["resources"]["mem"]["current"].as_u64())
}

/// Whether the engine's view equals what is in force (LXD keeps whole
/// milliseconds of CPU: within 10 millicores above).
fn views_agree(agent: &Agent, c: &EngineContainer) -> Option<(Limits, Limits)> {
    let (mine, theirs) = (in_force(agent, &c.name), engine_view(c));
    let cpu_ok = match (mine.0, theirs.0) {
        (Some(a), Some(b)) if c.engine.kind == Kind::Lxd => b >= a && b < a + 10,
        (a, b) => a == b,
    };
    (cpu_ok && mine.1 == theirs.1).then_some((mine, theirs))
}

fn metric(agent: &Agent, name: &str, engine: &str) -> f64 {
    let (_, text) = agent.get_text("/metrics");
    let key = format!("{name}{{engine=\"{engine}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)?.parse().ok()).unwrap_or(0.0)
}

fn scenario(kind: Kind) {
    require_root();
    let ename = engine_name(kind);
    let engine = Engine::start(kind).unwrap_or_else(|e| panic!("{ename}: {e}"));
    let agent = agent_for(&engine);
    let t0 = Instant::now();
    let c = engine.run("scaler-test-eng", &[("app", "shop")]).unwrap_or_else(|e| panic!("{e}\n{}", engine.log()));
    let started = t0.elapsed();
    let t1 = Instant::now();
    let seen = wait_for(Duration::from_secs(15), || {
        let (s, v) = agent.get(&format!("/v1/stats/{}", c.name));
        (s == 200 && v["engine"]["engine"] == ename).then_some(v)
    })
    .unwrap_or_else(|| panic!("{ename} container {} not discovered by its name: {}", c.name, agent.log()));
    println!(
        "{ename}: `run` took {:.0} ms; discovered by its name {:.0} ms after it returned",
        started.as_secs_f64() * 1e3,
        t1.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(seen["engine"]["labels"]["app"], "shop", "{seen}");
    assert!(!seen["engine"]["id"].as_str().unwrap_or("").is_empty(), "{seen}");
    assert!(seen["cgroup"].as_str().unwrap().starts_with(&format!("/{}/", c.parent)), "{seen}");

    // Subscribed by the engine's name, through the CLI.
    let (ok, out, err) =
        tests::agent::cli(&agent.url(), &["subscribe", &c.name, "--cpu", "100m:1500m", "--mem", "16Mi:1Gi", "--json"]);
    assert!(ok, "subscribe {}: {err}", c.name);
    let sub: Value = serde_json::from_str(&out).unwrap();
    let start_cpu = sub["resources"]["cpu"]["current"].as_u64().unwrap();
    // Idle: lowered from where it started.
    let idle = wait_for(Duration::from_secs(10), || in_force(&agent, &c.name).0.filter(|&v| v < 400))
        .unwrap_or_else(|| panic!("{ename}: CPU not lowered while idle from {start_cpu}: {:?}", agent.events(&c.name)));

    // A core of load: CPU raised; then lowered once it ends.
    c.exec_detached(&["stress-ng", "--cpu", "1", "--timeout", "8s", "--quiet"]).unwrap();
    let peak = wait_for(Duration::from_secs(10), || in_force(&agent, &c.name).0.filter(|&v| v >= 700))
        .unwrap_or_else(|| panic!("{ename}: CPU not raised under load from {start_cpu}: {:?}", agent.events(&c.name)));
    let lowered = wait_for(Duration::from_secs(20), || in_force(&agent, &c.name).0.filter(|&v| v < peak / 2))
        .unwrap_or_else(|| panic!("{ename}: CPU not lowered after the load: {:?}", agent.events(&c.name)));
    println!(
        "{ename}: CPU {start_cpu} at subscription -> {idle} idle -> {peak}+ under a core of load -> {lowered} after"
    );

    // 200 MiB more than it had: memory raised before any OOM kill.
    let mem_before = in_force(&agent, &c.name).1.unwrap();
    c.exec_detached(&["stress-ng", "--vm", "1", "--vm-bytes", "200M", "--vm-keep", "--timeout", "6s", "--quiet"])
        .unwrap();
    let raised =
        wait_for(Duration::from_secs(10), || in_force(&agent, &c.name).1.filter(|&m| m >= mem_before + 190 * MIB))
            .unwrap_or_else(|| panic!("{ename}: memory not raised from {mem_before}: {:?}", agent.events(&c.name)));
    let stats = agent.container(&c.name).unwrap();
    assert_eq!(stats["signals"]["oom_kills"].as_u64().unwrap_or(0), 0, "{ename}: an OOM kill: {stats}");
    println!("{ename}: memory {} MiB -> {} MiB under 200 MiB more, no OOM kill", mem_before / MIB, raised / MIB);

    // The engine's own view follows what is in force once it settles.
    let settled = Instant::now();
    if kind == Kind::Podman {
        // Podman 4.3 applies an update to the running cgroup only: its
        // inspect keeps the creation values (docs/engines/podman.md).
        let ok = wait_for(Duration::from_secs(10), || {
            (metric(&agent, "scaler_engine_calls_total", ename) > 0.0).then_some(())
        });
        assert!(ok.is_some(), "no calls to podman's API: {}", agent.log());
        assert_eq!(metric(&agent, "scaler_engine_call_failures_total", ename), 0.0, "{}", agent.log());
        println!("podman inspect: {:?} (the agent: {:?})", engine_view(&c), in_force(&agent, &c.name));
    } else {
        let agree = wait_for(Duration::from_secs(25), || views_agree(&agent, &c)).unwrap_or_else(|| {
            panic!(
                "{ename}'s view {:?} never matched the limits in force {:?}: {}",
                engine_view(&c),
                in_force(&agent, &c.name),
                agent.log()
            )
        });
        println!(
            "{ename}: its own view {:?} = in force {:?}, {:.1} s after the memory raise",
            agree.1,
            agree.0,
            settled.elapsed().as_secs_f64()
        );
    }
    let calls = metric(&agent, "scaler_engine_calls_total", ename);
    let secs = metric(&agent, "scaler_engine_call_seconds_total", ename);
    println!("{ename}: {calls} API calls, {:.1} ms each on average", secs * 1e3 / calls.max(1.0));
    let adopted_before =
        agent.events(&c.name).iter().filter(|e| e["reason"].as_str().unwrap_or("").contains("outside")).count();
    assert_eq!(
        adopted_before,
        0,
        "{ename}: the agent took its own engine calls for outside changes: {:?}",
        agent.events(&c.name)
    );

    // A restart: a new cgroup at the same path (with whatever limits the
    // engine starts it with), the same subscription, its limits written
    // again.
    let last_id = agent.events(&c.name).last().map_or(0, |e| e["id"].as_u64().unwrap());
    c.restart().unwrap_or_else(|e| panic!("{e}"));
    let back = wait_for(Duration::from_secs(20), || {
        agent.events(&c.name).into_iter().find(|e| {
            e["id"].as_u64() > Some(last_id)
                && e["resource"] == "cpu"
                && e["reason"].as_str().unwrap_or("").starts_with("back after a restart")
        })
    })
    .unwrap_or_else(|| panic!("{ename}: no limits written again after a restart: {:?}", agent.events(&c.name)));
    let (s, sub) = agent.get(&format!("/v1/containers/{}", c.name));
    assert!(s == 200 && sub["status"] == "active", "{ename}: subscription lost over a restart: {sub}");
    // cgroupfs itself holds the agent's limit.
    let cgroup = seen["cgroup"].as_str().unwrap().trim_start_matches('/').to_owned();
    let quota_file = scaler_testkit::cgroupfs::v1_root("cpu").unwrap().join(&cgroup).join("cpu.cfs_quota_us");
    let agree = wait_for(Duration::from_secs(5), || {
        let quota: i64 = std::fs::read_to_string(&quota_file).ok()?.trim().parse().ok()?;
        let mc = in_force(&agent, &c.name).0?;
        (quota == (mc * 100) as i64).then_some((mc, quota))
    });
    assert!(agree.is_some(), "{ename}: cgroupfs {quota_file:?} does not hold the agent's CPU limit after a restart");
    let outside: Vec<Value> =
        agent.events(&c.name).into_iter().filter(|e| e["reason"].as_str().unwrap_or("").contains("outside")).collect();
    assert!(outside.is_empty(), "{ename}: {outside:?}");
    println!(
        "{ename}: after a restart: {} {} -> {}; cgroupfs {:?}",
        back["reason"],
        back["old"],
        back["new"],
        agree.unwrap()
    );
    // The operator changes it through the engine: noticed, adopted, and
    // said, naming the engine (idle first, so that the policy itself does
    // not write over it before the agent's next reading of the limits).
    wait_for(Duration::from_secs(10), || in_force(&agent, &c.name).0.filter(|&v| v <= 200))
        .unwrap_or_else(|| panic!("{ename}: CPU not lowered after the restart: {:?}", agent.events(&c.name)));
    // Steady also means the agent's own call to the engine is done: a call
    // still due (1 s after the last change) or under way would write the
    // agent's value over the hand-made one (CI met this once).
    let observe = || (in_force(&agent, &c.name), metric(&agent, "scaler_engine_calls_total", ename));
    let quiet_for = Duration::from_millis(if kind == Kind::Podman { 2500 } else { 1500 });
    let mut last = (observe(), Instant::now());
    let steady = wait_for(Duration::from_secs(20), || {
        let now = observe();
        if now != last.0 {
            last = (now, Instant::now());
        }
        // Podman's inspect keeps its creation values: its calls' count
        // alone says the sync is done.
        let synced = kind == Kind::Podman || views_agree(&agent, &c).is_some();
        (last.1.elapsed() >= quiet_for && synced).then_some(())
    });
    assert!(steady.is_some(), "{ename}: limits never steady: {:?}", agent.events(&c.name));
    c.set_cpu_by_hand(730).unwrap();
    // An idle (quiet) container's limits are read at its full readings,
    // every 5 s.
    let noticed = wait_for(Duration::from_secs(10), || {
        agent.events(&c.name).into_iter().find(|e| {
            e["new"] == 730
                && e["reason"].as_str().unwrap_or("").starts_with(&format!("changed outside scaler (by {ename}"))
        })
    });
    assert!(
        noticed.is_some(),
        "{ename}: a change through the engine went unnoticed (cgroupfs {:?}, the engine's view {:?}): {:?}",
        std::fs::read_to_string(&quota_file),
        engine_view(&c),
        agent.events(&c.name)
    );
    // Docker and Podman: removed and made again under the same name (a
    // new id, a new cgroup): the subscription follows it.
    if kind != Kind::Lxd {
        c.recreate().unwrap_or_else(|e| panic!("{e}"));
        let moved = wait_for(Duration::from_secs(15), || {
            let (_, v) = agent.get(&format!("/v1/containers/{}", c.name));
            let cg = v["cgroup"].as_str()?.to_owned();
            (cg != seen["cgroup"] && v["status"] == "active").then_some(cg)
        })
        .unwrap_or_else(|| panic!("{ename}: the subscription did not follow the recreated container: {}", agent.log()));
        let quota_file = scaler_testkit::cgroupfs::v1_root("cpu")
            .unwrap()
            .join(moved.trim_start_matches('/'))
            .join("cpu.cfs_quota_us");
        let written = wait_for(Duration::from_secs(5), || {
            let quota: i64 = std::fs::read_to_string(&quota_file).ok()?.trim().parse().ok()?;
            let mc = in_force(&agent, &c.name).0?;
            (quota == (mc * 100) as i64).then_some(mc)
        });
        assert!(written.is_some(), "{ename}: the recreated container does not have the subscription's limit");
        let said = agent.events(&c.name).iter().any(|e| e["reason"].as_str().unwrap_or("").starts_with("recreated at"));
        assert!(said, "{ename}: {:?}", agent.events(&c.name));
        println!("{ename}: recreated at {moved}: the subscription followed, {} millicores in force", written.unwrap());
    }
    // Still scaled: load raises it again.
    c.exec_detached(&["stress-ng", "--cpu", "1", "--timeout", "4s", "--quiet"]).unwrap();
    let again = wait_for(Duration::from_secs(8), || in_force(&agent, &c.name).0.filter(|&v| v >= 700));
    assert!(again.is_some(), "{ename}: not scaled after the restart: {:?}", agent.events(&c.name));
}

#[test]
fn docker_container_by_name_scaled_and_its_view_kept_true() {
    scenario(Kind::Docker);
}

#[test]
fn podman_container_by_name_scaled_through_its_api() {
    scenario(Kind::Podman);
}

#[test]
fn lxd_instance_by_name_scaled_and_its_config_kept_true() {
    scenario(Kind::Lxd);
}
