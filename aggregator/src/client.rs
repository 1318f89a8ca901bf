//! Talking to one agent: a round's reads (with one deadline for all of
//! them and a cap on response size) and forwarded management requests.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::model::{self, Event, HostInfo, Stats, Subscription};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("{path}: {}", chain(source))]
    Http {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{path}: HTTP {status}")]
    Status { path: String, status: u16 },
    #[error("{path}: response larger than {max} bytes")]
    TooLarge { path: String, max: usize },
    #[error("{path}: not the expected JSON: {source}")]
    Garbage {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Whether the agent could not be reached at all (refused, no route,
    /// unknown name, no answer in time), as opposed to an answer that was
    /// wrong.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Http { source, .. } => source.is_connect() || source.is_timeout(),
            _ => false,
        }
    }
}

/// An error and its causes on one line (reqwest's own message alone says
/// only "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// An agent to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Base URL without a trailing slash (may carry a path prefix).
    pub base: String,
    pub token: Option<String>,
}

impl Target {
    pub fn new(url: &str, token: Option<String>) -> Self {
        Self { base: url.trim_end_matches('/').to_owned(), token }
    }

    fn request(&self, client: &reqwest::Client, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
}

/// One round's data from one agent. The optional parts are `None` when the
/// agent does not offer that endpoint (404: an older agent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    pub stats: Option<Stats>,
    pub host: Option<HostInfo>,
    /// Whether subscriptions were asked for this round.
    pub subscriptions_read: bool,
    pub subscriptions: Option<Vec<Subscription>>,
    pub events: Option<Vec<Event>>,
    /// The stats were asked for in brief form...
    pub brief: bool,
    /// ...and the agent refused it (read in full).
    pub brief_refused: bool,
    /// Read in one request (`/v1/round`)...
    pub round: bool,
    /// ...or asked so and the agent did not have it (read by endpoint).
    pub round_refused: bool,
}

async fn read_body(mut resp: reqwest::Response, path: &str, max: usize) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::with_capacity(resp.content_length().map_or(8192, |l| (l as usize).min(max)));
    while let Some(chunk) = resp.chunk().await.map_err(|source| ClientError::Http { path: path.into(), source })? {
        if out.len() + chunk.len() > max {
            return Err(ClientError::TooLarge { path: path.into(), max });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// GET `path`; `Ok(None)` on 404 when `optional`.
async fn get<T>(
    client: &reqwest::Client,
    target: &Target,
    path: &str,
    max: usize,
    optional: bool,
    parse: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<Option<T>, ClientError> {
    let resp = target
        .request(client, Method::GET, path)
        .send()
        .await
        .map_err(|source| ClientError::Http { path: path.into(), source })?;
    let status = resp.status();
    if optional && status == StatusCode::NOT_FOUND {
        // Drain it so the connection can be reused.
        let _ = read_body(resp, path, max).await;
        return Ok(None);
    }
    if !status.is_success() {
        // Drained too: the connection stays usable (an older agent's 400
        // to `fields=brief` is followed by the full form on it).
        let _ = read_body(resp, path, max).await;
        return Err(ClientError::Status { path: path.into(), status: status.as_u16() });
    }
    let body = read_body(resp, path, max).await?;
    parse(&body).map(Some).map_err(|source| ClientError::Garbage { path: path.into(), source })
}

/// What to read from an agent in a round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// Time and id of the newest event already seen (`None`: the first
    /// round, which takes the latest 100). Events are asked for by time,
    /// not id, so an agent that restarted (ids from 1 again) is still
    /// followed; the caller drops what it has already seen.
    pub events_since: Option<(u64, u64)>,
    /// Read the subscriptions (bounds and ceilings, which change rarely).
    pub subscriptions: bool,
    /// All in one request (`/v1/round`); an agent older than it answers
    /// 404 and is read endpoint by endpoint.
    pub round: bool,
    /// The stats' brief form, when read endpoint by endpoint; an agent
    /// older than it refuses the parameter (400) and is read in full.
    pub brief: bool,
}

impl Ask {
    /// The events' query: after the newest seen, or the latest 100.
    fn events_query(&self) -> String {
        match self.events_since {
            Some((t, _)) => format!("since_ms={}&limit=500", t.saturating_sub(1)),
            None => "limit=100".to_owned(),
        }
    }
}

/// Everything the aggregator reads from an agent in a round, within
/// `timeout`: one request (`/v1/round`) or, from an older agent, one after
/// the other on one connection.
pub async fn fetch(
    client: &reqwest::Client,
    target: &Target,
    ask: Ask,
    timeout: Duration,
    max_body: usize,
) -> Result<Fetched, ClientError> {
    let work = async {
        if ask.round {
            let containers = if ask.subscriptions { "&containers=true" } else { "" };
            let path = format!("/v1/round?{}{containers}", ask.events_query());
            if let Some(r) = get(client, target, &path, max_body, true, model::parse_round).await? {
                return Ok(Fetched {
                    stats: Some(r.stats),
                    host: Some(r.host),
                    // Asked for and left out: what was known stays.
                    subscriptions_read: ask.subscriptions && r.subscriptions.is_some(),
                    subscriptions: r.subscriptions,
                    events: Some(r.events),
                    brief: true,
                    round: true,
                    ..Fetched::default()
                });
            }
        }
        let mut f = by_endpoint(client, target, ask, max_body).await?;
        f.round_refused = ask.round;
        Ok(f)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| ClientError::Timeout(timeout.as_millis() as u64))?
}

/// A round's reads endpoint by endpoint (agents older than `/v1/round`).
async fn by_endpoint(
    client: &reqwest::Client,
    target: &Target,
    ask: Ask,
    max_body: usize,
) -> Result<Fetched, ClientError> {
    let full = || get(client, target, "/v1/stats", max_body, false, model::parse_stats);
    let (stats, brief_refused) = match ask.brief {
        false => (full().await?, false),
        true => match get(client, target, "/v1/stats?fields=brief", max_body, false, model::parse_stats).await {
            Err(ClientError::Status { status: 400, .. }) => (full().await?, true),
            other => (other?, false),
        },
    };
    let host = get(client, target, "/v1/host", max_body, true, model::parse_host).await?;
    let subscriptions = match ask.subscriptions {
        true => get(client, target, "/v1/containers", max_body, true, model::parse_subscriptions).await?,
        false => None,
    };
    let events_path = format!("/v1/events?{}", ask.events_query());
    let events = get(client, target, &events_path, max_body, true, model::parse_events).await?;
    Ok(Fetched {
        stats,
        host,
        subscriptions_read: ask.subscriptions,
        subscriptions,
        events,
        brief: ask.brief,
        brief_refused,
        ..Fetched::default()
    })
}

/// A management request forwarded to an agent: its status and JSON body
/// (non-JSON bodies are wrapped as `{"error": text}`).
pub async fn forward(
    client: &reqwest::Client,
    target: &Target,
    method: Method,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(StatusCode, Value), ClientError> {
    let work = async {
        let mut req = target.request(client, method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|source| ClientError::Http { path: path.into(), source })?;
        let status = resp.status();
        let bytes = read_body(resp, path, 1 << 20).await?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::json!({"error": String::from_utf8_lossy(&bytes).trim().to_owned()}));
        Ok((status, value))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| ClientError::Timeout(timeout.as_millis() as u64))?
}
