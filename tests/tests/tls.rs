//! Issue 18's checks on loopback: the agent and the aggregator serve TLS
//! with a certificate from a CA of the test's own; the CLI manages a
//! container over TLS when told the CA (`SCALER_CA`); the aggregator
//! gathers an `https://` agent through `agents_ca`; a client without the
//! CA's trust, a server certificate for another name and an expired one
//! are refused with a clear error; plain HTTP to a TLS port gets a clear
//! answer, not a hang; a server off loopback without TLS refuses to start.
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    Agent, TestCgroup, require_root,
    tls::{Issued, TestCa},
    wait_for,
};

/// `scaler ARGS` with `SCALER_CA` set to `ca` (if any): (success, stdout, stderr).
fn scaler(ca: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    scaler_as(ca, None, args)
}

/// [`scaler`] presenting a client certificate (`SCALER_CERT`, `SCALER_KEY`).
fn scaler_as(ca: Option<&Path>, id: Option<&Issued>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(tests::agent::scaler_bin());
    cmd.args(args).env_remove("SCALER_CA").env_remove("SCALER_CERT").env_remove("SCALER_KEY");
    if let Some(ca) = ca {
        cmd.env("SCALER_CA", ca);
    }
    if let Some(id) = id {
        cmd.env("SCALER_CERT", &id.cert).env("SCALER_KEY", &id.key);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A `scaler aggregator` of the test's, killed on drop.
struct AggProcess {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl AggProcess {
    fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = tests::agent::free_port();
        let cfg = dir.path().join("aggregator.toml");
        let config = format!(
            "[aggregator]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\npoll_ms = 500\ntimeout_ms = 400\n{extra}",
            dir.path().join("state").display()
        );
        let config = config.replacen("[aggregator]\n", "", 1);
        std::fs::write(&cfg, format!("[aggregator]\n{config}")).unwrap();
        let log = dir.path().join("aggregator.log");
        let child = Command::new(tests::agent::scaler_bin())
            .args(["aggregator", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let me = Self { child, port, log, _dir: dir };
        assert!(tests::wait_listening(port), "aggregator did not listen: {}", me.log());
        me
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AggProcess {
    fn drop(&mut self) {
        tests::kill_pid(self.child.id());
        let _ = self.child.wait();
    }
}

#[test]
fn agent_and_aggregator_over_tls_and_what_is_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let good = ca.issue("agent", &["127.0.0.1", "localhost"], false);
    let operator = ca.issue("operator", &["operator"], false);
    let mut cg = TestCgroup::new();
    let path = cg.child("t1");
    // Changes need a client certificate from the CA; reads do not.
    let agent = Agent::start(&format!(
        "[agent]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n[discovery]\nwatch = [\"scaler-test-*/*\"]\n",
        good.cert.display(),
        good.key.display(),
        ca.pem.display()
    ));
    let addr = agent.url().trim_start_matches("http://").to_owned();
    let https = format!("https://{addr}");

    // Plain HTTP to the TLS port: a clear answer at once.
    let t = std::time::Instant::now();
    let (status, body) = scaler_testkit::http::request(&addr, "GET", "/v1/stats", None).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("this port speaks HTTPS"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(5), "answered, not left hanging");

    // The CLI with the CA: reads and manages a container over TLS.
    let seen = wait_for(Duration::from_secs(15), || {
        let (ok, out, _) = scaler(Some(&ca.pem), &["stats", "--agent", &https, "--json"]);
        (ok && out.contains("\"t1\"")).then_some(())
    });
    assert!(seen.is_some(), "t1 not seen over TLS: {}", agent.log());
    let subscribe = ["subscribe", "t1", "--cgroup", &path, "--cpu", "100m:1", "--agent", &https, "--json"];
    let (ok, _, err) = scaler(Some(&ca.pem), &subscribe);
    assert!(!ok && err.contains("needs a client certificate signed by the CA in agent.tls_client_ca"), "{err}");
    let (ok, out, err) = scaler_as(Some(&ca.pem), Some(&operator), &subscribe);
    assert!(ok, "subscribe over TLS with a client certificate: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "t1", "{v}");
    let (ok, out, err) = scaler(Some(&ca.pem), &["containers", "--agent", &https, "--json"]);
    assert!(ok && out.contains("\"t1\""), "{err}");

    // Without the CA's trust: refused, saying why.
    let (ok, _, err) = scaler(None, &["stats", "--agent", &https]);
    assert!(!ok, "trusted without the CA");
    assert!(err.contains("UnknownIssuer") || err.to_lowercase().contains("certificate"), "{err}");
    println!("without the CA: {}", err.trim());

    // The aggregator gathers the https agent through agents_ca...
    let agg = AggProcess::start(&format!(
        "agents_ca = \"{}\"\n[[hosts]]\nname = \"n1\"\nurl = \"{https}\"\n",
        ca.pem.display()
    ));
    let base = format!("127.0.0.1:{}", agg.port);
    let ok = wait_for(Duration::from_secs(10), || {
        let (s, b) = scaler_testkit::http::request(&base, "GET", "/v1/hosts/n1", None).ok()?;
        let v: Value = serde_json::from_str(&b).ok()?;
        (s == 200 && v["status"] == "ok").then_some(v)
    });
    assert!(ok.is_some(), "aggregator did not gather the https agent: {}", agg.log());
    // ...and not without it.
    let blind = AggProcess::start(&format!("[[hosts]]\nname = \"n1\"\nurl = \"{https}\"\n"));
    let base = format!("127.0.0.1:{}", blind.port);
    let stale = wait_for(Duration::from_secs(10), || {
        let (_, b) = scaler_testkit::http::request(&base, "GET", "/v1/hosts/n1", None).ok()?;
        let v: Value = serde_json::from_str(&b).ok()?;
        (v["status"] != "ok" && !v["error"].is_null()).then_some(v)
    })
    .unwrap_or_else(|| panic!("an untrusted agent was gathered: {}", blind.log()));
    println!("aggregator without agents_ca: {}", stale["error"]);
    drop(agent);
    cg.kill_all();

    // A server that wants a client certificate on every connection.
    let agg_cert = ca.issue("agg", &["127.0.0.1"], false);
    let strict = AggProcess::start(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\ntls_client_auth = \"all\"\n",
        agg_cert.cert.display(),
        agg_cert.key.display(),
        ca.pem.display()
    ));
    let url = format!("https://127.0.0.1:{}", strict.port);
    let (ok, _, err) = scaler(Some(&ca.pem), &["app", "list", "--aggregator", &url]);
    assert!(!ok && err.contains("CertificateRequired"), "read without a client certificate: {err}");
    println!("no client certificate, tls_client_auth = all: {}", err.trim());
    let (ok, _, err) = scaler_as(Some(&ca.pem), Some(&operator), &["app", "list", "--aggregator", &url]);
    assert!(ok, "with a client certificate: {err}");
    drop(strict);

    // Aggregators serving certificates a client must refuse.
    for (file, names, expired, why) in [
        ("wrong-name", &["other.example"][..], false, "not valid for name"),
        ("expired", &["127.0.0.1"][..], true, "xpired"),
    ] {
        let c = ca.issue(file, names, expired);
        let a = AggProcess::start(&format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", c.cert.display(), c.key.display()));
        let url = format!("https://127.0.0.1:{}", a.port);
        let (ok, _, err) = scaler(Some(&ca.pem), &["app", "list", "--aggregator", &url]);
        assert!(!ok, "{file}: accepted");
        assert!(err.contains(why), "{file}: {err}");
        println!("{file}: {}", err.trim());
    }
}

#[test]
fn plain_http_off_loopback_is_refused_unless_said() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "[agent]\nlisten = \"0.0.0.0:0\"\ntoken = \"t0ken\"\n").unwrap();
    let (ok, _, err) = scaler(None, &["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("agent.insecure") && err.contains("agent.tls_cert"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    std::fs::write(&cfg, "[agent]\nlisten = \"0.0.0.0:0\"\ntoken = \"t0ken\"\ninsecure = true\n").unwrap();
    let (ok, _, err) = scaler(None, &["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{err}");
    let agg = dir.path().join("agg.toml");
    std::fs::write(&agg, "[aggregator]\nlisten = \"0.0.0.0:0\"\ntoken = \"t0ken\"\n").unwrap();
    let (ok, _, err) = scaler(None, &["check-config", "--aggregator", "--config", agg.to_str().unwrap()]);
    assert!(!ok && err.contains("aggregator.insecure"), "{err}");
}
