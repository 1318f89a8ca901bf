//! The round: every `poll_ms`, read every agent at once (each within
//! `timeout_ms`), merge what came back, run the energy-cap controllers,
//! record history, then send the ceilings that changed. A host that does not
//! answer in time, or answers garbage, is marked stale and keeps its last
//! data; nothing else waits for it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::Semaphore, task::JoinSet};
use tracing::{info, warn};

use super::{
    Shared,
    client::{self, Ask, ClientError, Fetched, Target},
    energy::{self, Member, Step},
    history,
    model::{CPU, ENERGY, Readings},
    now_ms,
    state::{BRIEF_RETRY_MS, HostState, State},
    totals,
};

/// A host to read: name, agent, what to ask it.
type Job = (String, Target, Ask);

/// Subscriptions (bounds, ceilings in force) are read every this many
/// rounds, hosts staggered, and every round on hosts with ceilings to
/// reconcile: they change rarely and are a third of what a round reads.
const SUBSCRIPTIONS_EVERY: u64 = 5;

/// Runs rounds until `stop` turns true.
pub async fn run(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(shared.cfg.aggregator.poll_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        round(&shared).await;
    }
}

/// One round; returns when its ceilings have been sent.
pub async fn round(shared: &Arc<Shared>) {
    let started = Instant::now();
    let now = now_ms();
    let targets: Vec<Job> = {
        let st = shared.read();
        let round = st.rounds.rounds;
        let mut capped: std::collections::BTreeSet<&str> = st.ceilings.keys().map(|c| c.host.as_str()).collect();
        for a in st.apps.values().filter(|a| a.record.cap_mw.is_some()) {
            capped.extend(a.record.containers.iter().map(|c| c.host.as_str()));
        }
        st.hosts
            .values()
            .filter(|h| shared.owns(&h.name))
            .enumerate()
            .map(|(i, h)| {
                let subs = h.rounds_ok == 0
                    || capped.contains(h.name.as_str())
                    || (round + i as u64).is_multiple_of(SUBSCRIPTIONS_EVERY);
                let retry = |refused: Option<u64>| refused.is_none_or(|t| now.saturating_sub(t) >= BRIEF_RETRY_MS);
                let ask = Ask {
                    events_since: h.events_since,
                    subscriptions: subs,
                    round: retry(h.round_refused_ms),
                    brief: retry(h.brief_refused_ms),
                };
                (h.name.clone(), h.target.clone(), ask)
            })
            .collect()
    };
    release(shared, &mut shared.write());
    let events = fetch_all(shared, targets, now).await;
    let gathered = started.elapsed();
    let sh = shared.clone();
    let merged = tokio::task::spawn_blocking(move || {
        let (points, actions) = {
            let mut st = sh.write();
            for e in events {
                st.push_event(e);
            }
            if sh.leads() {
                control(&sh, &mut st, now);
            }
            let points = points(&st, now);
            // Ceilings are the leader's to send (it gathers their hosts).
            let due = if sh.leads() { super::ceilings::due(&st, now) } else { Vec::new() };
            (points, due)
        };
        let t = Instant::now();
        if let Err(e) = sh.history.record(now, points) {
            warn!("history: {e}");
        }
        // What this round's merge and history freed goes back to the
        // system now, not at the allocator's leisure (it kept the peak).
        super::release_freed_memory();
        (actions, t.elapsed())
    })
    .await;
    let (actions, record) = match merged {
        Ok(v) => v,
        Err(e) => {
            warn!("round merge failed: {e}");
            return;
        }
    };
    super::ceilings::send(shared, actions, now).await;
    let mut st = shared.write();
    st.rounds.last_gather_ms = gathered.as_secs_f64() * 1e3;
    st.rounds.last_record_ms = record.as_secs_f64() * 1e3;
    st.rounds.last_round_ms = Some(now);
    st.rounds.push(started.elapsed().as_secs_f64() * 1e3);
}

/// Hosts another replica gathers: stale here, saying so (their data is
/// the other replica's to show).
fn release(shared: &Shared, st: &mut State) {
    let Some(c) = &shared.cluster else { return };
    for h in st.hosts.values_mut().filter(|h| !c.owns(&h.name)) {
        h.stale = true;
        h.error = Some("gathered by another replica".into());
    }
}

/// Reads every target at once and merges each answer as it comes: a
/// host's new stats replace its old ones then, so a round never holds two
/// copies of the fleet. Returns the new events, oldest first.
async fn fetch_all(shared: &Arc<Shared>, targets: Vec<Job>, now: u64) -> Vec<super::model::Event> {
    let a = &shared.cfg.aggregator;
    let sem = Arc::new(Semaphore::new(a.concurrency));
    let timeout = Duration::from_millis(a.timeout_ms);
    let mut set = JoinSet::new();
    for (name, target, ask) in targets {
        let (client, sem, max_body) = (shared.client.clone(), sem.clone(), a.max_body_bytes);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = client::fetch(&client, &target, ask, timeout, max_body).await;
            (name, r)
        });
    }
    let mut events = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((name, r)) => merge(shared, &mut shared.write(), now, &name, r, &mut events),
            Err(e) => warn!("gather task failed: {e}"),
        }
    }
    events.sort_by_key(|e: &super::model::Event| e.time_ms);
    events
}

fn merge(
    shared: &Shared,
    st: &mut State,
    now: u64,
    name: &str,
    r: Result<Fetched, ClientError>,
    events: &mut Vec<super::model::Event>,
) {
    let Some(h) = st.hosts.get_mut(name) else { return };
    h.last_attempt_ms = Some(now);
    match r {
        Ok(f) => {
            if h.stale && h.rounds_ok + h.rounds_failed > 0 {
                info!(host = %name, "host answers again");
            }
            apply(shared, h, f, now, events);
        }
        Err(e) => {
            if !h.stale || h.rounds_ok + h.rounds_failed == 0 {
                warn!(host = %name, "host stale: {e}");
            }
            h.stale = true;
            h.error = Some(e.to_string());
            h.rounds_failed += 1;
        }
    }
}

fn apply(shared: &Shared, h: &mut HostState, f: Fetched, now: u64, events: &mut Vec<super::model::Event>) {
    h.stale = false;
    h.error = None;
    h.rounds_ok += 1;
    h.last_ok_ms = Some(now);
    h.info = f.host;
    if f.round_refused {
        h.round_refused_ms = Some(now);
    } else if f.round {
        h.round_refused_ms = None;
    }
    if f.brief_refused {
        h.brief_refused_ms = Some(now);
    } else if f.brief {
        h.brief_refused_ms = None;
    }
    if f.subscriptions_read {
        h.subscriptions = f.subscriptions;
    }
    if let Some(list) = f.events {
        let last = h.events_since;
        for mut e in list {
            if last.is_some_and(|l| (e.time_ms, e.id) <= l) {
                continue;
            }
            h.events_since = Some(h.events_since.map_or((e.time_ms, e.id), |l| l.max((e.time_ms, e.id))));
            e.host = h.name.clone();
            events.push(e);
        }
    }
    let Some(stats) = f.stats else { return };
    let cpu = energy::container_cpu(&mut h.prev_cpu, &stats);
    let info = h.info.as_ref();
    h.power = shared.model_of(h).and_then(|model| {
        energy::host_power(
            model,
            info.and_then(|i| i.capacity[CPU]),
            info.and_then(|i| i.usage_cpu),
            info.and_then(|i| i.rapl_mw),
            &cpu,
        )
    });
    h.stats = Some(stats);
}

/// One control period for every capped application, then for every
/// application that scales at its own level.
fn control(shared: &Shared, st: &mut State, now: u64) {
    super::scaling::rebalance_energy(st);
    cap_control(shared, st, now);
    super::scaling::control(shared, st, |st, app| members(shared, st, app));
}

fn cap_control(shared: &Shared, st: &mut State, now: u64) {
    let capped: Vec<String> =
        st.apps.iter().filter(|(_, a)| a.record.cap_mw.is_some()).map(|(n, _)| n.clone()).collect();
    for name in capped {
        let members = members(shared, st, &name);
        let Some(app) = st.apps.get_mut(&name) else { continue };
        let step = energy::control(app, members, now, shared.cfg.energy.tolerance_pct);
        if let Step::Ceilings(list) = step {
            for (c, v) in list {
                app.ceilings.insert(c.clone(), v);
                super::ceilings::want(shared, &mut st.ceilings, &c, &name, Some(v));
            }
        }
    }
}

fn members(shared: &Shared, st: &State, app: &str) -> Result<Vec<Member>, String> {
    let Some(a) = st.apps.get(app) else { return Err("no such app".into()) };
    a.record
        .containers
        .iter()
        .map(|c| {
            let h = st.hosts.get(&c.host).ok_or_else(|| format!("host {} unknown", c.host))?;
            if h.stale {
                return Err(format!("host {} stale", c.host));
            }
            let s = h.container(&c.name);
            let s = s.ok_or_else(|| format!("container {}/{} not found", c.host, c.name))?;
            let (cpu_mc, power_mw) = h.power_of(&c.name).unwrap_or_default();
            let sub = h.subscription(&c.name);
            let bounds = sub.and_then(|s| s.bounds[CPU]);
            let capacity = h.info.as_ref().and_then(|i| i.capacity[CPU]).unwrap_or(1_000_000);
            let (min, max) = bounds.unwrap_or((shared.cfg.energy.min_ceiling_mc, capacity));
            let ceiling = a
                .ceilings
                .get(c)
                .copied()
                .or(sub.and_then(|s| s.ceiling_cpu))
                .or(s.resources[CPU].current)
                .unwrap_or(max);
            let unmet_mc = match (s.cpu_throttled_usec, s.interval_ms) {
                (Some(t), i) if i > 0 => t / i,
                _ => 0,
            };
            Ok(Member {
                container: c.clone(),
                cpu_mc,
                unmet_mc,
                ceiling,
                min,
                max: max.max(min),
                power_mw,
                idle_mw: h.power.as_ref().map_or(0, |p| p.idle_mw),
            })
        })
        .collect()
}

/// This round's history points: every fresh host and container, and every
/// application with at least one fresh container.
fn points(st: &State, now: u64) -> Vec<(String, Readings)> {
    let fresh = |h: &&HostState| !h.stale && h.last_ok_ms == Some(now);
    // Sized once: grown, it would copy about 13 MB at 1,000 hosts.
    let containers: usize =
        st.hosts.values().filter(fresh).map(|h| h.stats.as_ref().map_or(0, |s| s.containers.len())).sum();
    let mut out = Vec::with_capacity(containers + st.hosts.len() + st.apps.len());
    for h in st.hosts.values().filter(fresh) {
        let parts = super::views::parts_of_host(h);
        for (name, part) in &parts {
            out.push((history::container_key(&h.name, name), part.readings));
        }
        let mut r = totals::readings(&totals::totals(parts.iter().map(|(_, p)| p)));
        r[ENERGY].usage = h.power.as_ref().map(|p| p.power_mw);
        r[ENERGY].current = None;
        out.push((history::host_key(&h.name), r));
    }
    for (name, a) in &st.apps {
        let parts: Vec<_> = a
            .record
            .containers
            .iter()
            .filter_map(|c| {
                let h = st.hosts.get(&c.host).filter(|h| !h.stale && h.last_ok_ms == Some(now))?;
                super::views::part_of(h, &c.name)
            })
            .collect();
        if parts.is_empty() {
            continue;
        }
        let mut r = totals::readings(&totals::totals(&parts));
        r[ENERGY].current = a.record.cap_mw;
        out.push((history::app_key(name), r));
    }
    out
}
