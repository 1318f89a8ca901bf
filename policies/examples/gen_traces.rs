//! Write the standard traces: `cargo run -p policies --example gen_traces -- DIR`
//! (`cargo xtask gen-traces` does the same into `traces/`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "traces".into()));
    std::fs::create_dir_all(&dir)?;
    for (name, csv) in policies::traces::standard() {
        let path = dir.join(format!("{name}.csv"));
        std::fs::write(&path, csv)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
