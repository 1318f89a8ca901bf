//! What the engines call their containers, asked off the sampler thread.
//!
//! Discovery (on the sampler thread) only reads what the engines said last
//! ([`Directory::lookup`], never waiting on a socket); a container it does
//! not know yet is asked of its engine by a thread of the directory's own,
//! which then tells the sampler to scan again ([`Directory::take_news`]):
//! a new container is named by its engine within a tick or two, and an
//! engine that hangs (up to `timeout_ms` a call) never holds the tick.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Condvar, Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::{Engine, EngineConfig, EngineInfo, api};

/// The shortest gap between two listings of one engine.
const RELIST_MIN: Duration = Duration::from_millis(250);
/// How long an engine that failed is left alone.
const DOWN_BACKOFF: Duration = Duration::from_secs(2);
/// How long a lookup that set off a listing waits for it (a new container
/// then has its engine's name at once); lookups share one such wait a
/// second, so a scan never waits longer in all.
const ASK_WAIT: Duration = Duration::from_millis(30);

/// What an engine said about its containers, and when.
struct Listing {
    at: Instant,
    /// By id (Docker, Podman: the full hex id; LXD: the instance name).
    by_key: HashMap<String, EngineInfo>,
}

#[derive(Default)]
struct State {
    listings: HashMap<Engine, Listing>,
    /// Keys discovery asked about, and when first: one a listing made after
    /// that lacks is no engine's (a plain LXC container), until refresh.
    asked: HashMap<(Engine, String), Instant>,
    /// Engines to list as soon as allowed.
    wanted: BTreeSet<Engine>,
    /// When each engine was last listed (or tried).
    tried: HashMap<Engine, Instant>,
    /// Engines whose last listing failed (logged once per outage).
    down: BTreeSet<Engine>,
    /// A listing changed something discovery should see.
    news: bool,
    /// Until when lookups may wait for answers (one such wait a second).
    ask_deadline: Option<Instant>,
    worker: bool,
    stop: bool,
}

struct Shared {
    cfg: EngineConfig,
    state: Mutex<State>,
    wake: Condvar,
}

/// Names and labels of the engines' containers (see the module docs).
pub struct Directory {
    shared: Arc<Shared>,
}

impl Directory {
    pub fn new(cfg: EngineConfig) -> Self {
        Self { shared: Arc::new(Shared { cfg, state: Mutex::default(), wake: Condvar::new() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `engine` calls the container with `key`, from its last listing;
    /// `None` while it is being asked (or when it is not the engine's).
    pub fn lookup(&self, engine: Engine, key: &str) -> Option<EngineInfo> {
        self.shared.cfg.socket(engine)?;
        let now = Instant::now();
        let refresh = Duration::from_millis(self.shared.cfg.refresh_ms);
        let mut st = self.state();
        let asked = *st.asked.entry((engine, key.to_owned())).or_insert(now);
        let listing = st.listings.get(&engine);
        if let Some(info) = listing.and_then(|l| l.by_key.get(key)) {
            return Some(info.clone());
        }
        // Not in a listing made after it was first asked about: ask.
        let answered = listing.is_some_and(|l| l.at > asked && now.duration_since(asked) < refresh);
        if !answered {
            st.wanted.insert(engine);
            if !st.worker {
                st.worker = true;
                let shared = Arc::clone(&self.shared);
                let spawned = std::thread::Builder::new().name("engine-names".into()).spawn(move || work(&shared));
                if spawned.is_err() {
                    st.worker = false;
                }
            }
            self.shared.wake.notify_all();
            // Wait a little for the answer, within the shared budget.
            let deadline = match st.ask_deadline {
                Some(d) if now < d + Duration::from_secs(1) => d,
                _ => *st.ask_deadline.insert(now + ASK_WAIT),
            };
            while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                st = self.shared.wake.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
                let l = st.listings.get(&engine);
                if l.is_some_and(|l| l.at > asked) {
                    return l.and_then(|l| l.by_key.get(key)).cloned();
                }
            }
        }
        None
    }

    /// Whether a listing brought something new since the last call (the
    /// sampler then scans again).
    pub fn take_news(&self) -> bool {
        std::mem::take(&mut self.state().news)
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.state().stop = true;
        self.shared.wake.notify_all();
    }
}

/// The engines due a listing now, or how long until one is.
fn due(st: &State, refresh: Duration, now: Instant) -> Result<Vec<Engine>, Duration> {
    let mut wait = Duration::from_secs(1);
    let mut out = Vec::new();
    for e in Engine::ALL {
        let wanted = st.wanted.contains(&e) || st.listings.get(&e).is_some_and(|l| now.duration_since(l.at) >= refresh);
        if !wanted {
            continue;
        }
        let gap = if st.down.contains(&e) { DOWN_BACKOFF } else { RELIST_MIN };
        match st.tried.get(&e).map(|&t| t + gap).and_then(|at| at.checked_duration_since(now)) {
            Some(left) if !left.is_zero() => wait = wait.min(left),
            _ => out.push(e),
        }
    }
    if out.is_empty() { Err(wait) } else { Ok(out) }
}

fn work(shared: &Shared) {
    let refresh = Duration::from_millis(shared.cfg.refresh_ms);
    let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    while !st.stop {
        let engines = match due(&st, refresh, Instant::now()) {
            Ok(e) => e,
            Err(wait) => {
                st = shared.wake.wait_timeout(st, wait).unwrap_or_else(PoisonError::into_inner).0;
                continue;
            }
        };
        // A listing is as new as its start: a key asked about while it ran
        // may be missing from it, and is asked again.
        let started = Instant::now();
        for &e in &engines {
            st.wanted.remove(&e);
            st.tried.insert(e, started);
        }
        drop(st);
        let results: Vec<_> = engines
            .into_iter()
            .filter_map(|e| Some((e, shared.cfg.socket(e)?.to_path_buf())))
            .map(|(e, sock)| (e, api::list(e, &sock, shared.cfg.timeout()), sock))
            .collect();
        st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for (e, result, sock) in results {
            match result {
                Ok(all) => {
                    if st.down.remove(&e) {
                        tracing::info!(engine = e.name(), "engine answers again");
                    }
                    let by_key: HashMap<String, EngineInfo> = all.into_iter().map(|i| (i.id.clone(), i)).collect();
                    // A new container answered, or a name or label changed.
                    st.news |= st.listings.get(&e).is_none_or(|l| l.by_key != by_key);
                    st.listings.insert(e, Listing { at: started, by_key });
                }
                Err(err) => {
                    if st.down.insert(e) && sock.exists() {
                        tracing::warn!(engine = e.name(), "listing containers: {err}");
                    }
                }
            }
        }
        st.asked.retain(|_, t| now.duration_since(*t) < refresh);
        // Lookups waiting for these answers.
        shared.wake.notify_all();
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

    #[test]
    fn lookups_never_wait_and_an_answer_brings_news() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let served = Arc::clone(&calls);
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                // A slow engine: 300 ms an answer.
                std::thread::sleep(Duration::from_millis(300));
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = r#"[{"Id":"abc","Names":["/web"],"Labels":{"app":"shop"}}]"#;
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            }
        });
        let cfg = EngineConfig { docker_socket: sock, lxd_socket: "".into(), ..EngineConfig::default() };
        let d = Directory::new(cfg);
        let t = Instant::now();
        assert_eq!(d.lookup(Engine::Docker, "abc"), None, "not known yet: asked in the background");
        assert_eq!(d.lookup(Engine::Lxd, "abc"), None, "LXD is switched off");
        assert!(t.elapsed() < Duration::from_millis(100), "the caller waits at most {ASK_WAIT:?} on the engine");
        assert!(wait(|| d.take_news()), "the answer brings news");
        assert_eq!(d.lookup(Engine::Docker, "abc").unwrap().name, "web");
        // Not the engine's: asked once more (nothing new: no news), then
        // left alone.
        let listed = calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(d.lookup(Engine::Docker, "plain"), None);
        assert!(wait(|| calls.load(std::sync::atomic::Ordering::SeqCst) > listed));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!d.take_news(), "the same listing again is no news");
        let before = calls.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..5 {
            assert_eq!(d.lookup(Engine::Docker, "plain"), None);
        }
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), before, "a known miss is not asked again");
    }

    fn wait(mut f: impl FnMut() -> bool) -> bool {
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            f()
        })
    }
}
