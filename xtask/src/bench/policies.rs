//! `cargo xtask bench policies`: every policy over every standard trace in
//! the simulator (pure, deterministic), plus the energy-cap controllers.
//! Prints the table, writes `bench-results/policies.json` and the Markdown
//! document `docs/benchmarks-policies.md`.

use anyhow::Context as _;

pub fn run() -> anyhow::Result<()> {
    let table = policies::bench::compare_standard().context("simulating the standard traces")?;
    let energy = policies::bench::energy_reports().context("simulating the energy caps")?;
    let doc = policies::bench::document(&table, &energy);
    print!("{doc}");
    super::write_result("policies", &table.to_json()?)?;
    std::fs::write("docs/benchmarks-policies.md", &doc).context("writing docs/benchmarks-policies.md")?;
    eprintln!("wrote bench-results/policies.json and docs/benchmarks-policies.md");
    Ok(())
}
