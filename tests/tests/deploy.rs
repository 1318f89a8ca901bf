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
    let nodes: Vec<Node> = (1..=3)
        .map(|k| Node {
            name: format!("node{k}"),
            host: net.host(&public),
            cgroup: TestCgroup::new(),
            prefix: work.path().join(format!("node{k}/opt")),
            state: work.path().join(format!("node{k}/state")),
            token: random_hex(),
        })
        .collect();
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
    let nodes: Vec<Node> = (1..=2)
        .map(|k| Node {
            name: format!("node{k}"),
            host: net.host(&public),
            cgroup: TestCgroup::new(),
            prefix: work.path().join(format!("node{k}/opt")),
            state: work.path().join(format!("node{k}/state")),
            token: random_hex(),
        })
        .collect();
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

    let (ok, out, err) = xtask(&["undeploy", "--hosts", f, "--known-hosts", k, "--purge"]);
    assert!(ok, "undeploy failed: {err}");
    assert_eq!(out.matches("unregister from the aggregator: DELETE").count(), 2, "{out}");
    assert!(http().get(format!("{agg}/healthz")).send().is_err(), "the aggregator still answers");
    for n in &nodes {
        assert!(n.healthz().is_none() && !n.prefix.exists() && !n.state.exists(), "{} left behind", n.name);
    }
    assert!(!agg_state.exists());
    println!("aggregator test done in {:.1} s", t0.elapsed().as_secs_f64());
}
