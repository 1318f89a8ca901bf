//! A real etcd cluster (Debian's `etcd-server`) of a few members on free
//! loopback ports, each member a child process with its data in a
//! temporary directory; ended by PID when dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::agent::free_port;

pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    child: Option<Child>,
    log: PathBuf,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
    initial: String,
    /// With TLS on the client URLs: the CA and the certificates.
    pub tls: Option<EtcdTls>,
}

/// TLS of a cluster's client URLs: members demand a client certificate
/// signed by the test CA (`--client-cert-auth`).
pub struct EtcdTls {
    pub ca: std::path::PathBuf,
    server: crate::tls::Issued,
    /// A client certificate the members accept.
    pub client: crate::tls::Issued,
}

impl EtcdCluster {
    /// Starts `n` members and waits until they have a leader.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, false)
    }

    /// As [`EtcdCluster::start`], with TLS on the client URLs (`https://`)
    /// and client certificates required.
    pub fn start_tls(n: usize) -> Self {
        Self::start_with(n, true)
    }

    fn start_with(n: usize, tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls = tls.then(|| {
            let ca = crate::tls::TestCa::new(dir.path());
            let server = ca.issue("etcd-server", &["127.0.0.1", "localhost"], false);
            let client = ca.issue("etcd-client", &["scaler-aggregator"], false);
            EtcdTls { ca: ca.pem.clone(), server, client }
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                child: None,
                log: dir.path().join(format!("m{i}.log")),
            })
            .collect();
        let initial = members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let mut me = Self { members, dir, initial, tls };
        for i in 0..n {
            me.spawn(i, "new");
        }
        me.wait_leader();
        me
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &self.initial, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", "scaler-test"])
            .args(self.tls.iter().flat_map(|t| {
                [
                    "--cert-file".into(),
                    t.server.cert.clone().into_os_string(),
                    "--key-file".into(),
                    t.server.key.clone().into_os_string(),
                    "--trusted-ca-file".into(),
                    t.ca.clone().into_os_string(),
                    "--client-cert-auth".into(),
                ]
            }))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd (cargo xtask setup installs etcd-server): {e}"));
        self.members[i].child = Some(child);
    }

    /// The members' client URLs, as `[store] etcd` takes them (TOML).
    pub fn endpoints_toml(&self) -> String {
        let list: Vec<String> = self.members.iter().map(|m| format!("\"{}\"", m.client_url)).collect();
        format!("[{}]", list.join(", "))
    }

    /// The `[store]` keys that reach the members: `etcd`, and with TLS
    /// the CA and the client certificate (TOML lines).
    pub fn store_toml(&self) -> String {
        let mut s = format!("etcd = {}\n", self.endpoints_toml());
        if let Some(t) = &self.tls {
            s += &format!(
                "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                t.ca.display(),
                t.client.cert.display(),
                t.client.key.display()
            );
        }
        s
    }

    fn status(&self, i: usize) -> Option<Value> {
        let mut b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2));
        if let Some(t) = &self.tls {
            let identity = Some((t.client.cert.as_path(), t.client.key.as_path()));
            b = b.use_preconfigured_tls(scaler_api::tls::client_config(Some(&t.ca), identity).ok()?);
        }
        let http = b.build().ok()?;
        let r = http.post(format!("{}/v3/maintenance/status", self.members[i].client_url)).json(&json!({})).send();
        r.ok().filter(|r| r.status().is_success())?.json().ok()
    }

    /// Puts `key` = `value` through the first running member.
    pub fn put(&self, key: &str, value: &str) {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let i = (0..self.members.len()).find(|&i| self.members[i].child.is_some()).expect("a running member");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let r = http
            .post(format!("{}/v3/kv/put", self.members[i].client_url))
            .json(&json!({"key": b64(key), "value": b64(value)}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "etcd put {key}: {}", r.status());
    }

    /// The index of the leader, as the running members see it.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).filter(|&i| self.members[i].child.is_some()).find_map(|i| {
            let v = self.status(i)?;
            let leader = v["leader"].as_str()?.to_owned();
            (v["header"]["member_id"].as_str()? == leader).then_some(i)
        })
    }

    /// Waits (20 s at most) until a running member is the leader.
    pub fn wait_leader(&self) -> usize {
        crate::wait_for(Duration::from_secs(20), || self.leader())
            .unwrap_or_else(|| panic!("etcd elected no leader: {}", self.logs()))
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            crate::kill_pid(c.id());
            let _ = c.wait();
        }
    }

    /// Starts member `i` again with its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {}\n{}", m.name, scaler_testkit::read_log(&m.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(mut c) = self.members[i].child.take() {
                scaler_testkit::stop(&mut c, Duration::from_secs(5));
            }
        }
    }
}
