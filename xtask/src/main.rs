//! Project tasks: `cargo xtask setup | build | run | test | bench ...`.
//! Each returns `anyhow::Result`; `main` prints `Error: ...` once.
mod arch;
mod bench;
mod deploy;
mod setup;
mod util;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "scaler's project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the tests need (apt packages, nightly +
    /// rust-src, bpf-linker). Idempotent; a few seconds when all is present.
    Setup,
    /// Build the `scaler` binary (release with --release).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up if needed, build (release) and run the agent on this host.
    Run {
        /// Extra arguments for `scaler agent` (e.g. --listen 0.0.0.0:8470 --config FILE).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up if needed, then formatting, lints, unit tests and the
    /// privileged end-to-end tests (needs root).
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Benchmarks: print a table and write JSON under bench-results/.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
    /// schemathesis against both OpenAPI documents on a real agent and
    /// aggregator for a bounded time (the fuzz test of `test`, longer).
    Fuzz {
        /// Seconds in all (half per document).
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Write the standard traces to traces/*.csv.
    GenTraces,
    /// List module cycles and files over 400 lines of code (the house
    /// rules `test` checks).
    Arch,
    /// Put the agent (and optionally the aggregator) on hosts over SSH.
    Deploy(deploy::DeployArgs),
    /// Stop and remove what `deploy` installed.
    Undeploy(deploy::UndeployArgs),
}

/// The crates whose tests need no root (the privileged ones are `tests`).
const LIBRARIES: [&str; 8] = [
    "scaler-common",
    "scaler-api",
    "scaler-user",
    "scaler-aggregator",
    "scaler-cli",
    "policies",
    "xtask",
    "scaler-testkit",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = util::workspace_root()?;
    std::env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))?;
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Build { release } => build(release).map(|p| println!("{}", p.display())),
        Cmd::Run { args } => {
            setup::run()?;
            let bin = build(true)?;
            let listen = args
                .iter()
                .position(|a| a == "--listen")
                .and_then(|i| args.get(i + 1).cloned())
                .unwrap_or_else(|| "127.0.0.1:8470".into());
            println!("scaler agent: http://{listen}  (GET /v1/stats, /metrics, /healthz; Ctrl-C stops it)");
            util::exec(std::process::Command::new(bin).arg("agent").args(args))
        }
        Cmd::Test { filter, no_lint } => test(filter.as_deref(), no_lint),
        Cmd::Bench { which } => bench::run(which),
        Cmd::GenTraces => bench::gen_traces(),
        Cmd::Fuzz { seconds } => {
            setup::run()?;
            let bin = build(false)?;
            let mut t = util::cargo();
            t.args(["test", "-p", "tests", "--test", "fuzz", "--", "--nocapture"])
                .env("SCALER_BIN", &bin)
                .env("SCALER_FUZZ_SECONDS", seconds.to_string())
                .env("SCALER_FUZZ_EXAMPLES", (seconds / 2).clamp(5, 5000).to_string());
            util::run(&mut t)
        }
        Cmd::Arch => {
            let (cycles, long) = arch::findings(&root)?;
            for c in cycles {
                println!("cycle {c}");
            }
            for (f, n) in long {
                println!("long  {f} ({n} lines)");
            }
            arch::check(&root)
        }
        Cmd::Deploy(args) => deploy::deploy(args),
        Cmd::Undeploy(args) => deploy::undeploy(args),
    }
}

/// Builds the `scaler` binary and returns its path.
fn build(release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = util::cargo();
    cmd.args(["build", "-p", "scaler-user", "--bin", "scaler"]);
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)?;
    Ok(PathBuf::from("target").join(if release { "release" } else { "debug" }).join("scaler").canonicalize()?)
}

fn test(filter: Option<&str>, no_lint: bool) -> anyhow::Result<()> {
    setup::run()?;
    if !no_lint {
        util::step("cargo fmt --check");
        util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))?;
        util::step("house rules: module cycles, file sizes");
        arch::check(&std::env::current_dir()?)?;
        util::step("cargo clippy");
        let mut clippy = util::cargo();
        clippy.arg("clippy");
        for p in LIBRARIES.iter().chain(&["tests"]) {
            clippy.args(["-p", p]);
        }
        util::run(clippy.args(["--all-targets", "--", "-D", "warnings"]))?;
    }
    let bin = build(false)?;
    util::step("unit tests");
    let mut unit = util::cargo();
    unit.arg("test");
    for p in LIBRARIES {
        unit.args(["-p", p]);
    }
    if let Some(f) = filter {
        unit.arg(f);
    }
    util::run(&mut unit)?;
    util::step("end-to-end tests (root, real kernel, real cgroups and LXC containers)");
    let mut e2e = util::cargo();
    // --no-fail-fast: a failing test binary must not hide the others.
    e2e.args(["test", "-p", "tests", "--no-fail-fast"]).env("SCALER_BIN", &bin);
    if let Some(f) = filter {
        e2e.arg(f);
    }
    // One at a time: they measure CPU and bandwidth on a small machine.
    e2e.args(["--", "--test-threads=1", "--nocapture"]);
    util::run(&mut e2e)?;
    println!("all tests passed");
    Ok(())
}
