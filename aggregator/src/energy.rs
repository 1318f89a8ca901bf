//! Power per host, container and application, and one energy-cap control
//! period. The arithmetic is the `policies` crate's: the host model or
//! RAPL reading ([`PowerSource`]), attribution by CPU share
//! ([`attribute`]) and the cap controllers; this module only feeds them what
//! the agents reported.

use std::collections::HashMap;

use policies::energy::{CapContainer, CapInput, PowerModel, PowerSource, attribute};
use serde::Serialize;

use super::{
    model::{CPU, Stats},
    state::{AppState, ContainerRef},
};

/// A host's power and its split among containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPower {
    pub power_mw: u64,
    /// Power above idle (what is split among containers).
    pub active_mw: u64,
    /// `rapl` or `model`.
    pub source: &'static str,
    pub idle_mw: u64,
    pub max_mw: u64,
    /// The host's CPU use behind the figure, millicores.
    pub cpu_used_mc: u64,
    pub cpu_capacity_mc: u64,
    /// Per container of the host's stats, in their order: CPU over the
    /// round (millicores) and attributed power (mW).
    #[serde(skip)]
    pub containers: Vec<(u64, u64)>,
}

/// CPU per container over the last round, millicores: the difference of the
/// cumulative CPU time between two rounds over the difference of the
/// agent's sample times (a whole round, not only the agent's last tick);
/// the agent's instantaneous `cpu.usage` when there is no earlier reading
/// or the counter went backwards (an agent restart). One figure per
/// container of `stats`, in its order. Updates `prev`.
pub fn container_cpu(prev: &mut HashMap<String, (u64, u64)>, stats: &Stats) -> Vec<u64> {
    let mut timed = 0;
    let out = stats
        .containers
        .iter()
        .map(|c| {
            let instant = c.resources[CPU].usage.unwrap_or(0);
            let (Some(usec), Some(t)) = (c.cpu_usec, c.time_ms) else { return instant };
            timed += 1;
            // Updated in place: a round allocates nothing for a container
            // it has seen before.
            match prev.get_mut(c.name.as_str()) {
                Some(p) => match std::mem::replace(p, (usec, t)) {
                    (pu, pt) if t > pt && usec >= pu => (usec - pu) / (t - pt),
                    _ => instant,
                },
                None => {
                    prev.insert(c.name.clone(), (usec, t));
                    instant
                }
            }
        })
        .collect();
    // Containers gone since the last round (or without a time now).
    if prev.len() != timed {
        let names: std::collections::HashSet<&str> = stats
            .containers
            .iter()
            .filter(|c| c.cpu_usec.is_some() && c.time_ms.is_some())
            .map(|c| c.name.as_str())
            .collect();
        prev.retain(|n, _| names.contains(n.as_str()));
    }
    out
}

/// The host's power with `model` (or its RAPL reading) and each container's
/// share. `cpu_used` is the whole host's CPU use when the agent reports it;
/// otherwise the containers' sum stands in. `None` without a CPU capacity.
pub fn host_power(
    model: PowerModel,
    capacity_mc: Option<u64>,
    cpu_used: Option<u64>,
    rapl_mw: Option<u64>,
    containers: &[u64],
) -> Option<HostPower> {
    let capacity = capacity_mc.filter(|c| *c > 0)?;
    let sum: u64 = containers.iter().sum();
    let used = cpu_used.unwrap_or(sum);
    let (source, name) = match rapl_mw {
        Some(measured_mw) => (PowerSource::Rapl { measured_mw, idle_mw: model.idle_mw() }, "rapl"),
        None => (PowerSource::Model(model), "model"),
    };
    let (power_mw, active_mw) = source.host_power(used, capacity);
    let shares = attribute(active_mw, containers, used);
    Some(HostPower {
        power_mw,
        active_mw,
        source: name,
        idle_mw: model.idle_mw(),
        max_mw: model.max_mw(),
        cpu_used_mc: used,
        cpu_capacity_mc: capacity,
        containers: containers.iter().copied().zip(shares).collect(),
    })
}

/// One capped container as the control period sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub container: ContainerRef,
    pub cpu_mc: u64,
    /// Throttled time over the agent's interval, millicores.
    pub unmet_mc: u64,
    /// Ceiling in force (ours, the agent's, or the limit found).
    pub ceiling: u64,
    pub min: u64,
    pub max: u64,
    pub power_mw: u64,
    pub idle_mw: u64,
}

/// What a control period decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No change this period (why).
    Hold(String),
    /// New ceilings, one per member.
    Ceilings(Vec<(ContainerRef, u64)>),
}

/// Periods within the tolerance before a cap counts as settled.
pub const SETTLE_PERIODS: u64 = 5;

/// One period of `app`'s cap at `now_ms`. `members` is `Err(why)` when some
/// container has no fresh data (then the ceilings in force are kept).
pub fn control(app: &mut AppState, members: Result<Vec<Member>, String>, now_ms: u64, tolerance_pct: u64) -> Step {
    let Some(cap_mw) = app.cap_in_force() else { return Step::Hold("no cap".into()) };
    let members = match members {
        Ok(m) if m.is_empty() => Err("no containers".to_owned()),
        other => other,
    };
    let members = match members {
        Ok(m) => m,
        Err(why) => {
            app.cap.state = format!("holding: {why}");
            app.cap.within_since_ms = None;
            return Step::Hold(why);
        }
    };
    let power: u64 = members.iter().map(|m| m.power_mw).sum();
    let idle = members.iter().map(|m| m.idle_mw).sum::<u64>() / members.len() as u64;
    app.cap.power_mw = Some(power);
    app.cap.periods += 1;
    let within = power.abs_diff(cap_mw) * 100 <= cap_mw * tolerance_pct;
    if within {
        let since = *app.cap.within_since_ms.get_or_insert(now_ms);
        app.cap.within_periods += 1;
        if app.cap.settled_after_ms.is_none() && app.cap.within_periods >= SETTLE_PERIODS {
            app.cap.settled_after_ms = Some(since.saturating_sub(app.record.cap_set_ms.unwrap_or(since)));
        }
    } else {
        app.cap.within_since_ms = None;
        app.cap.within_periods = 0;
    }
    let Some(ctl) = app.controller.as_mut().map(|m| m.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner))
    else {
        app.cap.state = "holding: no controller".into();
        return Step::Hold("no controller".into());
    };
    let cs: Vec<CapContainer> = members
        .iter()
        .map(|m| CapContainer { ceiling: m.ceiling, usage: m.cpu_mc, unmet: m.unmet_mc, min: m.min, max: m.max })
        .collect();
    let ceilings = ctl.update(&CapInput { cap_mw, power_mw: power, idle_mw: idle, containers: &cs });
    app.cap.state = "controlling".into();
    Step::Ceilings(members.into_iter().map(|m| m.container).zip(ceilings).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use policies::energy::CapControllerConfig;

    use super::*;
    use crate::{
        model::{AgentContainer, Readings},
        state::AppRecord,
    };

    fn stats(cs: &[(&str, u64, u64, u64)]) -> Stats {
        Stats {
            host: None,
            time_ms: 0,
            containers: cs
                .iter()
                .map(|&(name, usage, usec, t)| {
                    let mut resources = Readings::default();
                    resources[CPU].usage = Some(usage);
                    AgentContainer {
                        name: name.into(),
                        cgroup: String::new(),
                        kind: "",
                        time_ms: Some(t),
                        interval_ms: 200,
                        resources,
                        cpu_usec: Some(usec),
                        cpu_throttled_usec: None,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn cpu_over_the_round_from_cumulative_time() {
        let mut prev = HashMap::new();
        // First round: the instantaneous value.
        assert_eq!(container_cpu(&mut prev, &stats(&[("a", 7, 1_000_000, 10_000)])), [7]);
        // 1.5 CPU-seconds over 1 s = 1500 millicores; b is new.
        let two = stats(&[("a", 9, 2_500_000, 11_000), ("b", 4, 500, 11_000)]);
        assert_eq!(container_cpu(&mut prev, &two), [1500, 4]);
        // Counter reset (agent restart): the instantaneous value again; b
        // is gone, and forgotten (back later, it starts afresh).
        assert_eq!(container_cpu(&mut prev, &stats(&[("a", 3, 10, 12_000)])), [3]);
        assert_eq!(prev.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(container_cpu(&mut prev, &stats(&[("a", 3, 1_010, 13_000), ("b", 6, 900_000, 13_000)])), [1, 6]);
    }

    #[test]
    fn model_power_split_by_cpu_share() {
        let m = PowerModel::try_new(20_000, 80_000).unwrap();
        let cs = [500, 1000];
        // 1600 of 2000 millicores busy: 20 + 60 x 0.8 = 68 W, 48 W active.
        let p = host_power(m, Some(2000), Some(1600), None, &cs).unwrap();
        assert_eq!((p.power_mw, p.active_mw, p.source), (68_000, 48_000, "model"));
        // a: 48 W x 500 / 1600.
        assert_eq!(p.containers, [(500, 15_000), (1000, 30_000)]);
        let r = host_power(m, Some(2000), None, Some(50_000), &cs).unwrap();
        assert_eq!((r.power_mw, r.active_mw, r.source, r.cpu_used_mc), (50_000, 30_000, "rapl", 1500));
        assert!(host_power(m, None, Some(1), None, &cs).is_none());
    }

    fn member(name: &str, cpu: u64, ceiling: u64, power: u64) -> Member {
        Member {
            container: ContainerRef { host: "h".into(), name: name.into() },
            cpu_mc: cpu,
            unmet_mc: 0,
            ceiling,
            min: 100,
            max: 2000,
            power_mw: power,
            idle_mw: 20_000,
        }
    }

    #[test]
    fn control_period_uses_the_policies_controller_and_tracks_settling() {
        let mut app =
            AppState::new(AppRecord { cap_mw: Some(15_000), cap_set_ms: Some(1_000), ..AppRecord::default() });
        app.controller = Some(std::sync::Mutex::new(CapControllerConfig::default().build().unwrap()));
        // 2000 millicores drawing 60 W (30 mW per millicore): budget 500.
        let step = control(&mut app, Ok(vec![member("a", 2000, 2000, 60_000)]), 2_000, 5);
        let Step::Ceilings(c) = step else { panic!("{step:?}") };
        assert_eq!(c[0].1, 500);
        for i in 0..6 {
            control(&mut app, Ok(vec![member("a", 500, 500, 15_200)]), 3_000 + i * 1000, 5);
        }
        assert_eq!(app.cap.settled_after_ms, Some(2_000));
        let held = control(&mut app, Err("host h stale".into()), 10_000, 5);
        assert_eq!(held, Step::Hold("host h stale".into()));
        assert!(app.cap.state.starts_with("holding"));
    }
}
