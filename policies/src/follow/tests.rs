#![allow(clippy::unwrap_used)]

use super::*;
use crate::resource::{MIB, Resource};
use crate::spec::BoundaryType;

fn spec(min: u64, max: u64, cur: u64) -> ResourceSpecs {
    let mut s = ResourceSpecs::new();
    s.insert(Resource::Cpu, ResourceSpec::try_new(min, max, cur, 10, BoundaryType::PercentOfMax).unwrap());
    s
}

fn mem_spec(cur: u64) -> ResourceSpecs {
    let mut s = ResourceSpecs::new();
    s.insert(Resource::Mem, ResourceSpec::try_new(64 * MIB, 8192 * MIB, cur, 10, BoundaryType::PercentOfMax).unwrap());
    s
}

/// Runs `ticks` of 200 ms with CPU demand `demand(t)` served up to the
/// limit; returns the limits after each tick.
fn run_cpu(p: &mut Follow, start: u64, ticks: u64, demand: impl Fn(u64) -> u64) -> Vec<u64> {
    let mut cur = start;
    let mut out = Vec::new();
    for k in 1..=ticks {
        let t = k * 200;
        let d = demand(t);
        let used = d.min(cur);
        p.observe(Resource::Cpu, &Sample::new(t, 200, used).with_throttled((d - used) * 200));
        if let Some(dec) = p.decide(t, &spec(100, 4000, cur)).into_iter().next() {
            cur = dec.new;
        }
        out.push(cur);
    }
    out
}

#[test]
fn steady_cpu_ends_a_few_percent_above_use() {
    let mut p = Follow::new(FollowConfig::default()).unwrap();
    let lim = run_cpu(&mut p, 4000, 100, |_| 1000);
    let last = *lim.last().unwrap();
    // 1000 x 1.08 + 20, and no changes once there.
    assert_eq!(last, 1100);
    assert!(lim[50..].iter().all(|&l| l == last), "{lim:?}");
    assert!(lim.iter().take(5).all(|&l| l == 4000), "no shrink before the hold: {lim:?}");
}

#[test]
fn throttled_demand_is_met_within_a_tick() {
    let mut p = Follow::new(FollowConfig::default()).unwrap();
    let lim = run_cpu(&mut p, 4000, 100, |t| if t < 10_000 { 500 } else { 2000 });
    // Shrunk to ~560 first, then one tick after the step the limit covers 2000.
    assert!(lim[40] < 600, "{lim:?}");
    let step = 10_000 / 200;
    assert!(lim[step - 1] >= 2000, "{:?}", &lim[step - 3..step + 3]);
}

#[test]
fn bursty_demand_gets_headroom_until_slowed_no_more_than_allowed() {
    let cfg = FollowConfig::default();
    let mut p = Follow::new(cfg.clone()).unwrap();
    // One core, with a second core for 400 ms every 2.2 s.
    let demand = |t: u64| if t % 2_200 < 400 { 2000 } else { 1000 };
    let lim = run_cpu(&mut p, 4000, 1000, demand);
    let (mut unmet, mut total) = (0u64, 0u64);
    for (k, &l) in lim.iter().enumerate().skip(500) {
        let d = demand((k as u64 + 2) * 200);
        unmet += d.saturating_sub(l);
        total += d;
    }
    let share = unmet * 1000 / total;
    // Without adapting, each burst would leave 7 % of the demand unmet.
    assert!(share <= u64::from(cfg.slowdown_permille) * 3, "slowed by {share} per mille");
}

#[test]
fn memory_follows_the_working_set_down_and_up() {
    let mut p = Follow::new(FollowConfig::default()).unwrap();
    let mut cur = 8192 * MIB;
    let mut limits = Vec::new();
    for k in 1..=200u64 {
        let t = k * 200;
        // 1 GiB for 10 s, 200 MiB for 10 s, then growing 100 MiB a tick to 2 GiB.
        let ws = if t <= 10_000 {
            1024 * MIB
        } else if t <= 20_000 {
            200 * MIB
        } else {
            (200 + (t - 20_000) / 200 * 100).min(2048) * MIB
        };
        let waiting = ws > cur;
        p.observe(Resource::Mem, &Sample::new(t, 200, ws.min(cur)).with_waiting(waiting));
        if let Some(d) = p.decide(t, &mem_spec(cur)).into_iter().next() {
            assert!(d.new >= ws.min(cur), "never below usage: {d}");
            cur = d.new;
        }
        limits.push((t, ws, cur));
    }
    let at = |t: u64| limits.iter().find(|x| x.0 == t).unwrap().2;
    // Down to ~1.1x + 16 MiB of 1 GiB within a few seconds.
    assert!(at(6_000) < 1200 * MIB, "{}", at(6_000) / MIB);
    assert!(at(16_000) < 260 * MIB, "{}", at(16_000) / MIB);
    // Growth is followed: waiting ticks are few.
    let waits = limits.iter().filter(|x| x.1 > x.2).count();
    assert!(waits <= 6, "{waits} ticks waiting");
    assert!(at(40_000) >= 2048 * MIB);
}

#[test]
fn an_oom_kill_raises_memory_by_half() {
    let mut p = Follow::new(FollowConfig::default()).unwrap();
    p.observe(Resource::Mem, &Sample::new(200, 200, 100 * MIB).with_oom_kills(1));
    let d = p.decide(200, &mem_spec(200 * MIB)).pop().unwrap();
    assert_eq!(d.new, 300 * MIB);
    assert_eq!(d.reason, Reason::OomKill { kills: 1 });
}

/// A job with a 100 MiB working set re-reading a file the limit evicts:
/// `refault(t)` gives each second's cache read back and the I/O stall it
/// caused (reported once a second, as the agent reads `memory.stat`).
fn run_refaults(cfg: FollowConfig, refault: impl Fn(u64) -> (u64, u64)) -> Vec<(u64, u64, Reason)> {
    let mut p = Follow::new(cfg).unwrap();
    let mut cur = 200 * MIB;
    let mut out = Vec::new();
    for k in 1..=150u64 {
        let t = k * 200;
        let (bytes, stall) = if t % 1000 == 0 { refault(t) } else { (0, 0) };
        p.observe(Resource::Mem, &Sample::new(t, 200, 100 * MIB).with_refaults(bytes, stall));
        if let Some(d) = p.decide(t, &mem_spec(cur)).into_iter().next() {
            cur = d.new;
            out.push((t, cur, d.reason));
        }
    }
    out
}

#[test]
fn cache_read_back_gets_room_while_it_slows_the_job_more_than_allowed() {
    // From 5 s to 15 s, 100 MiB a second read back with 100 ms of I/O
    // stall a second (10 % of the time, over the 1 % allowed).
    let busy = |t: u64| if (5_000..=15_000).contains(&t) { (100 * MIB, 100_000) } else { (0, 0) };
    let changes = run_refaults(FollowConfig::default(), busy);
    let limit_at = |t: u64| changes.iter().rev().find(|c| c.0 <= t).map_or(200 * MIB, |c| c.1);
    // Shrunk to the working set first (100 MiB x 1.1 + 16 MiB)...
    assert_eq!(limit_at(4_800), 126 * MIB);
    // ...then raised for the cache read back, and kept up while it is.
    let first = changes.iter().find(|c| matches!(c.2, Reason::MemoryRefault { .. })).unwrap();
    assert_eq!(first.0, 5_000, "raised on the tick the refaults are seen");
    assert!(limit_at(14_800) >= 126 * MIB + 900 * MIB, "{}", limit_at(14_800) / MIB);
    // Ten seconds after the re-reading stops, back to the working set.
    assert_eq!(limit_at(30_000), 126 * MIB, "{changes:?}");

    // The same re-reading within the allowed slowdown (0.5 %) buys nothing.
    let cheap = |t: u64| if (5_000..=15_000).contains(&t) { (100 * MIB, 5_000) } else { (0, 0) };
    let changes = run_refaults(FollowConfig::default(), cheap);
    assert!(changes.iter().all(|c| c.1 <= 200 * MIB), "{changes:?}");
    // A user who allows 20 % pays for no cache even at 10 % stall.
    let relaxed = FollowConfig { slowdown_permille: 200, ..FollowConfig::default() };
    let changes = run_refaults(relaxed, busy);
    assert!(changes.iter().all(|c| c.1 <= 200 * MIB), "{changes:?}");
}

/// The sliding-window maximum is the naive maximum of the window, whatever
/// the order of values, through pruning by time.
#[test]
fn the_window_peak_is_the_maximum_of_what_is_in_the_window() {
    use std::collections::VecDeque;
    let mut q = VecDeque::new();
    let mut all: Vec<(u64, u64)> = Vec::new();
    let mut x: u64 = 12345;
    let window = 3_000;
    for t in (1_000..20_000).step_by(200) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v = (x >> 33) % 1000;
        super::push_max(&mut q, t, v);
        all.push((t, v));
        while q.front().is_some_and(|&(ft, _)| ft <= t.saturating_sub(window)) {
            q.pop_front();
        }
        let naive = all.iter().filter(|&&(at, _)| at > t.saturating_sub(window)).map(|&(_, v)| v).max().unwrap();
        assert_eq!(q.front().map(|&(_, v)| v), Some(naive), "at {t}");
        assert!(q.len() <= 16, "only candidates are kept: {}", q.len());
    }
}
