//! Baselines to compare against: a static allocation and a VPA-like
//! recommender.

mod histogram;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use histogram::DecayingHistogram;

use crate::decision::{Decision, Reason};
use crate::error::{ConfigError, check};
use crate::policy::{Policy, Timing, propose};
use crate::resource::{MIB, Resource};
use crate::sample::Sample;
use crate::spec::ResourceSpecs;

/// Every limit at `max`, never changed after.
#[derive(Debug, Clone, Copy, Default)]
pub struct Static;

impl Policy for Static {
    fn name(&self) -> &str {
        "static"
    }

    fn observe(&mut self, _resource: Resource, _sample: &Sample) {}

    fn decide(&mut self, _now_ms: u64, specs: &ResourceSpecs) -> Vec<Decision> {
        specs
            .iter()
            .filter(|(r, s)| s.guard() && *r != Resource::Energy)
            .filter_map(|(r, s)| propose(r, s, s.max(), None, Reason::Static))
            .collect()
    }

    fn timing(&self) -> Timing {
        Timing { tick_ms: 1_000, actuation_delay_ms: 0 }
    }
}

const NAME: &str = "vpa";

/// Parameters of the VPA-like recommender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VpaConfig {
    /// Recommendations are applied this often, ms.
    pub interval_ms: u64,
    /// Half-life of sample weights, ms.
    pub half_life_ms: u64,
    /// Percentile of the histogram the target starts from.
    pub percentile: u32,
    /// Margin added to the percentile, %.
    pub margin_pct: u32,
    /// Memory samples are the peak of each aggregation interval of this
    /// length, ms.
    pub mem_peak_interval_ms: u64,
    /// After an OOM kill memory becomes at least `limit + oom_bump_min`...
    pub oom_bump_min: u64,
    /// ...and at least `limit * (100 + oom_bump_pct) / 100`.
    pub oom_bump_pct: u32,
    /// A new target is applied only when it differs from the limit by more
    /// than this percentage (the updater acts outside a band).
    pub tolerance_pct: u32,
    /// How often the simulator calls it, ms.
    pub tick_ms: u64,
}

impl Default for VpaConfig {
    fn default() -> Self {
        VpaConfig {
            // Applied every 60 s.
            interval_ms: 60_000,
            // VPA's half-life: 24 h.
            half_life_ms: 86_400_000,
            // Target = p90 + 15 %.
            percentile: 90,
            margin_pct: 15,
            // VPA takes daily memory peaks; traces here are minutes long,
            // so one-minute peaks.
            mem_peak_interval_ms: 60_000,
            // After an OOM: max(+100 MiB, x1.2).
            oom_bump_min: 100 * MIB,
            oom_bump_pct: 20,
            // Act only on a change of more than 10 %.
            tolerance_pct: 10,
            tick_ms: 1_000,
        }
    }
}

impl VpaConfig {
    /// Check every parameter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let in_day = |v: u64| (1..=86_400_000 * 30).contains(&v);
        check(NAME, "interval_ms", self.interval_ms, in_day(self.interval_ms), "1..=2592000000")?;
        check(NAME, "half_life_ms", self.half_life_ms, in_day(self.half_life_ms), "1..=2592000000")?;
        check(NAME, "percentile", self.percentile, (1..=100).contains(&self.percentile), "1..=100")?;
        check(NAME, "margin_pct", self.margin_pct, self.margin_pct <= 1000, "0..=1000")?;
        check(
            NAME,
            "mem_peak_interval_ms",
            self.mem_peak_interval_ms,
            in_day(self.mem_peak_interval_ms),
            "1..=2592000000",
        )?;
        check(NAME, "oom_bump_pct", self.oom_bump_pct, self.oom_bump_pct <= 1000, "0..=1000")?;
        check(NAME, "tolerance_pct", self.tolerance_pct, self.tolerance_pct <= 100, "0..=100")?;
        check(NAME, "tick_ms", self.tick_ms, (1..=3_600_000).contains(&self.tick_ms), "1..=3600000")
    }

    /// Tick as configured; applied at once (in-place update).
    pub fn timing(&self) -> Timing {
        Timing { tick_ms: self.tick_ms, actuation_delay_ms: 0 }
    }
}

#[derive(Debug, Clone)]
struct VpaState {
    hist: DecayingHistogram,
    peak: Option<(u64, u64)>,
    oom_pending: bool,
    oom_floor: u64,
    last_usage: u64,
}

/// VPA-like recommender for one container: p90 of a decaying histogram of
/// usage (memory: of interval peaks) + 15 %, applied every 60 s; after an
/// OOM kill, memory at least `max(limit + 100 MiB, limit x 1.2)`.
#[derive(Debug, Clone)]
pub struct Vpa {
    cfg: VpaConfig,
    state: BTreeMap<Resource, VpaState>,
    next_apply_ms: u64,
}

impl Vpa {
    /// A recommender with validated parameters.
    pub fn new(cfg: VpaConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let next_apply_ms = cfg.interval_ms;
        Ok(Vpa { cfg, state: BTreeMap::new(), next_apply_ms })
    }
}

impl Policy for Vpa {
    fn name(&self) -> &str {
        NAME
    }

    fn observe(&mut self, resource: Resource, sample: &Sample) {
        if resource == Resource::Energy {
            return;
        }
        let half_life = self.cfg.half_life_ms;
        let st = self.state.entry(resource).or_insert_with(|| VpaState {
            hist: DecayingHistogram::new(half_life),
            peak: None,
            oom_pending: false,
            oom_floor: 0,
            last_usage: 0,
        });
        st.last_usage = sample.usage;
        if resource != Resource::Mem {
            st.hist.add(sample.usage, sample.time_ms);
            return;
        }
        st.oom_pending |= sample.oom_kills > 0;
        let slot = sample.time_ms / self.cfg.mem_peak_interval_ms;
        match st.peak {
            Some((s, ref mut p)) if s == slot => *p = (*p).max(sample.usage),
            Some((s, p)) => {
                st.hist.add(p, s * self.cfg.mem_peak_interval_ms);
                st.peak = Some((slot, sample.usage));
            }
            None => st.peak = Some((slot, sample.usage)),
        }
    }

    fn decide(&mut self, now_ms: u64, specs: &ResourceSpecs) -> Vec<Decision> {
        // OOM kills raise the floor at once (from the limit that was hit)...
        for (resource, spec) in specs.iter() {
            if let Some(st) = self.state.get_mut(&resource)
                && st.oom_pending
            {
                st.oom_pending = false;
                let cur = spec.current();
                let bumped = (cur.saturating_add(self.cfg.oom_bump_min))
                    .max(cur.saturating_mul(u64::from(100 + self.cfg.oom_bump_pct)) / 100);
                st.oom_floor = st.oom_floor.max(bumped);
                st.hist.add(bumped, now_ms);
            }
        }
        // ...but, like everything else, are only applied every interval.
        if now_ms < self.next_apply_ms {
            return Vec::new();
        }
        self.next_apply_ms = now_ms.saturating_add(self.cfg.interval_ms);
        let mut out = Vec::new();
        for (resource, spec) in specs.iter() {
            let Some(st) = self.state.get(&resource) else {
                continue;
            };
            if !spec.guard() {
                continue;
            }
            let mut hist = st.hist.clone();
            if let Some((_, p)) = st.peak {
                hist.add(p, now_ms);
            }
            let Some(base) = hist.percentile(self.cfg.percentile) else {
                continue;
            };
            let target = (base.saturating_mul(u64::from(100 + self.cfg.margin_pct)) / 100).max(st.oom_floor);
            let cur = spec.current();
            let diff = u128::from(cur.abs_diff(target)) * 100;
            if diff <= u128::from(cur) * u128::from(self.cfg.tolerance_pct) {
                continue;
            }
            // The agent never sets memory below what is in use.
            let floor = (resource == Resource::Mem).then_some(st.last_usage);
            out.extend(propose(resource, spec, target, floor, Reason::Recommendation { target }));
        }
        out
    }

    fn timing(&self) -> Timing {
        self.cfg.timing()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::resource::GIB;
    use crate::spec::{BoundaryType, ResourceSpec};

    fn specs(r: Resource, min: u64, max: u64, current: u64) -> ResourceSpecs {
        let s = ResourceSpec::try_new(min, max, current, 10, BoundaryType::PercentOfMax).unwrap();
        [(r, s)].into_iter().collect()
    }

    #[test]
    fn static_goes_to_max_once() {
        let mut p = Static;
        let mut sp = specs(Resource::Cpu, 100, 4000, 1000);
        let ds = p.decide(0, &sp);
        assert_eq!((ds[0].new, ds[0].reason.clone()), (4000, Reason::Static));
        sp.get_mut(Resource::Cpu).unwrap().set_current(4000).unwrap();
        assert!(p.decide(1000, &sp).is_empty());
    }

    #[test]
    fn vpa_applies_p90_plus_15_percent_every_minute() {
        let mut p = Vpa::new(VpaConfig::default()).unwrap();
        let sp = specs(Resource::Cpu, 100, 8000, 8000);
        for t in 1..=60u64 {
            p.observe(Resource::Cpu, &Sample::new(t * 1000, 1000, 1000 + 10 * (t % 10)));
            let ds = p.decide(t * 1000, &sp);
            if t < 60 {
                assert!(ds.is_empty(), "applied before 60 s");
            } else {
                // p90 of 1000..1090 is within a 5 % bucket of 1090; +15 %.
                let new = ds[0].new;
                assert!((1090 * 115 / 100..=1150 * 115 / 100).contains(&new), "{new}");
            }
        }
    }

    #[test]
    fn vpa_raises_memory_after_an_oom_at_the_next_update() {
        let mut p = Vpa::new(VpaConfig::default()).unwrap();
        let sp = specs(Resource::Mem, 0, 64 * GIB, GIB);
        p.observe(Resource::Mem, &Sample::new(1000, 1000, 0).with_oom_kills(1));
        assert!(p.decide(1000, &sp).is_empty());
        let ds = p.decide(60_000, &sp);
        // The OOM floor max(1 GiB + 100 MiB, 1 GiB x 1.2) = 1.2 GiB goes into
        // the histogram as a peak, so the target is ~1.2 GiB x 1.15 (within
        // a 5 % bucket).
        let floor = GIB * 120 / 100;
        let new = ds[0].new;
        assert!(new >= floor * 115 / 100 && new <= floor * 121 / 100 * 115 / 100, "{new}");
    }
}
