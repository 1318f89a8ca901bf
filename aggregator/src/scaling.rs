//! Scaling above the container, one control period after each round:
//! applications guarded at their own level get an allocation that follows
//! their total need (within their bounds, and within their user's CPU
//! budget when the user has one), split among their containers by weight;
//! unguarded ones with rebalancing move slack from containers that do not
//! use it to those that are short. The arithmetic is `policies::apps`; the
//! result goes to the agents as CPU ceilings, the lower of these and an
//! energy cap's when both hold.

use std::collections::BTreeMap;

use policies::apps::{self, Member as AppMember};

use super::{
    Shared,
    energy::Member,
    state::{AppScaling, ContainerRef, State},
};

/// One application's members as `policies::apps` sees them.
fn as_app_members(st: &State, app: &str, members: &[Member]) -> Vec<AppMember> {
    let a = st.apps.get(app);
    members
        .iter()
        .map(|m| {
            let alloc = a.and_then(|a| a.scaled.get(&m.container)).copied().unwrap_or(m.ceiling);
            AppMember {
                min: m.min,
                max: m.max,
                alloc: alloc.clamp(m.min, m.max),
                usage: m.cpu_mc,
                unmet: m.unmet_mc,
                weight: a.map_or(1, |a| a.record.weight(&m.container)),
            }
        })
        .collect()
}

/// A guarded application's period: what its need asks.
struct Guarded {
    app: String,
    scaling: AppScaling,
    members: Vec<Member>,
    asked: Vec<AppMember>,
    target: u64,
}

/// One period for every application with scaling. `members` gives an
/// application's members with fresh data (`Err(why)` holds it).
pub fn control(shared: &Shared, st: &mut State, members: impl Fn(&State, &str) -> Result<Vec<Member>, String>) {
    let scaled: Vec<(String, AppScaling)> =
        st.apps.iter().filter_map(|(n, a)| a.record.scaling.map(|s| (n.clone(), s))).collect();
    let mut guarded = Vec::new();
    let mut decided: Vec<(String, Vec<(ContainerRef, u64)>)> = Vec::new();
    for (name, scaling) in scaled {
        let ms = match members(st, &name) {
            Ok(m) if !m.is_empty() => m,
            Ok(_) => {
                hold(st, &name, "holding: no containers".into());
                continue;
            }
            Err(why) => {
                hold(st, &name, format!("holding: {why}"));
                continue;
            }
        };
        let asked = as_app_members(st, &name, &ms);
        if scaling.guard {
            let target = apps::app_target(&asked, scaling.headroom_percent, scaling.cpu_min, scaling.cpu_max);
            guarded.push(Guarded { app: name, scaling, members: ms, asked, target });
        } else if scaling.rebalance_percent > 0 {
            let new = apps::rebalance(&asked, scaling.rebalance_percent);
            decided.push((name, ms.into_iter().map(|m| m.container).zip(new).collect()));
        } else {
            hold(st, &name, "observing (not guarded, no rebalancing)".into());
        }
    }
    // Users' CPU budgets over their guarded applications.
    let mut by_user: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for (i, g) in guarded.iter().enumerate() {
        let user = st.apps.get(&g.app).and_then(|a| a.record.user.clone());
        by_user.entry(user).or_default().push(i);
    }
    let mut grants: Vec<u64> = guarded.iter().map(|g| g.target).collect();
    for (user, idx) in &by_user {
        let Some(budget) = user.as_ref().and_then(|u| st.users.get(u)).and_then(|u| u.cpu_budget_mc) else { continue };
        let asks: Vec<(u64, u64)> = idx.iter().map(|&i| (guarded[i].scaling.cpu_min, guarded[i].target)).collect();
        for (k, g) in apps::user_split(budget, &asks).into_iter().enumerate() {
            grants[idx[k]] = g;
        }
    }
    for (g, grant) in guarded.into_iter().zip(grants) {
        let split = apps::split(grant, &g.asked);
        if let Some(a) = st.apps.get_mut(&g.app) {
            a.scaling.target = Some(g.target);
        }
        decided.push((g.app, g.members.into_iter().map(|m| m.container).zip(split).collect()));
    }
    for (name, list) in decided {
        let Some(a) = st.apps.get_mut(&name) else { continue };
        a.scaling.periods += 1;
        a.scaling.allocation = Some(list.iter().map(|(_, v)| v).sum());
        a.scaling.state = "controlling".into();
        let capped = a.record.cap_mw.is_some();
        let mut wanted = Vec::with_capacity(list.len());
        for (c, v) in list {
            a.scaled.insert(c.clone(), v);
            // Under an energy cap as well, the lower ceiling holds.
            let energy = a.ceilings.get(&c).copied().filter(|_| capped);
            wanted.push((c, energy.map_or(v, |e| e.min(v))));
        }
        for (c, v) in wanted {
            super::ceilings::want(shared, &mut st.ceilings, &c, &name, Some(v));
        }
    }
}

/// Smallest cap share an application keeps after rebalancing, mW.
const MIN_CAP_SHARE_MW: u64 = 1_000;

/// One period of energy rebalancing for every user with it on: among the
/// user's capped applications, slack of caps not drawn (power under 95 %
/// of the cap in force) moves to those pressing on theirs, `rebalance_percent`
/// of it a period; the caps' sum stays what the user set.
pub fn rebalance_energy(st: &mut State) {
    let users: Vec<(String, u64)> = st
        .users
        .iter()
        .filter(|(_, u)| u.rebalance_percent > 0)
        .map(|(n, u)| (n.clone(), u.rebalance_percent))
        .collect();
    // Applications of users without rebalancing hold their caps as set.
    let on: Vec<&String> = users.iter().map(|(u, _)| u).collect();
    for a in st.apps.values_mut() {
        if a.record.cap_mw.is_none() || !a.record.user.as_ref().is_some_and(|u| on.contains(&u)) {
            a.cap_share = None;
        }
    }
    for (user, pct) in users {
        let apps: Vec<String> = st
            .apps
            .iter()
            .filter(|(_, a)| a.record.user.as_deref() == Some(user.as_str()) && a.record.cap_mw.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let total: u64 = apps.iter().filter_map(|n| st.apps.get(n)?.record.cap_mw).sum();
        let in_force: u64 = apps.iter().filter_map(|n| st.apps.get(n)?.cap_in_force()).sum();
        // One application left, or a cap set, cleared or moved since: the
        // shares no longer add up to the caps as set; start from those.
        if apps.len() < 2 || in_force != total {
            for n in &apps {
                if let Some(a) = st.apps.get_mut(n) {
                    a.cap_share = None;
                }
            }
        }
        if apps.len() < 2 {
            continue;
        }
        let members: Vec<AppMember> = apps
            .iter()
            .filter_map(|n| st.apps.get(n))
            .map(|a| {
                let alloc = a.cap_in_force().unwrap_or(0);
                let power = a.cap.power_mw.unwrap_or(0);
                // Pressing: drawing at least 95 % of its cap.
                let unmet = if power.saturating_mul(100) >= alloc.saturating_mul(95) { alloc / 10 + 1 } else { 0 };
                AppMember { min: MIN_CAP_SHARE_MW.min(alloc), max: total, alloc, usage: power, unmet, weight: 1 }
            })
            .collect();
        let new = apps::rebalance(&members, pct);
        for (name, v) in apps.iter().zip(new) {
            if let Some(a) = st.apps.get_mut(name) {
                a.cap_share = (Some(v) != a.record.cap_mw).then_some(v);
            }
        }
    }
}

fn hold(st: &mut State, app: &str, why: String) {
    if let Some(a) = st.apps.get_mut(app) {
        a.scaling.state = why;
    }
}
