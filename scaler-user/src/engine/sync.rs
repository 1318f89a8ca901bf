//! Keeps each engine's view of its containers' limits equal to what the
//! agent has in force.
//!
//! The tick writes cgroupfs at once and [`EngineSync::record`]s the value;
//! a worker thread sends it through the engine's API once it has been
//! unchanged for `sync_settle_ms` (or `sync_max_delay_ms` after it first
//! changed). An engine writes the cgroup itself when it takes a value, so a
//! value the tick wrote while the call was under way could be overwritten
//! with the older one, and LXD rounds CPU to whole milliseconds: after
//! every call the tick writes the latest value again
//! ([`EngineSync::take_rewrites`]), and until then and shortly after
//! ([`EngineSync::settling`]) a difference read from cgroupfs is not taken
//! for a change made outside scaler.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Condvar, Mutex, PoisonError},
    time::{Duration, Instant},
};

use policies::Resource;
use serde::Serialize;

use super::{
    ApplyPath, Engine, EngineConfig,
    api::{self, DockerShape, Limits},
};

/// How long after a call a difference is still the call's.
const QUIET: Duration = Duration::from_millis(500);
/// How long a failed call waits before the next try.
const RETRY: Duration = Duration::from_secs(5);

/// Calls to one engine's API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CallStats {
    pub calls: u64,
    pub failures: u64,
    pub total_us: u64,
    pub max_us: u64,
}

/// One container's limits on their way to its engine.
#[derive(Debug)]
struct Target {
    engine: Engine,
    key: String,
    want: BTreeMap<Resource, Option<u64>>,
    sent: BTreeMap<Resource, Option<u64>>,
    first_change: Option<Instant>,
    last_change: Instant,
    in_flight: bool,
    /// Resources the last call touched, to be written again by the tick.
    rewrite: Vec<Resource>,
    /// What the last call asked the engine to set.
    attempted: BTreeMap<Resource, Option<u64>>,
    quiet_until: Option<Instant>,
    retry_at: Option<Instant>,
    failing: bool,
    /// How Docker stores this container's limits (read before its first
    /// call).
    docker: Option<DockerShape>,
}

/// A value to write again after an engine call: `value` (what the agent
/// wants) unless cgroupfs holds something else than it or `attempted`
/// (what the call sent): then someone changed it meanwhile, and the step
/// adopts that instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub cgroup: String,
    pub resource: Resource,
    pub value: Option<u64>,
    pub attempted: Option<u64>,
}

impl Rewrite {
    /// Whether `found` in cgroupfs is this agent's or its engine call's
    /// doing (LXD keeps CPU in whole milliseconds: 10 millicores up).
    pub fn ours(&self, found: Option<u64>) -> bool {
        let lxd_round = |v: Option<u64>| v.map(|m| m.div_ceil(10).max(1) * 10);
        [self.value, self.attempted, lxd_round(self.value), lxd_round(self.attempted)].contains(&found)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Containers an engine runs: cgroup -> (engine, its id there).
    owned: HashMap<String, (Engine, String)>,
    targets: HashMap<String, Target>,
    /// What the event log should say (cgroup, message).
    notes: Vec<(String, String)>,
    stats: BTreeMap<Engine, CallStats>,
    /// Everything pending is due now (shutting down).
    flush: bool,
    stop: bool,
}

struct Inner {
    cfg: EngineConfig,
    host_mem: u64,
    state: Mutex<State>,
    wake: Condvar,
    /// How many containers engines run: with none (a host of plain
    /// cgroups), the tick's calls return without taking the lock.
    owned: std::sync::atomic::AtomicUsize,
}

/// Shared by the sampler (which containers engines run), the actuator
/// (what was written) and the worker thread (the engines' APIs).
#[derive(Clone)]
pub struct EngineSync {
    inner: Arc<Inner>,
}

impl EngineSync {
    /// `host_mem` stands for "no memory limit" with engines that cannot
    /// remove one.
    pub fn new(cfg: EngineConfig, host_mem: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                host_mem,
                state: Mutex::default(),
                wake: Condvar::new(),
                owned: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the worker (none when limits go to cgroupfs only).
    pub fn spawn(&self) -> Option<std::thread::JoinHandle<()>> {
        if self.inner.cfg.apply != ApplyPath::Engine {
            return None;
        }
        let me = self.clone();
        std::thread::Builder::new().name("engine-sync".into()).spawn(move || me.work()).ok()
    }

    /// Sends everything pending now and waits for it (at most `within`).
    pub fn flush(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut st = self.state();
        st.flush = true;
        self.inner.wake.notify_all();
        while st.targets.values().any(|t| t.in_flight || (t.want != t.sent && !t.failing)) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
            st = self
                .inner
                .wake
                .wait_timeout(st, left.min(Duration::from_millis(50)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    pub fn stop(&self) {
        self.state().stop = true;
        self.inner.wake.notify_all();
    }

    /// The containers engines run now (after a discovery scan).
    pub fn set_owned(&self, owned: HashMap<String, (Engine, String)>) {
        let mut st = self.state();
        st.targets.retain(|cg, t| owned.get(cg).is_some_and(|(e, k)| *e == t.engine && *k == t.key));
        self.inner.owned.store(owned.len(), std::sync::atomic::Ordering::Relaxed);
        st.owned = owned;
    }

    /// Whether engines run any container here (no lock taken).
    fn any_owned(&self) -> bool {
        self.inner.owned.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Whether limits are sent to engines at all (`apply = "engine"`).
    pub fn applies(&self) -> bool {
        self.inner.cfg.apply == ApplyPath::Engine
    }

    /// The engine that runs the container at `cgroup`.
    pub fn owner(&self, cgroup: &str) -> Option<Engine> {
        if !self.any_owned() {
            return None;
        }
        self.state().owned.get(cgroup).map(|(e, _)| *e)
    }

    /// The tick wrote `value` for `resource` (CPU and memory go to engines).
    pub fn record(&self, cgroup: &str, resource: Resource, value: Option<u64>) {
        if self.inner.cfg.apply != ApplyPath::Engine
            || !matches!(resource, Resource::Cpu | Resource::Mem)
            || !self.any_owned()
        {
            return;
        }
        let mut st = self.state();
        let Some((engine, key)) = st.owned.get(cgroup).cloned() else { return };
        let now = Instant::now();
        let t = st.targets.entry(cgroup.to_owned()).or_insert_with(|| Target {
            engine,
            key,
            want: BTreeMap::new(),
            sent: BTreeMap::new(),
            first_change: None,
            last_change: now,
            in_flight: false,
            rewrite: Vec::new(),
            attempted: BTreeMap::new(),
            quiet_until: None,
            retry_at: None,
            failing: false,
            docker: None,
        });
        if t.want.get(&resource) == Some(&value) {
            // Nothing new (the tick confirms what is in force every time).
            return;
        }
        t.want.insert(resource, value);
        t.last_change = now;
        if t.sent.get(&resource) != Some(&value) {
            t.first_change.get_or_insert(now);
        }
        drop(st);
        self.inner.wake.notify_all();
    }

    /// Whether a difference between cgroupfs and what the agent set may be
    /// an engine call's doing (under way, or just done and not yet
    /// written again).
    pub fn settling(&self, cgroup: &str) -> bool {
        // Targets live only for owned containers (and go with them).
        if !self.any_owned() {
            return false;
        }
        let st = self.state();
        st.targets
            .get(cgroup)
            .is_some_and(|t| t.in_flight || !t.rewrite.is_empty() || t.quiet_until.is_some_and(|q| Instant::now() < q))
    }

    /// The values to write again after engine calls.
    pub fn take_rewrites(&self) -> Vec<Rewrite> {
        let mut st = self.state();
        let now = Instant::now();
        let mut out = Vec::new();
        for (cg, t) in &mut st.targets {
            if t.in_flight || t.rewrite.is_empty() {
                continue;
            }
            for r in std::mem::take(&mut t.rewrite) {
                if let Some(&value) = t.want.get(&r) {
                    let attempted = t.attempted.get(&r).copied().flatten();
                    out.push(Rewrite { cgroup: cg.clone(), resource: r, value, attempted });
                }
            }
            t.quiet_until = Some(now + QUIET);
        }
        out
    }

    /// What the event log should say since the last call.
    pub fn take_notes(&self) -> Vec<(String, String)> {
        std::mem::take(&mut self.state().notes)
    }

    pub fn stats(&self) -> BTreeMap<Engine, CallStats> {
        self.state().stats.clone()
    }

    /// A target due now, or how long until the next one is.
    fn due(&self, st: &State, now: Instant) -> Result<String, Duration> {
        let settle = Duration::from_millis(self.inner.cfg.sync_settle_ms);
        let max_delay = Duration::from_millis(self.inner.cfg.sync_max_delay_ms);
        let mut wait = Duration::from_secs(1);
        for (cg, t) in &st.targets {
            if t.in_flight || t.want == t.sent && t.retry_at.is_none() {
                continue;
            }
            let mut at = (t.last_change + settle).min(t.first_change.map_or(t.last_change, |f| f + max_delay));
            if let Some(r) = t.retry_at {
                at = at.max(r);
            }
            if st.flush && !t.failing {
                at = now;
            }
            match at.checked_duration_since(now) {
                None => return Ok(cg.clone()),
                Some(d) => wait = wait.min(d.max(Duration::from_millis(1))),
            }
        }
        Err(wait)
    }

    fn work(&self) {
        let mut st = self.state();
        while !st.stop {
            let cg = match self.due(&st, Instant::now()) {
                Ok(cg) => cg,
                Err(wait) => {
                    st = self.inner.wake.wait_timeout(st, wait).unwrap_or_else(PoisonError::into_inner).0;
                    continue;
                }
            };
            let Some(t) = st.targets.get_mut(&cg) else { continue };
            let changed =
                |r: Resource| t.want.get(&r).copied().filter(|v| t.retry_at.is_some() || t.sent.get(&r) != Some(v));
            let limits = Limits { cpu: changed(Resource::Cpu), mem: changed(Resource::Mem) };
            if limits == Limits::default() {
                // Set back to what the engine has: nothing to send.
                (t.first_change, t.retry_at) = (None, None);
                continue;
            }
            t.in_flight = true;
            let (engine, key, mut docker) = (t.engine, t.key.clone(), t.docker);
            drop(st);

            let started = Instant::now();
            let call = std::panic::AssertUnwindSafe(|| match self.inner.cfg.socket(engine) {
                Some(sock) => {
                    let timeout = self.inner.cfg.timeout();
                    api::update(engine, sock, &key, limits, &mut docker, self.inner.host_mem, timeout)
                        .map_err(|e| e.to_string())
                }
                None => Err(format!("no {} socket configured", engine.name())),
            });
            // A panic is a failed call, not a worker gone with the call
            // marked under way.
            let result = std::panic::catch_unwind(call).unwrap_or_else(|_| Err("the call panicked".into()));
            let us = started.elapsed().as_micros() as u64;

            st = self.state();
            let stats = st.stats.entry(engine).or_default();
            stats.calls += 1;
            stats.total_us += us;
            stats.max_us = stats.max_us.max(us);
            if result.is_err() {
                stats.failures += 1;
            }
            let Some(t) = st.targets.get_mut(&cg) else { continue };
            t.in_flight = false;
            t.docker = docker;
            for (r, v) in [(Resource::Cpu, limits.cpu), (Resource::Mem, limits.mem)] {
                if let Some(v) = v {
                    t.attempted.insert(r, v);
                    if !t.rewrite.contains(&r) {
                        t.rewrite.push(r);
                    }
                }
            }
            let note = match result {
                Ok(()) => {
                    for (r, v) in [(Resource::Cpu, limits.cpu), (Resource::Mem, limits.mem)] {
                        if let Some(v) = v {
                            t.sent.insert(r, v);
                        }
                    }
                    t.first_change = (t.want != t.sent).then(Instant::now);
                    t.retry_at = None;
                    std::mem::take(&mut t.failing).then(|| format!("{} took the limits again", engine.name()))
                }
                Err(e) => {
                    t.retry_at = Some(Instant::now() + RETRY);
                    (!std::mem::replace(&mut t.failing, true)).then(|| {
                        format!("{} did not take the limits ({e}); they are in force through cgroupfs", engine.name())
                    })
                }
            };
            if let Some(n) = note {
                st.notes.push((cg, n));
            }
            self.inner.wake.notify_all();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::{
        io::{Read, Write},
        os::unix::net::UnixListener,
    };

    use super::*;

    /// A fake Docker on a real socket: answers every update with 200 and
    /// sends each request body down `tx`.
    fn fake_docker(sock: &std::path::Path) -> std::sync::mpsc::Receiver<String> {
        let listener = UnixListener::bind(sock).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let mut s = s.unwrap();
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                if req.starts_with("GET ") {
                    // The container's configuration: created with a quota.
                    let body = r#"{"HostConfig":{"CpuQuota":20000,"CpuPeriod":100000,"Memory":0,"MemorySwap":-1}}"#;
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    continue;
                }
                let _ = tx.send(req.split("\r\n\r\n").nth(1).unwrap_or("").to_owned());
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"Warnings\":null}").unwrap();
            }
        });
        rx
    }

    #[test]
    fn settled_values_reach_the_engine_once_and_are_written_again_after() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let bodies = fake_docker(&sock);
        let cfg = EngineConfig {
            docker_socket: sock,
            sync_settle_ms: 100,
            sync_max_delay_ms: 1000,
            ..EngineConfig::default()
        };
        let sync = EngineSync::new(cfg, 1 << 30);
        let worker = sync.spawn().unwrap();
        sync.set_owned([("/docker/abc".to_owned(), (Engine::Docker, "abc".to_owned()))].into());
        // Three changes within the settle time: one call, with the last.
        sync.record("/docker/abc", Resource::Cpu, Some(300));
        sync.record("/docker/abc", Resource::Cpu, Some(400));
        sync.record("/docker/abc", Resource::Mem, Some(64 << 20));
        sync.record("/other", Resource::Cpu, Some(1)); // not an engine's
        sync.record("/docker/abc", Resource::DiskRead, Some(1)); // engines are not told
        let body = bodies.recv_timeout(Duration::from_secs(5)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"CpuPeriod": 100000, "CpuQuota": 40000, "Memory": 67108864, "MemorySwap": -1})
        );
        assert!(bodies.recv_timeout(Duration::from_millis(400)).is_err(), "nothing changed since: no second call");
        // The call is done: the tick writes both again, then a short quiet.
        let mut rewrites = Vec::new();
        for _ in 0..50 {
            rewrites = sync.take_rewrites();
            if !rewrites.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        rewrites.sort_by_key(|r| r.resource as u8);
        let got: Vec<_> = rewrites.iter().map(|r| (r.cgroup.as_str(), r.resource, r.value)).collect();
        assert_eq!(
            got,
            vec![("/docker/abc", Resource::Cpu, Some(400)), ("/docker/abc", Resource::Mem, Some(64 << 20))]
        );
        assert!(rewrites[0].ours(Some(400)) && !rewrites[0].ours(Some(730)), "a third value is someone else's");
        assert!(sync.settling("/docker/abc"));
        assert!(!sync.settling("/other"));
        std::thread::sleep(QUIET + Duration::from_millis(50));
        assert!(!sync.settling("/docker/abc"));
        // Only what changed is sent next.
        sync.record("/docker/abc", Resource::Cpu, Some(500));
        let body = bodies.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(body, r#"{"CpuPeriod":100000,"CpuQuota":50000}"#);
        sync.flush(Duration::from_secs(5));
        assert_eq!(sync.stats()[&Engine::Docker].calls, 2);
        sync.stop();
        worker.join().unwrap();
    }

    #[test]
    fn a_failing_engine_is_noted_once_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EngineConfig {
            docker_socket: dir.path().join("absent.sock"),
            sync_settle_ms: 0,
            ..EngineConfig::default()
        };
        let sync = EngineSync::new(cfg, 1 << 30);
        let worker = sync.spawn().unwrap();
        sync.set_owned([("/docker/abc".to_owned(), (Engine::Docker, "abc".to_owned()))].into());
        sync.record("/docker/abc", Resource::Cpu, Some(300));
        let mut notes = Vec::new();
        for _ in 0..100 {
            notes.extend(sync.take_notes());
            if !notes.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].1.starts_with("docker did not take the limits ("), "{notes:?}");
        sync.record("/docker/abc", Resource::Cpu, Some(350));
        std::thread::sleep(Duration::from_millis(200));
        assert!(sync.take_notes().is_empty(), "one note per outage");
        assert_eq!(sync.stats()[&Engine::Docker].failures, 1, "the retry waits {RETRY:?}");
        // The container is gone from the engine: its target goes too.
        sync.set_owned(HashMap::new());
        assert!(!sync.settling("/docker/abc"));
        sync.stop();
        worker.join().unwrap();
    }
}
