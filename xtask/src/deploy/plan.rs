//! What deploy and undeploy do on one host, as data: a list of named steps,
//! each a shell script run over SSH (with what it reads on stdin), a
//! `/healthz` poll, or a registration with the aggregator. `--dry-run`
//! prints exactly these steps; the real run executes them.
//!
//! On the host (PREFIX and STATE_DIR per host, so hosts may share a file
//! system):
//!
//! ```text
//! PREFIX/bin/scaler                  the binary (replaced by rename: atomic)
//! PREFIX/bin/scaler-supervise        supervisor script (hosts without systemd)
//! PREFIX/etc/ROLE.toml               config (0600: it holds the token)
//! PREFIX/run/ROLE.pid, ROLE-supervisor.pid, ROLE.changed
//! PREFIX/log/ROLE.log                output (supervisor; systemd: the journal)
//! STATE_DIR/                         the agent's durable state (0700)
//! /etc/systemd/system/UNIT.service   (systemd hosts)
//! ```

use std::{path::PathBuf, time::Duration};

use super::{
    hosts::{Install, Role},
    http::Endpoint,
    ssh::quote,
};

pub const SUPERVISOR: &str = include_str!("supervise.sh");

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
    /// A POSIX shell script, run as root on the host.
    Remote { script: String, input: Payload },
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
    /// `PUT path` on the aggregator with a JSON body.
    Register { endpoint: Endpoint, path: String, body: String, token: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub action: Action,
}

/// What a deploy needs beyond the host.
pub struct DeployOptions {
    pub binary: PathBuf,
    pub binary_len: u64,
    /// Restart even when nothing changed.
    pub restart: bool,
    pub health_timeout: Duration,
    /// The aggregator to register with, and its token.
    pub aggregator: Option<(Endpoint, Option<String>)>,
}

fn remote(name: &'static str, script: String, input: Payload) -> Step {
    Step { name, action: Action::Remote { script, input } }
}

/// First step everywhere: proves SSH and root work, reports the machine
/// and whether systemd runs it.
pub fn connect() -> Step {
    remote(
        "connect",
        "uname -m\n\
         if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo systemd; else echo supervisor; fi\n"
            .into(),
        Payload::None,
    )
}

/// Shell helpers shared by the scripts: `ours PID TEXT` (PID's command
/// line contains TEXT), `gone PID` (exited or a zombie), `stop PIDFILE
/// TEXT` (SIGTERM, SIGKILL after 20 s, only if the PID is ours).
pub const HELPERS: &str = r#"ours() { [ -n "$1" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"; }
gone() { s=$(sed 's/^.*) //; s/ .*//' "/proc/$1/stat" 2>/dev/null); [ -z "$s" ] || [ "$s" = Z ]; }
stop() {
  p=$(cat "$1" 2>/dev/null) || return 0
  ours "$p" "$2" || return 0
  kill -TERM "$p" 2>/dev/null || true; i=0
  while ! gone "$p" && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
  gone "$p" || kill -KILL "$p" 2>/dev/null || true
}
"#;

struct Paths {
    p: String,
    r: &'static str,
}

impl Paths {
    fn new(i: &Install) -> Self {
        Self { p: i.prefix.trim_end_matches('/').to_owned(), r: i.role.name() }
    }
    fn bin(&self) -> String {
        format!("{}/bin/scaler", self.p)
    }
    fn supervise(&self) -> String {
        format!("{}/bin/scaler-supervise", self.p)
    }
    fn config(&self) -> String {
        format!("{}/etc/{}.toml", self.p, self.r)
    }
    fn run(&self, file: &str) -> String {
        format!("{}/run/{}{}", self.p, self.r, file)
    }
    fn log(&self) -> String {
        format!("{}/log/{}.log", self.p, self.r)
    }
    /// What `ours` looks for in the supervisor's and scaler's command lines.
    fn supervisor_match(&self) -> String {
        format!("scaler-supervise {} {}", self.r, self.p)
    }
    fn scaler_match(&self) -> String {
        format!("{} {}", self.bin(), self.r)
    }
    fn unit_file(i: &Install) -> String {
        format!("/etc/systemd/system/{}.service", i.unit)
    }
}

/// Receives stdin into a temporary file next to `dest`, checks its size,
/// and renames it over `dest` (atomic) unless identical. Prints `changed`
/// or `unchanged` and sets `$changed` to 1 or 0; leaves `marker` when
/// changed (the start step restarts the service then).
fn upload(dest: &str, len: u64, mode: &str, marker: &str) -> String {
    format!(
        "set -e\n\
         d={d}\n\
         t=\"$(dirname \"$d\")/.$(basename \"$d\").upload.$$\"\n\
         trap 'rm -f \"$t\"' EXIT\n\
         cat >\"$t\"\n\
         n=$(wc -c <\"$t\")\n\
         [ \"$n\" -eq {len} ] || {{ echo \"received $n of {len} bytes\" >&2; exit 1; }}\n\
         chmod {mode} \"$t\"\n\
         if [ -f \"$d\" ] && command -v cmp >/dev/null && cmp -s \"$t\" \"$d\"; then\n\
         \x20 changed=0; echo unchanged\n\
         else\n\
         \x20 mv -f \"$t\" \"$d\"; touch {marker}; changed=1; echo changed\n\
         fi\n",
        d = quote(dest),
        marker = quote(marker),
    )
}

/// The systemd unit for `i`.
pub fn unit(i: &Install, extra_args: &str) -> String {
    let p = Paths::new(i);
    format!(
        "# Installed by `cargo xtask deploy`; removed by `cargo xtask undeploy`.\n\
         [Unit]\n\
         Description=scaler {role} (container limits that follow usage)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={bin} {role} --config {config}{extra_args}\n\
         Restart=always\n\
         RestartSec=1\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=20\n\
         LimitMEMLOCK=infinity\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        role = i.role.name(),
        bin = p.bin(),
        config = p.config(),
    )
}

/// `--listen ADDR` for the aggregator (its listen address lives in the
/// hosts file, not in its free-form config).
fn extra_args(i: &Install) -> String {
    match i.role {
        Role::Agent => String::new(),
        Role::Aggregator => format!(" --listen {}", i.listen),
    }
}

/// Where `/healthz` of `i` answers, seen from this machine: a loopback
/// listener through SSH, an unspecified one (`0.0.0.0`) on the host's
/// address, anything else on that address.
pub fn endpoint(i: &Install) -> Endpoint {
    let l = i.listen;
    if l.ip().is_loopback() {
        Endpoint::Tunnel { ssh: Box::new(i.ssh.clone()), target: l.to_string() }
    } else if l.ip().is_unspecified() {
        Endpoint::Direct { host: i.ssh.address.clone(), port: l.port() }
    } else {
        Endpoint::Direct { host: l.ip().to_string(), port: l.port() }
    }
}

/// The URL the aggregator should use for agent `i`, or why it has none.
pub fn agent_url(i: &Install, aggregator: &Install) -> Result<String, String> {
    let l = i.listen;
    if l.ip().is_loopback() {
        if i.ssh.address == aggregator.ssh.address {
            return Ok(format!("http://{l}"));
        }
        return Err(format!(
            "host {}: the agent listens on {l} (loopback) so the aggregator on {} cannot reach it; \
             set its config agent.listen (and agent.token)",
            i.name, aggregator.name
        ));
    }
    Ok(url_of(i))
}

/// Every step after `connect` for deploying `i` in `mode`.
pub fn deploy(i: &Install, mode: Mode, o: &DeployOptions) -> Vec<Step> {
    let p = Paths::new(i);
    let marker = p.run(".changed");
    let mut steps = vec![
        remote(
            "prepare directories",
            format!(
                "umask 022\nmkdir -p {b} {e} {r} {l}\nmkdir -p {s}\nchmod 700 {s}\n",
                b = quote(&format!("{}/bin", p.p)),
                e = quote(&format!("{}/etc", p.p)),
                r = quote(&format!("{}/run", p.p)),
                l = quote(&format!("{}/log", p.p)),
                s = quote(&i.state_dir),
            ),
            Payload::None,
        ),
        remote("copy binary", upload(&p.bin(), o.binary_len, "755", &marker), Payload::File(o.binary.clone())),
        remote(
            "copy config",
            upload(&p.config(), i.config.len() as u64, "600", &marker),
            Payload::Text { what: "config", text: i.config.clone(), shown: Shown::Redacted },
        ),
    ];
    let unit_text = unit(i, &extra_args(i));
    let (install, start, crash_script, log_script) = match mode {
        Mode::Systemd => (
            remote(
                "install service",
                format!(
                    "{HELPERS}{upload}systemctl daemon-reload\n\
                     # A supervisor left from an earlier deploy would hold the port.\n\
                     stop {sup} {supm}\nstop {pid} {scm}\nrm -f {sup} {pid} {sv}\n",
                    upload = upload(&Paths::unit_file(i), unit_text.len() as u64, "644", &marker),
                    sup = quote(&p.run("-supervisor.pid")),
                    supm = quote(&p.supervisor_match()),
                    pid = quote(&p.run(".pid")),
                    scm = quote(&p.scaler_match()),
                    sv = quote(&p.supervise()),
                ),
                Payload::Text { what: "systemd unit", text: unit_text.clone(), shown: Shown::Full },
            ),
            remote(
                "start",
                format!(
                    "set -e\nu={u}\nsystemctl enable --quiet \"$u\"\n\
                     if [ -e {m} ] || [ {force} = 1 ] || ! systemctl is-active --quiet \"$u\"; then\n\
                     \x20 systemctl restart \"$u\"; echo restarted\nelse\n\
                     \x20 echo running, unchanged\nfi\nrm -f {m}\n",
                    u = quote(&format!("{}.service", i.unit)),
                    m = quote(&marker),
                    force = u8::from(o.restart),
                ),
                Payload::None,
            ),
            format!(
                "u={}\ns=$(systemctl show -p ActiveState --value \"$u\")\n\
                 [ \"$s\" = failed ] || [ \"$(systemctl show -p SubState --value \"$u\")\" = auto-restart ] && echo crashed\n\
                 true\n",
                quote(&format!("{}.service", i.unit))
            ),
            format!("journalctl -u {} -n 15 --no-pager -o cat 2>&1", quote(&format!("{}.service", i.unit))),
        ),
        Mode::Supervisor => (
            remote(
                "install service",
                format!(
                    "{HELPERS}# A unit left from an earlier deploy would hold the port.\n\
                     f={uf}\n\
                     if [ -f \"$f\" ] && grep -qF -- {scm} \"$f\"; then\n\
                     \x20 systemctl disable --now --quiet {u} 2>/dev/null || true; rm -f \"$f\"\n\
                     \x20 systemctl daemon-reload 2>/dev/null || true\nfi\n\
                     {upload}\
                     # A new supervisor script needs a new supervisor.\n\
                     if [ \"$changed\" = 1 ]; then stop {sup} {supm}; fi\n",
                    uf = quote(&Paths::unit_file(i)),
                    scm = quote(&p.scaler_match()),
                    u = quote(&format!("{}.service", i.unit)),
                    upload = upload(&p.supervise(), SUPERVISOR.len() as u64, "755", &marker),
                    sup = quote(&p.run("-supervisor.pid")),
                    supm = quote(&p.supervisor_match()),
                ),
                Payload::Text {
                    what: "supervisor script (xtask/src/deploy/supervise.sh)",
                    text: SUPERVISOR.into(),
                    shown: Shown::Summary,
                },
            ),
            remote(
                "start",
                format!(
                    "{HELPERS}sup={sup}\npid={pid}\n\
                     echo \"$(date -u +%Y-%m-%dT%H:%M:%SZ) cargo xtask deploy: start\" >>{log}\n\
                     if s=$(cat \"$sup\" 2>/dev/null) && ours \"$s\" {supm}; then\n\
                     \x20 if [ -e {m} ] || [ {force} = 1 ]; then\n\
                     \x20   old=$(cat \"$pid\" 2>/dev/null || true); i=0\n\
                     \x20   # SIGHUP: the supervisor stops scaler and starts the new binary.\n\
                     \x20   while [ $i -lt 300 ]; do\n\
                     \x20     [ $((i % 20)) -eq 0 ] && kill -HUP \"$s\"\n\
                     \x20     new=$(cat \"$pid\" 2>/dev/null || true)\n\
                     \x20     [ -n \"$new\" ] && [ \"$new\" != \"$old\" ] && break\n\
                     \x20     sleep 0.1; i=$((i+1))\n\
                     \x20   done\n\
                     \x20   [ $i -lt 300 ] || {{ echo \"the supervisor did not restart scaler {r} within 30 s\" >&2; exit 1; }}\n\
                     \x20   echo restarted\n\
                     \x20 else echo running, unchanged; fi\n\
                     else\n\
                     \x20 rm -f \"$sup\" \"$pid\"\n\
                     \x20 cd /\n\
                     \x20 env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SCALER_LOG=info \\\n\
                     \x20   setsid -f /bin/sh {sv} {r} {prefix} </dev/null >>{log} 2>&1\n\
                     \x20 i=0; while [ ! -s \"$pid\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
                     \x20 [ -s \"$pid\" ] || {{ echo \"the supervisor did not start; see {log}\" >&2; exit 1; }}\n\
                     \x20 echo started\n\
                     fi\n\
                     rm -f {m}\n",
                    sup = quote(&p.run("-supervisor.pid")),
                    pid = quote(&p.run(".pid")),
                    supm = quote(&p.supervisor_match()),
                    m = quote(&marker),
                    force = u8::from(o.restart),
                    r = p.r,
                    sv = quote(&p.supervise()),
                    prefix = quote(&p.p),
                    log = quote(&p.log()),
                ),
                Payload::None,
            ),
            // Anything the supervisor noted after the start step's mark.
            format!(
                "awk '/cargo xtask deploy: /{{n=0}} /scaler-supervise: scaler {r} exited/{{n++}} END{{if(n) print \"crashed\"}}' {log}\n",
                r = p.r,
                log = quote(&p.log()),
            ),
            format!("tail -n 15 {} 2>&1", quote(&p.log())),
        ),
    };
    steps.push(install);
    steps.push(start);
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
            action: Action::Register {
                endpoint: ep.clone(),
                path: format!("/v1/hosts/{}", i.name),
                body: body.to_string(),
                token: token.clone(),
            },
        });
    }
    steps
}

/// `http://` + where the agent listens, as seen from other hosts.
fn url_of(i: &Install) -> String {
    match endpoint(i) {
        Endpoint::Direct { host, port } if host.contains(':') => format!("http://[{host}]:{port}"),
        Endpoint::Direct { host, port } => format!("http://{host}:{port}"),
        Endpoint::Tunnel { target, .. } => format!("http://{target}"),
    }
}

/// Every step after `connect` for removing `i` (whichever way it was kept
/// running); `purge` also removes its state directory.
pub fn undeploy(i: &Install, purge: bool) -> Vec<Step> {
    let p = Paths::new(i);
    let other = match i.role {
        Role::Agent => Role::Aggregator,
        Role::Aggregator => Role::Agent,
    };
    let mut steps = vec![
        remote(
            "stop service",
            format!(
                "{HELPERS}f={uf}\n\
                 if [ -f \"$f\" ] && grep -qF -- {scm} \"$f\"; then\n\
                 \x20 systemctl disable --now --quiet {u} || true; rm -f \"$f\"; systemctl daemon-reload || true\nfi\n\
                 stop {sup} {supm}\nstop {pid} {scm}\n\
                 if p=$(cat {pid} 2>/dev/null) && ours \"$p\" {scm} && ! gone \"$p\"; then\n\
                 \x20 echo \"scaler {r} (pid $p) is still running\" >&2; exit 1\nfi\n\
                 echo stopped\n",
                uf = quote(&Paths::unit_file(i)),
                scm = quote(&p.scaler_match()),
                u = quote(&format!("{}.service", i.unit)),
                sup = quote(&p.run("-supervisor.pid")),
                supm = quote(&p.supervisor_match()),
                pid = quote(&p.run(".pid")),
                r = p.r,
            ),
            Payload::None,
        ),
        remote(
            "remove files",
            format!(
                "cd /\nrm -f {cfg} {pid} {sup} {m} {log} {log}.1\n\
                 # The binary stays while the other role still uses it.\n\
                 [ -e {other} ] || rm -f {bin} {sv}\n\
                 for d in bin etc run log; do rmdir {prefix}/$d 2>/dev/null || true; done\n\
                 rmdir {prefix} 2>/dev/null || true\n",
                cfg = quote(&p.config()),
                pid = quote(&p.run(".pid")),
                sup = quote(&p.run("-supervisor.pid")),
                m = quote(&p.run(".changed")),
                log = quote(&p.log()),
                other = quote(&format!("{}/etc/{}.toml", p.p, other.name())),
                bin = quote(&p.bin()),
                sv = quote(&p.supervise()),
                prefix = quote(&p.p),
            ),
            Payload::None,
        ),
    ];
    if purge {
        steps.push(remote("purge state", format!("rm -rf -- {}\n", quote(&i.state_dir)), Payload::None));
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
        let fb = Fallback {
            key: None,
            prefix: None,
            state_dir: None,
            known_hosts: None,
            connect_timeout_s: 5,
            config: toml::Table::new(),
        };
        resolve(&e, &Entry::default(), &fb, Role::Agent).unwrap()
    }

    fn opts() -> DeployOptions {
        DeployOptions {
            binary: "/b/scaler".into(),
            binary_len: 1234,
            restart: false,
            health_timeout: Duration::from_secs(60),
            aggregator: None,
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
            let Action::Remote { script, input } = &s[1].action else { panic!() };
            assert!(script.contains("d='/srv/p1/bin/scaler'") && script.contains("-eq 1234"), "{script}");
            assert_eq!(input, &Payload::File("/b/scaler".into()));
        }
        let Action::Remote { script, .. } = &deploy(&i, Mode::Supervisor, &opts())[0].action else { panic!() };
        assert!(script.contains("'/srv/s1'"));
    }

    #[test]
    fn loopback_agents_are_checked_through_ssh_and_public_ones_directly() {
        let i = install("");
        let s = deploy(&i, Mode::Supervisor, &opts());
        let Action::Health { endpoint: ep, expect_host, .. } = &s[5].action else { panic!() };
        assert!(matches!(ep, Endpoint::Tunnel { target, .. } if target == "127.0.0.1:8470"));
        assert_eq!(expect_host.as_deref(), Some("n1"));
        let i = install("[config.agent]\nlisten = \"0.0.0.0:9000\"\ntoken = \"t\"\n");
        assert_eq!(endpoint(&i), Endpoint::Direct { host: "10.0.0.2".into(), port: 9000 });
    }

    #[test]
    fn registration_needs_a_reachable_agent() {
        let agg = install("");
        let mut other = install("");
        other.ssh = Ssh { address: "10.0.0.9".into(), ..other.ssh.clone() };
        assert_eq!(agent_url(&agg, &agg).unwrap(), "http://127.0.0.1:8470");
        assert!(agent_url(&agg, &other).unwrap_err().contains("loopback"));
        let public = install("[config.agent]\nlisten = \"10.0.0.2:8470\"\ntoken = \"t\"\n");
        assert_eq!(agent_url(&public, &other).unwrap(), "http://10.0.0.2:8470");
        let o = DeployOptions {
            aggregator: Some((Endpoint::Direct { host: "10.0.0.9".into(), port: 8471 }, Some("a".into()))),
            ..opts()
        };
        let s = deploy(&public, Mode::Systemd, &o);
        let Action::Register { path, body, token, .. } = &s.last().unwrap().action else { panic!() };
        assert_eq!((path.as_str(), token.as_deref()), ("/v1/hosts/n1", Some("a")));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!((v["url"].as_str(), v["token"].as_str()), (Some("http://10.0.0.2:8470"), Some("t")));
    }

    #[test]
    fn undeploy_removes_only_its_own_files() {
        let s = undeploy(&install(""), true);
        let names: Vec<_> = s.iter().map(|s| s.name).collect();
        assert_eq!(names, ["stop service", "remove files", "purge state"]);
        let Action::Remote { script, .. } = &s[1].action else { panic!() };
        assert!(!script.contains("rm -rf"), "{script}");
        assert!(script.contains("[ -e '/srv/p1/etc/aggregator.toml' ] || rm -f '/srv/p1/bin/scaler'"));
        let Action::Remote { script, .. } = &s[2].action else { panic!() };
        assert_eq!(script, "rm -rf -- '/srv/s1'\n");
        assert_eq!(undeploy(&install(""), false).len(), 2);
    }

    /// The scripts are valid `sh` (parsed, not run).
    #[test]
    fn scripts_parse() {
        let i = install("");
        let mut all = vec![connect()];
        all.extend(deploy(&i, Mode::Systemd, &opts()));
        all.extend(deploy(&i, Mode::Supervisor, &opts()));
        all.extend(undeploy(&i, true));
        all.push(Step {
            name: "supervisor",
            action: Action::Remote { script: SUPERVISOR.into(), input: Payload::None },
        });
        for s in all {
            if let Action::Remote { script, .. } = &s.action {
                let out = std::process::Command::new("sh").args(["-n", "-c", script]).output().unwrap();
                assert!(out.status.success(), "{}: {}\n{script}", s.name, String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}
