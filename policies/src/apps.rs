//! Decisions above the container: an application's allocation split among
//! its containers by weight, slack moved from containers that do not use
//! their allocation to those of the same group that are short, and a user's
//! budget shared among its applications. Pure functions on amounts of one
//! resource (millicores, or mW for energy); the aggregator applies them
//! through the agents' ceilings.

use serde::{Deserialize, Serialize};

use crate::arbitrate::share;

/// One member of a group (a container of an application, or an
/// application of a user) as these decisions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Never below this.
    pub min: u64,
    /// Never above this.
    pub max: u64,
    /// What it holds now.
    pub alloc: u64,
    /// What it used over the last period.
    pub usage: u64,
    /// Demand it was refused over the last period (throttled time as
    /// millicores; 0 when it got all it asked).
    pub unmet: u64,
    /// Its weight among the members (0 is refused by the API; treated as 1
    /// here so that nothing divides by zero).
    pub weight: u32,
}

impl Member {
    /// Short: refused demand, or using nearly all it holds.
    pub fn short(&self) -> bool {
        self.unmet > 0 || self.usage.saturating_mul(100) >= self.alloc.saturating_mul(SHORT_PERCENT)
    }

    fn need(&self) -> u64 {
        self.usage.saturating_add(self.unmet)
    }
}

/// A member using at least this share of what it holds counts as short.
pub const SHORT_PERCENT: u64 = 95;

/// Headroom a donor keeps above its usage, percent.
pub const DONOR_HEADROOM_PERCENT: u64 = 10;

/// `total` split among `members` in proportion to need (each member's
/// `(usage + unmet) x weight`, or its weight alone when nobody needs
/// anything), within each member's `[min, max]`: members whose share falls
/// below their `min` get it (and the rest share what is left), then those
/// above their `max` are held there. The shares sum to `total` clamped to
/// `[sum of min, sum of max]`.
pub fn split(total: u64, members: &[Member]) -> Vec<u64> {
    let lo: u128 = members.iter().map(|m| u128::from(m.min.min(m.max))).sum();
    let hi: u128 = members.iter().map(|m| u128::from(m.max)).sum();
    let target = u128::from(total).clamp(lo, hi.max(lo));
    let any_need = members.iter().any(|m| m.need() > 0);
    let w: Vec<f64> = members
        .iter()
        .map(|m| {
            let w = u64::from(m.weight.max(1));
            (if any_need { m.need().saturating_mul(w) } else { w }) as f64
        })
        .collect();
    let bounds: Vec<(u64, u64)> = members.iter().map(|m| (m.min.min(m.max), m.max)).collect();
    // The level `x` at which every member's `clamp(x w, min, max)` sums to
    // the target (monotone in `x`): bisection, then whole units by largest
    // remainder so the sum is exact.
    let at =
        |x: f64| -> Vec<f64> { w.iter().zip(&bounds).map(|(&w, &(a, b))| (x * w).clamp(a as f64, b as f64)).collect() };
    let sum_at = |x: f64| -> f64 { at(x).iter().sum() };
    let goal = target as f64;
    let (mut a, mut b) = (0.0f64, 1.0f64);
    while sum_at(b) < goal && b < 1e30 {
        b *= 2.0;
    }
    for _ in 0..200 {
        let mid = (a + b) / 2.0;
        if sum_at(mid) < goal { a = mid } else { b = mid }
    }
    let exact = at(b);
    let mut out: Vec<u64> = exact.iter().zip(&bounds).map(|(&v, &(a, z))| (v.floor() as u64).clamp(a, z)).collect();
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&i, &j| (exact[j] - exact[j].floor()).total_cmp(&(exact[i] - exact[i].floor())).then(i.cmp(&j)));
    let mut sum: u128 = out.iter().map(|&v| u128::from(v)).sum();
    // Float rounding aside, a few units go to (or come from) members with
    // room, largest remainder first.
    while sum < target {
        let before = sum;
        for &i in &order {
            if sum < target && out[i] < bounds[i].1 {
                out[i] += 1;
                sum += 1;
            }
        }
        if sum == before {
            break;
        }
    }
    while sum > target {
        let before = sum;
        for &i in order.iter().rev() {
            if sum > target && out[i] > bounds[i].0 {
                out[i] -= 1;
                sum -= 1;
            }
        }
        if sum == before {
            break;
        }
    }
    out
}

/// The allocation an application guarded at its own level gets: its total
/// need plus `headroom_percent`, within `[min, max]`.
pub fn app_target(members: &[Member], headroom_percent: u64, min: u64, max: u64) -> u64 {
    let need: u128 = members.iter().map(|m| u128::from(m.need())).sum();
    let want = need * u128::from(100 + headroom_percent) / 100;
    u64::try_from(want).unwrap_or(u64::MAX).clamp(min, max.max(min))
}

/// One step of rebalancing within a group: `share_percent` of the slack of
/// the members that are not short (what they hold above their usage plus
/// [`DONOR_HEADROOM_PERCENT`], and above their `min`) goes to the short
/// members, in proportion to what they are refused (or their weight when
/// they are refused nothing), each up to its `max`. Returns the new
/// allocations; what donors give is exactly what receivers get.
pub fn rebalance(members: &[Member], share_percent: u64) -> Vec<u64> {
    let mut out: Vec<u64> = members.iter().map(|m| m.alloc).collect();
    let slack: Vec<u64> = members
        .iter()
        .map(|m| {
            if m.short() {
                return 0;
            }
            let keep = m.usage.saturating_mul(100 + DONOR_HEADROOM_PERCENT).div_ceil(100).max(m.min);
            m.alloc.saturating_sub(keep)
        })
        .collect();
    let receivers: Vec<usize> =
        (0..members.len()).filter(|&i| members[i].short() && members[i].alloc < members[i].max).collect();
    let pool: u128 = slack.iter().map(|&s| u128::from(s)).sum::<u128>() * u128::from(share_percent.min(100)) / 100;
    let room: u128 = receivers.iter().map(|&i| u128::from(members[i].max - members[i].alloc)).sum();
    let moved = u64::try_from(pool.min(room)).unwrap_or(0);
    if moved == 0 {
        return out;
    }
    // Given: in proportion to what each receiver is refused, capped at its
    // room (water-filling as in `split`).
    let recv: Vec<Member> = receivers
        .iter()
        .map(|&i| {
            let m = members[i];
            Member { min: 0, max: m.max - m.alloc, alloc: 0, usage: 0, unmet: m.unmet, weight: m.weight }
        })
        .collect();
    let given = split(moved, &recv);
    let given_total: u64 = given.iter().sum();
    for (k, &i) in receivers.iter().enumerate() {
        out[i] += given[k];
    }
    // Taken: in proportion to slack, exactly what was given.
    let donors: Vec<usize> = (0..members.len()).filter(|&i| slack[i] > 0).collect();
    let weights: Vec<u64> = donors.iter().map(|&i| slack[i]).collect();
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let taken = share(given_total, &weights, sum.max(1));
    for (k, &i) in donors.iter().enumerate() {
        out[i] -= taken[k];
    }
    out
}

/// A user's `budget` shared among its applications, each asking
/// `(min, want)`: every application gets its `min` first (in proportion to
/// them when even those do not fit), then what is left in proportion to
/// `want - min`. The grants never sum above `budget`, and none is above its
/// `want` (nor below its `min` when the mins fit).
pub fn user_split(budget: u64, asks: &[(u64, u64)]) -> Vec<u64> {
    let requests: Vec<crate::Request> =
        asks.iter().map(|&(min, want)| crate::Request { min, want: want.max(min), priority: 0 }).collect();
    crate::arbitrate(&requests, budget).into_iter().map(|g| g.amount).collect()
}
