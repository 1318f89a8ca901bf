//! `GET /v1/events` (and each message of `/v1/events/stream`): the limit
//! changes an agent made or noticed.

use policies::Resource;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub time_ms: u64,
    pub container: String,
    pub resource: Resource,
    /// `None` = unlimited.
    pub old: Option<u64>,
    pub new: Option<u64>,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<Event>,
}
