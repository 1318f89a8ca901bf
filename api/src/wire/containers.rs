//! `GET /v1/containers[/{name}]` (and the answer to each management
//! request): a subscription, its bounds and the limits in force.

use std::collections::BTreeMap;

use policies::{BoundaryType, Resource};
use serde::{Deserialize, Serialize};

/// One managed resource of a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceState {
    pub min: u64,
    pub max: u64,
    /// The limit in force (`None` = unlimited).
    pub current: Option<u64>,
    pub usage: Option<u64>,
    pub guard: bool,
    pub boundary: u8,
    pub boundary_type: BoundaryType,
    /// The band the policy keeps usage in, when it has one.
    pub upper: Option<i64>,
    pub lower: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    #[default]
    Active,
    /// The cgroup does not exist (yet, or any more).
    Missing,
}

impl SubscriptionStatus {
    pub fn name(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub name: String,
    #[serde(default)]
    pub cgroup: String,
    #[serde(default)]
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_config: Option<serde_json::Value>,
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub status: SubscriptionStatus,
    #[serde(default)]
    pub resources: BTreeMap<Resource, ResourceState>,
    /// External ceilings in force (an energy cap's CPU ceiling).
    #[serde(default)]
    pub ceiling: BTreeMap<Resource, u64>,
    /// The limits found when management began (what restore puts back).
    #[serde(default)]
    pub original: BTreeMap<Resource, Option<u64>>,
    /// When the current policy began deciding (ms since the epoch; 0 when
    /// it began with the agent).
    #[serde(default)]
    pub policy_since_ms: u64,
    /// CPU enforced as a core set as well (absent when off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cpu_placement: bool,
    /// The CPUs placement gave it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u32>,
}

/// `GET /v1/containers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscriptions {
    pub containers: Vec<Subscription>,
}

/// The answer to `DELETE /v1/containers/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribed {
    pub name: String,
    /// Whether the limits found at subscription were put back.
    pub restored: bool,
}
