//! The cluster aggregator: gathers every agent's state, groups containers
//! into applications, keeps history, holds applications under energy caps,
//! and serves the cluster API and dashboard.
//!
//! Layout: [`config`] (TOML), [`model`] (what agents send, parsed),
//! [`client`] (HTTP to agents), [`gather`] (the round), [`energy`] (power
//! and cap control, through `policies`), [`ceilings`] (ceilings on
//! agents), [`totals`] and [`views`] (pure sums and JSON), [`history`] and
//! [`store`] (redb), [`api`] (the router, callable without a socket).

pub mod api;
pub mod ceilings;
pub mod client;
pub mod config;
pub mod energy;
pub mod gather;
pub mod history;
pub mod model;
pub mod scaling;
pub mod state;
pub mod store;
pub mod totals;
pub mod views;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use policies::energy::PowerModel;
use tracing::{info, warn};

use self::{
    config::AggConfig,
    history::History,
    state::{AppRecord, AppState, CeilingRecord, CeilingState, HostRecord, HostState, Source, State},
    store::{APPS, CEILINGS, HOSTS, Store, USERS},
};

pub use scaler_api::now_ms;

/// Everything the round and the API share.
pub struct Shared {
    pub cfg: AggConfig,
    pub store: Arc<Store>,
    pub history: History,
    pub state: RwLock<State>,
    pub client: reqwest::Client,
    pub started: Instant,
}

impl Shared {
    /// Opens the store in `cfg.aggregator.state_dir` and loads hosts,
    /// applications and ceilings from it and from `cfg`.
    pub fn open(cfg: AggConfig) -> anyhow::Result<Self> {
        let store = Arc::new(Store::open(&cfg.aggregator.state_dir)?);
        let a = &cfg.aggregator;
        let identity = a.agents_client_cert.as_deref().zip(a.agents_client_key.as_deref());
        let tls = scaler_api::tls::client_config(a.agents_ca.as_deref(), identity)
            .map_err(|e| anyhow::anyhow!("aggregator.agents_ca: {e}"))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_millis(cfg.aggregator.timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(2)
            .user_agent(concat!("scaler-aggregator/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let mut st = State::default();
        for h in &cfg.hosts {
            let rec = HostRecord { url: h.url.clone(), token: h.token.clone(), idle_mw: h.idle_mw, max_mw: h.max_mw };
            st.hosts.insert(h.name.clone(), HostState::new(h.name.clone(), rec, Source::Config));
        }
        for (name, rec) in store.load::<HostRecord>(HOSTS)? {
            if st.hosts.contains_key(&name) {
                warn!(host = %name, "registered through the API and in config: config wins");
                continue;
            }
            // Stored by an older version, or damaged: held to the API's rules.
            if let Err((field, why)) = config::check_host(&rec.url, rec.token.as_deref(), rec.idle_mw, rec.max_mw) {
                warn!(host = %name, "stored host left out: {field}: {why}");
                continue;
            }
            st.hosts.insert(name.clone(), HostState::new(name, rec, Source::Api));
        }
        for (name, rec) in store.load::<state::UserRecord>(USERS)? {
            st.users.insert(name, rec);
        }
        for (name, rec) in store.load::<AppRecord>(APPS)? {
            let mut app = AppState::new(rec);
            if app.record.cap_mw.is_some() {
                app.controller = Some(std::sync::Mutex::new(cfg.energy.controller.build()?));
            }
            st.apps.insert(name, app);
        }
        for (key, record) in store.load::<CeilingRecord>(CEILINGS)? {
            if let Some((host, name)) = key.split_once('/') {
                let c = state::ContainerRef { host: host.into(), name: name.into() };
                st.ceilings.insert(c, CeilingState { record, sent: None, attempt_ms: 0, error: None });
            }
        }
        let history = History::new(&cfg.history, cfg.aggregator.poll_ms, store.clone());
        Ok(Self { cfg, store, history, state: RwLock::new(st), client, started: Instant::now() })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A host's power model: its own coefficients (config or registration),
    /// else the agent's, else `[energy]`'s.
    pub fn model_of(&self, h: &HostState) -> Option<PowerModel> {
        let e = &self.cfg.energy;
        let agent = h.info.as_ref().and_then(|i| i.power_model);
        [h.record.idle_mw.zip(h.record.max_mw), agent, Some((e.idle_mw, e.max_mw))]
            .into_iter()
            .flatten()
            .find_map(|(i, m)| PowerModel::try_new(i, m).ok())
    }
}

/// Entry point of `scaler aggregator`.
pub fn main(config: Option<&Path>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut cfg = match config {
        Some(p) => AggConfig::load(p)?,
        None => AggConfig::default(),
    };
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Some(l) = listen {
        cfg.aggregator.listen = l;
        cfg.validate()?;
    }
    scaler_api::process::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(cfg))
}

/// Serves until SIGINT/SIGTERM, then flushes history.
pub async fn run(cfg: AggConfig) -> anyhow::Result<()> {
    let listen = cfg.aggregator.listen;
    let tls = cfg.aggregator.tls().load().map_err(anyhow::Error::msg)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shared = Arc::new(Shared::open(cfg)?);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let hosts = shared.read().hosts.len();
    info!(%addr, hosts, "scaler aggregator listening on {scheme}://{addr} (dashboard at /)");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let rounds = tokio::spawn(gather::run(shared.clone(), stop_rx.clone()));
    let flusher = tokio::spawn(flush_loop(shared.clone(), stop_rx));
    let app = api::router(shared.clone());
    scaler_api::serve::serve(listener, app, scaler_api::serve::Limits::default(), tls, async move {
        scaler_api::process::shutdown_signal().await;
        let _ = stop_tx.send(true);
    })
    .await?;
    let _ = rounds.await;
    let _ = flusher.await;
    let sh = shared.clone();
    match tokio::task::spawn_blocking(move || sh.history.flush(now_ms())).await {
        Ok(Ok(rows)) => info!(rows, "history flushed"),
        Ok(Err(e)) => warn!("final history flush: {e}"),
        Err(e) => warn!("final history flush: {e}"),
    }
    info!("scaler aggregator stopped");
    Ok(())
}

async fn flush_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(shared.cfg.history.flush_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let sh = shared.clone();
        let t = Instant::now();
        let r = tokio::task::spawn_blocking(move || sh.history.flush(now_ms())).await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match r {
            Ok(Ok(rows)) => {
                let mut st = shared.write();
                st.rounds.last_flush_ms = ms;
                st.rounds.last_flush_rows = rows;
            }
            Ok(Err(e)) => warn!("history flush: {e}"),
            Err(e) => warn!("history flush: {e}"),
        }
    }
}
