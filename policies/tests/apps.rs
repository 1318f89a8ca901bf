//! Application- and user-level decisions (`policies::apps`) over random
//! groups: never outside a member's bounds, never above a budget, shares
//! sum to what is moved, nothing taken from a member that is short.

#![allow(clippy::unwrap_used)]

use policies::apps::{Member, app_target, rebalance, split, user_split};
use proptest::prelude::*;

fn member() -> impl Strategy<Value = Member> {
    (0u64..4000, 0u64..4000, 0u64..4000, 0u64..4000, 0u64..2000, 1u32..10).prop_map(
        |(a, b, alloc, usage, unmet, weight)| {
            let (min, max) = (a.min(b), a.max(b).max(1));
            Member { min, max, alloc: alloc.clamp(min, max), usage, unmet, weight }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_split_stays_within_bounds_and_sums_to_the_total(total in 0u64..40_000, ms in prop::collection::vec(member(), 1..12)) {
        let out = split(total, &ms);
        prop_assert_eq!(out.len(), ms.len());
        let (lo, hi): (u64, u64) = (ms.iter().map(|m| m.min).sum(), ms.iter().map(|m| m.max).sum());
        prop_assert_eq!(out.iter().sum::<u64>(), total.clamp(lo, hi));
        for (v, m) in out.iter().zip(&ms) {
            prop_assert!(*v >= m.min && *v <= m.max, "{} outside [{}, {}]", v, m.min, m.max);
        }
    }

    #[test]
    fn rebalancing_moves_slack_to_the_short_and_nothing_from_them(ms in prop::collection::vec(member(), 1..12), pct in 0u64..=100) {
        let out = rebalance(&ms, pct);
        prop_assert_eq!(out.iter().sum::<u64>(), ms.iter().map(|m| m.alloc).sum::<u64>(), "what is given is what is taken");
        for (v, m) in out.iter().zip(&ms) {
            prop_assert!(*v >= m.min && *v <= m.max);
            if m.short() {
                prop_assert!(*v >= m.alloc, "taken from a short member: {:?} -> {}", m, v);
            } else {
                prop_assert!(*v <= m.alloc, "given to a member that is not short");
                prop_assert!(*v >= m.usage.min(m.alloc), "donor cut below its usage");
            }
        }
    }

    #[test]
    fn a_user_budget_is_never_exceeded(budget in 0u64..40_000, asks in prop::collection::vec((0u64..5000, 0u64..8000), 1..10)) {
        let out = user_split(budget, &asks);
        prop_assert!(out.iter().sum::<u64>() <= budget);
        let mins: u64 = asks.iter().map(|a| a.0).sum();
        for (v, (min, want)) in out.iter().zip(&asks) {
            prop_assert!(*v <= (*want).max(*min));
            if mins <= budget {
                prop_assert!(v >= min);
            }
        }
    }

    #[test]
    fn an_app_target_follows_need_within_its_bounds(ms in prop::collection::vec(member(), 1..12), min in 0u64..5000, span in 0u64..50_000) {
        let t = app_target(&ms, 10, min, min + span);
        prop_assert!(t >= min && t <= min + span);
    }
}

#[test]
fn weights_share_the_app_and_slack_moves_within_seconds_of_steps() {
    let m = |alloc, usage, unmet, weight| Member { min: 100, max: 4000, alloc, usage, unmet, weight };
    // Three containers, needs 1000, 500, 500 at weights 1, 1, 2: 3000 goes
    // 1000 : 500 : 1000 by need x weight, scaled to 3000.
    assert_eq!(split(3000, &[m(0, 1000, 0, 1), m(0, 500, 0, 1), m(0, 500, 0, 2)]), vec![1200, 600, 1200]);
    // One idles at 2000 (uses 100), one is throttled: half the idle one's
    // slack (2000 - 110) moves in one step.
    let out = rebalance(&[m(2000, 100, 0, 1), m(1000, 1000, 700, 1)], 50);
    assert_eq!(out, vec![2000 - 945, 1000 + 945]);
    // A budget below the asks: mins first, then in proportion.
    assert_eq!(user_split(3000, &[(1000, 3000), (1000, 2000)]), vec![1667, 1333]);
}
