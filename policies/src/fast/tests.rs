#![allow(clippy::unwrap_used)]

use super::*;
use crate::resource::{GIB, MB, MIB};
use crate::spec::BoundaryType;

fn spec(min: u64, max: u64, current: u64) -> ResourceSpec {
    ResourceSpec::try_new(min, max, current, 10, BoundaryType::PercentOfMax).unwrap()
}

struct H {
    p: Fast,
    specs: ResourceSpecs,
    r: Resource,
    t: u64,
}

impl H {
    fn new(r: Resource, s: ResourceSpec) -> H {
        let mut specs = ResourceSpecs::new();
        specs.insert(r, s);
        H { p: Fast::new(FastConfig::default()).unwrap(), specs, r, t: 0 }
    }

    fn current(&self) -> u64 {
        self.specs.get(self.r).unwrap().current()
    }

    /// One 200 ms tick of two 100 ms samples of `demand`, served as the
    /// simulator would (throttled for cpu, capped for bandwidth).
    fn tick(&mut self, demand: u64) -> Vec<Decision> {
        for _ in 0..2 {
            self.t += 100;
            let limit = self.current();
            let used = demand.min(limit);
            let mut s = Sample::new(self.t, 100, used);
            if self.r == Resource::Cpu {
                s.cpu_throttled_usec = (demand - used) * 100;
            }
            self.p.observe(self.r, &s);
        }
        self.decide()
    }

    fn decide(&mut self) -> Vec<Decision> {
        let ds = self.p.decide(self.t, &self.specs);
        for d in &ds {
            self.specs.get_mut(d.resource).unwrap().set_current(d.new).unwrap();
        }
        ds
    }

    fn run(&mut self, demand: u64, secs: u64) -> usize {
        (0..secs * 5).map(|_| self.tick(demand).len()).sum()
    }
}

#[test]
fn throttling_raises_in_one_tick_by_the_unmet_demand() {
    let mut h = H::new(Resource::Cpu, spec(100, 8000, 1000));
    let ds = h.tick(2000);
    assert_eq!(ds.len(), 1);
    // Demand estimate 1000 used + 1000 unmet; +15 % + 50.
    assert_eq!(ds[0].new, 2350);
    assert_eq!(ds[0].reason, Reason::Throttled { unmet: 1000 });
}

#[test]
fn usage_crossing_upper_raises_before_throttling() {
    let mut h = H::new(Resource::Cpu, spec(100, 8000, 1000));
    let ds = h.tick(950);
    assert_eq!(ds[0].reason, Reason::AboveUpper { usage: 950 });
    assert!(ds[0].new >= 1090);
}

#[test]
fn shrinks_after_the_hold_toward_p95_plus_headroom() {
    let mut h = H::new(Resource::Cpu, spec(100, 8000, 4000));
    // 5 s of history and 5 s over target are needed: nothing before.
    let mut first = None;
    for i in 1..=100 {
        if !h.tick(1000).is_empty() {
            first = Some(i);
            break;
        }
    }
    let ticks = first.unwrap();
    assert!((25..=55).contains(&ticks), "shrank after {ticks} ticks");
    assert_eq!(h.current(), 1000 * 115 / 100 + 50);
    // Steady: no more changes.
    assert_eq!(h.run(1000, 120), 0);
}

#[test]
fn steady_noisy_load_makes_no_churn() {
    let mut h = H::new(Resource::Cpu, spec(100, 8000, 4000));
    h.run(1000, 30);
    let noisy = [960, 1040, 1000, 1020, 980, 1050, 950];
    let mut changes = 0;
    for i in 0..1000 {
        changes += h.tick(noisy[i % noisy.len()]).len();
    }
    assert_eq!(changes, 0);
}

#[test]
fn memory_oom_raises_by_half_and_pressure_by_a_fifth() {
    let mut h = H::new(Resource::Mem, spec(256 * MIB, 16 * GIB, 2 * GIB));
    h.p.observe(Resource::Mem, &Sample::new(100, 100, 0).with_oom_kills(1));
    h.t = 100;
    let ds = h.decide();
    assert_eq!(ds[0].reason, Reason::OomKill { kills: 1 });
    assert_eq!(ds[0].new, 3 * GIB);
    // 20 ms of stall in 100 ms is well above 1 %.
    h.p.observe(Resource::Mem, &Sample::new(200, 100, GIB).with_pressure(20_000));
    h.t = 200;
    let ds = h.decide();
    assert!(matches!(ds[0].reason, Reason::MemoryPressure { .. }));
    assert_eq!(ds[0].new, 3 * GIB * 120 / 100);
}

#[test]
fn memory_lowers_slowly_and_never_below_the_peak() {
    let mut h = H::new(Resource::Mem, spec(256 * MIB, 16 * GIB, 8 * GIB));
    let mut news = Vec::new();
    for _ in 0..(5 * 600) {
        for d in h.tick(GIB) {
            news.push(d.new);
        }
    }
    // Each step removes at most 20 %.
    let mut prev = 8 * GIB;
    for &n in &news {
        assert!(n * 100 >= prev * 80, "{prev} -> {n}");
        prev = n;
    }
    // It ends within the hysteresis band above peak + 15 % + 64 MiB.
    let target = GIB * 115 / 100 + 64 * MIB;
    assert!(h.current() >= target && h.current() * 100 <= target * 120);
}

#[test]
fn saturated_bandwidth_doubles() {
    let mut h = H::new(Resource::NetTx, spec(MB, 1000 * MB, 10 * MB));
    let ds = h.tick(100 * MB);
    assert_eq!(ds[0].reason, Reason::Saturated { usage: 10 * MB });
    assert_eq!(ds[0].new, 20 * MB);
    // A few ticks cover a tenfold step.
    let mut ticks = 1;
    while h.current() < 100 * MB {
        h.tick(100 * MB);
        ticks += 1;
    }
    assert!(ticks <= 4, "{ticks} ticks");
}

#[test]
fn never_beyond_bounds() {
    let mut h = H::new(Resource::Cpu, spec(500, 2000, 1000));
    h.run(5000, 5);
    assert_eq!(h.current(), 2000);
    h.run(0, 60);
    assert_eq!(h.current(), 500);
}

#[test]
fn invalid_parameters_are_typed_errors() {
    let mut c = FastConfig::default();
    c.mem.percentile = 0;
    let e = Fast::new(c).unwrap_err();
    assert!(e.to_string().contains("mem.percentile"), "{e}");
    let c = FastConfig { tick_ms: 0, ..FastConfig::default() };
    assert!(Fast::new(c).is_err());
}
