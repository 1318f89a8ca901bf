//! The agent process: the sampler thread and the HTTP server around shared
//! state.
pub mod sampler;
pub mod state;

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use tracing::{error, info};

use crate::{
    cgroup::layout::Layout,
    config::Config,
    ebpf::{Kernel, loader::LoadOptions, preflight},
};

use self::{
    sampler::Sampler,
    state::{KernelFeatures, Shared},
};

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Starts the agent and serves until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    preflight::check(&cfg.agent.btf_path)?;
    let layout = Layout::detect()?;
    raise_fd_limit();
    let mut kernel = Kernel::load(
        &layout.v2,
        &LoadOptions { btf_path: cfg.agent.btf_path.clone(), cpu_flush_hz: cfg.agent.cpu_flush_hz },
    )?;
    if cfg.agent.bpf_stats
        && let Err(e) = kernel.enable_stats()
    {
        tracing::warn!("bpf_stats: {e}");
    }
    let shared = Arc::new(Shared {
        host: cfg.agent.hostname.clone().unwrap_or_else(hostname),
        tick_ms: cfg.agent.tick_ms,
        history_len: cfg.agent.history_len,
        started: Instant::now(),
        layout: if layout.is_hybrid() { "hybrid" } else { "v2" },
        kernel: KernelFeatures {
            cpu: true,
            net: kernel.net_enabled,
            disk: kernel.disk_enabled,
            mem_events: kernel.mem_events_enabled,
        },
        inner: RwLock::new(Default::default()),
    });

    let listener = tokio::net::TcpListener::bind(cfg.agent.listen)
        .await
        .with_context(|| format!("binding {}", cfg.agent.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, layout = shared.layout, tick_ms = cfg.agent.tick_ms, "scaler agent listening on http://{addr}");

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (shared, stop) = (shared.clone(), stop.clone());
        let mut sampler = Sampler::new(layout, &cfg);
        let tick = Duration::from_millis(cfg.agent.tick_ms);
        std::thread::Builder::new().name("sampler".into()).spawn(move || {
            sample_loop(&mut sampler, &kernel, &shared, tick, &stop);
            drop(kernel); // detaches the programs
        })?
    };

    let app = crate::http::router(shared.clone());
    let stop_http = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stop_http.store(true, Ordering::SeqCst);
        })
        .await?;
    stop.store(true, Ordering::SeqCst);
    if sampler.join().is_err() {
        error!("sampler thread panicked");
    }
    info!("scaler agent stopped");
    Ok(())
}

fn sample_loop(sampler: &mut Sampler, kernel: &Kernel, shared: &Shared, tick: Duration, stop: &AtomicBool) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let result = sampler.tick(kernel);
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        shared.publish(time_ms, start.elapsed().as_micros() as u64, result);
        next += tick;
        let now = Instant::now();
        if next < now {
            // Fell behind (a slow tick): start again from now rather than
            // running a burst of ticks.
            next = now;
        }
        std::thread::sleep(next - now);
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

/// Each watched container keeps a dozen cgroupfs files open: raise the soft
/// open-file limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
