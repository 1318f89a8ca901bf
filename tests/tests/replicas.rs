//! Issue 15, replicas: three aggregators on one real three-member etcd
//! cluster share a fleet of simulated agents (real HTTP servers on loopback
//! ports, as in the aggregator bench). Each host is gathered by exactly one
//! replica; any replica answers for the whole fleet; the hosts of an
//! application with an energy cap go to the leader, which runs its
//! controller. A replica killed with SIGKILL: its hosts are gathered by the
//! others within its lease; the leader killed: another leads and the cap
//! is controlled again; the etcd leader killed: the replicas carry on.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tests::{aggregator::Aggregator, etcd::EtcdCluster, wait_for};

const HOSTS: usize = 24;
const LEASE_S: u64 = 3;

fn cluster(a: &Aggregator) -> Value {
    a.get("/v1/cluster").1
}

/// Which replica gathers each host, from every live replica's own word:
/// `None` while some host is gathered by none, or by two.
fn gathered(live: &[&Aggregator]) -> Option<BTreeMap<String, String>> {
    let mut by = BTreeMap::new();
    for a in live {
        let c = cluster(a);
        let me = c["replica"].as_str()?.to_owned();
        // Gathering means fresh data, not only the key.
        let (_, v) = a.get("/v1/hosts?scope=local");
        for h in v["hosts"].as_array()? {
            if h["stale"] == false {
                let name = h["name"].as_str()?.to_owned();
                if by.insert(name, me.clone()).is_some() {
                    return None;
                }
            }
        }
    }
    (by.len() == HOSTS).then_some(by)
}

#[test]
fn three_replicas_share_the_fleet_and_take_over_when_one_dies() {
    let mut etcd = EtcdCluster::start(3);
    let ports = scaler_testkit::fleet::start_plain(HOSTS as u64, 5).unwrap();
    let cfg = |name: &str| {
        format!(
            "[aggregator]\npoll_ms = 500\ntimeout_ms = 400\n[history]\nflush_ms = 1000\n\
             [store]\netcd = {}\nprefix = \"/scaler-test/\"\nreplica = \"{name}\"\nlease_s = {LEASE_S}\n",
            etcd.endpoints_toml()
        )
    };
    let mut reps: Vec<Aggregator> = ["r1", "r2", "r3"].iter().map(|n| Aggregator::start(&cfg(n))).collect();
    for (i, port) in ports.iter().enumerate() {
        let (s, v) = reps[i % 3].send(
            "PUT",
            &format!("/v1/hosts/sim{i}"),
            Some(&json!({"url": format!("http://127.0.0.1:{port}")})),
        );
        assert_eq!(s, 201, "{v}");
    }
    // An application with an energy cap on two hosts: the leader's.
    let (s, v) = reps[1].send(
        "PUT",
        "/v1/apps/web",
        Some(&json!({"containers": [{"host": "sim0", "name": "c0"}, {"host": "sim1", "name": "c1"}]})),
    );
    assert_eq!(s, 201, "{v}");
    // Made through another replica once it has seen the application (the
    // records reach the others within a round).
    let cap = wait_for(Duration::from_secs(5), || {
        let (s, v) = reps[2].send("PUT", "/v1/apps/web/energy-cap", Some(&json!({"watts": 150})));
        (s == 200).then_some(v)
    });
    assert!(cap.is_some(), "the cap could not be set through another replica");

    let t = Instant::now();
    let all: Vec<&Aggregator> = reps.iter().collect();
    let owners = wait_for(Duration::from_secs(20), || gathered(&all)).unwrap_or_else(|| {
        panic!("hosts not each gathered once: {:?}", all.iter().map(|a| cluster(a)).collect::<Vec<_>>())
    });
    let per: BTreeMap<&String, usize> = owners.values().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r).or_default() += 1;
        m
    });
    let leader = cluster(&reps[0])["leader"].as_str().unwrap().to_owned();
    println!(
        "{HOSTS} hosts each gathered by one replica after {:.1} s: {per:?}; leader {leader}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(per.len(), 3, "every replica gathers some hosts: {per:?}");
    assert_eq!((owners["sim0"].as_str(), owners["sim1"].as_str()), (leader.as_str(), leader.as_str()));

    // Each replica's health and metrics cover its own hosts: none of them
    // stale, and every host up in exactly one replica's metrics.
    // (A round that timed out on a loaded machine marks a host stale for
    // a round: asked again until it holds.)
    let mut up = BTreeMap::new();
    for a in &reps {
        let me = cluster(a)["replica"].as_str().unwrap().to_owned();
        let held = wait_for(Duration::from_secs(10), || {
            let (_, h) = a.get("/healthz");
            (h["hosts"].as_u64() == Some(HOSTS as u64)
                && h["stale_hosts"].as_u64() == Some(0)
                && h["hosts_here"].as_u64() == Some(per[&me] as u64))
            .then_some(())
        });
        assert!(held.is_some(), "{me}: {} (gathers {})", a.get("/healthz").1, per[&me]);
        let text = wait_for(Duration::from_secs(10), || {
            let (_, text) = a.get_text("/metrics");
            text.lines().filter(|l| l.starts_with("scaler_cluster_host_up{")).all(|l| l.ends_with(" 1")).then_some(text)
        })
        .unwrap_or_else(|| panic!("{me}: a host down in its metrics: {}", a.get_text("/metrics").1));
        for line in text.lines().filter(|l| l.starts_with("scaler_cluster_host_up{")) {
            *up.entry(line.to_owned()).or_insert(0) += 1;
        }
        let apps = text.lines().any(|l| l.starts_with("scaler_cluster_app_power_cap_mw{"));
        assert_eq!(apps, me == leader, "{me}: application metrics are the leader's");
    }
    assert!(up.len() == HOSTS && up.values().all(|&n| n == 1), "host_up once per host: {up:?}");

    // Any replica answers for the whole fleet.
    for a in &reps {
        let (_, v) = a.get("/v1/hosts");
        let fresh = v["hosts"].as_array().unwrap().iter().filter(|h| h["stale"] == false).count();
        assert_eq!(fresh, HOSTS, "{v}");
        let (_, v) = a.get("/v1/containers");
        assert_eq!(v["containers"].as_array().map(Vec::len), Some(HOSTS * 5), "every container, once");
        // Every host's event (each simulated agent reports one), through
        // any replica.
        let (_, v) = a.get("/v1/events?limit=1000");
        let hosts: BTreeSet<&str> = v["events"].as_array().unwrap().iter().filter_map(|e| e["host"].as_str()).collect();
        assert_eq!(hosts.len(), HOSTS, "{v}");
        let (_, v) = a.get("/v1/containers?host=sim7");
        assert_eq!(v["containers"].as_array().map(Vec::len), Some(5), "{v}");
        let (s, h) = a.get("/v1/hosts/sim5");
        assert_eq!((s, &h["stale"]), (200, &json!(false)), "{h}");
        let cap = wait_for(Duration::from_secs(10), || {
            let v = a.get("/v1/apps/web/energy-cap").1;
            (v["status"]["state"] == "controlling").then_some(v)
        });
        assert!(cap.is_some(), "the cap is not controlled, asked through {}", cluster(a)["replica"]);
    }

    // A replica that is not the leader dies: its hosts move within a lease.
    let idx = |name: &str| ["r1", "r2", "r3"].iter().position(|n| *n == name).unwrap();
    let victim = ["r1", "r2", "r3"].into_iter().find(|n| *n != leader).unwrap();
    let lost: BTreeSet<&String> = owners.iter().filter(|(_, r)| r.as_str() == victim).map(|(h, _)| h).collect();
    reps[idx(victim)].kill();
    let t = Instant::now();
    let live: Vec<&Aggregator> = reps.iter().enumerate().filter(|(i, _)| *i != idx(victim)).map(|(_, a)| a).collect();
    let after = wait_for(Duration::from_secs(20), || gathered(&live)).unwrap_or_else(|| {
        panic!("{victim}'s hosts were not taken over: {:?}", live.iter().map(|a| cluster(a)).collect::<Vec<_>>())
    });
    let took = t.elapsed().as_secs_f64();
    println!("{victim} killed: its {} hosts gathered by the others after {took:.1} s (lease {LEASE_S} s)", lost.len());
    // Only the dead replica's hosts moved: the others kept theirs.
    let moved: Vec<&String> =
        owners.iter().filter(|(h, r)| !lost.contains(h) && after[*h] != **r).map(|(h, _)| h).collect();
    assert!(moved.is_empty(), "hosts of live replicas moved: {moved:?}");
    assert!(took <= LEASE_S as f64 + 3.0, "took {took:.1} s, lease {LEASE_S} s");

    // The leader dies: another leads, takes the application's hosts and
    // controls its cap.
    reps[idx(&leader)].kill();
    let last = ["r1", "r2", "r3"].into_iter().find(|n| *n != leader && *n != victim).unwrap();
    let survivor = &reps[idx(last)];
    let t = Instant::now();
    // Until the dead leader's lease runs out, the survivor still answers:
    // the application from the shared records, saying the leader's live
    // figures are missing, and every host, those nobody answers for
    // marked unknown.
    let (s, app) = survivor.send("GET", "/v1/apps/web", None);
    let hosts = survivor.get("/v1/hosts").1;
    if cluster(survivor)["leader"] == leader {
        assert_eq!(s, 200, "{app}");
        assert!(app["incomplete"][0].as_str().unwrap_or("").contains("leader"), "{app}");
        assert_eq!(hosts["hosts"].as_array().map(Vec::len), Some(owners.len()), "{hosts}");
        assert!(hosts["hosts"].as_array().unwrap().iter().any(|h| h["status"] == "unknown"), "{hosts}");
        println!("while the dead leader's lease runs: {}", app["incomplete"][0]);
    } else {
        println!("the lead had moved before the check: the dead leader's lease not checked");
    }
    let alone = wait_for(Duration::from_secs(20), || gathered(&[survivor]));
    assert!(alone.is_some(), "the last replica did not take every host: {}", cluster(survivor));
    let controlled = wait_for(Duration::from_secs(15), || {
        let v = survivor.get("/v1/apps/web/energy-cap").1;
        (v["status"]["state"] == "controlling" && v["status"]["periods"].as_u64() > Some(2)).then_some(())
    });
    println!("leader {leader} killed: {last} leads and gathers all after {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        controlled.is_some(),
        "the cap is not controlled after the leader died: {}",
        survivor.get("/v1/apps/web/energy-cap").1
    );
    assert_eq!(cluster(survivor)["leader"], last);

    // The etcd leader dies: the replica carries on (its lease renewed
    // through the other members), and the dead replicas come back.
    let el = etcd.leader().unwrap();
    etcd.kill(el);
    std::thread::sleep(Duration::from_secs(LEASE_S * 2));
    assert!(gathered(&[survivor]).is_some(), "hosts lost with the etcd leader: {}", cluster(survivor));
    reps[idx(victim)].start_again();
    let back: Vec<&Aggregator> = [&reps[idx(last)], &reps[idx(victim)]].into();
    let shared = wait_for(Duration::from_secs(20), || {
        gathered(&back).filter(|o| o.values().collect::<BTreeSet<_>>().len() == 2)
    });
    assert!(
        shared.is_some(),
        "a restarted replica got no hosts back: {:?}",
        back.iter().map(|a| cluster(a)).collect::<Vec<_>>()
    );
}
