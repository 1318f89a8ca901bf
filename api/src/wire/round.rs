//! `GET /v1/round`: what an aggregator reads from an agent every round, in
//! one answer instead of one request each for the brief stats, the host,
//! the events and (now and then) the subscriptions. The agent serializes
//! [`BriefRound`]; readers parse it as [`Round`], whose stats are the full
//! [`Stats`] type (the brief form parses as it, as `/v1/stats?fields=brief`
//! does).

use serde::{Deserialize, Serialize};

use super::{BriefStats, Event, Host, Stats, Subscription};

/// What the agent serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BriefRound {
    pub stats: BriefStats,
    pub host: Host,
    /// As `GET /v1/events` with the same `since_ms` and `limit`.
    pub events: Vec<Event>,
    /// As `GET /v1/containers`; only when asked for (`containers=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<Subscription>>,
}

/// What a reader parses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub stats: Stats,
    pub host: Host,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub containers: Option<Vec<Subscription>>,
}
