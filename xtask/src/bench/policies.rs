//! `cargo xtask bench policies`: every policy over every standard trace in
//! the simulator (pure, deterministic), and over the real recordings in
//! `traces/real-*.csv` (`scaler record` of the workloads bench's runs), plus
//! the energy-cap controllers. Prints the table, writes
//! `bench-results/policies.json` and the Markdown document
//! `docs/benchmarks-policies.md`.

use anyhow::Context as _;

/// `(name, CSV)` of every `traces/real-*.csv`, sorted by name.
fn real_traces() -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("traces").context("reading traces/")?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_prefix("real-").and_then(|n| n.strip_suffix(".csv")) {
            let csv = std::fs::read_to_string(e.path()).with_context(|| format!("reading traces/{name}"))?;
            out.push((format!("real-{stem}"), csv));
        }
    }
    out.sort();
    Ok(out)
}

pub fn run() -> anyhow::Result<()> {
    let mut traces: Vec<(String, String)> =
        policies::traces::standard().into_iter().map(|(n, c)| (n.to_owned(), c)).collect();
    traces.extend(real_traces()?);
    let table = policies::bench::compare_all(&traces).context("simulating the traces")?;
    let energy = policies::bench::energy_reports().context("simulating the energy caps")?;
    let doc = policies::bench::document(&table, &energy);
    print!("{doc}");
    super::write_result("policies", &table.to_json()?)?;
    std::fs::write("docs/benchmarks-policies.md", &doc).context("writing docs/benchmarks-policies.md")?;
    eprintln!("wrote bench-results/policies.json and docs/benchmarks-policies.md");
    Ok(())
}
