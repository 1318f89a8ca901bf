//! `GET /metrics`: the cluster in the Prometheus text format (0.0.4).

use std::{fmt::Write as _, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse};

use crate::{
    Shared,
    model::{ENERGY, RESOURCES},
    now_ms,
    state::State as AggState,
    totals, views,
};
use scaler_api::names::escape_label as escape;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn containers(out: &mut String, s: &Shared, st: &AggState) {
    family(out, "scaler_cluster_container_usage", "gauge", "Usage per container (agent units; energy in mW).");
    let mut limits = String::new();
    for h in st.hosts.values().filter(|h| s.shows(&h.name)) {
        for (name, p) in views::parts_of_host(h) {
            let l = format!("host=\"{}\",container=\"{}\"", escape(&h.name), escape(name));
            for (res, r) in RESOURCES.iter().zip(p.readings) {
                if let Some(u) = r.usage {
                    let _ = writeln!(out, "scaler_cluster_container_usage{{{l},resource=\"{res}\"}} {u}");
                }
                if let Some(c) = r.current {
                    let _ = writeln!(limits, "scaler_cluster_container_limit{{{l},resource=\"{res}\"}} {c}");
                }
            }
        }
    }
    family(out, "scaler_cluster_container_limit", "gauge", "Limit in force per container.");
    out.push_str(&limits);
}

fn apps(out: &mut String, st: &AggState) {
    family(out, "scaler_cluster_app_usage", "gauge", "Application totals of usage over reporting containers.");
    let mut limits = String::new();
    let mut caps = String::new();
    for (name, a) in &st.apps {
        let parts: Vec<_> = a
            .record
            .containers
            .iter()
            .filter_map(|c| st.hosts.get(&c.host).filter(|h| !h.stale).and_then(|h| views::part_of(h, &c.name)))
            .collect();
        let t = totals::totals(&parts);
        let l = format!("app=\"{}\"", escape(name));
        for (i, res) in RESOURCES.iter().enumerate() {
            if let Some(u) = t[i].usage {
                let _ = writeln!(out, "scaler_cluster_app_usage{{{l},resource=\"{res}\"}} {u}");
            }
            if let Some(c) = t[i].current.filter(|_| i != ENERGY) {
                let _ = writeln!(limits, "scaler_cluster_app_limit{{{l},resource=\"{res}\"}} {c}");
            }
        }
        if let Some(c) = a.record.cap_mw {
            let _ = writeln!(caps, "scaler_cluster_app_power_cap_mw{{{l}}} {c}");
        }
    }
    family(out, "scaler_cluster_app_limit", "gauge", "Application totals of limits in force.");
    out.push_str(&limits);
    family(out, "scaler_cluster_app_power_cap_mw", "gauge", "Energy (power) cap, mW.");
    out.push_str(&caps);
}

/// What this replica gathers (with replicas each host and container is
/// in one replica's metrics, applications in the leader's).
pub fn render(s: &Shared) -> String {
    let now = now_ms();
    let st = s.read();
    let mut out = String::with_capacity(4096);
    family(&mut out, "scaler_cluster_host_up", "gauge", "1 if the host answered the latest round.");
    for h in st.hosts.values().filter(|h| s.shows(&h.name)) {
        let _ = writeln!(out, "scaler_cluster_host_up{{host=\"{}\"}} {}", escape(&h.name), u8::from(!h.stale));
    }
    family(&mut out, "scaler_cluster_host_data_age_seconds", "gauge", "Age of the host's latest data.");
    for h in st.hosts.values().filter(|h| s.shows(&h.name)) {
        if let Some(a) = h.age_ms(now) {
            let _ = writeln!(
                out,
                "scaler_cluster_host_data_age_seconds{{host=\"{}\"}} {:.3}",
                escape(&h.name),
                a as f64 / 1e3
            );
        }
    }
    family(&mut out, "scaler_cluster_host_power_mw", "gauge", "Host power (RAPL or model), mW.");
    for h in st.hosts.values().filter(|h| s.shows(&h.name)) {
        if let Some(p) = &h.power {
            let _ = writeln!(
                out,
                "scaler_cluster_host_power_mw{{host=\"{}\",source=\"{}\"}} {}",
                escape(&h.name),
                p.source,
                p.power_mw
            );
        }
    }
    containers(&mut out, s, &st);
    // Applications are the leader's: it gathers their hosts.
    if s.leads() {
        apps(&mut out, &st);
    }
    family(&mut out, "scaler_cluster_rounds_total", "counter", "Gathering rounds since start.");
    let _ = writeln!(out, "scaler_cluster_rounds_total {}", st.rounds.rounds);
    family(&mut out, "scaler_cluster_round_seconds", "gauge", "Duration of the latest round.");
    if let Some(d) = st.rounds.durations_ms.back() {
        let _ = writeln!(out, "scaler_cluster_round_seconds {:.6}", d / 1e3);
    }
    out
}

pub async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&s))
}
