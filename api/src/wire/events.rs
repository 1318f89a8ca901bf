//! `GET /v1/events` (and each message of `/v1/events/stream`): the limit
//! changes an agent made or noticed.

use policies::Resource;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub time_ms: u64,
    /// The container; empty for a change of the agent's own settings.
    pub container: String,
    /// The limit changed; `None` for a configuration change (a policy's
    /// rules, the agent's timing), which `reason` describes.
    #[serde(default)]
    pub resource: Option<Resource>,
    /// `None` = unlimited.
    pub old: Option<u64>,
    pub new: Option<u64>,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<Event>,
}
