//! The limit a resource starts with when a container is subscribed.

use super::{Bounds, mem_floor, page_align};
use crate::resource::Resource;

/// What the starting limit of one resource is chosen from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInput {
    /// Which resource.
    pub resource: Resource,
    /// The user's bounds.
    pub bounds: Bounds,
    /// An external ceiling already set (a re-subscription keeps it).
    pub ceiling: Option<u64>,
    /// A starting limit the user asked for.
    pub requested: Option<u64>,
    /// The limit the agent had set before (a re-subscription).
    pub previous: Option<u64>,
    /// Where the policy would start from the usage measured now
    /// ([`crate::Policy::start`]).
    pub policy_start: Option<u64>,
    /// The limit found in force (`None` = unlimited).
    pub in_force: Option<u64>,
    /// Memory: the working set now.
    pub mem_usage: Option<u64>,
    /// What the host has left once the other containers' limits are taken
    /// (`None` = not limited).
    pub free: Option<u64>,
}

/// The starting limit: what the user asked for, else what the agent had
/// set, else where the policy starts from the usage now, else what was in
/// force, else `max`; within `[min, max]` (max
/// lowered by a ceiling); memory at least [`mem_floor`] of what is in use;
/// at most what the host has free (but never below `min`); memory in whole
/// pages.
pub fn start_limit(i: &StartInput) -> u64 {
    let b = i.bounds;
    let eff_max = b.effective_max(i.ceiling);
    let mut start =
        i.requested.or(i.previous).or(i.policy_start).or(i.in_force).unwrap_or(b.max).max(b.min).min(eff_max);
    if i.resource == Resource::Mem
        && let Some(u) = i.mem_usage
    {
        start = start.max(mem_floor(u).min(eff_max));
    }
    if let Some(free) = i.free {
        start = start.min(free).max(b.min);
    }
    if i.resource == Resource::Mem {
        start = page_align(start, b.min);
    }
    start
}
