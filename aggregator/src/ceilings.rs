//! CPU ceilings on agents: what the energy caps want in force, reconciled
//! each round against what the agents report. A ceiling to clear stays
//! recorded (in the store too) until its agent has confirmed the clear, so
//! clearing a cap while a host is down still takes effect when it returns.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use reqwest::Method;
use serde_json::json;
use tracing::warn;

use super::{
    Shared, client,
    client::Target,
    model::Event,
    state::{CeilingRecord, CeilingState, ContainerRef, State},
    store::CEILINGS,
};

/// A failed or unconfirmed request is retried after this long.
const RETRY_MS: u64 = 2_000;

fn key(c: &ContainerRef) -> String {
    format!("{}/{}", c.host, c.name)
}

/// Records that `app` wants `cpu` (or a clear, `None`) on `c`. New entries
/// and clears are stored; value changes stay in memory (a restart reads the
/// ceiling back from the agent).
pub fn want(
    shared: &Shared,
    ceilings: &mut BTreeMap<ContainerRef, CeilingState>,
    c: &ContainerRef,
    app: &str,
    cpu: Option<u64>,
) {
    let record = CeilingRecord { app: app.to_owned(), cpu };
    let persist = match ceilings.get_mut(c) {
        Some(s) => {
            let changed_kind = s.record.cpu.is_some() != cpu.is_some() || s.record.app != app;
            s.record = record.clone();
            changed_kind
        }
        None if cpu.is_none() => return,
        None => {
            ceilings.insert(c.clone(), CeilingState { record: record.clone(), sent: None, attempt_ms: 0, error: None });
            true
        }
    };
    // Not waited for: the writer says when it fails.
    if persist && let Err(e) = shared.records.put(CEILINGS, &key(c), &record) {
        warn!("storing ceiling of {}: {e}", key(c));
    }
}

/// Clears every ceiling `app` set (on cap removal or app deletion), and
/// those on containers no longer in it.
pub fn clear_app(shared: &Shared, st: &mut State, app: &str) {
    let keep: Vec<ContainerRef> = match st.apps.get(app) {
        Some(a) if a.record.cap_mw.is_some() || a.record.scaling.is_some() => a.record.containers.clone(),
        _ => Vec::new(),
    };
    let mine: Vec<ContainerRef> = st
        .ceilings
        .iter()
        .filter(|(c, s)| s.record.app == app && s.record.cpu.is_some() && !keep.contains(c))
        .map(|(c, _)| c.clone())
        .collect();
    for c in mine {
        want(shared, &mut st.ceilings, &c, app, None);
        if let Some(a) = st.apps.get_mut(app) {
            a.ceilings.remove(&c);
        }
    }
}

/// A request to make.
pub struct Action {
    pub container: ContainerRef,
    pub target: Target,
    pub cpu: Option<u64>,
    /// The value last confirmed, for the event.
    pub old: Option<u64>,
    pub app: String,
}

/// The requests due now: a value not yet sent, or one the agent does not
/// report (retried every [`RETRY_MS`]). Hosts that are stale wait.
pub fn due(st: &State, now: u64) -> Vec<Action> {
    let mut out = Vec::new();
    for (c, s) in &st.ceilings {
        let Some(h) = st.hosts.get(&c.host) else { continue };
        if h.stale {
            continue;
        }
        let reported = h.subscriptions.as_ref().map(|_| h.subscription(&c.name).and_then(|x| x.ceiling_cpu));
        let retry = now.saturating_sub(s.attempt_ms) >= RETRY_MS;
        let unsent = s.sent != Some(s.record.cpu);
        let disagrees = reported.is_some_and(|r| r != s.record.cpu);
        if (unsent && (s.error.is_none() || retry)) || (disagrees && retry) {
            out.push(Action {
                container: c.clone(),
                target: h.target.clone(),
                cpu: s.record.cpu,
                old: s.sent.flatten(),
                app: s.record.app.clone(),
            });
        }
    }
    out
}

/// Sends `actions` at once and records the outcome.
pub async fn send(shared: &Arc<Shared>, actions: Vec<Action>, now: u64) {
    if actions.is_empty() {
        return;
    }
    let timeout = Duration::from_millis(shared.cfg.aggregator.timeout_ms.max(1000));
    let mut set = tokio::task::JoinSet::new();
    for a in actions {
        let client = shared.client.clone();
        set.spawn(async move {
            let path = format!("/v1/containers/{}/ceiling", a.container.name);
            let r = match a.cpu {
                Some(v) => {
                    client::forward(&client, &a.target, Method::PUT, &path, Some(&json!({"cpu": v})), timeout).await
                }
                None => client::forward(&client, &a.target, Method::DELETE, &path, None, timeout).await,
            };
            let outcome = match r {
                // A clear of something the agent no longer has is done too.
                Ok((s, _)) if s.is_success() || (a.cpu.is_none() && s.as_u16() == 404) => Ok(()),
                Ok((s, body)) => Err(format!("{path}: HTTP {}: {}", s.as_u16(), body["error"].as_str().unwrap_or(""))),
                Err(e) => Err(e.to_string()),
            };
            (a, outcome)
        });
    }
    let mut done = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(v) = r {
            done.push(v);
        }
    }
    let mut st = shared.write();
    for (a, outcome) in done {
        let Some(s) = st.ceilings.get_mut(&a.container) else { continue };
        s.attempt_ms = now;
        if s.record.cpu != a.cpu {
            continue; // superseded while in flight
        }
        match outcome {
            Ok(()) => {
                s.sent = Some(a.cpu);
                s.error = None;
                let big = match (a.old, a.cpu) {
                    (Some(o), Some(n)) => o.abs_diff(n) * 20 >= o.max(1),
                    _ => true,
                };
                if a.cpu.is_none() {
                    st.ceilings.remove(&a.container);
                    if let Err(e) = shared.records.delete(CEILINGS, &key(&a.container)) {
                        warn!("store: {e}");
                    }
                }
                if big {
                    st.push_event(Event {
                        id: 0,
                        time_ms: now,
                        host: a.container.host.clone(),
                        container: a.container.name.clone(),
                        resource: "cpu".into(),
                        old: a.old,
                        new: a.cpu,
                        reason: match a.cpu {
                            Some(_) => format!("ceiling: energy cap of app {}", a.app),
                            None => format!("ceiling cleared: app {}", a.app),
                        },
                        source: "aggregator".into(),
                    });
                }
            }
            Err(e) => {
                if s.error.as_deref() != Some(e.as_str()) {
                    warn!("ceiling on {}: {e}", key(&a.container));
                }
                s.error = Some(e);
            }
        }
    }
}
