//! `GET /v1/round`: what an aggregator reads from an agent every round, in
//! one answer instead of one request each for the brief stats, the host,
//! the events and (now and then) the subscriptions.

use serde::{Deserialize, Serialize};

use super::{BriefStats, Event, Host, Subscription};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub stats: BriefStats,
    pub host: Host,
    /// As `GET /v1/events` with the same `since_ms` and `limit`.
    #[serde(default)]
    pub events: Vec<Event>,
    /// As `GET /v1/containers`; only when asked for (`containers=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<Subscription>>,
}
