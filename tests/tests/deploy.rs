//! `cargo xtask deploy` / `undeploy` over real SSH to local test hosts:
//! network namespaces on a bridge, each with its own address and sshd
//! ([`tests::netns`]). The agents run inside the namespaces (one eBPF set
//! each: they share this kernel) with their own prefix and state directory
//! in a temporary directory. Everything is removed on drop, even on failure.
#![allow(clippy::unwrap_used)]

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tests::{
    TestCgroup,
    agent::scaler_bin,
    netns::{self, TestHost, TestNet},
    require_root,
};

/// Runs `cargo xtask ARGS` (as `cargo run -p xtask`, so in the test's own
/// target directory): success, stdout, stderr.
fn xtask(args: &[&str]) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let t0 = Instant::now();
    let out = Command::new(cargo)
        .args(["run", "-q", "-p", "xtask", "--"])
        .args(args)
        .current_dir(root)
        .env("PWD", root)
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    println!("$ cargo xtask {} ({:.1} s)\n{stdout}{stderr}", args.join(" "), t0.elapsed().as_secs_f64());
    (out.status.success(), stdout, stderr)
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

/// The binary to deploy: `scaler_bin()` without its debug info when
/// `strip` is here (a quarter of the size: every copy is faster), else as is.
fn deployable_binary(dir: &Path) -> PathBuf {
    let out = dir.join("scaler");
    let stripped = Command::new("strip").arg("-o").arg(&out).arg(scaler_bin()).status().is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(scaler_bin(), &out).unwrap();
    }
    out
}

fn random_hex() -> String {
    tests::unique_name().trim_start_matches("scaler-test-").to_owned()
}

/// One deployed host as the test sees it.
struct Node {
    name: String,
    host: TestHost,
    cgroup: TestCgroup,
    prefix: PathBuf,
    state: PathBuf,
    token: String,
}

impl Node {
    /// `node1`..`nodeN`: test hosts on `net`, files under `work`.
    fn many(n: usize, net: &mut TestNet, public: &str, work: &Path) -> Vec<Node> {
        (1..=n)
            .map(|k| Node {
                name: format!("node{k}"),
                host: net.host(public),
                cgroup: TestCgroup::new(),
                prefix: work.join(format!("node{k}/opt")),
                state: work.join(format!("node{k}/state")),
                token: random_hex(),
            })
            .collect()
    }

    fn url(&self) -> String {
        format!("http://{}:8470", self.host.addr)
    }

    fn healthz(&self) -> Option<Value> {
        let r = http().get(format!("{}/healthz", self.url())).send().ok()?;
        r.status().is_success().then(|| r.json().unwrap())
    }

    /// The end of the agent's log (for failure messages).
    fn log(&self) -> String {
        let t = std::fs::read_to_string(self.prefix.join("log/agent.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The agent's PID from the supervisor's pid file.
    fn agent_pid(&self) -> i32 {
        let f = self.prefix.join("run/agent.pid");
        std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).trim().parse().unwrap()
    }

    fn entry(&self, key: &Path) -> String {
        format!(
            "[[hosts]]\nname = \"{name}\"\naddress = \"{addr}\"\nkey = \"{key}\"\nprefix = \"{prefix}\"\n\
             state_dir = \"{state}\"\nservice = \"auto\"\n\
             [hosts.config.agent]\nlisten = \"{addr}:8470\"\ntoken = \"{token}\"\ninsecure = true\ncgroup_roots = [\"{root}\"]\n\
             mirror_v1_only = false\n\
             [hosts.config.discovery]\nlxc = false\ndocker = false\npodman = false\nkubernetes = false\n\
             systemd_services = false\n\n",
            name = self.name,
            addr = self.host.addr,
            key = key.display(),
            prefix = self.prefix.display(),
            state = self.state.display(),
            token = self.token,
            root = self.cgroup.rel(""),
        )
    }
}

fn alive(pid: i32) -> bool {
    // A zombie has no namespace link left.
    Path::new(&format!("/proc/{pid}/ns/net")).exists()
}

/// The inode of a network namespace: a process's, or a named one's.
fn netns_inode(path: &str) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")).ino()
}

#[test]
fn deploy_to_three_hosts_upgrade_keeps_subscriptions_then_undeploy() {
    require_root();
    netns::require_tools();
    let t0 = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = netns::keygen(work.path(), "id_test");
    let known_hosts = work.path().join("known_hosts");
    let mut net = TestNet::new();
    let nodes = Node::many(3, &mut net, &public, work.path());
    let hosts_file = work.path().join("hosts.toml");
    std::fs::write(&hosts_file, nodes.iter().map(|n| n.entry(&key)).collect::<String>()).unwrap();
    let bin = deployable_binary(work.path());
    let (hf, kh, b) = (hosts_file.to_str().unwrap(), known_hosts.to_str().unwrap(), bin.to_str().unwrap());
    println!("test hosts ready in {:.1} s", t0.elapsed().as_secs_f64());

    // The plan names every host and step, and nothing is touched.
    let (ok, plan, err) = xtask(&["deploy", "--hosts", hf, "--binary", b, "--known-hosts", kh, "--dry-run"]);
    assert!(ok, "{err}");
    for n in &nodes {
        assert!(plan.contains(&format!("host {} (root@{})", n.name, n.host.addr)), "{plan}");
    }
    for step in ["connect", "copy binary", "copy config", "install service", "start", "wait for /healthz"] {
        assert!(plan.contains(&format!(". {step}")), "{step} missing from the plan");
    }
    assert!(!plan.contains(&nodes[0].token), "the plan shows a token");
    assert!(!known_hosts.exists() && !nodes[0].prefix.exists(), "--dry-run touched something");

    // Deploy, one host at a time.
    let (ok, _, err) = xtask(&["deploy", "--hosts", hf, "--binary", b, "--known-hosts", kh]);
    assert!(ok, "deploy failed: {err}");
    let mut pids = Vec::new();
    for n in &nodes {
        let h = n.healthz().unwrap_or_else(|| panic!("{} does not answer on {}", n.name, n.url()));
        assert_eq!((h["status"].as_str(), h["host"].as_str()), (Some("ok"), Some(n.name.as_str())), "{h}");
        let pid = n.agent_pid();
        // It runs inside the host's own namespace, from the prefix.
        assert_eq!(netns_inode(&format!("/proc/{pid}/ns/net")), netns_inode(&format!("/run/netns/{}", n.host.ns)));
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(), n.prefix.join("bin/scaler"));
        let cfg = std::fs::metadata(n.prefix.join("etc/agent.toml")).unwrap();
        assert_eq!(cfg.permissions().mode() & 0o777, 0o600);
        assert!(n.state.is_dir());
        pids.push(pid);
    }

    // A subscription on each, through the API with the token.
    let body = |n: &Node| json!({"cgroup": n.cgroup.rel("app"), "resources": {"cpu": {"min": 100, "max": 2000}}});
    for n in &nodes {
        n.cgroup.child("app");
        let url = format!("{}/v1/containers/web-{}", n.url(), n.name);
        let r = http().put(&url).json(&body(n)).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "a PUT without the token must be refused");
        let r = http().put(&url).bearer_auth(&n.token).json(&body(n)).send().unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, 200, "subscribing on {}: {}", n.name, r.text().unwrap_or_default());
    }

    // Upgrade: a different binary (one byte longer), all hosts at once.
    let upgraded = work.path().join("scaler-upgraded");
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes.push(0);
    std::fs::write(&upgraded, &bytes).unwrap();
    std::fs::set_permissions(&upgraded, std::fs::Permissions::from_mode(0o755)).unwrap();
    let up = upgraded.to_str().unwrap();
    let (ok, out, err) = xtask(&["deploy", "--hosts", hf, "--binary", up, "--known-hosts", kh, "--parallel", "3"]);
    assert!(ok, "upgrade failed: {err}");
    let logs: String = nodes.iter().map(|n| format!("--- {}:\n{}\n", n.name, n.log())).collect();
    assert_eq!(out.matches("start: restarted").count(), 3, "{out}\n{logs}");
    for (n, old) in nodes.iter().zip(&pids) {
        let pid = n.agent_pid();
        assert!(pid != *old && !alive(*old), "{}: agent {old} was not replaced", n.name);
        assert_eq!(std::fs::metadata(n.prefix.join("bin/scaler")).unwrap().len(), bytes.len() as u64);
        // The running process is the new file, not the replaced one.
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(), n.prefix.join("bin/scaler"));
        assert!(n.healthz().is_some(), "{} does not answer after the upgrade", n.name);
        let list: Value = http().get(format!("{}/v1/containers", n.url())).send().unwrap().json().unwrap();
        let names: Vec<&str> =
            list["containers"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
        assert!(names.contains(&format!("web-{}", n.name).as_str()), "{}: subscription lost: {list}", n.name);
    }

    // Undeploy with --purge: processes, files and state are gone.
    let new_pids: Vec<i32> = nodes.iter().map(Node::agent_pid).collect();
    let (ok, _, err) = xtask(&["undeploy", "--hosts", hf, "--known-hosts", kh, "--purge"]);
    assert!(ok, "undeploy failed: {err}");
    for (n, pid) in nodes.iter().zip(new_pids) {
        assert!(!alive(pid), "{}: agent {pid} still runs", n.name);
        assert!(n.healthz().is_none(), "{} still answers", n.name);
        assert!(!n.prefix.exists(), "{} left {:?}", n.name, std::fs::read_dir(&n.prefix).map(|d| d.count()));
        assert!(!n.state.exists(), "{}: state_dir not purged", n.name);
        // Only sshd is left in the namespace.
        assert_eq!(n.host.pids().len(), 1, "{}: processes left: {:?}", n.name, n.host.pids());
    }
    println!("deploy test done in {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn unreachable_or_refusing_hosts_stop_the_deploy_and_hosts_done_keep_running() {
    require_root();
    netns::require_tools();
    let t0 = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = netns::keygen(work.path(), "id_test");
    let (_, other_public) = netns::keygen(work.path(), "id_other");
    let kh = work.path().join("known_hosts");
    let mut net = TestNet::new();
    let good = net.host(&public);
    let refusing = net.host(&other_public);
    let prefix = |n: &str| work.path().join(n).join("opt");
    // node1 listens on its namespace's loopback: deploy checks it through ssh -W.
    let node = |name: &str, addr: String, port: u16| {
        format!(
            "[[hosts]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = {port}\nprefix = \"{}\"\nstate_dir = \"{}\"\n\
             [hosts.config.discovery]\nlxc = false\ndocker = false\npodman = false\nkubernetes = false\n\
             systemd_services = false\n[hosts.config.agent]\nmirror_v1_only = false\n\n",
            prefix(name).display(),
            work.path().join(name).join("state").display(),
        )
    };
    let node1 = node("node1", good.addr.to_string(), 22);
    let cases = [
        ("refuses-key", node("refuses-key", refusing.addr.to_string(), 22), "Permission denied"),
        ("nothing-listens", node("nothing-listens", refusing.addr.to_string(), 2222), "Connection refused"),
        ("unreachable", node("unreachable", net.unused_addr().to_string(), 22), "connect to host"),
    ];
    let never = node("never-reached", refusing.addr.to_string(), 22).replace("never-reached/opt", "never/opt");
    let agent_answers = || {
        Command::new("ip")
            .args(["netns", "exec", &good.ns])
            .arg(scaler_bin())
            .args(["stats", "--agent", "http://127.0.0.1:8470", "--json"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let bin = deployable_binary(work.path());
    let mut first_pid = None;
    for (bad, entry, why) in &cases {
        let file = work.path().join(format!("{bad}.toml"));
        std::fs::write(&file, format!("[defaults]\nkey = \"{}\"\n\n{node1}{entry}{never}", key.display())).unwrap();
        let (ok, _, err) = xtask(&[
            "deploy",
            "--hosts",
            file.to_str().unwrap(),
            "--binary",
            bin.to_str().unwrap(),
            "--known-hosts",
            kh.to_str().unwrap(),
            "--connect-timeout",
            "3",
        ]);
        assert!(!ok, "deploy with {bad} succeeded");
        let line = err.lines().find(|l| l.starts_with("Error: ")).unwrap_or_else(|| panic!("no Error line: {err}"));
        assert!(line.starts_with(&format!("Error: host {bad} (")), "{line}");
        assert!(line.contains("step \"connect\": ssh: ") && line.contains(why), "{line}");
        assert!(err.contains("done (left running): node1") && err.contains("not started: never-reached"), "{err}");
        assert!(!work.path().join("never").exists(), "a host after the failure was touched");
        // node1, deployed on the first run, still runs, untouched by the next ones.
        assert!(agent_answers(), "node1's agent stopped answering after {bad} failed");
        let pid: i32 = std::fs::read_to_string(prefix("node1").join("run/agent.pid")).unwrap().trim().parse().unwrap();
        assert_eq!(*first_pid.get_or_insert(pid), pid, "node1's agent was restarted though nothing changed");
    }
    let file = work.path().join("refuses-key.toml");
    let (ok, _, err) = xtask(&[
        "undeploy",
        "--hosts",
        file.to_str().unwrap(),
        "--only",
        "node1",
        "--known-hosts",
        kh.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(!agent_answers() && !prefix("node1").exists());
    assert!(work.path().join("node1/state").exists(), "undeploy without --purge keeps the state");
    println!("failure test done in {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn deploy_with_an_aggregator_registers_the_agents_and_undeploy_removes_both() {
    require_root();
    netns::require_tools();
    let t0 = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = netns::keygen(work.path(), "id_test");
    let kh = work.path().join("known_hosts");
    let mut net = TestNet::new();
    let nodes = Node::many(2, &mut net, &public, work.path());
    // The aggregator shares node1's prefix (and binary) with its agent.
    let (agg_addr, agg_token, agg_state) = (nodes[0].host.addr, random_hex(), work.path().join("node1/agg-state"));
    let file = work.path().join("hosts.toml");
    std::fs::write(
        &file,
        format!(
            "{}[aggregator]\nhost = \"node1\"\nlisten = \"{agg_addr}:8471\"\ntoken = \"{agg_token}\"\nstate_dir = \"{}\"\n\
             [aggregator.config.aggregator]\ninsecure = true\n",
            nodes.iter().map(|n| n.entry(&key)).collect::<String>(),
            agg_state.display()
        ),
    )
    .unwrap();
    let (f, k) = (file.to_str().unwrap(), kh.to_str().unwrap());
    let bin = deployable_binary(work.path());
    let (ok, out, err) = xtask(&["deploy", "--hosts", f, "--binary", bin.to_str().unwrap(), "--known-hosts", k]);
    assert!(ok, "deploy failed: {err}");
    assert_eq!(out.matches("register with the aggregator: PUT").count(), 2, "{out}");
    let agg = format!("http://{agg_addr}:8471");
    // Both agents are listed under their names and URLs, and the aggregator
    // gathers from them.
    let hosts = tests::wait_for(Duration::from_secs(15), || {
        let v: Value = http().get(format!("{agg}/v1/hosts")).send().ok()?.json().ok()?;
        let hosts = v["hosts"].as_array()?.clone();
        (hosts.len() == 2 && hosts.iter().all(|h| h["rounds_ok"].as_u64() > Some(0))).then_some(hosts)
    })
    .unwrap_or_else(|| panic!("the aggregator did not gather both agents: {}", nodes[0].log()));
    for n in &nodes {
        let h = hosts.iter().find(|h| h["name"] == n.name.as_str()).unwrap();
        assert_eq!((h["url"].as_str(), h["has_token"].as_bool()), (Some(n.url().as_str()), Some(true)), "{h}");
    }
    assert!(nodes[0].prefix.join("etc/aggregator.toml").exists() && agg_state.is_dir());
    // The aggregator's scrape target (its own job) answers as Prometheus
    // would ask: /metrics with no token, the gathered hosts' series in it.
    let targets_file = work.path().join("prometheus-targets.json");
    let targets = || -> Value { serde_json::from_str(&std::fs::read_to_string(&targets_file).unwrap()).unwrap() };
    let all = targets();
    let entry = all.as_array().unwrap().iter().find(|e| e["labels"]["job"] == "scaler-aggregator").unwrap();
    assert_eq!(entry["labels"]["__scheme__"], "http", "{all}");
    let metrics = http().get(format!("http://{}/metrics", entry["targets"][0].as_str().unwrap())).send().unwrap();
    assert!(metrics.status().is_success(), "{}", metrics.status());
    let metrics = metrics.text().unwrap();
    assert!(metrics.contains(&format!("scaler_cluster_host_up{{host=\"{}\"}}", nodes[1].name)), "{metrics}");
    assert_eq!(all.as_array().unwrap().len(), 1 + nodes.len(), "{all}");

    let (ok, out, err) = xtask(&["undeploy", "--hosts", f, "--known-hosts", k, "--purge"]);
    assert!(ok, "undeploy failed: {err}");
    assert_eq!(targets(), serde_json::json!([]), "undeploy leaves its scrape targets");
    assert_eq!(out.matches("unregister from the aggregator: DELETE").count(), 2, "{out}");
    assert!(http().get(format!("{agg}/healthz")).send().is_err(), "the aggregator still answers");
    for n in &nodes {
        assert!(n.healthz().is_none() && !n.prefix.exists() && !n.state.exists(), "{} left behind", n.name);
    }
    assert!(!agg_state.exists());
    println!("aggregator test done in {:.1} s", t0.elapsed().as_secs_f64());
}

/// A blocking client over TLS: trusting `ca` (if any), showing `id` (a
/// certificate and its key) when given.
fn https(ca: Option<&Path>, id: Option<(&Path, &Path)>) -> reqwest::blocking::Client {
    let tls = scaler_api::tls::client_config(ca, id).unwrap();
    reqwest::blocking::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(5)).build().unwrap()
}

/// The whole error chain of a failed request, in one line.
fn why(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(e) = src {
        s.push_str(&format!(": {e}"));
        src = e.source();
    }
    s
}

#[test]
fn deploy_with_tls_issues_certificates_serves_https_everywhere_and_rotates_them() {
    require_root();
    netns::require_tools();
    let t0 = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = netns::keygen(work.path(), "id_test");
    let kh = work.path().join("known_hosts");
    // The operator's own CA (deploy signs with it), so the test can also
    // make certificates deploy would not (an expired one).
    let ca_dir = work.path().join("ca");
    std::fs::create_dir(&ca_dir).unwrap();
    let ca = tests::tls::TestCa::new(&ca_dir);
    let ca_key = ca.write_key();
    let mut net = TestNet::new();
    let nodes = Node::many(2, &mut net, &public, work.path());
    // node1's agent listens on its loopback only: deploy checks it through
    // SSH, and the aggregator beside it reaches it there; node2's on its
    // address. No `insecure` anywhere: TLS is what allows it off loopback.
    let entry = |n: &Node| n.entry(&key).replace("insecure = true\n", "");
    let n1 =
        entry(&nodes[0]).replace(&format!("listen = \"{}:8470\"", nodes[0].host.addr), "listen = \"127.0.0.1:8470\"");
    let (agg_addr, agg_token, agg_state) = (nodes[0].host.addr, random_hex(), work.path().join("node1/agg-state"));
    let pki = work.path().join("pki");
    let file = work.path().join("hosts.toml");
    std::fs::write(
        &file,
        format!(
            "{n1}{}[aggregator]\nhost = \"node1\"\nlisten = \"{agg_addr}:8471\"\ntoken = \"{agg_token}\"\nstate_dir = \"{}\"\n\
             [aggregator.config.aggregator]\npoll_ms = 500\ntimeout_ms = 400\n\n\
             [tls]\npki = \"{}\"\nca_cert = \"{}\"\nca_key = \"{}\"\n",
            entry(&nodes[1]),
            agg_state.display(),
            pki.display(),
            ca.pem.display(),
            ca_key.display()
        ),
    )
    .unwrap();
    let (f, k) = (file.to_str().unwrap(), kh.to_str().unwrap());
    let bin = deployable_binary(work.path());
    let b = bin.to_str().unwrap();
    let (ok, out, err) = xtask(&["deploy", "--hosts", f, "--binary", b, "--known-hosts", k]);
    assert!(ok, "deploy failed: {err}");
    assert_eq!(out.matches("certificate: new").count(), 3, "{out}");
    assert_eq!(out.matches("register with the aggregator: PUT https://").count(), 2, "{out}");
    let through_ssh = format!("agent up at https://127.0.0.1:8470 on {} (through ssh -W)", nodes[0].host.addr);
    assert!(out.contains(&through_ssh), "{out}");
    let (operator, operator_key) = (pki.join("operator.pem"), pki.join("operator-key.pem"));
    assert!(out.contains(&format!("SCALER_CERT={}", operator.display())), "{out}");
    for n in &nodes {
        let key = std::fs::metadata(n.prefix.join("etc/agent-key.pem")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600, "{}: the key is readable by others", n.name);
    }
    assert_eq!(std::fs::metadata(pki.join("hosts/node2-agent-key.pem")).unwrap().permissions().mode() & 0o777, 0o600);

    // The aggregator gathers both agents over TLS (node1's through its
    // loopback), under https:// URLs.
    let trusted = https(Some(&ca.pem), None);
    let agg = format!("https://{agg_addr}:8471");
    let hosts = tests::wait_for(Duration::from_secs(20), || {
        let v: Value = trusted.get(format!("{agg}/v1/hosts")).send().ok()?.json().ok()?;
        let hosts = v["hosts"].as_array()?.clone();
        (hosts.len() == 2 && hosts.iter().all(|h| h["rounds_ok"].as_u64() > Some(0))).then_some(hosts)
    })
    .unwrap_or_else(|| panic!("the aggregator did not gather both agents over TLS: {}", nodes[0].log()));
    let urls: Vec<&str> = hosts.iter().filter_map(|h| h["url"].as_str()).collect();
    assert!(urls.contains(&"https://127.0.0.1:8470"), "{urls:?}");
    assert!(urls.contains(&format!("https://{}:8470", nodes[1].host.addr).as_str()), "{urls:?}");
    // Prometheus' scrape targets beside the hosts file: the aggregator
    // (its own job) and the agents, named as the aggregator names them
    // (node1's on its loopback, for a Prometheus on node1, where the
    // aggregator runs).
    let targets: Value =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("prometheus-targets.json")).unwrap()).unwrap();
    assert_eq!(
        targets,
        serde_json::json!([
            {"targets": [format!("{agg_addr}:8471")], "labels": {"job": "scaler-aggregator", "__scheme__": "https"}},
            {"targets": ["127.0.0.1:8470"], "labels": {"host": "node1", "__scheme__": "https"}},
            {"targets": [format!("{}:8470", nodes[1].host.addr)], "labels": {"host": "node2", "__scheme__": "https"}},
        ])
    );

    // The CLI manages a container on node2 over TLS, with the operator's
    // certificate (changes need one: `tls_client_auth = mutating`).
    let n2 = &nodes[1];
    let agent = format!("https://{}:8470", n2.host.addr);
    let cg = n2.cgroup.child("app");
    let cli = |id: bool, args: &[&str]| {
        let mut c = Command::new(scaler_bin());
        c.args(args).env("SCALER_CA", &ca.pem).env("SCALER_TOKEN", &n2.token).env_remove("SCALER_CERT");
        if id {
            c.env("SCALER_CERT", &operator).env("SCALER_KEY", &operator_key);
        }
        let o = c.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let sub = ["subscribe", "web", "--cgroup", &cg, "--cpu", "100m:2", "--agent", &agent, "--json"];
    let (ok, _, err) = cli(false, &sub);
    assert!(!ok && err.contains("client certificate"), "a change without a client certificate: {err}");
    let (ok, out, err) = cli(true, &sub);
    assert!(ok, "subscribe over TLS: {err}");
    assert!(out.contains("\"web\""), "{out}");

    // What is refused, and how it says so.
    let healthz = format!("{agent}/healthz");
    let e = https(None, None).get(&healthz).send().unwrap_err();
    assert!(why(&e).contains("UnknownIssuer"), "without the CA: {}", why(&e));
    println!("without the CA: {}", why(&e));
    let wrong = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(scaler_api::tls::client_config(Some(&ca.pem), None).unwrap())
        .resolve("wrong.example", std::net::SocketAddr::from((n2.host.addr, 8470)))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let e = wrong.get("https://wrong.example:8470/healthz").send().unwrap_err();
    assert!(why(&e).contains("not valid for name"), "a wrong host name: {}", why(&e));
    println!("a wrong host name: {}", why(&e));
    let expired = ca.issue("expired-client", &["client"], true);
    let e = https(Some(&ca.pem), Some((&expired.cert, &expired.key)))
        .put(format!("{agent}/v1/containers/web"))
        .bearer_auth(&n2.token)
        .json(&json!({"cgroup": cg, "resources": {"cpu": {"min": 100, "max": 1000}}}))
        .send()
        .map(|r| r.status().as_u16());
    let e = match e {
        Err(e) => why(&e),
        Ok(s) => panic!("an expired client certificate was let through ({s})"),
    };
    assert!(e.to_lowercase().contains("expired") || e.contains("BadCertificate"), "an expired client certificate: {e}");
    println!("an expired client certificate: {e}");
    let (status, body) =
        scaler_testkit::http::request(&format!("{}:8470", n2.host.addr), "GET", "/healthz", None).unwrap();
    assert!(status == 400 && body.contains("this port speaks HTTPS"), "plain HTTP: {status} {body}");
    println!("refused: without the CA, a wrong name, an expired client certificate, plain HTTP");

    // A later deploy keeps good certificates (nothing restarts); with
    // --rotate-certs every host gets a new one and restarts with it,
    // keeping its subscriptions.
    let (ok, out, err) = xtask(&["deploy", "--hosts", f, "--binary", b, "--known-hosts", k]);
    assert!(ok, "redeploy failed: {err}");
    assert!(!out.contains("certificate: new") && out.matches("start: running, unchanged").count() == 3, "{out}");
    let before = std::fs::read(n2.prefix.join("etc/agent-cert.pem")).unwrap();
    let pid = n2.agent_pid();
    let (ok, out, err) = xtask(&["deploy", "--hosts", f, "--binary", b, "--known-hosts", k, "--rotate-certs"]);
    assert!(ok, "rotation failed: {err}");
    assert_eq!(out.matches("certificate: new").count(), 3, "{out}");
    assert_eq!(out.matches("start: restarted").count(), 3, "{out}");
    assert_ne!(
        std::fs::read(n2.prefix.join("etc/agent-cert.pem")).unwrap(),
        before,
        "the certificate was not replaced"
    );
    assert!(n2.agent_pid() != pid && !alive(pid), "the agent was not restarted with its new certificate");
    let list: Value = trusted.get(format!("{agent}/v1/containers")).send().unwrap().json().unwrap();
    assert!(list.to_string().contains("\"web\""), "subscription lost in the rotation: {list}");
    let rounds = |h: &Value| h["rounds_ok"].as_u64().unwrap_or(0);
    let after = tests::wait_for(Duration::from_secs(20), || {
        let v: Value = trusted.get(format!("{agg}/v1/hosts")).send().ok()?.json().ok()?;
        let hosts = v["hosts"].as_array()?.clone();
        (hosts.len() == 2 && hosts.iter().all(|h| h["status"] == "ok" && rounds(h) > 0)).then_some(hosts)
    });
    assert!(after.is_some(), "the aggregator does not gather after the rotation: {}", nodes[0].log());

    let (ok, _, err) = xtask(&["undeploy", "--hosts", f, "--known-hosts", k, "--purge"]);
    assert!(ok, "undeploy failed: {err}");
    for n in &nodes {
        assert!(!n.prefix.exists(), "{} left {:?}", n.name, std::fs::read_dir(&n.prefix).map(|d| d.count()));
    }
    println!("TLS deploy test done in {:.1} s", t0.elapsed().as_secs_f64());
}
