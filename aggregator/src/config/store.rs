//! `[store]`: where the records live (the local file, or an etcd cluster).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[store]`: by default the records (hosts registered through the API,
/// users, applications, ceilings) are in `state_dir`'s redb file; with
/// `etcd` they are in that cluster under `prefix`, shared by every
/// aggregator replica that names the same cluster and prefix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// etcd members' client URLs (`http://HOST:PORT` or
    /// `https://HOST:PORT`); empty: local file.
    pub etcd: Vec<String>,
    /// CA certificates (PEM) the members' certificates are checked
    /// against: required with `https://` members.
    pub ca_file: Option<PathBuf>,
    /// This aggregator's client certificate and key (PEM), for members
    /// started with `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Key prefix of this fleet's records, `/` at both ends.
    pub prefix: String,
    /// An etcd call may take this long, members tried in turn.
    pub timeout_ms: u64,
    /// This replica's name among those sharing the prefix (default:
    /// `HOSTNAME-PORT`).
    pub replica: Option<String>,
    /// The URL the other replicas reach this one's API at (default: from
    /// `aggregator.listen`, with the host's name when that is 0.0.0.0).
    pub advertise: Option<String>,
    /// The replica's etcd lease: when it dies, its hosts move to the others
    /// within this many seconds.
    pub lease_s: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        // Five seconds: an etcd leader election (one second of election
        // timeout by default) and attempts at every member fit in it.
        // Lease: five seconds, renewed every 1.7 s; a host is not gathered
        // for at most that long when its replica dies.
        Self {
            etcd: Vec::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            prefix: "/scaler/".into(),
            timeout_ms: 5000,
            replica: None,
            advertise: None,
            lease_s: 5,
        }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, e) in self.etcd.iter().enumerate() {
            let u =
                reqwest::Url::parse(e).map_err(|err| invalid(format!("store.etcd[{i}]"), format!("{e:?}: {err}")))?;
            let scheme_ok = matches!(u.scheme(), "http" | "https");
            if !scheme_ok || u.host_str().is_none_or(str::is_empty) || u.path() != "/" {
                return Err(invalid(
                    format!("store.etcd[{i}]"),
                    format!("{e:?} must be http://HOST:PORT or https://HOST:PORT (etcd's client URL)"),
                ));
            }
            if u.scheme() == "https" && self.ca_file.is_none() {
                return Err(invalid(
                    "store.ca_file",
                    format!(
                        "required with an https member ({e:?}): the CA the members' certificates are checked against"
                    ),
                ));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            let missing = if self.cert_file.is_none() { "store.cert_file" } else { "store.key_file" };
            return Err(invalid(
                missing,
                "store.cert_file and store.key_file go together (the client certificate and its key)",
            ));
        }
        let p = &self.prefix;
        if p.len() < 2
            || !p.starts_with('/')
            || !p.ends_with('/')
            || p.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("store.prefix", format!("{p:?} must start and end with / (e.g. \"/scaler/\")")));
        }
        if let Some(r) = &self.replica {
            scaler_api::names::validate(r).map_err(|e| invalid("store.replica", e))?;
        }
        if let Some(a) = &self.advertise {
            super::validate_url(a).map_err(|e| invalid("store.advertise", e))?;
        }
        if !(2..=300).contains(&self.lease_s) {
            return Err(invalid("store.lease_s", format!("{} is outside 2..=300", self.lease_s)));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(invalid("store.timeout_ms", format!("{} is outside 100..=60000", self.timeout_ms)));
        }
        Ok(())
    }

    /// The TLS client settings for `https://` members (`None` without a
    /// CA: plain HTTP).
    pub fn client_tls(&self) -> Result<Option<rustls::ClientConfig>, String> {
        let Some(ca) = &self.ca_file else { return Ok(None) };
        let identity = self.cert_file.as_deref().zip(self.key_file.as_deref());
        scaler_api::tls::client_config(Some(ca), identity)
            .map(Some)
            .map_err(|e| format!("store.ca_file/cert_file: {e}"))
    }

    /// The members' URLs without a trailing slash.
    pub fn endpoints(&self) -> Vec<String> {
        self.etcd.iter().map(|e| e.trim_end_matches('/').to_owned()).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn etcd_members_and_prefix_are_checked() {
        let mut s = StoreConfig { etcd: vec!["http://127.0.0.1:2379".into()], ..StoreConfig::default() };
        s.validate().unwrap();
        assert_eq!(s.endpoints(), ["http://127.0.0.1:2379"]);
        s.etcd.push("https://10.0.0.1:2379".into());
        assert!(s.validate().unwrap_err().to_string().contains("store.ca_file"), "https needs the CA");
        s.ca_file = Some("/etc/etcd/ca.pem".into());
        s.validate().unwrap();
        s.cert_file = Some("/etc/scaler/etcd-client.pem".into());
        assert!(s.validate().unwrap_err().to_string().contains("store.key_file"));
        s.key_file = Some("/etc/scaler/etcd-client.key".into());
        s.validate().unwrap();
        s.etcd[1] = "ftp://10.0.0.1:2379".into();
        assert!(s.validate().unwrap_err().to_string().contains("store.etcd[1]"));
        s.etcd[1] = "10.0.0.1:2379".into();
        assert!(s.validate().unwrap_err().to_string().contains("store.etcd[1]"));
        s.etcd.pop();
        s.prefix = "scaler".into();
        assert!(s.validate().unwrap_err().to_string().contains("store.prefix"));
        s.prefix = "/a/".into();
        s.timeout_ms = 5;
        assert!(s.validate().unwrap_err().to_string().contains("store.timeout_ms"));
    }
}
