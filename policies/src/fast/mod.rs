//! `fast`, the default policy: reacts within a tick or two to CPU throttling,
//! memory pressure, OOM kills and saturated bandwidth, by enough to cover the
//! unmet demand; shrinks toward a high percentile of recent usage plus
//! headroom, with hysteresis so steady load makes no changes.

mod config;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

pub use config::{FastConfig, FastParams};

use crate::decision::{Decision, Reason};
use crate::error::ConfigError;
use crate::policy::{Policy, Timing, propose};
use crate::resource::{Resource, ResourceKind};
use crate::sample::Sample;
use crate::spec::{ResourceSpec, ResourceSpecs};

/// The fast policy for one container.
#[derive(Debug, Clone)]
pub struct Fast {
    cfg: FastConfig,
    state: BTreeMap<Resource, State>,
}

/// What arrived since the last decision.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    interval_ms: u64,
    usage_ms: u128,
    throttled_us: u64,
    pressure_us: u64,
    oom_kills: u64,
    max_usage: u64,
    samples: u32,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// `(bucket index, peak demand estimate)`, oldest first.
    buckets: VecDeque<(u64, u64)>,
    /// `(bucket index, rise of its peak over the previous bucket's)`.
    jumps: VecDeque<(u64, u64)>,
    pending: Pending,
    first_ms: Option<u64>,
    last_usage: u64,
    last_raise_ms: Option<u64>,
    over_since_ms: Option<u64>,
}

impl State {
    /// Memory: today's usage plus the largest rise between consecutive
    /// buckets within `jump_lookback_ms`. Memory demand that jumps past the limit is
    /// an OOM kill, so the limit keeps room for a jump as large as the
    /// recent ones on top of what is in use now (a ramp rises little from
    /// one second to the next; a spike or a burst shows as a jump).
    fn jump_room(&self) -> u64 {
        let jump = self.jumps.iter().map(|&(_, j)| j).max().unwrap_or(0);
        self.last_usage.saturating_add(jump)
    }

    /// The `p`-th percentile (nearest rank) of the bucket peaks.
    fn percentile(&self, p: u32) -> u64 {
        let mut v: Vec<u64> = self.buckets.iter().map(|&(_, x)| x).collect();
        if v.is_empty() {
            return self.last_usage;
        }
        v.sort_unstable();
        let rank = (v.len() * p as usize).div_ceil(100).clamp(1, v.len());
        v[rank - 1]
    }
}

fn pct(x: u64, p: u32) -> u64 {
    u64::try_from(u128::from(x) * u128::from(p) / 100).unwrap_or(u64::MAX)
}

/// `x * 100 > limit * p`: x is above p % of limit.
fn above_pct(x: u64, limit: u64, p: u32) -> bool {
    u128::from(x) * 100 > u128::from(limit) * u128::from(p)
}

impl Fast {
    /// A policy with validated parameters.
    pub fn new(cfg: FastConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Fast { cfg, state: BTreeMap::new() })
    }

    /// The parameters.
    pub fn config(&self) -> &FastConfig {
        &self.cfg
    }

    /// A raise, if one is needed: the new limit and why.
    fn raise(p: &FastParams, kind: ResourceKind, st: &State, cur: u64) -> Option<(u64, Reason)> {
        let pd = st.pending;
        let mean = if pd.interval_ms > 0 {
            u64::try_from(pd.usage_ms / u128::from(pd.interval_ms)).unwrap_or(u64::MAX)
        } else {
            st.last_usage
        };
        let mut best: Option<(u64, Reason)> = None;
        let mut offer = |v: u64, r: Reason| {
            if v > cur && best.as_ref().is_none_or(|(b, _)| v > *b) {
                best = Some((v, r));
            }
        };
        match kind {
            ResourceKind::Cpu => {
                let unmet = pd.throttled_us.checked_div(pd.interval_ms).unwrap_or(0);
                if unmet > 0 {
                    offer(p.grow(mean.saturating_add(unmet)), Reason::Throttled { unmet });
                } else if above_pct(mean, cur, p.up_threshold_pct) {
                    offer(p.grow(mean), Reason::AboveUpper { usage: mean });
                }
            }
            ResourceKind::Memory => {
                if pd.oom_kills > 0 {
                    let v = pct(cur, 100 + p.oom_step_pct).max(p.grow(st.percentile(100)));
                    offer(v, Reason::OomKill { kills: pd.oom_kills });
                }
                let stalled = u128::from(pd.pressure_us) * 100
                    > u128::from(pd.interval_ms) * 1000 * u128::from(p.pressure_threshold_pct);
                if pd.pressure_us > 0 && stalled {
                    let v = pct(cur, 100 + p.pressure_step_pct).max(p.grow(pd.max_usage));
                    offer(v, Reason::MemoryPressure { stall_us: pd.pressure_us });
                }
                if above_pct(pd.max_usage, cur, p.up_threshold_pct) {
                    offer(p.grow(pd.max_usage), Reason::AboveUpper { usage: pd.max_usage });
                }
                let room = st.jump_room();
                if room > cur {
                    offer(p.grow(room), Reason::JumpRoom { need: room });
                }
            }
            ResourceKind::Bandwidth => {
                let saturated = u128::from(mean) * 100 >= u128::from(cur) * u128::from(p.saturation_pct);
                if mean > 0 && saturated {
                    let v = pct(cur, p.saturation_factor_pct).max(p.grow(mean));
                    offer(v, Reason::Saturated { usage: mean });
                } else if above_pct(mean, cur, p.up_threshold_pct) {
                    offer(p.grow(mean), Reason::AboveUpper { usage: mean });
                }
            }
            ResourceKind::Power => {}
        }
        best
    }

    fn evaluate(&mut self, now_ms: u64, resource: Resource, spec: &ResourceSpec) -> Option<Decision> {
        let p = *self.cfg.params(resource)?;
        let st = self.state.get_mut(&resource)?;
        let cur = spec.current();
        let floor = (resource == Resource::Mem).then_some(st.last_usage);
        let raise = Self::raise(&p, resource.kind(), st, cur);
        let had_samples = st.pending.samples > 0;
        st.pending = Pending::default();
        if let Some((new, reason)) = raise {
            st.over_since_ms = None;
            let d = propose(resource, spec, new, floor, reason);
            if d.is_some() {
                st.last_raise_ms = Some(now_ms);
            }
            return d;
        }
        if !had_samples {
            return None;
        }
        // Shrink: toward the percentile of recent peaks plus headroom. For
        // memory, never below the room for a jump (see `jump_room`).
        let mut base = st.percentile(p.percentile);
        if resource.kind() == ResourceKind::Memory {
            base = base.max(st.jump_room());
        }
        let target = p.grow(base);
        let history = st.first_ms.map_or(0, |f| now_ms.saturating_sub(f));
        let over =
            u128::from(cur) * 100 > u128::from(target) * u128::from(100 + p.down_hysteresis_pct) && cur > spec.min();
        if !over || history < p.down_hold_ms {
            st.over_since_ms = None;
            return None;
        }
        let since = *st.over_since_ms.get_or_insert(now_ms);
        let calm = st.last_raise_ms.is_none_or(|t| now_ms.saturating_sub(t) >= p.down_hold_ms);
        if now_ms.saturating_sub(since) < p.down_hold_ms || !calm {
            return None;
        }
        let step_floor = cur - pct(cur, p.max_down_step_pct);
        let new = target.max(step_floor);
        st.over_since_ms = Some(now_ms);
        propose(resource, spec, new, floor, Reason::Shrink { target })
    }
}

impl Policy for Fast {
    fn name(&self) -> &str {
        "fast"
    }

    fn reconfigure(&mut self, cfg: &crate::PolicyConfig) -> bool {
        // Buckets are only kept when their width is unchanged.
        match cfg {
            crate::PolicyConfig::Fast(c) if c.validate().is_ok() && c.bucket_ms == self.cfg.bucket_ms => {
                self.cfg = c.clone();
                true
            }
            _ => false,
        }
    }

    fn observe(&mut self, resource: Resource, sample: &Sample) {
        let Some(p) = self.cfg.params(resource).copied() else {
            return;
        };
        let bucket_ms = self.cfg.bucket_ms;
        let st = self.state.entry(resource).or_default();
        st.first_ms.get_or_insert(sample.time_ms);
        st.last_usage = sample.usage;
        let pd = &mut st.pending;
        pd.samples += 1;
        pd.interval_ms += sample.interval_ms;
        pd.usage_ms += u128::from(sample.usage) * u128::from(sample.interval_ms);
        pd.throttled_us = pd.throttled_us.saturating_add(sample.cpu_throttled_usec);
        pd.pressure_us = pd.pressure_us.saturating_add(sample.mem_pressure);
        pd.oom_kills = pd.oom_kills.saturating_add(sample.oom_kills);
        pd.max_usage = pd.max_usage.max(sample.usage);
        // Demand estimate: for CPU, usage plus what throttling held back.
        let demand = if resource == Resource::Cpu {
            sample.usage.saturating_add(sample.unmet_millicores())
        } else {
            sample.usage
        };
        let idx = sample.time_ms / bucket_ms;
        match st.buckets.back_mut() {
            Some((i, peak)) if *i == idx => *peak = (*peak).max(demand),
            _ => st.buckets.push_back((idx, demand)),
        }
        let n = st.buckets.len();
        if n >= 2 {
            let rise = st.buckets[n - 1].1.saturating_sub(st.buckets[n - 2].1);
            match st.jumps.back_mut() {
                Some((i, j)) if *i == idx => *j = (*j).max(rise),
                _ if rise > 0 => st.jumps.push_back((idx, rise)),
                _ => {}
            }
        }
        let horizon = sample.time_ms.saturating_sub(p.lookback_ms) / bucket_ms;
        while st.buckets.front().is_some_and(|&(i, _)| i < horizon) {
            st.buckets.pop_front();
        }
        let horizon = sample.time_ms.saturating_sub(p.jump_lookback_ms) / bucket_ms;
        while st.jumps.front().is_some_and(|&(i, _)| i < horizon) {
            st.jumps.pop_front();
        }
    }

    fn decide(&mut self, now_ms: u64, specs: &ResourceSpecs) -> Vec<Decision> {
        let mut out = Vec::new();
        for (resource, spec) in specs.iter() {
            if spec.guard() {
                out.extend(self.evaluate(now_ms, resource, spec));
            }
        }
        out
    }

    fn timing(&self) -> Timing {
        self.cfg.timing()
    }
}
