//! `follow`, the default policy: the limit follows the peak of the last
//! second or few of demand, a few percent above it, and is raised within a
//! tick when the kernel says demand went unmet (CPU throttled, tasks waiting
//! at the memory limit, reclaim stalls, an OOM kill, a saturated link).
//!
//! CPU headroom adapts to the one knob, `slowdown_permille`: the share of
//! CPU demand the limit may leave waiting (throttled time over demand,
//! measured over the last 10 s). A steady job ends a few percent above its
//! use; a bursty one that the tight limit slows more than allowed gets
//! headroom until it is slowed no more than that.
//!
//! Memory follows the peak working set of the last 2 s plus 10 % and
//! 16 MiB, shrinking as soon as that has held a second without stalls; the
//! headroom grows while reclaim stalls (PSI) slow the container more than
//! the same allowed slowdown. File cache is not in the working set, so a
//! limit that follows it evicts cache the job may read again: when the
//! I/O stall of reading evicted cache back (refaults) exceeds the allowed
//! slowdown over the last 10 s, the limit also keeps room for the cache
//! read back in that time, until the re-reading stops.
//! Growth is met by raising at 95 % of the limit (to 15 % above usage plus
//! two ticks of the growth seen); where the agent keeps the OOM killer off below `max`,
//! growth faster than that waits at the limit for one tick instead of
//! being killed.

mod config;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

pub use config::{FollowConfig, FollowParams};

use crate::decision::{Decision, Reason};
use crate::error::ConfigError;
use crate::policy::{Policy, Timing, propose};
use crate::resource::{Resource, ResourceKind};
use crate::sample::Sample;
use crate::spec::{ResourceSpec, ResourceSpecs};

/// The follow policy for one container.
#[derive(Debug, Clone)]
pub struct Follow {
    cfg: FollowConfig,
    state: BTreeMap<Resource, State>,
}

/// What arrived since the last decision.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    interval_ms: u64,
    usage_ms: u128,
    throttled_us: u64,
    stall_us: u64,
    oom_kills: u64,
    waiting: bool,
    reclaims: u64,
    refault_bytes: u64,
    refault_stall_us: u64,
    max_usage: u64,
    samples: u32,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// `(time, demand)` of the decision intervals within `window_ms` that
    /// can still be its peak: each is larger than every later one (a
    /// sliding-window maximum, [`push_max`]), so the front is the peak.
    recent: VecDeque<(u64, u64)>,
    /// `(time, waited, wanted)` within `adapt_window_ms`: CPU unmet and
    /// demand (x ms), memory stall and interval (µs). Their ratio is the
    /// slowdown the limit caused.
    ledger: VecDeque<(u64, u128, u128)>,
    /// Memory: `(time, rise over the interval)` within `window_ms`, kept
    /// as `recent` is (the front is the largest).
    rises: VecDeque<(u64, u64)>,
    /// Memory: `(time, cache read back, I/O stall it caused)` within
    /// `adapt_window_ms`.
    refaults: VecDeque<(u64, u64, u64)>,
    pending: Pending,
    /// Adaptive headroom, percentage points on top of `headroom_pct`.
    extra_pct: u32,
    last_adapt_ms: u64,
    first_ms: Option<u64>,
    last_usage: Option<u64>,
    over_since_ms: Option<u64>,
    /// Last raise, or (memory) last stall.
    last_raise_ms: Option<u64>,
    /// Memory: after an OOM kill, no shrinking below this level until
    /// this time `(until_ms, level)`: a restarting container uses nothing
    /// for a while and would otherwise be shrunk into the next kill.
    oom_floor: Option<(u64, u64)>,
}

/// How long memory stays at least where an OOM kill put it, ms.
const OOM_MEMORY_MS: u64 = 60_000;

fn mul_pct(x: u64, pct: u32) -> u64 {
    u64::try_from(u128::from(x) * u128::from(pct) / 100).unwrap_or(u64::MAX)
}

/// `x * 100 > limit * p`: x is above p % of limit.
fn above_pct(x: u64, limit: u64, p: u32) -> bool {
    u128::from(x) * 100 > u128::from(limit) * u128::from(p)
}

/// Appends `(t, v)` to a sliding-window maximum: entries no larger than
/// `v` can never be the maximum again (`v` outlives them), so they go. The
/// front is then the window's maximum, in O(1) amortized per tick instead
/// of a walk of the whole window (300 entries at a minute of 200 ms ticks).
fn push_max(q: &mut VecDeque<(u64, u64)>, t: u64, v: u64) {
    while q.back().is_some_and(|&(_, x)| x <= v) {
        q.pop_back();
    }
    q.push_back((t, v));
}

impl State {
    fn peak(&self) -> u64 {
        self.recent.front().map_or(0, |&(_, d)| d)
    }

    fn max_rise(&self) -> u64 {
        self.rises.front().map_or(0, |&(_, r)| r)
    }

    fn prune(&mut self, now: u64, p: &FollowParams) {
        let w = now.saturating_sub(p.window_ms);
        while self.recent.front().is_some_and(|&(t, _)| t <= w) {
            self.recent.pop_front();
        }
        let a = now.saturating_sub(p.adapt_window_ms);
        while self.ledger.front().is_some_and(|&(t, _, _)| t <= a) {
            self.ledger.pop_front();
        }
        while self.rises.front().is_some_and(|&(t, _)| t <= w) {
            self.rises.pop_front();
        }
        while self.refaults.front().is_some_and(|&(t, _, _)| t <= a) {
            self.refaults.pop_front();
        }
    }

    /// Memory: room for the cache read back within the adapt window, when
    /// re-reading it stalled the container more than `slowdown_permille`
    /// of the time (0 otherwise).
    fn cache_room(&self, slowdown_permille: u32) -> u64 {
        let (bytes, stall) =
            self.refaults.iter().fold((0u64, 0u128), |(b, s), &(_, x, y)| (b.saturating_add(x), s + u128::from(y)));
        let span_us: u128 = self.ledger.iter().map(|&(_, _, wanted)| wanted).sum();
        if span_us > 0 && stall * 1000 > span_us * u128::from(slowdown_permille) { bytes } else { 0 }
    }

    /// Once a second, more headroom while the slowdown (waited over
    /// wanted) is above `slowdown`, less while it is below half of it.
    fn adapt(&mut self, now: u64, p: &FollowParams, slowdown_permille: u32) {
        if now.saturating_sub(self.last_adapt_ms) < 1_000 {
            return;
        }
        self.last_adapt_ms = now;
        let (waited, wanted) = self.ledger.iter().fold((0u128, 0u128), |(u, d), &(_, a, b)| (u + a, d + b));
        if wanted == 0 {
            return;
        }
        let share = waited * 1000 / wanted;
        if share > u128::from(slowdown_permille) {
            self.extra_pct = (self.extra_pct + p.adapt_up_pct).min(p.adapt_max_pct);
        } else if share * 2 < u128::from(slowdown_permille) {
            self.extra_pct = self.extra_pct.saturating_sub(p.adapt_down_pct);
        }
    }
}

impl Follow {
    /// A policy with validated parameters.
    pub fn new(cfg: FollowConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Follow { cfg, state: BTreeMap::new() })
    }

    /// The parameters.
    pub fn config(&self) -> &FollowConfig {
        &self.cfg
    }

    /// CPU, disk and network: rates with (CPU) or without (bandwidth) a
    /// measure of unmet demand.
    fn rate(&mut self, now: u64, resource: Resource, spec: &ResourceSpec, pd: Pending) -> Option<Decision> {
        let p = *self.cfg.params(resource)?;
        let slowdown = self.cfg.slowdown_permille;
        let st = self.state.get_mut(&resource)?;
        let cur = spec.current();
        let mean = u64::try_from(pd.usage_ms / u128::from(pd.interval_ms.max(1))).unwrap_or(u64::MAX);
        let cpu = resource.kind() == ResourceKind::Cpu;
        let unmet = if cpu { pd.throttled_us.checked_div(pd.interval_ms).unwrap_or(0) } else { 0 };
        let saturated = !cpu && mean > 0 && u128::from(mean) * 100 >= u128::from(cur) * u128::from(p.saturation_pct);
        let demand = mean.saturating_add(unmet);
        push_max(&mut st.recent, now, demand);
        let ms = u128::from(pd.interval_ms);
        st.ledger.push_back((now, u128::from(unmet) * ms, u128::from(demand) * ms));
        st.prune(now, &p);
        if cpu {
            st.adapt(now, &p, slowdown);
        }
        let factor = 100 + p.headroom_pct + st.extra_pct;
        let grow = |x: u64| mul_pct(x, factor).saturating_add(p.min_headroom);
        let target = grow(st.peak());
        // Raise at once when demand went unmet or usage nears the limit.
        let raise = if unmet > 0 {
            Some((grow(demand).max(target), Reason::Throttled { unmet }))
        } else if saturated {
            Some((mul_pct(cur, p.saturation_factor_pct).max(target), Reason::Saturated { usage: mean }))
        } else if above_pct(mean, cur, p.up_threshold_pct) {
            Some((grow(mean).max(target), Reason::AboveUpper { usage: mean }))
        } else {
            None
        };
        if let Some((new, reason)) = raise.filter(|&(new, _)| new > cur) {
            st.over_since_ms = None;
            let d = propose(resource, spec, new, None, reason);
            if d.is_some() {
                st.last_raise_ms = Some(now);
            }
            return d;
        }
        self.shrink(now, resource, spec, target, None)
    }

    /// Memory: a level, with signals of unmet demand (tasks waiting at the
    /// limit, reclaim stalls, OOM kills).
    fn memory(&mut self, now: u64, resource: Resource, spec: &ResourceSpec, pd: Pending) -> Option<Decision> {
        let p = *self.cfg.params(resource)?;
        let slowdown = self.cfg.slowdown_permille;
        let st = self.state.get_mut(&resource)?;
        let cur = spec.current();
        let usage = st.last_usage.unwrap_or(0);
        push_max(&mut st.recent, now, pd.max_usage);
        st.ledger.push_back((now, u128::from(pd.stall_us), u128::from(pd.interval_ms) * 1000));
        if pd.refault_bytes > 0 {
            st.refaults.push_back((now, pd.refault_bytes, pd.refault_stall_us));
        }
        st.prune(now, &p);
        let cache = st.cache_room(slowdown);
        // Reclaim stalls (PSI) slow the container down: more headroom while
        // they exceed the allowed slowdown, as throttling does for CPU.
        st.adapt(now, &p, slowdown);
        let factor = 100 + p.headroom_pct + st.extra_pct;
        let target = mul_pct(st.peak(), factor)
            .saturating_add(mul_pct(p.min_headroom, 100 + st.extra_pct))
            .saturating_add(cache);
        let stalled = u128::from(pd.stall_us) * 1000
            > u128::from(pd.interval_ms) * 1000 * u128::from(p.pressure_threshold_permille);
        // Room for two more ticks of the fastest recent growth.
        let growing = mul_pct(pd.max_usage, 100 + p.grow_pct)
            .saturating_add(st.max_rise().saturating_mul(2))
            .saturating_add(p.min_headroom);
        let raise = if pd.oom_kills > 0 {
            Some((mul_pct(cur, 100 + p.oom_step_pct).max(growing), Reason::OomKill { kills: pd.oom_kills }))
        } else if pd.waiting {
            Some((mul_pct(cur, 100 + p.oom_step_pct).max(growing), Reason::MemoryWait))
        } else if pd.reclaims > 0 && above_pct(pd.max_usage, cur, p.reclaim_pct) {
            // The working set itself (not page cache) presses on the
            // limit: raise before the next allocation fails.
            Some((
                mul_pct(cur, 100 + p.pressure_step_pct).max(growing),
                Reason::MemoryReclaim { reclaims: pd.reclaims },
            ))
        } else if stalled {
            Some((
                mul_pct(cur, 100 + p.pressure_step_pct).max(growing),
                Reason::MemoryPressure { stall_us: pd.stall_us },
            ))
        } else if above_pct(pd.max_usage, cur, p.up_threshold_pct) {
            Some((growing, Reason::AboveUpper { usage: pd.max_usage }))
        } else if cache > 0 && pd.refault_bytes > 0 {
            Some((target, Reason::MemoryRefault { bytes: pd.refault_bytes }))
        } else {
            None
        };
        // Whatever raises memory keeps the room for re-read cache.
        let raise = raise.map(|(v, r)| (if cache > 0 { v.max(target) } else { v }, r));
        if stalled || pd.waiting || pd.oom_kills > 0 {
            // No shrinking right after the container was short of memory.
            st.last_raise_ms = Some(now);
        }
        let mut target = target.max(if stalled { cur } else { 0 });
        if let Some((until, level)) = st.oom_floor {
            if now < until {
                target = target.max(level);
            } else {
                st.oom_floor = None;
            }
        }
        if pd.oom_kills > 0 {
            let level = raise.as_ref().map_or(cur, |&(v, _)| v.max(cur));
            st.oom_floor = Some((now + OOM_MEMORY_MS, level));
        }
        if let Some((new, reason)) = raise.filter(|&(new, _)| new > cur) {
            st.over_since_ms = None;
            let d = propose(resource, spec, new, Some(usage), reason);
            if d.is_some() {
                st.last_raise_ms = Some(now);
            }
            return d;
        }
        self.shrink(now, resource, spec, target, Some(usage))
    }

    /// Down to `target` once the limit has been above it (by the
    /// hysteresis) for `down_hold_ms` and the last raise is that old.
    fn shrink(
        &mut self,
        now: u64,
        resource: Resource,
        spec: &ResourceSpec,
        target: u64,
        floor: Option<u64>,
    ) -> Option<Decision> {
        let p = *self.cfg.params(resource)?;
        let st = self.state.get_mut(&resource)?;
        let cur = spec.current();
        let over = above_pct(cur, target, 100 + p.down_hysteresis_pct) && cur > spec.min();
        let history = st.first_ms.map_or(0, |f| now.saturating_sub(f));
        if !over || history < p.down_hold_ms {
            st.over_since_ms = None;
            return None;
        }
        let since = *st.over_since_ms.get_or_insert(now);
        let calm = st.last_raise_ms.is_none_or(|t| now.saturating_sub(t) >= p.down_hold_ms);
        if now.saturating_sub(since) < p.down_hold_ms || !calm {
            return None;
        }
        st.over_since_ms = None;
        propose(resource, spec, target, floor, Reason::Shrink { target })
    }
}

impl Policy for Follow {
    fn name(&self) -> &str {
        "follow"
    }

    fn reconfigure(&mut self, cfg: &crate::PolicyConfig) -> bool {
        // Peaks and pending signals stay; the new parameters apply to them.
        match cfg {
            crate::PolicyConfig::Follow(c) if c.validate().is_ok() => {
                self.cfg = c.clone();
                true
            }
            _ => false,
        }
    }

    fn observe(&mut self, resource: Resource, sample: &Sample) {
        if self.cfg.params(resource).is_none() {
            return;
        }
        let st = self.state.entry(resource).or_default();
        st.first_ms.get_or_insert(sample.time_ms);
        if resource.kind() == ResourceKind::Memory
            && let Some(prev) = st.last_usage
            && sample.usage > prev
        {
            push_max(&mut st.rises, sample.time_ms, sample.usage - prev);
        }
        st.last_usage = Some(sample.usage);
        let pd = &mut st.pending;
        pd.samples += 1;
        pd.interval_ms += sample.interval_ms;
        pd.usage_ms += u128::from(sample.usage) * u128::from(sample.interval_ms);
        pd.throttled_us = pd.throttled_us.saturating_add(sample.cpu_throttled_usec);
        pd.stall_us = pd.stall_us.saturating_add(sample.mem_pressure);
        pd.oom_kills = pd.oom_kills.saturating_add(sample.oom_kills);
        pd.waiting |= sample.mem_waiting;
        pd.reclaims = pd.reclaims.saturating_add(sample.mem_reclaims);
        pd.refault_bytes = pd.refault_bytes.saturating_add(sample.mem_refault_bytes);
        pd.refault_stall_us = pd.refault_stall_us.saturating_add(sample.mem_refault_stall);
        pd.max_usage = pd.max_usage.max(sample.usage);
    }

    fn decide(&mut self, now_ms: u64, specs: &ResourceSpecs) -> Vec<Decision> {
        let mut out = Vec::new();
        for (resource, spec) in specs.iter() {
            if !spec.guard() {
                continue;
            }
            let Some(st) = self.state.get_mut(&resource) else { continue };
            let pd = std::mem::take(&mut st.pending);
            if pd.samples == 0 {
                continue;
            }
            let d = match resource.kind() {
                ResourceKind::Memory => self.memory(now_ms, resource, spec, pd),
                ResourceKind::Cpu | ResourceKind::Bandwidth => self.rate(now_ms, resource, spec, pd),
                ResourceKind::Power => None,
            };
            out.extend(d);
        }
        out
    }

    fn timing(&self) -> Timing {
        self.cfg.timing()
    }

    fn raises_waiting_memory(&self) -> bool {
        true
    }

    /// From usage, as it would be after following it: a job subscribed as
    /// it starts is not over-allocated for its first seconds.
    fn start(&self, resource: Resource, usage: u64) -> Option<u64> {
        let p = self.cfg.params(resource)?;
        Some(mul_pct(usage, 100 + p.headroom_pct).saturating_add(p.min_headroom))
    }
}
