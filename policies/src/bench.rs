//! The policy comparison behind `cargo xtask bench policies`: every trace
//! through `classic` (deployed preset), `fast`, `follow` (the default), `static` and `vpa`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::PolicyConfig;
use crate::energy::{CapControllerConfig, CapReport, CapSimConfig, EnergyError, simulate_cap};
use crate::resource::{Resource, ResourceKind};
use crate::sim::{Report, SimConfig, SimError, fmt_reaction, simulate};
use crate::trace::Trace;

/// Error from producing the benchmark document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BenchError {
    /// A policy simulation failed.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// An energy-cap simulation failed.
    #[error(transparent)]
    Energy(#[from] EnergyError),
    /// A standard trace is missing.
    #[error("standard trace {0} is missing")]
    MissingTrace(&'static str),
}

/// The policies compared, by [`PolicyConfig::by_name`] name.
pub const BENCH_POLICIES: [&str; 5] = ["classic-deployed", "fast", "follow", "static", "vpa"];

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

/// The default policy (`follow`) against `classic` on one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Trace name.
    pub trace: String,
    /// Its mean unmet demand <= classic's.
    pub unmet_not_worse: bool,
    /// Its median reaction <= classic's (no steps counts as 0, never
    /// covered as infinite).
    pub reaction_not_worse: bool,
    /// Its CPU and memory utilisation each >= classic's.
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
    /// The default vs classic per trace.
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
    // Real recordings (`real-*`) are minutes long: the original's timing
    // barely moves a limit in them, so "no more unmet demand than classic"
    // says nothing there; their utilisation is in the table.
    for fast in rows.iter().filter(|r| r.policy == crate::config::DEFAULT_POLICY && !r.trace.starts_with("real-")) {
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
        s.push_str("\n| trace | follow unmet <= classic | follow reaction <= classic | follow cpu & mem utilisation >= classic |\n|---|---|---|---|\n");
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

/// The energy-cap comparison: the original's proportional rule and the
/// inverting controller on `bigdata` with the default [`CapSimConfig`], at a
/// 1 s control period and at the original's 10 s.
pub fn energy_reports() -> Result<Vec<CapReport>, BenchError> {
    let csv = crate::traces::by_name("bigdata").ok_or(BenchError::MissingTrace("bigdata"))?;
    let trace = Trace::parse(&csv).map_err(|source| SimError::Trace { name: "bigdata".to_owned(), source })?;
    let mut out = Vec::new();
    for period_ms in [1_000, 10_000] {
        for ctl in
            [CapControllerConfig::original(), CapControllerConfig::proportional(), CapControllerConfig::inverting()]
        {
            let cfg = CapSimConfig { period_ms, ..CapSimConfig::default() };
            out.push(simulate_cap(&trace, ctl.build()?.as_mut(), &cfg)?);
        }
    }
    Ok(out)
}

/// The energy reports as a Markdown table.
pub fn energy_markdown(reports: &[CapReport]) -> String {
    let mut s = String::from(
        "| controller | period s | settled | settling max s | steady error mean % | steady error max % | binding periods over cap+5 % | peak over cap % | mean power W | unmet cpu % | ceiling changes |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.controller,
            r.period_ms / 1000,
            if r.settled { "yes" } else { "**no**" },
            r.settling_ms_max.map_or_else(|| "-".to_owned(), |ms| format!("{:.0}", ms as f64 / 1000.0)),
            r.steady_error_pct,
            r.steady_error_max_pct,
            r.over_cap_pct,
            r.peak_over_cap_pct,
            r.mean_power_mw / 1000.0,
            r.unmet_cpu_pct,
            r.changes
        );
    }
    s
}

const DOC_HEAD: &str = "# Policy benchmarks

Produced by `cargo xtask bench policies` (also written as JSON to
`bench-results/policies.json`), or `cargo run --release -p policies --example
bench` (standard traces only). Every standard trace ([traces/](../traces/README.md))
and every real recording (`traces/real-*.csv`: `scaler record` of the
workloads bench's unlimited runs, so usage is the demand) is replayed by the
simulator ([docs/policies.md](policies.md#simulator)) through `classic` with
its deployed preset (event timeout 120 s, delay 20 s, 10 s period, 5 s
actuation), `fast` (200 ms tick), `follow` (the default, 200 ms tick),
`static` (max everywhere) and `vpa` (p90 of a decaying histogram + 15 %,
every 60 s), with the simulator's default bounds (cpu 0.1-4 cores, memory
256 MiB-8 GiB, starting at max: on the real recordings, whose working sets
are often below 256 MiB, memory utilisation is bounded by that minimum).
Deterministic: the same code gives the same tables. The verdicts compare the
default with `classic` on the standard traces.

Columns: utilisation = used / allocated; unmet = demand not served / demand
(throttled, or lost to OOM restarts); disk+net = mean over the disk and
network resources present; reaction = median time from a demand step above
the limit until the limit covers 95 % of it, with the number of steps and
how many were never covered (\"never\" = at least half were not; \"-\" = no
step exceeded the limit); core-s and GiB-s = allocation integrated over time.

";

const DOC_ENERGY: &str = "
## Energy cap on `bigdata`

The four containers of `bigdata` as one application capped at 50 W on a
16-core host (60 W idle, 220 W max, 2 cores used by other tenants); the cap
binds in the map (30-430 s) and reduce (600-900 s) phases. Settling = time
from the start of a binding phase until the period-mean power stays within
5 % of the cap; steady error over the settled part; peak over cap = the
largest period-mean power above the cap.

";

/// The whole `docs/benchmarks-policies.md`: explanation, the policy table
/// with its verdicts, and the energy table.
pub fn document(table: &BenchTable, energy: &[CapReport]) -> String {
    let mut s = String::from(DOC_HEAD);
    s.push_str(&table.to_markdown());
    let all_ok = table.verdicts.iter().all(Verdict::ok);
    s.push_str(if all_ok {
        "\n`follow` (the default) beats `classic` on every trace: no more unmet demand, no slower\nreaction, and CPU and memory utilisation at least as high.\n"
    } else {
        "\n**`follow` (the default) does not beat `classic` on every trace**: see the verdicts above.\n"
    });
    s.push_str(DOC_ENERGY);
    s.push_str(&energy_markdown(energy));
    s
}

/// [`document`] over the standard traces.
pub fn standard_document() -> Result<String, BenchError> {
    Ok(document(&compare_standard()?, &energy_reports()?))
}
