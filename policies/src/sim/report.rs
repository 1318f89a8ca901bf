//! What a simulation measures.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resource::{GIB, MILLICORES_PER_CORE, Resource};

/// Metrics of one resource, over all containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// Used / allocated, % (time-integrated).
    pub utilisation_pct: f64,
    /// Demand not served / demand, % (throttled, or lost while restarting
    /// after an OOM kill).
    pub unmet_pct: f64,
    /// Limit changes applied.
    pub limit_changes: u64,
    /// Demand steps seen (a rise of more than the configured percentage in
    /// one simulation step, above the limit in force).
    pub steps: u64,
    /// Steps the limit never covered before the demand fell back or the
    /// trace ended.
    pub unresolved_steps: u64,
    /// Median time from a step to a limit that covers it, ms; `None` when
    /// there were no steps or most were never covered.
    pub reaction_median_ms: Option<u64>,
    /// Time-integrated demand, unit-seconds.
    pub demand_unit_s: f64,
    /// Time-integrated allocation, unit-seconds.
    pub allocated_unit_s: f64,
}

/// The result of replaying a trace through a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Policy name.
    pub policy: String,
    /// Trace name.
    pub trace: String,
    /// Simulated time, s.
    pub duration_s: f64,
    /// Containers in the trace.
    pub containers: usize,
    /// Per-resource metrics.
    pub resources: BTreeMap<Resource, ResourceReport>,
    /// Mean of the per-resource utilisations, %.
    pub utilisation_pct: f64,
    /// Mean of the per-resource unmet-demand percentages, %.
    pub unmet_pct: f64,
    /// OOM kills.
    pub oom_events: u64,
    /// Limit changes applied, all resources.
    pub limit_changes: u64,
    /// Demand steps, all resources.
    pub steps: u64,
    /// Steps never covered, all resources.
    pub unresolved_steps: u64,
    /// Median reaction time over all steps (uncovered ones count as
    /// infinite), ms.
    pub reaction_median_ms: Option<u64>,
    /// Allocated CPU, core-seconds.
    pub core_seconds: f64,
    /// Allocated memory, GiB-seconds.
    pub gib_seconds: f64,
}

/// Running sums for one series.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acc {
    /// Sums of value x ms.
    pub demand: u128,
    pub used: u128,
    pub allocated: u128,
    pub changes: u64,
    /// Reaction times of covered steps, ms.
    pub reactions: Vec<u64>,
    pub unresolved: u64,
}

impl Acc {
    pub fn merge(&mut self, o: &Acc) {
        self.demand += o.demand;
        self.used += o.used;
        self.allocated += o.allocated;
        self.changes += o.changes;
        self.reactions.extend_from_slice(&o.reactions);
        self.unresolved += o.unresolved;
    }
}

/// Lower median where each unresolved step counts as infinite.
pub(crate) fn median(reactions: &[u64], unresolved: u64) -> Option<u64> {
    let n = reactions.len() as u64 + unresolved;
    if n == 0 {
        return None;
    }
    let mut r = reactions.to_vec();
    r.sort_unstable();
    r.get(usize::try_from((n - 1) / 2).ok()?).copied()
}

fn ratio_pct(num: u128, den: u128) -> f64 {
    if den == 0 { 0.0 } else { num as f64 * 100.0 / den as f64 }
}

impl ResourceReport {
    pub(crate) fn from_acc(a: &Acc) -> Self {
        ResourceReport {
            utilisation_pct: ratio_pct(a.used, a.allocated),
            unmet_pct: ratio_pct(a.demand - a.used.min(a.demand), a.demand),
            limit_changes: a.changes,
            steps: a.reactions.len() as u64 + a.unresolved,
            unresolved_steps: a.unresolved,
            reaction_median_ms: median(&a.reactions, a.unresolved),
            demand_unit_s: a.demand as f64 / 1000.0,
            allocated_unit_s: a.allocated as f64 / 1000.0,
        }
    }
}

impl Report {
    pub(crate) fn build(
        policy: &str,
        trace: &str,
        duration_ms: u64,
        containers: usize,
        accs: &BTreeMap<Resource, Acc>,
        oom_events: u64,
    ) -> Report {
        let resources: BTreeMap<Resource, ResourceReport> =
            accs.iter().map(|(r, a)| (*r, ResourceReport::from_acc(a))).collect();
        let n = resources.len().max(1) as f64;
        let mut all = Acc::default();
        for a in accs.values() {
            all.merge(a);
        }
        let alloc = |r: Resource| accs.get(&r).map_or(0, |a| a.allocated) as f64 / 1000.0;
        Report {
            policy: policy.to_owned(),
            trace: trace.to_owned(),
            duration_s: duration_ms as f64 / 1000.0,
            containers,
            utilisation_pct: resources.values().map(|r| r.utilisation_pct).sum::<f64>() / n,
            unmet_pct: resources.values().map(|r| r.unmet_pct).sum::<f64>() / n,
            oom_events,
            limit_changes: all.changes,
            steps: all.reactions.len() as u64 + all.unresolved,
            unresolved_steps: all.unresolved,
            reaction_median_ms: median(&all.reactions, all.unresolved),
            core_seconds: alloc(Resource::Cpu) / MILLICORES_PER_CORE as f64,
            gib_seconds: alloc(Resource::Mem) / GIB as f64,
            resources,
        }
    }

    /// Utilisation of one resource, % (0 when absent).
    pub fn utilisation(&self, r: Resource) -> f64 {
        self.resources.get(&r).map_or(0.0, |x| x.utilisation_pct)
    }

    /// Unmet demand of one resource, % (0 when absent).
    pub fn unmet(&self, r: Resource) -> f64 {
        self.resources.get(&r).map_or(0.0, |x| x.unmet_pct)
    }
}

/// Formats a reaction time: seconds, `never` or `-` (no steps).
pub fn fmt_reaction(ms: Option<u64>, steps: u64) -> String {
    match (ms, steps) {
        (_, 0) => "-".to_owned(),
        (None, _) => "never".to_owned(),
        (Some(ms), _) => format!("{:.1}", ms as f64 / 1000.0),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "policy {} on trace {} ({:.0} s, {} containers)",
            self.policy, self.trace, self.duration_s, self.containers
        )?;
        writeln!(
            f,
            "  utilisation {:.1} %, unmet demand {:.2} %, OOM kills {}, limit changes {}",
            self.utilisation_pct, self.unmet_pct, self.oom_events, self.limit_changes
        )?;
        writeln!(
            f,
            "  reaction median {} s over {} steps ({} never covered)",
            fmt_reaction(self.reaction_median_ms, self.steps),
            self.steps,
            self.unresolved_steps
        )?;
        writeln!(f, "  allocated {:.1} core-s, {:.1} GiB-s", self.core_seconds, self.gib_seconds)?;
        for (r, x) in &self.resources {
            writeln!(
                f,
                "  {r:<10} util {:5.1} %  unmet {:6.2} %  changes {:5}  reaction {} s",
                x.utilisation_pct,
                x.unmet_pct,
                x.limit_changes,
                fmt_reaction(x.reaction_median_ms, x.steps)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_counts_unresolved_as_infinite() {
        assert_eq!(median(&[], 0), None);
        assert_eq!(median(&[5, 1, 3], 0), Some(3));
        assert_eq!(median(&[5, 1], 1), Some(5));
        assert_eq!(median(&[5], 2), None);
        assert_eq!(median(&[4, 2], 0), Some(2));
    }
}
