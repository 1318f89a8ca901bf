//! The hosts file (`--hosts hosts.toml`) and `--host user@addr[:port]`
//! flags, resolved into one [`Install`] per host: where it is, how to reach
//! it, where files go, and the exact config it gets.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::{pki, ssh::Ssh};

/// What runs: the per-host agent or the cluster aggregator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Aggregator,
}

impl Role {
    /// The `scaler` subcommand, and the stem of its files on the host.
    pub fn name(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Aggregator => "aggregator",
        }
    }
}

/// How the host keeps it running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// systemd when the host booted with it (`/run/systemd/system`), else
    /// the supervisor.
    Auto,
    Systemd,
    Supervisor,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Auto => "auto",
            Service::Systemd => "systemd",
            Service::Supervisor => "supervisor",
        })
    }
}

/// One host entry, or `[defaults]`, or `[aggregator]`, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: Option<String>,
    pub address: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key: Option<PathBuf>,
    pub prefix: Option<String>,
    pub state_dir: Option<String>,
    pub service: Option<Service>,
    pub unit: Option<String>,
    /// `[aggregator]` only: which host (a name above, or user@addr[:port]).
    pub host: Option<String>,
    /// `[aggregator]` only: its listen address (its config's
    /// `aggregator.listen`).
    pub listen: Option<SocketAddr>,
    /// `[aggregator]` only: its bearer token, sent when registering agents
    /// (its config's `aggregator.token`).
    pub token: Option<String>,
    /// Merged into the host's TOML config (`[defaults.config]` first).
    #[serde(default)]
    pub config: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFile {
    #[serde(default)]
    pub defaults: Entry,
    #[serde(default)]
    pub hosts: Vec<Entry>,
    pub aggregator: Option<Entry>,
    /// TLS for every host, with certificates deploy issues.
    pub tls: Option<pki::Section>,
}

/// One thing to install on one host, fully resolved.
#[derive(Debug, Clone)]
pub struct Install {
    pub role: Role,
    /// The host's name (in messages, the agent's `hostname`, the
    /// aggregator's host list).
    pub name: String,
    pub ssh: Ssh,
    pub prefix: String,
    pub state_dir: String,
    pub service: Service,
    /// systemd unit name, without `.service`.
    pub unit: String,
    /// The config file's text.
    pub config: String,
    /// Where it listens, as seen from the host.
    pub listen: SocketAddr,
    /// Its bearer token: an agent's is handed to the aggregator when it is
    /// registered; the aggregator's authorizes the registration.
    pub token: Option<String>,
    /// With `[tls]`: what its certificate is for, and (once issued) the
    /// certificate.
    pub tls: Option<HostTls>,
}

/// A host's TLS under `[tls]`.
#[derive(Debug, Clone)]
pub struct HostTls {
    /// `NAME-ROLE`: its files in the PKI directory.
    pub file: String,
    /// Addresses and names its certificate holds.
    pub names: Vec<String>,
    /// The CA's certificate, and the host's (PEM), once issued.
    pub issued: Option<(String, pki::Issued)>,
}

/// Defaults that do not come from the file.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub key: Option<PathBuf>,
    pub prefix: Option<String>,
    pub state_dir: Option<String>,
    pub known_hosts: Option<PathBuf>,
    pub connect_timeout_s: u64,
    /// Agent config for `--host` hosts (`--config FILE`).
    pub config: toml::Table,
    /// `[tls]` (or `--tls`): every host serves HTTPS.
    pub tls: Option<pki::Settings>,
}

#[cfg(test)]
impl Fallback {
    /// Nothing set, a 5 s connect timeout: for unit tests.
    pub fn for_tests() -> Self {
        Self {
            key: None,
            prefix: None,
            state_dir: None,
            known_hosts: None,
            connect_timeout_s: 5,
            config: toml::Table::new(),
            tls: None,
        }
    }
}

pub fn load_file(path: &Path) -> anyhow::Result<HostsFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut f: HostsFile = toml::from_str(&text).with_context(|| format!("hosts file {}", path.display()))?;
    if f.defaults.name.is_some() || f.defaults.address.is_some() {
        bail!("hosts file {}: [defaults] cannot set name or address", path.display());
    }
    // Keys are relative to the hosts file.
    let dir = path.parent().unwrap_or(Path::new("."));
    for e in f.hosts.iter_mut().chain(std::iter::once(&mut f.defaults)).chain(f.aggregator.as_mut()) {
        if let Some(k) = &e.key {
            e.key = Some(resolve_path(k, dir));
        }
    }
    Ok(f)
}

/// `~/x` from `$HOME`, a relative path from `base`.
pub fn resolve_path(p: &Path, base: &Path) -> PathBuf {
    if let (Ok(rest), Some(home)) = (p.strip_prefix("~"), std::env::var_os("HOME")) {
        return PathBuf::from(home).join(rest);
    }
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// `user@address[:port]`, `user@[v6]:port`, or just `address`.
pub fn parse_host_flag(s: &str) -> anyhow::Result<Entry> {
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) => (Some(u.to_owned()), r),
        None => (None, s),
    };
    let (address, port) = if let Some(r) = rest.strip_prefix('[') {
        let (a, tail) = r.split_once(']').with_context(|| format!("--host {s}: missing ]"))?;
        (a.to_owned(), tail.strip_prefix(':'))
    } else if rest.matches(':').count() == 1 {
        let (a, p) = rest.split_once(':').unwrap_or((rest, ""));
        (a.to_owned(), Some(p))
    } else {
        (rest.to_owned(), None)
    };
    let port = port.map(|p| p.parse::<u16>().with_context(|| format!("--host {s}: bad port {p:?}"))).transpose()?;
    if address.is_empty() || user.as_deref() == Some("") {
        bail!("--host {s}: expected user@address[:port]");
    }
    Ok(Entry { name: Some(address.clone()), address: Some(address), user, port, ..Entry::default() })
}

/// Deep merge: tables merge key by key, anything else in `over` wins.
pub fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Resolves one host entry on top of `defaults` (and the command line's
/// fallbacks) for `role`.
pub fn resolve(e: &Entry, defaults: &Entry, fb: &Fallback, role: Role) -> anyhow::Result<Install> {
    let address = e.address.clone().context("a host needs an `address`")?;
    let name = e.name.clone().unwrap_or_else(|| address.clone());
    let what = format!("host {name}");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c)) {
        bail!("{what}: name must use only [A-Za-z0-9._:@-]");
    }
    let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
    let prefix =
        pick(&e.prefix, &defaults.prefix).or_else(|| fb.prefix.clone()).unwrap_or_else(|| "/opt/scaler".into());
    let mut config = match role {
        Role::Agent if e.config.is_empty() && defaults.config.is_empty() => fb.config.clone(),
        _ => toml::Table::new(),
    };
    if role == Role::Agent {
        merge(&mut config, &defaults.config);
    }
    merge(&mut config, &e.config);
    let default_state = match role {
        Role::Agent => "/var/lib/scaler",
        Role::Aggregator => "/var/lib/scaler-aggregator",
    };
    // The role's own table: `[agent]` or `[aggregator]` (same fields for
    // what deploy needs: listen, token, state_dir).
    let section = role.name();
    let table = match config.entry(section).or_insert_with(|| toml::Table::new().into()) {
        toml::Value::Table(t) => t,
        _ => bail!("{what}: config `{section}` must be a table"),
    };
    let chosen = match role {
        Role::Agent => pick(&e.state_dir, &defaults.state_dir).or_else(|| fb.state_dir.clone()),
        // Not the agents' defaults: the aggregator keeps its own.
        Role::Aggregator => e.state_dir.clone(),
    };
    let state_dir = set_once(table, "state_dir", chosen, &what, section)?.unwrap_or_else(|| default_state.to_owned());
    table.insert("state_dir".into(), state_dir.clone().into());
    if role == Role::Agent {
        // The agent reports the name it is deployed under, unless told otherwise.
        table.entry("hostname").or_insert_with(|| name.clone().into());
    }
    // `[aggregator] listen` and `token` are shorthands for its config's.
    let listen = set_once(table, "listen", e.listen.map(|l| l.to_string()), &what, section)?;
    let listen = match listen {
        Some(l) => {
            let a = l.parse::<SocketAddr>().with_context(|| {
                format!("{what}: config {section}.listen {l:?} is not an address like \"10.0.0.2:8470\"")
            })?;
            table.insert("listen".into(), l.into());
            a
        }
        None => SocketAddr::from(([127, 0, 0, 1], if role == Role::Agent { 8470 } else { 8471 })),
    };
    let token = set_once(table, "token", e.token.clone(), &what, section)?.filter(|t| !t.is_empty());
    if let Some(t) = &token {
        table.insert("token".into(), t.clone().into());
    }
    if !listen.ip().is_loopback() && token.is_none() {
        bail!(
            "{what}: config {section}.token is required when {section}.listen ({listen}) is not a loopback \
             address (scaler {section} refuses to start without one)"
        );
    }
    let tls = match &fb.tls {
        Some(t) => Some(tls_config(table, t, &prefix, role).with_context(|| what.clone())?),
        None if table.contains_key("tls_cert") => bail!(
            "{what}: config {section}.tls_cert: deploy sets up TLS itself: remove it and add a [tls] section to \
             the hosts file (with ca_cert and ca_key to use your own CA), or pass --tls"
        ),
        None => None,
    };
    let insecure = table.get("insecure").and_then(toml::Value::as_bool).unwrap_or(false);
    if let Some(why) = scaler_api_exposure(listen, tls.is_some(), insecure, section) {
        bail!("{what}: config {why} (scaler {section} refuses to start so)");
    }
    check_dir(&what, "prefix", &prefix)?;
    check_dir(&what, "state_dir", &state_dir)?;
    let default_unit = match role {
        Role::Agent => "scaler-agent",
        Role::Aggregator => "scaler-aggregator",
    };
    let unit = match role {
        Role::Agent => pick(&e.unit, &defaults.unit),
        Role::Aggregator => e.unit.clone(),
    }
    .unwrap_or_else(|| default_unit.into());
    if !unit.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c)) {
        bail!("{what}: unit {unit:?} must use only [A-Za-z0-9._@-]");
    }
    let ssh = Ssh {
        user: pick(&e.user, &defaults.user).unwrap_or_else(|| "root".into()),
        address,
        port: e.port.or(defaults.port).unwrap_or(22),
        key: e.key.clone().or_else(|| defaults.key.clone()).or_else(|| fb.key.clone()),
        known_hosts: fb.known_hosts.clone(),
        connect_timeout_s: fb.connect_timeout_s,
        control_dir: None,
    };
    let tls = tls.map(|()| HostTls {
        file: format!("{name}-{section}"),
        names: pki::host_names(&name, &ssh.address, listen),
        issued: None,
    });
    Ok(Install {
        role,
        name,
        ssh,
        prefix,
        state_dir,
        service: e.service.or(defaults.service).unwrap_or(Service::Auto),
        unit,
        config: toml::to_string(&config).with_context(|| format!("{what}: rendering config"))?,
        tls,
        listen,
        token,
    })
}

/// Where a role's TLS files go under `prefix`: certificate, key, CA.
pub fn tls_paths(prefix: &str, role: Role) -> [String; 3] {
    let etc = format!("{}/etc", prefix.trim_end_matches('/'));
    [format!("{etc}/{}-cert.pem", role.name()), format!("{etc}/{}-key.pem", role.name()), format!("{etc}/ca.pem")]
}

/// Points the role's config at the files deploy installs (the settings
/// are deploy's: one already there is an error).
fn tls_config(table: &mut toml::Table, t: &pki::Settings, prefix: &str, role: Role) -> anyhow::Result<()> {
    let section = role.name();
    let [cert, key, ca] = tls_paths(prefix, role);
    let mut set = vec![("tls_cert", cert.clone()), ("tls_key", key.clone())];
    match t.client_auth {
        pki::ClientAuth::None => {}
        pki::ClientAuth::Mutating => {
            set.extend([("tls_client_ca", ca.clone()), ("tls_client_auth", "mutating".into())])
        }
        pki::ClientAuth::All => set.extend([("tls_client_ca", ca.clone()), ("tls_client_auth", "all".into())]),
    }
    if role == Role::Aggregator {
        // Agents are trusted by the fleet CA, and shown the aggregator's own
        // certificate (it is a client certificate too).
        set.extend([("agents_ca", ca), ("agents_client_cert", cert), ("agents_client_key", key)]);
    }
    for (k, v) in set {
        if table.contains_key(k) {
            bail!("config {section}.{k} is set by deploy under [tls]: remove it");
        }
        table.insert(k.into(), v.into());
    }
    Ok(())
}

/// The string `key` of `table`, or `given`; both set and different is an
/// error.
fn set_once(
    table: &toml::Table,
    key: &str,
    given: Option<String>,
    what: &str,
    section: &str,
) -> anyhow::Result<Option<String>> {
    let in_config = match table.get(key) {
        Some(v) => Some(v.as_str().with_context(|| format!("{what}: config {section}.{key} must be a string"))?),
        None => None,
    };
    match (given, in_config) {
        (Some(a), Some(b)) if a != b => bail!("{what}: {key} {a:?} and config {section}.{key} {b:?} differ; set one"),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b.map(str::to_owned)),
    }
}

/// Directories the tool would refuse to remove files from or purge.
const SYSTEM_DIRS: [&str; 22] = [
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/local",
    "/var",
    "/var/lib",
];

/// An absolute path of plain characters, no `..`, not a system directory:
/// safe to quote into scripts and to `rm -rf` on `--purge`.
fn check_dir(what: &str, field: &str, p: &str) -> anyhow::Result<()> {
    let plain = p.chars().all(|c| c.is_ascii_alphanumeric() || "._/-+@".contains(c));
    if !p.starts_with('/') || !plain || p.split('/').any(|s| s == "..") {
        bail!("{what}: {field} {p:?} must be an absolute path of [A-Za-z0-9._/+@-] without ..");
    }
    if SYSTEM_DIRS.contains(&p.trim_end_matches('/')) || p.trim_end_matches('/').is_empty() {
        bail!("{what}: {field} {p:?} is a system directory; use a directory of its own such as /opt/scaler");
    }
    Ok(())
}

/// The servers' own rule (`scaler_api::tls::exposure_problem`), checked
/// before anything is copied: plain HTTP off loopback only when the
/// operator says `insecure = true`.
fn scaler_api_exposure(listen: SocketAddr, tls: bool, insecure: bool, section: &str) -> Option<String> {
    (!listen.ip().is_loopback() && !tls && !insecure).then(|| {
        format!(
            "{section}.listen ({listen}) is off loopback without TLS: set {section}.tls_cert and {section}.tls_key, \
             or {section}.insecure = true to serve plain HTTP anyway"
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[defaults]
user = "admin"
key = "keys/id"
[defaults.config.agent]
cgroup_roots = ["/machine"]
token = "shared"

[[hosts]]
name = "node1"
address = "10.0.0.2"
prefix = "/opt/scaler-1"
state_dir = "/var/lib/scaler-1"
[hosts.config.agent]
listen = "10.0.0.2:8470"
insecure = true
[hosts.config.host]
cpu = 4000

[[hosts]]
address = "10.0.0.3"
port = 2222
user = "root"
"#;

    #[test]
    fn file_hosts_merge_defaults_and_their_own_config() {
        let f: HostsFile = toml::from_str(FILE).unwrap();
        let a = resolve(&f.hosts[0], &f.defaults, &Fallback::for_tests(), Role::Agent).unwrap();
        assert_eq!((a.name.as_str(), a.ssh.user.as_str(), a.ssh.port), ("node1", "admin", 22));
        assert_eq!((a.prefix.as_str(), a.state_dir.as_str()), ("/opt/scaler-1", "/var/lib/scaler-1"));
        assert_eq!(a.listen.to_string(), "10.0.0.2:8470");
        assert_eq!(a.token.as_deref(), Some("shared"));
        let cfg: toml::Table = toml::from_str(&a.config).unwrap();
        assert_eq!(cfg["agent"]["cgroup_roots"].as_array().unwrap().len(), 1);
        assert_eq!(cfg["agent"]["state_dir"].as_str(), Some("/var/lib/scaler-1"));
        assert_eq!(cfg["agent"]["hostname"].as_str(), Some("node1"));
        assert_eq!(cfg["host"]["cpu"].as_integer(), Some(4000));

        let b = resolve(&f.hosts[1], &f.defaults, &Fallback::for_tests(), Role::Agent).unwrap();
        assert_eq!((b.name.as_str(), b.ssh.user.as_str(), b.ssh.port), ("10.0.0.3", "root", 2222));
        assert_eq!((b.prefix.as_str(), b.state_dir.as_str()), ("/opt/scaler", "/var/lib/scaler"));
        assert_eq!(b.listen.to_string(), "127.0.0.1:8470");
    }

    #[test]
    fn a_public_listen_address_needs_a_token() {
        let e: Entry = toml::from_str("address = \"h\"\n[config.agent]\nlisten = \"0.0.0.0:8470\"\n").unwrap();
        let err = resolve(&e, &Entry::default(), &Fallback::for_tests(), Role::Agent).unwrap_err().to_string();
        assert!(err.contains("host h") && err.contains("agent.token"), "{err}");
    }

    #[test]
    fn dangerous_directories_are_refused() {
        for bad in ["/", "/var/lib", "relative", "/opt/../etc", "/opt/my dir", "/opt/$(x)"] {
            let e = Entry { address: Some("h".into()), prefix: Some(bad.into()), ..Entry::default() };
            let err = resolve(&e, &Entry::default(), &Fallback::for_tests(), Role::Agent).unwrap_err().to_string();
            assert!(err.contains("prefix"), "{bad}: {err}");
        }
        let e = Entry { address: Some("h".into()), state_dir: Some("/".into()), ..Entry::default() };
        assert!(resolve(&e, &Entry::default(), &Fallback::for_tests(), Role::Agent).is_err());
    }

    #[test]
    fn conflicting_state_dirs_are_refused() {
        let e: Entry =
            toml::from_str("address = \"h\"\nstate_dir = \"/srv/a\"\n[config.agent]\nstate_dir = \"/srv/b\"\n")
                .unwrap();
        assert!(
            resolve(&e, &Entry::default(), &Fallback::for_tests(), Role::Agent)
                .unwrap_err()
                .to_string()
                .contains("differ")
        );
    }

    #[test]
    fn host_flags_parse() {
        let e = parse_host_flag("root@10.0.0.2:2222").unwrap();
        assert_eq!((e.user.as_deref(), e.address.as_deref(), e.port), (Some("root"), Some("10.0.0.2"), Some(2222)));
        let e = parse_host_flag("u@[fd00::1]:22").unwrap();
        assert_eq!((e.address.as_deref(), e.port), (Some("fd00::1"), Some(22)));
        let e = parse_host_flag("node7").unwrap();
        assert_eq!((e.user, e.address.as_deref(), e.port), (None, Some("node7"), None));
        assert!(parse_host_flag("u@h:notaport").is_err());
        assert!(parse_host_flag("@h").is_err());
    }

    #[test]
    fn the_aggregator_keeps_its_own_section_state_and_unit() {
        let e: Entry = toml::from_str(
            "address = \"h\"\nlisten = \"0.0.0.0:8471\"\ntoken = \"agg\"\n[config.history]\nflush_ms = 5000\n",
        )
        .unwrap();
        let d: Entry = toml::from_str("state_dir = \"/srv/agents\"\n").unwrap();
        let err = resolve(&e, &d, &Fallback::for_tests(), Role::Aggregator).unwrap_err().to_string();
        assert!(err.contains("aggregator.insecure") && err.contains("aggregator.tls_cert"), "{err}");
        let mut e = e;
        e.config.insert("aggregator".into(), toml::Value::Table(toml::from_str("insecure = true").unwrap()));
        let a = resolve(&e, &d, &Fallback::for_tests(), Role::Aggregator).unwrap();
        assert_eq!((a.state_dir.as_str(), a.unit.as_str()), ("/var/lib/scaler-aggregator", "scaler-aggregator"));
        assert_eq!((a.listen.to_string().as_str(), a.token.as_deref()), ("0.0.0.0:8471", Some("agg")));
        let cfg: toml::Table = toml::from_str(&a.config).unwrap();
        assert_eq!(cfg["aggregator"]["listen"].as_str(), Some("0.0.0.0:8471"));
        assert_eq!(cfg["aggregator"]["state_dir"].as_str(), Some("/var/lib/scaler-aggregator"));
        assert!(cfg["aggregator"].get("hostname").is_none());
        assert_eq!(cfg["history"]["flush_ms"].as_integer(), Some(5000));
        let e: Entry = toml::from_str("address = \"h\"\nlisten = \"0.0.0.0:8471\"\n").unwrap();
        let err = resolve(&e, &Entry::default(), &Fallback::for_tests(), Role::Aggregator).unwrap_err().to_string();
        assert!(err.contains("aggregator.token"), "{err}");
    }

    #[test]
    fn merge_is_deep() {
        let mut a: toml::Table = toml::from_str("[agent]\nx = 1\ny = 2\n").unwrap();
        merge(&mut a, &toml::from_str("[agent]\ny = 3\n[host]\ncpu = 1\n").unwrap());
        assert_eq!(toml::to_string(&a).unwrap(), "[agent]\nx = 1\ny = 3\n\n[host]\ncpu = 1\n");
    }
}
