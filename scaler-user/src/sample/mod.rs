//! What one tick measures for a container, how it is computed from two
//! readings, and the short history kept per container.
pub mod history;
pub mod rates;

use serde::Serialize;

/// What a tick measures is what `/v1/stats` serves: one definition.
pub use scaler_api::wire::{Reading, Resources, Signals, Totals};

/// One tick's result for one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Wall-clock time of the reading (ms since the Unix epoch).
    pub time_ms: u64,
    /// Length of the interval the rates cover (ms).
    pub interval_ms: u64,
    pub resources: Resources,
    pub signals: Signals,
    pub totals: Totals,
}
