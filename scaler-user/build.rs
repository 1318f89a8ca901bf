//! Compiles `scaler-ebpf` for the BPF target (nightly, `-Z build-std=core`,
//! bpf-linker) and leaves the object in `OUT_DIR/scaler` for
//! `include_bytes_aligned!`. `cargo xtask setup` installs what this needs.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "scaler-ebpf")
        .ok_or_else(|| anyhow!("scaler-ebpf package not found"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("scaler-ebpf manifest has no parent"))?;
    let package = Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::default())
        .context("building the eBPF programs (run `cargo xtask setup` if nightly, rust-src or bpf-linker is missing)")
}
