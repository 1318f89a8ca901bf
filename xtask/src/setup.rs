//! `cargo xtask setup`: everything the build and the tests need on a fresh
//! Debian 12 machine, as root. Each step checks first and does nothing when
//! its part is present, so a second run takes a few seconds.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::util::{self, output, step};

/// Debian packages: the BPF linker's LLVM, the container runtimes and
/// engines and the load generators the end-to-end tests use, sshd and iproute2 for the deploy
/// test hosts, Chromium for the dashboard test.
pub const APT_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "lxc",
    "busybox-static",
    // The engines the end-to-end tests run real containers of (each test
    // starts its own daemon: dockerd, Podman's API service, LXD).
    "docker.io",
    "podman",
    "runc",
    "lxd",
    "stress-ng",
    "fio",
    "iperf3",
    "atop",
    "openssh-server",
    "openssh-client",
    "iproute2",
    "chromium",
    "chromium-driver",
    // cargo xtask bench workloads: a kernel build, PostgreSQL + pgbench,
    // Python, xz.
    "linux-source-6.1",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "postgresql",
    "python3",
    "xz-utils",
    // The aggregator's shared store and history (issue 15): the tests start
    // their own etcd cluster and Prometheus on loopback ports.
    "etcd-server",
    "prometheus",
];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// The schemathesis release the fuzz test runs.
const SCHEMATHESIS: &str = "4.32.5";

fn missing_packages() -> Vec<&'static str> {
    let listed = output(Command::new("dpkg-query").args(["-W", "-f=${Package} ${Status}\n"]).args(APT_PACKAGES))
        .unwrap_or_default();
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !listed.lines().any(|l| l.starts_with(&format!("{p} ")) && l.ends_with("install ok installed")))
        .collect()
}

pub fn run() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let missing = missing_packages();
    if !missing.is_empty() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc_geteuid() } != 0 {
            bail!("missing packages {missing:?}; run `cargo xtask setup` as root to install them");
        }
        step(&format!("apt-get install {}", missing.join(" ")));
        util::run(Command::new("apt-get").args(["update", "-q"]))?;
        util::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    // Node.js drives the dashboard test (playwright-core); the machine image
    // usually brings its own, so only fall back to Debian's when absent.
    if output(Command::new("npm").arg("--version")).is_none() {
        step("apt-get install nodejs npm");
        util::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "nodejs", "npm"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    // The dashboard test drives Chromium with playwright-core, pinned by
    // tests/dashboard/package-lock.json.
    let dashboard = std::path::Path::new("tests/dashboard");
    if dashboard.join("package-lock.json").exists() && !dashboard.join("node_modules/playwright-core").exists() {
        step("npm ci in tests/dashboard (playwright-core)");
        util::run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dashboard))?;
    }

    // schemathesis drives the API fuzz test (tests/tests/fuzz.rs), pinned.
    if output(Command::new("st").arg("--version")).is_none_or(|v| !v.contains(SCHEMATHESIS)) {
        step(&format!("pip install schemathesis=={SCHEMATHESIS}"));
        util::run(
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("schemathesis=={SCHEMATHESIS}")),
        )
        .context("installing schemathesis (needs python3 with pip)")?;
    }

    let nightly = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !nightly.lines().any(|l| l.starts_with("nightly")) {
        step("rustup toolchain install nightly");
        util::run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let components =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))
            .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        step("rustup component add rust-src --toolchain nightly");
        util::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }

    if output(Command::new("bpf-linker").arg("--version")).is_none() {
        step("cargo install bpf-linker (against LLVM 22, about a minute)");
        let path = format!("{LLVM_PREFIX}/bin:{}", std::env::var("PATH").unwrap_or_default());
        util::run(
            util::cargo()
                .args(["install", "bpf-linker", "--locked", "--no-default-features", "--features", "llvm-22"])
                .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
                .env("PATH", path),
        )
        .context("installing bpf-linker")?;
    }
    eprintln!("setup: all present ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
