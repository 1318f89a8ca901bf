//! The aggregator's configuration: TOML into `#[serde(default)]` structs
//! with hand-written defaults, validated once at load. Environment
//! overrides (`SCALER_AGGREGATOR_*`) are read in [`AggConfig::apply_env`]
//! and nowhere else.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use policies::energy::{CapControllerConfig, PowerModel};
use serde::{Deserialize, Serialize};

pub use scaler_api::config::{ConfigError, invalid};
pub use store::StoreConfig;

mod store;

/// `[aggregator]`: where it listens, where it keeps state, how it polls.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// HTTP listen address (API and dashboard). Loopback by default: the API
    /// can change limits on every host.
    pub listen: SocketAddr,
    /// Durable state (hosts registered through the API, applications, caps,
    /// history) lives in `state_dir/aggregator.redb`.
    pub state_dir: PathBuf,
    /// One gathering round (and one energy-control period) every `poll_ms`.
    pub poll_ms: u64,
    /// A host must answer all its requests of a round within this time, or
    /// it is marked stale for the round.
    pub timeout_ms: u64,
    /// Hosts gathered at once (each uses one connection).
    pub concurrency: usize,
    /// Largest response accepted from an agent; a longer one is garbage.
    pub max_body_bytes: usize,
    /// Bearer token for the aggregator's own mutating requests. Required
    /// when `listen` is not a loopback address.
    pub token: Option<String>,
    /// TLS: the server's certificate chain and its key (PEM). Both or
    /// neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP off loopback anyway (refused without it).
    pub insecure: bool,
    /// TLS: clients are verified against this CA (PEM) ...
    pub tls_client_ca: Option<PathBuf>,
    /// ...for requests that change something (`mutating`), or for every
    /// connection (`all`).
    pub tls_client_auth: scaler_api::tls::ClientAuth,
    /// The CA (PEM) that signed the agents' certificates, for `https://`
    /// agents (without it, the aggregator trusts no `https://` agent).
    pub agents_ca: Option<PathBuf>,
    /// The certificate and key (PEM) the aggregator presents to agents
    /// that ask for client certificates.
    pub agents_client_cert: Option<PathBuf>,
    pub agents_client_key: Option<PathBuf>,
}

impl Settings {
    /// The TLS settings, as `scaler_api::tls` checks and loads them.
    pub fn tls(&self) -> scaler_api::tls::Settings<'_> {
        scaler_api::tls::Settings {
            section: "aggregator",
            listen: self.listen,
            cert: self.tls_cert.as_deref(),
            key: self.tls_key.as_deref(),
            client_ca: self.tls_client_ca.as_deref(),
            client_auth: self.tls_client_auth,
            insecure: self.insecure,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8471)),
            state_dir: PathBuf::from("/var/lib/scaler-aggregator"),
            // One round a second: the dashboard's resolution and the energy
            // controller's period (the policies crate's cap simulator uses 1 s).
            poll_ms: 1000,
            // Leaves a fifth of the round for merging, control and history.
            timeout_ms: 800,
            // Enough for a thousand hosts in one or two waves of 800 ms.
            concurrency: 512,
            // 50 containers' stats are ~40 KiB; 16 MiB leaves room for 10,000.
            max_body_bytes: 16 << 20,
            token: None,
            tls_cert: None,
            tls_key: None,
            insecure: false,
            tls_client_ca: None,
            tls_client_auth: scaler_api::tls::ClientAuth::Mutating,
            agents_ca: None,
            agents_client_cert: None,
            agents_client_key: None,
        }
    }
}

/// `[history]`: resolution tiers and how long each is kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Every round's point (full resolution) is kept this long.
    pub full_retention_s: u64,
    /// One-minute means are kept this long.
    pub minute_retention_s: u64,
    /// Fifteen-minute means are kept this long.
    pub quarter_retention_s: u64,
    /// Open blocks are written to the store this often (and at shutdown): a
    /// crash loses at most this much history.
    pub flush_ms: u64,
    /// Container and application history read from this Prometheus (which
    /// scrapes the agents' `/metrics`) instead of the embedded tiers, which
    /// still record and answer when it does not.
    pub prometheus: Option<String>,
    /// A Prometheus query may take this long.
    pub prometheus_timeout_ms: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            // An hour at one point a round: the dashboard's live view.
            full_retention_s: 3600,
            // Two days of minutes.
            minute_retention_s: 2 * 86_400,
            // Thirty days of quarter hours.
            quarter_retention_s: 30 * 86_400,
            // Ten seconds: small writes, little to lose.
            flush_ms: 10_000,
            prometheus: None,
            prometheus_timeout_ms: 5000,
        }
    }
}

/// `[energy]`: the cap controller and the fallback power model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnergyConfig {
    /// The controller every capped application gets (`policies::energy`).
    pub controller: CapControllerConfig,
    /// Power model of a host that has none in config and whose agent reports
    /// none: the agent's own default (20 W idle, 80 W flat out).
    pub idle_mw: u64,
    pub max_mw: u64,
    /// Lowest CPU ceiling set on a container that has no subscribed minimum.
    pub min_ceiling_mc: u64,
    /// Band around the cap counted as held (for `settled_ms`), per cent.
    pub tolerance_pct: u64,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        Self {
            // The model-inverting controller: one period to the cap on a
            // linear plant, ceilings that always sum to the budget.
            controller: CapControllerConfig::default(),
            idle_mw: 20_000,
            max_mw: 80_000,
            // A tenth of a core keeps a capped container alive.
            min_ceiling_mc: 100,
            // The "within 5 % of the cap".
            tolerance_pct: 5,
        }
    }
}

/// `[[hosts]]`: an agent to gather. Hosts can also register through the API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    /// The agent's base URL, e.g. `http://10.0.0.7:8470`.
    pub url: String,
    /// Bearer token for the agent's mutating requests (required by agents
    /// that listen off loopback).
    #[serde(default)]
    pub token: Option<String>,
    /// Power model coefficients; when absent, the agent's own (`/v1/host`)
    /// or `[energy]`'s.
    #[serde(default)]
    pub idle_mw: Option<u64>,
    #[serde(default)]
    pub max_mw: Option<u64>,
}

impl HostEntry {
    /// The configured power model, if both coefficients are given.
    pub fn model(&self) -> Option<PowerModel> {
        PowerModel::try_new(self.idle_mw?, self.max_mw?).ok()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggConfig {
    pub aggregator: Settings,
    pub history: HistoryConfig,
    pub energy: EnergyConfig,
    pub store: StoreConfig,
    pub hosts: Vec<HostEntry>,
}

/// Host and application names: the container alphabet (they appear in URLs,
/// store keys and metric labels).
pub fn validate_name(name: &str) -> Result<(), String> {
    scaler_api::names::validate(name)
}

/// An agent URL: `http://` or `https://` (trusted through
/// `aggregator.agents_ca`), a host, no query or fragment.
/// The rules of a host's address, token and power model, the same for the
/// config file, the API and the store: the first field that is wrong, and
/// why.
pub fn check_host(
    url: &str,
    token: Option<&str>,
    idle_mw: Option<u64>,
    max_mw: Option<u64>,
) -> Result<(), (&'static str, String)> {
    validate_url(url).map_err(|e| ("url", e))?;
    if let Some(why) = token.and_then(scaler_api::serve::token_problem) {
        return Err(("token", format!("token {why}")));
    }
    match (idle_mw, max_mw) {
        (None, None) => Ok(()),
        (Some(idle), Some(max)) => PowerModel::try_new(idle, max).map(drop).map_err(|e| ("max_mw", e.to_string())),
        _ => Err(("idle_mw", "give both idle_mw and max_mw, or neither".into())),
    }
}

pub fn validate_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("{url:?} must be http:// or https://"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    Ok(u)
}

impl AggConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = scaler_api::config::load_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies `SCALER_AGGREGATOR_LISTEN`, `_STATE_DIR` and `_TOKEN`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("SCALER_AGGREGATOR_LISTEN") {
            self.aggregator.listen =
                v.parse().map_err(|e| invalid("SCALER_AGGREGATOR_LISTEN", format!("{v:?}: {e}")))?;
        }
        if let Some(v) = env("SCALER_AGGREGATOR_STATE_DIR") {
            self.aggregator.state_dir = PathBuf::from(v);
        }
        if let Some(v) = env("SCALER_AGGREGATOR_TOKEN") {
            self.aggregator.token = Some(v);
        }
        self.validate()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.aggregator;
        if !(100..=60_000).contains(&a.poll_ms) {
            return Err(invalid("aggregator.poll_ms", format!("{} is outside 100..=60000", a.poll_ms)));
        }
        if a.timeout_ms == 0 || a.timeout_ms > a.poll_ms {
            return Err(invalid("aggregator.timeout_ms", "must be within 1..=aggregator.poll_ms"));
        }
        if a.concurrency == 0 {
            return Err(invalid("aggregator.concurrency", "must be at least 1"));
        }
        if a.max_body_bytes < 4096 {
            return Err(invalid("aggregator.max_body_bytes", "must be at least 4096"));
        }
        if !a.listen.ip().is_loopback() && a.token.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "aggregator.token",
                format!("required when aggregator.listen ({}) is not a loopback address", a.listen),
            ));
        }
        if let Some(why) = a.token.as_deref().filter(|t| !t.is_empty()).and_then(scaler_api::serve::token_problem) {
            return Err(invalid("aggregator.token", why));
        }
        if a.agents_client_cert.is_some() != a.agents_client_key.is_some() {
            return Err(invalid(
                "aggregator.agents_client_key",
                "agents_client_cert and agents_client_key go together",
            ));
        }
        a.tls().check().map_err(|(field, why)| invalid(field, why))?;
        let h = &self.history;
        if h.full_retention_s < 60 {
            return Err(invalid("history.full_retention_s", "must be at least 60"));
        }
        if h.minute_retention_s < h.full_retention_s {
            return Err(invalid("history.minute_retention_s", "must be at least history.full_retention_s"));
        }
        if h.quarter_retention_s < h.minute_retention_s {
            return Err(invalid("history.quarter_retention_s", "must be at least history.minute_retention_s"));
        }
        if !(100..=600_000).contains(&h.flush_ms) {
            return Err(invalid("history.flush_ms", format!("{} is outside 100..=600000", h.flush_ms)));
        }
        if let Some(url) = &h.prometheus {
            validate_url(url).map_err(|e| invalid("history.prometheus", e))?;
        }
        if !(100..=60_000).contains(&h.prometheus_timeout_ms) {
            let v = h.prometheus_timeout_ms;
            return Err(invalid("history.prometheus_timeout_ms", format!("{v} is outside 100..=60000")));
        }
        let e = &self.energy;
        PowerModel::try_new(e.idle_mw, e.max_mw).map_err(|err| invalid("energy.max_mw", err.to_string()))?;
        e.controller.build().map_err(|err| invalid("energy.controller", err.to_string()))?;
        if e.tolerance_pct == 0 || e.tolerance_pct > 100 {
            return Err(invalid("energy.tolerance_pct", "must be within 1..=100"));
        }
        self.store.validate()?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, host) in self.hosts.iter().enumerate() {
            validate_name(&host.name).map_err(|r| invalid(format!("hosts[{i}].name"), r))?;
            if !seen.insert(host.name.as_str()) {
                return Err(invalid(format!("hosts[{i}].name"), format!("{:?} appears twice", host.name)));
            }
            check_host(&host.url, host.token.as_deref(), host.idle_mw, host.max_mw)
                .map_err(|(field, r)| invalid(format!("hosts[{i}].{field}"), r))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = AggConfig::default();
        c.validate().unwrap();
        assert_eq!(c.aggregator.listen.to_string(), "127.0.0.1:8471");
        assert_eq!(c.energy.max_mw, 80_000);
    }

    #[test]
    fn parses_hosts_and_names_bad_fields() {
        let c: AggConfig = toml::from_str(
            "[aggregator]\npoll_ms = 500\ntimeout_ms = 400\n[[hosts]]\nname = \"n1\"\nurl = \"http://127.0.0.1:8470\"\n\
             idle_mw = 10\nmax_mw = 20\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.hosts[0].model().unwrap().idle_mw(), 10);
        let mut bad = c.clone();
        bad.hosts[0].url = "ftp://x".into();
        assert!(bad.validate().unwrap_err().to_string().contains("hosts[0].url"));
        let mut bad = c.clone();
        bad.hosts.push(bad.hosts[0].clone());
        assert!(bad.validate().unwrap_err().to_string().contains("hosts[1].name"));
        let mut bad = c.clone();
        bad.hosts[0].max_mw = None;
        assert!(bad.validate().unwrap_err().to_string().contains("hosts[0].idle_mw"));
        let mut bad = c.clone();
        bad.hosts[0].token = Some("caf\u{e9}".into());
        assert!(bad.validate().unwrap_err().to_string().contains("hosts[0].token"));
        let mut bad = c;
        bad.aggregator.timeout_ms = 900;
        assert!(bad.validate().unwrap_err().to_string().contains("aggregator.timeout_ms"));
        assert!(toml::from_str::<AggConfig>("[aggregator]\npoll = 1\n").is_err());
    }

    #[test]
    fn env_and_token_rule() {
        let mut c = AggConfig::default();
        let err = c.apply_env(|k| (k == "SCALER_AGGREGATOR_LISTEN").then(|| "0.0.0.0:1".to_string())).unwrap_err();
        assert!(err.to_string().contains("aggregator.token"));
        // A token, but plain HTTP off loopback: refused unless said so.
        let err = c.apply_env(|k| (k == "SCALER_AGGREGATOR_TOKEN").then(|| "t".to_string())).unwrap_err();
        assert!(err.to_string().contains("aggregator.insecure"), "{err}");
        assert!(err.to_string().contains("aggregator.tls_cert"), "the way out is named: {err}");
        c.aggregator.insecure = true;
        c.apply_env(|k| (k == "SCALER_AGGREGATOR_TOKEN").then(|| "t".to_string())).unwrap();
        c.aggregator.tls_cert = Some("/c.pem".into());
        assert!(c.validate().unwrap_err().to_string().contains("aggregator.tls_key"), "both or neither");
    }
}
