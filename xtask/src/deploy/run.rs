//! Executing (or, with `--dry-run`, printing) the plan: host after host,
//! or `--parallel N` at a time; the first failure stops the run with the
//! host and the step in the message, and hosts already done keep running.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use super::{
    Inventory, Selection, dryrun,
    hosts::{Install, Role, Service},
    http::{self, Endpoint},
    pki,
    plan::{self, Action, DeployOptions, Mode, Payload, Step},
    ssh::Input,
    targets::Owner,
};

/// The client side of this run's TLS (`[tls]`): the fleet CA, and what
/// deploy's own calls present.
type Client = Option<Arc<rustls::ClientConfig>>;

/// This run's TLS: the open CA and the client its own calls use.
struct RunTls {
    pki: pki::Pki,
    client: Arc<rustls::ClientConfig>,
}

impl RunTls {
    /// The fleet CA (made on the first deploy when `create`), and the
    /// operator's certificate.
    fn open(s: &pki::Settings, create: bool, rotate: bool) -> anyhow::Result<Self> {
        if !create && s.ca.is_none() && !s.pki.join("ca.pem").exists() {
            bail!("[tls]: no CA in {} (was this fleet deployed with TLS?)", s.pki.display());
        }
        let pki = pki::Pki::open(s)?;
        pki.issue("operator", &["scaler-operator".to_owned()], rotate)?;
        let client = pki.client()?;
        Ok(Self { pki, client })
    }

    /// `i` with its certificate (kept, renewed or new).
    fn issue(&self, i: &Install, rotate: bool) -> anyhow::Result<Install> {
        let mut i = i.clone();
        let Some(mut t) = i.tls.take() else { return Ok(i) };
        let c = self.pki.issue(&t.file, &t.names, rotate).with_context(|| format!("host {}: certificate", i.name))?;
        if c.new {
            say(&i, &format!("certificate: new, for {} ({} days)", t.names.join(", "), self.pki.settings().days));
        }
        t.issued = Some((self.pki.ca_pem().to_owned(), c));
        i.tls = Some(t);
        Ok(i)
    }
}

pub fn deploy(
    inv: &Inventory,
    binary: Option<&Path>,
    sel: &Selection,
    restart: bool,
    rotate: bool,
    health_timeout: Duration,
) -> anyhow::Result<()> {
    let (binary_len, arch) = match binary {
        Some(b) => {
            let len = std::fs::metadata(b).with_context(|| format!("binary {}", b.display()))?.len();
            (len, elf_arch(b)?)
        }
        None => (0, None),
    };
    let binary_sha256 = binary.and_then(sha256);
    let mut o = DeployOptions {
        binary: binary.map_or_else(|| "target/release/scaler".into(), Path::to_path_buf),
        binary_len,
        binary_sha256,
        restart,
        health_timeout,
        aggregator: aggregator_endpoint(inv),
    };
    let agg_opts = DeployOptions { aggregator: None, ..o.clone() };
    if sel.dry_run {
        println!(
            "deploy plan: scaler agent on {} host(s), {} at a time, stopping at the first failure{}",
            inv.agents.len(),
            sel.parallel.max(1),
            if inv.deployed_aggregator().is_some() { "; the aggregator first" } else { "" }
        );
        match binary {
            Some(b) => println!("binary: {} ({binary_len} bytes)", b.display()),
            None => println!(
                "binary: built first by `cargo build --release -p scaler-user --bin scaler` \
                 (its size replaces the 0 in `copy binary`)"
            ),
        }
        dryrun::print_preamble();
        if let Some(a) = inv.deployed_aggregator() {
            dryrun::print_host(a, &dryrun::deploy_variants(a, &agg_opts));
        }
        for i in &inv.agents {
            dryrun::print_host(i, &dryrun::deploy_variants(i, &o));
        }
        return Ok(());
    }
    let t0 = Instant::now();
    let tls = inv.tls.as_ref().map(|s| RunTls::open(s, true, rotate)).transpose()?;
    let client: Client = tls.as_ref().map(|t| t.client.clone());
    let control = Control::new()?;
    let inv = control.attach(inv);
    o.aggregator = aggregator_endpoint(&inv);
    let deploy_one = |i: &Install, o: &DeployOptions| {
        let r = match &tls {
            Some(t) => t.issue(i, rotate).and_then(|i| deploy_host(&i, o, arch, &client)),
            None => deploy_host(i, o, arch, &client),
        };
        i.ssh.close();
        r
    };
    if let Some(a) = inv.deployed_aggregator() {
        deploy_one(a, &agg_opts)?;
    }
    let done = for_each(&inv.agents, sel.parallel, |i| deploy_one(i, &o))?;
    println!("deployed scaler agent to {} host(s) in {:.1} s:", done.len(), t0.elapsed().as_secs_f64());
    for (name, url) in &done {
        println!("  {name}: {url}");
    }
    let mut entries: Vec<(Owner, String)> =
        inv.agents.iter().map(|i| (Owner::Agent(i.name.clone()), plan::url_of(i))).collect();
    if let Some(a) = inv.deployed_aggregator() {
        entries.push((Owner::Aggregator, plan::url_of(a)));
    }
    // What listens on its host's loopback can be scraped only by a
    // Prometheus on that host (the aggregator's, when it runs there too).
    let local: Vec<String> = entries
        .iter()
        .filter(|(_, u)| super::targets::on_loopback(u))
        .map(|(o, _)| match o {
            Owner::Agent(n) => n.clone(),
            Owner::Aggregator => "the aggregator".to_owned(),
        })
        .collect();
    if !local.is_empty() {
        println!(
            "{}: on loopback, in {} for a Prometheus on their own host only",
            local.join(", "),
            super::targets::FILE
        );
    }
    super::targets::update(&inv.scrape_targets, &entries, &[])?;
    println!("Prometheus scrape targets (file_sd): {}", inv.scrape_targets.display());
    if let Some(t) = &tls {
        let p = &t.pki.settings().pki;
        println!(
            "TLS: the CLI reaches these hosts with\n  SCALER_CA={} SCALER_CERT={} SCALER_KEY={}",
            t.pki.ca_file().display(),
            p.join("operator.pem").display(),
            p.join("operator-key.pem").display()
        );
    }
    Ok(())
}

pub fn undeploy(inv: &Inventory, sel: &Selection, purge: bool) -> anyhow::Result<()> {
    if sel.dry_run {
        println!(
            "undeploy plan: scaler agent from {} host(s), {} at a time{}",
            inv.agents.len(),
            sel.parallel.max(1),
            if inv.deployed_aggregator().is_some() { "; the aggregator last" } else { "" }
        );
        dryrun::print_preamble();
        for i in inv.agents.iter().chain(inv.deployed_aggregator()) {
            let mut steps = vec![plan::connect()];
            steps.extend(plan::undeploy(i, purge, aggregator_endpoint(inv).as_ref()));
            dryrun::print_host(i, &steps.into_iter().map(|s| (None, s)).collect::<Vec<_>>());
        }
        return Ok(());
    }
    let t0 = Instant::now();
    let client: Client = match &inv.tls {
        // Only to unregister agents from the aggregator.
        Some(s) if inv.aggregator.is_some() => Some(RunTls::open(s, false, false)?.client),
        _ => None,
    };
    let control = Control::new()?;
    let inv = control.attach(inv);
    let aggregator = aggregator_endpoint(&inv);
    let steps = |i: &Install| -> anyhow::Result<String> {
        exec(i, &plan::connect(), &client)?;
        for s in plan::undeploy(i, purge, aggregator.as_ref()) {
            let t = Instant::now();
            let out = exec(i, &s, &client)?;
            say(i, &format!("{}: {} ({:.1} s)", s.name, last_line(&out, "done"), t.elapsed().as_secs_f64()));
        }
        Ok(format!("removed from {}{}", i.prefix, if purge { format!(" and {}", i.state_dir) } else { String::new() }))
    };
    let run = |i: &Install| {
        let r = steps(i);
        i.ssh.close();
        r
    };
    let done = for_each(&inv.agents, sel.parallel, run)?;
    if let Some(a) = inv.deployed_aggregator() {
        run(a)?;
    }
    println!("undeployed from {} host(s) in {:.1} s", done.len(), t0.elapsed().as_secs_f64());
    if inv.scrape_targets.exists() {
        let mut gone: Vec<Owner> = inv.agents.iter().map(|i| Owner::Agent(i.name.clone())).collect();
        gone.extend(inv.deployed_aggregator().map(|_| Owner::Aggregator));
        super::targets::update(&inv.scrape_targets, &[], &gone)?;
    }
    Ok(())
}

/// The run's shared SSH connections: their sockets live in a private
/// directory, removed at the end.
struct Control {
    dir: std::path::PathBuf,
}

impl Control {
    fn new() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = std::env::temp_dir().join(format!("scaler-deploy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// `inv` with every host's SSH connections shared.
    fn attach(&self, inv: &Inventory) -> Inventory {
        let with = |i: &Install| {
            let mut i = i.clone();
            i.ssh.control_dir = Some(self.dir.clone());
            i
        };
        Inventory {
            agents: inv.agents.iter().map(with).collect(),
            aggregator: inv.aggregator.as_ref().map(with),
            aggregator_selected: inv.aggregator_selected,
            tls: inv.tls.clone(),
            scrape_targets: inv.scrape_targets.clone(),
        }
    }
}

impl Drop for Control {
    /// Ends any connection still open (a host that failed, the tunnels to
    /// the aggregator), then removes the directory.
    fn drop(&mut self) {
        for socket in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let _ = std::process::Command::new("ssh")
                .arg("-S")
                .arg(socket.path())
                .args(["-O", "exit", "scaler-deploy"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the aggregator answers (from this machine) and its token.
fn aggregator_endpoint(inv: &Inventory) -> Option<(Endpoint, Option<String>)> {
    inv.aggregator.as_ref().map(|a| (plan::endpoint(a), a.token.clone()))
}

/// Deploys to one host; returns where it answers.
fn deploy_host(i: &Install, o: &DeployOptions, arch: Option<&'static str>, client: &Client) -> anyhow::Result<String> {
    let t0 = Instant::now();
    let out = exec(i, &plan::connect(), client)?;
    let mut lines = out.lines().map(str::trim);
    let host_arch = lines.next().unwrap_or_default().to_owned();
    let has_systemd = lines.next() == Some("systemd");
    let fail = |e: anyhow::Error| e.context(format!("host {} ({}): step \"connect\"", i.name, i.ssh.address));
    if let Some(a) = arch
        && a != host_arch
    {
        return Err(fail(anyhow!("the host is {host_arch} but the binary is built for {a}")));
    }
    let mode = match i.service {
        Service::Auto if has_systemd => Mode::Systemd,
        Service::Auto | Service::Supervisor => Mode::Supervisor,
        Service::Systemd if has_systemd => Mode::Systemd,
        Service::Systemd => return Err(fail(anyhow!("service = \"systemd\" but the host does not run systemd"))),
    };
    let how = if mode == Mode::Systemd { "systemd" } else { "supervisor" };
    say(i, &format!("connected to {} ({host_arch}; {how})", i.ssh.destination()));
    for s in plan::deploy(i, mode, o) {
        let t = Instant::now();
        let out = exec(i, &s, client)?;
        say(i, &format!("{}: {} ({:.1} s)", s.name, last_line(&out, "done"), t.elapsed().as_secs_f64()));
    }
    let url = plan::endpoint(i).to_string();
    say(i, &format!("{} up at {url} ({:.1} s)", i.role.name(), t0.elapsed().as_secs_f64()));
    Ok(url)
}

/// Runs one step on `i`'s host; the error names the host and the step.
fn exec(i: &Install, s: &Step, client: &Client) -> anyhow::Result<String> {
    let r = match &s.action {
        Action::Remote { unless: Some(check), .. }
            if i.ssh.run(check, Input::None).is_ok_and(|o| o.trim() == "same") =>
        {
            Ok("unchanged".to_owned())
        }
        Action::Remote { script, input, .. } => {
            let input = match input {
                Payload::None => Input::None,
                Payload::File(p) => Input::File(p),
                Payload::Text { text, .. } => Input::Bytes(text.as_bytes()),
            };
            i.ssh.run(script, input)
        }
        Action::Health { endpoint, expect_host, timeout, crash_script, log_script } => {
            let crashed = || i.ssh.run(crash_script, Input::None).is_ok_and(|o| o.contains("crashed"));
            http::wait_healthy(endpoint, expect_host.as_deref(), *timeout, crashed, client).map_err(|e| {
                let log = i.ssh.run(log_script, Input::None).unwrap_or_default();
                if log.trim().is_empty() { e } else { e.context(format!("its log ends with:\n{}", log.trim_end())) }
            })
        }
        Action::Call { endpoint, method, path, body, token, ok_statuses, required } => {
            let timeout = Duration::from_secs(10);
            let r = http::request(endpoint, method, path, body.as_deref(), token.as_deref(), timeout, client.as_ref())
                .and_then(|r| {
                    if (200..300).contains(&r.status) || ok_statuses.contains(&r.status) {
                        Ok(format!("{method} {}: {}", endpoint.show(path), r.status))
                    } else {
                        bail!("{method} {} answered {}: {}", endpoint.show(path), r.status, r.body.trim())
                    }
                });
            match r {
                Err(e) if !required => Ok(format!("warning (going on): {e:#}")),
                r => r,
            }
        }
    };
    r.with_context(|| format!("host {} ({}): step \"{}\"", i.name, i.ssh.address, s.name))
}

/// Runs `f` on every host, `parallel` at a time, in order; after a failure
/// no further host starts. Returns each host's name and result, or the
/// first failure (in host order).
fn for_each(
    items: &[Install],
    parallel: usize,
    f: impl Fn(&Install) -> anyhow::Result<String> + Sync,
) -> anyhow::Result<Vec<(String, String)>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<anyhow::Result<String>>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let Some(i) = items.get(n) else { break };
                    let r = f(i);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[n] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut ok = Vec::new();
    let (mut first_err, mut failed_names, mut not_started) = (None, Vec::new(), Vec::new());
    for (i, r) in items.iter().zip(results) {
        match r {
            Some(Ok(v)) => ok.push((i.name.clone(), v)),
            Some(Err(e)) => {
                failed_names.push(i.name.clone());
                first_err.get_or_insert(e);
            }
            None => not_started.push(i.name.clone()),
        }
    }
    match first_err {
        None => Ok(ok),
        Some(e) => {
            let names = |v: &[String]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
            let done: Vec<String> = ok.iter().map(|(n, _)| n.clone()).collect();
            eprintln!(
                "stopped: done (left running): {}; failed: {}; not started: {}",
                names(&done),
                names(&failed_names),
                names(&not_started)
            );
            Err(e)
        }
    }
}

fn say(i: &Install, msg: &str) {
    match i.role {
        Role::Agent => println!("[{}] {msg}", i.name),
        Role::Aggregator => println!("[{} aggregator] {msg}", i.name),
    }
}

fn last_line(out: &str, default: &str) -> String {
    out.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or(default).to_owned()
}

/// The file's SHA-256 in hex, from coreutils' `sha256sum` (`None` without
/// it: then every deploy copies the binary).
fn sha256(p: &Path) -> Option<String> {
    let out = crate::util::output(std::process::Command::new("sha256sum").arg(p))?;
    let hex = out.split_whitespace().next()?.to_owned();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// The `uname -m` name of an ELF binary's machine, or `None` if unknown.
fn elf_arch(p: &Path) -> anyhow::Result<Option<&'static str>> {
    use std::io::Read as _;
    let mut h = [0u8; 20];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut h))
        .with_context(|| format!("reading {}", p.display()))?;
    if h[..4] != *b"\x7fELF" {
        bail!("{} is not an ELF executable", p.display());
    }
    let machine = u16::from_le_bytes([h[18], h[19]]);
    Ok(match machine {
        0x3e => Some("x86_64"),
        0xb7 => Some("aarch64"),
        0xf3 => Some("riscv64"),
        _ => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::deploy::hosts::{Entry, Fallback, Role, resolve};

    fn hosts(n: usize) -> Vec<Install> {
        let fb = Fallback::for_tests();
        (1..=n)
            .map(|k| {
                let e = Entry { name: Some(format!("n{k}")), address: Some(format!("10.0.0.{k}")), ..Entry::default() };
                resolve(&e, &Entry::default(), &fb, Role::Agent).unwrap()
            })
            .collect()
    }

    #[test]
    fn the_first_failure_stops_the_run_and_is_the_error() {
        for parallel in [1, 2] {
            let started = Mutex::new(Vec::new());
            let r = for_each(&hosts(5), parallel, |i| {
                started.lock().unwrap().push(i.name.clone());
                if i.name == "n2" {
                    bail!("host n2: step \"connect\": boom")
                }
                // Hosts that succeed take a moment (as a deploy does), so the
                // failure is seen before the next host would start; with
                // instant successes a free worker could legitimately start
                // every remaining host first.
                std::thread::sleep(std::time::Duration::from_millis(50));
                Ok(i.name.clone())
            });
            assert!(r.unwrap_err().to_string().contains("n2"));
            let started = started.into_inner().unwrap();
            assert!(started.len() <= 2 + parallel, "{parallel}: {started:?}");
            assert!(!started.contains(&"n5".to_owned()) || parallel > 3);
        }
        let ok = for_each(&hosts(3), 3, |i| Ok(i.name.clone())).unwrap();
        assert_eq!(ok.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["n1", "n2", "n3"]);
    }

    #[test]
    fn step_errors_name_the_host_and_the_step() {
        let mut i = hosts(1).remove(0);
        i.ssh.address = "127.0.0.1".into();
        i.ssh.port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = exec(&i, &plan::connect(), &None).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("host n1 (127.0.0.1): step \"connect\": ssh: "), "{msg}");
        assert!(msg.contains("Connection refused"), "{msg}");
    }

    #[test]
    fn elf_machine_is_read() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(elf_arch(&me).unwrap(), Some(std::env::consts::ARCH).filter(|a| *a != "x86"));
        let f = tempfile_with(b"#!/bin/sh\n echo not elf at all\n");
        assert!(elf_arch(&f).unwrap_err().to_string().contains("not an ELF"));
        let _ = std::fs::remove_file(f);
    }

    fn tempfile_with(b: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("xtask-deploy-test-{}", std::process::id()));
        std::fs::write(&p, b).unwrap();
        p
    }
}
