//! User side of the network rate limiter: writes `NET_LIMITS` (one token
//! bucket pair per container, keyed by the container's cgroup v2 id) and the
//! `NET_LEVELS` mask the programs use to find limited ancestors.

use std::{collections::BTreeMap, os::unix::fs::MetadataExt as _};

use aya::maps::{Array, HashMap, MapData};
use scaler_common::{NET_MAX_LEVEL, NET_RX, NET_TX, NetLimit};

use crate::cgroup::layout::Layout;

/// Bucket size for `rate` bytes/s.
///
/// Transmit: 20 ms of traffic (TCP is paced at the rate; the bucket only
/// polices what pacing does not cover), and at least two maximal loopback
/// GSO packets so a single large segment always fits.
///
/// Receive: ingress can only drop, and a TCP sender that loses a window
/// stalls for a retransmission timeout (200 ms minimum) before it sends
/// again. A bucket holding 250 ms of traffic is refilled by the time the
/// sender retransmits, so the average stays at the rate instead of
/// collapsing (measured: 20 ms buckets held a 10 MiB/s limit to 1.4 MiB/s).
pub fn burst_for(rate: u64, rx: bool) -> u64 {
    if rx { (rate / 4).max(256 * 1024) } else { (rate / 50).max(256 * 1024) }
}

struct Entry {
    id: u64,
    limit: NetLimit,
}

pub struct NetLimiter {
    limits: HashMap<MapData, u64, NetLimit>,
    levels: Array<MapData, u64>,
    layout: Layout,
    /// By cgroup path.
    entries: BTreeMap<String, Entry>,
}

/// Why a network rate could not be set.
#[derive(Debug, thiserror::Error)]
pub enum NetLimitError {
    #[error("cgroup {cgroup} is at level {level}; network limits work at levels 1..={NET_MAX_LEVEL}")]
    Level { cgroup: String, level: u32 },
    #[error("network limits need the cgroup in the v2 tree ({}): {source}", path.display())]
    NotInV2 { path: std::path::PathBuf, source: std::io::Error },
    #[error("updating {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
}

/// Cgroup level of a path (`/a/b` is 2; the root is 0).
pub fn level_of(cgroup: &str) -> u32 {
    cgroup.trim_matches('/').split('/').filter(|s| !s.is_empty()).count() as u32
}

impl NetLimiter {
    pub fn new(limits: HashMap<MapData, u64, NetLimit>, levels: Array<MapData, u64>, layout: Layout) -> Self {
        Self { limits, levels, layout, entries: BTreeMap::new() }
    }

    fn id_of(&self, cgroup: &str) -> Result<u64, NetLimitError> {
        let path = self.layout.v2_dir(cgroup);
        std::fs::metadata(&path).map(|m| m.ino()).map_err(|source| NetLimitError::NotInV2 { path, source })
    }

    fn sync_levels(&mut self) -> Result<(), NetLimitError> {
        let mask = self.entries.keys().fold(0u64, |m, c| m | (1u64 << level_of(c).min(63)));
        self.levels.set(0, mask, 0).map_err(|source| NetLimitError::Map { map: "NET_LEVELS", source })
    }

    /// Sets (or with `None` removes) the rate of one direction.
    pub fn set(&mut self, cgroup: &str, rx: bool, rate: Option<u64>) -> Result<(), NetLimitError> {
        let level = level_of(cgroup);
        if level == 0 || level > NET_MAX_LEVEL {
            return Err(NetLimitError::Level { cgroup: cgroup.to_owned(), level });
        }
        let id = self.id_of(cgroup)?;
        let dir = if rx { NET_RX } else { NET_TX };
        let mut e = self.entries.remove(cgroup).unwrap_or(Entry { id, limit: NetLimit::default() });
        if e.id != id {
            let _ = self.limits.remove(&e.id);
            e.id = id;
        }
        let rate = rate.unwrap_or(0);
        e.limit.rate_bps[dir] = rate;
        e.limit.burst[dir] = if rate == 0 { 0 } else { burst_for(rate, rx) };
        // A new rate starts with a full bucket.
        e.limit.tokens[dir] = 0;
        e.limit.last_ns[dir] = 0;
        if e.limit.rate_bps == [0, 0] {
            let _ = self.limits.remove(&id);
        } else {
            self.limits.insert(id, e.limit, 0).map_err(|source| NetLimitError::Map { map: "NET_LIMITS", source })?;
            self.entries.insert(cgroup.to_owned(), e);
        }
        self.sync_levels()
    }

    /// The rate in force for one direction.
    pub fn get(&self, cgroup: &str, rx: bool) -> Option<u64> {
        let r = self.entries.get(cgroup)?.limit.rate_bps[if rx { NET_RX } else { NET_TX }];
        (r > 0).then_some(r)
    }

    /// Follows containers whose cgroup was recreated (a restarted container
    /// gets a new id for the same path).
    pub fn refresh(&mut self) {
        let paths: Vec<String> = self.entries.keys().cloned().collect();
        for p in paths {
            let Ok(id) = self.id_of(&p) else { continue };
            if let Some(e) = self.entries.get_mut(&p)
                && e.id != id
            {
                let _ = self.limits.remove(&e.id);
                e.id = id;
                e.limit.tokens = [0, 0];
                e.limit.last_ns = [0, 0];
                let _ = self.limits.insert(id, e.limit, 0);
            }
        }
    }

    /// Dropped packets are counted per cgroup in the counters map.
    pub fn limited(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn levels_and_bursts() {
        assert_eq!(super::level_of("/a/b"), 2);
        assert_eq!(super::level_of("/"), 0);
        assert_eq!(super::level_of("/lxc.payload.x"), 1);
        assert_eq!(super::burst_for(10 << 20, false), 256 * 1024);
        assert_eq!(super::burst_for(1 << 30, false), (1 << 30) / 50);
        assert_eq!(super::burst_for(10 << 20, true), (10 << 20) / 4);
    }
}
