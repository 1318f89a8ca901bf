//! Energy-cap controllers on the `bigdata` trace:
//! `cargo run --release -p policies --example energy`.

use policies::energy::{CapControllerConfig, CapSimConfig, simulate_cap};
use policies::{Trace, traces};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let csv = traces::by_name("bigdata").ok_or("no bigdata trace")?;
    let trace = Trace::parse(&csv)?;
    println!(
        "| controller | period s | settled | settling max s | steady error mean % | steady error max % | binding periods over cap+5 % | peak over cap % | mean power W | unmet cpu % |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for period_ms in [1_000, 10_000] {
        for ctl in [CapControllerConfig::original(), CapControllerConfig::inverting()] {
            let cfg = CapSimConfig { period_ms, ..CapSimConfig::default() };
            let r = simulate_cap(&trace, ctl.build()?.as_mut(), &cfg)?;
            println!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} |",
                r.controller,
                period_ms / 1000,
                r.settled,
                r.settling_ms_max.map_or("-".into(), |s| format!("{:.0}", s as f64 / 1000.0)),
                r.steady_error_pct,
                r.steady_error_max_pct,
                r.over_cap_pct,
                r.peak_over_cap_pct,
                r.mean_power_mw / 1000.0,
                r.unmet_cpu_pct
            );
        }
    }
    Ok(())
}
