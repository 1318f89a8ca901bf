//! The policy comparison behind `cargo xtask bench policies`: every trace
//! through `classic` (deployed preset), `fast`, `static` and `vpa`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::PolicyConfig;
use crate::resource::{Resource, ResourceKind};
use crate::sim::{Report, SimConfig, SimError, fmt_reaction, simulate};
use crate::trace::Trace;

/// The policies compared, by [`PolicyConfig::by_name`] name.
pub const BENCH_POLICIES: [&str; 4] = ["classic-deployed", "fast", "static", "vpa"];

/// One trace through one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// Trace name.
    pub trace: String,
    /// Policy (as in [`BENCH_POLICIES`]).
    pub policy: String,
    /// The full report.
    pub report: Report,
}

impl BenchRow {
    /// Mean unmet demand over disk and network resources, %.
    pub fn io_unmet(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .report
            .resources
            .iter()
            .filter(|(r, _)| r.kind() == ResourceKind::Bandwidth)
            .map(|(_, x)| x.unmet_pct)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// `fast` against `classic` on one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Trace name.
    pub trace: String,
    /// fast's mean unmet demand <= classic's.
    pub unmet_not_worse: bool,
    /// fast's median reaction <= classic's (no steps counts as 0, never
    /// covered as infinite).
    pub reaction_not_worse: bool,
    /// fast's CPU and memory utilisation each >= classic's.
    pub utilisation_not_lower: bool,
}

impl Verdict {
    /// All three hold.
    pub fn ok(&self) -> bool {
        self.unmet_not_worse && self.reaction_not_worse && self.utilisation_not_lower
    }
}

/// The comparison: one row per trace and policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchTable {
    /// Simulation parameters used.
    pub sim: SimConfig,
    /// Rows, trace-major.
    pub rows: Vec<BenchRow>,
    /// fast vs classic per trace.
    pub verdicts: Vec<Verdict>,
}

/// Run every trace (`(name, CSV)`) through every policy of
/// [`BENCH_POLICIES`] with the default [`SimConfig`].
pub fn compare_all<S: AsRef<str>>(traces: &[(S, String)]) -> Result<BenchTable, SimError> {
    compare_with(traces, &SimConfig::default())
}

/// The comparison over [`crate::traces::standard`].
pub fn compare_standard() -> Result<BenchTable, SimError> {
    compare_all(&crate::traces::standard())
}

/// As [`compare_all`], with explicit simulation parameters.
pub fn compare_with<S: AsRef<str>>(traces: &[(S, String)], sim: &SimConfig) -> Result<BenchTable, SimError> {
    let mut rows = Vec::new();
    for (name, csv) in traces {
        let name = name.as_ref();
        let trace = Trace::parse(csv).map_err(|source| SimError::Trace { name: name.to_owned(), source })?;
        for policy in BENCH_POLICIES {
            let cfg = PolicyConfig::by_name(policy)?;
            let report = simulate(&cfg, name, &trace, sim)?;
            rows.push(BenchRow { trace: name.to_owned(), policy: policy.to_owned(), report });
        }
    }
    let verdicts = verdicts(&rows);
    Ok(BenchTable { sim: sim.clone(), rows, verdicts })
}

fn reaction_key(r: &Report) -> u64 {
    match (r.steps, r.reaction_median_ms) {
        (0, _) => 0,
        (_, None) => u64::MAX,
        (_, Some(ms)) => ms,
    }
}

fn verdicts(rows: &[BenchRow]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for fast in rows.iter().filter(|r| r.policy == "fast") {
        let Some(classic) = rows.iter().find(|r| r.trace == fast.trace && r.policy.starts_with("classic")) else {
            continue;
        };
        let (f, c) = (&fast.report, &classic.report);
        let util_ok = [Resource::Cpu, Resource::Mem].iter().all(|&r| f.utilisation(r) >= c.utilisation(r));
        out.push(Verdict {
            trace: fast.trace.clone(),
            unmet_not_worse: f.unmet_pct <= c.unmet_pct,
            reaction_not_worse: reaction_key(f) <= reaction_key(c),
            utilisation_not_lower: util_ok,
        });
    }
    out
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

impl BenchTable {
    /// Serialised as pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The table (and verdicts) as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "| trace | policy | util cpu % | util mem % | unmet cpu % | unmet mem % | unmet disk+net % | OOM kills | limit changes | reaction median s (steps / never) | core-s | GiB-s |\n",
        );
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in &self.rows {
            let r = &row.report;
            let pct = |res: Resource, f: fn(&Report, Resource) -> f64| {
                opt_pct(r.resources.contains_key(&res).then(|| f(r, res)))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({} / {}) | {:.0} | {:.0} |",
                row.trace,
                row.policy,
                pct(Resource::Cpu, Report::utilisation),
                pct(Resource::Mem, Report::utilisation),
                pct(Resource::Cpu, Report::unmet),
                pct(Resource::Mem, Report::unmet),
                opt_pct(row.io_unmet()),
                r.oom_events,
                r.limit_changes,
                fmt_reaction(r.reaction_median_ms, r.steps),
                r.steps,
                r.unresolved_steps,
                r.core_seconds,
                r.gib_seconds,
            );
        }
        s.push_str("\n| trace | fast unmet <= classic | fast reaction <= classic | fast cpu & mem utilisation >= classic |\n|---|---|---|---|\n");
        let yn = |b: bool| if b { "yes" } else { "**no**" };
        for v in &self.verdicts {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                v.trace,
                yn(v.unmet_not_worse),
                yn(v.reaction_not_worse),
                yn(v.utilisation_not_lower)
            );
        }
        s
    }
}
