//! Host arbitration: fitting the limits containers want into what a host has.
//!
//! The rule, for one resource of one host with capacity `C`:
//!
//! 1. Every request wants `want` (raised to its `min` if below it).
//! 2. If the wants fit (`sum(want) <= C`), everyone gets what they want.
//! 3. Otherwise, floors first: priority classes from highest to lowest each
//!    get their `min`s in full while they fit. The first class whose `min`s do
//!    not fit shares what is left in proportion to its `min`s, and every lower
//!    class gets 0: this is the one case where a grant is below `min`, because
//!    `min` itself does not fit.
//! 4. Then the rest above the floors: classes from highest to lowest get
//!    their `want - min` in full while it fits; the first class that does not
//!    fit shares what is left in proportion to `want - min`; lower classes
//!    stay at their `min`.
//!
//! Proportional shares are integers by the largest-remainder method (ties to
//! the earlier request), so grants sum to exactly what was shared. Grants
//! never exceed `C` in total and never exceed a request's `want`.

use serde::{Deserialize, Serialize};

/// What one container asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The limit it should not go below.
    pub min: u64,
    /// The limit it wants.
    pub want: u64,
    /// Higher is served first.
    pub priority: u32,
}

/// What one container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The granted limit.
    pub amount: u64,
    /// True when less than wanted.
    pub limited: bool,
}

/// Grant `requests` within `capacity` by the rule in the module docs. The
/// result has one grant per request, in order.
pub fn arbitrate(requests: &[Request], capacity: u64) -> Vec<Grant> {
    let wants: Vec<u64> = requests.iter().map(|r| r.want.max(r.min)).collect();
    let total: u128 = wants.iter().map(|&w| u128::from(w)).sum();
    let mut granted = vec![0u64; requests.len()];
    if total <= u128::from(capacity) {
        granted.copy_from_slice(&wants);
    } else {
        let mut classes: Vec<u32> = requests.iter().map(|r| r.priority).collect();
        classes.sort_unstable_by(|a, b| b.cmp(a));
        classes.dedup();
        let mut left = capacity;
        // Floors.
        let mut floors_fit = true;
        for &class in &classes {
            let members: Vec<usize> = (0..requests.len()).filter(|&i| requests[i].priority == class).collect();
            let mins: Vec<u64> = members.iter().map(|&i| requests[i].min).collect();
            let given = fill(&mins, &mut left);
            for (k, &i) in members.iter().enumerate() {
                granted[i] = given[k];
            }
            if given != mins {
                floors_fit = false;
                break;
            }
        }
        // Above the floors.
        if floors_fit {
            for &class in &classes {
                let members: Vec<usize> = (0..requests.len()).filter(|&i| requests[i].priority == class).collect();
                let extras: Vec<u64> = members.iter().map(|&i| wants[i] - requests[i].min).collect();
                let given = fill(&extras, &mut left);
                for (k, &i) in members.iter().enumerate() {
                    granted[i] += given[k];
                }
                if left == 0 {
                    break;
                }
            }
        }
    }
    granted.iter().zip(&wants).map(|(&amount, &want)| Grant { amount, limited: amount < want }).collect()
}

/// Give `asks` in full if they fit in `left`, else share `left` in
/// proportion to them; take what was given from `left`.
fn fill(asks: &[u64], left: &mut u64) -> Vec<u64> {
    let sum: u128 = asks.iter().map(|&a| u128::from(a)).sum();
    if sum <= u128::from(*left) {
        // sum fits in u64 here since it is at most `left`.
        *left -= u64::try_from(sum).unwrap_or(*left);
        return asks.to_vec();
    }
    let given = share(*left, asks, sum);
    *left = 0;
    given
}

/// Split `total` (< `sum`) in proportion to `weights` by largest remainder.
pub(crate) fn share(total: u64, weights: &[u64], sum: u128) -> Vec<u64> {
    let mut out = Vec::with_capacity(weights.len());
    let mut rems = Vec::with_capacity(weights.len());
    let mut given: u128 = 0;
    for (i, &w) in weights.iter().enumerate() {
        let exact = u128::from(total) * u128::from(w);
        let q = exact / sum;
        given += q;
        out.push(u64::try_from(q).unwrap_or(w));
        rems.push((exact % sum, i));
    }
    // Largest remainders first, earlier request on ties.
    rems.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut extra = u128::from(total) - given;
    for (rem, i) in rems {
        if extra == 0 || rem == 0 {
            break;
        }
        out[i] += 1;
        extra -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(min: u64, want: u64, priority: u32) -> Request {
        Request { min, want, priority }
    }

    fn amounts(g: &[Grant]) -> Vec<u64> {
        g.iter().map(|g| g.amount).collect()
    }

    #[test]
    fn everything_fits() {
        let g = arbitrate(&[req(1, 5, 0), req(1, 5, 0)], 10);
        assert_eq!(amounts(&g), vec![5, 5]);
        assert!(g.iter().all(|g| !g.limited));
    }

    #[test]
    fn want_below_min_is_raised_to_min() {
        let g = arbitrate(&[req(4, 1, 0)], 10);
        assert_eq!(amounts(&g), vec![4]);
    }

    #[test]
    fn priority_then_proportional() {
        // Capacity 100: the high class gets all it wants (60); the two low
        // ones get their mins (10 each) and share the last 20 in proportion
        // to their extras 30 and 10.
        let g = arbitrate(&[req(10, 60, 1), req(10, 40, 0), req(10, 20, 0)], 100);
        assert_eq!(amounts(&g), vec![60, 25, 15]);
        assert_eq!(g.iter().filter(|g| g.limited).count(), 2);
    }

    #[test]
    fn mins_that_do_not_fit_share_what_is_left() {
        // Floors: high class 50; low class wants 40 + 40 of floors with 30
        // left: 15 each; nothing above floors.
        let g = arbitrate(&[req(50, 80, 2), req(40, 40, 1), req(40, 90, 1), req(5, 5, 0)], 80);
        assert_eq!(amounts(&g), vec![50, 15, 15, 0]);
        assert_eq!(amounts(&g).iter().sum::<u64>(), 80);
    }

    #[test]
    fn largest_remainder_sums_exactly() {
        let g = arbitrate(&[req(0, 1, 0), req(0, 1, 0), req(0, 1, 0)], 2);
        assert_eq!(amounts(&g), vec![1, 1, 0]);
    }
}
