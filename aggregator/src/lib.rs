//! The cluster aggregator: gathers every agent's state, groups containers
//! into applications, keeps history, holds applications under energy caps,
//! and serves the cluster API and dashboard.
//!
//! Layout: [`config`] (TOML), [`model`] (what agents send, parsed),
//! [`client`] (HTTP to agents), [`gather`] (the round), [`energy`] (power
//! and cap control, through `policies`), [`ceilings`] (ceilings on
//! agents), [`totals`] and [`views`] (pure sums and JSON), [`history`] and
//! [`store`] (redb), [`records`] (the records in redb or in [`etcd`], and
//! [`reconcile`] of the state with them), [`api`] (the router, callable
//! without a socket).

pub mod api;
pub mod ceilings;
pub mod client;
pub mod cluster;
pub mod config;
pub mod energy;
pub mod etcd;
pub mod gather;
pub mod history;
pub mod migrate;
pub mod model;
pub mod reconcile;
pub mod records;
pub mod scaling;
pub mod snapshot;
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
    records::{Records, Snapshot},
    state::{HostRecord, HostState, Source, State},
    store::Store,
};

pub use scaler_api::now_ms;

/// Everything the round and the API share.
pub struct Shared {
    pub cfg: AggConfig,
    /// History blocks (always local).
    pub store: Arc<Store>,
    /// Hosts registered through the API, users, applications, ceilings.
    pub records: Records,
    /// Where container and application history is read, when configured.
    pub prometheus: Option<history::prometheus::Prometheus>,
    /// With etcd: the replicas sharing the fleet (`None`: this aggregator
    /// gathers every host and leads).
    pub cluster: Option<cluster::Cluster>,
    pub history: History,
    pub state: RwLock<State>,
    pub client: reqwest::Client,
    pub started: Instant,
}

impl Shared {
    /// Opens the store in `cfg.aggregator.state_dir` and loads hosts,
    /// applications and ceilings from it and from `cfg`; with `[store]
    /// etcd`, the records come from etcd (which must answer).
    pub async fn connect(cfg: AggConfig) -> anyhow::Result<Self> {
        let store = Arc::new(Store::open(&cfg.aggregator.state_dir)?);
        let (records, cluster) = match cfg.store.etcd.is_empty() {
            true => (Records::local(store.clone()), None),
            false => {
                let etcd = Arc::new(etcd::Etcd::from_config(&cfg.store).map_err(anyhow::Error::msg)?);
                let (me, url) = replica_identity(&cfg);
                let c = cluster::Cluster::new(me, url, cfg.store.lease_s, etcd.clone(), &cfg.store.prefix);
                (Records::etcd(etcd, cfg.store.prefix.clone()), Some(c))
            }
        };
        let snap = records.snapshot().await.map_err(|e| anyhow::anyhow!("reading the records: {e}"))?;
        let mut me = Self::with(cfg, store, records, snap)?;
        me.cluster = cluster;
        Ok(me)
    }

    /// [`Shared::connect`] for the local store only, without a runtime.
    pub fn open(cfg: AggConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.store.etcd.is_empty(), "Shared::open is for the local store; use connect");
        let store = Arc::new(Store::open(&cfg.aggregator.state_dir)?);
        let records = Records::local(store.clone());
        let snap = records::local_snapshot(&store)?;
        Self::with(cfg, store, records, snap)
    }

    fn with(cfg: AggConfig, store: Arc<Store>, records: Records, snap: Snapshot) -> anyhow::Result<Self> {
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
        records.still_fresh(&snap);
        reconcile::apply(&mut st, snap, &cfg, true)?;
        let history = History::new(&cfg.history, cfg.aggregator.poll_ms, store.clone());
        let timeout = Duration::from_millis(cfg.history.prometheus_timeout_ms);
        let prometheus = cfg
            .history
            .prometheus
            .as_deref()
            .map(|url| history::prometheus::Prometheus::new(url, timeout))
            .transpose()
            .map_err(|e| anyhow::anyhow!("history.prometheus: {e}"))?;
        let state = RwLock::new(st);
        let started = Instant::now();
        Ok(Self { cfg, store, records, prometheus, cluster: None, history, state, client, started })
    }

    /// Whether this replica gathers `host`.
    pub fn owns(&self, host: &str) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.owns(host))
    }

    /// Whether this replica shows `host` as its own in lists and metrics:
    /// it gathers it, or nobody does and it leads (with replicas each
    /// host is shown by one replica; without, every host here).
    pub fn shows(&self, host: &str) -> bool {
        match &self.cluster {
            None => true,
            Some(c) => c.owns(host) || (self.leads() && c.unowned(host)),
        }
    }

    /// Whether this replica runs the cluster-wide controllers.
    pub fn leads(&self) -> bool {
        self.cluster.as_ref().is_none_or(cluster::Cluster::leads)
    }

    /// On taking the lead: the ceilings the previous leader set, so they
    /// can be changed or cleared.
    pub async fn adopt_ceilings(&self) {
        match self.records.snapshot().await {
            Ok(snap) => reconcile::take_ceilings(&mut self.write(), snap.ceilings),
            Err(e) => warn!("taking over the ceilings: {e}"),
        }
    }

    /// With etcd: takes in what other replicas changed since the last time.
    pub async fn refresh(&self) -> Result<bool, String> {
        let Some(snap) = self.records.refresh().await? else { return Ok(false) };
        let mut st = self.write();
        if !self.records.still_fresh(&snap) {
            return Ok(false);
        }
        reconcile::apply(&mut st, snap, &self.cfg, false).map_err(|e| e.to_string())?;
        Ok(true)
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
    let shared = Arc::new(Shared::connect(cfg).await?);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let hosts = shared.read().hosts.len();
    info!(%addr, hosts, "scaler aggregator listening on {scheme}://{addr} (dashboard at /)");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let rounds = tokio::spawn(gather::run(shared.clone(), stop_rx.clone()));
    let flusher = tokio::spawn(flush_loop(shared.clone(), stop_rx.clone()));
    let refresher = tokio::spawn(refresh_loop(shared.clone(), stop_rx.clone()));
    let member = tokio::spawn(cluster::run(shared.clone(), stop_rx));
    let app = api::router(shared.clone());
    scaler_api::serve::serve(listener, app, scaler_api::serve::Limits::default(), tls, async move {
        scaler_api::process::shutdown_signal().await;
        let _ = stop_tx.send(true);
    })
    .await?;
    let _ = rounds.await;
    let _ = flusher.await;
    let _ = refresher.await;
    let _ = member.await;
    shared.records.drain(Duration::from_secs(5)).await;
    let sh = shared.clone();
    match tokio::task::spawn_blocking(move || sh.history.flush(now_ms())).await {
        Ok(Ok(rows)) => info!(rows, "history flushed"),
        Ok(Err(e)) => warn!("final history flush: {e}"),
        Err(e) => warn!("final history flush: {e}"),
    }
    info!("scaler aggregator stopped");
    Ok(())
}

/// This replica's name and the URL the others reach it at (`[store]
/// replica`, `advertise`, else from the host's name and `listen`).
fn replica_identity(cfg: &AggConfig) -> (String, String) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".into(), |h| h.trim().to_owned());
    let listen = cfg.aggregator.listen;
    let name = cfg.store.replica.clone().unwrap_or_else(|| format!("{host}-{}", listen.port()));
    let scheme = if cfg.aggregator.tls_cert.is_some() { "https" } else { "http" };
    let url = cfg.store.advertise.clone().unwrap_or_else(|| match listen.ip().is_unspecified() {
        true => format!("{scheme}://{host}:{}", listen.port()),
        false => format!("{scheme}://{listen}"),
    });
    (name, url.trim_end_matches('/').to_owned())
}

/// With etcd: other replicas' changes taken in once a round.
async fn refresh_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if shared.cfg.store.etcd.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(shared.cfg.aggregator.poll_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        match shared.refresh().await {
            Ok(_) if failing => {
                info!("store: etcd answers again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                warn!("store: reading the records: {e}");
                failing = true;
            }
            Err(_) => {}
        }
    }
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

/// Hands the heap memory freed so far back to the system. glibc keeps
/// freed chunks in its arenas and returns only the top of each heap, so
/// after a round had dropped the fleet's previous stats much of it stayed
/// resident (heap 277 MiB against RSS 400 MiB at 1,000 hosts).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only walks glibc's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
