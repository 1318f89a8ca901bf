//! Print `docs/benchmarks-policies.md` (policy table, verdicts, energy
//! table): `cargo run --release -p policies --example bench`; with `--json`
//! the policy table as JSON instead.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--json") {
        println!("{}", policies::bench::compare_standard()?.to_json()?);
    } else {
        print!("{}", policies::bench::standard_document()?);
    }
    Ok(())
}
