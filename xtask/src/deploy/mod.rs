//! `cargo xtask deploy` / `undeploy`: the agent (and the aggregator) on
//! hosts over SSH. See docs/deploy.md.
//!
//! The hosts ([`hosts`]) become one [`hosts::Install`] each; [`plan`] turns
//! an install into named steps (shell scripts from [`scripts`] with their
//! stdin, a `/healthz` poll, a call to the aggregator) for [`ssh`] and
//! [`http`]; [`run`] executes them host by host (or
//! `--parallel N` at a time) and stops at the first failure, naming the host
//! and the step; with `--dry-run`, [`dryrun`] prints the steps instead.

mod dryrun;
mod hosts;
mod http;
mod pki;
mod plan;
mod run;
mod scripts;
mod ssh;
mod targets;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;

use hosts::{Entry, Fallback, Install, Role};

/// Which hosts, and how to reach them (shared by deploy and undeploy).
#[derive(Args, Debug)]
pub struct Selection {
    /// Hosts file (TOML; see hosts.example.toml and docs/deploy.md).
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// A host as USER@ADDRESS[:PORT] (repeatable; added to the hosts file's).
    #[arg(long = "host", value_name = "USER@ADDR[:PORT]")]
    host: Vec<String>,
    /// SSH private key for hosts that name none.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Install prefix for hosts that name none [default: /opt/scaler].
    #[arg(long, value_name = "DIR")]
    prefix: Option<String>,
    /// Agent state directory for hosts that name none [default: /var/lib/scaler].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
    /// Only these hosts of the file (comma-separated names; `aggregator`
    /// for the aggregator itself, which is otherwise left alone while
    /// agents are still registered with it).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<String>,
    /// The aggregator's host: a name from the hosts file or USER@ADDR[:PORT]
    /// (overrides the file's `[aggregator] host`).
    #[arg(long, value_name = "HOST")]
    aggregator: Option<String>,
    /// known_hosts file for ssh [default: ssh's own]. Unknown hosts are
    /// added on first contact; a changed host key stops the deploy.
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    parallel: usize,
    /// Print each host's steps and commands; connect to nothing.
    #[arg(long)]
    dry_run: bool,
    /// Seconds ssh waits for a connection.
    #[arg(long, default_value_t = 10, value_name = "S")]
    connect_timeout: u64,
    /// Serve HTTPS everywhere, with a CA deploy keeps (as an empty `[tls]`
    /// section in the hosts file would).
    #[arg(long)]
    tls: bool,
    /// Where the fleet CA and the certificates are kept (overrides
    /// `[tls] pki`) [default: scaler-pki beside the hosts file].
    #[arg(long, value_name = "DIR")]
    pki: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    sel: Selection,
    /// Deploy this `scaler` binary instead of building one
    /// (`cargo build --release -p scaler-user --bin scaler`).
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,
    /// Agent config (TOML) for hosts whose entry has no `config`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Restart the service even where nothing changed.
    #[arg(long)]
    restart: bool,
    /// Issue new certificates (`[tls]`) even where the kept ones are good.
    #[arg(long)]
    rotate_certs: bool,
    /// Seconds to wait for each `/healthz`.
    #[arg(long, default_value_t = 60, value_name = "S")]
    timeout: u64,
}

#[derive(Args, Debug)]
pub struct UndeployArgs {
    #[command(flatten)]
    sel: Selection,
    /// Also remove each host's state directory (subscriptions are lost).
    #[arg(long)]
    purge: bool,
}

/// Every host to work on, agents in order, and the aggregator if any.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub agents: Vec<Install>,
    /// Where agents register; deployed or removed only when `selected`.
    pub aggregator: Option<Install>,
    pub aggregator_selected: bool,
    /// `[tls]`: every host serves HTTPS with a certificate of the fleet CA.
    pub tls: Option<pki::Settings>,
    /// Prometheus scrape targets of the agents, beside the hosts file.
    pub scrape_targets: PathBuf,
}

impl Inventory {
    /// The aggregator, if this run deploys or removes it.
    pub fn deployed_aggregator(&self) -> Option<&Install> {
        self.aggregator.as_ref().filter(|_| self.aggregator_selected)
    }
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(p) => {
            let p = from_cwd(p);
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("config {}", p.display()))?
        }
        None => toml::Table::new(),
    };
    let inv = inventory(&args.sel, config)?;
    let binary = match &args.binary {
        Some(b) => Some(from_cwd(b)),
        None if args.sel.dry_run => None,
        None => Some(build_release()?),
    };
    let timeout = std::time::Duration::from_secs(args.timeout);
    run::deploy(&inv, binary.as_deref(), &args.sel, args.restart, args.rotate_certs, timeout)
}

pub fn undeploy(args: UndeployArgs) -> anyhow::Result<()> {
    let inv = inventory(&args.sel, toml::Table::new())?;
    run::undeploy(&inv, &args.sel, args.purge)
}

/// `cargo xtask` runs from the workspace root; relative paths on the
/// command line mean the directory the command was typed in (`$PWD`).
fn from_cwd(p: &Path) -> PathBuf {
    let base = std::env::var_os("PWD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    hosts::resolve_path(p, &base)
}

fn inventory(sel: &Selection, agent_config: toml::Table) -> anyhow::Result<Inventory> {
    let (file, base) = match &sel.hosts {
        Some(p) => {
            let p = from_cwd(p);
            (hosts::load_file(&p)?, p.parent().map(Path::to_path_buf).unwrap_or_default())
        }
        None => (hosts::HostsFile::default(), from_cwd(Path::new("."))),
    };
    let tls = match (&file.tls, sel.tls) {
        (Some(t), _) => Some(t.resolve(&base)?),
        (None, true) => Some(pki::Section::default().resolve(&base)?),
        (None, false) if sel.pki.is_some() => bail!("--pki: give --tls too, or a [tls] section in the hosts file"),
        (None, false) => None,
    }
    .map(|mut t| {
        if let Some(p) = &sel.pki {
            t.pki = from_cwd(p);
        }
        t
    });
    let fb = Fallback {
        key: sel.key.as_deref().map(from_cwd),
        prefix: sel.prefix.clone(),
        state_dir: sel.state_dir.clone(),
        known_hosts: sel.known_hosts.as_deref().map(from_cwd),
        connect_timeout_s: sel.connect_timeout,
        config: agent_config,
        tls: tls.clone(),
    };
    let mut entries = file.hosts.clone();
    for h in &sel.host {
        entries.push(hosts::parse_host_flag(h)?);
    }
    if entries.is_empty() {
        bail!("no hosts: give --hosts FILE (see hosts.example.toml) or --host USER@ADDR[:PORT]");
    }
    let all: Vec<Install> =
        entries.iter().map(|e| hosts::resolve(e, &file.defaults, &fb, Role::Agent)).collect::<Result<_, _>>()?;
    for (n, a) in all.iter().enumerate() {
        for b in &all[..n] {
            if a.name == b.name {
                bail!("host {} is listed twice", a.name);
            }
            if a.ssh.address == b.ssh.address && a.ssh.port == b.ssh.port && a.prefix == b.prefix {
                bail!("hosts {} and {} are the same machine with the same prefix {}", b.name, a.name, a.prefix);
            }
        }
    }
    for o in sel.only.iter().filter(|o| *o != "aggregator") {
        if !all.iter().any(|a| &a.name == o) {
            bail!(
                "--only {o}: no such host (hosts: {})",
                all.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let agents: Vec<Install> = all.into_iter().filter(|a| sel.only.is_empty() || sel.only.contains(&a.name)).collect();
    let aggregator = aggregator(sel, &file, &entries, &fb)?;
    if let Some(agg) = &aggregator {
        for a in &agents {
            plan::agent_url(a, agg).map_err(anyhow::Error::msg)?;
        }
    }
    let aggregator_selected = sel.only.is_empty() || sel.only.iter().any(|o| o == "aggregator");
    if aggregator_selected && aggregator.is_none() && !sel.only.is_empty() {
        bail!("--only aggregator: no aggregator (give --aggregator HOST or [aggregator] in the hosts file)");
    }
    let scrape_targets = base.join(targets::FILE);
    Ok(Inventory { agents, aggregator, aggregator_selected, tls, scrape_targets })
}

/// The aggregator's install: its host's address and SSH settings, with the
/// `[aggregator]` table's own prefix, state_dir, listen, token and config.
fn aggregator(
    sel: &Selection,
    file: &hosts::HostsFile,
    entries: &[Entry],
    fb: &Fallback,
) -> anyhow::Result<Option<Install>> {
    let section = file.aggregator.clone().unwrap_or_default();
    let Some(spec) = sel.aggregator.clone().or_else(|| section.host.clone()) else {
        if file.aggregator.is_some() {
            bail!("[aggregator] needs `host` (a host's name or USER@ADDR[:PORT]), or pass --aggregator HOST");
        }
        return Ok(None);
    };
    let base = match entries.iter().find(|e| e.name.as_deref() == Some(spec.as_str())) {
        Some(e) => e.clone(),
        None => hosts::parse_host_flag(&spec)?,
    };
    let e = Entry {
        name: base.name,
        address: base.address,
        user: section.user.or(base.user),
        port: section.port.or(base.port),
        key: section.key.or(base.key),
        prefix: section.prefix.or(base.prefix),
        state_dir: section.state_dir,
        service: section.service.or(base.service),
        unit: section.unit,
        host: None,
        listen: section.listen,
        token: section.token,
        config: section.config,
    };
    let defaults = Entry { state_dir: None, unit: None, config: toml::Table::new(), ..file.defaults.clone() };
    hosts::resolve(&e, &defaults, fb, Role::Aggregator).map(Some).context("the aggregator")
}

/// Builds the release binary and returns where cargo put it (honours
/// `CARGO_TARGET_DIR` and any cargo config).
fn build_release() -> anyhow::Result<PathBuf> {
    crate::util::step("cargo build --release -p scaler-user --bin scaler");
    let out = crate::util::cargo()
        .args([
            "build",
            "--release",
            "-p",
            "scaler-user",
            "--bin",
            "scaler",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting cargo build")?;
    if !out.status.success() {
        bail!("cargo build --release -p scaler-user --bin scaler failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "scaler")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
        .context("cargo build did not report the scaler executable")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn selection(hosts: PathBuf) -> Selection {
        Selection {
            hosts: Some(hosts),
            host: Vec::new(),
            key: None,
            prefix: None,
            state_dir: None,
            only: Vec::new(),
            aggregator: None,
            known_hosts: None,
            parallel: 1,
            dry_run: true,
            connect_timeout: 10,
            tls: false,
            pki: None,
        }
    }

    #[test]
    fn the_example_hosts_file_is_valid() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hosts.example.toml");
        let inv = inventory(&selection(file.clone()), toml::Table::new()).unwrap();
        let names: Vec<_> = inv.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2"]);
        assert_eq!((inv.agents[1].ssh.user.as_str(), inv.agents[1].ssh.port), ("deploy", 2222));
        let agg = inv.deployed_aggregator().unwrap();
        assert_eq!((agg.name.as_str(), agg.listen.to_string().as_str()), ("node1", "10.0.0.2:8471"));

        // --only picks agents and leaves the aggregator alone unless named.
        let mut sel = selection(file);
        sel.only = vec!["node2".into()];
        let inv = inventory(&sel, toml::Table::new()).unwrap();
        assert_eq!(inv.agents.len(), 1);
        assert!(inv.aggregator.is_some() && inv.deployed_aggregator().is_none());
        sel.only = vec!["nope".into()];
        assert!(inventory(&sel, toml::Table::new()).unwrap_err().to_string().contains("--only nope"));
    }
}
