//! One test per rule of the original guardian (DESIGN.md, "The guardian
//! policy of the original").

#![allow(clippy::unwrap_used)]

use super::*;
use crate::resource::{GIB, MB, MIB};
use crate::spec::BoundaryType;

/// No delay, one sample per 10 s tick: the window holds exactly the sample
/// of the tick.
fn cfg() -> ClassicConfig {
    ClassicConfig { delay_ms: 0, ..ClassicConfig::deployed() }
}

fn spec(min: u64, max: u64, current: u64) -> ResourceSpec {
    ResourceSpec::try_new(min, max, current, 10, BoundaryType::PercentOfMax).unwrap()
}

/// CPU 100..4000 millicores at 2000: margin 400, upper 1600, lower 1200.
fn cpu() -> ResourceSpec {
    spec(100, 4000, 2000)
}

struct H {
    p: Classic,
    specs: ResourceSpecs,
    r: Resource,
    t: u64,
}

impl H {
    fn new(cfg: ClassicConfig, r: Resource, s: ResourceSpec) -> H {
        let mut specs = ResourceSpecs::new();
        specs.insert(r, s);
        H { p: Classic::new(cfg).unwrap(), specs, r, t: 0 }
    }

    /// Advance one 10 s tick with this usage; apply and return decisions.
    fn tick(&mut self, usage: u64) -> Vec<Decision> {
        self.t += 10_000;
        self.p.observe(self.r, &Sample::new(self.t, 10_000, usage));
        let ds = self.p.decide(self.t, &self.specs);
        for d in &ds {
            self.specs.get_mut(d.resource).unwrap().set_current(d.new).unwrap();
        }
        ds
    }

    fn current(&self) -> u64 {
        self.specs.get(self.r).unwrap().current()
    }

    fn counts(&self) -> Counts {
        self.p.counts(self.r)
    }
}

fn reason(d: &Decision) -> (Direction, u32, u32, i64) {
    match d.reason {
        Reason::ClassicRule { direction, ups, downs, amount } => (direction, ups, downs, amount),
        ref other => panic!("unexpected reason {other}"),
    }
}

#[test]
fn cpu_up_needs_two_up_events_adds_750_and_consumes_two() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    assert!(h.tick(1700).is_empty());
    assert_eq!(h.counts(), Counts { ups: 1, downs: 0 });
    let ds = h.tick(1700);
    assert_eq!(ds.len(), 1);
    assert_eq!((ds[0].old, ds[0].new), (2000, 2750));
    assert_eq!(reason(&ds[0]), (Direction::Up, 2, 0, 750));
    assert_eq!(h.counts(), Counts::default());
}

#[test]
fn up_event_needs_usage_strictly_above_upper() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    for _ in 0..5 {
        assert!(h.tick(1600).is_empty());
    }
    assert_eq!(h.counts(), Counts::default());
}

#[test]
fn window_mean_is_exact_not_truncated() {
    // Two samples, 1600 and 1601: the mean 1600.5 is above upper 1600.
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    h.p.observe(Resource::Cpu, &Sample::new(5_000, 5_000, 1600));
    h.p.observe(Resource::Cpu, &Sample::new(10_000, 5_000, 1601));
    h.t = 10_000;
    assert!(h.p.decide(10_000, &h.specs).is_empty());
    assert_eq!(h.counts().ups, 1);
}

#[test]
fn cpu_up_is_blocked_by_more_than_two_live_downs_until_they_expire() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    for _ in 0..3 {
        assert!(h.tick(1000).is_empty());
    }
    // Downs at 10, 20, 30 s; they expire when ts < now - 120 s.
    loop {
        let ds = h.tick(1700);
        if !ds.is_empty() {
            // At 140 s the down of 10 s has expired: D = 2.
            assert_eq!(h.t, 140_000);
            let (dir, ups, downs, amount) = reason(&ds[0]);
            assert_eq!((dir, ups, downs, amount), (Direction::Up, 11, 2, 750));
            break;
        }
        assert!(h.t < 140_000, "up rule never fired");
    }
    // U = 11 > D = 2: two ups consumed, oldest first.
    assert_eq!(h.counts(), Counts { ups: 9, downs: 2 });
}

#[test]
fn cpu_down_needs_six_downs_and_fits_to_usage() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    for _ in 0..5 {
        assert!(h.tick(1000).is_empty());
    }
    let ds = h.tick(1000);
    // fit_to_usage: 1000 + max(400 / 2, 1) + 400 - 2000 = -400.
    assert_eq!(reason(&ds[0]), (Direction::Down, 0, 6, -400));
    assert_eq!(ds[0].new, 1600);
    assert_eq!(h.counts(), Counts::default());
    // Usage now sits between lower 800 and upper 1200: settled.
    for _ in 0..30 {
        assert!(h.tick(1000).is_empty());
    }
}

#[test]
fn fit_to_usage_truncates_the_mean() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    let mut ds = Vec::new();
    for _ in 0..6 {
        h.t += 10_000;
        h.p.observe(Resource::Cpu, &Sample::new(h.t - 5_000, 5_000, 1000));
        h.p.observe(Resource::Cpu, &Sample::new(h.t, 5_000, 1001));
        ds = h.p.decide(h.t, &h.specs);
    }
    // trunc(1000.5 + 200 + 400) - 2000 = -400.
    assert_eq!(reason(&ds[0]).3, -400);
}

#[test]
fn cpu_down_is_blocked_by_any_live_up() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    assert!(h.tick(1700).is_empty());
    loop {
        let ds = h.tick(1000);
        if !ds.is_empty() {
            // The up of 10 s expires at 140 s; 13 downs live then.
            assert_eq!(h.t, 140_000);
            assert_eq!(reason(&ds[0]), (Direction::Down, 0, 13, -400));
            break;
        }
        assert!(h.t < 140_000, "down rule never fired");
    }
    assert_eq!(h.counts(), Counts { ups: 0, downs: 7 });
}

#[test]
fn code_defaults_never_scale_cpu_down() {
    let mut h = H::new(ClassicConfig::code_defaults(), Resource::Cpu, cpu());
    for _ in 0..100 {
        assert!(h.tick(1000).is_empty());
        assert!(h.counts().downs <= 5);
    }
}

#[test]
fn expiry_is_strict_at_the_timeout() {
    let short = ClassicConfig { event_timeout_ms: 20_000, ..cfg() };
    // Ups at 10 s and 30 s: at 30 s, 10 < 30 - 20 is false, both live.
    let mut h = H::new(short.clone(), Resource::Cpu, cpu());
    assert!(h.tick(1700).is_empty());
    assert!(h.tick(1400).is_empty());
    assert_eq!(h.tick(1700).len(), 1);
    // Ups at 10 s and 40 s: at 40 s the first has expired.
    let mut h = H::new(short, Resource::Cpu, cpu());
    assert!(h.tick(1700).is_empty());
    assert!(h.tick(1400).is_empty());
    assert!(h.tick(1400).is_empty());
    assert!(h.tick(1700).is_empty());
    assert_eq!(h.counts().ups, 1);
}

#[test]
fn delay_shifts_the_window() {
    let delayed = ClassicConfig { delay_ms: 20_000, ..cfg() };
    let mut h = H::new(delayed, Resource::Cpu, cpu());
    for s in 1..=70u64 {
        let usage = if s <= 40 { 1000 } else { 3000 };
        h.p.observe(Resource::Cpu, &Sample::new(s * 1000, 1000, usage));
        if s == 60 {
            // Window (30 s, 40 s]: still the low usage.
            h.p.decide(60_000, &h.specs);
            assert_eq!(h.counts(), Counts { ups: 0, downs: 1 });
        }
    }
    // Window (40 s, 50 s]: the high usage.
    h.p.decide(70_000, &h.specs);
    assert_eq!(h.counts(), Counts { ups: 1, downs: 1 });
}

#[test]
fn zero_usage_and_lower_at_min_make_no_down_event() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    for _ in 0..10 {
        assert!(h.tick(0).is_empty());
    }
    assert_eq!(h.counts(), Counts::default());
    // min 1200 = lower: `lower > min` fails.
    let mut h = H::new(cfg(), Resource::Cpu, spec(1200, 4000, 2000));
    for _ in 0..10 {
        assert!(h.tick(500).is_empty());
    }
    assert_eq!(h.counts(), Counts::default());
}

#[test]
fn no_up_event_at_max() {
    let mut h = H::new(cfg(), Resource::Cpu, spec(100, 4000, 4000));
    for _ in 0..5 {
        assert!(h.tick(4000).is_empty());
    }
    assert_eq!(h.counts(), Counts::default());
}

#[test]
fn trim_keeps_lower_at_min_so_scale_down_stops_at_min_plus_two_margins() {
    // min 1000, current 4000: upper 3600, lower 3200.
    let mut h = H::new(cfg(), Resource::Cpu, spec(1000, 4000, 4000));
    let mut ds = Vec::new();
    for _ in 0..6 {
        ds = h.tick(100);
    }
    // fit: 100 + 200 + 400 - 4000 = -3300; lower 3200 - 3300 < 1000, so the
    // amount becomes 1000 - 3200 = -2200: current 1800 = min + 2 x 400.
    assert_eq!(reason(&ds[0]), (Direction::Down, 0, 6, -2200));
    assert_eq!(h.current(), 1800);
    // Now lower == min: no more down events.
    for _ in 0..20 {
        assert!(h.tick(100).is_empty());
    }
}

#[test]
fn trim_cuts_up_to_max() {
    let mut h = H::new(cfg(), Resource::Cpu, spec(100, 4000, 3800));
    h.tick(3700);
    let ds = h.tick(3700);
    assert_eq!(reason(&ds[0]).3, 200);
    assert_eq!(h.current(), 4000);
}

fn with_cpu_up(amount: Amount) -> ClassicConfig {
    let mut c = cfg();
    c.rules.cpu.up = Some(Rule { events: 1, max_opposite: None, consume: 1, amount, active: true });
    c
}

#[test]
fn proportional_amount_is_truncated_and_capped_at_one() {
    // (1800 - 1600) / (2000 - 1600) = 0.5 of 750.
    let mut h = H::new(with_cpu_up(Amount::Proportional(750)), Resource::Cpu, cpu());
    assert_eq!(reason(&h.tick(1800)[0]).3, 375);
    // current 2375: margin 400, upper 1975; (2100 - 1975) / 400 * 10 = 3.125.
    let mut h2 = H::new(with_cpu_up(Amount::Proportional(10)), Resource::Cpu, cpu());
    h2.specs.get_mut(Resource::Cpu).unwrap().set_current(2375).unwrap();
    assert_eq!(reason(&h2.tick(2100)[0]).3, 3);
    // Usage past current: ratio capped at 1.
    assert_eq!(reason(&h.tick(5000)[0]).3, 750);
}

#[test]
fn events_are_consumed_even_when_the_amount_is_zero() {
    // trunc((1601 - 1600) / 400 * 10) = 0: the rule fires, consumes its
    // event, and changes nothing.
    let mut h = H::new(with_cpu_up(Amount::Proportional(10)), Resource::Cpu, cpu());
    for _ in 0..3 {
        assert!(h.tick(1601).is_empty());
        assert_eq!(h.counts(), Counts::default());
    }
}

#[test]
fn with_both_kinds_live_a_tie_consumes_downs() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    h.tick(1000);
    h.tick(1000);
    assert!(h.tick(1700).is_empty());
    // U = 2, D = 2: the up rule fires (D <= 2) but consumes downs.
    let ds = h.tick(1700);
    assert_eq!(reason(&ds[0]), (Direction::Up, 2, 2, 750));
    assert_eq!(h.counts(), Counts { ups: 2, downs: 0 });
    // current 2750, upper 2350: one more up gives U = 3 and fires again.
    let ds = h.tick(2400);
    assert_eq!(reason(&ds[0]), (Direction::Up, 3, 0, 750));
    assert_eq!(h.counts(), Counts { ups: 1, downs: 0 });
}

/// 256 MiB..8 GiB at 4 GiB: margin trunc(8 GiB / 10) bytes.
fn mem() -> ResourceSpec {
    spec(256 * MIB, 8 * GIB, 4 * GIB)
}

#[test]
fn memory_up_after_two_events_by_256_mib() {
    let mut h = H::new(cfg(), Resource::Mem, mem());
    let high = 4 * GIB - 100 * MIB;
    assert!(h.tick(high).is_empty());
    let ds = h.tick(high);
    assert_eq!(reason(&ds[0]), (Direction::Up, 2, 0, 256 * MIB as i64));
    assert_eq!(h.current(), 4 * GIB + 256 * MIB);
}

#[test]
fn memory_down_after_eight_events_fits_to_usage() {
    let mut h = H::new(cfg(), Resource::Mem, mem());
    let margin = 8 * GIB / 10;
    for _ in 0..7 {
        assert!(h.tick(GIB).is_empty());
    }
    let ds = h.tick(GIB);
    let want = GIB + margin / 2 + margin;
    assert_eq!(reason(&ds[0]).0, Direction::Down);
    assert_eq!(reason(&ds[0]).2, 8);
    assert_eq!(h.current(), want);
}

#[test]
fn memory_floor_keeps_memory_above_the_latest_usage() {
    // The window (10 s old) says 1 GiB but the latest sample says 3.9 GiB.
    let delayed = ClassicConfig { delay_ms: 10_000, ..cfg() };
    let mut h = H::new(delayed.clone(), Resource::Mem, mem());
    let mut last = Vec::new();
    for s in 1..=9u64 {
        h.p.observe(Resource::Mem, &Sample::new(s * 10_000 - 5_000, 5_000, GIB));
        h.p.observe(Resource::Mem, &Sample::new(s * 10_000, 5_000, if s == 9 { 3_900 * MIB } else { GIB }));
        last = h.p.decide(s * 10_000, &h.specs);
        if !last.is_empty() {
            break;
        }
    }
    assert_eq!(last[0].new, 3_900 * MIB);
    // Without the floor, the original's arithmetic.
    let mut exact = H::new(ClassicConfig { mem_floor_at_usage: false, ..delayed }, Resource::Mem, mem());
    for s in 1..=9u64 {
        exact.p.observe(Resource::Mem, &Sample::new(s * 10_000 - 5_000, 5_000, GIB));
        exact.p.observe(Resource::Mem, &Sample::new(s * 10_000, 5_000, if s == 9 { 3_900 * MIB } else { GIB }));
        last = exact.p.decide(s * 10_000, &exact.specs);
        if !last.is_empty() {
            break;
        }
    }
    assert!(last[0].new < 3_900 * MIB);
}

/// Disk 1..200 MB/s at 100 MB/s: margin 20 MB/s, upper 80, lower 60.
fn disk() -> ResourceSpec {
    spec(MB, 200 * MB, 100 * MB)
}

#[test]
fn disk_up_after_one_event_trimmed_to_max() {
    let mut h = H::new(cfg(), Resource::DiskRead, disk());
    let ds = h.tick(90 * MB);
    // +450 MB/s cut to max - current.
    assert_eq!(reason(&ds[0]), (Direction::Up, 1, 0, 100 * MB as i64));
    assert_eq!(h.current(), 200 * MB);
}

#[test]
fn disk_rules_are_the_originals() {
    // Up on `up >= 1 && down <= 6` by 450 x 1,048,576 B/s; down on
    // `down >= 6 && up <= 0`, fit to usage.
    let t = RuleTable::default();
    let (up, down) = (t.disk.up.unwrap(), t.disk.down.unwrap());
    assert_eq!((up.events, up.max_opposite, up.consume, up.amount), (1, Some(6), 1, Amount::Fixed(450 * MIB as i64)));
    assert_eq!((down.events, down.max_opposite, down.consume, down.amount), (6, Some(0), 6, Amount::FitToUsage));
}

#[test]
fn disk_up_is_450_mib_per_second() {
    let mut h = H::new(cfg(), Resource::DiskRead, spec(MB, 2_000 * MB, 100 * MB));
    let ds = h.tick(90 * MB);
    assert_eq!(reason(&ds[0]), (Direction::Up, 1, 0, 450 * MIB as i64));
}

#[test]
fn an_idle_disk_is_shrunk_but_an_idle_cpu_is_not() {
    let mut h = H::new(cfg(), Resource::DiskRead, disk());
    for _ in 0..5 {
        assert!(h.tick(0).is_empty());
    }
    let ds = h.tick(0);
    // 0 + 10 + 20 - 100 = -70 MB/s, trimmed so that the lower limit (60)
    // stays at min (1): -59 MB/s.
    assert_eq!(reason(&ds[0]), (Direction::Down, 0, 6, -59 * MB as i64));
    let mut c = H::new(cfg(), Resource::Cpu, cpu());
    for _ in 0..8 {
        assert!(c.tick(0).is_empty(), "the original asks for CPU usage above zero");
    }
}

#[test]
fn disk_down_after_six_events_without_ups() {
    let mut h = H::new(cfg(), Resource::DiskWrite, disk());
    // One up (fires at once: current 200 MB/s, consumed).
    h.tick(90 * MB);
    // current 200: upper 180, lower 160.
    for _ in 0..5 {
        assert!(h.tick(50 * MB).is_empty());
    }
    let ds = h.tick(50 * MB);
    // 50 + 10 + 20 - 200 = -120 MB/s.
    assert_eq!(reason(&ds[0]), (Direction::Down, 0, 6, -120 * MB as i64));
}

#[test]
fn period_gates_evaluation_and_guard_false_is_left_alone() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    h.tick(1700);
    assert_eq!(h.counts().ups, 1);
    // 5 s later: inside the period, nothing is evaluated.
    h.p.observe(Resource::Cpu, &Sample::new(15_000, 5_000, 1700));
    assert!(h.p.decide(15_000, &h.specs).is_empty());
    assert_eq!(h.counts().ups, 1);

    let mut off = H::new(cfg(), Resource::Cpu, cpu().with_guard(false));
    for _ in 0..5 {
        assert!(off.tick(3000).is_empty());
    }
    assert_eq!(off.counts(), Counts::default());
}

#[test]
fn no_samples_no_events() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    for t in 1..10 {
        assert!(h.p.decide(t * 10_000, &h.specs).is_empty());
    }
    assert_eq!(h.counts(), Counts::default());
    // The limits are placed nonetheless.
    assert_eq!(h.p.limits(Resource::Cpu), Some(Limits { upper: 1600, lower: 1200 }));
}

#[test]
fn seeded_limits_are_kept_while_upper_is_consistent() {
    let mut h = H::new(cfg(), Resource::Cpu, cpu());
    h.p.set_limits(Resource::Cpu, Limits { upper: 1600, lower: 1500 });
    // 1400 < lower 1500: a down event with the seeded lower.
    h.tick(1400);
    assert_eq!(h.counts().downs, 1);
    assert_eq!(h.p.limits(Resource::Cpu).unwrap().lower, 1500);
}

#[test]
fn invalid_rules_are_typed_errors() {
    let mut c = cfg();
    c.rules.mem.up = Some(Rule { events: 0, max_opposite: None, consume: 1, amount: Amount::Fixed(1), active: true });
    let e = Classic::new(c).unwrap_err();
    assert!(e.to_string().contains("rules.mem.up.events"), "{e}");
    let mut c = cfg();
    c.rules.cpu.down = Some(Rule { events: 1, max_opposite: None, consume: 1, amount: Amount::Fixed(0), active: true });
    assert!(Classic::new(c).is_err());
}
