use which::which;

/// bpf-linker must be found on PATH; rebuild when it changes (a new LLVM
/// changes the object). `cargo xtask setup` installs it.
fn main() {
    if let Ok(path) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
