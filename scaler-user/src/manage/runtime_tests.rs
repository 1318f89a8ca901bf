//! Changing policies and the agent's settings while containers are managed,
//! and what the sampling loop derives from the subscriptions.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use policies::Resource;
use serde_json::json;

use super::{
    Found, ManageError, Manager,
    fake::{Fake, GIB, all_events, manager, req, sample},
    settings::AgentSettings,
};

/// Classic at the agent's pace: one evaluation per 200 ms tick over the
/// last sample, up after three events.
fn quick_classic() -> serde_json::Value {
    json!({"name": "classic", "window_ms": 200, "delay_ms": 0, "period_ms": 200, "event_timeout_ms": 60000,
           "rules": {"cpu": {"up": {"events": 3, "consume": 3}}}})
}

fn step(m: &mut super::Manager, fake: &Fake, t: u64, cpu: u64) {
    m.step(t * 200, &HashMap::from([("a", &sample(fake, "/a", t * 200, cpu, 0, 10 << 20))]));
}

#[test]
fn a_rule_changed_while_events_are_pending_fires_with_its_new_amount() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let r = req(json!({"policy": quick_classic(),
                       "resources": {"cpu": {"min": 100, "max": 4000, "current": 1000, "boundary": 10}}}));
    m.subscribe(0, "a", "/a", &r, &Found::default()).unwrap();
    // Usage above upper (1000 - 400): one up event per tick, two pending.
    step(&mut m, &fake, 1, 900);
    step(&mut m, &fake, 2, 900);
    assert_eq!(fake.get("/a", Resource::Cpu), Some(1000), "three events needed");
    let before = all_events(&m).len();
    let v = m.set_policy(2 * 200 + 1, "a", &json!({"rules": {"cpu": {"up": {"amount": {"fixed": 200}}}}})).unwrap();
    assert_eq!(v.config["rules"]["cpu"]["up"]["amount"], json!({"fixed": 200}));
    assert_eq!(v.config["rules"]["cpu"]["up"]["events"], json!(3), "the rest of the rule stays");
    let ev = all_events(&m);
    assert_eq!(ev.len(), before + 1);
    let logged = ev.last().unwrap();
    assert_eq!((logged.container.as_str(), logged.resource), ("a", None));
    assert!(logged.reason.contains("rules.cpu.up.amount.fixed 750 -> 200"), "{}", logged.reason);
    assert!(logged.reason.contains("pending events kept"), "{}", logged.reason);
    // The third event fires the rule with the new amount: the two pending
    // ones were not lost.
    step(&mut m, &fake, 3, 900);
    assert_eq!(fake.get("/a", Resource::Cpu), Some(1200));
    // Kept across a restart of the agent.
    drop(m);
    let m = manager(tmp.path(), &fake, 4000);
    assert_eq!(m.policy_of("a").unwrap().config["rules"]["cpu"]["up"]["amount"], json!({"fixed": 200}));
}

#[test]
fn a_rule_turned_off_never_fires_and_a_new_policy_starts_afresh() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let r = req(json!({"policy": quick_classic(),
                       "resources": {"cpu": {"min": 100, "max": 4000, "current": 1000, "boundary": 10}}}));
    m.subscribe(0, "a", "/a", &r, &Found::default()).unwrap();
    m.set_policy(0, "a", &json!({"rules": {"cpu": {"up": {"active": false}}}})).unwrap();
    for t in 1..=6 {
        step(&mut m, &fake, t, 900);
    }
    assert_eq!(fake.get("/a", Resource::Cpu), Some(1000), "an inactive rule does not fire");
    m.set_policy(7 * 200, "a", &json!({"rules": {"cpu": {"up": {"active": true}}}})).unwrap();
    step(&mut m, &fake, 7, 900);
    assert_eq!(fake.get("/a", Resource::Cpu), Some(1750), "back on: the events it saw meanwhile count");
    // Another policy: a fresh one, said so in the log.
    let v = m.set_policy(8 * 200, "a", &json!("static")).unwrap();
    assert_eq!((v.name.as_str(), v.source), ("static", "subscription"));
    assert!(all_events(&m).last().unwrap().reason.contains("policy classic -> static (it starts afresh)"));
    assert_eq!(m.get("a").unwrap().policy, "static");
}

#[test]
fn a_preset_written_back_with_its_own_tag_keeps_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let r = req(json!({"policy": "classic-defaults", "resources": {"cpu": {"min": 100, "max": 4000}}}));
    m.subscribe(0, "a", "/a", &r, &Found::default()).unwrap();
    let mut cfg = m.policy_of("a").unwrap().config;
    assert_eq!(cfg["name"], "classic");
    cfg["window_ms"] = json!(5000);
    let v = m.set_policy(1, "a", &cfg).unwrap();
    assert_eq!(v.name, "classic-defaults", "the preset stays");
    assert!(all_events(&m).last().unwrap().reason.contains("pending events kept"));
}

#[test]
fn bad_policy_changes_name_their_field_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let r = req(json!({"policy": quick_classic(), "resources": {"cpu": {"min": 100, "max": 4000}}}));
    m.subscribe(0, "a", "/a", &r, &Found::default()).unwrap();
    let before = m.policy_of("a").unwrap().config;
    let n = all_events(&m).len();
    for (body, field) in [
        (json!({"rules": {"cpu": {"up": {"events": 0}}}}), "rules.cpu.up.events"),
        (json!({"rules": {"cpu": {"up": {"amount": {"fixed": 0}}}}}), "rules.cpu.up.amount"),
        (json!({"window_ms": "soon"}), "window_ms"),
        (json!({"bogus": 1}), "bogus"),
        (json!({"name": 3}), "name"),
        (json!({"name": "nope"}), "nope"),
        (json!([1]), "body"),
    ] {
        let e = m.set_policy(1, "a", &body).unwrap_err();
        let ManageError::Field(f) = e else { panic!("{body}: {e}") };
        assert!(f.field.contains(field) || f.message.contains(field), "{body}: {f:?}");
    }
    assert!(matches!(m.set_policy(1, "zz", &json!({})), Err(ManageError::NotFound(_))));
    assert_eq!(m.policy_of("a").unwrap().config, before);
    assert_eq!(all_events(&m).len(), n);
}

#[test]
fn host_parameters_of_a_preset_reach_its_subscriptions_and_persist() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    // Two subscriptions of plain classic (no parameters of their own) and
    // one with its own: only the first two follow the host's change.
    for (name, policy) in [("a", json!("classic")), ("b", json!("classic")), ("c", quick_classic())] {
        let r = req(json!({"policy": policy, "resources": {"cpu": {"min": 100, "max": 4000}}}));
        m.subscribe(0, name, &format!("/{name}"), &r, &Found::default()).unwrap();
    }
    let v = m.set_policy_default(5, "classic", &json!({"event_timeout_ms": 30000})).unwrap();
    assert_eq!((v.source, &v.config["event_timeout_ms"]), ("host", &json!(30000)));
    assert_eq!(m.policy_of("a").unwrap().config["event_timeout_ms"], json!(30000));
    assert_eq!(m.policy_of("a").unwrap().source, "host");
    assert_eq!(m.policy_of("c").unwrap().config["event_timeout_ms"], json!(60000));
    let last = all_events(&m).last().cloned().unwrap();
    assert_eq!(last.container, "");
    assert!(last.reason.contains("event_timeout_ms 120000 -> 30000 (2 subscriptions follow)"), "{}", last.reason);
    // A new subscription of the preset gets them too, and so does a restart.
    drop(m);
    let mut m = manager(tmp.path(), &fake, 4000);
    let r = req(json!({"policy": "classic", "resources": {"cpu": {"min": 100, "max": 4000}}}));
    m.subscribe(0, "d", "/d", &r, &Found::default()).unwrap();
    assert_eq!(m.policy_of("d").unwrap().config["event_timeout_ms"], json!(30000));
    // null puts the preset back; unknown presets are 404s.
    let v = m.set_policy_default(6, "classic", &serde_json::Value::Null).unwrap();
    assert_eq!((v.source, &v.config["event_timeout_ms"]), ("preset", &json!(120000)));
    assert!(matches!(m.set_policy_default(6, "nope", &json!({})), Err(ManageError::NotFound(_))));
    let e = m.set_policy_default(6, "classic", &json!({"window_ms": 0})).unwrap_err();
    assert!(matches!(e, ManageError::Field(f) if f.message.contains("window_ms")));
}

#[test]
fn inactive_the_agent_changes_no_limit_and_its_settings_persist() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let config = AgentSettings { tick_ms: 200, discovery_interval_ms: 1000, active: true };
    let mut m = manager(tmp.path(), &fake, 4000).with_settings(config).unwrap();
    let r = req(json!({"policy": quick_classic(),
                       "resources": {"cpu": {"min": 100, "max": 4000, "current": 1000, "boundary": 10}}}));
    m.subscribe(0, "a", "/a", &r, &Found::default()).unwrap();
    let s = m.set_settings(1, &json!({"active": false, "tick_ms": 100})).unwrap();
    assert_eq!(s, AgentSettings { tick_ms: 100, discovery_interval_ms: 1000, active: false });
    assert!(all_events(&m).last().unwrap().reason.contains("tick 200 -> 100 ms, inactive"));
    for t in 1..=5 {
        step(&mut m, &fake, t, 900);
    }
    assert_eq!(fake.get("/a", Resource::Cpu), Some(1000), "inactive: nothing changes");
    // Reopened with the same config: the overrides stay.
    drop(m);
    let mut m = manager(tmp.path(), &fake, 4000).with_settings(config).unwrap();
    assert!(!m.settings().active);
    assert_eq!(m.settings().tick_ms, 100);
    // Inactive is every resource unguarded: the policy counted no events
    // meanwhile; three ticks over upper after it is back, it scales.
    m.set_settings(2, &json!({"active": true})).unwrap();
    for t in 6..=8 {
        step(&mut m, &fake, t, 900);
    }
    assert_eq!(fake.get("/a", Resource::Cpu), Some(1750), "active again: the policy scales");
    for (body, field) in [
        (json!({"tick_ms": 5}), "tick_ms"),
        (json!({"tick_ms": 2000}), "discovery_interval_ms"),
        (json!({"active": "yes"}), "active"),
        (json!({"tick_ms": -1}), "tick_ms"),
        (json!({"window": 1}), "window"),
        (json!(3), "body"),
    ] {
        let e = m.set_settings(3, &body).unwrap_err();
        assert!(matches!(&e, ManageError::Field(f) if f.field == field), "{body}: {e}");
    }
    assert_eq!(m.settings().tick_ms, 100, "a refused change changes nothing");
}

#[test]
fn direct_limits_are_written_checked_counted_and_kept() {
    use std::collections::BTreeMap;
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 2000);
    let found = Found { mem_usage: Some(100 << 20), ..Default::default() };
    let set = |v: serde_json::Value| super::direct::parse(&v).unwrap();
    let v = m.set_direct(1, "x", "/x", &set(json!({"cpu": 500, "mem": 256 << 20})), &found).unwrap();
    assert_eq!(v.limits[&Resource::Cpu], Some(500));
    assert_eq!((fake.get("/x", Resource::Cpu), fake.get("/x", Resource::Mem)), (Some(500), Some(256 << 20)));
    assert_eq!(m.allocated()[&Resource::Cpu], 500);
    let ev = all_events(&m);
    assert!(ev.iter().any(|e| e.container == "x" && e.new == Some(500) && e.reason.contains("set directly")));
    // What is set directly is held out of the host: 1,600 more does not fit.
    let e = m.set_direct(2, "y", "/y", &set(json!({"cpu": 1600})), &Found::default()).unwrap_err();
    assert!(
        matches!(&e, ManageError::Field(f) if f.field == "cpu" && f.message.contains("other direct limits 500")),
        "{e}"
    );
    // ...nor does a subscription whose minimum needs it.
    let r = req(json!({"resources": {"cpu": {"min": 1600, "max": 2000}}}));
    assert!(m.subscribe(2, "y", "/y", &r, &Found::default()).is_err());
    // Never below the memory in use, nor below what the kernel can hold.
    for (body, field, says) in [
        (json!({"mem": 50 << 20}), "mem", "uses"),
        (json!({"mem": 1024}), "mem", "4 MiB"),
        (json!({"cpu": 5}), "cpu", "smallest"),
    ] {
        let e = m.set_direct(3, "x", "/x", &set(body.clone()), &found).unwrap_err();
        assert!(matches!(&e, ManageError::Field(f) if f.field == field && f.message.contains(says)), "{body}: {e}");
    }
    for (body, field) in
        [(json!({}), "body"), (json!({"gpu": 1}), "gpu"), (json!({"cpu": -1}), "cpu"), (json!(1), "body")]
    {
        assert_eq!(super::direct::parse(&body).unwrap_err().field, field, "{body}");
    }
    // Kept across a restart; null removes the limit and the record.
    drop(m);
    let mut m = manager(tmp.path(), &fake, 2000);
    assert_eq!(m.direct_of("/x"), BTreeMap::from([(Resource::Cpu, 500), (Resource::Mem, 256 << 20)]));
    m.set_direct(4, "x", "/x", &set(json!({"cpu": null})), &found).unwrap();
    assert_eq!(fake.get("/x", Resource::Cpu), None);
    assert_eq!(m.direct_of("/x").len(), 1);
    // A resource its policy manages is the policy's; subscribing takes it over.
    let r = req(json!({"resources": {"mem": {"min": 128 << 20, "max": 1 << 30}}}));
    m.subscribe(5, "x", "/x", &r, &found).unwrap();
    assert!(m.direct_of("/x").is_empty(), "the subscription took memory over");
    let e = m.set_direct(6, "x", "/x", &set(json!({"mem": 300 << 20})), &found).unwrap_err();
    assert!(matches!(&e, ManageError::Conflict { field, .. } if field == "mem"), "{e}");
    // Not the agent's own cgroup.
    let mut m = m.with_own_cgroups(vec!["/agent/inner".into()]);
    let e = m.set_direct(7, "agent", "/agent", &set(json!({"cpu": 100})), &Found::default()).unwrap_err();
    assert!(matches!(e, ManageError::Forbidden { .. }));
}

#[test]
fn cpu_placement_follows_the_limit_spreads_and_puts_the_cpuset_back() {
    use crate::topology::{Cpu, Topology};
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    // One socket, two cores of two threads: CPUs 0 and 2 on core 0, 1 and 3 on core 1.
    let topo = Topology { cpus: (0..4).map(|cpu| Cpu { cpu, core: cpu % 2, socket: 0 }).collect() };
    let mut m = manager(tmp.path(), &fake, 4000).with_topology(topo, false);
    let sub =
        |cur: u64| req(json!({"cpu_placement": true, "resources": {"cpu": {"min": 100, "max": 4000, "current": cur}}}));
    m.subscribe(0, "a", "/a", &sub(1500), &Found::default()).unwrap();
    assert_eq!(m.get("a").unwrap().cpus, vec![0, 1], "1500 millicores: two physical cores, not siblings");
    assert_eq!(fake.cpus.lock().unwrap()["/a"], "0-1");
    assert_eq!(m.get("a").unwrap().original_cpus.as_deref(), Some("0-3"));
    m.subscribe(0, "b", "/b", &sub(500), &Found::default()).unwrap();
    assert_eq!(m.get("b").unwrap().cpus, vec![2], "the next container gets a CPU of its own");
    assert!(all_events(&m).iter().any(|e| e.container == "b" && e.reason.contains("cpuset unplaced -> 2 (1 CPUs")));
    // Throttled: CPU raised past two cores, and the core set with it.
    for t in 1..=3 {
        let s = sample(&fake, "/a", t * 200, 1500, 400_000, 10 << 20);
        m.step(t * 200, &HashMap::from([("a", &s)]));
    }
    let limit = fake.get("/a", Resource::Cpu).unwrap();
    assert!(limit > 2000, "raised: {limit}");
    assert_eq!(m.get("a").unwrap().cpus.len(), crate::topology::cpus_for(limit));
    assert_eq!(fake.cpus.lock().unwrap()["/a"], crate::topology::format_list(&m.get("a").unwrap().cpus));
    // A cpuset rewritten behind its back (a container restarted in a new
    // cgroup) is placed again at the next placement check (here a ceiling).
    fake.cpus.lock().unwrap().insert("/b".into(), "0-3".into());
    m.set_ceiling(8, "b", Some(std::collections::BTreeMap::from([(Resource::Cpu, 900)]))).unwrap();
    assert_eq!(fake.cpus.lock().unwrap()["/b"], "2");
    // Kept with the subscription; ended, the cpuset found is back.
    drop(m);
    let mut m = manager(tmp.path(), &fake, 4000);
    assert_eq!(m.assigned()["b"], vec![2]);
    m.unsubscribe(9, "a", false).unwrap();
    assert_eq!(fake.cpus.lock().unwrap()["/a"], "0-3");
    // No topology (this manager was given none): refused, naming the field.
    let e = m.subscribe(0, "c", "/c", &sub(500), &Found::default()).unwrap_err();
    assert!(matches!(e, ManageError::Field(f) if f.field == "cpu_placement"));
    let e = super::model::parse_subscribe(
        &json!({"cpu_placement": true, "resources": {"mem": {"min": 1, "max": 1 << 30}}}),
    );
    assert_eq!(e.unwrap_err().field, "cpu_placement");
}

#[test]
fn memory_watched_names_managed_memory_under_a_raising_policy_and_says_when_it_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let mem = json!({"min": 1 << 20, "max": GIB, "current": 64 << 20});
    let cpu = json!({"min": 100, "max": 1000, "current": 500});
    // Names out of cgroup order, one without memory, one under a policy
    // that does not raise waiting memory.
    m.subscribe(0, "b", "/z/b", &req(json!({"policy": "follow", "resources": {"mem": mem}})), &Found::default())
        .unwrap();
    m.subscribe(
        0,
        "a",
        "/y/a",
        &req(json!({"policy": "follow", "resources": {"mem": mem, "cpu": cpu}})),
        &Found::default(),
    )
    .unwrap();
    m.subscribe(0, "c", "/x/c", &req(json!({"policy": "follow", "resources": {"cpu": cpu}})), &Found::default())
        .unwrap();
    let classic = req(json!({"policy": "classic", "resources": {"mem": mem}}));
    m.subscribe(0, "ab", "/w/ab", &classic, &Found::default()).unwrap();
    let mut watched = Vec::new();
    assert!(m.memory_watched_into(&mut watched));
    assert_eq!(watched, ["/y/a", "/z/b"]);
    assert!(!m.memory_watched_into(&mut watched), "unchanged");
    assert_eq!(watched, ["/y/a", "/z/b"]);
    m.unsubscribe(0, "a", false).unwrap();
    assert!(m.memory_watched_into(&mut watched));
    assert_eq!(watched, ["/z/b"]);
    // The same name, memory dropped: no longer watched.
    m.subscribe(0, "b", "/z/b", &req(json!({"policy": "follow", "resources": {"cpu": cpu}})), &Found::default())
        .unwrap();
    assert!(m.memory_watched_into(&mut watched));
    assert!(watched.is_empty());
}

#[test]
fn every_change_to_a_subscription_moves_the_save_count() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut m = manager(tmp.path(), &fake, 4000);
    let r = |current: u64| req(json!({"resources": {"cpu": {"min": 100, "max": 1000, "current": current}}}));
    let mut saves = m.saves();
    let moved = |m: &Manager, saves: &mut u64, what: &str| {
        assert!(m.saves() > *saves, "{what}: not saved");
        *saves = m.saves();
    };
    m.subscribe(0, "a", "/a", &r(500), &Found::default()).unwrap();
    moved(&m, &mut saves, "subscribed");
    let mut out = HashMap::new();
    m.fill_known_limits(&mut out, true);
    assert_eq!(out["/a"], [(Resource::Cpu, Some(500))]);
    m.subscribe(0, "a", "/a", &r(700), &Found::default()).unwrap();
    moved(&m, &mut saves, "a new starting limit");
    // The step adopting a limit changed outside.
    let mut s = sample(&fake, "/a", 1_000, 100, 0, 1);
    s.resources.cpu.current = Some(900);
    m.step(1_000, &HashMap::from([("a", &s)]));
    assert_eq!(m.get("a").unwrap().limits[&Resource::Cpu], Some(900));
    moved(&m, &mut saves, "adopted");
    m.fill_known_limits(&mut out, false);
    assert_eq!(out["/a"], [(Resource::Cpu, Some(900))]);
    // A step that changes nothing saves nothing.
    let mut s = sample(&fake, "/a", 1_200, 100, 0, 1);
    s.resources.cpu.current = Some(900);
    m.step(1_200, &HashMap::from([("a", &s)]));
    assert_eq!(m.saves(), saves, "an unchanged tick");
    m.unsubscribe(2_000, "a", false).unwrap();
    moved(&m, &mut saves, "unsubscribed");
}
