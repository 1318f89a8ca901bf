//! Print the policy comparison over the standard traces as Markdown:
//! `cargo run --release -p policies --example bench` (add `--json` for JSON).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let table = policies::bench::compare_standard()?;
    if std::env::args().any(|a| a == "--json") {
        println!("{}", table.to_json()?);
    } else {
        print!("{}", table.to_markdown());
    }
    Ok(())
}
