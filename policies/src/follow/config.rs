//! Parameters of the `follow` policy.

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, check};
use crate::policy::Timing;
use crate::resource::{MAX_AMOUNT, MB, MIB, Resource, ResourceKind};

const NAME: &str = "follow";

/// Parameters for one family of resources. Fields that do not apply to a
/// family are ignored (memory signals outside memory, saturation outside
/// disk and network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowParams {
    /// Target = recent peak demand x (100 + headroom_pct + adaptive extra)
    /// / 100 + min_headroom.
    pub headroom_pct: u32,
    /// Absolute headroom added to every target, resource units.
    pub min_headroom: u64,
    /// The peak is taken over this much recent history, ms.
    pub window_ms: u64,
    /// Usage above this percentage of the limit: raise before it binds.
    pub up_threshold_pct: u32,
    /// A shrink needs the limit above target x (100 + this) / 100...
    pub down_hysteresis_pct: u32,
    /// ...for this long, and the last raise this old, ms.
    pub down_hold_ms: u64,
    /// CPU and memory: the adaptive headroom looks at this much history, ms.
    pub adapt_window_ms: u64,
    /// CPU and memory: each second the slowdown the limit causes (CPU:
    /// throttled share of demand; memory: reclaim stall share of time)
    /// stays above the allowed slowdown, the headroom grows by this many
    /// percentage points...
    pub adapt_up_pct: u32,
    /// ...and each second it stays below half of it, shrinks by this many.
    pub adapt_down_pct: u32,
    /// The most the adaptive headroom adds, percentage points.
    pub adapt_max_pct: u32,
    /// Memory: a raise while usage grows puts the limit at usage x (100 +
    /// this) / 100 plus room for two more intervals of the fastest growth
    /// seen within `window_ms`.
    pub grow_pct: u32,
    /// Memory: raise when PSI stall exceeds this share of the interval,
    /// per mille...
    pub pressure_threshold_permille: u32,
    /// ...by at least this percentage.
    pub pressure_step_pct: u32,
    /// Memory: when tasks wait at the limit (or after an OOM kill), raise
    /// by at least this percentage.
    pub oom_step_pct: u32,
    /// Memory: reclaim at the limit while the working set is above this
    /// percentage of it raises the limit (the container, not its page
    /// cache, is short).
    pub reclaim_pct: u32,
    /// Disk and network: usage at or above this percentage of the limit
    /// means it is saturated (the demand behind it is unknown)...
    pub saturation_pct: u32,
    /// ...so raise it to at least this percentage of itself.
    pub saturation_factor_pct: u32,
}

impl FollowParams {
    /// CPU defaults: follow the peak of the last second closely; the
    /// headroom adapts to the allowed slowdown.
    pub fn cpu() -> Self {
        FollowParams {
            // 8 % above the recent peak demand...
            headroom_pct: 8,
            // ...plus 20 millicores.
            min_headroom: 20,
            // The peak of the last second (five ticks).
            window_ms: 1_000,
            // Above 95 % of the quota: raise before throttling.
            up_threshold_pct: 95,
            // Shrink when 5 % above target...
            down_hysteresis_pct: 5,
            // ...for a second.
            down_hold_ms: 1_000,
            // Slowdown measured over the last 10 s.
            adapt_window_ms: 10_000,
            adapt_up_pct: 10,
            adapt_down_pct: 2,
            adapt_max_pct: 200,
            grow_pct: 25,
            pressure_threshold_permille: 10,
            pressure_step_pct: 20,
            oom_step_pct: 50,
            reclaim_pct: 80,
            saturation_pct: 98,
            saturation_factor_pct: 200,
        }
    }

    /// Memory defaults: the peak working set of the last 2 s plus 10 % and
    /// 16 MiB; raised at once when usage nears the limit, tasks wait at it,
    /// or reclaim stalls them.
    pub fn mem() -> Self {
        FollowParams {
            headroom_pct: 10,
            min_headroom: 16 * MIB,
            // The peak of the last 2 s...
            window_ms: 2_000,
            // Raise above 95 % (the target sits at 1.1x: below 91 %).
            up_threshold_pct: 95,
            down_hysteresis_pct: 10,
            // ...held a second; a second between a raise or a stall and a
            // shrink.
            down_hold_ms: 1_000,
            // Stall share over the last 10 s against the allowed slowdown.
            adapt_window_ms: 10_000,
            adapt_up_pct: 10,
            adapt_down_pct: 2,
            adapt_max_pct: 200,
            // Growing: 15 % above usage plus two ticks of the growth.
            grow_pct: 15,
            // A stall above 10 % of the interval raises at once.
            pressure_threshold_permille: 100,
            pressure_step_pct: 20,
            oom_step_pct: 50,
            reclaim_pct: 80,
            saturation_pct: 98,
            saturation_factor_pct: 200,
        }
    }

    /// Disk and network defaults.
    pub fn bandwidth() -> Self {
        FollowParams {
            headroom_pct: 15,
            min_headroom: MB,
            window_ms: 2_000,
            up_threshold_pct: 90,
            down_hysteresis_pct: 10,
            down_hold_ms: 2_000,
            adapt_window_ms: 10_000,
            adapt_up_pct: 0,
            adapt_down_pct: 0,
            adapt_max_pct: 0,
            grow_pct: 25,
            pressure_threshold_permille: 10,
            pressure_step_pct: 20,
            oom_step_pct: 50,
            reclaim_pct: 80,
            saturation_pct: 98,
            saturation_factor_pct: 200,
        }
    }

    fn validate(&self, family: &str) -> Result<(), ConfigError> {
        let f = |name: &str| format!("{family}.{name}");
        let pct = |name: &str, v: u32, max: u32| check(NAME, f(name), v, v <= max, "a percentage, 0..=1000");
        pct("headroom_pct", self.headroom_pct, 1000)?;
        check(NAME, f("min_headroom"), self.min_headroom, self.min_headroom <= MAX_AMOUNT, "at most 2^52")?;
        check(NAME, f("window_ms"), self.window_ms, (1..=3_600_000).contains(&self.window_ms), "1..=3600000")?;
        check(
            NAME,
            f("up_threshold_pct"),
            self.up_threshold_pct,
            (1..=100).contains(&self.up_threshold_pct),
            "1..=100",
        )?;
        pct("down_hysteresis_pct", self.down_hysteresis_pct, 1000)?;
        check(NAME, f("down_hold_ms"), self.down_hold_ms, self.down_hold_ms <= 86_400_000, "at most 86400000")?;
        check(
            NAME,
            f("adapt_window_ms"),
            self.adapt_window_ms,
            (1..=3_600_000).contains(&self.adapt_window_ms),
            "1..=3600000",
        )?;
        pct("adapt_up_pct", self.adapt_up_pct, 1000)?;
        pct("adapt_down_pct", self.adapt_down_pct, 1000)?;
        pct("adapt_max_pct", self.adapt_max_pct, 1000)?;
        pct("grow_pct", self.grow_pct, 1000)?;
        pct("pressure_threshold_permille", self.pressure_threshold_permille, 1000)?;
        pct("pressure_step_pct", self.pressure_step_pct, 1000)?;
        pct("oom_step_pct", self.oom_step_pct, 1000)?;
        check(NAME, f("reclaim_pct"), self.reclaim_pct, (1..=100).contains(&self.reclaim_pct), "1..=100")?;
        check(NAME, f("saturation_pct"), self.saturation_pct, (1..=100).contains(&self.saturation_pct), "1..=100")?;
        check(
            NAME,
            f("saturation_factor_pct"),
            self.saturation_factor_pct,
            (101..=1000).contains(&self.saturation_factor_pct),
            "101..=1000",
        )
    }
}

/// Parameters of the `follow` policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FollowConfig {
    /// Interval between decisions the policy is designed for, ms.
    pub tick_ms: u64,
    /// The one knob, in the user's terms: how much CPU demand may be left
    /// waiting behind the limit, in per mille of the demand (10 = 1 %). A
    /// job slowed more than this gets more headroom; less, and the limit
    /// hugs usage. Raise it to pay for less, lower it for latency.
    pub slowdown_permille: u32,
    /// CPU.
    pub cpu: FollowParams,
    /// Memory.
    pub mem: FollowParams,
    /// Disk read and write.
    pub disk: FollowParams,
    /// Network receive and transmit.
    pub net: FollowParams,
}

impl Default for FollowConfig {
    fn default() -> Self {
        FollowConfig {
            // The agent's tick.
            tick_ms: 200,
            // 1 % of the CPU demand may wait.
            slowdown_permille: 10,
            cpu: FollowParams::cpu(),
            mem: FollowParams::mem(),
            disk: FollowParams::bandwidth(),
            net: FollowParams::bandwidth(),
        }
    }
}

impl FollowConfig {
    /// Check every parameter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(NAME, "tick_ms", self.tick_ms, (1..=3_600_000).contains(&self.tick_ms), "1..=3600000")?;
        check(
            NAME,
            "slowdown_permille",
            self.slowdown_permille,
            (1..=1000).contains(&self.slowdown_permille),
            "1..=1000",
        )?;
        self.cpu.validate("cpu")?;
        self.mem.validate("mem")?;
        self.disk.validate("disk")?;
        self.net.validate("net")
    }

    /// The parameters of `resource`'s family (`None` for energy).
    pub fn params(&self, resource: Resource) -> Option<&FollowParams> {
        match resource.kind() {
            ResourceKind::Cpu => Some(&self.cpu),
            ResourceKind::Memory => Some(&self.mem),
            ResourceKind::Bandwidth if resource.is_disk() => Some(&self.disk),
            ResourceKind::Bandwidth => Some(&self.net),
            ResourceKind::Power => None,
        }
    }

    /// Tick as configured; decisions apply at once.
    pub fn timing(&self) -> Timing {
        Timing { tick_ms: self.tick_ms, actuation_delay_ms: 0 }
    }
}
