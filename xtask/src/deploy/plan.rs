//! What deploy and undeploy do on one host, as data: a list of named steps,
//! each a shell script run over SSH (with what it reads on stdin), a
//! `/healthz` poll, or a call to the aggregator. `--dry-run` prints exactly
//! these steps; the real run executes them. The scripts and the layout on
//! the host are in [`super::scripts`].

use std::{path::PathBuf, time::Duration};

use super::{
    hosts::{Install, Role, tls_paths},
    http::{Endpoint, Via},
    scripts::{CONNECT, Files, SUPERVISOR},
};

/// How the service is kept running on a host (decided at `connect` when
/// the host's `service` is `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Systemd,
    Supervisor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    None,
    File(PathBuf),
    /// `what` names it in `--dry-run`, which shows `text` as `shown` says.
    Text {
        what: &'static str,
        text: String,
        shown: Shown,
    },
}

/// How `--dry-run` shows a text payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Full,
    /// Full, with the value of any `token` key replaced.
    Redacted,
    /// Name and size only.
    Summary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A POSIX shell script, run as root on the host; skipped (as
    /// `unchanged`) when `unless` prints `same` (a binary already there).
    Remote { script: String, input: Payload, unless: Option<String> },
    /// Polls `GET /healthz` until it answers 200 with `"status": "ok"`
    /// (and `"host": expect_host` when set). Between polls, `crash_script`
    /// prints `crashed` once the service has died since `start`; then, or on
    /// timeout, `log_script`'s output goes into the error.
    Health {
        endpoint: Endpoint,
        expect_host: Option<String>,
        timeout: Duration,
        crash_script: String,
        log_script: String,
    },
    /// A request to the aggregator; `ok_statuses` besides 2xx count as done
    /// (404 when unregistering a host it does not know). A failed call that
    /// is not `required` is a warning, not a failure.
    Call {
        endpoint: Endpoint,
        method: &'static str,
        path: String,
        body: Option<String>,
        token: Option<String>,
        ok_statuses: &'static [u16],
        required: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub action: Action,
}

/// What a deploy needs beyond the host.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub binary: PathBuf,
    pub binary_len: u64,
    /// Its SHA-256 (hex), when known: the copy is skipped where it matches.
    pub binary_sha256: Option<String>,
    /// Restart even when nothing changed.
    pub restart: bool,
    pub health_timeout: Duration,
    /// The aggregator to register agents with, and its token.
    pub aggregator: Option<(Endpoint, Option<String>)>,
}

fn remote(name: &'static str, script: String, input: Payload) -> Step {
    Step { name, action: Action::Remote { script, input, unless: None } }
}

/// First step everywhere: proves SSH and root work, reports the machine
/// and whether systemd runs it.
pub fn connect() -> Step {
    remote("connect", CONNECT.into(), Payload::None)
}

/// Where `/healthz` of `i` answers, seen from this machine: a loopback
/// listener through SSH, an unspecified one (`0.0.0.0`) on the host's
/// address, anything else on that address.
pub fn endpoint(i: &Install) -> Endpoint {
    let l = i.listen;
    let tls = i.tls.is_some();
    if l.ip().is_loopback() {
        Endpoint { via: Via::Tunnel { ssh: Box::new(i.ssh.clone()), target: l.to_string() }, tls }
    } else if l.ip().is_unspecified() {
        Endpoint::direct(i.ssh.address.clone(), l.port(), tls)
    } else {
        Endpoint::direct(l.ip().to_string(), l.port(), tls)
    }
}

/// The URL the aggregator should use for agent `i`, or why it has none.
pub fn agent_url(i: &Install, aggregator: &Install) -> Result<String, String> {
    let l = i.listen;
    if l.ip().is_loopback() && i.ssh.address != aggregator.ssh.address {
        return Err(format!(
            "host {}: the agent listens on {l} (loopback) so the aggregator on {} cannot reach it; \
             set its config agent.listen (and agent.token)",
            i.name, aggregator.name
        ));
    }
    Ok(url_of(i))
}

/// `http(s)://` + where the agent listens, as seen from other hosts.
pub fn url_of(i: &Install) -> String {
    let ep = endpoint(i);
    match &ep.via {
        Via::Direct { .. } => ep.show(""),
        Via::Tunnel { target, .. } => format!("{}://{target}", if ep.tls { "https" } else { "http" }),
    }
}

/// Installs the host's certificate, its key (0600) and the fleet CA
/// (`[tls]`); a changed file restarts the service at `start`.
fn tls_steps(i: &Install, f: &Files) -> Vec<Step> {
    let Some(t) = &i.tls else { return Vec::new() };
    let [cert, key, ca] = tls_paths(&i.prefix, i.role);
    // `--dry-run` issues nothing: the steps show where the files go.
    let (ca_pem, cert_pem, key_pem) = match &t.issued {
        Some((ca, c)) => (ca.clone(), c.cert.clone(), c.key.clone()),
        None => Default::default(),
    };
    let copy = |name, dest: &str, text: String, mode, what| Step {
        name,
        action: Action::Remote {
            // Not readable by others even before its chmod.
            script: format!("umask 077\n{}", f.upload(dest, text.len() as u64, mode)),
            input: Payload::Text { what, text, shown: Shown::Summary },
            unless: None,
        },
    };
    vec![
        copy("copy CA certificate", &ca, ca_pem, "644", "the fleet CA's certificate"),
        copy("copy certificate", &cert, cert_pem, "644", "the host's certificate"),
        copy("copy key", &key, key_pem, "600", "the host's private key"),
    ]
}

/// Every step after `connect` for deploying `i` in `mode`.
pub fn deploy(i: &Install, mode: Mode, o: &DeployOptions) -> Vec<Step> {
    let f = Files::new(i);
    let mut steps = vec![
        remote("prepare directories", f.prepare(), Payload::None),
        Step {
            name: "copy binary",
            action: Action::Remote {
                script: f.upload(&f.bin(), o.binary_len, "755"),
                input: Payload::File(o.binary.clone()),
                unless: o.binary_sha256.as_deref().map(|h| f.same_sha256(&f.bin(), h)),
            },
        },
        remote(
            "copy config",
            f.upload(&f.config(), i.config.len() as u64, "600"),
            Payload::Text { what: "config", text: i.config.clone(), shown: Shown::Redacted },
        ),
    ];
    steps.extend(tls_steps(i, &f));
    let (crash_script, log_script) = match mode {
        Mode::Systemd => {
            let unit = f.unit_text();
            steps.push(remote(
                "install service",
                f.install_unit(unit.len() as u64),
                Payload::Text { what: "systemd unit", text: unit, shown: Shown::Full },
            ));
            steps.push(remote("start", f.start_unit(o.restart), Payload::None));
            (f.unit_crashed(), f.unit_log())
        }
        Mode::Supervisor => {
            steps.push(remote(
                "install service",
                f.install_supervisor(),
                Payload::Text {
                    what: "supervisor script (xtask/src/deploy/supervise.sh)",
                    text: SUPERVISOR.into(),
                    shown: Shown::Summary,
                },
            ));
            steps.push(remote("start", f.start_supervisor(o.restart), Payload::None));
            (f.supervisor_crashed(), f.supervisor_log())
        }
    };
    let expect_host = match i.role {
        Role::Agent => toml::from_str::<toml::Table>(&i.config)
            .ok()
            .and_then(|t| t.get("agent")?.get("hostname")?.as_str().map(str::to_owned)),
        Role::Aggregator => None,
    };
    steps.push(Step {
        name: "wait for /healthz",
        action: Action::Health {
            endpoint: endpoint(i),
            expect_host,
            timeout: o.health_timeout,
            crash_script,
            log_script,
        },
    });
    if let (Role::Agent, Some((ep, token))) = (i.role, &o.aggregator) {
        // Whether the aggregator can reach this URL was checked (`agent_url`)
        // when the hosts were read.
        let mut body = serde_json::json!({ "url": url_of(i) });
        if let Some(t) = &i.token {
            body["token"] = t.clone().into();
        }
        steps.push(Step {
            name: "register with the aggregator",
            action: Action::Call {
                endpoint: ep.clone(),
                method: "PUT",
                path: format!("/v1/hosts/{}", i.name),
                body: Some(body.to_string()),
                token: token.clone(),
                ok_statuses: &[],
                required: true,
            },
        });
    }
    steps
}

/// Every step after `connect` for removing `i` (whichever way it was kept
/// running); `purge` also removes its state directory. With an aggregator,
/// an agent is unregistered first.
pub fn undeploy(i: &Install, purge: bool, aggregator: Option<&(Endpoint, Option<String>)>) -> Vec<Step> {
    let f = Files::new(i);
    let mut steps = Vec::new();
    if let (Role::Agent, Some((ep, token))) = (i.role, aggregator) {
        steps.push(Step {
            name: "unregister from the aggregator",
            action: Action::Call {
                endpoint: ep.clone(),
                method: "DELETE",
                path: format!("/v1/hosts/{}", i.name),
                body: None,
                token: token.clone(),
                ok_statuses: &[404],
                // Removing the agent matters more than the aggregator's list.
                required: false,
            },
        });
    }
    steps.push(remote("stop service", f.stop_all(), Payload::None));
    steps.push(remote("remove files", f.remove(), Payload::None));
    if purge {
        steps.push(remote("purge state", f.purge(), Payload::None));
    }
    steps
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::deploy::{
        hosts::{Entry, Fallback, resolve},
        ssh::Ssh,
    };

    fn install(config: &str) -> Install {
        let e: Entry = toml::from_str(&format!(
            "name = \"n1\"\naddress = \"10.0.0.2\"\nprefix = \"/srv/p1\"\nstate_dir = \"/srv/s1\"\n{config}"
        ))
        .unwrap();
        resolve(&e, &Entry::default(), &Fallback::for_tests(), Role::Agent).unwrap()
    }

    fn opts() -> DeployOptions {
        DeployOptions {
            binary: "/b/scaler".into(),
            binary_len: 1234,
            binary_sha256: Some("ab12".into()),
            restart: false,
            health_timeout: Duration::from_secs(60),
            aggregator: None,
        }
    }

    fn script(s: &Step) -> &str {
        match &s.action {
            Action::Remote { script, .. } => script,
            a => panic!("{}: not a script: {a:?}", s.name),
        }
    }

    #[test]
    fn steps_are_named_in_order_and_files_sit_under_the_prefix() {
        let i = install("");
        for mode in [Mode::Systemd, Mode::Supervisor] {
            let s = deploy(&i, mode, &opts());
            let names: Vec<_> = s.iter().map(|s| s.name).collect();
            assert_eq!(
                names,
                ["prepare directories", "copy binary", "copy config", "install service", "start", "wait for /healthz"]
            );
            assert!(script(&s[1]).contains("d='/srv/p1/bin/scaler'") && script(&s[1]).contains("-eq 1234"));
            assert!(
                matches!(&s[1].action, Action::Remote { input: Payload::File(p), .. } if p.to_str() == Some("/b/scaler"))
            );
            assert!(script(&s[0]).contains("chmod 700 '/srv/s1'"));
            let Action::Remote { unless: Some(unless), .. } = &s[1].action else { panic!() };
            assert!(unless.contains("= ab12 ]"), "{unless}");
        }
        let unit = Files::new(&i).unit_text();
        assert!(unit.contains("ExecStart=/srv/p1/bin/scaler agent --config /srv/p1/etc/agent.toml\n"), "{unit}");
    }

    #[test]
    fn loopback_agents_are_checked_through_ssh_and_public_ones_directly() {
        let i = install("");
        let s = deploy(&i, Mode::Supervisor, &opts());
        let Action::Health { endpoint: ep, expect_host, .. } = &s[5].action else { panic!() };
        assert!(matches!(&ep.via, Via::Tunnel { target, .. } if target == "127.0.0.1:8470"));
        assert_eq!(expect_host.as_deref(), Some("n1"));
        let i = install("[config.agent]\nlisten = \"0.0.0.0:9000\"\ntoken = \"t\"\ninsecure = true\n");
        assert_eq!(endpoint(&i), Endpoint::direct("10.0.0.2", 9000, false));
    }

    #[test]
    fn agents_are_registered_and_unregistered_with_a_reachable_url() {
        let agg = install("");
        let mut other = install("");
        other.ssh = Ssh { address: "10.0.0.9".into(), ..other.ssh.clone() };
        assert_eq!(agent_url(&agg, &agg).unwrap(), "http://127.0.0.1:8470");
        assert!(agent_url(&agg, &other).unwrap_err().contains("loopback"));
        let public = install("[config.agent]\nlisten = \"10.0.0.2:8470\"\ntoken = \"t\"\ninsecure = true\n");
        assert_eq!(agent_url(&public, &other).unwrap(), "http://10.0.0.2:8470");
        let ep = (Endpoint::direct("10.0.0.9", 8471, false), Some("a".to_owned()));
        let o = DeployOptions { aggregator: Some(ep.clone()), ..opts() };
        let s = deploy(&public, Mode::Systemd, &o);
        let Action::Call { method, path, body, token, required: true, .. } = &s.last().unwrap().action else {
            panic!()
        };
        assert_eq!((*method, path.as_str(), token.as_deref()), ("PUT", "/v1/hosts/n1", Some("a")));
        let v: serde_json::Value = serde_json::from_str(body.as_deref().unwrap()).unwrap();
        assert_eq!((v["url"].as_str(), v["token"].as_str()), (Some("http://10.0.0.2:8470"), Some("t")));
        let s = undeploy(&public, false, Some(&ep));
        let Action::Call { method: "DELETE", path, ok_statuses: [404], required: false, .. } = &s[0].action else {
            panic!("{:?}", s[0])
        };
        assert_eq!(path, "/v1/hosts/n1");
    }

    #[test]
    fn with_tls_hosts_get_their_certificate_and_are_reached_over_https() {
        let tls = crate::deploy::pki::Settings {
            pki: "/p".into(),
            ca: None,
            client_auth: crate::deploy::pki::ClientAuth::Mutating,
            days: 90,
        };
        let fb = Fallback { tls: Some(tls), ..Fallback::for_tests() };
        let e: Entry = toml::from_str(
            "name = \"n1\"\naddress = \"10.0.0.2\"\nprefix = \"/srv/p1\"\n[config.agent]\nlisten = \"0.0.0.0:8470\"\ntoken = \"t\"\n",
        )
        .unwrap();
        // Off loopback with no `insecure`: TLS is what makes it acceptable.
        let i = resolve(&e, &Entry::default(), &fb, Role::Agent).unwrap();
        let cfg: toml::Table = toml::from_str(&i.config).unwrap();
        assert_eq!(cfg["agent"]["tls_cert"].as_str(), Some("/srv/p1/etc/agent-cert.pem"));
        assert_eq!(cfg["agent"]["tls_key"].as_str(), Some("/srv/p1/etc/agent-key.pem"));
        assert_eq!(cfg["agent"]["tls_client_ca"].as_str(), Some("/srv/p1/etc/ca.pem"));
        assert_eq!(cfg["agent"]["tls_client_auth"].as_str(), Some("mutating"));
        let t = i.tls.as_ref().unwrap();
        assert_eq!((t.file.as_str(), t.names[0].as_str()), ("n1-agent", "10.0.0.2"));
        assert_eq!(agent_url(&i, &i).unwrap(), "https://10.0.0.2:8470");
        assert!(endpoint(&i).tls);
        let s = deploy(&i, Mode::Systemd, &opts());
        let names: Vec<_> = s.iter().map(|s| s.name).collect();
        assert_eq!(&names[3..6], ["copy CA certificate", "copy certificate", "copy key"]);
        assert!(script(&s[5]).starts_with("umask 077\n") && script(&s[5]).contains("chmod 600"), "{}", script(&s[5]));
        assert!(script(&s[5]).contains("d='/srv/p1/etc/agent-key.pem'"));

        // The aggregator trusts agents by the same CA and shows its own
        // certificate to them.
        let a = resolve(&e, &Entry::default(), &fb, Role::Aggregator).unwrap();
        let cfg: toml::Table = toml::from_str(&a.config).unwrap();
        assert_eq!(cfg["aggregator"]["agents_ca"].as_str(), Some("/srv/p1/etc/ca.pem"));
        assert_eq!(cfg["aggregator"]["agents_client_cert"].as_str(), Some("/srv/p1/etc/aggregator-cert.pem"));

        // TLS settings of the operator's own conflict with deploy's.
        let mut mine = e.clone();
        mine.config["agent"].as_table_mut().unwrap().insert("tls_cert".into(), "/x.pem".into());
        let err = format!("{:#}", resolve(&mine, &Entry::default(), &fb, Role::Agent).unwrap_err());
        assert!(err.contains("agent.tls_cert is set by deploy"), "{err}");
        let err = format!("{:#}", resolve(&mine, &Entry::default(), &Fallback::for_tests(), Role::Agent).unwrap_err());
        assert!(err.contains("[tls]") && err.contains("ca_cert"), "{err}");
    }

    #[test]
    fn undeploy_removes_only_its_own_files() {
        let s = undeploy(&install(""), true, None);
        let names: Vec<_> = s.iter().map(|s| s.name).collect();
        assert_eq!(names, ["stop service", "remove files", "purge state"]);
        assert!(!script(&s[1]).contains("rm -rf"), "{}", script(&s[1]));
        assert!(script(&s[1]).contains("[ -e '/srv/p1/etc/aggregator.toml' ] || rm -f '/srv/p1/bin/scaler'"));
        assert!(script(&s[1]).contains("'/srv/p1/etc/agent-key.pem'"), "{}", script(&s[1]));
        assert_eq!(script(&s[2]), "rm -rf -- '/srv/s1'\n");
        assert_eq!(undeploy(&install(""), false, None).len(), 2);
    }

    /// The scripts are valid `sh` (parsed, not run).
    #[test]
    fn scripts_parse() {
        let i = install("");
        let mut all = vec![connect()];
        all.extend(deploy(&i, Mode::Systemd, &opts()));
        all.extend(deploy(&i, Mode::Supervisor, &opts()));
        all.extend(undeploy(&i, true, None));
        let f = Files::new(&i);
        let extra = [SUPERVISOR.to_owned(), f.unit_crashed(), f.supervisor_crashed(), f.unit_log(), f.supervisor_log()];
        for (name, script) in
            all.iter().map(|s| (s.name, script_or_empty(s))).chain(extra.iter().map(|s| ("extra", s.as_str())))
        {
            let out = std::process::Command::new("sh").args(["-n", "-c", script]).output().unwrap();
            assert!(out.status.success(), "{name}: {}\n{script}", String::from_utf8_lossy(&out.stderr));
        }
    }

    fn script_or_empty(s: &Step) -> &str {
        match &s.action {
            Action::Remote { script, .. } => script,
            _ => "",
        }
    }
}
