//! The planner's invariants over random hosts, bounds, ceilings and
//! measurements, with every policy: every limit it writes lies within the
//! user's bounds and under the ceiling, memory is never set below what is
//! in use (plus headroom), memory limits are whole pages, and the limits on
//! the host never add up to more than it has (when the minimums and the
//! memory in use fit at all).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use policies::{
    BoundaryType, HostCapacity, MIB, PolicyConfig, Resource,
    planner::{Bounds, ContainerState, Observation, Planner, ResourceState, mem_floor},
};
use proptest::prelude::*;

const POLICIES: [&str; 6] = ["follow", "fast", "classic-deployed", "classic-defaults", "static", "vpa"];

#[derive(Debug, Clone)]
struct Box1 {
    policy: usize,
    cpu: (u64, u64),
    mem_pages: (u64, u64),
    ceiling: Option<u64>,
    priority: u32,
}

fn container() -> impl Strategy<Value = Box1> {
    (0..POLICIES.len(), 10u64..2000, 0u64..4000, 16u64..4096, 0u64..65536, proptest::option::of(10u64..6000), 0u32..3)
        .prop_map(|(policy, cmin, cspan, mmin, mspan, ceiling, priority)| Box1 {
            policy,
            cpu: (cmin, cmin + cspan),
            mem_pages: (mmin, mmin + mspan),
            ceiling,
            priority,
        })
}

/// One tick's measurement of one container: cpu usage, throttled time,
/// working set in pages, stall, OOM kill.
fn tick() -> impl Strategy<Value = (u64, u64, u64, u64, bool)> {
    (0u64..8000, 0u64..400_000, 0u64..80_000, 0u64..200_000, proptest::bool::weighted(0.05))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn planner_limits_stay_within_bounds_floors_and_capacity(
        boxes in proptest::collection::vec(container(), 1..5),
        ticks in proptest::collection::vec(proptest::collection::vec(tick(), 5), 20..80),
        cpu_cap in 500u64..20_000,
        mem_cap_pages in 1_000u64..300_000,
    ) {
        let page = 4096;
        let capacity = HostCapacity::new().with(Resource::Cpu, cpu_cap).with(Resource::Mem, mem_cap_pages * page);
        let mut planner = Planner::new();
        let names: Vec<String> = (0..boxes.len()).map(|i| format!("c{i}")).collect();
        let mut limits: Vec<BTreeMap<Resource, Option<u64>>> = vec![BTreeMap::new(); boxes.len()];
        let mut ooms = vec![0u64; boxes.len()];
        for (i, b) in boxes.iter().enumerate() {
            planner.insert(&names[i], PolicyConfig::by_name(POLICIES[b.policy]).unwrap().build().unwrap());
        }
        let bounds = |b: &Box1, r: Resource| {
            let (min, max) = if r == Resource::Cpu { b.cpu } else { (b.mem_pages.0 * page, b.mem_pages.1 * page) };
            Bounds { min, max, guard: true, boundary: 10, boundary_type: BoundaryType::PercentOfMax }
        };
        for (k, row) in ticks.iter().enumerate() {
            let now = (k as u64 + 1) * 1_000;
            let mut usage_mem = vec![0u64; boxes.len()];
            for (i, b) in boxes.iter().enumerate() {
                let (cpu, thr, pages, stall, oom) = row[i % row.len()];
                ooms[i] += u64::from(oom);
                usage_mem[i] = pages * page / 3 + MIB;
                let _ = b;
                planner.observe(&names[i], &Observation {
                    time_ms: now,
                    interval_ms: 1_000,
                    usage: BTreeMap::from([(Resource::Cpu, cpu), (Resource::Mem, usage_mem[i])]),
                    cpu_throttled_usec: thr,
                    mem_stall_usec: stall,
                    oom_kills: Some(ooms[i]),
                    mem_waiting: stall > 150_000,
                    mem_reclaims: stall / 50_000,
                    mem_refault_bytes: stall * 4096,
                    mem_refault_stall_usec: stall / 3,
                });
            }
            let states: Vec<ContainerState> = boxes.iter().enumerate().map(|(i, b)| ContainerState {
                name: names[i].clone(),
                priority: b.priority,
                resources: [Resource::Cpu, Resource::Mem].iter().map(|&r| ResourceState {
                    resource: r,
                    bounds: bounds(b, r),
                    ceiling: if r == Resource::Cpu { b.ceiling } else { None },
                    in_force: limits[i].get(&r).copied().flatten(),
                }).collect(),
            }).collect();
            let cpu_mins: u64 = boxes.iter().map(|b| b.cpu.0).sum();
            let mem_mins: u64 = boxes.iter().map(|b| b.mem_pages.0 * page).sum();
            for ch in planner.decide(now, &states, &capacity) {
                let i = names.iter().position(|n| *n == ch.container).unwrap();
                let b = bounds(&boxes[i], ch.resource);
                prop_assert!(ch.new <= b.max, "{ch:?} above {b:?}");
                // Below min only where the minimums cannot all fit (the
                // agent refuses such subscriptions).
                let mins_fit = if ch.resource == Resource::Cpu { cpu_mins <= cpu_cap } else { mem_mins <= mem_cap_pages * page };
                prop_assert!(ch.new >= b.min || !mins_fit, "{ch:?} below {b:?}");
                if ch.resource == Resource::Cpu {
                    prop_assert!(ch.new <= b.effective_max(boxes[i].ceiling), "{ch:?} above the ceiling");
                } else {
                    prop_assert_eq!(ch.new % page, 0, "{:?} not in pages", ch);
                    let floor = mem_floor(usage_mem[i]).min(b.max);
                    prop_assert!(ch.new + page > floor, "{ch:?} below the floor {floor}");
                }
                prop_assert_eq!(ch.old, limits[i].get(&ch.resource).copied().flatten());
                limits[i].insert(ch.resource, Some(ch.new));
            }
            // Capacity holds whenever the minimums and the memory in use fit.
            if cpu_mins <= cpu_cap && limits.iter().all(|l| l.contains_key(&Resource::Cpu)) {
                let total: u64 = limits.iter().filter_map(|l| l[&Resource::Cpu]).sum();
                prop_assert!(total <= cpu_cap, "cpu {total} > {cpu_cap}");
            }
            let mem_need: u64 = boxes.iter().enumerate()
                .map(|(i, b)| (b.mem_pages.0 * page).max(mem_floor(usage_mem[i]).min(b.mem_pages.1 * page)) + page)
                .sum();
            if mem_need <= mem_cap_pages * page && limits.iter().all(|l| l.contains_key(&Resource::Mem)) {
                let total: u64 = limits.iter().filter_map(|l| l[&Resource::Mem]).sum();
                prop_assert!(total <= mem_cap_pages * page, "mem {total} > cap");
            }
        }
    }
}
