//! Energy: host power from a model or RAPL, attribution to containers by
//! CPU-time share, and controllers that hold an application under a power
//! cap by setting per-container CPU ceilings.
//!
//! Host power (model) = `idle + (max - idle) x cpu_used / cpu_capacity`.
//! The active part (`power - idle`) is split among containers by their
//! share of the host's CPU time, as Kepler does; an application's power is
//! the sum over its containers.

mod controller;
mod sim;

use serde::{Deserialize, Serialize};

pub use controller::{CapContainer, CapControllerConfig, CapInput, EnergyCapController, InvertingCap, ProportionalCap};
pub use sim::{CapReport, CapSegment, CapSimConfig, simulate_cap};

use crate::resource::MAX_AMOUNT;

/// Error from energy configuration or simulation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnergyError {
    /// Idle power above max power.
    #[error("power model: idle {idle_mw} mW is above max {max_mw} mW")]
    IdleAboveMax {
        /// Idle power.
        idle_mw: u64,
        /// Max power.
        max_mw: u64,
    },
    /// A parameter is out of range.
    #[error("energy parameter `{field}` = {value} is invalid: {expected}")]
    Invalid {
        /// Which parameter.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What would be valid.
        expected: &'static str,
    },
    /// The trace has no CPU demand.
    #[error("the trace has no cpu demand to cap")]
    NoCpu,
}

/// Linear host power model: idle and full-load power, milliwatts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawModel", into = "RawModel")]
pub struct PowerModel {
    idle_mw: u64,
    max_mw: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct RawModel {
    idle_mw: u64,
    max_mw: u64,
}

impl TryFrom<RawModel> for PowerModel {
    type Error = EnergyError;

    fn try_from(r: RawModel) -> Result<Self, Self::Error> {
        PowerModel::try_new(r.idle_mw, r.max_mw)
    }
}

impl From<PowerModel> for RawModel {
    fn from(m: PowerModel) -> Self {
        RawModel { idle_mw: m.idle_mw, max_mw: m.max_mw }
    }
}

impl PowerModel {
    /// A model; `idle_mw <= max_mw <= 2^52`.
    pub fn try_new(idle_mw: u64, max_mw: u64) -> Result<Self, EnergyError> {
        if max_mw > MAX_AMOUNT {
            return Err(EnergyError::Invalid { field: "max_mw", value: max_mw, expected: "at most 2^52" });
        }
        if idle_mw > max_mw {
            return Err(EnergyError::IdleAboveMax { idle_mw, max_mw });
        }
        Ok(PowerModel { idle_mw, max_mw })
    }

    /// Idle power, mW.
    pub fn idle_mw(&self) -> u64 {
        self.idle_mw
    }

    /// Full-load power, mW.
    pub fn max_mw(&self) -> u64 {
        self.max_mw
    }

    /// Host power with `cpu_used` of `cpu_capacity` millicores busy
    /// (utilisation capped at 1; a zero capacity counts as idle).
    pub fn host_power_mw(&self, cpu_used: u64, cpu_capacity: u64) -> u64 {
        if cpu_capacity == 0 {
            return self.idle_mw;
        }
        let used = u128::from(cpu_used.min(cpu_capacity));
        let active = u128::from(self.max_mw - self.idle_mw) * used / u128::from(cpu_capacity);
        self.idle_mw + u64::try_from(active).unwrap_or(0)
    }
}

/// Where host power comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSource {
    /// The linear model.
    Model(PowerModel),
    /// A RAPL reading (package + dram), with the host's idle power.
    Rapl {
        /// Measured power over the interval, mW.
        measured_mw: u64,
        /// Idle power of the host, mW.
        idle_mw: u64,
    },
}

impl PowerSource {
    /// `(host power, active power)` in mW with `cpu_used` of
    /// `cpu_capacity` millicores busy.
    pub fn host_power(&self, cpu_used: u64, cpu_capacity: u64) -> (u64, u64) {
        match *self {
            PowerSource::Model(m) => {
                let p = m.host_power_mw(cpu_used, cpu_capacity);
                (p, p - m.idle_mw())
            }
            PowerSource::Rapl { measured_mw, idle_mw } => (measured_mw, measured_mw.saturating_sub(idle_mw)),
        }
    }
}

/// Split `active_mw` among containers by their CPU time (any unit) out of
/// the host's total CPU time `host_cpu` (if smaller than the containers'
/// sum, the sum is used). Each share is truncated, so the parts never sum
/// above `active_mw`.
pub fn attribute(active_mw: u64, container_cpu: &[u64], host_cpu: u64) -> Vec<u64> {
    let sum: u128 = container_cpu.iter().map(|&c| u128::from(c)).sum();
    let total = sum.max(u128::from(host_cpu));
    container_cpu
        .iter()
        .map(|&c| {
            (u128::from(active_mw) * u128::from(c)).checked_div(total).and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn model_is_linear_and_capped() {
        let m = PowerModel::try_new(60_000, 220_000).unwrap();
        assert_eq!(m.host_power_mw(0, 16_000), 60_000);
        assert_eq!(m.host_power_mw(8_000, 16_000), 140_000);
        assert_eq!(m.host_power_mw(99_000, 16_000), 220_000);
        assert_eq!(m.host_power_mw(5, 0), 60_000);
        assert_eq!(PowerModel::try_new(2, 1).unwrap_err(), EnergyError::IdleAboveMax { idle_mw: 2, max_mw: 1 });
        let bad = serde_json::from_str::<PowerModel>(r#"{"idle_mw":5,"max_mw":1}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn rapl_reading_gives_active_above_idle() {
        let s = PowerSource::Rapl { measured_mw: 90_000, idle_mw: 60_000 };
        assert_eq!(s.host_power(1, 1), (90_000, 30_000));
    }

    #[test]
    fn attribution_by_cpu_share() {
        // 80 W active; containers used 2 and 6 of 10 CPU-seconds.
        assert_eq!(attribute(80_000, &[2, 6], 10), vec![16_000, 48_000]);
        // Host total below the containers' sum: their sum is used.
        assert_eq!(attribute(80_000, &[1, 3], 2), vec![20_000, 60_000]);
        assert_eq!(attribute(80_000, &[0, 0], 0), vec![0, 0]);
    }
}
