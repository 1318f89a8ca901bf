//! Parameters of the `fast` policy.

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, check};
use crate::policy::Timing;
use crate::resource::{MAX_AMOUNT, MB, MIB, Resource, ResourceKind};

const NAME: &str = "fast";

/// Parameters for one family of resources. Fields that do not apply to a
/// family are ignored (e.g. `pressure_*` outside memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastParams {
    /// Target = estimate x (100 + headroom_pct) / 100 + min_headroom.
    pub headroom_pct: u32,
    /// Absolute headroom added to every target, resource units.
    pub min_headroom: u64,
    /// Usage above this percentage of the limit is "crossing upper": raise.
    pub up_threshold_pct: u32,
    /// Bandwidth: usage at or above this percentage of the limit means the
    /// limit is saturated (demand unknown).
    pub saturation_pct: u32,
    /// Bandwidth: when saturated, raise the limit to at least this
    /// percentage of itself (200 = double).
    pub saturation_factor_pct: u32,
    /// How far back the shrink target looks, ms.
    pub lookback_ms: u64,
    /// Percentile of the per-bucket peaks in the lookback (100 = peak).
    pub percentile: u32,
    /// Memory: how long the largest jump (rise from one bucket to the
    /// next) is remembered; the limit keeps room for it above usage, ms.
    pub jump_lookback_ms: u64,
    /// Shrink only when the limit exceeds the target by more than this
    /// percentage (hysteresis).
    pub down_hysteresis_pct: u32,
    /// The over-provisioned condition must hold this long, and the last
    /// raise be this old, before a shrink; also the minimum history, ms.
    pub down_hold_ms: u64,
    /// A shrink removes at most this percentage of the limit (100 = go
    /// straight to the target).
    pub max_down_step_pct: u32,
    /// Memory: raise when PSI stall exceeds this percentage of the interval.
    pub pressure_threshold_pct: u32,
    /// Memory: on pressure, raise by at least this percentage.
    pub pressure_step_pct: u32,
    /// Memory: after an OOM kill, raise by at least this percentage.
    pub oom_step_pct: u32,
}

impl FastParams {
    /// CPU defaults.
    pub fn cpu() -> Self {
        FastParams {
            // 15 % above the demand estimate, as VPA's margin.
            headroom_pct: 15,
            // Plus 50 millicores so tiny containers keep room.
            min_headroom: 50,
            // Usage above 90 % of the quota: raise before throttling.
            up_threshold_pct: 90,
            // Unused for CPU (throttled time gives the unmet demand).
            saturation_pct: 98,
            saturation_factor_pct: 200,
            // 30 s of history for the shrink target.
            lookback_ms: 30_000,
            // p95 of 1 s peaks.
            percentile: 95,
            jump_lookback_ms: 120_000,
            // Shrink only when 20 % above target.
            down_hysteresis_pct: 20,
            // 5 s over target and since the last raise.
            down_hold_ms: 5_000,
            // CPU can go straight to the target (a miss costs one tick).
            max_down_step_pct: 100,
            pressure_threshold_pct: 1,
            pressure_step_pct: 20,
            oom_step_pct: 50,
        }
    }

    /// Memory defaults: lower slowly, never below the recent peak.
    pub fn mem() -> Self {
        FastParams {
            headroom_pct: 15,
            // 64 MiB of slack above the peak.
            min_headroom: 64 * MIB,
            up_threshold_pct: 90,
            saturation_pct: 98,
            saturation_factor_pct: 200,
            // One minute of history for the peak...
            lookback_ms: 60_000,
            // ...the peak, not a percentile: a miss is an OOM kill.
            percentile: 100,
            // Jumps are remembered for two minutes: a burst after a quiet
            // minute still finds room.
            jump_lookback_ms: 120_000,
            down_hysteresis_pct: 20,
            // 5 s between shrink steps...
            down_hold_ms: 5_000,
            // ...of at most 20 % each.
            max_down_step_pct: 20,
            // Stall above 1 % of the interval (Senpai's target is ~0.2 %).
            pressure_threshold_pct: 1,
            // +20 % on pressure.
            pressure_step_pct: 20,
            // +50 % after an OOM kill.
            oom_step_pct: 50,
        }
    }

    /// Disk and network defaults.
    pub fn bandwidth() -> Self {
        FastParams {
            headroom_pct: 15,
            // 1 MB/s of slack.
            min_headroom: MB,
            up_threshold_pct: 90,
            // At 98 % of the limit the link is saturated...
            saturation_pct: 98,
            // ...so double it (the demand behind a saturated limit is unknown).
            saturation_factor_pct: 200,
            lookback_ms: 30_000,
            percentile: 95,
            jump_lookback_ms: 120_000,
            down_hysteresis_pct: 20,
            down_hold_ms: 5_000,
            max_down_step_pct: 100,
            pressure_threshold_pct: 1,
            pressure_step_pct: 20,
            oom_step_pct: 50,
        }
    }

    /// `x * (100 + headroom) / 100 + min_headroom`, saturating.
    pub fn grow(&self, x: u64) -> u64 {
        let v = u128::from(x) * u128::from(100 + self.headroom_pct) / 100 + u128::from(self.min_headroom);
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    fn validate(&self, family: &str) -> Result<(), ConfigError> {
        let f = |name: &str| format!("{family}.{name}");
        check(NAME, f("headroom_pct"), self.headroom_pct, self.headroom_pct <= 1000, "0..=1000")?;
        check(NAME, f("min_headroom"), self.min_headroom, self.min_headroom <= MAX_AMOUNT, "at most 2^52")?;
        check(
            NAME,
            f("up_threshold_pct"),
            self.up_threshold_pct,
            (1..=100).contains(&self.up_threshold_pct),
            "1..=100",
        )?;
        check(NAME, f("saturation_pct"), self.saturation_pct, (1..=100).contains(&self.saturation_pct), "1..=100")?;
        check(
            NAME,
            f("saturation_factor_pct"),
            self.saturation_factor_pct,
            (101..=1000).contains(&self.saturation_factor_pct),
            "101..=1000",
        )?;
        check(NAME, f("lookback_ms"), self.lookback_ms, (1..=86_400_000).contains(&self.lookback_ms), "1..=86400000")?;
        check(
            NAME,
            f("jump_lookback_ms"),
            self.jump_lookback_ms,
            self.jump_lookback_ms <= 86_400_000,
            "at most 86400000",
        )?;
        check(NAME, f("percentile"), self.percentile, (1..=100).contains(&self.percentile), "1..=100")?;
        check(NAME, f("down_hysteresis_pct"), self.down_hysteresis_pct, self.down_hysteresis_pct <= 1000, "0..=1000")?;
        check(NAME, f("down_hold_ms"), self.down_hold_ms, self.down_hold_ms <= 86_400_000, "at most 86400000")?;
        check(
            NAME,
            f("max_down_step_pct"),
            self.max_down_step_pct,
            (1..=100).contains(&self.max_down_step_pct),
            "1..=100",
        )?;
        check(
            NAME,
            f("pressure_threshold_pct"),
            self.pressure_threshold_pct,
            self.pressure_threshold_pct <= 100,
            "0..=100",
        )?;
        check(NAME, f("pressure_step_pct"), self.pressure_step_pct, self.pressure_step_pct <= 1000, "0..=1000")?;
        check(NAME, f("oom_step_pct"), self.oom_step_pct, self.oom_step_pct <= 1000, "0..=1000")
    }
}

/// Parameters of the `fast` policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FastConfig {
    /// Interval between decisions the policy is designed for, ms (the
    /// agent's tick; the simulator uses it).
    pub tick_ms: u64,
    /// Usage history is kept as the peak of each bucket of this length, ms.
    pub bucket_ms: u64,
    /// CPU.
    pub cpu: FastParams,
    /// Memory.
    pub mem: FastParams,
    /// Disk read and write.
    pub disk: FastParams,
    /// Network receive and transmit.
    pub net: FastParams,
}

impl Default for FastConfig {
    fn default() -> Self {
        FastConfig {
            // The agent ticks every 100-250 ms.
            tick_ms: 200,
            // One-second peaks.
            bucket_ms: 1_000,
            cpu: FastParams::cpu(),
            mem: FastParams::mem(),
            disk: FastParams::bandwidth(),
            net: FastParams::bandwidth(),
        }
    }
}

impl FastConfig {
    /// Check every parameter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(NAME, "tick_ms", self.tick_ms, (1..=3_600_000).contains(&self.tick_ms), "1..=3600000")?;
        check(NAME, "bucket_ms", self.bucket_ms, (1..=3_600_000).contains(&self.bucket_ms), "1..=3600000")?;
        self.cpu.validate("cpu")?;
        self.mem.validate("mem")?;
        self.disk.validate("disk")?;
        self.net.validate("net")
    }

    /// The parameters of `resource`'s family (`None` for energy).
    pub fn params(&self, resource: Resource) -> Option<&FastParams> {
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
