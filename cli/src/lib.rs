//! The CLI's client commands (`scaler stats`, `subscribe`, `set`, `events`,
//! `record`, ...): talk to an agent's HTTP API and print tables or JSON.
//! The `scaler` binary (in `scaler-user`) parses the command line and calls
//! these.
pub mod cluster;
pub mod manage;
pub mod record;
pub mod runtime;
pub mod units;

use anyhow::{Context as _, bail};
use scaler_api::wire;
use serde_json::Value;

/// An agent's address and the token for mutating requests.
pub struct Agent {
    pub url: String,
    pub token: Option<String>,
}

impl Agent {
    /// Sends a request and returns the JSON body; a 4xx/5xx becomes an
    /// error carrying the API's message.
    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.url.trim_end_matches('/'), path);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let mut req = client()?.request(method.clone(), &url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
            let status = resp.status();
            let body: Value = resp.json().await.with_context(|| format!("{method} {url}: body is not JSON"))?;
            if !status.is_success() {
                bail!("{method} {url}: {status}: {}", body["error"].as_str().unwrap_or("(no message)"));
            }
            Ok(body)
        })
    }

    /// [`Agent::call`], the answer read as the agent's wire type `T`.
    pub fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let v = self.call(method.clone(), path, body)?;
        serde_json::from_value(v).with_context(|| format!("{method} {path}: not the agent's documented answer"))
    }
}

/// TLS for every command: `https://` servers are trusted when the CA in
/// `SCALER_CA` (a PEM file) signed their certificate; `SCALER_CERT` and
/// `SCALER_KEY` are presented to servers that ask for a client certificate.
pub fn client_tls() -> anyhow::Result<rustls::ClientConfig> {
    let var = |k: &str| std::env::var_os(k).map(std::path::PathBuf::from);
    let (ca, cert, key) = (var("SCALER_CA"), var("SCALER_CERT"), var("SCALER_KEY"));
    if cert.is_some() != key.is_some() {
        anyhow::bail!("SCALER_CERT and SCALER_KEY go together");
    }
    scaler_api::tls::client_config(ca.as_deref(), cert.as_deref().zip(key.as_deref()))
        .map_err(|e| anyhow::anyhow!("SCALER_CA/SCALER_CERT/SCALER_KEY: {e}"))
}

/// The HTTP client of every command (see [`client_tls`]).
pub fn client() -> anyhow::Result<reqwest::Client> {
    let tls = client_tls()?;
    reqwest::Client::builder().use_preconfigured_tls(tls).build().context("building the HTTP client")
}

/// Human-readable quantity in the resource's unit.
pub fn human(resource: &str, v: Option<u64>) -> String {
    let Some(v) = v else { return "-".into() };
    match resource {
        "cpu" => format!("{v}m"),
        "mem" => bytes(v),
        _ => format!("{}/s", bytes(v)),
    }
}

fn bytes(v: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = v as f64;
    let mut i = 0;
    while x >= 1024.0 && i < U.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{v}B") } else { format!("{x:.1}{}", U[i]) }
}

pub fn stats(agent: &str, name: Option<&str>, json: bool) -> anyhow::Result<()> {
    let agent = Agent { url: agent.to_owned(), token: None };
    let list: Vec<wire::Container> = match name {
        Some(n) => {
            let c: wire::Container = agent.call_as(reqwest::Method::GET, &format!("/v1/stats/{n}"), None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
                return Ok(());
            }
            vec![c]
        }
        None => {
            let all: wire::Stats = agent.call_as(reqwest::Method::GET, "/v1/stats", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            all.containers
        }
    };
    println!(
        "{:<24} {:<10} {:>16} {:>20} {:>20} {:>20}",
        "NAME", "KIND", "CPU use/limit", "MEM use/limit", "DISK r/w", "NET rx/tx"
    );
    for c in list {
        let r = &c.resources;
        let pair = |res: &str, x: wire::Reading| format!("{}/{}", human(res, x.usage), human(res, x.current));
        let io = |a: &str, x: wire::Reading, y: wire::Reading| format!("{}/{}", human(a, x.usage), human(a, y.usage));
        println!(
            "{:<24} {:<10} {:>16} {:>20} {:>20} {:>20}",
            c.name,
            c.kind.name(),
            pair("cpu", r.cpu),
            pair("mem", r.mem),
            io("disk_read", r.disk_read, r.disk_write),
            io("net_rx", r.net_rx, r.net_tx),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_units() {
        assert_eq!(super::human("cpu", Some(500)), "500m");
        assert_eq!(super::human("mem", Some(256 << 20)), "256.0MiB");
        assert_eq!(super::human("net_rx", Some(1536)), "1.5KiB/s");
        assert_eq!(super::human("mem", None), "-");
    }
}
