#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::PolicyConfig;
use crate::resource::MIB;

fn bounds(min: u64, max: u64) -> Bounds {
    Bounds { min, max, guard: true, boundary: 25, boundary_type: BoundaryType::PercentOfMax }
}

fn state(name: &str, r: Resource, b: Bounds, in_force: Option<u64>) -> ContainerState {
    ContainerState {
        name: name.into(),
        priority: 0,
        resources: vec![ResourceState { resource: r, bounds: b, ceiling: None, in_force }],
    }
}

fn obs(t: u64, r: Resource, usage: u64) -> Observation {
    Observation { time_ms: t, interval_ms: 200, usage: BTreeMap::from([(r, usage)]), ..Observation::default() }
}

#[test]
fn memory_never_below_usage_plus_headroom_and_in_pages() {
    let mut p = Planner::new();
    p.insert("a", PolicyConfig::Static.build().unwrap());
    // Static wants max; a ceiling below the floor still cannot take memory in use.
    let b = bounds(64 * MIB, 4096 * MIB);
    p.observe("a", &obs(200, Resource::Mem, 1000 * MIB + 123));
    let mut s = state("a", Resource::Mem, b, Some(512 * MIB));
    s.resources[0].ceiling = Some(100 * MIB);
    let ch = p.decide(200, &[s], &HostCapacity::new());
    assert_eq!(ch.len(), 1);
    assert!(ch[0].new >= mem_floor(1000 * MIB + 123) - 4095, "{ch:?}");
    assert_eq!(ch[0].new % 4096, 0);
    assert!(ch[0].reason.starts_with("memory floor"), "{}", ch[0].reason);
}

#[test]
fn classic_with_its_floor_off_is_floored_at_usage_without_headroom() {
    let usage = 1000 * MIB + 123;
    for (floor_on, want) in [(true, mem_floor(usage) / 4096 * 4096), (false, usage.div_ceil(4096) * 4096)] {
        let cfg = crate::classic::ClassicConfig { mem_floor_at_usage: floor_on, ..Default::default() };
        let mut p = Planner::new();
        p.insert("a", PolicyConfig::Classic(cfg).build().unwrap());
        p.observe("a", &obs(200, Resource::Mem, usage));
        let mut s = state("a", Resource::Mem, bounds(64 * MIB, 4096 * MIB), Some(512 * MIB));
        s.resources[0].ceiling = Some(100 * MIB);
        let ch = p.decide(200, &[s], &HostCapacity::new());
        assert_eq!(ch[0].new, want, "floor on: {floor_on}");
        assert!(ch[0].new >= usage);
        let what = if floor_on { "memory floor: usage plus headroom" } else { "memory floor: usage (" };
        assert!(ch[0].reason.starts_with(what), "{}", ch[0].reason);
    }
}

#[test]
fn limits_outside_bounds_are_brought_within() {
    let mut p = Planner::new();
    p.insert("a", PolicyConfig::by_name("fast").unwrap().build().unwrap());
    let ch = p.decide(0, &[state("a", Resource::Cpu, bounds(100, 2000), Some(5000))], &HostCapacity::new());
    assert_eq!((ch[0].old, ch[0].new), (Some(5000), 2000));
    assert_eq!(ch[0].reason, "above the ceiling or max");
    let ch = p.decide(0, &[state("a", Resource::Cpu, bounds(100, 2000), None)], &HostCapacity::new());
    assert_eq!((ch[0].old, ch[0].new), (None, 2000));
    assert_eq!(ch[0].reason, "brought within [min, max]");
    // In bounds and nothing decided: no change.
    assert!(p.decide(0, &[state("a", Resource::Cpu, bounds(100, 2000), Some(700))], &HostCapacity::new()).is_empty());
}

#[test]
fn unmanaged_containers_are_skipped_and_capacity_is_shared() {
    let mut p = Planner::new();
    p.insert("a", PolicyConfig::Static.build().unwrap());
    p.insert("b", PolicyConfig::Static.build().unwrap());
    let cs = [
        state("a", Resource::Cpu, bounds(100, 2000), None),
        state("b", Resource::Cpu, bounds(100, 2000), None),
        state("zz", Resource::Cpu, bounds(1, 5), None),
    ];
    let ch = p.decide(0, &cs, &HostCapacity::new().with(Resource::Cpu, 3000));
    assert_eq!(ch.len(), 2, "{ch:?}");
    assert_eq!(ch.iter().map(|c| c.new).sum::<u64>(), 3000);
    assert!(ch.iter().all(|c| c.limited && c.reason.ends_with("(limited by host capacity)")));
}

#[test]
fn oom_kills_are_counted_as_differences() {
    // fast raises memory on an OOM kill: a counter that stays put is not one.
    let mut p = Planner::new();
    p.insert("a", PolicyConfig::by_name("fast").unwrap().build().unwrap());
    let b = bounds(64 * MIB, 8192 * MIB);
    let mut o = obs(200, Resource::Mem, 100 * MIB);
    o.oom_kills = Some(7);
    p.observe("a", &o);
    let ch = p.decide(200, &[state("a", Resource::Mem, b, Some(1024 * MIB))], &HostCapacity::new());
    assert!(ch.iter().all(|c| !c.reason.contains("OOM")), "{ch:?}");
    o.time_ms = 400;
    o.oom_kills = Some(8);
    p.observe("a", &o);
    let ch = p.decide(400, &[state("a", Resource::Mem, b, Some(1024 * MIB))], &HostCapacity::new());
    assert!(ch[0].reason.contains("1 OOM kill"), "{ch:?}");
    assert!(ch[0].new >= 1536 * MIB);
}

#[test]
fn starting_limits() {
    let b = bounds(64 * MIB, 4096 * MIB);
    let base = StartInput {
        resource: Resource::Mem,
        bounds: b,
        ceiling: None,
        requested: None,
        previous: None,
        policy_start: None,
        in_force: None,
        mem_usage: None,
        free: None,
    };
    assert_eq!(start_limit(&base), 4096 * MIB, "unlimited starts at max");
    assert_eq!(start_limit(&StartInput { in_force: Some(100 * MIB), ..base }), 100 * MIB);
    assert_eq!(start_limit(&StartInput { previous: Some(200 * MIB), in_force: Some(100 * MIB), ..base }), 200 * MIB);
    assert_eq!(start_limit(&StartInput { requested: Some(300 * MIB), previous: Some(200 * MIB), ..base }), 300 * MIB);
    assert_eq!(start_limit(&StartInput { requested: Some(1), mem_usage: Some(500 * MIB), ..base }), 550 * MIB);
    assert_eq!(start_limit(&StartInput { ceiling: Some(1024 * MIB), ..base }), 1024 * MIB);
    let from_usage = StartInput { policy_start: Some(700 * MIB), in_force: Some(2048 * MIB), ..base };
    assert_eq!(start_limit(&from_usage), 700 * MIB, "the policy's start wins over what was in force");
    assert_eq!(start_limit(&StartInput { previous: Some(900 * MIB), ..from_usage }), 900 * MIB);
    assert_eq!(start_limit(&StartInput { free: Some(10), ..base }), 64 * MIB, "never below min");
    let cpu = StartInput { resource: Resource::Cpu, bounds: bounds(100, 2000), free: Some(1500), ..base };
    assert_eq!(start_limit(&cpu), 1500);
}
