//! `classic`: the original system's guardian, reproduced rule for rule
//! (see docs/policies.md and DESIGN.md, "The guardian policy of the
//! original"). All arithmetic is integer and truncating, as the original's.

mod config;
mod events;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

pub use config::{Amount, ClassicConfig, ResourceRules, Rule, RuleTable};
pub use events::{Counts, Event, EventLog};

use crate::decision::{Decision, Direction, Reason};
use crate::error::ConfigError;
use crate::policy::{Policy, Timing, propose};
use crate::resource::Resource;
use crate::sample::Sample;
use crate::spec::{Limits, ResourceSpec, ResourceSpecs, as_i64};

/// The classic guardian for one container.
#[derive(Debug, Clone)]
pub struct Classic {
    cfg: ClassicConfig,
    state: BTreeMap<Resource, State>,
    next_eval_ms: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// `(time_ms, usage)`, oldest first.
    samples: VecDeque<(u64, u64)>,
    events: EventLog,
    limits: Option<Limits>,
    last_usage: Option<u64>,
}

/// The plain mean of the samples in the window, kept as a sum and a count
/// so that comparisons with it are exact.
#[derive(Debug, Clone, Copy)]
struct Mean {
    sum: i128,
    n: i128,
}

impl Mean {
    fn above(&self, x: i64) -> bool {
        self.sum > i128::from(x) * self.n
    }

    fn below(&self, x: i64) -> bool {
        self.sum < i128::from(x) * self.n
    }

    fn positive(&self) -> bool {
        self.sum > 0
    }

    fn trunc(&self) -> i128 {
        self.sum / self.n
    }
}

impl Classic {
    /// A guardian with validated parameters.
    pub fn new(cfg: ClassicConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Classic { cfg, state: BTreeMap::new(), next_eval_ms: None })
    }

    /// The parameters.
    pub fn config(&self) -> &ClassicConfig {
        &self.cfg
    }

    /// The thresholds in use for `resource` (after the last evaluation).
    pub fn limits(&self, resource: Resource) -> Option<Limits> {
        self.state.get(&resource).and_then(|s| s.limits)
    }

    /// Seed thresholds (e.g. from stored state). They are kept while
    /// `upper == current - margin`, as in the original.
    pub fn set_limits(&mut self, resource: Resource, limits: Limits) {
        self.state.entry(resource).or_default().limits = Some(limits);
    }

    /// Live event counts of `resource` as of the last evaluation.
    pub fn counts(&self, resource: Resource) -> Counts {
        self.state.get(&resource).map(|s| s.events.counts()).unwrap_or_default()
    }

    fn window_mean(&self, st: &State, now_ms: u64) -> Option<Mean> {
        let end = i128::from(now_ms) - i128::from(self.cfg.delay_ms);
        let start = end - i128::from(self.cfg.window_ms);
        let (mut sum, mut n) = (0i128, 0i128);
        for &(t, u) in &st.samples {
            let t = i128::from(t);
            if t > start && t <= end {
                sum += i128::from(u);
                n += 1;
            }
        }
        (n > 0).then_some(Mean { sum, n })
    }

    fn evaluate(
        &mut self,
        now_ms: u64,
        resource: Resource,
        spec: &ResourceSpec,
        rules: ResourceRules,
    ) -> Option<Decision> {
        let mut st = self.state.remove(&resource).unwrap_or_default();
        let decision = self.evaluate_state(&mut st, now_ms, resource, spec, rules);
        self.state.insert(resource, st);
        decision
    }

    fn evaluate_state(
        &self,
        st: &mut State,
        now_ms: u64,
        resource: Resource,
        spec: &ResourceSpec,
        rules: ResourceRules,
    ) -> Option<Decision> {
        // 1. Usage: mean of the window ending `delay` before now.
        let mean = self.window_mean(st, now_ms);
        // 2. Limits follow current; recomputed when inconsistent.
        let limits = match st.limits {
            Some(l) if l.is_consistent(spec) => l,
            _ => Limits::follow(spec),
        };
        st.limits = Some(limits);
        // Without data the original skips the structure.
        let mean = mean?;
        let (min, max, current) = (as_i64(spec.min()), as_i64(spec.max()), as_i64(spec.current()));
        // 3. At most one event; stored before counting.
        let event = if mean.above(limits.upper) && limits.upper < max && current < max {
            Some(Direction::Up)
        } else if (mean.positive() || idle_counts(resource)) && mean.below(limits.lower) && limits.lower > min {
            Some(Direction::Down)
        } else {
            None
        };
        if let Some(direction) = event {
            st.events.push(Event { time_ms: now_ms, direction });
        }
        // 4. Expire (strictly older than now - timeout) and count.
        st.events.expire(now_ms, self.cfg.event_timeout_ms);
        let counts = st.events.counts();
        // 5. Rules: down first, then up; the first that matches fires.
        let (direction, rule) = [(Direction::Down, rules.down), (Direction::Up, rules.up)]
            .into_iter()
            .find_map(|(d, r)| r.filter(|r| r.active && matches(r, d, counts)).map(|r| (d, r)))?;
        let margin = as_i64(spec.margin());
        let raw = amount(rule.amount, mean, margin, current, limits);
        // 6. Trim.
        let trimmed = trim(raw, min, max, current, limits);
        // 7. Consume, even when the trimmed amount is 0.
        st.events.consume(rule.consume);
        // ...but a computed step below a thousandth of the limit is not
        // worth a write: with a margin in percent of current, the exact
        // arithmetic would otherwise crawl toward its fixed point (the
        // limit whose lower bound is min) by a few units a firing, for
        // hours. (The original wrote them; a fixed amount is always taken.)
        if !matches!(rule.amount, Amount::Fixed(_)) && i128::from(trimmed).abs() * 1000 < i128::from(current) {
            return None;
        }
        // 8. Apply, clamped (and memory floored at usage if configured).
        let new = u64::try_from(current.saturating_add(trimmed)).unwrap_or(0);
        let floor = if self.cfg.mem_floor_at_usage { st.last_usage } else { None };
        propose(
            resource,
            spec,
            new,
            floor,
            Reason::ClassicRule { direction, ups: counts.ups, downs: counts.downs, amount: trimmed },
        )
    }
}

/// Does `rule` (of direction `d`) fire with these live counts?
fn matches(rule: &Rule, d: Direction, counts: Counts) -> bool {
    let opposite = match d {
        Direction::Up => counts.downs,
        Direction::Down => counts.ups,
    };
    counts.of(d) >= rule.events && rule.max_opposite.is_none_or(|m| opposite <= m)
}

/// Whether a window of zero usage still makes a down event: the original
/// asks for usage above zero for CPU and memory but accepts zero for disk
/// (an idle disk is shrunk); network, which takes the disk rules here, too.
fn idle_counts(resource: Resource) -> bool {
    matches!(resource, Resource::DiskRead | Resource::DiskWrite | Resource::NetRx | Resource::NetTx)
}

/// The rule's amount before trimming.
fn amount(a: Amount, usage: Mean, margin: i64, current: i64, limits: Limits) -> i64 {
    let v: i128 = match a {
        Amount::Fixed(x) => i128::from(x),
        Amount::FitToUsage => {
            let m = i128::from(margin);
            usage.trunc() + (m / 2).max(1) + m - i128::from(current)
        }
        Amount::Proportional(x) => {
            // min((usage - upper) / (current - upper), 1) * x, truncated
            // toward zero like Python's int().
            let num = usage.sum - i128::from(limits.upper) * usage.n;
            let den = (i128::from(current) - i128::from(limits.upper)) * usage.n;
            if den <= 0 || num >= den { i128::from(x) } else { num * i128::from(x) / den }
        }
    };
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN / 2 } else { i64::MAX / 2 })
}

/// If the new lower would fall below min, raise the amount so that it equals
/// min; else if the new current would pass max, cut it to reach max.
fn trim(amount: i64, min: i64, max: i64, current: i64, limits: Limits) -> i64 {
    let lower_after = limits.lower.saturating_add(amount);
    if lower_after < min {
        amount + (min - lower_after)
    } else if current.saturating_add(amount) > max {
        max - current
    } else {
        amount
    }
}

impl Policy for Classic {
    fn name(&self) -> &str {
        "classic"
    }

    fn mem_headroom(&self) -> bool {
        self.cfg.mem_floor_at_usage
    }

    fn reconfigure(&mut self, cfg: &crate::PolicyConfig) -> bool {
        // Samples, thresholds, pending events and the next evaluation stay.
        match cfg {
            crate::PolicyConfig::Classic(c) if c.validate().is_ok() => {
                self.cfg = c.clone();
                true
            }
            _ => false,
        }
    }

    fn observe(&mut self, resource: Resource, sample: &Sample) {
        let span = self.cfg.delay_ms.saturating_add(self.cfg.window_ms);
        let st = self.state.entry(resource).or_default();
        st.samples.push_back((sample.time_ms, sample.usage));
        st.last_usage = Some(sample.usage);
        // A sample at t is in some future window only while t + span > now,
        // and now is never before the latest sample.
        while st.samples.front().is_some_and(|&(t, _)| t.saturating_add(span) <= sample.time_ms) {
            st.samples.pop_front();
        }
    }

    fn decide(&mut self, now_ms: u64, specs: &ResourceSpecs) -> Vec<Decision> {
        if self.next_eval_ms.is_some_and(|next| now_ms < next) {
            return Vec::new();
        }
        self.next_eval_ms = Some(now_ms.saturating_add(self.cfg.period_ms));
        let mut out = Vec::new();
        for (resource, spec) in specs.iter() {
            if !spec.guard() {
                continue;
            }
            let Some(rules) = self.cfg.rules.for_resource(resource).copied() else {
                continue;
            };
            out.extend(self.evaluate(now_ms, resource, spec, rules));
        }
        out
    }

    fn timing(&self) -> Timing {
        self.cfg.timing()
    }
}
