//! Aggregator replicas sharing one fleet through etcd (`[store] etcd`):
//! who is alive, who gathers which host, who leads.
//!
//! Each replica holds an etcd lease of `lease_s` seconds, renewed every
//! third of it, and puts `PREFIX cluster/replicas/NAME` (its API's URL)
//! under it. Each host is gathered by exactly one replica, the one whose
//! `PREFIX cluster/owners/HOST` key (under its lease) names it: hosts that
//! carry an application's containers belong to the leader (applications,
//! their caps, scaling and users' budgets are the cluster-wide part, run
//! where their data is); the others are spread by rendezvous hashing over
//! the live replicas. A key is created only if absent, so two replicas
//! never gather one host; one that should move is released by its owner.
//! The leader holds `PREFIX cluster/leader` the same way. A replica that
//! dies stops renewing: within `lease_s` its keys vanish and the others
//! take its hosts (and the lead).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::Serialize;
use tracing::{info, warn};

use super::{Shared, etcd::Etcd};

/// What a replica knows of the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct View {
    /// Live replicas: name -> API URL.
    pub replicas: BTreeMap<String, String>,
    pub leader: Option<String>,
    /// Host -> the replica gathering it.
    pub owners: BTreeMap<String, String>,
}

pub struct Cluster {
    pub me: String,
    pub url: String,
    lease_s: u64,
    etcd: Arc<Etcd>,
    prefix: String,
    view: RwLock<View>,
}

/// FNV-1a, then MurmurHash3's finalizer (names that differ in one last
/// character would otherwise hash close): stable across builds and
/// versions, so every replica computes the same owner.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The replica a host that carries no application goes to: the highest
/// hash of (host, replica) among the live ones.
pub fn rendezvous<'a>(host: &str, replicas: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    replicas.max_by_key(|r| (fnv(&[host, r]), r.as_str()))
}

/// Who should gather each of `hosts`: the leader for those in `app_hosts`,
/// else by [`rendezvous`].
pub fn desired(hosts: &[String], app_hosts: &BTreeSet<String>, view: &View) -> BTreeMap<String, Option<String>> {
    hosts
        .iter()
        .map(|h| {
            let who = match app_hosts.contains(h) {
                true => view.leader.clone(),
                false => rendezvous(h, view.replicas.keys()).cloned(),
            };
            (h.clone(), who)
        })
        .collect()
}

impl Cluster {
    pub fn new(me: String, url: String, lease_s: u64, etcd: Arc<Etcd>, prefix: &str) -> Self {
        Self { me, url, lease_s, etcd, prefix: format!("{prefix}cluster/"), view: RwLock::default() }
    }

    pub fn view(&self) -> View {
        self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn owns(&self, host: &str) -> bool {
        self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).owners.get(host) == Some(&self.me)
    }

    /// Whether no replica gathers `host`.
    pub fn unowned(&self, host: &str) -> bool {
        !self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).owners.contains_key(host)
    }

    /// Whether this replica gathers any host.
    fn owns_any(&self) -> bool {
        self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).owners.values().any(|o| *o == self.me)
    }

    pub fn leads(&self) -> bool {
        self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).leader.as_deref() == Some(&self.me)
    }

    /// The URL of the replica gathering `host`, when it is another one.
    pub fn owner_url(&self, host: &str) -> Option<String> {
        let v = self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let owner = v.owners.get(host).filter(|o| **o != self.me)?;
        v.replicas.get(owner).cloned()
    }

    /// The leader's URL, when it is another replica.
    pub fn leader_url(&self) -> Option<String> {
        let v = self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let l = v.leader.as_ref().filter(|l| **l != self.me)?;
        v.replicas.get(l).cloned()
    }

    /// Reads who is alive, leads and owns what.
    async fn read(&self) -> Result<View, String> {
        let (_, kvs, _) = self.etcd.range_prefix(&self.prefix).await.map_err(|e| e.to_string())?;
        let mut v = View::default();
        for (k, value) in kvs {
            let value = String::from_utf8_lossy(&value).into_owned();
            match k.strip_prefix(&self.prefix) {
                Some("leader") => v.leader = Some(value),
                Some(rest) => {
                    if let Some(name) = rest.strip_prefix("replicas/") {
                        v.replicas.insert(name.to_owned(), value);
                    } else if let Some(host) = rest.strip_prefix("owners/") {
                        v.owners.insert(host.to_owned(), value);
                    }
                }
                None => {}
            }
        }
        Ok(v)
    }

    /// One pass: renew (or take) the lease, read the view, take the lead
    /// if nobody has it, claim the hosts this replica should gather and
    /// release those that should go to another live replica.
    async fn pass(&self, lease: &mut Option<i64>, shared: &Shared) -> Result<(), String> {
        let e = &self.etcd;
        let err = |x: super::etcd::EtcdError| x.to_string();
        if let Some(id) = *lease
            && e.keep_alive(id).await.map_err(err)? <= 0
        {
            warn!(replica = %self.me, "lease expired: taking a new one (this replica's hosts were released)");
            *lease = None;
        }
        let id = match *lease {
            Some(id) => id,
            None => {
                let id = e.grant(self.lease_s).await.map_err(err)?;
                e.put(&format!("{}replicas/{}", self.prefix, self.me), self.url.as_bytes(), Some(id))
                    .await
                    .map_err(err)?;
                *lease = Some(id);
                id
            }
        };
        let mut view = self.read().await?;
        if view.leader.is_none()
            && e.create(&format!("{}leader", self.prefix), self.me.as_bytes(), Some(id)).await.map_err(err)?
        {
            info!(replica = %self.me, "leading");
            view.leader = Some(self.me.clone());
        }
        let (hosts, app_hosts) = {
            let st = shared.read();
            let app_hosts: BTreeSet<String> =
                st.apps.values().flat_map(|a| a.record.containers.iter().map(|c| c.host.clone())).collect();
            (st.hosts.keys().cloned().collect::<Vec<_>>(), app_hosts)
        };
        for (host, want) in desired(&hosts, &app_hosts, &view) {
            let key = format!("{}owners/{host}", self.prefix);
            let mine = |w: &String| *w == self.me;
            // Claim a host nobody gathers that should be ours; release one
            // that should go to another live replica.
            let claim = !view.owners.contains_key(&host) && want.as_ref().is_some_and(mine);
            let release = view.owners.get(&host).is_some_and(mine)
                && want.as_ref().is_some_and(|w| !mine(w) && view.replicas.contains_key(w));
            if claim && e.create(&key, self.me.as_bytes(), Some(id)).await.map_err(err)? {
                view.owners.insert(host, self.me.clone());
            } else if release && e.delete_if(&key, self.me.as_bytes()).await.map_err(err)? {
                view.owners.remove(&host);
            }
        }
        // Hosts removed from the records: their keys go with them (they
        // would otherwise live as long as this replica's lease).
        let known: BTreeSet<&String> = hosts.iter().collect();
        let gone: Vec<String> =
            view.owners.iter().filter(|(h, o)| **o == self.me && !known.contains(h)).map(|(h, _)| h.clone()).collect();
        for host in gone {
            if e.delete_if(&format!("{}owners/{host}", self.prefix), self.me.as_bytes()).await.map_err(err)? {
                view.owners.remove(&host);
            }
        }
        let was_leader = self.leads();
        *self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner) = view;
        if !was_leader && self.leads() {
            shared.adopt_ceilings().await;
        }
        Ok(())
    }

    /// Stops gathering and leading, keeping the rest of the view: etcd
    /// has not renewed this replica's lease for most of its life, so the
    /// others may already hold its hosts and the lead.
    fn step_down(&self) {
        let mut v = self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let me = self.me.clone();
        v.owners.retain(|_, o| *o != me);
        if v.leader.as_deref() == Some(me.as_str()) {
            v.leader = None;
        }
    }

    /// Leaves the cluster (at shutdown): its keys go at once.
    pub async fn leave(&self, lease: Option<i64>) {
        if let Some(id) = lease
            && let Err(err) = self.etcd.revoke(id).await
        {
            warn!("leaving the cluster: {err}");
        }
    }
}

/// Keeps this replica in the cluster until `stop`.
pub async fn run(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(cluster) = shared.cluster.as_ref() else { return };
    let period = Duration::from_millis((cluster.lease_s * 1000 / 3).min(shared.cfg.aggregator.poll_ms).max(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease = None;
    let mut failing = false;
    // A lease lives `lease_s` after its last renewal: a replica cut off from
    // etcd for two thirds of that stops gathering and leading before
    // another can take over (no two replicas gather a host at once).
    let mut renewed = tokio::time::Instant::now();
    let give_up = Duration::from_millis(cluster.lease_s * 2000 / 3);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        match cluster.pass(&mut lease, &shared).await {
            Ok(()) => {
                renewed = tokio::time::Instant::now();
                if failing {
                    info!("cluster: etcd answers again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    warn!("cluster: {e}");
                    failing = true;
                }
                if renewed.elapsed() >= give_up && (cluster.leads() || cluster.owns_any()) {
                    warn!(
                        "cluster: no lease renewal for {give_up:?}: gathering nothing and not leading until etcd answers"
                    );
                    cluster.step_down();
                }
            }
        }
    }
    cluster.leave(lease).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hosts_spread_over_replicas_and_application_hosts_go_to_the_leader() {
        let view = View {
            replicas: ["r1", "r2", "r3"].iter().map(|r| ((*r).to_owned(), format!("http://{r}"))).collect(),
            leader: Some("r2".into()),
            owners: BTreeMap::new(),
        };
        let hosts: Vec<String> = (0..3000).map(|i| format!("h{i}")).collect();
        let apps: BTreeSet<String> = ["h1".to_owned(), "h2".to_owned()].into();
        let d = desired(&hosts, &apps, &view);
        assert_eq!((d["h1"].as_deref(), d["h2"].as_deref()), (Some("r2"), Some("r2")));
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for w in d.values() {
            *count.entry(w.as_deref().unwrap_or("nobody")).or_default() += 1;
        }
        assert!(count.values().all(|n| (900..=1100).contains(n)), "spread evenly: {count:?}");
        // r3 gone: only its hosts move.
        let mut two = view.clone();
        two.replicas.remove("r3");
        let d2 = desired(&hosts, &apps, &two);
        let moved = hosts.iter().filter(|h| d[*h] != d2[*h]).count();
        assert_eq!(moved, count["r3"], "only the dead replica's hosts move");
        assert!(rendezvous("h", std::iter::empty()).is_none());
    }

    #[test]
    fn a_replica_cut_off_from_etcd_gives_up_its_hosts_and_the_lead() {
        let etcd = Arc::new(Etcd::new(vec!["http://127.0.0.1:1".into()], Duration::from_millis(100), None).unwrap());
        let c = Cluster::new("r1".into(), "http://r1".into(), 3, etcd, "p/");
        *c.view.write().unwrap() = View {
            replicas: BTreeMap::new(),
            leader: Some("r1".into()),
            owners: [("a", "r1"), ("b", "r2")].iter().map(|(h, r)| ((*h).to_owned(), (*r).to_owned())).collect(),
        };
        assert!(c.leads() && c.owns("a") && c.owns_any());
        c.step_down();
        assert!(!c.leads() && !c.owns("a") && !c.owns_any());
        assert_eq!(c.owner_url("b"), None, "r2's URL unknown here, but its host is still r2's");
        assert_eq!(c.view.read().unwrap().owners.get("b").map(String::as_str), Some("r2"));
    }
}
