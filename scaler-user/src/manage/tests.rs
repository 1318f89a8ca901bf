#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use policies::Resource;
use serde_json::json;

use super::{
    Found, ManageError, Manager,
    fake::{Fake, GIB, all_events, manager, req, sample},
    mem_floor,
    store::Store,
};

#[test]
fn subscribe_applies_starting_limits_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 2000);
    let r = req(json!({"resources": {"cpu": {"min": 100, "max": 1000}, "mem": {"min": 1, "max": GIB}}}));
    let found = Found {
        limits: BTreeMap::from([(Resource::Cpu, None), (Resource::Mem, None)]),
        mem_usage: Some(100 << 20),
        usage: BTreeMap::new(),
    };
    m.subscribe(0, "a", "/a", &r, &found).unwrap();
    assert_eq!(fake.get("/a", Resource::Cpu), Some(1000), "unlimited starts at max");
    assert_eq!(fake.get("/a", Resource::Mem), Some(GIB));
    let events = all_events(&m).len();
    let found_now = Found {
        limits: BTreeMap::from([(Resource::Cpu, Some(1000)), (Resource::Mem, Some(GIB))]),
        mem_usage: Some(100 << 20),
        usage: BTreeMap::new(),
    };
    m.subscribe(0, "a", "/a", &r, &found_now).unwrap();
    assert_eq!(all_events(&m).len(), events, "same PUT again changes nothing");
    assert_eq!(m.get("a").unwrap().original[&Resource::Cpu], None, "original survives re-subscription");
}

#[test]
fn a_failed_apply_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake { fail: Some(Resource::Mem), ..Default::default() };
    let mut m = manager(tmp.path(), &fake, 2000);
    let r = req(json!({"resources": {"cpu": {"min": 100, "max": 1000}, "mem": {"min": 1, "max": GIB}}}));
    // CPU is found above max, so it is written first, then memory fails.
    let found =
        Found { limits: BTreeMap::from([(Resource::Cpu, Some(5000))]), mem_usage: None, usage: BTreeMap::new() };
    assert!(matches!(m.subscribe(0, "a", "/a", &r, &found), Err(ManageError::Apply(_))));
    assert_eq!(fake.get("/a", Resource::Cpu), Some(5000), "CPU rolled back to what was found");
    assert!(m.get("a").is_none());
    drop(m);
    assert!(Store::open(tmp.path()).unwrap().load().unwrap().is_empty());
}

#[test]
fn mins_must_fit_the_host_and_mem_max_must_cover_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 2000);
    m.subscribe(0, "a", "/a", &req(json!({"resources": {"cpu": {"min": 1500, "max": 2000}}})), &Found::default())
        .unwrap();
    let e =
        m.subscribe(0, "b", "/b", &req(json!({"resources": {"cpu": {"min": 600, "max": 2000}}})), &Found::default());
    assert!(matches!(e, Err(ManageError::Field(f)) if f.field == "resources.cpu.min"));
    let found = Found { limits: BTreeMap::new(), mem_usage: Some(GIB), usage: BTreeMap::new() };
    let e = m.subscribe(0, "c", "/c", &req(json!({"resources": {"mem": {"min": 1, "max": 1000}}})), &found);
    assert!(matches!(e, Err(ManageError::Field(f)) if f.field == "resources.mem.max"));
    // A one-byte memory limit is no limit a container can run under.
    let e = m.subscribe(0, "d", "/d", &req(json!({"resources": {"mem": {"min": 0, "max": 1}}})), &Found::default());
    assert!(matches!(e, Err(ManageError::Field(f)) if f.field == "resources.mem.max" && f.message.contains("4 MiB")));
    let e = m.subscribe(0, "c", "/c", &req(json!({"resources": {"cpu": {"min": 5, "max": 1000}}})), &found);
    assert!(
        matches!(e, Err(ManageError::Field(f)) if f.field == "resources.cpu.min" && f.message.contains("at least 10")),
        "a CPU limit the kernel cannot hold is refused"
    );
    assert!(m.get("d").is_none());
}

#[test]
fn throttling_raises_cpu_within_a_tick_and_capacity_is_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 2000);
    for name in ["a", "b"] {
        let r = req(json!({"resources": {"cpu": {"min": 100, "max": 2000, "current": 500}}}));
        m.subscribe(0, name, &format!("/{name}"), &r, &Found::default()).unwrap();
    }
    // Both want two cores: each is throttled for a whole extra core and more.
    for t in 1..=3u64 {
        let (a, b) = (
            sample(&fake, "/a", t * 200, 500, 300_000, 10 << 20),
            sample(&fake, "/b", t * 200, 500, 300_000, 10 << 20),
        );
        let samples = HashMap::from([("a", &a), ("b", &b)]);
        m.step(t * 200, &samples);
        let (a, b) = (fake.get("/a", Resource::Cpu).unwrap(), fake.get("/b", Resource::Cpu).unwrap());
        assert!(a + b <= 2000, "tick {t}: {a} + {b} exceeds the host");
        assert!((100..=2000).contains(&a) && (100..=2000).contains(&b));
    }
    let a = fake.get("/a", Resource::Cpu).unwrap();
    assert!(a > 500, "raised from 500: {a}");
    let ev = all_events(&m);
    assert!(ev.iter().any(|e| e.reason.contains("limited by host capacity")), "{ev:?}");
}

#[test]
fn memory_never_goes_below_usage_plus_headroom() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 2000);
    let r = req(json!({"resources": {"mem": {"min": 1 << 20, "max": 4 * GIB, "current": 4 * GIB}}}));
    m.subscribe(0, "a", "/a", &r, &Found::default()).unwrap();
    let usage = 900 << 20;
    for t in 1..200u64 {
        let s = sample(&fake, "/a", t * 200, 10, 0, usage);
        m.step(t * 200, &HashMap::from([("a", &s)]));
        let lim = fake.get("/a", Resource::Mem).unwrap();
        assert!(lim >= mem_floor(usage) - 4096, "tick {t}: {lim} below floor");
    }
    assert!(fake.get("/a", Resource::Mem).unwrap() < 4 * GIB, "it did shrink");
}

#[test]
fn outside_changes_are_adopted_ceilings_hold_and_restore_puts_originals_back() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let r = req(json!({"resources": {"cpu": {"min": 100, "max": 3000, "current": 2000}}}));
    let found = Found { limits: BTreeMap::from([(Resource::Cpu, Some(700))]), mem_usage: None, usage: BTreeMap::new() };
    m.subscribe(0, "a", "/a", &r, &found).unwrap();
    fake.limits.lock().unwrap().insert(("/a".into(), Resource::Cpu), Some(1800));
    m.step(200, &HashMap::from([("a", &sample(&fake, "/a", 200, 1700, 0, 1))]));
    let ev = all_events(&m);
    assert!(ev.iter().any(|e| e.reason.contains("changed outside") && e.new == Some(1800)), "{ev:?}");
    m.set_ceiling(300, "a", Some(BTreeMap::from([(Resource::Cpu, 900)]))).unwrap();
    assert_eq!(fake.get("/a", Resource::Cpu), Some(900), "a ceiling acts at once");
    m.step(400, &HashMap::from([("a", &sample(&fake, "/a", 400, 1700, 200_000, 1))]));
    assert_eq!(fake.get("/a", Resource::Cpu), Some(900), "held at the ceiling despite throttling");
    assert!(m.set_ceiling(500, "a", Some(BTreeMap::from([(Resource::Mem, 1)]))).is_err(), "mem is not managed");
    assert!(m.unsubscribe(600, "a", true).unwrap());
    assert_eq!(fake.get("/a", Resource::Cpu), Some(700), "original limit restored");
    assert!(matches!(m.unsubscribe(600, "a", true), Err(ManageError::NotFound(_))));
}

#[test]
fn a_container_back_from_a_restart_gets_its_limits_written_again_not_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let r = req(json!({"resources": {"cpu": {"min": 100, "max": 3000, "current": 600}}}));
    m.subscribe(0, "a", "/a", &r, &Found::default()).unwrap();
    // A tick with no sample before the first one: not a restart.
    m.step(100, &HashMap::new());
    m.step(200, &HashMap::from([("a", &sample(&fake, "/a", 200, 100, 0, 1))]));
    let limit = fake.get("/a", Resource::Cpu);
    // Gone for a tick, then back with its engine's own limit (none).
    m.step(400, &HashMap::new());
    fake.limits.lock().unwrap().insert(("/a".into(), Resource::Cpu), None);
    m.step(600, &HashMap::from([("a", &sample(&fake, "/a", 600, 100, 0, 1))]));
    assert_eq!(fake.get("/a", Resource::Cpu), limit, "the subscription's limit is back in force");
    let ev = all_events(&m);
    assert!(!ev.iter().any(|e| e.reason.contains("changed outside")), "{ev:?}");
    let back: Vec<_> = ev.iter().filter(|e| e.reason.starts_with("back after a restart")).collect();
    assert_eq!(back.len(), 1, "once, not for the first tick without a sample: {ev:?}");
}

#[test]
fn a_subscription_follows_its_container_recreated_at_another_cgroup() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let r = req(json!({"resources": {"cpu": {"min": 100, "max": 3000, "current": 600}}}));
    m.subscribe(0, "web", "/docker/aaa", &r, &Found::default()).unwrap();
    let generation = m.generation;
    m.follow_recreated(100, "web", "/docker/bbb").unwrap();
    assert_eq!(m.get("web").unwrap().cgroup, "/docker/bbb");
    assert!(m.generation > generation, "the sampler is told");
    assert!(m.follow_recreated(100, "web", "/../etc").is_err(), "a path outside the roots is refused");
    m.step(300, &HashMap::from([("web", &sample(&fake, "/docker/bbb", 300, 100, 0, 1))]));
    assert_eq!(fake.get("/docker/bbb", Resource::Cpu), Some(600), "its limit written at the new cgroup");
    let ev = all_events(&m);
    assert!(ev.iter().any(|e| e.reason.starts_with("recreated at /docker/bbb (was /docker/aaa)")), "{ev:?}");
    assert!(ev.iter().any(|e| e.reason.starts_with("back after a restart")), "{ev:?}");
}

#[test]
fn state_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    {
        let mut m = manager(tmp.path(), &fake, 2000);
        let r = req(json!({"policy": "classic", "priority": 2, "resources": {"cpu": {"min": 100, "max": 900}}}));
        m.subscribe(0, "a", "/x/a", &r, &Found::default()).unwrap();
        m.set_ceiling(0, "a", Some(BTreeMap::from([(Resource::Cpu, 800)]))).unwrap();
        m.set_capacity(BTreeMap::from([(Resource::Cpu, Some(1500))])).unwrap();
        assert!(m.set_capacity(BTreeMap::from([(Resource::Cpu, Some(50))])).is_err(), "below the minimums");
    }
    let m = manager(tmp.path(), &fake, 2000);
    let s = m.get("a").unwrap();
    assert_eq!((s.cgroup.as_str(), s.policy.as_str(), s.priority), ("/x/a", "classic", 2));
    assert_eq!(s.ceiling[&Resource::Cpu], 800);
    assert_eq!(s.limits[&Resource::Cpu], Some(800));
    assert_eq!(m.capacity()[&Resource::Cpu], Some(1500), "stored override wins over the config");
}

#[test]
fn events_survive_reopening_and_their_ids_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let before = {
        let mut m = manager(tmp.path(), &fake, 2000);
        let r = req(json!({"resources": {"cpu": {"min": 100, "max": 900}}}));
        m.subscribe(0, "a", "/x/a", &r, &Found::default()).unwrap();
        m.step(200, &HashMap::from([("a", &sample(&fake, "/x/a", 200, 10, 0, 1 << 20))]));
        all_events(&m)
    };
    assert!(!before.is_empty());
    let mut m = manager(tmp.path(), &fake, 2000);
    assert_eq!(all_events(&m), before, "the log as it was");
    m.set_ceiling(400, "a", Some(BTreeMap::from([(Resource::Cpu, 150)]))).unwrap();
    let after = all_events(&m);
    assert!(after.len() > before.len() && after.last().unwrap().id > before.last().unwrap().id);
}

#[test]
fn tasks_wait_at_the_memory_limit_below_max_only_where_the_policy_raises_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 2000);
    let wait = |cg: &str| fake.waits.lock().unwrap().get(cg).copied().flatten();
    let r = |policy: &str, current: u64| {
        req(json!({"policy": policy, "resources": {"mem": {"min": 1 << 20, "max": 4 * GIB, "current": current}}}))
    };
    m.subscribe(0, "a", "/a", &r("follow", GIB), &Found::default()).unwrap();
    assert_eq!(wait("/a"), Some(4 * GIB), "below max: wait, with max as the hard stop");
    m.subscribe(0, "b", "/b", &r("fast", GIB), &Found::default()).unwrap();
    assert_eq!(wait("/b"), None, "fast does not react to waiting tasks");
    // At max, a container past its bound is killed as with a static limit.
    m.subscribe(0, "a", "/a", &r("follow", 4 * GIB), &Found::default()).unwrap();
    assert_eq!(wait("/a"), None);
    // Waiting tasks get a raise at the next tick.
    m.subscribe(0, "a", "/a", &r("follow", GIB), &Found::default()).unwrap();
    let mut s = sample(&fake, "/a", 200, 10, 0, GIB - (8 << 20));
    s.signals.mem_waiting = Some(true);
    m.step(200, &HashMap::from([("a", &s)]));
    assert!(fake.get("/a", Resource::Mem).unwrap() >= GIB * 3 / 2, "raised by half");
    assert!(all_events(&m).iter().any(|e| e.reason.contains("waiting at the memory limit")));
    m.release_waits();
    assert_eq!(wait("/a"), None, "released on shutdown");
    m.step(400, &HashMap::from([("a", &sample(&fake, "/a", 400, 10, 0, GIB))]));
    assert_eq!(wait("/a"), Some(4 * GIB), "and set again at the next tick");
    m.unsubscribe(600, "a", false).unwrap();
    assert_eq!(wait("/a"), None, "off when unsubscribed");
    let mut off = manager(tempfile::tempdir().unwrap().path(), &fake, 2000).with_memory_wait(false);
    off.subscribe(0, "c", "/c", &r("follow", GIB), &Found::default()).unwrap();
    assert_eq!(wait("/c"), None, "agent.memory_wait = false");
}

#[test]
fn a_stored_record_with_bad_bounds_is_refused_at_load_not_fed_to_the_planner() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    {
        let mut m = manager(tmp.path(), &fake, 2000);
        m.subscribe(0, "a", "/a", &req(json!({"resources": {"cpu": {"min": 100, "max": 1000}}})), &Found::default())
            .unwrap();
    }
    // Damage the record as a hand edit would: min above max.
    let store = Store::open(tmp.path()).unwrap();
    let mut sub = store.load().unwrap().pop().unwrap();
    sub.resources.get_mut(&Resource::Cpu).unwrap().min = 5000;
    store.save(&[&sub], &[]).unwrap();
    drop(store);
    let cap = BTreeMap::from([(Resource::Cpu, Some(2000))]);
    let e =
        Manager::open(Store::open(tmp.path()).unwrap(), Box::new(fake.clone()), cap, vec!["/".into()], "fast".into())
            .err()
            .unwrap();
    let chain = format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default());
    assert!(chain.contains("\"a\"") && chain.contains("resources.cpu.min"), "{chain}");
}

#[test]
fn replacing_a_subscription_leaves_no_limit_behind_and_restore_puts_back_what_was_found() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let found = |cpu: Option<u64>| Found { limits: BTreeMap::from([(Resource::Cpu, cpu)]), ..Found::default() };
    // r1: CPU only, then memory only: the CPU quota it set goes.
    m.subscribe(0, "r1", "/a", &req(json!({"resources": {"cpu": {"min": 100, "max": 1000}}})), &found(None)).unwrap();
    assert_eq!(fake.get("/a", Resource::Cpu), Some(1000));
    m.subscribe(1, "r1", "/a", &req(json!({"resources": {"mem": {"min": 1 << 20, "max": GIB}}})), &found(Some(1000)))
        .unwrap();
    assert_eq!(fake.get("/a", Resource::Cpu), None, "the dropped CPU limit is restored (unlimited)");
    assert!(!m.get("r1").unwrap().original.contains_key(&Resource::Cpu));
    assert!(m.unsubscribe(2, "r1", true).unwrap());
    assert_eq!(fake.get("/a", Resource::Mem), None);

    // r2 on /b (found 400 m), then on /c (found 700 m): /b gets its 400 m
    // back, and /c's original is /c's.
    fake.limits.lock().unwrap().insert(("/b".into(), Resource::Cpu), Some(400));
    fake.limits.lock().unwrap().insert(("/c".into(), Resource::Cpu), Some(700));
    let cpu = req(json!({"resources": {"cpu": {"min": 100, "max": 2000, "current": 1500}}}));
    m.subscribe(3, "r2", "/b", &cpu, &found(Some(400))).unwrap();
    assert_eq!(fake.get("/b", Resource::Cpu), Some(1500));
    m.subscribe(4, "r2", "/c", &cpu, &found(Some(700))).unwrap();
    assert_eq!(fake.get("/b", Resource::Cpu), Some(400), "the old cgroup is back as found");
    assert_eq!(m.get("r2").unwrap().original[&Resource::Cpu], Some(700));
    assert!(m.unsubscribe(5, "r2", true).unwrap());
    assert_eq!(fake.get("/c", Resource::Cpu), Some(700), "restored to /c's own original");
    let ev = all_events(&m);
    assert!(ev.iter().any(|e| e.reason == "no longer managed: restored"), "{ev:?}");
    assert!(ev.iter().any(|e| e.reason == "subscription moved: restored"), "{ev:?}");
}

#[test]
fn the_agents_own_cgroup_and_its_ancestors_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m =
        manager(tmp.path(), &fake, 2000).with_own_cgroups(vec!["/".into(), "/system.slice/scaler.service".into()]);
    let r = req(json!({"resources": {"cpu": {"min": 100, "max": 1000}}}));
    for cg in ["/system.slice/scaler.service", "/system.slice"] {
        let e = m.subscribe(0, "self", cg, &r, &Found::default());
        assert!(
            matches!(&e, Err(ManageError::Forbidden { field, message }) if field == "cgroup" && message.contains("agent itself")),
            "{cg}: {e:?}"
        );
    }
    m.subscribe(0, "sibling", "/system.slice/other.service", &r, &Found::default()).unwrap();
}

#[test]
fn a_whole_container_unguarded_is_left_where_it_is_and_guarded_again_scales() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 2000);
    let r = req(json!({"resources": {"cpu": {"min": 100, "max": 2000, "current": 500},
                                     "mem": {"min": 16 << 20, "max": GIB, "current": 512 << 20}}}));
    m.subscribe(0, "a", "/a", &r, &Found::default()).unwrap();
    assert!(
        matches!(m.set_guard(1, "a", false, Some(&[Resource::DiskRead])), Err(ManageError::Field(f)) if f.field == "resources")
    );
    assert!(matches!(m.set_guard(1, "nope", false, None), Err(ManageError::NotFound(_))));
    m.set_guard(1, "a", false, None).unwrap();
    let v = m.view("a").unwrap();
    assert!(v.resources.values().all(|r| !r.guard), "every resource unguarded: {v:?}");
    // Throttled hard and nearly idle on memory: a guarded container would
    // change both; this one keeps both.
    for t in 1..=20u64 {
        m.step(t * 200, &HashMap::from([("a", &sample(&fake, "/a", t * 200, 500, 300_000, 10 << 20))]));
    }
    assert_eq!((fake.get("/a", Resource::Cpu), fake.get("/a", Resource::Mem)), (Some(500), Some(512 << 20)));
    let ev = all_events(&m);
    assert_eq!(ev.iter().filter(|e| e.reason.starts_with("unguarded")).count(), 2, "{ev:?}");
    // Guarded again (CPU only): CPU scales, memory stays.
    m.set_guard(5_000, "a", true, Some(&[Resource::Cpu])).unwrap();
    for t in 26..=30u64 {
        m.step(t * 200, &HashMap::from([("a", &sample(&fake, "/a", t * 200, 500, 300_000, 10 << 20))]));
    }
    assert!(fake.get("/a", Resource::Cpu).unwrap() > 500);
    assert_eq!(fake.get("/a", Resource::Mem), Some(512 << 20));
    // Survives a restart of the manager (saved).
    drop(m);
    let m = manager(tmp.path(), &fake, 2000);
    let v = m.view("a").unwrap();
    assert!(v.resources[&Resource::Cpu].guard && !v.resources[&Resource::Mem].guard, "{v:?}");
}
