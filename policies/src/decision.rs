//! What a policy decides: a new limit for one resource, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resource::Resource;

/// Set `resource` from `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Which resource.
    pub resource: Resource,
    /// The limit in force when the decision was made.
    pub old: u64,
    /// The limit to apply.
    pub new: u64,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// `new - old`, signed.
    pub fn delta(&self) -> i64 {
        crate::spec::as_i64(self.new) - crate::spec::as_i64(self.old)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {} ({})", self.resource, self.old, self.new, self.reason)
    }
}

/// Direction of a classic event or rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Scale up.
    Up,
    /// Scale down.
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// Why a limit changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// A classic rule fired with these live event counts.
    ClassicRule {
        /// Which rule.
        direction: Direction,
        /// Live up events when it fired.
        ups: u32,
        /// Live down events when it fired.
        downs: u32,
        /// The trimmed amount.
        amount: i64,
    },
    /// CPU was throttled: this much demand went unmet (millicores).
    Throttled {
        /// Estimated unmet demand.
        unmet: u64,
    },
    /// Usage crossed the upper threshold.
    AboveUpper {
        /// The usage seen.
        usage: u64,
    },
    /// Usage sat at the limit (bandwidth saturated, no throttle signal).
    Saturated {
        /// The usage seen.
        usage: u64,
    },
    /// Memory pressure (PSI stall) above the threshold.
    MemoryPressure {
        /// Stall time over the evaluated interval, microseconds.
        stall_us: u64,
    },
    /// Tasks waited at the memory limit for it to be raised.
    MemoryWait,
    /// The working set pressed on the memory limit (reclaim entered).
    MemoryReclaim {
        /// Reclaim entries over the evaluated interval.
        reclaims: u64,
    },
    /// The container re-read file cache the limit had evicted, slowing it
    /// more than allowed: room for that cache.
    MemoryRefault {
        /// Bytes read back over the evaluated interval.
        bytes: u64,
    },
    /// The container was OOM-killed.
    OomKill {
        /// Kills seen.
        kills: u64,
    },
    /// Memory: usage now plus the largest recent jump would not fit.
    JumpRoom {
        /// Usage plus the jump.
        need: u64,
    },
    /// Recent usage stayed well below the limit: shrink toward the target.
    Shrink {
        /// Where the policy aims.
        target: u64,
    },
    /// A recommender's target (VPA-like baseline).
    Recommendation {
        /// The recommended limit.
        target: u64,
    },
    /// Static allocation: the limit is set to `max`.
    Static,
    /// The energy cap controller set a CPU ceiling.
    EnergyCap {
        /// The cap, milliwatts.
        cap_mw: u64,
        /// Measured power, milliwatts.
        power_mw: u64,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ClassicRule { direction, ups, downs, amount } => {
                write!(f, "classic {direction} rule, {ups} up / {downs} down events, amount {amount:+}")
            }
            Reason::Throttled { unmet } => write!(f, "throttled, {unmet} unmet"),
            Reason::AboveUpper { usage } => write!(f, "usage {usage} above upper"),
            Reason::Saturated { usage } => write!(f, "usage {usage} saturates the limit"),
            Reason::MemoryPressure { stall_us } => write!(f, "memory pressure, {stall_us} us stall"),
            Reason::MemoryWait => f.write_str("tasks waiting at the memory limit"),
            Reason::MemoryReclaim { reclaims } => write!(f, "working set pressing on the limit ({reclaims} reclaims)"),
            Reason::MemoryRefault { bytes } => write!(f, "evicted cache read back ({bytes} bytes)"),
            Reason::OomKill { kills } => write!(f, "{kills} OOM kill(s)"),
            Reason::JumpRoom { need } => write!(f, "room for a recent jump needs {need}"),
            Reason::Shrink { target } => write!(f, "usage well below limit, target {target}"),
            Reason::Recommendation { target } => write!(f, "recommendation {target}"),
            Reason::Static => f.write_str("static allocation at max"),
            Reason::EnergyCap { cap_mw, power_mw } => {
                write!(f, "energy cap {cap_mw} mW, power {power_mw} mW")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn display_and_serde() {
        let d = Decision {
            resource: Resource::Cpu,
            old: 1000,
            new: 1750,
            reason: Reason::ClassicRule { direction: Direction::Up, ups: 2, downs: 0, amount: 750 },
        };
        assert_eq!(d.delta(), 750);
        assert_eq!(d.to_string(), "cpu 1000 -> 1750 (classic up rule, 2 up / 0 down events, amount +750)");
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"kind\":\"classic_rule\""));
        let back: Decision = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }
}
