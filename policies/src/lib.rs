//! `policies`: the pure decision logic of `scaler`.
//!
//! No I/O, no clock, no async: time (ms as `u64`) and samples come in as
//! arguments, decisions go out, so every run can be replayed exactly.
//!
//! - The model: [`Resource`], [`ResourceSpec`] (min, max, current, guard,
//!   boundary), [`Limits`] (upper, lower), [`Sample`], [`HostCapacity`],
//!   [`Decision`].
//! - Per-container policies behind the [`Policy`] trait, built from a
//!   [`PolicyConfig`] (`PolicyConfig::by_name("fast")?.build()?`):
//!   [`classic::Classic`] (the original's guardian, exactly),
//!   [`fast::Fast`] (the default), and the baselines [`baselines::Static`]
//!   and [`baselines::Vpa`].
//! - Host arbitration: [`arbitrate`].
//! - Energy: [`energy`] (power model, attribution, cap controllers).
//! - A trace simulator: [`trace`], [`sim`] (`sim::simulate_named`), the
//!   standard traces in [`traces`], and the comparison in [`bench`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apps;
pub mod arbitrate;
pub mod baselines;
pub mod bench;
pub mod classic;
pub mod config;
pub mod decision;
pub mod energy;
pub mod error;
pub mod fast;
pub mod follow;
pub mod planner;
pub mod policy;
pub mod resource;
pub mod sample;
pub mod sim;
pub mod spec;
pub mod trace;
pub mod traces;

pub use arbitrate::{Grant, Request, arbitrate};
pub use config::{ConfigError, DEFAULT_POLICY, POLICY_NAMES, PolicyConfig};
pub use decision::{Decision, Direction, Reason};
pub use policy::{Policy, Timing};
pub use resource::{GIB, MB, MIB, MILLICORES_PER_CORE, Resource, ResourceError, ResourceKind};
pub use sample::{HostCapacity, Sample};
pub use sim::{Report, SimConfig, SimError, simulate, simulate_named};
pub use spec::{BoundaryType, Limits, ResourceSpec, ResourceSpecs, SpecError};
pub use trace::{Trace, TraceError};
