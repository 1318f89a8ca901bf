//! The comparison the issues ask for: the default policy (`follow`) beats
//! `classic` (deployed preset) on unmet demand and reaction time without
//! lower utilisation, on every standard trace; and the simulator's
//! one-liner entry point.

#![allow(clippy::unwrap_used)]

use policies::bench::{BENCH_POLICIES, compare_standard, document, energy_reports};
use policies::{Resource, SimError, TraceError, simulate_named, traces};

#[test]
fn the_default_beats_classic_on_every_standard_trace() {
    let table = compare_standard().unwrap();
    assert_eq!(table.rows.len(), traces::NAMES.len() * BENCH_POLICIES.len());
    for v in &table.verdicts {
        assert!(v.ok(), "the default does not beat classic on {}: {v:?}\n{}", v.trace, table.to_markdown());
    }
    // Static never throttles and never changes a limit.
    for row in table.rows.iter().filter(|r| r.policy == "static") {
        assert_eq!(row.report.unmet_pct, 0.0);
        assert_eq!(row.report.limit_changes, 0);
        assert_eq!(row.report.oom_events, 0);
    }
    // fast and follow react to steps within a second at the median.
    for row in table.rows.iter().filter(|r| (r.policy == "fast" || r.policy == "follow") && r.report.steps > 0) {
        assert!(row.report.reaction_median_ms.unwrap() <= 1_000, "{}", row.trace);
    }
    let md = table.to_markdown();
    assert!(md.contains("| bigdata | fast |") && md.contains("| bigdata | follow |"));
    let json = table.to_json().unwrap();
    assert!(json.contains("\"verdicts\""));
    let doc = document(&table, &energy_reports().unwrap());
    assert!(doc.starts_with("# Policy benchmarks"));
    assert!(doc.contains("`follow` (the default) beats `classic` on every trace"));
    assert!(doc.contains("| inverting | 1 | yes |"));
}

#[test]
fn simulate_named_is_a_one_liner() {
    let csv = traces::by_name("step").unwrap();
    let r = simulate_named("fast", "step", &csv).unwrap();
    assert_eq!(r.policy, "fast");
    assert_eq!(r.trace, "step");
    assert!(r.resources.contains_key(&Resource::DiskRead));
    assert!(r.to_string().contains("policy fast on trace step"));

    let e = simulate_named("nope", "step", &csv).unwrap_err();
    assert!(matches!(e, SimError::Config(_)), "{e}");

    let bad = "time_s,container,resource,demand\n0,a,cpu,100\n1,a,cpu,lots\n";
    let e = simulate_named("fast", "bad.csv", bad).unwrap_err();
    assert!(matches!(e, SimError::Trace { source: TraceError::Demand { line: 3, .. }, .. }));
    // The message names the trace; its source names the line (printed
    // together by `anyhow`'s `{:#}`).
    assert_eq!(e.to_string(), "trace bad.csv");
    let src = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default();
    assert_eq!(src, "line 3: demand \"lots\" is not a non-negative integer of at most 2^52 base units");
}

#[test]
fn the_committed_real_recordings_parse_and_simulate() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../traces");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("real-") {
            continue;
        }
        let csv = std::fs::read_to_string(e.path()).unwrap();
        let trace = policies::Trace::parse(&csv).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(trace.is_recorded(), "{name}");
        assert!(trace.end_ms() - trace.start_ms() > 20_000, "{name} is too short");
        let r = simulate_named("follow", &name, &csv).unwrap();
        assert!(r.resources.contains_key(&Resource::Cpu) && r.resources.contains_key(&Resource::Mem));
        n += 1;
    }
    assert!(n >= 4, "only {n} real recordings in traces/");
}
